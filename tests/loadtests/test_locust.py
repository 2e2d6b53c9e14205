"""The Locust load test runs headless against a real server and counts what it should.

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
import sys
from pathlib import Path

from loadtests.load_setup import prepare
from parkgate.server.services.bootstrap import load_demo
from tests.fixtures.server import start_server, stop_server

REPO = Path(__file__).resolve().parents[2]


async def test_locust_headless_against_a_real_server(module_dsn: str, tmp_path: Path) -> None:
    server = await start_server(module_dsn)
    try:
        assert await load_demo(server.server.db)
        state = tmp_path / "state.json"
        # blocking gRPC: in a thread, so the server on this event loop keeps answering
        loaded = await asyncio.to_thread(prepare, server.address, server.admin_password, gates=12, windows=2,
                                         fresh=300, passes=40, refunded=20, dsn=module_dsn)
        loaded.save(state)
        assert len(loaded.expired) == 40 and len(loaded.refunded) == 20
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "locust", "-f", str(REPO / "loadtests" / "locustfile.py"), "--headless",
            "--host", server.address, "--users", "10", "--spawn-rate", "10", "--run-time", "20s",
            "--load-state", str(state), "--csv", str(tmp_path / "run"), "--only-summary", "--stop-timeout", "5",
            "--scan-pause", "0.02,0.1", cwd=REPO, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
        out, _ = await asyncio.wait_for(proc.communicate(), 180)
        text = out.decode(errors="replace")
        assert proc.returncode == 0, text[-4000:]
    finally:
        await stop_server(server)

    stats = (tmp_path / "run_stats.csv").read_text()
    rows = {(r["Type"], r["Name"]): r for r in csv.DictReader(stats.splitlines())}
    scans = sum(int(r["Request Count"]) for (kind, _), r in rows.items() if kind == "gate")
    assert scans >= 100, stats  # the mix is dealt 100 cards at a time: every kind is in the first 100
    for kind in ("valid", "pass", "repeated", "forged", "expired", "refunded"):
        row = rows.get(("gate", f"Gate.Connect {kind}"))
        assert row is not None and int(row["Request Count"]) > 0, (kind, stats)
    assert int(rows[("grpc", "Sales.QuickSell")]["Request Count"]) > 0
    assert int(rows[("grpc", "Reports.SalesReport")]["Request Count"]) + int(
        rows[("grpc", "Reports.EntriesReport")]["Request Count"]) > 0
    failures = {name: r["Failure Count"] for (_, name), r in rows.items() if int(r["Failure Count"])}
    assert failures == {}, text[-3000:]
