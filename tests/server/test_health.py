"""Health follows the database: NOT_SERVING while PostgreSQL is down, SERVING when it is back."""

from __future__ import annotations

import asyncio
import shutil
import time

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from parkgate.v1 import catalog_pb2
from tests.fixtures.postgres import make_test_dir, start_test_instance
from tests.fixtures.server import reason_of, start_server, stop_server

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


async def _wait_status(stub: health_pb2_grpc.HealthStub, want: int, within: float, service: str = "") -> float:
    start = time.monotonic()
    while time.monotonic() - start < within:
        reply = await stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
        if reply.status == want:
            return time.monotonic() - start
        await asyncio.sleep(0.1)
    raise AssertionError(f"health did not become {health_pb2.HealthCheckResponse.ServingStatus.Name(want)} "
                         f"within {within}s")


async def test_health_follows_the_database() -> None:
    base = make_test_dir("parkgate-health-")
    pg = start_test_instance(base)
    try:
        running = await start_server(pg.dsn, **{"database.acquire_timeout_seconds": 1.0})
        try:
            stub = health_pb2_grpc.HealthStub(running.channel())
            await _wait_status(stub, SERVING, 10)
            await _wait_status(stub, SERVING, 10, service="parkgate.v1.Sales")
            admin = await running.admin()
            await admin.catalog.PutPark(catalog_pb2.PutParkRequest(park=catalog_pb2.Park(
                id="hpark", name="Health Park", time_zone="Asia/Shanghai", currency="CNY")), metadata=admin.metadata)

            await asyncio.to_thread(pg.stop)
            await _wait_status(stub, NOT_SERVING, 10)
            # Calls that need the database say why, with a reason, instead of hanging.
            try:
                await admin.catalog.ListParks(catalog_pb2.ListParksRequest(), metadata=admin.metadata, timeout=10)
                raise AssertionError("a call succeeded without a database")
            except grpc.aio.AioRpcError as err:
                assert err.code() == grpc.StatusCode.UNAVAILABLE
                assert reason_of(err) == "DATABASE_UNAVAILABLE"

            await asyncio.to_thread(pg.start)
            await _wait_status(stub, SERVING, 20)
            # The same session works again: nothing was lost.
            parks = await admin.catalog.ListParks(catalog_pb2.ListParksRequest(), metadata=admin.metadata, timeout=10)
            assert [p.id for p in parks.parks] == ["hpark"]  # what was written before the outage
        finally:
            await stop_server(running)
    finally:
        pg.stop()
        shutil.rmtree(base, ignore_errors=True)
