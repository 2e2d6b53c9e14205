"""Reports.LiveFlow (S26) against two real servers and PostgreSQL.

A manager watches one park's flow on the first server with a long interval,
so every snapshot that matters is pushed by a change: a gate on the *second*
server admits someone, lets someone out, refuses a forged code, and a gate
in fast mode hears a refusal after it opened; the stream shows each, with
the occupancy, the gate tiles, refusals by reason and the alerts. Pausing at
the cap shows as paused. Someone without reports.live, or naming no park,
hears why.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import grpc
import pytest

from parkgate.common.reason import Reason
from parkgate.server.domain import flow as domain
from parkgate.v1 import gate_pb2, gate_pb2_grpc, reports_pb2, reports_pb2_grpc
from tests.fixtures.server import RunningServer, reason_of, start_server, stop_server

from .flow_park import FlowPark, FlowWatcher, open_flow_park, tile

PARK = "flowpark"


@pytest.fixture(scope="module")
async def park(parkgate_server: RunningServer, module_dsn: str) -> AsyncIterator[FlowPark]:
    second = await start_server(module_dsn)
    p = await open_flow_park([parkgate_server, second], module_dsn, PARK)
    yield p
    await p.close()
    await stop_server(second)


async def test_the_stream_shows_admissions_exits_and_refusals_of_every_server(park: FlowPark) -> None:
    watcher = FlowWatcher(await park.manager(), PARK, interval_seconds=60)
    try:
        first = await watcher.until("the first snapshot", lambda s: True)
        assert first.park_id == PARK and first.inside == 0 and len(first.minutes) == 10
        assert not first.entry_paused and not first.emergency_open
        entry = await park.gate("flow-in", server=1)  # on the other server than the stream
        exit_gate = await park.gate("flow-out", direction="out", server=1)
        await watcher.until("the gates connected", lambda s: bool(
            (t := tile(s, "flow-in")) and t.connected and (o := tile(s, "flow-out")) and o.connected))

        exit_gate.heartbeat("offline-buffering", 3, False)  # what the gate says of itself shows on its tile
        await watcher.until("the gate's own state", lambda s: tile(s, "flow-out").state == "offline-buffering")  # type: ignore[union-attr]

        ticket, = await park.sell("multi")
        assert (await entry.validate("in-1", code=ticket.code)).allow
        shown = await watcher.until("one person inside", lambda s: s.inside == 1 and s.entries == 1)
        assert shown.minutes[-1].entries == 1 and shown.minutes[-1].inside == 1
        assert tile(shown, "flow-in").entries == 1  # type: ignore[union-attr]
        assert [(r.key, r.count) for r in shown.entries_by_gate] == [("flow-in", 1)]
        assert [(r.key, r.count) for r in shown.sales_by_window] == [(f"{PARK}-window", 1)]

        assert (await exit_gate.validate("out-1", code=ticket.code)).allow
        shown = await watcher.until("the person left", lambda s: s.inside == 0 and s.exits == 1)
        assert tile(shown, "flow-out").exits == 1  # type: ignore[union-attr]
        # occupancy per minute walks back from the exact count: 0 now, 0 before anyone came
        assert shown.minutes[0].inside == 0

        forged = ticket.code[:-4] + ("AAAA" if not ticket.code.endswith("AAAA") else "BBBB")
        refused = await entry.validate("in-forged", code=forged)
        assert not refused.allow
        shown = await watcher.until("the forged code", lambda s: any(a.kind == "forged_code" for a in s.alerts))
        alert = next(a for a in shown.alerts if a.kind == "forged_code")
        assert (alert.device_id, alert.request_id) == ("flow-in", "in-forged")
        assert Reason.from_number(alert.reason).value == refused.reason
        counts = {Reason.from_number(r.reason).value: r.count for r in shown.refusals}
        assert counts.get(refused.reason) == 1
        assert tile(shown, "flow-in").refusals == 1  # type: ignore[union-attr]
    finally:
        await watcher.close()


async def test_a_refusal_after_a_fast_open_is_an_alert(park: FlowPark) -> None:
    fast = await park.gate("flow-fast", fast_mode=True)
    ticket, = await park.sell("single")
    assert (await fast.validate("fast-1", code=ticket.code)).allow
    again = await fast.validate("fast-2", code=ticket.code)
    assert (again.allow, again.reason) == (False, "ALREADY_USED")
    watcher = FlowWatcher(await park.manager(), PARK, interval_seconds=60)
    try:
        shown = await watcher.until("the fast-mode refusal",
                                    lambda s: any(a.kind == "fast_mode_refusal" for a in s.alerts))
        alert = next(a for a in shown.alerts if a.kind == "fast_mode_refusal")
        assert (alert.device_id, alert.request_id) == ("flow-fast", "fast-2")
        assert "fast mode" in alert.detail and alert.server_id
    finally:
        await watcher.close()


async def test_a_ticket_used_at_two_gates_within_seconds_is_a_conflict(park: FlowPark) -> None:
    north, south = await park.gate("flow-north"), await park.gate("flow-south")
    ticket, = await park.sell("single")
    assert (await north.validate("n-1", code=ticket.code)).allow
    assert (await south.validate("s-1", code=ticket.code)).reason == "ALREADY_USED"
    assert (await north.validate("n-2", code=ticket.code)).reason == "ALREADY_USED"  # the same gate again: no alert
    watcher = FlowWatcher(await park.manager(), PARK, interval_seconds=60)
    try:
        shown = await watcher.until("the conflict", lambda s: any(a.kind == "conflict" for a in s.alerts))
        conflicts = [a for a in shown.alerts if a.kind == "conflict"]
        assert [(a.device_id, a.request_id) for a in conflicts] == [("flow-south", "s-1")]
        assert "flow-north" in conflicts[0].detail
    finally:
        await watcher.close()


async def test_pausing_at_the_cap_is_pushed(park: FlowPark) -> None:
    watcher = FlowWatcher(await park.manager(), PARK, interval_seconds=60)
    control = gate_pb2_grpc.GateControlStub(park.admin.channel)
    try:
        gate = await park.gate("flow-cap")
        ticket, = await park.sell("multi")
        assert (await gate.validate("cap-1", code=ticket.code)).allow
        await watcher.until("someone inside", lambda s: s.inside >= 1)
        await control.SetCapacity(gate_pb2.SetCapacityRequest(park_id=PARK, capacity=1, resume_margin=0),
                                  metadata=park.admin.metadata)
        shown = await watcher.until("entry paused at the cap", lambda s: s.entry_paused and s.capacity == 1)
        assert shown.inside >= 1
    finally:
        await control.SetCapacity(gate_pb2.SetCapacityRequest(park_id=PARK, capacity=0), metadata=park.admin.metadata)
        await watcher.close()


async def test_who_may_watch_and_what(park: FlowPark) -> None:
    stub = reports_pb2_grpc.ReportsStub(park.seller.channel)
    with pytest.raises(grpc.aio.AioRpcError) as err:
        async for _ in stub.LiveFlow(reports_pb2.LiveFlowRequest(park_id=PARK), metadata=park.seller.metadata):
            break
    assert reason_of(err.value) == "PERMISSION_DENIED"
    manager = await park.manager()
    stub = reports_pb2_grpc.ReportsStub(manager.channel)
    for request, reason in ((reports_pb2.LiveFlowRequest(park_id="no-such-park"), "UNKNOWN_PARK"),
                            (reports_pb2.LiveFlowRequest(), "UNKNOWN_PARK"),
                            (reports_pb2.LiveFlowRequest(park_id=PARK, interval_seconds=-1), "INVALID_ARGUMENT")):
        with pytest.raises(grpc.aio.AioRpcError) as err:
            async for _ in stub.LiveFlow(request, metadata=manager.metadata):
                break
        assert reason_of(err.value) == reason, request


# --- the aggregation alone (pure Python) ----------------------------------------------------------

class _Park:
    park_id, inside, capacity, capacity_resume_margin, paused, emergency, emergency_since = (
        "p", 7, 100, 5, False, False, None)


def _count(minute: datetime, device_id: str, kind: str, reason: str, n: int, persons: int) -> domain.FlowCount:
    return domain.FlowCount("p", minute, device_id, kind, reason, n, persons)


class _Gate:
    def __init__(self, device_id: str, connected: bool) -> None:
        self.device_id, self.connected, self.server_id, self.state, self.last_heartbeat = (
            device_id, connected, "s1", "ok", None)


class _Site:
    def __init__(self, device_id: str, last_contact: datetime | None) -> None:
        self.device_id, self.site, self.last_contact = device_id, "north", last_contact


def test_every_minute_is_present_and_occupancy_walks_back_from_now() -> None:
    now = datetime(2026, 12, 1, 10, 30, 20, tzinfo=UTC)
    m = now.replace(second=0)
    counts = [
        _count(m, "g1", "in", "OK", 3, 5),                         # a group of 5 and two singles... persons count
        _count(m - timedelta(minutes=2), "g1", "in", "OK", 2, 2),
        _count(m - timedelta(minutes=2), "g2", "out", "OK", 1, 1),
        _count(m - timedelta(minutes=1), "g1", "refused", "FORGED_CODE", 4, 0),
        _count(m - timedelta(minutes=1), "gone", "refused", "ALREADY_USED", 1, 0),
        _count(m, "g1", "ride", "OK", 9, 0),                       # a ride is not a park entry
        _count(m - timedelta(minutes=9), "g1", "in", "OK", 50, 50),  # before the window: not shown
    ]
    view = domain.aggregate_flow(now, _Park(), counts, [_Gate("g1", True), _Gate("g2", False)],
                                 [_Site("edge-1", now - timedelta(seconds=30)), _Site("edge-2", None)], minutes=4)
    assert [x.minute for x in view.minutes] == [m - timedelta(minutes=k) for k in (3, 2, 1, 0)]
    assert [(x.entries, x.exits, x.refusals) for x in view.minutes] == [(0, 0, 0), (2, 1, 0), (0, 0, 5), (5, 0, 0)]
    assert [x.inside for x in view.minutes] == [1, 2, 2, 7]   # 7 now, 5 came this minute, 2 in and 1 out before
    assert (view.entries, view.exits) == (7, 1)
    assert view.refusals == [("FORGED_CODE", 4), ("ALREADY_USED", 1)]
    assert [(g.device_id, g.connected, g.entries, g.exits, g.refusals) for g in view.gates] == [
        ("g1", True, 7, 0, 4), ("g2", False, 0, 1, 0), ("gone", False, 0, 0, 1)]
    assert view.by_gate == [("g1", 7), ("g2", 1)]
    assert [(s.device_id, s.online) for s in view.sites] == [("edge-1", True), ("edge-2", False)]


def test_which_refusals_raise_alerts() -> None:
    assert domain.alert_kind("FORGED_CODE", fast_mode=False, forwarded=False) == "forged_code"
    assert domain.alert_kind("ALREADY_USED", fast_mode=False, forwarded=False) is None
    assert domain.alert_kind("ALREADY_USED", fast_mode=True, forwarded=False) == "fast_mode_refusal"
    assert domain.alert_kind("ALREADY_USED", fast_mode=True, forwarded=True) == "conflict"
    assert domain.is_forwarded(1000.0, 1000.0 + domain.FORWARDED_AFTER_SECONDS + 1)
    assert not domain.is_forwarded(1000.0, 1001.0) and not domain.is_forwarded(0, 5000.0)
    assert domain.clamp_minutes(0) == domain.DEFAULT_MINUTES and domain.clamp_minutes(10_000) == domain.MAX_MINUTES
