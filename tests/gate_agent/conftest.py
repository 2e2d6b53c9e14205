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
import os
import queue
import re
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, fields
from pathlib import Path

import pytest
import serial

from parkgate.clients.devices import SerialSettings
from parkgate.clients.devices.relay_sim import Board, run
from parkgate.clients.gate.agent import GateAgent
from parkgate.clients.gate.config import load_config
from parkgate.clients.gate.link import GateLink, Hello
from parkgate.v1 import catalog_pb2
from tests.fixtures.park import TestPark, open_park
from tests.fixtures.serial import PtyPair
from tests.fixtures.server import RunningServer

PARK = "apark"


@dataclass
class Site(TestPark):
    """The park every agent test uses, plus secret files for the agents' configurations."""

    async def register_gate_file(self, device_id: str, folder: Path) -> Path:
        """Register a gate (once) and write its secret file; returns the file."""
        path = folder / f"{device_id}.secret"
        path.write_text(await self.register_gate(device_id) + "\n")
        return path


@pytest.fixture(scope="module")
async def site(parkgate_server: RunningServer, module_dsn: str) -> Site:
    opened = await open_park([parkgate_server], module_dsn, PARK, "Agent Park")
    s = Site(**{f.name: getattr(opened, f.name) for f in fields(TestPark)})
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
request_deadline_seconds = 15.0
connect_timeout_seconds = 10.0
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
        secret = await site.register_gate_file(device, tmp_path)
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


async def run_admin(site: Site, *args: str) -> subprocess.CompletedProcess[str]:
    """``parkgate admin --json ARGS`` as the park's admin (the console command, in its own process)."""
    env = {**os.environ, "PARKGATE_TOKEN": site.admin.token}
    return await asyncio.to_thread(
        subprocess.run, [sys.executable, "-m", "parkgate.common.cli", "admin", "--server", site.server.address,
                         "--json", *args], capture_output=True, text=True, env=env, timeout=60)


async def until(what: str, check: Callable[[], bool], timeout: float = 15.0) -> None:
    """Wait (polling) until ``check()`` holds; fail naming ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            pytest.fail(f"not within {timeout}s: {what}")
        await asyncio.sleep(0.05)


async def open_link(site: Site, device_id: str) -> GateLink:
    """A registered gate's raw stream (no agent), entering the park: to watch what the server sends gates."""
    secret = await site.register_gate(device_id)
    link = GateLink(site.server.address, Hello(device_id, secret, "in", PARK))
    await link.open()
    return link
