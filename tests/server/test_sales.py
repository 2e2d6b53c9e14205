"""Selling and refunding through the wire, against a real server and PostgreSQL (issue 4)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, date, datetime
from zoneinfo import ZoneInfo

import grpc
import psycopg
import pytest

from parkgate import native
from parkgate.clients.gate.link import GateLink, Hello
from parkgate.v1 import admin_pb2, catalog_pb2, common_pb2, sales_pb2
from tests.fixtures.server import Client, RunningServer, reason_of

ZONE = ZoneInfo("Asia/Shanghai")
CNY = "CNY"


def rid() -> str:
    return str(uuid.uuid4())


def cny(minor: int) -> common_pb2.Money:
    return common_pb2.Money(minor_units=minor, currency=CNY)


def d(day: date) -> common_pb2.Date:
    return common_pb2.Date(year=day.year, month=day.month, day=day.day)


@dataclass
class Shop:
    admin: Client
    seller: Client
    window: str
    dsn: str

    async def order(self, *lines: sales_pb2.OrderLine, payments: list[sales_pb2.Payment] | None = None,
                    request_id: str | None = None, customer: str = "") -> sales_pb2.Order:
        if payments is None:
            payments = [sales_pb2.Payment(method=common_pb2.CASH, amount=cny(await self.total(*lines)))]
        return await self.seller.sales.CreateOrder(
            sales_pb2.CreateOrderRequest(request_id=request_id or rid(), lines=list(lines), payments=payments,
                                         customer=customer),
            metadata=self.seller.metadata,
        )

    async def total(self, *lines: sales_pb2.OrderLine) -> int:
        """What the lines cost today, asked of the server's price quote (plus card deposits)."""
        total = 0
        for line in lines:
            q = await self.seller.catalog.QuotePrice(
                catalog_pb2.QuotePriceRequest(product_id=line.product_id, date=line.visit_date
                                              if line.HasField("visit_date") else d(today()),
                                              quantity=line.quantity), metadata=self.seller.metadata)
            product = await product_rules(self, line.product_id)
            total += q.total.minor_units + product.rules.deposit.minor_units * line.quantity
        return total

    def sql(self, query: str, *params: object) -> list[tuple]:
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            cur = conn.execute(query, params)
            return cur.fetchall() if cur.description else []


async def product_rules(shop: Shop, product_id: str) -> catalog_pb2.Product:
    reply = await shop.admin.catalog.ListProducts(catalog_pb2.ListProductsRequest(park_id="tpark"),
                                                  metadata=shop.admin.metadata)
    return next(p for p in reply.products if p.id == product_id)


async def admitting_gate(shop: Shop, server: RunningServer) -> GateLink:
    """A real entry gate of the test park, connected to the server."""
    reply = await shop.admin.admin.RegisterDevice(admin_pb2.RegisterDeviceRequest(device=admin_pb2.Device(
        id=f"gate-{uuid.uuid4().hex[:8]}", kind=admin_pb2.GATE, park_id="tpark", direction=common_pb2.IN)),
        metadata=shop.admin.metadata)
    link = GateLink(server.address, Hello(reply.device.id, reply.secret, "in", "tpark"))
    await link.open()
    return link


def today() -> date:
    return datetime.now(UTC).astimezone(ZONE).date()


PRICES = {catalog_pb2.WEEKDAY: 10000, catalog_pb2.WEEKEND: 12000, catalog_pb2.HOLIDAY: 15000}


