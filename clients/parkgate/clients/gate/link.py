"""A gate's stream to a server: hello, validations answered by request id, commands, heartbeats.

The gate agent holds one :class:`GateLink` at a time and makes a new one
(with backoff, possibly to another server) when it breaks. Requests may
overlap: each waits for the result with its own request id, so a slow answer
never holds up the next person at the turnstile. Anything the server pushes
(pause, resume, emergency, keys) arrives on :attr:`commands`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Literal

import grpc
from google.protobuf.timestamp_pb2 import Timestamp

from parkgate.common.channels import Transport, open_aio_channel
from parkgate.common.reason import Reason
from parkgate.v1 import common_pb2, gate_pb2, gate_pb2_grpc

log = logging.getLogger(__name__)

Direction = Literal["in", "out"]
_DIRECTIONS = {"in": common_pb2.IN, "out": common_pb2.OUT}

#: Answers that say nothing about the ticket: the server could not decide (its database away, overloaded,
#: out of time). A gate never shows them to the visitor as a refusal; it decides alone instead.
NO_DECISION = frozenset({Reason.DATABASE_UNAVAILABLE.value, Reason.SERVER_OVERLOADED.value,
                         Reason.DEADLINE_EXCEEDED.value, Reason.INTERNAL.value})


class LinkError(Exception):
    """The stream could not be opened or broke; ``reason`` is the contract's reason name when the server gave one."""

    def __init__(self, message: str, reason: str = "SERVER_UNREACHABLE") -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Hello:
    device_id: str
    device_secret: str
    direction: Direction = "in"
    park_id: str = ""
    attraction_id: str = ""
    software_version: str = ""
    fast_mode: bool = False
    confirms_passage: bool = False


@dataclass(frozen=True, slots=True)
class Result:
    request_id: str
    allow: bool
    reason: str
    display_text: str
    entries_left: int
    persons: int
    ticket_id: str
    hold_for_check: bool
    balance: int | None = None   # a stored-value card's balance in minor units (S8); None for other tickets
    photo_ref: str = ""          # a member card held for a check: whose photo (S15)
    swallow_card: bool = False   # S21: a used-up single-use card leaving: the card collector takes it

    @classmethod
    def from_message(cls, m: gate_pb2.ValidationResult) -> Result:
        return cls(m.request_id, m.allow, Reason.from_number(m.reason).value, m.display_text, m.entries_left,
                   m.persons, m.ticket_id, m.hold_for_check,
                   m.balance.minor_units if m.HasField("balance") else None, m.photo_ref, m.swallow_card)


@dataclass(frozen=True, slots=True)
class Command:
    command_id: str
    kind: str  # a CommandKind name: PAUSE_ENTRY, RESUME_ENTRY, EMERGENCY_OPEN_CMD, ...
    text: str
    # UPDATE_KEYS: (key id, public key, retired) of every usable key, and the ids revoked
    keys: tuple[tuple[int, bytes, bool], ...] = ()
    revoked_key_ids: tuple[int, ...] = ()
    # UPDATE_KEYS: serials of tickets whose code was revoked (reissued)
    revoked_serials: tuple[int, ...] = ()


