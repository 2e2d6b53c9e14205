"""The cluster's side of the site contract, on a real PostgreSQL through a real server over gRPC.

Read as a runbook: an edge proves itself on every call (a wrong secret or a
gate posing as an edge is refused with the reason), gets the site's key and
serials, follows the feed from nothing and then incrementally (a refund, a
new key, a revocation, a sale), falls back to a full resync when its cursor
is too old, validates its gates' scans exactly once, forwards what it
decided alone (replays change nothing; one ticket admitted at two sites is
accepted twice and listed as one conflict), and forwards offline sales that
become orders counted in the seller's shift.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import grpc
import psycopg
import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from parkgate import native
from parkgate.clients.gate.link import GateLink, Hello
from parkgate.clients.site.store import SiteStore
from parkgate.v1 import (
    admin_pb2,
    catalog_pb2,
    common_pb2,
    gate_pb2,
    ops_pb2,
    ops_pb2_grpc,
    sales_pb2,
    site_pb2,
    site_pb2_grpc,
)
from tests.fixtures.park import PRICE, TestPark, open_park, rid
from tests.fixtures.server import RunningServer, reason_of, start_server, stop_server
from tests.fixtures.wait import until

PARK = "spark"
SINGLE = "s-single"
CARD = "s-card"
#: The journal (edge store) these tests forward from, unless a test plays a replaced edge box.
JOURNAL = uuid.uuid4().hex


@dataclass
class Device:
    device_id: str
    secret: str

    @property
    def metadata(self) -> tuple[tuple[str, str], ...]:
        return (("parkgate-device-id", self.device_id), ("parkgate-device-secret", self.secret))


@dataclass
class Sites:
    park: TestPark
    site: site_pb2_grpc.SiteStub
    north: Device
    south: Device
    gate_n: Device
    gate_s: Device
    window_n: Device
    seller: str = "spark-seller"
    extra: dict[str, Device] = field(default_factory=dict)


async def _register(park: TestPark, device_id: str, kind: int, site: str, **extra: object) -> Device:
    reply = await park.admin.admin.RegisterDevice(admin_pb2.RegisterDeviceRequest(device=admin_pb2.Device(
        id=device_id, kind=kind, site=site, park_id=PARK, **extra)), metadata=park.admin.metadata)
    return Device(device_id, reply.secret)


@pytest.fixture(scope="module")
async def sites(parkgate_server: RunningServer, module_dsn: str) -> AsyncIterator[Sites]:
    park = await open_park([parkgate_server], module_dsn, PARK, "Site Park")
    await park.product(SINGLE, entries_total=1)
    await park.product(CARD, kind=catalog_pb2.COUNT_CARD, entries_total=5, card_bound=True)
    north = await _register(park, "edge-north", admin_pb2.SITE_EDGE, "north")
    south = await _register(park, "edge-south", admin_pb2.SITE_EDGE, "south")
    gate_n = await _register(park, "gate-north", admin_pb2.GATE, "north", direction=common_pb2.IN)
    gate_s = await _register(park, "gate-south", admin_pb2.GATE, "south", direction=common_pb2.IN)
    window_n = await _register(park, "window-north", admin_pb2.SALES_WINDOW, "north")
    stub = site_pb2_grpc.SiteStub(parkgate_server.channel())
    yield Sites(park, stub, north, south, gate_n, gate_s, window_n)


def _now_ts(at: float | None = None) -> Timestamp:
    stamp = Timestamp()
    stamp.FromNanoseconds(int((time.time() if at is None else at) * 1e9))
    return stamp


def _decision(gate: Device, sequence: int, code: str, request_id: str | None = None, *,
              allow: bool = True) -> site_pb2.ForwardedRecord:
    return site_pb2.ForwardedRecord(device_id=gate.device_id, sequence=sequence, decision=site_pb2.OfflineDecision(
        request=gate_pb2.ValidationRequest(request_id=request_id or rid(), code=code, direction=common_pb2.IN),
        result=gate_pb2.ValidationResult(allow=allow, reason=1 if allow else 40), decided_at=_now_ts()))


async def _refused(call: object) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call  # type: ignore[misc]
    return info.value.code(), reason_of(info.value)


async def _feed_until_caught_up(stream: grpc.aio.UnaryStreamCall) -> tuple[list[site_pb2.FeedBatch], int]:
    batches = []
    async for batch in stream:
        batches.append(batch)
        if batch.caught_up:
            return batches, batch.version
    pytest.fail("the feed ended before it caught up")


def _items(batches: list[site_pb2.FeedBatch], kind: str) -> list[object]:
    return [getattr(i, kind) for b in batches for i in b.items if i.WhichOneof("item") == kind]


async def _next_with(stream: AsyncIterator[site_pb2.FeedBatch], check: object, timeout: float = 20.0
                     ) -> site_pb2.FeedBatch:
    """Live batches until one passes ``check`` (generous limit: the feed polls twice a second)."""
    async def wait() -> site_pb2.FeedBatch:
        async for batch in stream:
            assert batch.caught_up and not batch.full_resync
            if check(batch):  # type: ignore[operator]
                return batch
        pytest.fail("the live feed ended")

    return await asyncio.wait_for(wait(), timeout)


# --- 1. who may call -----------------------------------------------------------------------------

async def test_only_a_site_edge_with_its_secret_may_call(sites: Sites) -> None:
    request = site_pb2.ProvisionRequest(public_key=os.urandom(32))
    wrong = Device(sites.north.device_id, "not-the-secret")
    assert await _refused(sites.site.Provision(request, metadata=wrong.metadata)) == (
        grpc.StatusCode.UNAUTHENTICATED, "BAD_DEVICE_CREDENTIALS")
    assert await _refused(sites.site.Provision(request, metadata=sites.gate_n.metadata)) == (
        grpc.StatusCode.PERMISSION_DENIED, "NOT_A_SITE_EDGE")
    assert await _refused(sites.site.Provision(request)) == (grpc.StatusCode.INVALID_ARGUMENT, "UNKNOWN_DEVICE")
    unknown = Device("edge-nobody", "x")
    assert await _refused(sites.site.Provision(request, metadata=unknown.metadata)) == (
        grpc.StatusCode.UNAUTHENTICATED, "UNKNOWN_DEVICE")
    # an operator's session is no edge credential either, and an edge is no admin
    assert await _refused(sites.site.Provision(request, metadata=sites.park.admin.metadata)) == (
        grpc.StatusCode.INVALID_ARGUMENT, "UNKNOWN_DEVICE")
    assert await _refused(sites.site.ListConflicts(site_pb2.ListConflictsRequest(),
                                                   metadata=sites.north.metadata)) == (
        grpc.StatusCode.UNAUTHENTICATED, "UNAUTHENTICATED")
    # a disabled edge, and an edge registered without a site
    off = await _register(sites.park, "edge-off", admin_pb2.SITE_EDGE, "north")
    await sites.park.admin.admin.UpdateDevice(admin_pb2.UpdateDeviceRequest(id=off.device_id, disabled=True),
                                              metadata=sites.park.admin.metadata)
    assert await _refused(sites.site.Provision(request, metadata=off.metadata)) == (
        grpc.StatusCode.UNAUTHENTICATED, "DEVICE_DISABLED")
    nowhere = await _register(sites.park, "edge-nowhere", admin_pb2.SITE_EDGE, "")
    assert await _refused(sites.site.Provision(request, metadata=nowhere.metadata)) == (
        grpc.StatusCode.PERMISSION_DENIED, "NO_SITE")


async def test_nul_bytes_and_garbage_get_a_clear_error(sites: Sites) -> None:
    bad = site_pb2.SiteValidateRequest(items=[site_pb2.SiteValidation(
        device_id="gate-north", request=gate_pb2.ValidationRequest(request_id="a\x00b", code="x"))])
    code, reason = await _refused(sites.site.Validate(bad, metadata=sites.north.metadata))
    assert (code, reason) == (grpc.StatusCode.INVALID_ARGUMENT, "TEXT_NOT_ALLOWED")
    forward = site_pb2.ForwardRequest(records=[_decision(sites.gate_n, 1, "PG1:\x00garbage")], journal_id=JOURNAL)
    assert await _refused(sites.site.Forward(forward, metadata=sites.north.metadata)) == (
        grpc.StatusCode.INVALID_ARGUMENT, "TEXT_NOT_ALLOWED")
    raw = sites.park.server.channel().unary_unary(
        "/parkgate.v1.Site/Forward", request_serializer=lambda b: b, response_deserializer=lambda b: b)
    assert await _refused(raw(b"\xff\xff\xff\xff garbage", metadata=sites.north.metadata)) == (
        grpc.StatusCode.INVALID_ARGUMENT, "TRUNCATED_MESSAGE")
    # a decision without its time, a garbled code: refused or recorded, never an internal error
    no_time = _decision(sites.gate_n, 1, "garbage")
    no_time.decision.ClearField("decided_at")
    assert await _refused(sites.site.Forward(site_pb2.ForwardRequest(records=[no_time], journal_id=JOURNAL),
                                             metadata=sites.north.metadata)) == (
        grpc.StatusCode.INVALID_ARGUMENT, "INVALID_ARGUMENT")
    assert await _refused(sites.site.Provision(site_pb2.ProvisionRequest(public_key=b"short"),
                                               metadata=sites.north.metadata)) == (
        grpc.StatusCode.INVALID_ARGUMENT, "INVALID_ARGUMENT")


# --- 5. the site's key and serials ---------------------------------------------------------------

async def test_provision_twice_keeps_the_key_and_reserves_disjoint_serials(sites: Sites) -> None:
    seed = native.SigningKey.generate(1).seed
    public = native.SigningKey(1, seed).public_key
    first = await sites.site.Provision(site_pb2.ProvisionRequest(public_key=public, serials_wanted=50),
                                       metadata=sites.north.metadata)
    again = await sites.site.Provision(site_pb2.ProvisionRequest(public_key=public, serials_wanted=50),
                                       metadata=sites.north.metadata)
    assert first.key_id == again.key_id > 1
    assert first.serial_last - first.serial_first + 1 == 50
    assert first.serial_first >= 2**40 and again.serial_first > first.serial_last
    # the same key from another site is refused; the key reaches gates like the cluster's own
    assert await _refused(sites.site.Provision(site_pb2.ProvisionRequest(public_key=public),
                                               metadata=sites.south.metadata)) == (
        grpc.StatusCode.FAILED_PRECONDITION, "SITE_KEY_TAKEN")
    rows = sites.park.sql("SELECT site, state, seed IS NULL FROM signing_keys WHERE key_id = %s", first.key_id)
    assert rows == [("north", "active", True)]
    welcome = await _welcome_keys(sites)
    assert first.key_id in welcome


async def _welcome_keys(sites: Sites, address: str = "") -> set[int]:
    welcome = await _welcome(sites, address)
    return {k.key_id for k in welcome.keys}


async def _welcome(sites: Sites, address: str = "") -> gate_pb2.Welcome:
    link = GateLink(address or sites.park.server.address,
                    Hello(sites.gate_n.device_id, sites.gate_n.secret, "in", PARK))
    welcome = await link.open()
    await link.close()
    return welcome


async def _next_command(link: GateLink, kind: str, timeout: float = 20.0) -> None:
    async def wait() -> None:
        while (await link.commands.get()).kind != kind:
            pass
    await asyncio.wait_for(wait(), timeout)


async def test_a_site_key_and_its_revocation_reach_the_gates_of_every_server(sites: Sites, module_dsn: str) -> None:
    second = await start_server(module_dsn)
    try:
        link = GateLink(second.address, Hello(sites.gate_n.device_id, sites.gate_n.secret, "in", PARK))
        await link.open()
        key, _block = await _provision(sites, sites.north)  # on the first server
        await _next_command(link, "UPDATE_KEYS")  # the second server heard it and tells its gate
        await link.close()
        assert key.key_id in await _welcome_keys(sites, second.address)
        link = GateLink(second.address, Hello(sites.gate_n.device_id, sites.gate_n.secret, "in", PARK))
        await link.open()
        await sites.site.RevokeKey(site_pb2.RevokeKeyRequest(key_id=key.key_id), metadata=sites.park.admin.metadata)
        await _next_command(link, "UPDATE_KEYS")
        await link.close()
        welcome = await _welcome(sites, second.address)
        assert str(key.key_id) in welcome.revoked_key_ids and key.key_id not in {k.key_id for k in welcome.keys}
        assert await _refused(sites.site.RevokeKey(site_pb2.RevokeKeyRequest(key_id=9999),
                                                   metadata=sites.park.admin.metadata)) == (
            grpc.StatusCode.NOT_FOUND, "UNKNOWN_KEY")
        [(central,)] = sites.park.sql("SELECT key_id FROM signing_keys WHERE site = '' AND state = 'active'")
        assert await _refused(sites.site.RevokeKey(site_pb2.RevokeKeyRequest(key_id=central),
                                                   metadata=sites.park.admin.metadata)) == (
            grpc.StatusCode.FAILED_PRECONDITION, "BAD_CONFIGURATION")
    finally:
        await stop_server(second)


async def _provision(sites: Sites, edge: Device) -> tuple[native.SigningKey, site_pb2.ProvisionResponse]:
    seed = native.SigningKey.generate(1).seed
    reply = await sites.site.Provision(site_pb2.ProvisionRequest(
        public_key=native.SigningKey(1, seed).public_key, serials_wanted=100), metadata=edge.metadata)
    return native.SigningKey(reply.key_id, seed), reply


def _offline_sale(sites: Sites, key: native.SigningKey, serial: int, *, sold_at: float | None = None
                  ) -> site_pb2.OfflineSale:
    """A sale as the edge makes it alone: one single-use ticket for today, signed with the site's key."""
    now = int(time.time())
    park_number, product_number = (sites.park.sql(
        "SELECT pk.number, p.number FROM products p JOIN parks pk ON pk.id = p.park_id WHERE p.id = %s", SINGLE))[0]
    code = native.issue(key, serial=serial, product_id=product_number, park_id=park_number,
                        valid_from=now - 3600, valid_until=now + 86400)
    request_id = rid()
    ticket = sales_pb2.Ticket(id=str(uuid.uuid4()), serial=serial, product_id=SINGLE, park_id=PARK, code=code,
                              price=common_pb2.Money(minor_units=PRICE, currency="CNY"))
    order = sales_pb2.Order(id=str(uuid.uuid4()), request_id=request_id, window_device_id=sites.window_n.device_id,
                            operator=sites.seller, tickets=[ticket],
                            payments=[sales_pb2.Payment(method=common_pb2.CASH, amount=common_pb2.Money(
                                minor_units=PRICE, currency="CNY"))],
                            total=common_pb2.Money(minor_units=PRICE, currency="CNY"), created_at=_now_ts(sold_at))
    return site_pb2.OfflineSale(request=sales_pb2.CreateOrderRequest(request_id=request_id), order=order,
                                operator=sites.seller, sold_at=_now_ts(sold_at))