@pytest.fixture(scope="module")
async def shop(parkgate_server: RunningServer, module_dsn: str) -> AsyncIterator[Shop]:
    admin = await parkgate_server.admin()
    md = admin.metadata
    await admin.catalog.PutPark(catalog_pb2.PutParkRequest(park=catalog_pb2.Park(
        id="tpark", name="Test Park", time_zone="Asia/Shanghai", currency=CNY)), metadata=md)
    for a in ("coaster", "wheel"):
        await admin.catalog.PutAttraction(catalog_pb2.PutAttractionRequest(
            attraction=catalog_pb2.Attraction(id=a, park_id="tpark", name=a.title())), metadata=md)
    products = [
        ("day", catalog_pb2.SINGLE, catalog_pb2.ProductRules(validity=catalog_pb2.VISIT_DATE, entries_total=1,
                                                             attraction_ids=["coaster"])),
        ("family", catalog_pb2.MULTI_PERSON, catalog_pb2.ProductRules(validity=catalog_pb2.VISIT_DATE,
                                                                      person_count=4, entries_total=1)),
        ("card10", catalog_pb2.COUNT_CARD, catalog_pb2.ProductRules(
            validity=catalog_pb2.DAYS_FROM_FIRST_USE, valid_days=30, entries_total=10, card_bound=True,
            deposit=cny(2000))),
        ("noprice", catalog_pb2.SINGLE, catalog_pb2.ProductRules(validity=catalog_pb2.VISIT_DATE)),
    ]
    for pid, kind, rules in products:
        await admin.catalog.PutProduct(catalog_pb2.PutProductRequest(product=catalog_pb2.Product(
            id=pid, park_id="tpark", name=pid.title(), kind=kind, rules=rules, on_sale=True)), metadata=md)
    for pid in ("day", "family", "card10"):
        for day_type, amount in PRICES.items():
            await admin.catalog.SetPrice(catalog_pb2.SetPriceRequest(entry=catalog_pb2.PriceEntry(
                product_id=pid, day_type=day_type, price=cny(amount * (3 if pid == "family" else 1)))), metadata=md)
    reply = await admin.admin.RegisterDevice(admin_pb2.RegisterDeviceRequest(device=admin_pb2.Device(
        id="win-t1", kind=admin_pb2.SALES_WINDOW, park_id="tpark", site="north")), metadata=md)
    await admin.admin.CreateUser(admin_pb2.CreateUserRequest(
        username="sally", password="sally-password-1", roles=["seller"]), metadata=md)
    seller = await parkgate_server.login("sally", "sally-password-1", "win-t1", reply.secret)
    yield Shop(admin, seller, "win-t1", module_dsn)


async def test_price_resolution_weekday_weekend_holiday_and_peak(shop: Shop) -> None:
    md = shop.admin.metadata
    cat = shop.admin.catalog
    await cat.PutHoliday(catalog_pb2.PutHolidayRequest(holiday=catalog_pb2.Holiday(
        park_id="tpark", date=d(date(2027, 10, 1)), day_type=catalog_pb2.HOLIDAY, name="National Day")), metadata=md)
    await cat.PutHoliday(catalog_pb2.PutHolidayRequest(holiday=catalog_pb2.Holiday(
        park_id="tpark", date=d(date(2027, 2, 6)), day_type=catalog_pb2.PEAK, name="spring-festival")), metadata=md)
    await cat.PutHoliday(catalog_pb2.PutHolidayRequest(holiday=catalog_pb2.Holiday(
        park_id="tpark", date=d(date(2027, 7, 20)), day_type=catalog_pb2.PEAK, name="summer")), metadata=md)
    await cat.SetPrice(catalog_pb2.SetPriceRequest(entry=catalog_pb2.PriceEntry(
        product_id="day", day_type=catalog_pb2.PEAK, peak_name="spring-festival", price=cny(18800))), metadata=md)

    async def quote(day: date, quantity: int = 1) -> catalog_pb2.QuotePriceResponse:
        return await cat.QuotePrice(catalog_pb2.QuotePriceRequest(product_id="day", date=d(day), quantity=quantity),
                                    metadata=md)

    wednesday = await quote(date(2027, 3, 3), 3)
    assert (wednesday.day_type, wednesday.unit_price.minor_units, wednesday.total.minor_units) == (
        catalog_pb2.WEEKDAY, 10000, 30000)
    saturday = await quote(date(2027, 3, 6))
    assert (saturday.day_type, saturday.unit_price.minor_units) == (catalog_pb2.WEEKEND, 12000)
    national_day = await quote(date(2027, 10, 1))  # a Friday, but a holiday
    assert (national_day.day_type, national_day.unit_price.minor_units) == (catalog_pb2.HOLIDAY, 15000)
    spring = await quote(date(2027, 2, 6))  # a Saturday in a named peak with its own price
    assert (spring.day_type, spring.peak_name, spring.unit_price.minor_units) == (
        catalog_pb2.PEAK, "spring-festival", 18800)
    summer = await quote(date(2027, 7, 20))  # a peak without a price of its own: the holiday price
    assert (summer.day_type, summer.unit_price.minor_units) == (catalog_pb2.PEAK, 15000)

    holidays = await cat.ListHolidays(catalog_pb2.ListHolidaysRequest(park_id="tpark"), metadata=md)
    assert [h.name for h in holidays.holidays] == ["spring-festival", "summer", "National Day"]
    await cat.DeleteHoliday(catalog_pb2.DeleteHolidayRequest(park_id="tpark", date=d(date(2027, 10, 1))), metadata=md)
    assert (await quote(date(2027, 10, 1))).day_type == catalog_pb2.WEEKDAY

    with pytest.raises(grpc.aio.AioRpcError) as err:
        await cat.QuotePrice(catalog_pb2.QuotePriceRequest(product_id="noprice", date=d(date(2027, 3, 3))), metadata=md)
    assert reason_of(err.value) == "PRICE_NOT_SET"
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await cat.QuotePrice(catalog_pb2.QuotePriceRequest(product_id="nope", date=d(date(2027, 3, 3))), metadata=md)
    assert reason_of(err.value) == "UNKNOWN_PRODUCT"
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await cat.SetPrice(catalog_pb2.SetPriceRequest(entry=catalog_pb2.PriceEntry(
            product_id="day", day_type=catalog_pb2.WEEKDAY, price=cny(-1))), metadata=md)
    assert reason_of(err.value) == "INVALID_ARGUMENT"


