"""One LiveFlow stream per park, kept open, its latest snapshot fanned out to every browser.

The monitor logs in like any operator (Auth.Login) and needs ``reports.live``;
to confirm held checks (S15) ``gates.checks``, to see who is held (name and
photo) ``members.personal``: the server leaves name and photo out of the
snapshots otherwise, and the monitor serves only photos a current snapshot
names.
A stream that breaks (a server restarts, a failover, the session expired) is
opened again with backoff, logging in again when the server says the
session is gone; meanwhile the page keeps its last picture and shows that
the feed is stale. Snapshots travel to the page as JSON (the contract's own
JSON mapping: reason names, RFC 3339 times).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import grpc
import orjson
from google.protobuf import json_format

from parkgate.common.channels import open_aio_channel
from parkgate.v1 import (
    auth_pb2,
    auth_pb2_grpc,
    gate_pb2,
    gate_pb2_grpc,
    reports_pb2,
    reports_pb2_grpc,
    sales_pb2,
    sales_pb2_grpc,
)

from ..connection import call_error

log = logging.getLogger(__name__)
T = TypeVar("T")

#: Reasons after which logging in again may help; any other refusal is final (a wrong password, no permission).
RELOGIN_REASONS = {"UNAUTHENTICATED", "SESSION_EXPIRED"}
FINAL_REASONS = {"BAD_CREDENTIALS", "ACCOUNT_LOCKED", "ACCOUNT_DISABLED", "PERMISSION_DENIED", "UNKNOWN_PARK"}


@dataclass(frozen=True, slots=True)
class Credentials:
    username: str
    password: str


def snapshot_json(snapshot: reports_pb2.FlowSnapshot) -> bytes:
    """The snapshot in the contract's JSON mapping, every field present (the page never guesses a default)."""
    data = json_format.MessageToDict(snapshot, preserving_proto_field_name=True,
                                     always_print_fields_with_no_presence=True)
    return orjson.dumps(data)


@dataclass
class ParkFeed:
    """The latest state of one park as the page sees it: a snapshot, or why there is none."""

    park_id: str
    latest: bytes = b""
    status: str = "connecting"
    error: str = ""
    subscribers: set[asyncio.Queue[bytes]] = field(default_factory=set)
    # S15: the held checks of the latest snapshot, (gate, request) -> photo_ref ('' when not shown)
    held: dict[tuple[str, str], str] = field(default_factory=dict)

    def event(self) -> bytes:
        """What a browser gets: the status and the last snapshot, as one JSON object."""
        return orjson.dumps({"park_id": self.park_id, "status": self.status, "error": self.error,
                             "snapshot": orjson.Fragment(self.latest) if self.latest else None})

    def publish(self) -> None:
        message = self.event()
        for queue in list(self.subscribers):
            if queue.full():  # a browser that stopped reading gets the newest picture, not a backlog
                with contextlib.suppress(asyncio.QueueEmpty):
                    queue.get_nowait()
            queue.put_nowait(message)