async def _forward(sites: Sites, edge: Device, *records: site_pb2.ForwardedRecord,
                   journal: str = JOURNAL) -> list[site_pb2.ForwardAck]:
    reply = await sites.site.Forward(site_pb2.ForwardRequest(records=list(records), journal_id=journal),
                                     metadata=edge.metadata)
    return list(reply.acks)


def _next_sequence(sites: Sites, device: Device) -> int:
    rows = sites.park.sql("SELECT sequence FROM forward_cursors WHERE device_id = %s AND journal_id = %s",
                          device.device_id, JOURNAL)
    return (rows[0][0] if rows else 0) + 1


# --- 4. offline sales ------------------------------------------------------------------------------

async def test_an_offline_sale_forwarded_twice_is_one_order_in_the_shift(sites: Sites) -> None:
    key, block = await _provision(sites, sites.north)
    shift_before = await sites.park.seller.sales.ShiftTotals(sales_pb2.ShiftTotalsRequest(),
                                                             metadata=sites.park.seller.metadata)
    sale = _offline_sale(sites, key, block.serial_first)
    sequence = _next_sequence(sites, sites.window_n)
    record = site_pb2.ForwardedRecord(device_id=sites.window_n.device_id, sequence=sequence, sale=sale)
    for _ in range(2):
        [ack] = await _forward(sites, sites.north, record)
        assert ack.accepted and ack.sequence == sequence
    order = await sites.park.seller.sales.GetOrder(sales_pb2.GetOrderRequest(request_id=sale.order.request_id),
                                                   metadata=sites.park.seller.metadata)
    assert order.id == sale.order.id and [t.serial for t in order.tickets] == [block.serial_first]
    assert order.tickets[0].id == sale.order.tickets[0].id and order.tickets[0].code == sale.order.tickets[0].code
    assert order.window_device_id == "window-north" and order.operator == sites.seller
    shift = await sites.park.seller.sales.ShiftTotals(sales_pb2.ShiftTotalsRequest(),
                                                      metadata=sites.park.seller.metadata)
    assert (shift.orders, shift.tickets) == (shift_before.orders + 1, shift_before.tickets + 1)
    # the same sale under a new sequence number is still one order (the request id decides)
    [ack] = await _forward(sites, sites.north, site_pb2.ForwardedRecord(
        device_id=sites.window_n.device_id, sequence=sequence + 1, sale=sale))
    assert ack.accepted
    assert sites.park.sql("SELECT count(*) FROM orders WHERE request_id = %s", sale.order.request_id) == [(1,)]
    # the ticket the edge printed is valid at the cluster: the code, the site key, the serial
    result = await _validate(sites, sites.north, sites.gate_n, sale.order.tickets[0].code)
    assert result.allow and result.ticket_id == sale.order.tickets[0].id
    # a serial outside the site's blocks, or a code signed by another key, is refused with its reason
    outside = _offline_sale(sites, key, block.serial_last + 1_000_000)
    [ack] = await _forward(sites, sites.north, site_pb2.ForwardedRecord(
        device_id=sites.window_n.device_id, sequence=sequence + 2, sale=outside))
    assert not ack.accepted and ack.reason == 305  # SERIAL_NOT_RESERVED
    # turned down once and for all: kept for an operator, the same answer on a replay, and the window's
    # next record is taken (one bad record blocks nothing)
    [ack] = await _forward(sites, sites.north, site_pb2.ForwardedRecord(
        device_id=sites.window_n.device_id, sequence=sequence + 2, sale=outside))
    assert not ack.accepted and ack.reason == 305
    assert sites.park.sql("SELECT reason FROM forward_rejections WHERE device_id = %s AND journal_id = %s"
                          " AND sequence = %s", sites.window_n.device_id, JOURNAL, sequence + 2) == [
        ("SERIAL_NOT_RESERVED",)]
    [ack] = await _forward(sites, sites.north, site_pb2.ForwardedRecord(
        device_id=sites.window_n.device_id, sequence=sequence + 3, sale=_offline_sale(sites, key,
                                                                                      block.serial_first + 1)))
    assert ack.accepted