async def test_an_order_issues_signed_tickets_that_verify(shop: Shop) -> None:
    order = await shop.order(sales_pb2.OrderLine(product_id="day", quantity=2),
                             sales_pb2.OrderLine(product_id="family", quantity=1))
    assert len(order.tickets) == 3 and order.window_device_id == "win-t1" and order.operator == "sally"
    assert order.total.minor_units == sum(t.price.minor_units for t in order.tickets)
    assert order.payments[0].amount == order.total

    keyring = native.Keyring()
    for key_id, public_key, state in shop.sql("SELECT key_id, public_key, state FROM signing_keys"):
        keyring.add(key_id, bytes(public_key), native.KeyState[state.upper()])
    (park_number,), = shop.sql("SELECT number FROM parks WHERE id = 'tpark'")
    (coaster_slot,), = shop.sql("SELECT slot FROM attractions WHERE id = 'coaster'")
    now = int(datetime.now(UTC).timestamp())
    offset = int(datetime.now(ZONE).utcoffset().total_seconds())  # type: ignore[union-attr]
    for ticket in order.tickets:
        decoded = native.authenticate(ticket.code, keyring)
        assert decoded.serial == ticket.serial and decoded.park_id == park_number
        result = native.verify(ticket.code, keyring, now=now, utc_offset=offset, park_id=park_number)
        assert result.ok, result.reason
        assert ticket.state == sales_pb2.VALID
    day, family = order.tickets[0], order.tickets[2]
    assert native.verify(day.code, keyring, now=now, utc_offset=offset, park_id=park_number,
                         attraction_id=coaster_slot).ok
    assert native.decode(family.code).persons == 4
    forged = day.code[:-3] + ("AAA" if not day.code.endswith("AAA") else "BBB")
    assert not native.verify(forged, keyring, now=now, utc_offset=offset, park_id=park_number).ok

    found = await shop.seller.sales.FindTickets(sales_pb2.FindTicketsRequest(code=day.code), metadata=shop.seller.metadata)
    assert [t.serial for t in found.tickets] == [day.serial]
    again = await shop.seller.sales.GetOrder(sales_pb2.GetOrderRequest(order_id=order.id), metadata=shop.seller.metadata)
    assert again == order


