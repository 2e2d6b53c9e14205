"""A server that cannot decide says nothing about the ticket: the gate decides alone and keeps its journal.

Against a real server whose own PostgreSQL is stopped (a private instance, so
the rest of the suite keeps its database): the server stays up and answers
DATABASE_UNAVAILABLE; the gate never shows that to the visitor as a refusal,
admits the genuine ticket on its offline path, keeps the admission on disk
while the server still cannot decide, and hands it over once the database is
back, over the same link.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from parkgate.server.pg import PostgresInstance
from tests.fixtures.park import TestPark, open_park
from tests.fixtures.postgres import make_test_dir, start_test_instance
from tests.fixtures.serial import PtyPair
from tests.fixtures.server import RunningServer, start_server, stop_server

from .conftest import PARK, BoardSim, Rig, toml_config

OPENED = r"^OPEN \d+: one passage granted"


@pytest.fixture
async def own_database() -> AsyncIterator[PostgresInstance]:
    base = make_test_dir("parkgate-nodecision-")
    instance = start_test_instance(base)
    try:
        yield instance
    finally:
        with contextlib.suppress(Exception):  # already stopped when the test failed half-way
            instance.stop("immediate", timeout=30)
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
async def park_and_server(own_database: PostgresInstance) -> AsyncIterator[tuple[TestPark, RunningServer]]:
    dsn = own_database.conninfo()
    # a short wait for a connection: the server answers DATABASE_UNAVAILABLE well within the gate's deadline
    server = await start_server(dsn, **{"database.acquire_timeout_seconds": 0.3,
                                        "database.connect_timeout_seconds": 1.0})
    try:
        park = await open_park([server], dsn, PARK, "No Decision Park")
        await park.product("single", entries_total=1)
        yield park, server
    finally:
        await stop_server(server)


async def test_database_unavailable_is_no_refusal_the_gate_admits_offline_and_forwards_later(
        own_database: PostgresInstance, park_and_server: tuple[TestPark, RunningServer],
        make_pty_pair: Callable[[], PtyPair], tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    park, server = park_and_server
    secret = tmp_path / "nd-gate.secret"
    secret.write_text(await park.register_gate("nd-gate") + "\n")
    scanner, relay = make_pty_pair(), make_pty_pair()
    board = BoardSim(relay, 200)
    config = tmp_path / "nd-gate.toml"
    config.write_text(toml_config("nd-gate", secret, [server.address], scanner=scanner.device, relay=relay.device,
                                  extra='[fast_mode]\nenabled = true\ntime_zone = "Asia/Shanghai"\n').replace(
        "request_deadline_seconds = 1.5", "request_deadline_seconds = 5.0").replace(
        "[gate]\n", f'[gate]\nstate_dir = "{tmp_path / "state"}"\n', 1))
    rig = Rig(config, scanner.open_far(), board)
    [ticket] = await park.sell("single")
    agent = await rig.start()
    try:
        own_database.stop("fast", timeout=30)
        caplog.set_level(logging.INFO, logger="parkgate.gate")
        mark = board.mark()
        rig.scan(ticket.code)
        await board.wait_for(OPENED, mark, timeout=20)  # admitted on the offline path
        await board.wait_for(r"^passage: PASSED", mark)
        # the server's answer comes: no decision, so the fast open becomes an offline admission, not an alert
        await _until(lambda: "OFFLINE admission" in caplog.text, "offline admission")
        assert "(DATABASE_UNAVAILABLE" in caplog.text and "ALERT" not in caplog.text
        shown = [line for line in board.since(mark) if line.startswith("display")]
        assert not any("unavailable" in line.lower() for line in shown), shown
        assert [a.passed for a in agent.disk.admissions] == [True]
        assert agent.link is not None  # the server is up: the link never broke
        # the gate offers it again while the link is up; the server still cannot decide: it stays on disk
        await _until(lambda: "forwarding offline admissions stopped" in caplog.text, "a failed offer")
        assert len(agent.disk.admissions) == 1

        own_database.start(timeout=60)
        await park.until_sql("SELECT allow, passed_at IS NOT NULL FROM validations WHERE ticket_id = %s",
                             ticket.id, expect=[(True, True)], timeout=40)
        for _ in range(100):
            if not agent.disk.admissions:
                break
            await asyncio.sleep(0.1)
        assert agent.disk.admissions == []
        assert park.sql("SELECT entries_used FROM tickets WHERE id = %s", ticket.id) == [(1,)]
    finally:
        await rig.stop()
        if rig.scanner is not None:
            rig.scanner.close()
        board.stop()


async def _until(check: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
    for _ in range(int(timeout / 0.1)):
        if check():
            return
        await asyncio.sleep(0.1)
    pytest.fail(f"no {what} within {timeout}s")
