"""A server on battery saves its minutes for sales and gates (real upsd + dummy-ups), without refusing reports.

Runbook: the mains fail -> the background jobs not needed to admit and sell
(partition maintenance, the operation-log outbox drainer, the live-flow retention
sweep) wait before their next turn, while a staged operation-log record waits in
the outbox; reports (RefundsReport like the others) run one at a time, the next in
a bounded queue and one more refused; LiveFlow pushes no more often than
``battery.live_interval_seconds``. The mains come back and stay -> the jobs resume
(the outbox is drained) and the queue is gone.
"""

from __future__ import annotations

import asyncio
import itertools
import uuid

import grpc
import psycopg
import pytest

from parkgate.ha.dummy_ups import DummyUps
from parkgate.v1 import reports_pb2, reports_pb2_grpc
from tests.fixtures.park import open_park
from tests.fixtures.server import RunningServer, reason_of, start_server, stop_server

from .test_sources import until

PAUSED_ON_BATTERY = ["audit-outbox", "flow-retention", "partition-maintenance"]


async def _server(dsn: str, ups: DummyUps, **extra: object) -> RunningServer:
    return await start_server(dsn, **{"power.source": "nut", "power.port": ups.port, "power.poll_seconds": 0.2,
                                      "power.settle_seconds": 0.5, "power.timeout_seconds": 1.0, **extra})


def _stage_outbox_record(dsn: str) -> str:
    """What a call leaves when its own chained write failed: a row the drainer must move into the chain."""
    call_id = str(uuid.uuid4())
    with psycopg.connect(dsn) as conn:
        conn.execute("INSERT INTO audit_outbox (call_id, at, method, summary) "
                     "VALUES (%s, now() - interval '1 hour', 'Test/Staged', '{}')", (call_id,))
    return call_id


def _in_outbox(dsn: str, call_id: str) -> bool:
    with psycopg.connect(dsn) as conn:
        return conn.execute("SELECT 1 FROM audit_outbox WHERE call_id = %s", (call_id,)).fetchone() is not None


async def test_on_battery_background_jobs_pause_and_resume_on_mains(database_dsn: str, dummy_ups: DummyUps) -> None:
    running = await _server(database_dsn, dummy_ups, **{"auth.audit_outbox_seconds": 0.2,
                                                         "partitions.maintenance_interval_seconds": 0.2,
                                                         "battery.flow_flush_seconds": 0.5})
    server = running.server
    jobs = server.jobs
    try:
        await until(lambda: server.power.state == "online" and set(PAUSED_ON_BATTERY) <= set(jobs.jobs),
                    "ONLINE with the jobs started")
        assert jobs.paused() == []
        dummy_ups.set_status("OB", charge=70)
        await until(lambda: jobs.paused() == PAUSED_ON_BATTERY, "the three jobs paused before their next turn")
        partition_turns = jobs.jobs["partition-maintenance"].turns
        staged = _stage_outbox_record(database_dsn)
        flushes = jobs.jobs["flow-flush"].turns
        await until(lambda: jobs.jobs["flow-flush"].turns > flushes, "the live-flow flush still running (slowed)")
        # a paused job is blocked on the mains: nothing has moved the staged record or run a partition round
        assert _in_outbox(database_dsn, staged)
        assert jobs.jobs["partition-maintenance"].turns == partition_turns
        dummy_ups.set_status("OL")
        await until(lambda: server.power.state == "online", "ONLINE after the settle time")
        await until(lambda: not _in_outbox(database_dsn, staged), "the outbox drained once the mains are back")
        await until(lambda: jobs.jobs["partition-maintenance"].turns > partition_turns, "partition rounds again")
        assert jobs.paused() == []
        with psycopg.connect(database_dsn) as conn:
            chained = conn.execute("SELECT count(*) FROM audit_log WHERE method = 'Test/Staged'").fetchone()
        assert chained == (1,)
    finally:
        await stop_server(running)


async def test_on_battery_reports_queue_and_live_flow_slows(database_dsn: str, dummy_ups: DummyUps) -> None:
    running = await _server(database_dsn, dummy_ups, **{"battery.reports_at_once": 1, "battery.report_queue": 1,
                                                         "battery.live_interval_seconds": 3.0})
    server = running.server
    queue = server.report_queue
    try:
        park = await open_park([running], database_dsn, "batt", "Battery park")
        md = park.admin.metadata
        stub = reports_pb2_grpc.ReportsStub(running.channel())
        request = reports_pb2.ReportRequest(park_id="batt", period=reports_pb2.DAY)
        await until(lambda: server.power.state == "online", "ONLINE")
        dummy_ups.set_status("OB", charge=70)
        await until(lambda: server.power.state == "on_battery", "ON_BATTERY")

        # one report at a time: the test holds the only slot, a RefundsReport waits its turn in the queue ...
        await queue.enter("test")
        async def refunds_report() -> reports_pb2.ReportResponse:
            return await stub.RefundsReport(request, metadata=md, timeout=30)

        waiting = asyncio.create_task(refunds_report())
        await until(lambda: queue.waiting == 1, "the refunds report queued")
        # ... the queue (1) is full: one more report is refused, as a report, not as heavy work
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stub.SalesReport(request, metadata=md, timeout=10)
        assert reason_of(err.value) == "SERVER_ON_BATTERY" and "queue is full" in (err.value.details() or "")
        assert not waiting.done()
        queue.leave()
        refunds = await waiting
        assert refunds.time_zone == "Asia/Shanghai"  # served in full once its turn came
        for report in (stub.SalesReport, stub.EntriesReport, stub.RefundsReport):  # one by one: each served
            assert (await report(request, metadata=md, timeout=10)).time_zone == "Asia/Shanghai"
        assert queue.running == 0 and queue.waiting == 0

        # LiveFlow asked for a snapshot every second is pushed at the battery interval (3 s) instead
        live = stub.LiveFlow(reports_pb2.LiveFlowRequest(park_id="batt", interval_seconds=1), metadata=md)
        stamps = []
        async for snapshot in live:
            stamps.append(snapshot.at.ToNanoseconds() / 1e9)
            if len(stamps) == 3:
                break
        live.cancel()
        gaps = [b - a for a, b in itertools.pairwise(stamps)]
        # the server waits out 3 s before each push (the bound leaves room for a slow snapshot read)
        assert all(gap >= 2.0 for gap in gaps), gaps

        dummy_ups.set_status("OL")
        await until(lambda: server.power.state == "online", "ONLINE after the settle time")
        await queue.enter("test")  # on mains nothing waits for the queue's slot
        try:
            assert (await stub.SalesReport(request, metadata=md, timeout=10)).time_zone == "Asia/Shanghai"
        finally:
            queue.leave()
    finally:
        await stop_server(running)
