"""A site behind its edge, on real components: a real PostgreSQL, a real server, a real ``parkgate site run``
process, the real gate agent (scanner and relay board on socat pty pairs) and the real window client.

Read as a runbook:

* the cluster goes away while the gates admit through the edge and the window sells: decisions continue,
  one admission per ticket within the site, the window's sales are signed by the site's own key and admit
  at the gates; when the cluster is back everything is forwarded and nothing is lost or doubled;
* the edge is killed with kill -9 in the middle of forwarding and started again: everything it had
  acknowledged reaches the cluster exactly once;
* a ticket refunded before the cut is refused at the gate while the cluster is away;
* one ticket shown at two sites while both are cut off: admitted once at each, one conflict recorded;
* the first server in the edge's list is dead: the edge uses the next one (feed, key, online decisions);
* the edge's clock is a few seconds off: decisions and forwarding still hold (limits in docs/sites.md);
* its UPS (upsd + dummy-ups) goes on battery: it decides alone at once with the cluster up and not asked,
  forwards when the mains are back; on low battery it stops cleanly, nothing acknowledged lost;
* its /metrics after a gate behind it admitted someone: the validation counter and the journal depth.
"""

from __future__ import annotations

import asyncio
import re
import sqlite3
import time
import urllib.request
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import grpc
import psycopg
import pytest
from google.protobuf.json_format import MessageToDict

from parkgate.clients.connection import CallError
from parkgate.clients.gate.agent import GateAgent
from parkgate.clients.gate.config import load_config
from parkgate.clients.gate.link import GateLink, Hello, LinkError
from parkgate.clients.pos.window import Window
from parkgate.clients.power_cli import render_cluster, render_power
from parkgate.common.channels import Transport, open_aio_channel
from parkgate.common.power import EXIT_POWER_STOP
from parkgate.common.tls import DeviceCa, device_key_and_csr
from parkgate.ha.dummy_ups import DummyUps
from parkgate.server.pg import free_port
from parkgate.v1 import (
    admin_pb2,
    auth_pb2,
    auth_pb2_grpc,
    gate_pb2,
    ops_pb2,
    sales_pb2,
    site_pb2,
    site_pb2_grpc,
)
from tests.fixtures.park import TestPark, open_park, rid
from tests.fixtures.serial import PtyPair
from tests.fixtures.server import use_test_pki
from tests.gate_agent.conftest import PARK, BoardSim, Rig, toml_config

from .edge_rig import Cluster, Edge, register, until

EDGE_ID = "east-edge"


@pytest.fixture(scope="module")
async def park(cluster: Cluster, module_dsn: str) -> TestPark:
    assert cluster.running is not None
    p = await open_park([cluster.running], module_dsn, PARK, "Edge Park", time_zone="UTC")
    await p.product("single", entries_total=1)
    await register(p, EDGE_ID, admin_pb2.SITE_EDGE)
    await register(p, "east-window", admin_pb2.SALES_WINDOW)
    # One gate per test beyond the first two: each test's edge starts with a fresh store.
    for gate in ("east-gate-1", "east-gate-2", "east-gate-3", "east-gate-4", "east-gate-5", "east-gate-6", "east-gate-11", "east-gate-12", "east-gate-13", "east-gate-14",
                 "east-gate-15", "east-gate-7", "east-gate-8", "east-gate-9", "east-gate-10"):
        await register(p, gate, admin_pb2.GATE)
    await register(p, "west-edge", admin_pb2.SITE_EDGE, site="west")
    await register(p, "west-gate-1", admin_pb2.GATE, site="west")
    return p


@pytest.fixture
async def edge(park: TestPark, cluster: Cluster, tmp_path: Path) -> AsyncIterator[Edge]:
    e = Edge(tmp_path / "edge", [cluster.address], EDGE_ID, park.secrets[EDGE_ID])
    e.start()
    await e.ready()
    yield e
    e.stop()
    if cluster.running is None:
        await cluster.start()


async def start_gate(park: TestPark, edge: Edge, device: str, make_pty_pair: Callable[[], PtyPair],
                     tmp_path: Path) -> Rig:
    """A real gate agent with its relay board, pointed at the edge (it knows no other server)."""
    scanner, relay = make_pty_pair(), make_pty_pair()
    secret = tmp_path / f"{device}.secret"
    secret.write_text(park.secrets[device] + "\n")
    config = tmp_path / f"{device}.toml"
    config.write_text(toml_config(device, secret, [edge.address], scanner=scanner.device, relay=relay.device,
                                  relay_extra="open_ms = 3000\nconfirm_passage = false")
                      # a loaded test machine: the edge's own deadline (400 ms) decides, not the gate's
                      .replace("request_deadline_seconds = 1.5", "request_deadline_seconds = 5.0"))
    rig = Rig(config, scanner.open_far(), BoardSim(relay, 200))
    rig.agent = GateAgent(load_config(config))
    rig.task = asyncio.create_task(rig.agent.run())
    await asyncio.wait_for(rig.agent.online.wait(), 20)
    return rig


async def stop_gate(rig: Rig) -> None:
    await rig.stop()
    assert rig.scanner is not None
    rig.scanner.close()
    rig.board.stop()


@pytest.fixture
async def gates(park: TestPark, edge: Edge, make_pty_pair: Callable[[], PtyPair], tmp_path: Path
                ) -> AsyncIterator[list[Rig]]:
    """Two real gate agents with relay boards, pointed at the edge."""
    rigs = [await start_gate(park, edge, device, make_pty_pair, tmp_path) for device in ("east-gate-1", "east-gate-2")]
    yield rigs
    for rig in rigs:
        await stop_gate(rig)


