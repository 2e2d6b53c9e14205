"""The Locust load test runs against a real server and counts what it should: headless, distributed
(a master and two workers) and with its web UI.

A real server on a fresh database with the demo park, the load state made by
loadtests/load_setup.py (through the contract, expired codes minted with the
installation's key), then ``locust -f loadtests/locustfile.py --headless`` for
a few seconds in its own process. Locust's own statistics must show every kind
of scan, sales and reports made, and no failure: the refusals (repeated,
forged, expired, refunded) are the expected answers, counted as successes of
their kind.
"""

from __future__ import annotations

import asyncio
import csv
import json
import sys
import urllib.request
from collections.abc import Callable
from pathlib import Path

import psycopg

from loadtests.load_setup import MAX_WORKERS, LoadState, prepare
from parkgate.server.pg.instance import free_port
from parkgate.server.services.bootstrap import load_demo
from tests.fixtures.server import RunningServer, start_server, stop_server

REPO = Path(__file__).resolve().parents[2]


async def _prepared(dsn: str, tmp_path: Path, *, gates: int) -> tuple[RunningServer, Path, LoadState]:
    """A server with the demo park and the load state saved where Locust reads it (the server is stopped if
    this fails)."""
    server = await start_server(dsn)
    try:
        assert await load_demo(server.server.db)
        state = tmp_path / "state.json"
        # blocking gRPC: in a thread, so the server on this event loop keeps answering
        loaded = await asyncio.to_thread(prepare, server.address, server.admin_password, gates=gates, windows=2,
                                         fresh=300, passes=40, refunded=20, dsn=dsn)
        loaded.save(state)
    except BaseException:
        await stop_server(server)
        raise
    return server, state, loaded


def _locust(*args: str) -> list[str]:
    return [sys.executable, "-m", "locust", "-f", str(REPO / "loadtests" / "locustfile.py"), *args]


def _table(csv_prefix: Path) -> dict[tuple[str, str], dict[str, str]]:
    """Locust's statistics (``--csv``) by (type, name)."""
    stats = (csv_prefix.parent / f"{csv_prefix.name}_stats.csv").read_text()
    return {(r["Type"], r["Name"]): r for r in csv.DictReader(stats.splitlines())}


def _failures(rows: dict[tuple[str, str], dict[str, str]]) -> dict[str, str]:
    return {name: r["Failure Count"] for (_, name), r in rows.items() if int(r["Failure Count"])}


def _gate_scans(rows: dict[tuple[str, str], dict[str, str]]) -> int:
    return sum(int(r["Request Count"]) for (kind, _), r in rows.items() if kind == "gate")