async def test_a_retried_sale_never_sells_twice(shop: Shop) -> None:
    request_id = rid()
    line = sales_pb2.OrderLine(product_id="day", quantity=1)
    first = await shop.order(line, request_id=request_id)
    retries = await asyncio.gather(*(shop.order(line, request_id=request_id) for _ in range(5)))
    assert all(r == first for r in retries)
    assert shop.sql("SELECT count(*) FROM tickets t JOIN orders o ON o.id = t.order_id WHERE o.request_id = %s",
                    request_id) == [(1,)]
    with pytest.raises(grpc.aio.AioRpcError) as err:  # the same id for another order
        await shop.order(sales_pb2.OrderLine(product_id="day", quantity=2), request_id=request_id)
    assert reason_of(err.value) == "IDEMPOTENCY_CONFLICT"


async def test_two_identical_sales_in_flight_at_once_sell_once(shop: Shop) -> None:
    """Both attempts pass the "is there an order for this id?" read before either inserts: ON CONFLICT decides.

    The test holds a lock that blocks every INSERT into orders (reads go on),
    waits until PostgreSQL shows both sales waiting on it, then lets go: the
    second insert meets the first's row and must answer with the first order.
    """
    request_id = rid()
    line = sales_pb2.OrderLine(product_id="day", quantity=2)
    total = await shop.total(line)
    with psycopg.connect(shop.dsn) as blocker:
        blocker.execute("LOCK TABLE orders IN SHARE ROW EXCLUSIVE MODE")  # no INSERT until we commit
        (blocker_pid,), = blocker.execute("SELECT pg_backend_pid()").fetchall()
        both = asyncio.gather(*(shop.order(line, request_id=request_id,
                                           payments=[sales_pb2.Payment(method=common_pb2.CASH, amount=cny(total))])
                                for _ in range(2)))
        async with asyncio.timeout(60):
            while shop.sql("SELECT count(*) FROM pg_stat_activity WHERE %s = ANY(pg_blocking_pids(pid))",
                           blocker_pid) != [(2,)]:
                if both.done():
                    break  # it failed before reaching the insert: the gather below says why
                await asyncio.sleep(0.05)
        waiting = shop.sql("SELECT query FROM pg_stat_activity WHERE %s = ANY(pg_blocking_pids(pid))", blocker_pid)
        blocker.commit()
        first, second = await both
    # both had looked for an order of this request id, found none, and were at the INSERT: neither had committed
    assert [q.split("(")[0].split() for (q,) in waiting] == [["INSERT", "INTO", "orders"]] * 2, waiting
    assert first == second  # the same order, the same tickets and codes, for both attempts
    assert len(first.tickets) == 2
    assert shop.sql("SELECT count(*) FROM orders WHERE request_id = %s", request_id) == [(1,)]
    assert shop.sql("SELECT count(*) FROM tickets t JOIN orders o ON o.id = t.order_id WHERE o.request_id = %s",
                    request_id) == [(2,)]


async def test_concurrent_sales_of_one_card_exactly_one_wins(shop: Shop) -> None:
    card = "04A1B2C3D4E5F6"
    line = sales_pb2.OrderLine(product_id="card10", quantity=1, card_uids=[card])
    results = await asyncio.gather(*(shop.order(line) for _ in range(8)), return_exceptions=True)
    won = [r for r in results if isinstance(r, sales_pb2.Order)]
    lost = [r for r in results if isinstance(r, grpc.aio.AioRpcError)]
    assert len(won) == 1 and len(lost) == 7
    assert {reason_of(e) for e in lost} == {"CARD_ALREADY_BOUND"}
    assert won[0].tickets[0].card_uid == card
    assert won[0].total.minor_units == await shop.total(line)
    assert shop.sql("SELECT count(*) FROM tickets WHERE card_uid = %s", card) == [(1,)]  # nothing half-written
    found = await shop.seller.sales.FindTickets(sales_pb2.FindTicketsRequest(card_uid="04:a1:b2:c3:d4:e5:f6"),
                                                metadata=shop.seller.metadata)
    assert [t.id for t in found.tickets] == [won[0].tickets[0].id]

    # The card comes back with a refund of its deposit: it can be sold again.
    refund = await shop.seller.sales.Refund(sales_pb2.RefundRequest(
        request_id=rid(), order_id=won[0].id, reason_id="weather", refund_deposit=True), metadata=shop.admin.metadata)
    assert refund.deposit_refunded.minor_units == 2000
    again = await shop.order(line)
    assert again.tickets[0].card_uid == card


