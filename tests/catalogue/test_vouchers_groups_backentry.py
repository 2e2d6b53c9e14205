"""Vouchers (S12, S17), groups (S16) and back-entry (S19) through a real server and real gates."""

from __future__ import annotations

import asyncio
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import grpc
import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from parkgate.v1 import common_pb2, sales_pb2
from tests.fixtures.park import PRICE
from tests.fixtures.server import Client, reason_of

from .conftest import Catalogue, cash, cny, rid

ZONE = ZoneInfo("Asia/Shanghai")


def d(day: date) -> common_pb2.Date:
    return common_pb2.Date(year=day.year, month=day.month, day=day.day)


def today() -> date:
    return datetime.now(ZONE).date()


async def refused(call: object) -> str:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await call  # type: ignore[misc]
    return reason_of(err.value)


def clerk(cat: Catalogue) -> Client:
    assert cat.clerk is not None
    return cat.clerk


async def pay_with(client: Client, product: str, voucher: str, amount: int = PRICE) -> sales_pb2.Order:
    return await client.sales.CreateOrder(sales_pb2.CreateOrderRequest(
        request_id=rid(), lines=[sales_pb2.OrderLine(product_id=product, quantity=1)],
        payments=[sales_pb2.Payment(method=common_pb2.VOUCHER, amount=cny(amount), reference=voucher)]),
        metadata=client.metadata)


async def issue(cat: Catalogue, count: int, **voucher: object) -> list[sales_pb2.Voucher]:
    reply = await clerk(cat).sales.IssueVouchers(sales_pb2.IssueVoucherRequest(
        request_id=rid(), count=count, voucher=sales_pb2.Voucher(**voucher)), metadata=clerk(cat).metadata)
    return list(reply.vouchers)


async def test_vouchers_issued_in_series_redeem_once_and_only_for_products_that_accept_them(cat: Catalogue) -> None:
    series = await issue(cat, 3, product_id="day", recipient="Travel Co", series="spring")
    assert len({v.code for v in series}) == 3 and all(v.state == "issued" for v in series)
    found = await cat.seller.sales.FindVouchers(sales_pb2.FindVouchersRequest(series="spring"),
                                                metadata=cat.seller.metadata)
    assert sorted(v.code for v in found.vouchers) == sorted(v.code for v in series)
    first, second, third = series
    order = await pay_with(cat.seller, "day", first.code)
    assert len(order.tickets) == 1
    gate = await cat.gate("v-gate")
    assert (await gate.validate(rid(), code=order.tickets[0].code)).allow  # the voucher's ticket admits
    assert await refused(pay_with(cat.seller, "day", first.code)) == "VOUCHER_ALREADY_REDEEMED"
    assert await refused(pay_with(cat.seller, "plain", second.code)) == "VOUCHER_NOT_ALLOWED"
    assert await refused(pay_with(cat.seller, "day", second.code, PRICE - 1)) == "PAYMENT_MISMATCH"
    assert await refused(pay_with(cat.seller, "day", "VNOSUCHCODE00")) == "UNKNOWN_VOUCHER"
    cancelled = await clerk(cat).sales.ChangeVoucher(sales_pb2.ChangeVoucherRequest(code=third.code, cancel=True),
                                                     metadata=clerk(cat).metadata)
    assert cancelled.state == "cancelled"
    assert await refused(pay_with(cat.seller, "day", third.code)) == "VOUCHER_CANCELLED"
    changed = await clerk(cat).sales.ChangeVoucher(sales_pb2.ChangeVoucherRequest(
        code=second.code, recipient="Someone Else"), metadata=clerk(cat).metadata)
    assert changed.recipient == "Someone Else"
    redeemed = (await cat.seller.sales.FindVouchers(sales_pb2.FindVouchersRequest(code=first.code),
                                                    metadata=cat.seller.metadata)).vouchers[0]
    assert redeemed.redeemed and redeemed.order_id == order.id


