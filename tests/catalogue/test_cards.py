"""Stored-value cards (S8) and count cards (S10) at real gates: topped up at the window, charged per attraction,
never below zero and charged exactly once when two gates on two servers charge one card at the same moment."""

from __future__ import annotations

import asyncio

import grpc
import pytest

from parkgate.v1 import common_pb2, sales_pb2
from tests.fixtures.server import reason_of

from .conftest import COASTER_FARE, Catalogue, cash, rid


async def top_up(cat: Catalogue, uid: str, amount: int, request_id: str = "") -> sales_pb2.CardBalance:
    return await cat.seller.sales.TopUpCard(sales_pb2.TopUpCardRequest(
        request_id=request_id or rid(), card_uid=uid, payment=cash(amount)), metadata=cat.seller.metadata)


async def refused(call: object) -> str:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await call  # type: ignore[misc]
    return reason_of(err.value)


async def test_top_up_charge_per_attraction_insufficient_balance_refund_and_history(cat: Catalogue) -> None:
    coaster = await cat.gate("sv-coaster", attraction="coaster")
    entrance = await cat.gate("sv-entrance")
    await cat.sell_card("purse", "04B2000001")
    request_id = rid()
    loaded = await top_up(cat, "04B2000001", 700, request_id)
    assert loaded.balance.minor_units == 700
    assert (await top_up(cat, "04B2000001", 700, request_id)).balance.minor_units == 700  # a retry loads once
    assert (await entrance.validate(rid(), card_uid="04B2000001")).balance == 700  # the park gate charges nothing
    first = await coaster.validate(rid(), card_uid="04B2000001")
    assert (first.allow, first.balance) == (True, 700 - COASTER_FARE)
    second = await coaster.validate(rid(), card_uid="04B2000001")
    assert (second.allow, second.balance) == (True, 700 - 2 * COASTER_FARE)
    broke = await coaster.validate(rid(), card_uid="04B2000001")
    assert (broke.allow, broke.reason, broke.balance) == (False, "INSUFFICIENT_BALANCE", 100)

    assert await refused(top_up(cat, "04B2000001", -5)) == "INVALID_AMOUNT"
    assert await refused(top_up(cat, "04B2000001", 0)) == "INVALID_AMOUNT"
    assert await refused(top_up(cat, "04B20000FF", 100)) == "UNKNOWN_CARD"
    await cat.sell_card("count", "04B2000002")
    assert await refused(top_up(cat, "04B2000002", 100)) == "NOT_A_STORED_VALUE_CARD"

    before = await cat.seller.sales.ShiftTotals(sales_pb2.ShiftTotalsRequest(), metadata=cat.seller.metadata)
    assert await refused(cat.seller.sales.RefundBalance(sales_pb2.RefundBalanceRequest(
        request_id=rid(), card_uid="04B2000001"), metadata=cat.seller.metadata)) == "PERMISSION_DENIED"
    assert cat.clerk is not None  # the clerk holds sales.refund
    paid = await cat.clerk.sales.RefundBalance(sales_pb2.RefundBalanceRequest(request_id=rid(), card_uid="04B2000001"),
                                               metadata=cat.clerk.metadata)
    assert paid.balance.minor_units == 0
    drawer = await cat.clerk.sales.ShiftTotals(sales_pb2.ShiftTotalsRequest(), metadata=cat.clerk.metadata)
    assert drawer.refunded.minor_units >= 100 and before.refunds == 0  # the payout leaves the clerk's drawer
    history = await cat.seller.sales.CardHistory(sales_pb2.CardHistoryRequest(card_uid="04B2000001"),
                                                 metadata=cat.seller.metadata)
    assert [(e.kind, e.amount.minor_units) for e in history.events if e.kind != "entry"] == [
        ("refund", -100), ("charge", -COASTER_FARE), ("charge", -COASTER_FARE), ("top_up", 700)]
    # the top-up is a sale of its own: its payment counts in the seller's shift like every sale's
    totals = await cat.seller.sales.ShiftTotals(sales_pb2.ShiftTotalsRequest(), metadata=cat.seller.metadata)
    assert any(t.method == common_pb2.CASH and t.amount.minor_units >= 700 for t in totals.by_method)
    assert cat.sql("SELECT count(*) FROM orders WHERE kind = 'top_up' AND request_id = %s", request_id) == [(1,)]