async def test_versioned_rules_and_prices_stay_with_sold_tickets(shop: Shop) -> None:
    md = shop.admin.metadata
    before = await shop.order(sales_pb2.OrderLine(product_id="family", quantity=1))
    product = await product_rules(shop, "family")
    rules = catalog_pb2.ProductRules()
    rules.CopyFrom(product.rules)
    rules.person_count = 5
    changed = await shop.admin.catalog.PutProduct(catalog_pb2.PutProductRequest(product=catalog_pb2.Product(
        id="family", park_id="tpark", name=product.name, kind=product.kind, rules=rules, on_sale=True)), metadata=md)
    assert changed.version == product.version + 1
    for day_type in PRICES:
        await shop.admin.catalog.SetPrice(catalog_pb2.SetPriceRequest(entry=catalog_pb2.PriceEntry(
            product_id="family", day_type=day_type, price=cny(1))), metadata=md)
    after = await shop.order(sales_pb2.OrderLine(product_id="family", quantity=1))
    old, new = before.tickets[0], after.tickets[0]
    assert (old.product_version, native.decode(old.code).persons) == (product.version, 4)
    assert (new.product_version, native.decode(new.code).persons) == (changed.version, 5)
    assert new.price.minor_units == 1
    kept = await shop.seller.sales.GetOrder(sales_pb2.GetOrderRequest(order_id=before.id), metadata=shop.seller.metadata)
    assert kept.tickets[0].price == old.price and kept.tickets[0].product_version == product.version


async def test_refunds_follow_the_reason_percentage_and_round_half_up(
    shop: Shop, parkgate_server: RunningServer
) -> None:
    md = shop.admin.metadata
    await shop.admin.sales.PutRefundReason(sales_pb2.RefundReason(id="odd", label="Odd percent", refund_percent=33),
                                           metadata=md)
    for day_type in PRICES:
        await shop.admin.catalog.SetPrice(catalog_pb2.SetPriceRequest(entry=catalog_pb2.PriceEntry(
            product_id="day", day_type=day_type, price=cny(1001))), metadata=md)
    order = await shop.order(sales_pb2.OrderLine(product_id="day", quantity=3))
    first, second, third = order.tickets

    one = await shop.seller.sales.Refund(sales_pb2.RefundRequest(
        request_id=rid(), ticket_ids=[first.id], reason_id="odd", note="changed plans"), metadata=md)
    assert one.amount.minor_units == 330  # 33 % of 10.01 = 3.3033
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await shop.seller.sales.Refund(sales_pb2.RefundRequest(
            request_id=rid(), ticket_ids=[first.id], reason_id="odd"), metadata=md)
    assert reason_of(err.value) == "ALREADY_REFUNDED"
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await shop.seller.sales.Refund(sales_pb2.RefundRequest(
            request_id=rid(), ticket_ids=[second.id], reason_id="customer-request", expected_amount=cny(1001)),
            metadata=md)
    assert reason_of(err.value) == "REFUND_EXCEEDS_PAID"
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await shop.seller.sales.Refund(sales_pb2.RefundRequest(request_id=rid(), order_id=order.id, reason_id="nope"),
                                       metadata=md)
    assert reason_of(err.value) == "UNKNOWN_REFUND_REASON"

    # A used ticket needs the refund_used permission on top of refund.
    await shop.admin.admin.PutRole(admin_pb2.PutRoleRequest(role=admin_pb2.Role(
        name="refunder", permissions=["sales.refund", "sales.read"])), metadata=md)
    await shop.admin.admin.CreateUser(admin_pb2.CreateUserRequest(
        username="rita", password="rita-password-1", roles=["refunder"]), metadata=md)
    refunder = await parkgate_server.login("rita", "rita-password-1")
    gate = await admitting_gate(shop, parkgate_server)
    try:
        assert (await gate.validate(rid(), code=second.code)).allow  # checked in at the park gate
    finally:
        await gate.close()
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await refunder.sales.Refund(sales_pb2.RefundRequest(request_id=rid(), ticket_ids=[second.id],
                                                            reason_id="weather"), metadata=refunder.metadata)
    assert reason_of(err.value) == "TICKET_USED_NO_REFUND"
    request_id = rid()
    rest = await shop.seller.sales.Refund(sales_pb2.RefundRequest(
        request_id=request_id, order_id=order.id, reason_id="customer-request"), metadata=md)  # admin may
    assert sorted(rest.ticket_ids) == sorted([second.id, third.id])
    assert rest.amount.minor_units == 2 * 801  # 80 % of 10.01 = 8.008 -> 8.01, half up
    replay = await shop.seller.sales.Refund(sales_pb2.RefundRequest(
        request_id=request_id, order_id=order.id, reason_id="customer-request"), metadata=md)
    assert replay == rest

    refunded = await shop.seller.sales.GetOrder(sales_pb2.GetOrderRequest(order_id=order.id), metadata=md)
    assert {t.state for t in refunded.tickets} == {sales_pb2.REFUNDED_STATE}
    listed = await shop.seller.sales.ListRefunds(sales_pb2.ListRefundsRequest(reason_id="odd"), metadata=md)
    assert [r.id for r in listed.refunds] == [one.id] and listed.refunds[0].operator == "admin"
    by_admin = await shop.seller.sales.ListRefunds(sales_pb2.ListRefundsRequest(operator="admin"), metadata=md)
    assert {one.id, rest.id} <= {r.id for r in by_admin.refunds}