class MonitorFeed:
    def __init__(self, server: str, credentials: Credentials, parks: list[str], *, interval_seconds: int = 0,
                 minutes: int = 30) -> None:
        self.server = server
        self.credentials = credentials
        self.parks = {p: ParkFeed(p) for p in parks}
        self.interval_seconds = interval_seconds
        self.minutes = minutes
        self._token = ""
        self._channel: grpc.aio.Channel | None = None
        self._photos: dict[str, bytes] = {}
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        self._channel = open_aio_channel(self.server)
        self._tasks = [asyncio.create_task(self._follow(feed), name=f"monitor-{feed.park_id}")
                       for feed in self.parks.values()]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._channel is not None:
            await self._channel.close()

    async def subscribe(self, park_id: str) -> AsyncIterator[bytes]:
        """The park's events for one browser: the current state at once, then every change."""
        feed = self.parks[park_id]
        queue: asyncio.Queue[bytes] = asyncio.Queue(maxsize=4)
        feed.subscribers.add(queue)
        try:
            yield feed.event()
            while True:
                yield await queue.get()
        finally:
            feed.subscribers.discard(queue)

    async def _login(self) -> str:
        assert self._channel is not None
        reply = await auth_pb2_grpc.AuthStub(self._channel).Login(
            auth_pb2.LoginRequest(username=self.credentials.username, password=self.credentials.password),
            timeout=30)
        log.info("monitor logged in to %s as %s", self.server, self.credentials.username)
        return str(reply.token)

    async def _follow(self, feed: ParkFeed) -> None:
        delay = 0.5
        while True:
            try:
                if not self._token:
                    self._token = await self._login()
                await self._read(feed)
                delay = 0.5
            except grpc.aio.AioRpcError as exc:
                error = call_error(exc)
                feed.status, feed.error = "stale", str(error)
                feed.publish()
                if error.reason in RELOGIN_REASONS:
                    self._token = ""
                level = logging.ERROR if error.reason in FINAL_REASONS else logging.WARNING
                log.log(level, "monitor: park %s: %s; trying again in %.1fs", feed.park_id, error, delay)
            await asyncio.sleep(delay * random.uniform(0.8, 1.2))
            delay = min(delay * 2, 15.0)

    async def _read(self, feed: ParkFeed) -> None:
        assert self._channel is not None
        stub = reports_pb2_grpc.ReportsStub(self._channel)
        call = stub.LiveFlow(reports_pb2.LiveFlowRequest(park_id=feed.park_id, interval_seconds=self.interval_seconds,
                                                         minutes=self.minutes),
                             metadata=(("authorization", f"Bearer {self._token}"),))
        async for snapshot in call:
            feed.latest = snapshot_json(snapshot)
            feed.held = {(h.device_id, h.request_id): h.photo_ref for h in snapshot.held_checks}
            self._keep_photos()
            feed.status, feed.error = "live", ""
            feed.publish()
        raise grpc.aio.AioRpcError(grpc.StatusCode.UNAVAILABLE, grpc.aio.Metadata(), grpc.aio.Metadata(),
                                   "the server ended the LiveFlow stream")

    # --- held checks (S15): the photo to look at, and the confirmation ----------------------------

    async def _call(self, rpc: Callable[[Any], Awaitable[T]]) -> T:
        """One unary call with the monitor's session, logging in (again) when the server asks for it."""
        for attempt in (1, 2):
            if not self._token:
                self._token = await self._login()
            try:
                return await rpc((("authorization", f"Bearer {self._token}"),))
            except grpc.aio.AioRpcError as exc:
                if attempt == 2 or call_error(exc).reason not in RELOGIN_REASONS:
                    raise
                self._token = ""
        raise AssertionError("unreachable")

    def _keep_photos(self) -> None:
        """Photos are kept only while a snapshot still names them (a confirmed check's member leaves memory)."""
        shown = {ref for feed in self.parks.values() for ref in feed.held.values() if ref}
        for ref in set(self._photos) - shown:
            del self._photos[ref]

    async def photo(self, park_id: str, member_id: str) -> bytes | None:
        """The JPEG of a member held at one of the park's gates; None when no current held check names it.

        Only references the server put in a snapshot are served (it puts them
        only for an operator holding members.personal): the page is no way to
        read any member's photo. Raises :class:`CallError` when the server refuses.
        """
        if not member_id or member_id not in self.parks[park_id].held.values():
            return None
        if member_id not in self._photos:
            assert self._channel is not None
            stub = sales_pb2_grpc.SalesStub(self._channel)
            try:
                reply = await self._call(lambda md: stub.GetMemberPhoto(
                    sales_pb2.GetMemberPhotoRequest(member_id=member_id), metadata=md, timeout=10))
            except grpc.aio.AioRpcError as exc:
                raise call_error(exc) from None
            self._photos[member_id] = bytes(reply.jpeg)
        return self._photos[member_id]

    async def confirm(self, park_id: str, device_id: str, request_id: str, note: str = "") -> dict[str, Any]:
        """GateControl.ConfirmCheck for a check the park's latest snapshot shows; whether the gate acknowledged.

        Raises :class:`CallError` when the server refuses (no gates.checks) and
        KeyError when the park's screen shows no such check.
        """
        if (device_id, request_id) not in self.parks[park_id].held:
            raise KeyError(f"no held check {request_id!r} at gate {device_id!r} on this park's screen")
        assert self._channel is not None
        stub = gate_pb2_grpc.GateControlStub(self._channel)
        request = gate_pb2.ConfirmCheckRequest(device_id=device_id, request_id=request_id,
                                               note=note or f"confirmed on the control room's screen "
                                                            f"({self.credentials.username})")
        try:
            reply = await self._call(lambda md: stub.ConfirmCheck(request, metadata=md, timeout=30))
        except grpc.aio.AioRpcError as exc:
            raise call_error(exc) from None
        log.info("monitor: held check %s at %s confirmed: %s", request_id, device_id,
                 "acknowledged by the gate" if reply.delivered else "NOT acknowledged")
        return {"delivered": reply.delivered, "command_id": reply.command_id}

    def snapshot(self, park_id: str) -> dict[str, Any]:
        return orjson.loads(self.parks[park_id].event())  # type: ignore[no-any-return]