async def _validate(sites: Sites, edge: Device, gate: Device, code: str,
                    request_id: str | None = None) -> gate_pb2.ValidationResult:
    reply = await sites.site.Validate(site_pb2.SiteValidateRequest(items=[site_pb2.SiteValidation(
        device_id=gate.device_id, request=gate_pb2.ValidationRequest(request_id=request_id or rid(), code=code))]),
        metadata=edge.metadata)
    return reply.results[0].result


# --- 3. online validations -------------------------------------------------------------------------

async def test_validate_decides_once_and_only_for_the_edges_own_gates(sites: Sites) -> None:
    [ticket] = await sites.park.sell(SINGLE)
    request_id = rid()
    first = await _validate(sites, sites.north, sites.gate_n, ticket.code, request_id)
    again = await _validate(sites, sites.north, sites.gate_n, ticket.code, request_id)
    other = await _validate(sites, sites.north, sites.gate_n, ticket.code)
    assert first.allow and again.allow and not other.allow
    assert other.reason == 40  # ALREADY_USED
    assert sites.park.sql("SELECT entries_used FROM tickets WHERE id = %s", ticket.id) == [(1,)]
    foreign = await _validate(sites, sites.north, sites.gate_s, ticket.code)
    assert not foreign.allow and foreign.reason == 301  # NOT_THIS_SITE