async def window_at(edge: Edge, park: TestPark, config_home: Path, monkeypatch: pytest.MonkeyPatch) -> Window:
    """The real window client (blocking: it runs in a thread), logged in at the edge as the park's seller."""
    monkeypatch.setenv("XDG_CONFIG_HOME", str(config_home))
    window = Window(edge.address, call_timeout=5.0, retry_for=10.0)
    await asyncio.to_thread(window.login, f"{PARK}-seller", "seller-password-1", "east-window",
                            park.secrets["east-window"])
    return window


def admissions(park: TestPark, ticket_id: str) -> int:
    return int(park.sql("SELECT count(*) FROM validations WHERE ticket_id = %s AND allow AND direction = 'in' "
                        "AND annulled_at IS NULL", ticket_id)[0][0])


async def test_the_site_keeps_admitting_and_selling_while_the_cluster_is_away(
        park: TestPark, cluster: Cluster, edge: Edge, gates: list[Rig], tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    gate1, gate2 = gates
    window = await window_at(edge, park, tmp_path / "window", monkeypatch)
    # Online: the window sells through the edge, and a gate admits the ticket through the edge.
    online_order = await asyncio.to_thread(window.quick_sell, "single", 3)
    first, second, third = online_order.tickets
    mark = gate1.board.mark()
    gate1.scan(first.code)
    await gate1.board.wait_for(r"OPEN", mark)
    await until(lambda: admissions(park, first.id) == 1, "the online admission in the cluster")

    # The cluster goes away.
    await cluster.stop()
    mark1, mark2 = gate1.board.mark(), gate2.board.mark()
    gate1.scan(second.code)
    await gate1.board.wait_for(r"OPEN", mark1)
    gate2.scan(second.code)          # the same ticket at the other gate of the site: refused
    await gate2.board.wait_for(r"display: .*(lready|used)", mark2)
    gate2.scan(first.code)           # admitted online before the cut: refused offline too
    await gate2.board.wait_for(r"display: .*(lready|used)", mark2, times=2)
    assert gate2.board.count(r"OPEN", mark2) == 0
    # The window sells alone: tickets signed with the site's key, serials from its range.
    offline_order = await asyncio.to_thread(window.quick_sell, "single", 2)
    assert offline_order.tickets[0].serial >= 2**40
    shift = await asyncio.to_thread(window.shift)
    assert shift.tickets >= 2
    # A log-in while the cluster is away: checked at the edge against the feed's argon2id hashes.
    with pytest.raises(CallError) as wrong:
        await asyncio.to_thread(window.login, f"{PARK}-seller", "not-the-password", "east-window",
                                park.secrets["east-window"])
    assert wrong.value.reason == "BAD_CREDENTIALS"
    relogin = await asyncio.to_thread(window.login, f"{PARK}-seller", "seller-password-1", "east-window",
                                      park.secrets["east-window"])
    assert relogin.token.startswith("edge-")
    offline_order2 = await asyncio.to_thread(window.quick_sell, "single", 1)
    mark2 = gate2.board.mark()
    gate2.scan(offline_order.tickets[0].code)
    await gate2.board.wait_for(r"OPEN", mark2)
    gate1.scan(third.code)
    await gate1.board.wait_for(r"OPEN", mark1, times=2)
    assert edge.queued == 3 + 2  # 3 admissions + 2 sales (refusals are not forwarded)

    # The cluster is back: everything is forwarded, once.
    await cluster.start()
    await until(lambda: edge.queued == 0, "the forward queue to empty", timeout=60)
    for ticket in (first, second, third):
        assert admissions(park, ticket.id) == 1, ticket.id
    for order in (offline_order, offline_order2):
        assert park.sql("SELECT count(*) FROM orders WHERE request_id = %s", order.request_id) == [(1,)]
    sold = park.sql("SELECT id::text FROM tickets WHERE serial = %s", offline_order.tickets[0].serial)
    assert sold and admissions(park, sold[0][0]) == 1
    window.close()


async def test_kill_9_of_the_edge_mid_forward_loses_and_doubles_nothing(
        park: TestPark, cluster: Cluster, edge: Edge) -> None:
    tickets = await park.sell("single", 120)
    edge.stop()
    edge.forward_batch = 4  # many small forward calls, so the kill lands in the middle of them
    edge.start()
    await edge.ready()
    await cluster.stop()
    link = GateLink(edge.address, Hello("east-gate-3", park.secrets["east-gate-3"]))
    await link.open()
    results = await asyncio.gather(*(link.validate(f"k9-{i}", code=t.code, timeout=10)
                                     for i, t in enumerate(tickets)))
    await link.close()
    admitted = [t for t, r in zip(tickets, results, strict=True) if r.allow]
    assert len(admitted) == len(tickets)
    assert edge.queued == len(tickets)
    await cluster.start()
    await until(lambda: 0 < edge.queued < len(tickets), "forwarding to begin", every=0.002)
    edge.kill9()
    left = edge.queued
    assert left > 0
    edge.start()
    await edge.ready(feed=False, provisioned=False)
    await until(lambda: edge.queued == 0, "the forward queue to empty after the restart", timeout=60)
    ids = [t.id for t in admitted]
    counted = park.sql("SELECT ticket_id::text, count(*) FROM validations WHERE ticket_id = ANY(%s::uuid[]) "
                       "AND allow AND direction = 'in' GROUP BY ticket_id", ids)
    assert len(counted) == len(ids), "an acknowledged admission was lost"
    assert all(n == 1 for _, n in counted), "an admission was counted twice"


async def test_a_ticket_refunded_before_the_cut_is_refused_offline(
        park: TestPark, cluster: Cluster, edge: Edge) -> None:
    refunded, kept = await park.sell("single", 2)
    await park.admin.sales.PutRefundReason(sales_pb2.RefundReason(id="changed", label="Changed mind",
                                                                  refund_percent=100), metadata=park.admin.metadata)
    await park.admin.sales.Refund(sales_pb2.RefundRequest(request_id=rid(), ticket_ids=[refunded.id],
                                                          reason_id="changed"), metadata=park.admin.metadata)
    await until(lambda: edge.store_value("SELECT count(*) FROM tickets WHERE ticket_id = ?", refunded.id) > 0,
                "the refund to reach the edge through the feed")
    await until(lambda: _state(edge, refunded.id) == sales_pb2.REFUNDED_STATE, "the refunded state at the edge")
    await cluster.stop()
    link = GateLink(edge.address, Hello("east-gate-4", park.secrets["east-gate-4"]))
    await link.open()
    refused = await link.validate("refund-1", code=refunded.code, timeout=10)
    admitted = await link.validate("refund-2", code=kept.code, timeout=10)
    await link.close()
    assert (refused.allow, refused.reason) == (False, "REFUNDED")
    assert admitted.allow


def _decided_at(edge: Edge) -> float:
    """When the edge says it made the newest decision in its forward queue (epoch seconds)."""
    db = sqlite3.connect(f"file:{edge.folder / 'state' / 'site.db'}?mode=ro", uri=True, timeout=10)
    try:
        row = db.execute("SELECT body FROM outbox ORDER BY id DESC LIMIT 1").fetchone()
    finally:
        db.close()
    return site_pb2.ForwardedRecord.FromString(row[0]).decision.decided_at.ToNanoseconds() / 1e9


def _state(edge: Edge, ticket_id: str) -> int:
    db = sqlite3.connect(f"file:{edge.folder / 'state' / 'site.db'}?mode=ro", uri=True, timeout=10)
    try:
        row = db.execute("SELECT body FROM tickets WHERE ticket_id = ?", (ticket_id,)).fetchone()
    finally:
        db.close()
    return site_pb2.TicketUse.FromString(row[0]).state if row else 0


@pytest.mark.parametrize(("skew", "gate"), [("+8s", "east-gate-5"), ("-8s", "east-gate-6")])
async def test_an_edge_whose_clock_is_a_few_seconds_off_still_decides_and_forwards(
        park: TestPark, cluster: Cluster, tmp_path: Path, skew: str, gate: str) -> None:
    """libfaketime moves the edge's clock; the cluster's stays right. Limits in docs/sites.md."""
    edge = Edge(tmp_path / "skewed", [cluster.address], EDGE_ID, park.secrets[EDGE_ID], faketime=skew)
    edge.start()
    try:
        await edge.ready()
        tickets = await park.sell("single", 3)
        await cluster.stop()
        link = GateLink(edge.address, Hello(gate, park.secrets[gate]))
        await link.open()
        first = [await link.validate(f"{gate}-{i}", code=t.code, timeout=10) for i, t in enumerate(tickets)]
        again = await link.validate(f"{gate}-again", code=tickets[0].code, timeout=10)
        await link.close()
        assert [r.allow for r in first] == [True, True, True]
        assert (again.allow, again.reason) == (False, "ALREADY_USED")
        # The edge really judged by its own (skewed) clock: its records say when it thought it decided.
        offset = _decided_at(edge) - time.time()
        assert (offset > 4) if skew.startswith("+") else (offset < -4), offset
        await cluster.start()
        await until(lambda: edge.queued == 0, "the skewed edge's queue to empty", timeout=60)
        assert edge.store_value("SELECT count(*) FROM rejected") == 0
        for ticket in tickets:
            assert admissions(park, ticket.id) == 1
    finally:
        edge.stop()
        if cluster.running is None:
            await cluster.start()


async def test_one_ticket_at_two_sites_during_a_partition_is_one_admission_per_site_and_one_conflict(
        park: TestPark, cluster: Cluster, edge: Edge, tmp_path: Path) -> None:
    west = Edge(tmp_path / "west", [cluster.address], "west-edge", park.secrets["west-edge"])
    west.start()
    try:
        await west.ready()
        (ticket,) = await park.sell("single", 1)
        await cluster.stop()
        answers = []
        for site_edge, gate in ((edge, "east-gate-7"), (west, "west-gate-1")):
            link = GateLink(site_edge.address, Hello(gate, park.secrets[gate]))
            await link.open()
            answers.append(await link.validate(f"{gate}-p1", code=ticket.code, timeout=10))
            answers.append(await link.validate(f"{gate}-p2", code=ticket.code, timeout=10))
            await link.close()
        assert [(a.allow, a.reason) for a in answers] == [
            (True, "OK"), (False, "ALREADY_USED"), (True, "OK"), (False, "ALREADY_USED")]
        await cluster.start()
        await until(lambda: edge.queued == 0 and west.queued == 0, "both sites to forward", timeout=60)
        assert edge.store_value("SELECT count(*) FROM rejected") == west.store_value(
            "SELECT count(*) FROM rejected") == 0
        assert admissions(park, ticket.id) == 2  # never dropped: one per site
        conflicts = await site_pb2_grpc.SiteStub(park.admin.channel).ListConflicts(
            site_pb2.ListConflictsRequest(park_id=park.park_id), metadata=park.admin.metadata)
        mine = [c for c in conflicts.conflicts if c.ticket_id == ticket.id]
        assert len(mine) == 1
        assert {mine[0].first_site, mine[0].second_site} == {"east", "west"}
    finally:
        west.stop()


async def test_a_ticket_the_edge_admitted_alone_is_decided_there_until_the_cluster_has_the_record(
        park: TestPark, cluster: Cluster, edge: Edge, module_dsn: str) -> None:
    """The failover drill's doubled entry: the cluster is back, the edge's own admission not yet forwarded.

    Asked then, the cluster would let the ticket in a second time (it has not heard of the first use);
    the edge decides that ticket itself until the cluster has acknowledged its record."""
    ticket, *probes = await park.sell("single", 12)
    await cluster.stop()
    link = GateLink(edge.address, Hello("east-gate-11", park.secrets["east-gate-11"]))
    await link.open()
    try:
        first = await link.validate("us-1", code=ticket.code, timeout=10)
        assert first.allow
        assert edge.store_value("SELECT count(*) FROM unsettled") == 1
        async with await psycopg.AsyncConnection.connect(module_dsn) as held:
            # Forwarding waits on this lock; online validation does not touch the table.
            await held.execute("LOCK TABLE forward_cursors IN EXCLUSIVE MODE")
            await cluster.start()
            for n, probe in enumerate(probes):  # until the edge asks the cluster again
                await link.validate(f"us-probe-{n}", code=probe.code, timeout=10)
                if edge.store_value("SELECT count(*) FROM decisions WHERE request_id = ? AND offline = 0",
                                    f"us-probe-{n}"):
                    break
                await asyncio.sleep(0.5)
            else:
                pytest.fail("the edge never asked the cluster again")
            assert edge.queued >= 1  # the first admission is still waiting for the lock
            second = await link.validate("us-2", code=ticket.code, timeout=10)
            assert (second.allow, second.reason) == (False, "ALREADY_USED")
            assert park.sql("SELECT count(*) FROM validations WHERE request_id = 'us-2'") == [(0,)]
        await until(lambda: edge.queued == 0, "the forward queue to empty", timeout=60)
        assert admissions(park, ticket.id) == 1
        assert edge.store_value("SELECT count(*) FROM unsettled") == 0
        third = await link.validate("us-3", code=ticket.code, timeout=10)  # settled: the cluster decides again
        assert (third.allow, third.reason) == (False, "ALREADY_USED")
        await until(lambda: park.sql("SELECT count(*) FROM validations WHERE request_id = 'us-3'") == [(1,)],
                    "the cluster's own refusal")
    finally:
        await link.close()


async def test_the_capacity_cap_holds_at_an_edge_deciding_alone(park: TestPark, cluster: Cluster, edge: Edge) -> None:
    """S27 while the cluster is away: the feed's last count plus the site's own flow, with the margin."""
    tickets = await park.sell("single", 5)
    inside = (await park.control().SetCapacity(gate_pb2.SetCapacityRequest(park_id=park.park_id, capacity=0),
                                               metadata=park.admin.metadata)).inside
    await park.control().SetCapacity(gate_pb2.SetCapacityRequest(park_id=park.park_id, capacity=int(inside) + 2,
                                                                 resume_margin=2), metadata=park.admin.metadata)

    def fed_capacity() -> int:
        db = sqlite3.connect(f"file:{edge.folder / 'state' / 'site.db'}?mode=ro", uri=True, timeout=10)
        try:
            row = db.execute("SELECT body FROM park_states WHERE park_id = ?", (park.park_id,)).fetchone()
        finally:
            db.close()
        return site_pb2.SiteParkState.FromString(row[0]).capacity if row else 0

    try:
        await until(lambda: fed_capacity() == inside + 2, "the cap in the edge's feed")
        await cluster.stop()
        link = GateLink(edge.address, Hello("east-gate-12", park.secrets["east-gate-12"]))
        await link.open()
        try:
            first = [await link.validate(f"cap-{n}", code=t.code, timeout=10) for n, t in enumerate(tickets[:3])]
            assert [(r.allow, r.reason) for r in first] == [(True, "OK"), (True, "OK"), (False, "PARK_FULL")]
            command = await asyncio.wait_for(link.commands.get(), 10)  # the gate hears the pause, as from the cluster
            assert command.kind == "PAUSE_ENTRY"
            out = await link.validate("cap-out", code=tickets[0].code, direction="out", timeout=10)
            assert out.allow
            # One left: still within the margin of 2, entry stays paused.
            again = await link.validate("cap-again", code=tickets[2].code, timeout=10)
            assert (again.allow, again.reason) == (False, "PARK_FULL")
            out2 = await link.validate("cap-out2", code=tickets[1].code, direction="out", timeout=10)
            assert out2.allow
            resumed = await asyncio.wait_for(link.commands.get(), 10)
            assert resumed.kind == "RESUME_ENTRY"
            last = await link.validate("cap-last", code=tickets[2].code, timeout=10)
            assert last.allow
        finally:
            await link.close()
        await cluster.start()
        await until(lambda: edge.queued == 0, "the forward queue to empty", timeout=60)
        occupancy = await park.control().GetOccupancy(gate_pb2.GetOccupancyRequest(park_id=park.park_id),
                                                      metadata=park.admin.metadata)
        assert occupancy.inside == inside + 1  # three in, two out: the cluster counts the site's flow too
    finally:
        if cluster.running is None:
            await cluster.start()
        await park.control().SetCapacity(gate_pb2.SetCapacityRequest(park_id=park.park_id, capacity=0),
                                         metadata=park.admin.metadata)


async def test_a_person_who_did_not_pass_a_gate_behind_the_edge_gets_the_entry_back(
        park: TestPark, cluster: Cluster, edge: Edge) -> None:
    """A gate that confirms passages, behind the edge, as at a gate of the cluster's own: a person who did not
    walk through gets the ticket's use back, online (the cluster gives it back when the report is forwarded)
    and while the cluster is away (at once at the edge, at the cluster when it is back)."""
    online_ticket, offline_ticket = await park.sell("single", 2)

    def annulled(request_id: str) -> bool:
        return park.sql("SELECT count(*) FROM validations WHERE request_id = %s AND annulled_at IS NOT NULL",
                        request_id) == [(1,)]

    def given_back(request_id: str) -> bool:
        return edge.store_value("SELECT given_back FROM admitted WHERE request_id = ?", request_id) == 1

    link = GateLink(edge.address, Hello("east-gate-13", park.secrets["east-gate-13"], confirms_passage=True))
    await link.open()
    try:
        assert (await link.validate("np-1", code=online_ticket.code, timeout=10)).allow
        assert edge.store_value("SELECT count(*) FROM decisions WHERE request_id = 'np-1' AND offline = 0") == 1
        link.passage("np-1", False)
        await until(lambda: annulled("np-1") and edge.queued == 0, "the cluster to give the entry back")
        assert (await link.validate("np-2", code=online_ticket.code, timeout=10)).allow  # the cluster admits again

        await cluster.stop()
        assert (await link.validate("np-3", code=offline_ticket.code, timeout=10)).allow
        link.passage("np-3", False)
        await until(lambda: given_back("np-3"), "the edge to give the entry back")
        assert (await link.validate("np-4", code=offline_ticket.code, timeout=10)).allow
        refused = await link.validate("np-5", code=offline_ticket.code, timeout=10)
        assert (refused.allow, refused.reason) == (False, "ALREADY_USED")
        # The cluster's own admission (np-2), given back while it is away: the feed still counts that use.
        link.passage("np-2", False)
        await until(lambda: given_back("np-2"), "the edge to give the online entry back")
        assert (await link.validate("np-6", code=online_ticket.code, timeout=10)).allow
        refused = await link.validate("np-7", code=online_ticket.code, timeout=10)
        assert (refused.allow, refused.reason) == (False, "ALREADY_USED")
    finally:
        await link.close()
    await cluster.start()
    await until(lambda: edge.queued == 0, "the forward queue to empty", timeout=60)
    assert annulled("np-2") and annulled("np-3")
    assert admissions(park, online_ticket.id) == 1 and admissions(park, offline_ticket.id) == 1


async def test_an_edge_with_the_device_ca_takes_gates_and_windows_only_with_their_own_certificates(
        park: TestPark, cluster: Cluster, tmp_path: Path) -> None:
    """device_ca_file: gates and windows at the site present device certificates of the cluster's device CA
    naming the device they claim (as on the cluster's device port); another device's certificate is refused
    DEVICE_CERT_MISMATCH, none at all does not get past the handshake."""
    pki = use_test_pki()
    ca = DeviceCa.from_files(pki.device_ca_file, pki.device_ca_key_file)

    def certificate(device_id: str) -> Transport:
        key, csr = device_key_and_csr(device_id)
        cert_file, key_file = tmp_path / f"{device_id}.pem", tmp_path / f"{device_id}.key"
        cert_file.write_bytes(ca.issue(csr, device_id, days=1).pem)
        key_file.write_bytes(key)
        return Transport(ca_file=str(pki.ca_file), cert_file=str(cert_file), key_file=str(key_file))

    edge = Edge(tmp_path / "mtls-edge", [cluster.address], EDGE_ID, park.secrets[EDGE_ID],
                extra=f'device_ca_file = "{pki.device_ca_file}"')
    edge.start()
    try:
        await edge.ready()
        (ticket,) = await park.sell("single", 1)
        own = GateLink(edge.address, Hello("east-gate-15", park.secrets["east-gate-15"]), certificate("east-gate-15"))
        await own.open()
        try:
            assert (await own.validate("mtls-1", code=ticket.code, timeout=10)).allow
        finally:
            await own.close()
        stolen = GateLink(edge.address, Hello("east-gate-15", park.secrets["east-gate-15"]),
                          certificate("east-gate-1"))
        with pytest.raises(LinkError) as refused:
            await stolen.open()
        assert refused.value.reason == "DEVICE_CERT_MISMATCH"
        bare = GateLink(edge.address, Hello("east-gate-15", park.secrets["east-gate-15"]),
                        Transport(ca_file=str(pki.ca_file)))
        with pytest.raises(LinkError):  # no certificate: the handshake itself fails
            await bare.open()
        # A window logs in with its own certificate; a window claiming another device with it is refused.
        window = certificate("east-window")
        channel = open_aio_channel(edge.address, window)
        try:
            auth = auth_pb2_grpc.AuthStub(channel)
            ok = await auth.Login(auth_pb2.LoginRequest(username=f"{PARK}-seller", password="seller-password-1",
                                                        device_id="east-window",
                                                        device_secret=park.secrets["east-window"]), timeout=10)
            assert ok.token
            with pytest.raises(grpc.aio.AioRpcError) as mismatch:
                await auth.Login(auth_pb2.LoginRequest(username=f"{PARK}-seller", password="seller-password-1",
                                                       device_id="east-gate-15",
                                                       device_secret=park.secrets["east-gate-15"]), timeout=10)
            assert dict(mismatch.value.trailing_metadata() or ()).get("parkgate-reason") == "DEVICE_CERT_MISMATCH"
        finally:
            await channel.close()
    finally:
        edge.stop()


async def test_a_dead_first_server_in_the_list_is_passed_over(park: TestPark, cluster: Cluster,
                                                              tmp_path: Path) -> None:
    dead = f"127.0.0.1:{free_port()}"
    edge = Edge(tmp_path / "failover", [dead, cluster.address], EDGE_ID, park.secrets[EDGE_ID])
    edge.start()
    try:
        await edge.ready()  # the feed and the site key came from the second server
        (ticket,) = await park.sell("single", 1)
        link = GateLink(edge.address, Hello("east-gate-8", park.secrets["east-gate-8"]))
        await link.open()
        result = await link.validate("fo-1", code=ticket.code, timeout=10)
        await link.close()
        assert result.allow
        await until(lambda: admissions(park, ticket.id) == 1, "the admission decided by the cluster")
        # Decided by the cluster, not by the edge alone: the edge kept the answer as an online one.
        assert edge.store_value("SELECT count(*) FROM decisions WHERE request_id = 'fo-1' AND offline = 0") == 1
    finally:
        edge.stop()


async def test_an_emergency_and_a_pause_from_the_cluster_reach_the_gates_behind_the_edge(
        park: TestPark, cluster: Cluster, edge: Edge, gates: list[Rig]) -> None:
    """S25: a fire emergency opens every gate of the park, those behind an edge too; S27: entry pauses there."""
    assert cluster.running is not None
    control, md = park.control(), park.admin.metadata
    marks = [g.board.mark() for g in gates]
    try:
        await control.EmergencyOpen(gate_pb2.EmergencyRequest(park_id=PARK, note="fire drill"), metadata=md)
        for gate, mark in zip(gates, marks, strict=True):
            await gate.board.wait_for(r"^HOLD \d+: gate held open", mark)
            await until(lambda g=gate: g.board.board.lock == "HELD" and "server" in g.agent.emergency,
                        "the gate behind the edge held open")
        # The cluster goes away: the edge keeps the emergency, and a gate that connects now hears it too.
        await cluster.stop()
        link = GateLink(edge.address, Hello("east-gate-7", park.secrets["east-gate-7"]))
        welcome = await link.open()
        await link.close()
        assert welcome.emergency_open
        assert all(g.board.board.lock == "HELD" for g in gates)
        await cluster.start()
        marks = [g.board.mark() for g in gates]
        await park.control().EmergencyRelease(gate_pb2.EmergencyRequest(park_id=PARK), metadata=md)
        for gate, mark in zip(gates, marks, strict=True):
            await gate.board.wait_for(r"^CLOSE \d+: gate locked", mark)
            await until(lambda g=gate: g.board.board.lock == "LOCKED" and not g.agent.emergency,
                        "the gate behind the edge back to normal")

        # The cap: one person inside and a cap of that many pauses the entry gates behind the edge.
        gate1 = gates[0]
        (ticket,) = await park.sell("single", 1)
        mark = gate1.board.mark()
        gate1.scan(ticket.code)
        await gate1.board.wait_for(r"OPEN", mark)
        await until(lambda: admissions(park, ticket.id) == 1, "the admission in the cluster")
        (inside,), = park.sql("SELECT inside FROM park_state WHERE park_id = %s", PARK)
        assert inside >= 1
        marks = [g.board.mark() for g in gates]
        await park.control().SetCapacity(gate_pb2.SetCapacityRequest(park_id=PARK, capacity=int(inside)),
                                         metadata=md)
        for gate, mark in zip(gates, marks, strict=True):
            await gate.board.wait_for(r"^display: 'Park full - please wait'", mark)
            await until(lambda g=gate: g.agent.paused, "entry paused at the gate behind the edge")
        await park.control().SetCapacity(gate_pb2.SetCapacityRequest(park_id=PARK, capacity=0), metadata=md)
        for gate in gates:
            await until(lambda g=gate: not g.agent.paused, "entry resumed at the gate behind the edge")
    finally:
        if cluster.running is None:
            await cluster.start()
        await park.control().EmergencyRelease(gate_pb2.EmergencyRequest(park_id=PARK), metadata=md)
        await park.control().SetCapacity(gate_pb2.SetCapacityRequest(park_id=PARK, capacity=0), metadata=md)


# --- power (issue 13) and metrics (issue 14) ----------------------------------------------------

def power_toml(ups: DummyUps) -> str:
    return (f'[power]\nsource = "nut"\nport = {ups.port}\npoll_seconds = 0.2\nsettle_seconds = 0.5\n'
            'lost_after_seconds = 30\n')


def audit_mark(park: TestPark) -> int:
    return int(park.sql("SELECT coalesce(max(id), 0) FROM audit_log")[0][0])


def power_reports(park: TestPark, after: int) -> list[str]:
    """The edge's power reports in the cluster's operation log (Site.ReportPower), oldest first."""
    return [str(r[0]) for r in park.sql(
        "SELECT summary->>'state' FROM audit_log WHERE method = '/parkgate.v1.Site/ReportPower' "
        "AND device_id = %s AND outcome = 'OK' AND id > %s ORDER BY id", EDGE_ID, after)]


async def edge_power_seen(park: TestPark) -> tuple[int, int, list[str]]:
    """(the edge's state in Ops.PowerStatus, in Ops.ClusterStatus's edges, PowerStatus.gates_on_battery)."""
    md = park.admin.metadata
    power = await park.admin.ops.PowerStatus(ops_pb2.PowerStatusRequest(), metadata=md, timeout=10)
    cluster = await park.admin.ops.ClusterStatus(ops_pb2.ClusterStatusRequest(), metadata=md, timeout=10)
    machine = [m for m in power.machines if m.machine == EDGE_ID]
    assert not machine or machine[0].role == "edge"
    edge = [e for e in cluster.edges if e.device_id == EDGE_ID]
    return (machine[0].state if machine else 0, edge[0].power if edge else 0, list(power.gates_on_battery))


async def power_cli_lines(park: TestPark) -> str:
    """What `parkgate power status` and `parkgate power cluster` print from the cluster's answers."""
    md = park.admin.metadata
    as_dict = {"preserving_proto_field_name": True, "always_print_fields_with_no_presence": True}
    power = await park.admin.ops.PowerStatus(ops_pb2.PowerStatusRequest(), metadata=md, timeout=10)
    cluster = await park.admin.ops.ClusterStatus(ops_pb2.ClusterStatusRequest(), metadata=md, timeout=10)
    return (render_power(MessageToDict(power, **as_dict)) + "\n"  # type: ignore[arg-type]
            + render_cluster(MessageToDict(cluster, **as_dict)))  # type: ignore[arg-type]


async def test_on_battery_the_edge_decides_alone_and_on_low_battery_stops_losing_nothing(
        park: TestPark, cluster: Cluster, dummy_ups: DummyUps, make_pty_pair: Callable[[], PtyPair],
        tmp_path: Path) -> None:
    edge = Edge(tmp_path / "edge", [cluster.address], EDGE_ID, park.secrets[EDGE_ID], extra=power_toml(dummy_ups))
    mark = audit_mark(park)
    edge.start()
    gate: Rig | None = None
    try:
        await edge.ready()
        gate = await start_gate(park, edge, "east-gate-9", make_pty_pair, tmp_path)
        first, second, third = await park.sell("single", 3)
        await until(lambda: power_reports(park, mark) == ["ON_MAINS"], "the edge's first reading in the cluster")

        # The mains go: the edge decides alone at once, the cluster (up) is not asked.
        dummy_ups.set_status("OB", charge=80)
        await until(lambda: "on battery: deciding every validation locally" in edge.log_text(),
                    "the edge's on-battery alert")
        # ... but it tells the cluster its power: operation log, PowerStatus, ClusterStatus
        await until(lambda: power_reports(park, mark) == ["ON_MAINS", "ON_BATTERY"], "the report of the mains lost")
        assert (await edge_power_seen(park))[:2] == (ops_pb2.ON_BATTERY, ops_pb2.ON_BATTERY)
        shown = await power_cli_lines(park)
        assert re.search(rf"^  {EDGE_ID} +edge +ON BATTERY +80%", shown, re.MULTILINE), shown
        assert re.search(rf"^  edge {EDGE_ID} .* power ON BATTERY$", shown, re.MULTILINE), shown
        mark = gate.board.mark()
        gate.scan(first.code)
        await gate.board.wait_for(r"OPEN", mark)
        await until(lambda: edge.queued == 1, "the edge's own decision in its journal")
        assert edge.store_value("SELECT count(*) FROM decisions WHERE offline = 1") == 1
        assert cluster.running is not None  # the cluster was up all along: not asked, not told yet
        assert admissions(park, first.id) == 0

        # Back on steady mains: forwarded, and the cluster decides again.
        dummy_ups.set_status("OL")
        await until(lambda: "back on steady mains" in edge.log_text(), "the edge back on mains")
        await until(lambda: admissions(park, first.id) == 1, "the on-battery admission forwarded")
        await until(lambda: edge.queued == 0, "the forward acknowledged")
        gate.scan(second.code)
        await gate.board.wait_for(r"OPEN", mark, times=2)
        await until(lambda: admissions(park, second.id) == 1, "an online admission decided by the cluster")
        assert edge.store_value("SELECT count(*) FROM decisions WHERE offline = 1") == 1

        # On battery again, one more admission, then the battery runs low: a clean stop, nothing lost.
        dummy_ups.set_status("OB", charge=60)
        await until(lambda: edge.log_text().count("on battery: deciding every validation locally") == 2,
                    "the second on-battery alert")
        gate.scan(third.code)
        await gate.board.wait_for(r"OPEN", mark, times=3)
        await until(lambda: edge.queued == 1, "the second on-battery admission in the journal")
        dummy_ups.set_status("OB LB", charge=10)
        assert edge.process is not None
        await until(lambda: edge.process is not None and edge.process.poll() is not None,
                    "the edge to stop for low battery", timeout=60)
        assert edge.process.returncode == EXIT_POWER_STOP, edge.log_text()[-3000:]  # its unit waits for mains
        text = edge.log_text()
        assert "stopping for power" in text and "stopped for power; journal checkpointed" in text, text[-3000:]
        wal = edge.folder / "state" / "site.db-wal"
        assert not wal.exists() or wal.stat().st_size == 0  # everything folded into site.db
        assert edge.queued == 1
        assert admissions(park, third.id) == 0

        # Mains back, the edge started again: what it acknowledged reaches the cluster, once.
        dummy_ups.set_status("OL", charge=100)
        edge.start()
        await edge.ready()
        await until(lambda: edge.queued == 0, "the journal forwarded after the restart", timeout=60)
        for ticket in (first, second, third):
            assert admissions(park, ticket.id) == 1, ticket.id
        # every transition reached the operation log, the low-battery stop's too (sent as it stopped, or kept
        # in site.db and sent after the restart), and the cluster shows the edge on mains again
        await until(lambda: power_reports(park, mark)[-1:] == ["ON_MAINS"] and len(power_reports(park, mark)) == 7,
                    "the seven transitions reported")
        assert power_reports(park, mark) == ["ON_MAINS", "ON_BATTERY", "ON_MAINS", "ON_BATTERY", "LOW_BATTERY",
                                             "SHUTTING_DOWN", "ON_MAINS"]
        assert (await edge_power_seen(park))[:2] == (ops_pb2.ON_MAINS, ops_pb2.ON_MAINS)
    finally:
        if gate is not None:
            await stop_gate(gate)
        edge.stop()


async def test_the_cluster_sees_the_gates_on_battery_behind_an_edge(
        park: TestPark, cluster: Cluster, edge: Edge, make_pty_pair: Callable[[], PtyPair], tmp_path: Path) -> None:
    """A gate behind an edge never heartbeats to the cluster: the edge tells, with its own power report."""
    mark = audit_mark(park)
    gate = await start_gate(park, edge, "east-gate-14", make_pty_pair, tmp_path)
    try:
        gate.board.do("power lost")  # the gate's relay board runs on its reserve
        await until(lambda: gate.agent is not None and gate.agent.on_battery, "the gate on battery")
        seen: list[str] = []

        async def shown() -> bool:
            seen[:] = (await edge_power_seen(park))[2]
            return "east-gate-14" in seen

        for _ in range(200):
            if await shown():
                break
            await asyncio.sleep(0.1)
        assert "east-gate-14" in seen, seen
        reported = park.sql("SELECT summary->'gates_on_battery' FROM audit_log WHERE device_id = %s AND "
                            "method = '/parkgate.v1.Site/ReportPower' AND id > %s ORDER BY id", EDGE_ID, mark)
        assert reported[-1][0] == ["east-gate-14"]
        gate.board.do("power ok")
        for _ in range(200):
            if not await shown():
                break
            await asyncio.sleep(0.1)
        assert "east-gate-14" not in seen, seen
    finally:
        await stop_gate(gate)


def scrape(url: str) -> str:
    with urllib.request.urlopen(url, timeout=10) as reply:
        return str(reply.read().decode())


def sample(text: str, name: str, labels: str = "") -> float | None:
    pattern = re.escape(name) + (r"\{" + labels + r"\}" if labels else r"(\{\})?") + r" (\S+)"
    found = re.search("^" + pattern + "$", text, re.MULTILINE)
    return float(found.group(found.lastindex or 1)) if found else None


async def test_the_edge_serves_metrics_of_what_its_gates_did(
        park: TestPark, cluster: Cluster, make_pty_pair: Callable[[], PtyPair], tmp_path: Path) -> None:
    metrics_port = free_port()
    edge = Edge(tmp_path / "edge", [cluster.address], EDGE_ID, park.secrets[EDGE_ID],
                extra=f'[metrics]\nlisten = "127.0.0.1:{metrics_port}"\n')
    edge.start()
    gate: Rig | None = None
    try:
        await edge.ready()
        url = f"http://127.0.0.1:{metrics_port}/metrics"
        assert f"metrics on {url}" in edge.log_text()
        gate = await start_gate(park, edge, "east-gate-10", make_pty_pair, tmp_path)
        ticket, offline = await park.sell("single", 2)
        mark = gate.board.mark()
        gate.scan(ticket.code)
        await gate.board.wait_for(r"OPEN", mark)
        text = await asyncio.to_thread(scrape, url)
        allowed = sample(text, "parkgate_validations_total", r'decided_by="server",reason="OK",result="allow"')
        assert allowed == 1.0, text
        assert sample(text, "parkgate_offline_journal_depth") == 0.0, text
        assert sample(text, "parkgate_connected_streams", r'kind="gate"') == 1.0, text
        assert sample(text, "parkgate_connected_streams", r'kind="site_feed"') == 1.0, text

        # The cluster goes away: the next admission is the edge's own and waits in its journal.
        await cluster.stop()
        gate.scan(offline.code)
        await gate.board.wait_for(r"OPEN", mark, times=2)
        text = await asyncio.to_thread(scrape, url)
        assert sample(text, "parkgate_validations_total", r'decided_by="edge",reason="OK",result="allow"') == 1.0
        assert sample(text, "parkgate_offline_journal_depth") == 1.0, text
        lag = sample(text, "parkgate_offline_forward_lag_seconds")
        assert lag is not None and lag >= 0.0
        assert 'parkgate_power_state{parkgate_power_state="mains"} 1.0' in text
    finally:
        if gate is not None:
            await stop_gate(gate)
        edge.stop()
        if cluster.running is None:
            await cluster.start()