async def test_quick_sale_sells_n_at_todays_price(shop: Shop) -> None:
    quote = await shop.seller.catalog.QuotePrice(catalog_pb2.QuotePriceRequest(
        product_id="family", date=d(today()), quantity=3), metadata=shop.seller.metadata)
    order = await shop.seller.sales.QuickSell(sales_pb2.QuickSellRequest(
        request_id=rid(), product_id="family", quantity=3), metadata=shop.seller.metadata)
    assert len(order.tickets) == 3 and order.total == quote.total
    assert [p.method for p in order.payments] == [common_pb2.CASH]
    mobile = await shop.seller.sales.QuickSell(sales_pb2.QuickSellRequest(
        request_id=rid(), product_id="family", quantity=1, method=common_pb2.MOBILE), metadata=shop.seller.metadata)
    assert mobile.payments[0].method == common_pb2.MOBILE


async def test_shift_totals_add_up_the_operators_takings(shop: Shop, parkgate_server: RunningServer) -> None:
    reply = await shop.admin.admin.RegisterDevice(admin_pb2.RegisterDeviceRequest(device=admin_pb2.Device(
        id="win-t2", kind=admin_pb2.SALES_WINDOW, park_id="tpark")), metadata=shop.admin.metadata)
    await shop.admin.admin.CreateUser(admin_pb2.CreateUserRequest(
        username="sam", password="sam-password-12", roles=["seller", "refunder"]), metadata=shop.admin.metadata)
    sam = await parkgate_server.login("sam", "sam-password-12", "win-t2", reply.secret)
    cash = await sam.sales.QuickSell(sales_pb2.QuickSellRequest(request_id=rid(), product_id="day", quantity=2),
                                     metadata=sam.metadata)
    mobile = await sam.sales.QuickSell(sales_pb2.QuickSellRequest(request_id=rid(), product_id="day", quantity=1,
                                                                  method=common_pb2.MOBILE), metadata=sam.metadata)
    refund = await sam.sales.Refund(sales_pb2.RefundRequest(request_id=rid(), ticket_ids=[mobile.tickets[0].id],
                                                            reason_id="weather"), metadata=sam.metadata)
    totals = await sam.sales.ShiftTotals(sales_pb2.ShiftTotalsRequest(), metadata=sam.metadata)
    assert (totals.orders, totals.tickets, totals.refunds) == (2, 3, 1)
    assert {m.method: (m.count, m.amount.minor_units) for m in totals.by_method} == {
        common_pb2.CASH: (1, cash.total.minor_units), common_pb2.MOBILE: (1, mobile.total.minor_units)}
    assert totals.refunded.minor_units == refund.amount.minor_units == mobile.total.minor_units