# --- 4. store and forward: decisions ---------------------------------------------------------------

async def test_forwarded_decisions_replay_idempotently_and_in_order(sites: Sites) -> None:
    [ticket] = await sites.park.sell(SINGLE)
    sequence = _next_sequence(sites, sites.gate_n)
    record = _decision(sites.gate_n, sequence, ticket.code)
    for _ in range(3):
        [ack] = await _forward(sites, sites.north, record)
        assert ack.accepted and not ack.conflict
    assert sites.park.sql("SELECT entries_used, inside FROM tickets WHERE id = %s", ticket.id) == [(1, True)]
    assert sites.park.sql("SELECT allow, offline_edge, site FROM validations WHERE ticket_id = %s",
                          ticket.id) == [(True, "edge-north", "north")]
    gap = _decision(sites.gate_n, sequence + 2, ticket.code)
    [ack] = await _forward(sites, sites.north, gap)
    assert not ack.accepted and ack.reason == 303  # OUT_OF_ORDER
    # records of a gate of another site are not this edge's to forward
    [ack] = await _forward(sites, sites.north, _decision(sites.gate_s, 1, ticket.code))
    assert not ack.accepted and ack.reason == 301


async def test_an_online_decision_committed_while_its_forward_waited_is_not_taken_twice(sites: Sites) -> None:
    """The edge asked the cluster about a scan, gave up at its deadline, admitted alone and forwarded that
    admission, while the cluster's own decision of the same request was still waiting for the park's lock
    (a switchover makes both wait). Whichever commits first, the request is one admission: the forward
    reads the request's prior decision under the park's lock, not before it (the power drill counted one
    doubled entry when it did)."""
    [ticket] = await sites.park.sell(SINGLE)
    request_id = rid()
    with psycopg.connect(sites.park.dsn) as blocker:
        blocker.execute("SELECT 1 FROM park_state WHERE park_id = %s FOR UPDATE", (PARK,))

        async def waiting(n: int) -> None:
            # the second waits behind the first on the row's tuple lock, so is blocked by it, not by us
            await until(lambda: sites.park.sql("SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                                               "AND datname = current_database()") == [(n,)],
                        f"{n} transaction(s) waiting for the park's lock")

        online = asyncio.ensure_future(_validate(sites, sites.north, sites.gate_n, ticket.code, request_id))
        await waiting(1)  # the cluster's decision first in the park's queue
        sequence = _next_sequence(sites, sites.gate_n)
        forward = asyncio.ensure_future(_forward(sites, sites.north, _decision(sites.gate_n, sequence, ticket.code,
                                                                               request_id)))
        await waiting(2)  # the forward behind it, having looked for a prior decision already
        blocker.commit()
        result, [ack] = await online, await forward
    assert result.allow and ack.accepted and not ack.conflict
    assert sites.park.sql("SELECT count(*) FROM validations WHERE device_id = %s AND request_id LIKE %s AND allow",
                          sites.gate_n.device_id, f"{request_id}%") == [(1,)]
    assert sites.park.sql("SELECT entries_used FROM tickets WHERE id = %s", ticket.id) == [(1,)]


async def test_a_replaced_edge_box_starting_again_at_one_loses_nothing(sites: Sites, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """A new edge box (a new, empty store) numbers a known gate's records from 1 again: new work, not replays."""
    # the edge's store makes its journal once, keeps it across restarts, and a new store makes another
    old_store, new_store = SiteStore(tmp_path / "a" / "site.db"), SiteStore(tmp_path / "b" / "site.db")
    journal_a, journal_b = old_store.journal_id, new_store.journal_id
    old_store.close()
    new_store.close()
    reopened = SiteStore(tmp_path / "a" / "site.db")
    assert journal_a and journal_b and journal_a != journal_b and reopened.journal_id == journal_a
    reopened.close()
    gate = await _register(sites.park, "gate-north-replaced", admin_pb2.GATE, "north", direction=common_pb2.IN)
    key, block = await _provision(sites, sites.north)
    tickets = await sites.park.sell(SINGLE, 4)
    # box A: two admissions and a sale, numbered 1..2 (gate) and 1 (window)
    first = [_decision(gate, n + 1, t.code) for n, t in enumerate(tickets[:2])]
    sale_a = _offline_sale(sites, key, block.serial_first + 10)
    acks = await _forward(sites, sites.north, *first, site_pb2.ForwardedRecord(
        device_id=sites.window_n.device_id, sequence=1, sale=sale_a), journal=journal_a)
    assert [a.accepted for a in acks] == [True, True, True]
    # box B replaces A: the same gate and window, sequences from 1 again, other tickets and another sale
    second = [_decision(gate, n + 1, t.code) for n, t in enumerate(tickets[2:])]
    sale_b = _offline_sale(sites, key, block.serial_first + 11)
    acks = await _forward(sites, sites.north, *second, site_pb2.ForwardedRecord(
        device_id=sites.window_n.device_id, sequence=1, sale=sale_b), journal=journal_b)
    assert [a.accepted for a in acks] == [True, True, True]
    # every admission of both boxes is recorded once, and both sales are orders
    for ticket in tickets:
        assert sites.park.sql("SELECT count(*) FROM validations WHERE ticket_id = %s AND allow AND device_id = %s",
                              ticket.id, gate.device_id) == [(1,)], ticket.id
        assert sites.park.sql("SELECT entries_used FROM tickets WHERE id = %s", ticket.id) == [(1,)]
    for sale in (sale_a, sale_b):
        assert sites.park.sql("SELECT count(*) FROM orders WHERE request_id = %s", sale.order.request_id) == [(1,)]
    # replays of either box still change nothing
    await _forward(sites, sites.north, *first, journal=journal_a)
    await _forward(sites, sites.north, *second, journal=journal_b)
    assert sites.park.sql("SELECT count(*) FROM validations WHERE device_id = %s", gate.device_id) == [(4,)]
    # a forward without its journal is refused, never taken for a replay
    assert await _refused(sites.site.Forward(site_pb2.ForwardRequest(records=first), metadata=sites.north.metadata)) \
        == (grpc.StatusCode.INVALID_ARGUMENT, "INVALID_ARGUMENT")


async def test_one_ticket_admitted_at_two_sites_is_accepted_twice_and_one_conflict(sites: Sites) -> None:
    [ticket] = await sites.park.sell(SINGLE)
    before = await sites.site.ListConflicts(site_pb2.ListConflictsRequest(park_id=PARK),
                                            metadata=sites.park.admin.metadata)
    inside = sites.park.sql("SELECT inside FROM park_state WHERE park_id = %s", PARK)[0][0]
    [north] = await _forward(sites, sites.north, _decision(sites.gate_n, _next_sequence(sites, sites.gate_n),
                                                           ticket.code))
    [south] = await _forward(sites, sites.south, _decision(sites.gate_s, _next_sequence(sites, sites.gate_s),
                                                           ticket.code))
    assert north.accepted and not north.conflict
    assert south.accepted and south.conflict
    after = await sites.site.ListConflicts(site_pb2.ListConflictsRequest(park_id=PARK),
                                           metadata=sites.park.admin.metadata)
    assert after.total == before.total + 1
    [conflict] = [c for c in after.conflicts if c.ticket_id == ticket.id]
    assert (conflict.first_site, conflict.second_site) == ("north", "south")
    assert (conflict.first_device_id, conflict.second_device_id) == ("gate-north", "gate-south")
    # both admissions stand: two uses recorded, and one person (already inside) counted once
    assert sites.park.sql("SELECT count(*) FROM validations WHERE ticket_id = %s AND allow", ticket.id) == [(2,)]
    assert sites.park.sql("SELECT entries_used FROM tickets WHERE id = %s", ticket.id) == [(2,)]
    assert sites.park.sql("SELECT inside FROM park_state WHERE park_id = %s", PARK)[0][0] == inside + 1
    # the console lists it with the total
    out = await asyncio.to_thread(_admin_cli, sites, "conflicts", "--park", PARK)
    assert ticket.id in out and f"total: {after.total}" in out


def _admin_cli(sites: Sites, *args: str) -> str:
    env = {**os.environ, "PARKGATE_TOKEN": sites.park.admin.token, "PARKGATE_SERVER": sites.park.server.address,
           "COLUMNS": "400"}
    done = subprocess.run([sys.executable, "-m", "parkgate.common.cli", "admin", *args], env=env,
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    return done.stdout


# --- 2. the feed ----------------------------------------------------------------------------------

async def test_feed_from_nothing_then_live_changes(sites: Sites) -> None:
    [ticket] = await sites.park.sell(SINGLE)
    stream = sites.site.Feed(site_pb2.FeedRequest(from_version=0), metadata=sites.north.metadata)
    batches, version = await _feed_until_caught_up(stream)
    assert batches[0].full_resync and version > 0
    assert PARK in {p.park_id for p in _items(batches, "park")}
    assert ticket.id in {t.ticket_id for t in _items(batches, "ticket")}
    assert {"gate-north", "window-north", "edge-north"} <= {d.device_id for d in _items(batches, "device")}
    assert "gate-south" not in {d.device_id for d in _items(batches, "device")}  # another site's gate
    seller = [o for o in _items(batches, "operator") if o.user_name == sites.seller]
    assert seller and seller[0].password_hash.startswith("$argon2") and "sales.sell" in seller[0].permissions
    assert _items(batches, "key") and SINGLE in {p.id for p in _items(batches, "product")}
    live = aiter(stream)

    # a refund reaches the edge as the ticket's new state
    await sites.park.admin.sales.Refund(sales_pb2.RefundRequest(
        request_id=rid(), reason_id="weather", ticket_ids=[ticket.id]), metadata=sites.park.admin.metadata)
    await _next_with(live, lambda b: any(i.ticket.ticket_id == ticket.id and i.ticket.state == sales_pb2.REFUNDED_STATE
                                         for i in b.items))
    # a new site key, then its revocation
    key, _block = await _provision(sites, sites.north)
    await _next_with(live, lambda b: any(i.key.key_id == key.key_id for i in b.items if i.HasField("key")))
    await sites.site.RevokeKey(site_pb2.RevokeKeyRequest(key_id=key.key_id), metadata=sites.park.admin.metadata)
    last = await _next_with(live, lambda b: any(i.revoked_key_id == key.key_id for i in b.items))
    # a sale
    [sold] = await sites.park.sell(SINGLE)
    last = await _next_with(live, lambda b: any(i.ticket.ticket_id == sold.id for i in b.items))
    stream.cancel()

    # resuming from the last version is incremental: no full resync, nothing from before the cursor
    resumed = sites.site.Feed(site_pb2.FeedRequest(from_version=last.version), metadata=sites.north.metadata)
    batches, _version = await _feed_until_caught_up(resumed)
    resumed.cancel()
    assert not any(b.full_resync for b in batches)
    assert ticket.id not in {t.ticket_id for t in _items(batches, "ticket")}


async def test_a_cursor_too_old_gets_a_full_resync(sites: Sites) -> None:
    stream = sites.site.Feed(site_pb2.FeedRequest(from_version=0), metadata=sites.north.metadata)
    _batches, old = await _feed_until_caught_up(stream)
    stream.cancel()
    # a removal the feed must carry, then a history so short that its mark is pruned
    day = common_pb2.Date(year=2031, month=1, day=2)
    await sites.park.admin.catalog.PutHoliday(catalog_pb2.PutHolidayRequest(holiday=catalog_pb2.Holiday(
        park_id=PARK, date=day, day_type=catalog_pb2.HOLIDAY, name="x")), metadata=sites.park.admin.metadata)
    await sites.park.admin.catalog.DeleteHoliday(catalog_pb2.DeleteHolidayRequest(park_id=PARK, date=day),
                                                 metadata=sites.park.admin.metadata)
    fresh = sites.site.Feed(site_pb2.FeedRequest(from_version=old), metadata=sites.north.metadata)
    batches, _v = await _feed_until_caught_up(fresh)
    fresh.cancel()
    assert not batches[0].full_resync and _items(batches, "removed_holiday")
    await sites.park.admin.admin.SetParameter(admin_pb2.SetParameterRequest(
        key="site.feed_history_seconds", value="0"), metadata=sites.park.admin.metadata)
    try:
        await asyncio.sleep(0.05)
        stale = sites.site.Feed(site_pb2.FeedRequest(from_version=old), metadata=sites.north.metadata)
        batches, _v = await _feed_until_caught_up(stale)
        stale.cancel()
        assert batches[0].full_resync
        future = sites.site.Feed(site_pb2.FeedRequest(from_version=2**62), metadata=sites.north.metadata)
        batches, _v = await _feed_until_caught_up(future)  # a cursor from another database
        future.cancel()
        assert batches[0].full_resync
    finally:
        await sites.park.admin.admin.SetParameter(admin_pb2.SetParameterRequest(
            key="site.feed_history_seconds", value=str(7 * 24 * 3600)), metadata=sites.park.admin.metadata)



async def test_a_change_committed_late_is_never_stepped_over(sites: Sites) -> None:
    """A transaction that wrote before another but commits after it still reaches an edge that resumed."""
    first, second = await sites.park.sell(SINGLE, 2)
    stream = sites.site.Feed(site_pb2.FeedRequest(from_version=0), metadata=sites.north.metadata)
    _batches, start = await _feed_until_caught_up(stream)
    stream.cancel()
    with psycopg.connect(sites.park.dsn) as slow:  # writes first, commits last
        slow.execute("UPDATE tickets SET entries_today = 7 WHERE id = %s", (first.id,))
        sites.park.sql("UPDATE tickets SET entries_today = 8 WHERE id = %s", second.id)
        feed = sites.site.Feed(site_pb2.FeedRequest(from_version=start), metadata=sites.north.metadata)
        batches, middle = await _feed_until_caught_up(feed)
        feed.cancel()
        seen = {t.ticket_id: t.entries_today for t in _items(batches, "ticket")}
        assert seen.get(second.id) == 8 and seen.get(first.id) != 7  # not committed yet
        slow.commit()
    feed = sites.site.Feed(site_pb2.FeedRequest(from_version=middle), metadata=sites.north.metadata)
    batches, _end = await _feed_until_caught_up(feed)
    feed.cancel()
    assert {t.ticket_id: t.entries_today for t in _items(batches, "ticket")}.get(first.id) == 7


async def test_a_forwarded_stored_value_charge_is_taken_once_and_fed_back(sites: Sites) -> None:
    """S8 offline: the feed carries balances and fares; a charge forwarded again (same sequence, or the same
    request id under a new sequence) is taken once; a negative charge is turned down with its reason."""
    park, md = sites.park, sites.park.admin.metadata
    money = common_pb2.Money(minor_units=250, currency="CNY")
    await park.admin.catalog.PutAttraction(catalog_pb2.PutAttractionRequest(attraction=catalog_pb2.Attraction(
        id="s-ride", park_id=PARK, name="ride", stored_value_price=money)), metadata=md)
    await park.product("s-purse", kind=catalog_pb2.STORED_VALUE, card_bound=True)
    ride = await _register(park, "gate-north-ride", admin_pb2.GATE, "north", direction=common_pb2.IN,
                           attraction_id="s-ride")
    [card] = await park.sell("s-purse", cards=["04F7000001"])
    await park.seller.sales.TopUpCard(sales_pb2.TopUpCardRequest(request_id=rid(), card_uid="04F7000001",
                                                                 payment=sales_pb2.Payment(
        method=common_pb2.CASH, amount=common_pb2.Money(minor_units=400, currency="CNY"))),
        metadata=park.seller.metadata)

    stream = sites.site.Feed(site_pb2.FeedRequest(from_version=0), metadata=sites.north.metadata)
    batches, _ = await _feed_until_caught_up(stream)
    stream.cancel()
    fed = [t for t in _items(batches, "ticket") if t.ticket_id == card.id]  # type: ignore[attr-defined]
    assert [(t.stored_value, t.balance) for t in fed] == [(True, 400)]  # type: ignore[attr-defined]
    fares = {(f.attraction_id, f.day_type, f.amount) for p in _items(batches, "park")
             for f in p.fares}  # type: ignore[attr-defined]
    assert ("s-ride", "", 250) in fares
    # a day type's fare set later reaches a live feed: the park comes again with its fares
    stream = sites.site.Feed(site_pb2.FeedRequest(from_version=0), metadata=sites.north.metadata)
    _, _ = await _feed_until_caught_up(stream)
    await park.admin.catalog.SetAttractionFare(catalog_pb2.AttractionFare(
        attraction_id="s-ride", day_type=catalog_pb2.WEEKEND, price=common_pb2.Money(minor_units=275, currency="CNY")),
        metadata=md)
    changed = await _next_with(stream, lambda b: any(
        f.attraction_id == "s-ride" and f.day_type == "weekend" for i in b.items if i.WhichOneof("item") == "park"
        for f in i.park.fares))
    stream.cancel()
    assert ("s-ride", "weekend", 275) in {(f.attraction_id, f.day_type, f.amount) for i in changed.items
                                          if i.WhichOneof("item") == "park" for f in i.park.fares}

    def charge(sequence: int, request_id: str, amount: int) -> site_pb2.ForwardedRecord:
        return site_pb2.ForwardedRecord(device_id=ride.device_id, sequence=sequence, decision=site_pb2.OfflineDecision(
            request=gate_pb2.ValidationRequest(request_id=request_id, card_uid="04f7000001"),
            result=gate_pb2.ValidationResult(allow=True, reason=1), decided_at=_now_ts(), charged=amount))

    first = charge(_next_sequence(sites, ride), rid(), 250)
    for _ in range(3):
        [ack] = await _forward(sites, sites.north, first)
        assert ack.accepted and ack.taken_in > 0
    again = charge(first.sequence + 1, first.decision.request.request_id, 250)  # same request, new sequence
    [ack] = await _forward(sites, sites.north, again)
    assert ack.accepted
    second = charge(again.sequence + 1, rid(), 250)  # beyond the balance: the gate opened, the debt shows
    [ack] = await _forward(sites, sites.north, second)
    assert ack.accepted
    assert park.sql("SELECT balance FROM tickets WHERE id = %s", card.id) == [(400 - 2 * 250,)]
    assert park.sql("SELECT count(*), sum(charged) FROM validations WHERE ticket_id = %s AND charged > 0",
                    card.id) == [(2, 500)]
    [ack] = await _forward(sites, sites.north, charge(second.sequence + 1, rid(), -5))
    assert not ack.accepted and ack.reason == 132  # INVALID_AMOUNT
    assert park.sql("SELECT balance FROM tickets WHERE id = %s", card.id) == [(-100,)]


async def test_cluster_status_lists_the_edges_by_their_last_contact(sites: Sites) -> None:
    ops = ops_pb2_grpc.OpsStub(sites.park.server.channel())
    before = {e.device_id: e for e in (await ops.ClusterStatus(
        ops_pb2.ClusterStatusRequest(), metadata=sites.park.admin.metadata)).edges}
    assert {sites.north.device_id, sites.south.device_id} <= set(before)
    await sites.site.Validate(site_pb2.SiteValidateRequest(), metadata=sites.south.metadata)  # south speaks
    south = {e.device_id: e for e in (await ops.ClusterStatus(
        ops_pb2.ClusterStatusRequest(), metadata=sites.park.admin.metadata)).edges}[sites.south.device_id]
    assert south.online and south.site == "south" and south.HasField("last_contact")
    assert south.last_contact.ToDatetime() >= before[sites.south.device_id].last_contact.ToDatetime()
