"""A park with gates on two real servers and a manager watching Reports.LiveFlow (shared by the insight tests)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field, fields

import grpc
import pytest

from parkgate.clients.gate.link import GateLink, Hello
from parkgate.v1 import admin_pb2, reports_pb2, reports_pb2_grpc
from tests.fixtures.park import TestPark, open_park
from tests.fixtures.server import Client

MANAGER = ("flow-manager", "watching the flow 1")


@dataclass
class FlowPark(TestPark):
    links: list[GateLink] = field(default_factory=list)

    async def gate(self, device_id: str, *, direction: str = "in", server: int = 0,
                   fast_mode: bool = False) -> GateLink:
        secret = await self.register_gate(device_id, direction=direction)
        link = GateLink(self.servers[server].address,
                        Hello(device_id, secret, direction, self.park_id, fast_mode=fast_mode))  # type: ignore[arg-type]
        await link.open()
        self.links.append(link)
        return link

    async def manager(self) -> Client:
        """A manager (role ``manager``: reports.live) logged in on the first server."""
        try:
            await self.admin.admin.CreateUser(admin_pb2.CreateUserRequest(
                username=MANAGER[0], password=MANAGER[1], roles=["manager"]), metadata=self.admin.metadata)
        except grpc.aio.AioRpcError as exc:
            if exc.code() != grpc.StatusCode.ALREADY_EXISTS:
                raise
        return await self.server.login(*MANAGER)

    async def close(self) -> None:
        for link in self.links:
            await link.close()


async def open_flow_park(servers: list, dsn: str, park_id: str) -> FlowPark:
    opened = await open_park(servers, dsn, park_id, f"Flow {park_id}")
    park = FlowPark(**{f.name: getattr(opened, f.name) for f in fields(TestPark)})
    await park.product("single", entries_total=1)
    await park.product("multi", entries_total=50)
    return park


class FlowWatcher:
    """A LiveFlow stream read in the background; tests wait for a snapshot that satisfies a condition."""

    def __init__(self, client: Client, park_id: str, interval_seconds: int = 60, minutes: int = 10) -> None:
        stub = reports_pb2_grpc.ReportsStub(client.channel)
        self.call = stub.LiveFlow(reports_pb2.LiveFlowRequest(park_id=park_id, interval_seconds=interval_seconds,
                                                              minutes=minutes), metadata=client.metadata)
        self.latest: reports_pb2.FlowSnapshot | None = None
        self.count = 0
        self._changed = asyncio.Event()
        self._task = asyncio.create_task(self._read())

    async def _read(self) -> None:
        async for snapshot in self.call:
            self.latest = snapshot
            self.count += 1
            self._changed.set()

    async def until(self, what: str, condition: Callable[[reports_pb2.FlowSnapshot], bool],
                    timeout: float = 30.0) -> reports_pb2.FlowSnapshot:
        deadline = time.monotonic() + timeout
        while self.latest is None or not condition(self.latest):
            if self._task.done():
                self._task.result()
                pytest.fail(f"the LiveFlow stream ended before {what}")
            left = deadline - time.monotonic()
            if left <= 0:
                pytest.fail(f"no snapshot showed {what} within {timeout}s; the last one: {self.latest}")
            self._changed.clear()
            try:
                await asyncio.wait_for(self._changed.wait(), min(left, 1.0))
            except TimeoutError:
                pass
        return self.latest

    async def close(self) -> None:
        self.call.cancel()
        await asyncio.gather(self._task, return_exceptions=True)


def tile(snapshot: reports_pb2.FlowSnapshot, device_id: str) -> reports_pb2.GateTile | None:
    return next((g for g in snapshot.gates if g.device_id == device_id), None)