async def test_a_top_up_on_a_blocked_card_is_refused(cat: Catalogue) -> None:
    await cat.seller.sales.RegisterMember(sales_pb2.RegisterMemberRequest(
        request_id=rid(), member=sales_pb2.Member(name="Blocked Purse", card_uid="04B2000010", product_id="member")),
        metadata=cat.seller.metadata)
    await cat.seller.sales.ReportCardLost(sales_pb2.ReportCardLostRequest(card_uid="04B2000010"),
                                          metadata=cat.seller.metadata)
    assert await refused(top_up(cat, "04B2000010", 100)) == "CARD_BLOCKED"


async def test_two_gates_on_two_servers_charge_one_card_exactly_once(cat: Catalogue) -> None:
    """The balance covers one ride: the two gates' batches lock the ticket row one after the other."""
    one = await cat.gate("sv-race-1", attraction="coaster", server=0)
    two = await cat.gate("sv-race-2", attraction="coaster", server=1)
    for round_ in range(5):
        uid = f"04B21000{round_:02X}"
        await cat.sell_card("purse", uid)
        await top_up(cat, uid, COASTER_FARE + 50)
        a, b = await asyncio.gather(one.validate(rid(), card_uid=uid, timeout=10),
                                    two.validate(rid(), card_uid=uid, timeout=10))
        assert sorted([a.allow, b.allow]) == [False, True], (a, b)
        loser = a if not a.allow else b
        assert (loser.reason, loser.balance) == ("INSUFFICIENT_BALANCE", 50)
        assert cat.sql("SELECT t.balance, (SELECT sum(charged) FROM validations v WHERE v.ticket_id = t.id) "
                       "FROM tickets t WHERE card_uid = %s", uid) == [(50, COASTER_FARE)]


async def test_count_card_per_attraction_and_overall_shows_what_is_left(cat: Catalogue) -> None:
    coaster = await cat.gate("cc-coaster", attraction="coaster")
    wheel = await cat.gate("cc-wheel", attraction="wheel")
    await cat.sell_card("count", "04C3000001")
    rides = [await coaster.validate(rid(), card_uid="04C3000001") for _ in range(3)]
    assert [(r.allow, r.reason, r.entries_left) for r in rides] == [
        (True, "OK", 1), (True, "OK", 0), (False, "NO_ENTRIES_LEFT", 0)]
    # the wheel is not on the card's list: a per-attraction count admits only where it counts
    assert (await wheel.validate(rid(), card_uid="04C3000001")).reason == "NOT_VALID_FOR_ATTRACTION"
    balance = await cat.seller.sales.CardHistory(sales_pb2.CardHistoryRequest(card_uid="04C3000001"),
                                                 metadata=cat.seller.metadata)
    assert balance.balance.entries_left == 3 and dict(balance.balance.entries_left_by_attraction) == {"coaster": 0}


async def test_the_fare_follows_the_attraction_and_the_day_type(cat: Catalogue) -> None:
    from datetime import datetime
    from zoneinfo import ZoneInfo

    from parkgate.v1 import catalog_pb2

    fares = {catalog_pb2.WEEKDAY: 120, catalog_pb2.WEEKEND: 180}
    for day_type, amount in fares.items():
        await cat.admin.catalog.SetAttractionFare(catalog_pb2.AttractionFare(
            attraction_id="wheel", day_type=day_type, price=common_pb2.Money(minor_units=amount, currency="CNY")),
            metadata=cat.admin.metadata)
    assert await refused(cat.admin.catalog.SetAttractionFare(catalog_pb2.AttractionFare(
        attraction_id="wheel", day_type=catalog_pb2.WEEKDAY, price=common_pb2.Money(minor_units=-1)),
        metadata=cat.admin.metadata)) == "INVALID_ARGUMENT"
    weekend = datetime.now(ZoneInfo("Asia/Shanghai")).isoweekday() >= 6
    wheel = await cat.gate("sv-wheel", attraction="wheel")
    await cat.sell_card("purse", "04B2200001")
    await top_up(cat, "04B2200001", 1000)
    ride = await wheel.validate(rid(), card_uid="04B2200001")
    assert ride.balance == 1000 - fares[catalog_pb2.WEEKEND if weekend else catalog_pb2.WEEKDAY]