async def test_expired_and_bad_vouchers_are_refused(cat: Catalogue) -> None:
    past = today() - timedelta(days=10)
    old, = await issue(cat, 1, product_id="day", valid_from=d(past), valid_until=d(past + timedelta(days=2)))
    assert await refused(pay_with(cat.seller, "day", old.code)) == "VOUCHER_EXPIRED"
    assert await refused(issue(cat, 1, value=cny(-100))) == "INVALID_AMOUNT"
    assert await refused(issue(cat, 1)) == "INVALID_ARGUMENT"
    assert await refused(issue(cat, 1, product_id="day", value=cny(100))) == "INVALID_ARGUMENT"
    worth, = await issue(cat, 1, value=cny(600))
    order = await cat.seller.sales.CreateOrder(sales_pb2.CreateOrderRequest(
        request_id=rid(), lines=[sales_pb2.OrderLine(product_id="day", quantity=1)],
        payments=[sales_pb2.Payment(method=common_pb2.VOUCHER, amount=cny(600), reference=worth.code),
                  cash(PRICE - 600)]), metadata=cat.seller.metadata)
    assert order.total.minor_units == PRICE


async def test_two_windows_redeeming_one_voucher_at_once_redeem_it_once(cat: Catalogue) -> None:
    for _ in range(4):
        voucher, = await issue(cat, 1, product_id="day")
        results = await asyncio.gather(pay_with(cat.seller, "day", voucher.code),
                                       pay_with(clerk(cat), "day", voucher.code), return_exceptions=True)
        orders = [r for r in results if isinstance(r, sales_pb2.Order)]
        errors = [reason_of(r) for r in results if isinstance(r, grpc.aio.AioRpcError)]
        assert len(orders) == 1 and errors == ["VOUCHER_ALREADY_REDEEMED"], results
        assert cat.sql("SELECT count(*) FROM payments WHERE method = 'voucher' AND reference = %s",
                       voucher.code) == [(1,)]


async def test_a_group_reserved_with_deposit_picked_up_as_one_code_admits_its_head_count(cat: Catalogue) -> None:
    c = clerk(cat)
    group = await c.sales.ReserveGroup(sales_pb2.ReserveGroupRequest(request_id=rid(), reservation=(
        sales_pb2.GroupReservation(company="Sunshine Travel", head_count=12, product_id="tour",
                                   unit_price=cny(800), visit_date=d(today()), deposit=cny(2000)))), metadata=c.metadata)
    assert (group.state, group.head_count, group.deposit.minor_units) == ("reserved", 12, 2000)
    changed = await c.sales.ChangeGroup(sales_pb2.ChangeGroupRequest(reservation_id=group.id, head_count=10),
                                        metadata=c.metadata)
    assert changed.head_count == 10
    order = await c.sales.PickUpGroup(sales_pb2.PickUpGroupRequest(
        request_id=rid(), reservation_id=group.id, one_code=True, head_count=9), metadata=c.metadata)
    ticket, = order.tickets
    assert ticket.persons == 9 and ticket.price.minor_units == 9 * 800
    assert order.total.minor_units == 9 * 800 - 2000  # the deposit was paid at reservation
    assert [(p.method, p.reference) for p in order.payments] == [(common_pb2.ON_ACCOUNT, "Sunshine Travel")]
    gate = await cat.gate("grp-gate")
    entry = await gate.validate(rid(), code=ticket.code)
    assert (entry.allow, entry.persons) == (True, 9)
    assert (await gate.validate(rid(), code=ticket.code)).reason == "ALREADY_USED"
    assert await refused(c.sales.PickUpGroup(sales_pb2.PickUpGroupRequest(
        request_id=rid(), reservation_id=group.id), metadata=c.metadata)) == "GROUP_ALREADY_PICKED_UP"
    found = await c.sales.FindGroups(sales_pb2.FindGroupsRequest(company="sunshine"), metadata=c.metadata)
    assert [(g.state, g.arrived) for g in found.reservations] == [("picked_up", 9)]


