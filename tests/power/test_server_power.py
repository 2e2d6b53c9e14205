"""A server on a UPS (real upsd + dummy-ups): on battery it sheds heavy work; on low battery it stops cleanly.

Runbook: the mains fail -> the truly heavy work (VerifyAuditLog) is refused with
SERVER_ON_BATTERY while reports still answer (queued: tests/power/test_battery_mode.py),
PowerStatus says ON_BATTERY, the operation log has the transition; the mains come
back and stay -> everything is served again. The battery runs low
while clients write -> health NOT_SERVING, the server drains and stops, and every
write it acknowledged is in the database.
"""

from __future__ import annotations

import asyncio
import uuid

import grpc
import psycopg
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from parkgate.common.channels import open_aio_channel
from parkgate.ha.dummy_ups import DummyUps
from parkgate.ha.load import Writer, prepare_sales, verify
from parkgate.v1 import admin_pb2, ops_pb2, reports_pb2, reports_pb2_grpc
from tests.fixtures.server import RunningServer, reason_of, start_server, stop_server

from .test_sources import until


async def _server(dsn: str, ups: DummyUps, **extra: object) -> RunningServer:
    return await start_server(dsn, **{"power.source": "nut", "power.port": ups.port, "power.poll_seconds": 0.2,
                                      "power.settle_seconds": 0.5, "power.timeout_seconds": 1.0, **extra})


async def _report_reason(running: RunningServer) -> str:
    client = await running.admin()
    stub = reports_pb2_grpc.ReportsStub(running.channel())
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.SalesReport(reports_pb2.ReportRequest(), metadata=client.metadata, timeout=10)
    return reason_of(err.value)


async def _verify_refused(running: RunningServer) -> bool:
    """VerifyAuditLog refused with SERVER_ON_BATTERY (True) or served (False)."""
    client = await running.admin()
    try:
        await client.admin.VerifyAuditLog(admin_pb2.VerifyAuditLogRequest(), metadata=client.metadata, timeout=10)
    except grpc.aio.AioRpcError as exc:
        assert reason_of(exc) == "SERVER_ON_BATTERY", exc
        return True
    return False


def _audit(dsn: str) -> list[str]:
    with psycopg.connect(dsn) as conn:
        return [r[0] for r in conn.execute(
            "SELECT outcome FROM audit_log WHERE method = 'Power/Transition' ORDER BY id").fetchall()]


async def test_on_battery_heavy_work_is_shed_and_served_again_on_steady_mains(database_dsn: str,
                                                                          dummy_ups: DummyUps) -> None:
    running = await _server(database_dsn, dummy_ups)
    try:
        power = running.server.power
        await until(lambda: power.state == "online", "ONLINE")
        assert await _report_reason(running) == "UNKNOWN_PARK"  # it reaches the reports servicer
        assert not await _verify_refused(running)
        dummy_ups.set_status("OB", charge=70)
        await until(lambda: power.state == "on_battery", "ON_BATTERY")
        assert await _verify_refused(running)
        assert await _report_reason(running) == "UNKNOWN_PARK"  # a report is slowed (queued), not refused
        client = await running.admin()
        status = await client.ops.PowerStatus(ops_pb2.PowerStatusRequest(), metadata=client.metadata, timeout=10)
        assert status.state == ops_pb2.ON_BATTERY and status.battery_percent == 70
        assert status.source == f"nut:ups@127.0.0.1:{dummy_ups.port}" and "mains failed" in status.detail
        assert [m.machine for m in status.machines] == [running.server.settings.server_id]
        dummy_ups.set_status("OL")
        await until(lambda: power.state == "online", "ONLINE after the settle time")
        assert not await _verify_refused(running)
        await until(lambda: len(_audit(database_dsn)) >= 3, "three transitions in the operation log")
        assert _audit(database_dsn) == ["ONLINE", "ON_BATTERY", "ONLINE"]
    finally:
        await stop_server(running)


async def test_low_battery_turns_health_not_serving_drains_and_loses_nothing(database_dsn: str,
                                                                             dummy_ups: DummyUps) -> None:
    running = await _server(database_dsn, dummy_ups)
    server = running.server
    seen: list[str] = []
    try:
        await until(lambda: server.power.state == "online", "ONLINE")
        prefix = f"lb_{uuid.uuid4().hex[:8]}"
        # sales, which can double (an upsert cannot): tickets per sale fingerprint are counted below
        token, product = await prepare_sales(running.address, running.admin_password, prefix)
        async with open_aio_channel(running.address) as channel:
            health = health_pb2_grpc.HealthStub(channel)
            async with Writer([running.address], token, prefix, clients=3, sell=product) as writer:
                await until(lambda: len(writer.result.acked) > 20, "writes flowing")
                dummy_ups.set_status("OB LB", charge=8)
                await until(lambda: server.power_stop.is_set(), "the server told to stop")
                for _ in range(100):
                    reply = await health.Check(health_pb2.HealthCheckRequest(), timeout=5)
                    seen.append(health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status))
                    if seen[-1] == "NOT_SERVING":
                        break
                    await asyncio.sleep(0.05)
                await server.stop()  # what serve() does next: drain in-flight calls, close the pool
                # No server is left to replay the acknowledged sales to; the count of tickets per sale
                # fingerprint below still sees a sale the clients' resends during the drain made twice.
                await writer.stop(replay=False)
        check = verify(database_dsn, prefix, writer.result.acked, sales=True)
    finally:
        await stop_server(running)
    assert seen[-1] == "NOT_SERVING", seen
    assert check["lost"] == 0 and check["duplicates"] == 0 and check["acked"] > 20, check
    assert server.power.state == "shutting_down"
    assert _audit(database_dsn) == ["ONLINE", "LOW_BATTERY", "SHUTTING_DOWN"]