async def test_locust_headless_against_a_real_server(module_dsn: str, tmp_path: Path) -> None:
    server, state, loaded = await _prepared(module_dsn, tmp_path, gates=12)
    try:
        assert len(loaded.expired) == 40 and len(loaded.refunded) == 20
        proc = await asyncio.create_subprocess_exec(
            *_locust("--headless", "--host", server.address, "--users", "10", "--spawn-rate", "10", "--run-time",
                     "20s", "--load-state", str(state), "--csv", str(tmp_path / "run"), "--only-summary",
                     "--stop-timeout", "5", "--scan-pause", "0.02,0.1"),
            cwd=REPO, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
        out, _ = await asyncio.wait_for(proc.communicate(), 180)
        text = out.decode(errors="replace")
        assert proc.returncode == 0, text[-4000:]
    finally:
        await stop_server(server)

    rows = _table(tmp_path / "run")
    assert _gate_scans(rows) >= 100, rows  # the mix is dealt 100 cards at a time: every kind is in the first 100
    for kind in ("valid", "pass", "repeated", "forged", "expired", "refunded"):
        row = rows.get(("gate", f"Gate.Connect {kind}"))
        assert row is not None and int(row["Request Count"]) > 0, (kind, rows)
    assert int(rows[("grpc", "Sales.QuickSell")]["Request Count"]) > 0
    assert int(rows[("grpc", "Reports.SalesReport")]["Request Count"]) + int(
        rows[("grpc", "Reports.EntriesReport")]["Request Count"]) > 0
    assert _failures(rows) == {}, text[-3000:]


async def test_locust_distributed_a_master_and_two_workers(fresh_database: Callable[[str], str],
                                                           tmp_path: Path) -> None:
    """One Locust process drives about one core of gRPC: a master and workers share the load. Each worker
    drives its own gates and its own fresh tickets (a "valid" scan never meets a ticket the other used)."""
    dsn = fresh_database("locust_dist")
    server, state, _ = await _prepared(dsn, tmp_path, gates=32)
    port = free_port()
    workers: list[asyncio.subprocess.Process] = []
    try:
        master = await asyncio.create_subprocess_exec(
            *_locust("--master", "--headless", "--expect-workers", "2", "--master-bind-host", "127.0.0.1",
                     "--master-bind-port", str(port), "--host", server.address, "--users", "8", "--spawn-rate", "8",
                     "--run-time", "20s", "--load-state", str(state), "--csv", str(tmp_path / "dist"),
                     "--only-summary", "--stop-timeout", "5"),
            cwd=REPO, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
        for _ in range(2):
            workers.append(await asyncio.create_subprocess_exec(
                *_locust("--worker", "--master-host", "127.0.0.1", "--master-port", str(port),
                         "--load-state", str(state), "--scan-pause", "0.02,0.1"),
                cwd=REPO, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL))
        out, _ = await asyncio.wait_for(master.communicate(), 240)
        text = out.decode(errors="replace")
        assert master.returncode == 0, text[-4000:]
        for worker in workers:
            assert await asyncio.wait_for(worker.wait(), 60) == 0  # the master's quit ends them
    finally:
        for worker in workers:
            if worker.returncode is None:
                worker.kill()
                await worker.wait()
        await stop_server(server)
    rows = _table(tmp_path / "dist")
    # both workers drove gates, each only its own share (every 8th gate from its index)
    gates = list(LoadState.load(state).gates)
    with psycopg.connect(dsn, autocommit=True) as conn:
        used = {r[0] for r in conn.execute("SELECT DISTINCT device_id FROM validations").fetchall()}
    shares = {index: set(gates[index::MAX_WORKERS]) for index in range(MAX_WORKERS)}
    assert used & shares[0] and used & shares[1] and used <= shares[0] | shares[1], (used, shares)
    assert _gate_scans(rows) >= 50 and int(rows[("gate", "Gate.Connect valid")]["Request Count"]) > 0, rows
    assert _failures(rows) == {}, text[-3000:]


async def test_locust_with_its_web_ui_shows_the_running_load(fresh_database: Callable[[str], str],
                                                             tmp_path: Path) -> None:
    """The web UI serves its page and Locust's live statistics while the load runs (--autostart: as if the
    start button were pressed), then quits by itself."""
    server, state, _ = await _prepared(fresh_database("locust_web"), tmp_path, gates=12)
    port = free_port()
    proc = await asyncio.create_subprocess_exec(
        *_locust("--web-host", "127.0.0.1", "--web-port", str(port), "--autostart", "--autoquit", "2",
                 "--host", server.address, "--users", "6", "--spawn-rate", "6", "--run-time", "20s",
                 "--load-state", str(state), "--scan-pause", "0.02,0.1", "--stop-timeout", "5"),
        cwd=REPO, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    try:
        def get(path: str) -> bytes:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as reply:
                return reply.read()

        live: dict = {}
        for _ in range(300):  # the page first, then statistics with gate scans in them
            try:
                page = await asyncio.to_thread(get, "/")
                live = json.loads(await asyncio.to_thread(get, "/stats/requests"))
            except OSError:
                await asyncio.sleep(0.2)
                continue
            if any(r.get("method") == "gate" and r.get("num_requests", 0) > 0 for r in live.get("stats", [])):
                break
            await asyncio.sleep(0.2)
        assert b"locust" in page.lower()
        gate_rows = {r["name"]: r["num_requests"] for r in live.get("stats", []) if r.get("method") == "gate"}
        assert sum(gate_rows.values()) > 0, live
        assert live.get("state") in ("spawning", "running"), live.get("state")
        out, _ = await asyncio.wait_for(proc.communicate(), 180)
        assert proc.returncode == 0, out.decode(errors="replace")[-4000:]
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        await stop_server(server)