class GateLink:
    def __init__(self, address: str, hello: Hello, transport: Transport | None = None) -> None:
        """``transport``: the gate's TLS with its client certificate (None: the environment's, see channels)."""
        self.address = address
        self.hello = hello
        self.transport = transport
        self.welcome: gate_pb2.Welcome | None = None
        self.commands: asyncio.Queue[Command] = asyncio.Queue()
        self._channel: grpc.aio.Channel | None = None
        self._outgoing: asyncio.Queue[gate_pb2.GateMessage | None] = asyncio.Queue()
        self._waiting: dict[str, asyncio.Future[Result]] = {}
        self._reader: asyncio.Task[None] | None = None
        self.closed = asyncio.Event()

    async def open(self, timeout: float = 10.0) -> gate_pb2.Welcome:
        h = self.hello
        self._outgoing.put_nowait(gate_pb2.GateMessage(hello=gate_pb2.Hello(
            device_id=h.device_id, device_secret=h.device_secret, direction=_DIRECTIONS[h.direction],
            park_id=h.park_id, attraction_id=h.attraction_id, software_version=h.software_version,
            fast_mode=h.fast_mode, confirms_passage=h.confirms_passage)))
        try:
            self._channel = open_aio_channel(self.address, self.transport)
        except OSError as exc:  # the gate's certificate or CA file named in its configuration is unreadable
            raise LinkError(f"{self.address}: cannot read a TLS file: {exc}", "BAD_CONFIGURATION") from None
        call = gate_pb2_grpc.GateStub(self._channel).Connect(self._send())
        try:
            first = await asyncio.wait_for(call.read(), timeout)
        except grpc.aio.AioRpcError as exc:
            await self.close()
            raise LinkError(f"{self.address}: {exc.details()}", _reason(exc)) from None
        except (TimeoutError, grpc.RpcError) as exc:
            await self.close()
            raise LinkError(f"{self.address}: no welcome ({type(exc).__name__})") from None
        if first is grpc.aio.EOF or first.WhichOneof("body") != "welcome":
            await self.close()
            raise LinkError(f"{self.address}: the server did not welcome the gate")
        self.welcome = first.welcome
        self._reader = asyncio.create_task(self._read(call))
        return self.welcome

    async def _send(self) -> AsyncIterator[gate_pb2.GateMessage]:
        while True:
            message = await self._outgoing.get()
            if message is None:
                return
            yield message

    async def _read(self, call: grpc.aio.StreamStreamCall) -> None:
        try:
            while (message := await call.read()) is not grpc.aio.EOF:
                kind = message.WhichOneof("body")
                if kind == "result":
                    future = self._waiting.pop(message.result.request_id, None)
                    if future is not None and not future.done():
                        future.set_result(Result.from_message(message.result))
                elif kind == "command":
                    c = message.command
                    self.commands.put_nowait(Command(
                        c.command_id, gate_pb2.CommandKind.Name(c.kind), c.reason_text,
                        tuple((k.key_id, k.public_key, k.retired) for k in c.keys),
                        tuple(int(k) for k in c.revoked_key_ids if k.isdigit()), tuple(c.revoked_serials)))
        except grpc.aio.AioRpcError as exc:
            log.warning("gate link to %s broke: %s %s", self.address, exc.code().name, exc.details())
        finally:
            self.closed.set()
            for future in self._waiting.values():
                if not future.done():
                    future.set_exception(LinkError(f"{self.address}: the stream ended"))
            self._waiting.clear()

    async def validate(self, request_id: str, *, code: str = "", card_uid: str = "",
                       direction: Direction | None = None, timeout: float = 2.0,
                       scanned_at: float | None = None) -> Result:
        """Ask for a decision; LinkError when the stream is down, no answer came within ``timeout``, or the
        answer was no decision at all (:data:`NO_DECISION`)."""
        if self.closed.is_set():
            raise LinkError(f"{self.address}: the stream is closed")
        future: asyncio.Future[Result] = asyncio.get_running_loop().create_future()
        self._waiting[request_id] = future
        request = gate_pb2.ValidationRequest(request_id=request_id,
                                             direction=_DIRECTIONS[direction] if direction else 0)
        if card_uid:
            request.card_uid = card_uid
        else:
            request.code = code
        if scanned_at is None:
            request.scanned_at.CopyFrom(_now())
        else:  # an admission made offline, forwarded later: when it really happened
            request.scanned_at.FromNanoseconds(int(scanned_at * 1e9))
        self._outgoing.put_nowait(gate_pb2.GateMessage(validation=request))
        try:
            result = await asyncio.wait_for(future, timeout)
        except TimeoutError:
            raise LinkError(f"{self.address}: no decision within {timeout:.1f}s", "DEADLINE_EXCEEDED") from None
        finally:
            self._waiting.pop(request_id, None)
        if not result.allow and result.reason in NO_DECISION:
            raise LinkError(f"{self.address}: the server could not decide ({result.reason})", result.reason)
        return result

    async def validate_many(self, requests: Sequence[tuple[str, str]], timeout: float = 5.0) -> list[Result]:
        """Several codes at once (request id, code): for handhelds checking a group, and for tests."""
        return list(await asyncio.gather(*(self.validate(r, code=c, timeout=timeout) for r, c in requests)))

    def heartbeat(self, state: str = "ok", buffered: int = 0, on_battery: bool = False) -> None:
        self._outgoing.put_nowait(gate_pb2.GateMessage(heartbeat=gate_pb2.Heartbeat(
            at=_now(), state=state, buffered=buffered, on_battery=on_battery)))

    def acknowledge(self, command_id: str, done: bool = True, detail: str = "") -> None:
        self._outgoing.put_nowait(gate_pb2.GateMessage(ack=gate_pb2.CommandAck(
            command_id=command_id, done=done, detail=detail)))

    def passage(self, request_id: str, passed: bool) -> None:
        self._outgoing.put_nowait(gate_pb2.GateMessage(passage=gate_pb2.PassageReport(
            request_id=request_id, passed=passed)))

    async def close(self) -> None:
        self._outgoing.put_nowait(None)
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
        if self._channel is not None:
            await self._channel.close()
        self.closed.set()


def _now() -> Timestamp:
    ts = Timestamp()
    ts.GetCurrentTime()
    return ts


def _reason(error: grpc.aio.AioRpcError) -> str:
    for key, value in error.trailing_metadata() or ():
        if key == "parkgate-reason":
            return str(value)
    return "SERVER_UNREACHABLE" if error.code() == grpc.StatusCode.UNAVAILABLE else error.code().name