async def test_groups_picked_up_as_tickets_no_shows_and_unknown_groups(cat: Catalogue) -> None:
    c = clerk(cat)
    group = await c.sales.ReserveGroup(sales_pb2.ReserveGroupRequest(request_id=rid(), reservation=(
        sales_pb2.GroupReservation(company="School 3", head_count=5, visit_date=d(today()), lines=[
            sales_pb2.GroupLine(product_id="tour", quantity=3, unit_price=cny(500)),
            sales_pb2.GroupLine(product_id="day", quantity=2)]))), metadata=c.metadata)
    order = await c.sales.PickUpGroup(sales_pb2.PickUpGroupRequest(
        request_id=rid(), reservation_id=group.id, payments=[cash(3 * 500 + PRICE)], head_count=4),
        metadata=c.metadata)
    assert sorted(t.product_id for t in order.tickets) == ["day", "tour", "tour", "tour"]
    absent = await c.sales.ReserveGroup(sales_pb2.ReserveGroupRequest(request_id=rid(), reservation=(
        sales_pb2.GroupReservation(company="Never Came", head_count=3, product_id="tour"))), metadata=c.metadata)
    gone = await c.sales.ChangeGroup(sales_pb2.ChangeGroupRequest(reservation_id=absent.id, no_show=True),
                                     metadata=c.metadata)
    assert gone.state == "no_show"
    assert await refused(c.sales.PickUpGroup(sales_pb2.PickUpGroupRequest(
        request_id=rid(), reservation_id=absent.id), metadata=c.metadata)) == "GROUP_CANCELLED"
    assert await refused(c.sales.PickUpGroup(sales_pb2.PickUpGroupRequest(
        request_id=rid(), reservation_id="00000000-0000-0000-0000-000000000000"), metadata=c.metadata)) == "UNKNOWN_GROUP"
    assert await refused(c.sales.ReserveGroup(sales_pb2.ReserveGroupRequest(request_id=rid(), reservation=(
        sales_pb2.GroupReservation(company="Neg", head_count=2, product_id="tour", deposit=cny(-1)))),
        metadata=c.metadata)) == "INVALID_AMOUNT"


def stamp(moment: datetime) -> Timestamp:
    out = Timestamp()
    out.FromDatetime(moment)
    return out


async def test_back_entry_is_dated_marked_counted_and_never_doubles_a_forwarded_entry(cat: Catalogue) -> None:
    c = clerk(cat)
    gate_id = "be-gate"
    gate = await cat.gate(gate_id)
    sold = datetime.now(UTC) - timedelta(hours=3)
    request = sales_pb2.BackEnterRequest(
        request_id=rid(), product_id="day", sold_at=stamp(sold), quantity=3, method=common_pb2.CASH,
        customer="walk-ins", note="network outage 09:00-10:00, paper tickets 0012-0014", entries_checked_by_hand=2,
        device_id=gate_id, entry_request_ids=["paper-0012", "paper-0013"])
    entry = await c.sales.BackEnter(request, metadata=c.metadata)
    assert entry.total.minor_units == 3 * PRICE and entry.entry.sold_at.seconds == int(sold.timestamp())
    again = await c.sales.BackEnter(request, metadata=c.metadata)  # a retry enters nothing twice
    assert again.id == entry.id
    assert cat.sql("SELECT count(*), bool_and(t.back_entered), bool_and(o.back_entered), min(o.created_at) "
                   "FROM tickets t JOIN orders o ON o.id = t.order_id JOIN back_entries e ON e.order_id = o.id "
                   "WHERE e.id = %s", entry.id) == [(3, True, True, sold)]
    # the gate forwards the same entries from its own offline journal later: the same (device, request) is one entry
    admitted_offline, = await cat.sell("day")
    forwarded = await gate.validate("paper-0012", code=admitted_offline.code)
    assert forwarded.allow  # the recorded decision comes back; nothing is counted again
    assert cat.sql("SELECT entries_used FROM tickets WHERE id = %s", admitted_offline.id) == [(0,)]
    assert cat.sql("SELECT count(*) FROM validations WHERE device_id = %s AND allow", gate_id) == [(2,)]
    listed = await c.sales.ListBackEntries(sales_pb2.ListBackEntriesRequest(), metadata=c.metadata)
    assert entry.id in [e.id for e in listed.entries] and listed.total.minor_units >= 3 * PRICE
    assert await refused(cat.seller.sales.BackEnter(sales_pb2.BackEnterRequest(
        request_id=rid(), product_id="day", sold_at=stamp(sold), quantity=1, note="x"),
        metadata=cat.seller.metadata)) == "PERMISSION_DENIED"
    assert await refused(c.sales.BackEnter(sales_pb2.BackEnterRequest(
        request_id=rid(), product_id="day", sold_at=stamp(sold), quantity=1, note=""),
        metadata=c.metadata)) == "INVALID_ARGUMENT"
    assert await refused(c.sales.BackEnter(sales_pb2.BackEnterRequest(
        request_id=rid(), product_id="day", sold_at=stamp(datetime.now(UTC) + timedelta(hours=1)), quantity=1,
        note="future"), metadata=c.metadata)) == "INVALID_ARGUMENT"