async def test_bad_sales_are_refused_and_nothing_is_half_written(
    shop: Shop, parkgate_server: RunningServer
) -> None:
    (orders_before,), = shop.sql("SELECT count(*) FROM orders")
    (tickets_before,), = shop.sql("SELECT count(*) FROM tickets")
    md = shop.seller.metadata

    async def refused(request: sales_pb2.CreateOrderRequest, client: Client | None = None) -> str:
        client = client or shop.seller
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await client.sales.CreateOrder(request, metadata=client.metadata)
        return reason_of(err.value)

    cash = [sales_pb2.Payment(method=common_pb2.CASH, amount=cny(10000))]
    assert await refused(sales_pb2.CreateOrderRequest(request_id=rid(), payments=cash, lines=[
        sales_pb2.OrderLine(product_id="nope", quantity=1)])) == "UNKNOWN_PRODUCT"
    assert await refused(sales_pb2.CreateOrderRequest(request_id=rid(), payments=cash, lines=[
        sales_pb2.OrderLine(product_id="day", quantity=-1)])) == "INVALID_QUANTITY"
    assert await refused(sales_pb2.CreateOrderRequest(request_id=rid(), payments=cash, lines=[
        sales_pb2.OrderLine(product_id="noprice", quantity=1)])) == "PRICE_NOT_SET"
    assert await refused(sales_pb2.CreateOrderRequest(request_id=rid(), payments=cash, lines=[
        sales_pb2.OrderLine(product_id="day", quantity=1),
        sales_pb2.OrderLine(product_id="day", quantity=1)])) == "PAYMENT_MISMATCH"
    assert await refused(sales_pb2.CreateOrderRequest(request_id=rid(), payments=cash, lines=[
        sales_pb2.OrderLine(product_id="card10", quantity=1, card_uids=["zz"])])) == "INVALID_ARGUMENT"
    # A card-bound line that fails on its card takes the other, valid line down with it.
    taken = (await shop.order(sales_pb2.OrderLine(product_id="card10", quantity=1,
                                                  card_uids=["0A0B0C0D"]))).tickets[0]
    (tickets_before,), = shop.sql("SELECT count(*) FROM tickets")
    (orders_before,), = shop.sql("SELECT count(*) FROM orders")
    lines = [sales_pb2.OrderLine(product_id="day", quantity=1),
             sales_pb2.OrderLine(product_id="card10", quantity=1, card_uids=[taken.card_uid])]
    paid = [sales_pb2.Payment(method=common_pb2.CASH, amount=cny(await shop.total(*lines)))]
    assert await refused(sales_pb2.CreateOrderRequest(request_id=rid(), payments=paid, lines=lines)) == (
        "CARD_ALREADY_BOUND")
    assert await refused(sales_pb2.CreateOrderRequest(request_id=rid(), lines=[
        sales_pb2.OrderLine(product_id="day", quantity=1)], payments=[
        sales_pb2.Payment(method=common_pb2.ON_ACCOUNT, amount=cny(10000))])) == "PAYMENT_METHOD_NOT_ALLOWED"

    # An operator without the permission, and an admin who is not at a window.
    await shop.admin.admin.CreateUser(admin_pb2.CreateUserRequest(
        username="chuck", password="chuck-password-1", roles=["checker"]), metadata=shop.admin.metadata)
    checker = await parkgate_server.login("chuck", "chuck-password-1")
    assert await refused(sales_pb2.CreateOrderRequest(request_id=rid(), payments=cash, lines=[
        sales_pb2.OrderLine(product_id="day", quantity=1)]), checker) == "PERMISSION_DENIED"
    assert await refused(sales_pb2.CreateOrderRequest(request_id=rid(), payments=cash, lines=[
        sales_pb2.OrderLine(product_id="day", quantity=1)]), shop.admin) == "NOT_A_SALES_WINDOW"
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await shop.seller.sales.Refund(sales_pb2.RefundRequest(request_id=rid(), order_id=str(uuid.uuid4()),
                                                               reason_id="weather"), metadata=md)
    assert reason_of(err.value) == "PERMISSION_DENIED"  # sellers do not refund by default

    assert shop.sql("SELECT count(*) FROM orders") == [(orders_before,)]
    assert shop.sql("SELECT count(*) FROM tickets") == [(tickets_before,)]
