"""A park on a real server, and gate rigs: the agent with its scanner and relay board on socat pty pairs.

The test plays the scanner by writing ``code\\r`` to the far end of the
scanner's pair, and the relay board through the protocol-v1 board simulator
(:mod:`parkgate.clients.devices.relay_sim`) running in a thread on the far end
of the relay's pair: what the board does is recorded line by line
(``OPEN 3: one passage granted``, ``display: 'Welcome'``, ``HOLD 7: ...``), and
the test makes people walk through or the fire input close by queueing the
simulator's operator words (``pass``, ``emergency on``).
"""

from __future__ import annotations

import asyncio
import queue
import re
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
import pytest
import serial

from parkgate.clients.devices import SerialSettings
from parkgate.clients.devices.relay_sim import Board, run
from parkgate.clients.gate.agent import GateAgent
from parkgate.clients.gate.config import load_config
from parkgate.v1 import admin_pb2, catalog_pb2, common_pb2, gate_pb2_grpc, sales_pb2
from tests.fixtures.serial import PtyPair
from tests.fixtures.server import Client, RunningServer

PARK = "apark"


def rid() -> str:
    return str(uuid.uuid4())


@dataclass
class Site:
    """The park every agent test uses: products, a seller, registered gates."""

    server: RunningServer
    admin: Client
    seller: Client
    dsn: str
    secrets: dict[str, str] = field(default_factory=dict)

    async def product(self, pid: str, kind: int = catalog_pb2.SINGLE, **rules: object) -> None:
        md = self.admin.metadata
        await self.admin.catalog.PutProduct(catalog_pb2.PutProductRequest(product=catalog_pb2.Product(
            id=pid, park_id=PARK, name=pid, kind=kind, on_sale=True,
            rules=catalog_pb2.ProductRules(validity=catalog_pb2.VISIT_DATE, **rules))), metadata=md)
        for day_type in (catalog_pb2.WEEKDAY, catalog_pb2.WEEKEND, catalog_pb2.HOLIDAY):
            await self.admin.catalog.SetPrice(catalog_pb2.SetPriceRequest(entry=catalog_pb2.PriceEntry(
                product_id=pid, day_type=day_type, price=common_pb2.Money(minor_units=1000, currency="CNY"))),
                metadata=md)

    async def sell(self, pid: str, quantity: int = 1, cards: list[str] | None = None) -> list[sales_pb2.Ticket]:
        line = sales_pb2.OrderLine(product_id=pid, quantity=quantity, card_uids=cards or [])
        order = await self.seller.sales.CreateOrder(sales_pb2.CreateOrderRequest(
            request_id=rid(), lines=[line], payments=[sales_pb2.Payment(
                method=common_pb2.CASH, amount=common_pb2.Money(minor_units=1000 * quantity, currency="CNY"))]),
            metadata=self.seller.metadata)
        return list(order.tickets)

    async def register_gate(self, device_id: str, folder: Path) -> Path:
        """Register a gate (once) and write its secret file; returns the file."""
        if device_id not in self.secrets:
            reply = await self.admin.admin.RegisterDevice(admin_pb2.RegisterDeviceRequest(device=admin_pb2.Device(
                id=device_id, kind=admin_pb2.GATE, park_id=PARK, direction=common_pb2.IN)),
                metadata=self.admin.metadata)
            self.secrets[device_id] = reply.secret
        path = folder / f"{device_id}.secret"
        path.write_text(self.secrets[device_id] + "\n")
        return path

    def sql(self, query: str, *params: object) -> list[tuple]:
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            cur = conn.execute(query, params)
            return cur.fetchall() if cur.description else []

    async def until_sql(self, query: str, *params: object, expect: list[tuple], timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while (rows := self.sql(query, *params)) != expect:
            if time.monotonic() > deadline:
                pytest.fail(f"{query} {params}: {rows}, expected {expect}")
            await asyncio.sleep(0.1)

    def control(self) -> gate_pb2_grpc.GateControlStub:
        return gate_pb2_grpc.GateControlStub(self.admin.channel)


@pytest.fixture(scope="module")
async def site(parkgate_server: RunningServer, module_dsn: str) -> Site:
    admin = await parkgate_server.admin()
    md = admin.metadata
    await admin.catalog.PutPark(catalog_pb2.PutParkRequest(park=catalog_pb2.Park(
        id=PARK, name="Agent Park", time_zone="Asia/Shanghai", currency="CNY")), metadata=md)
    window = await admin.admin.RegisterDevice(admin_pb2.RegisterDeviceRequest(device=admin_pb2.Device(
        id="awin", kind=admin_pb2.SALES_WINDOW, park_id=PARK)), metadata=md)
    await admin.admin.CreateUser(admin_pb2.CreateUserRequest(username="aseller", password="aseller-password",
                                                             roles=["seller"]), metadata=md)
    seller = await parkgate_server.login("aseller", "aseller-password", "awin", window.secret)
    s = Site(parkgate_server, admin, seller, module_dsn)
    await s.product("single", entries_total=1)
    await s.product("trio", catalog_pb2.MULTI_PERSON, entries_total=1, person_count=3)
    await s.product("member", catalog_pb2.MEMBER, entries_total=0, hold_for_check=True)
    await s.product("card", catalog_pb2.COUNT_CARD, entries_total=5, card_bound=True)
    return s


class BoardSim:
    """The relay board simulator on the far end of a pty pair, in a thread; records what it did."""

    def __init__(self, pair: PtyPair, auto_pass_ms: int | None) -> None:
        self.lines: list[str] = []
        self._lock = threading.Lock()
        self.board = Board(say=self._said, auto_pass_ms=auto_pass_ms)
        self.operator: queue.Queue[str] = queue.Queue()
        self.thread = threading.Thread(target=run, args=(SerialSettings(pair.far), self.board, self.operator),
                                       daemon=True)
        self.thread.start()

    def _said(self, line: str) -> None:
        with self._lock:
            self.lines.append(line)

    def do(self, word: str) -> None:
        """What a person or the building does: ``pass``, ``emergency on``, ``power lost``..."""
        self.operator.put(word)

    def mark(self) -> int:
        with self._lock:
            return len(self.lines)

    def since(self, mark: int) -> list[str]:
        with self._lock:
            return self.lines[mark:]

    def count(self, pattern: str, mark: int = 0) -> int:
        return sum(1 for line in self.since(mark) if re.search(pattern, line))

    async def wait_for(self, pattern: str, mark: int = 0, *, times: int = 1, timeout: float = 10.0) -> list[str]:
        deadline = time.monotonic() + timeout
        while True:
            found = [line for line in self.since(mark) if re.search(pattern, line)]
            if len(found) >= times:
                return found
            if time.monotonic() > deadline:
                pytest.fail(f"the board did not do {pattern!r} x{times} within {timeout}s; it did: {self.since(mark)}")
            await asyncio.sleep(0.05)

    def stop(self) -> None:
        self.operator.put("quit")
        self.thread.join(timeout=5)


@dataclass
class Rig:
    """One gate: its config file, scanner pair, relay board, and the agent (in-process or not yet started)."""

    config_path: Path
    scanner: serial.Serial | None
    board: BoardSim
    agent: GateAgent | None = None
    task: asyncio.Task[None] | None = None

    def scan(self, code: str) -> None:
        assert self.scanner is not None
        self.scanner.write(code.encode() + b"\r")
        self.scanner.flush()

    async def start(self, *, wait_online: bool = True) -> GateAgent:
        self.agent = GateAgent(load_config(self.config_path))
        self.task = asyncio.create_task(self.agent.run())
        if wait_online:
            await asyncio.wait_for(self.agent.online.wait(), 15)
        return self.agent

    async def stop(self) -> None:
        if self.agent is not None and self.task is not None and not self.task.done():
            self.agent.stop()
            await asyncio.wait_for(self.task, 15)


def toml_config(device: str, secret_file: Path, servers: list[str], *, scanner: str | None, relay: str | None,
                card_reader: str | None = None, extra: str = "", relay_extra: str = "") -> str:
    text = f"""
[gate]
device_id = "{device}"
secret_file = "{secret_file}"
servers = [{", ".join(f'"{s}"' for s in servers)}]
park = "{PARK}"
request_deadline_seconds = 1.5
connect_timeout_seconds = 2.0
heartbeat_seconds = 1.0
reconnect_min_seconds = 0.2
reconnect_max_seconds = 1.0
"""
    if scanner:
        text += f'\n[scanner]\nport = "{scanner}"\n'
    if card_reader:
        text += f'\n[card_reader]\nname = "{card_reader}"\n'
    if relay:
        text += f'\n[relay]\nport = "{relay}"\n{relay_extra or "open_ms = 3000"}\n'
    return text + "\n" + extra


@pytest.fixture
async def make_rig(site: Site, make_pty_pair: Callable[[], PtyPair], tmp_path: Path) -> AsyncIterator[
        Callable[..., Rig]]:
    rigs: list[Rig] = []

    async def make(device: str, *, servers: list[str] | None = None, auto_pass_ms: int | None = 200,
                   extra: str = "", relay_extra: str = "", start: bool = True) -> Rig:
        scanner_pair, relay_pair = make_pty_pair(), make_pty_pair()
        board = BoardSim(relay_pair, auto_pass_ms)
        secret = await site.register_gate(device, tmp_path)
        path = tmp_path / f"{device}.toml"
        path.write_text(toml_config(device, secret, servers or [site.server.address], scanner=scanner_pair.device,
                                    relay=relay_pair.device, extra=extra, relay_extra=relay_extra))
        rig = Rig(path, scanner_pair.open_far(), board)
        rigs.append(rig)
        if start:
            await rig.start()
        return rig

    yield make  # type: ignore[misc]
    for rig in rigs:
        await rig.stop()
        if rig.scanner is not None:
            rig.scanner.close()
        rig.board.stop()
