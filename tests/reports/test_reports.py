"""Reports reconcile exactly with the raw orders, payments, refunds, gate decisions and the windows' shift totals.

Two windows sell several products (a card with a deposit among them) paid in
cash, by bank card and by phone; a manager refunds a ticket at 80 % and a card
with its deposit; real gates on a real server admit, let out and refuse. Then
every total and every breakdown of the sales, refunds and entries reports is
checked against SQL over the raw tables and against Sales.ShiftTotals.
"""

from __future__ import annotations

import asyncio
import csv
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from xml.etree import ElementTree
from zoneinfo import ZoneInfo

import grpc
import matplotlib.image
import openpyxl
import pytest
from psycopg.conninfo import conninfo_to_dict

from parkgate.clients.gate.link import GateLink, Hello
from parkgate.clients.reports.charts import CHARTS
from parkgate.clients.reports.cli import CHART_NEEDS
from parkgate.server.pg import PostgresInstance, free_port
from parkgate.v1 import admin_pb2, catalog_pb2, common_pb2, reports_pb2, reports_pb2_grpc, sales_pb2
from tests.fixtures.park import PRICE, TestPark, open_park, rid
from tests.fixtures.postgres import TEST_SETTINGS, make_test_dir
from tests.fixtures.server import Client, RunningServer, reason_of, start_server, stop_server

PARK = "rpark"
ZONE = ZoneInfo("Asia/Shanghai")
DEPOSIT = 500
ALL_SALES = [reports_pb2.BY_PRODUCT, reports_pb2.BY_PAYMENT_METHOD, reports_pb2.BY_OPERATOR,
             reports_pb2.BY_WINDOW, reports_pb2.BY_SITE, reports_pb2.BY_PARK, reports_pb2.BY_DAY, reports_pb2.BY_HOUR]


def money(amount: int) -> common_pb2.Money:
    return common_pb2.Money(minor_units=amount, currency="CNY")


def around_today() -> tuple[common_pb2.Date, common_pb2.Date]:
    """Yesterday .. tomorrow in the park: a run that crosses the park's midnight stays inside the range."""
    today = datetime.now(UTC).astimezone(ZONE).date()
    a, b = today - timedelta(days=1), today + timedelta(days=1)
    return (common_pb2.Date(year=a.year, month=a.month, day=a.day), common_pb2.Date(year=b.year, month=b.month,
                                                                                   day=b.day))


def breakdown(response: reports_pb2.ReportResponse, by: int) -> dict[str, reports_pb2.ReportRow]:
    found = [b for b in response.breakdowns if b.by == by]
    assert len(found) == 1, f"breakdown {by} missing"
    return {row.key: row for row in found[0].rows}


class Sold:
    """What the test did, kept to compare with."""

    def __init__(self) -> None:
        self.orders: list[sales_pb2.Order] = []


@pytest.fixture(scope="module")
async def park(parkgate_server: RunningServer, module_dsn: str) -> AsyncIterator[tuple[TestPark, Client, Sold]]:
    p = await open_park([parkgate_server], module_dsn, PARK, "Report Park")
    md = p.admin.metadata
    await p.product("adult", entries_total=1)
    await p.product("kid", entries_total=1)
    await p.product("family", catalog_pb2.MULTI_PERSON, entries_total=1, person_count=4)
    await p.product("card", catalog_pb2.COUNT_CARD, entries_total=5, card_bound=True, deposit=money(DEPOSIT))
    # a second window at another site, with its own seller
    window = await p.admin.admin.RegisterDevice(admin_pb2.RegisterDeviceRequest(device=admin_pb2.Device(
        id="east-window", kind=admin_pb2.SALES_WINDOW, park_id=PARK, site="east")), metadata=md)
    await p.admin.admin.CreateUser(admin_pb2.CreateUserRequest(
        username="east-seller", password="seller-password-2", roles=["seller"]), metadata=md)
    east = await p.server.login("east-seller", "seller-password-2", "east-window", window.secret)
    sold = Sold()

    async def order(client: Client, lines: list[tuple[str, int, list[str]]],
                    payments: list[tuple[int, int]]) -> sales_pb2.Order:
        reply = await client.sales.CreateOrder(sales_pb2.CreateOrderRequest(
            request_id=rid(), lines=[sales_pb2.OrderLine(product_id=pid, quantity=q, card_uids=cards)
                                     for pid, q, cards in lines],
            payments=[sales_pb2.Payment(method=m, amount=money(a)) for m, a in payments]), metadata=client.metadata)
        sold.orders.append(reply)
        return reply

    await order(p.seller, [("adult", 3, [])], [(common_pb2.CASH, 3 * PRICE)])
    await order(p.seller, [("adult", 1, []), ("kid", 2, [])], [(common_pb2.BANK_CARD, 2 * PRICE),
                                                               (common_pb2.MOBILE, PRICE)])
    await order(east, [("family", 1, [])], [(common_pb2.MOBILE, PRICE)])
    await order(east, [("card", 2, ["04A1B2C3D4E5F6", "04A1B2C3D4E5F7"])],
                [(common_pb2.CASH, 2 * (PRICE + DEPOSIT))])
    yield p, east, sold


async def test_sales_and_refunds_reconcile_with_orders_payments_and_shift_totals(park) -> None:  # type: ignore[no-untyped-def]
    p, east, sold = park
    md = p.admin.metadata
    first, _second, _family, cards = sold.orders
    # the manager refunds one adult ticket for a change of plans (80 %) and one card with its deposit
    await p.admin.sales.Refund(sales_pb2.RefundRequest(request_id=rid(), ticket_ids=[first.tickets[0].id],
                                                       reason_id="customer-request"), metadata=md)
    await p.admin.sales.Refund(sales_pb2.RefundRequest(request_id=rid(), ticket_ids=[cards.tickets[0].id],
                                                       reason_id="weather", refund_deposit=True), metadata=md)

    reports = reports_pb2_grpc.ReportsStub(p.admin.channel)
    start, until = around_today()
    sales = await reports.SalesReport(reports_pb2.ReportRequest(park_id=PARK, date=start, until=until,
                                                                breakdowns=ALL_SALES), metadata=md)
    (orders_total, order_count, ticket_count, deposits), = p.sql(
        """SELECT sum(o.total), count(*), (SELECT count(*) FROM tickets t WHERE t.park_id = %s),
                  (SELECT sum(deposit) FROM tickets t WHERE t.park_id = %s)
           FROM orders o WHERE o.window_device_id IN (%s, 'east-window')""", PARK, PARK, f"{PARK}-window")
    paid = dict(p.sql("SELECT method, sum(amount) FROM payments GROUP BY method"))
    assert sales.total.amount.minor_units == orders_total == sum(paid.values()) == sales.total_amount.minor_units
    assert (sales.total.orders, sales.total.count, sales.total.deposits.minor_units) == (
        order_count, ticket_count, deposits)
    assert sales.total.amount.minor_units == 9 * PRICE + 2 * DEPOSIT and deposits == 2 * DEPOSIT
    assert sales.time_zone == "Asia/Shanghai" and sales.source == "primary"

    # every breakdown adds up to the total; the payment methods are the payments table's
    by_payment = breakdown(sales, reports_pb2.BY_PAYMENT_METHOD)
    assert {k: r.amount.minor_units for k, r in by_payment.items()} == paid
    for by in ALL_SALES:
        rows = breakdown(sales, by).values()
        assert sum(r.amount.minor_units for r in rows) == orders_total, by
        if by != reports_pb2.BY_PAYMENT_METHOD:
            assert sum(r.count for r in rows) == ticket_count, by
            assert sum(r.deposits.minor_units for r in rows) == deposits, by
    by_product = breakdown(sales, reports_pb2.BY_PRODUCT)
    assert {k: (r.count, r.amount.minor_units) for k, r in by_product.items()} == {
        "adult": (4, 4 * PRICE), "kid": (2, 2 * PRICE), "family": (1, PRICE), "card": (2, 2 * (PRICE + DEPOSIT))}
    assert by_product["card"].deposits.minor_units == 2 * DEPOSIT and by_product["card"].label == "card"
    assert {k: r.amount.minor_units for k, r in breakdown(sales, reports_pb2.BY_SITE).items()} == {
        "": 6 * PRICE, "east": 3 * PRICE + 2 * DEPOSIT}
    assert len(breakdown(sales, reports_pb2.BY_DAY)) == 3 and len(breakdown(sales, reports_pb2.BY_HOUR)) == 24

    # the windows' own shift totals say the same as the report's operator and payment rows
    by_operator = breakdown(sales, reports_pb2.BY_OPERATOR)
    shift_methods: dict[int, int] = {}
    for username, client in ((f"{PARK}-seller", p.seller), ("east-seller", east)):
        shift = await client.sales.ShiftTotals(sales_pb2.ShiftTotalsRequest(), metadata=client.metadata)
        row = by_operator[username]
        assert (shift.orders, shift.tickets) == (row.orders, row.count), username
        assert sum(m.amount.minor_units for m in shift.by_method) == row.amount.minor_units, username
        for m in shift.by_method:
            shift_methods[m.method] = shift_methods.get(m.method, 0) + m.amount.minor_units
    assert {common_pb2.PaymentMethod.Name(k).lower(): v for k, v in shift_methods.items()} == paid

    # refunds: by reason, deposits returned, and the manager's shift totals
    refunded, returned = PRICE * 80 // 100, DEPOSIT
    assert (sales.total.refunded.minor_units, sales.total.deposits_returned.minor_units) == (PRICE + refunded, returned)
    refunds = await reports.RefundsReport(reports_pb2.ReportRequest(
        park_id=PARK, date=start, until=until, breakdowns=[reports_pb2.BY_REASON, reports_pb2.BY_OPERATOR,
                                                           reports_pb2.BY_PRODUCT]), metadata=md)
    (raw_amount, raw_deposit, raw_count), = p.sql(
        "SELECT sum(amount), sum(deposit_refunded), count(*) FROM refunds")
    assert (refunds.total.amount.minor_units, refunds.total.deposits_returned.minor_units, refunds.total.count,
            refunds.total.tickets) == (raw_amount, raw_deposit, raw_count, 2) == (PRICE + refunded, returned, 2, 2)
    by_reason = breakdown(refunds, reports_pb2.BY_REASON)
    assert {k: (r.amount.minor_units, r.deposits_returned.minor_units) for k, r in by_reason.items()} == {
        "customer-request": (refunded, 0), "weather": (PRICE, DEPOSIT)}
    assert by_reason["weather"].label == "Bad weather closure"
    manager = await p.admin.sales.ShiftTotals(sales_pb2.ShiftTotalsRequest(), metadata=md)
    admin_row = breakdown(refunds, reports_pb2.BY_OPERATOR)["admin"]
    assert manager.refunded.minor_units == admin_row.amount.minor_units + admin_row.deposits_returned.minor_units
    assert manager.refunds == admin_row.count == 2


async def test_entries_reconcile_with_the_gate_decisions(park) -> None:  # type: ignore[no-untyped-def]
    p, _east, sold = park
    entry_secret = await p.register_gate("r-in")
    exit_secret = await p.register_gate("r-out", direction="out")
    entry = GateLink(p.server.address, Hello("r-in", entry_secret, "in", PARK))
    exit_ = GateLink(p.server.address, Hello("r-out", exit_secret, "out", PARK))
    await entry.open()
    await exit_.open()
    try:
        _first, second, family, _cards = sold.orders
        reasons = [(await entry.validate(rid(), code=t.code)).reason
                   for t in (second.tickets[0], second.tickets[1], family.tickets[0], second.tickets[0])]
        assert reasons == ["OK", "OK", "OK", "ALREADY_USED"]
        assert (await exit_.validate(rid(), code=family.tickets[0].code)).allow
    finally:
        await entry.close()
        await exit_.close()

    reports = reports_pb2_grpc.ReportsStub(p.admin.channel)
    start, until = around_today()
    entries = await reports.EntriesReport(reports_pb2.ReportRequest(
        park_id=PARK, date=start, until=until, group_by=reports_pb2.BY_GATE,
        breakdowns=[reports_pb2.BY_REASON, reports_pb2.BY_PRODUCT, reports_pb2.BY_HOUR, reports_pb2.BY_DIRECTION]),
        metadata=p.admin.metadata)
    (admitted, persons, exits, refused), = p.sql(
        """SELECT count(*) FILTER (WHERE allow AND direction = 'in'),
                  sum(persons) FILTER (WHERE allow AND direction = 'in'),
                  sum(persons) FILTER (WHERE allow AND direction = 'out'), count(*) FILTER (WHERE NOT allow)
           FROM validations WHERE park_id = %s""", PARK)
    t = entries.total
    assert (t.count, t.persons, t.exits, t.refused) == (admitted, persons, exits, refused) == (3, 6, 4, 1)
    by_gate = {r.key: (r.count, r.persons, r.exits, r.refused) for r in entries.rows}  # the legacy group_by rows
    assert by_gate == {"r-in": (3, 6, 0, 1), "r-out": (0, 0, 4, 0)}
    assert {k: r.refused for k, r in breakdown(entries, reports_pb2.BY_REASON).items()}["ALREADY_USED"] == 1
    assert {k: r.persons for k, r in breakdown(entries, reports_pb2.BY_PRODUCT).items()} == {
        "adult": 1, "kid": 1, "family": 4}
    assert sum(r.count for r in breakdown(entries, reports_pb2.BY_HOUR).values()) == 3


async def test_periods_and_bad_requests(park) -> None:  # type: ignore[no-untyped-def]
    p, _east, _sold = park
    reports = reports_pb2_grpc.ReportsStub(p.admin.channel)
    md = p.admin.metadata
    day = common_pb2.Date(year=2027, month=2, day=17)  # a Wednesday
    for period, first, last in ((reports_pb2.DAY, (2027, 2, 17), (2027, 2, 17)),
                                (reports_pb2.WEEK, (2027, 2, 15), (2027, 2, 21)),
                                (reports_pb2.MONTH, (2027, 2, 1), (2027, 2, 28)),
                                (reports_pb2.QUARTER, (2027, 1, 1), (2027, 3, 31)),
                                (reports_pb2.YEAR, (2027, 1, 1), (2027, 12, 31))):
        r = await reports.SalesReport(reports_pb2.ReportRequest(park_id=PARK, period=period, date=day), metadata=md)
        assert ((r.first_day.year, r.first_day.month, r.first_day.day),
                (r.last_day.year, r.last_day.month, r.last_day.day)) == (first, last)
        assert r.total.count == 0
    # the park's midnight, not UTC's: 17 Feb in Shanghai starts at 16:00 UTC the day before
    r = await reports.SalesReport(reports_pb2.ReportRequest(park_id=PARK, period=reports_pb2.DAY, date=day),
                                  metadata=md)
    assert r.range.start.ToDatetime(tzinfo=UTC) == datetime(2027, 2, 16, 16, tzinfo=UTC)

    bad = [
        (reports_pb2.ReportRequest(park_id="nope"), "UNKNOWN_PARK"),
        (reports_pb2.ReportRequest(park_id=PARK, breakdowns=[reports_pb2.BY_GATE]), "INVALID_ARGUMENT"),
        (reports_pb2.ReportRequest(park_id=PARK, date=day, until=common_pb2.Date(year=2027, month=1, day=1)),
         "INVALID_ARGUMENT"),
        (reports_pb2.ReportRequest(park_id=PARK, date=common_pb2.Date(year=2027, month=2, day=30)),
         "INVALID_ARGUMENT"),
    ]
    for request, reason in bad:
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await reports.SalesReport(request, metadata=md)
        assert reason_of(err.value) == reason, request
    with pytest.raises(grpc.aio.AioRpcError) as err:  # a seller may sell, not read reports
        await reports_pb2_grpc.ReportsStub(p.seller.channel).SalesReport(
            reports_pb2.ReportRequest(park_id=PARK), metadata=p.seller.metadata)
    assert reason_of(err.value) == "PERMISSION_DENIED"




async def _parkgate(server: str, token: str, *args: str) -> str:
    """The real console command in its own process (the server runs on this test's event loop)."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "parkgate.common.cli", "report", "--server", server, *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "PARKGATE_TOKEN": token, "COLUMNS": "200"})
    out, err = await asyncio.wait_for(proc.communicate(), 120)
    assert proc.returncode == 0, err.decode()
    return out.decode()


def svg_texts(path: Path) -> list[str]:
    return [t.strip() for t in "".join(
        (el.text or "") + "\n" for el in ElementTree.parse(path).iter() if el.tag.endswith("text")).splitlines()
        if t.strip()]


async def test_the_console_prints_exports_xlsx_and_csv_and_draws_charts(park, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    p, _east, _sold = park
    start, until = around_today()
    period = f"{start.year:04d}-{start.month:02d}-{start.day:02d}..{until.year:04d}-{until.month:02d}-{until.day:02d}"
    xlsx, csv_file, png, svg = (tmp_path / n for n in ("sales.xlsx", "sales.csv", "sales.png", "sales.svg"))
    out = await _parkgate(p.server.address, p.admin.token, "sales", "--period", period, "--park", PARK,
                          "--by", "product,payment,day", "--xlsx", str(xlsx), "--csv", str(csv_file),
                          "--chart", str(png), "--chart", str(svg))
    assert "Sales report" in out and "Sales by product" in out and "adult" in out

    book = openpyxl.load_workbook(xlsx)
    assert book.sheetnames == ["total", "product", "payment", "day"]
    products = {row[0]: row for row in book["product"].iter_rows(min_row=2, values_only=True)}
    assert products["adult"][2:4] == (4, 2) and products["adult"][4] == pytest.approx(4 * PRICE / 100)
    assert products["card"][5] == pytest.approx(2 * DEPOSIT / 100)
    header = [c.value for c in book["total"][1]]
    total = dict(zip(header, next(book["total"].iter_rows(min_row=2, values_only=True)), strict=True))
    assert total["takings"] == pytest.approx((9 * PRICE + 2 * DEPOSIT) / 100) and total["tickets"] == 9
    paid = {row[0]: row[4] for row in book["payment"].iter_rows(min_row=2, values_only=True)}
    assert paid == pytest.approx({m: a / 100 for m, a in p.sql("SELECT method, sum(amount) FROM payments "
                                                                "GROUP BY method")})
    assert len(list(book["day"].iter_rows(min_row=2))) == 3

    with csv_file.open() as fh:
        lines = list(csv.DictReader(fh))
    assert {(r["table"], r["key"]): r for r in lines}[("product", "kid")]["tickets"] == "2"

    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    height, width = matplotlib.image.imread(png).shape[:2]
    assert width > 500 and height > 800  # two charts stacked: revenue per day, product mix
    texts = svg_texts(svg)
    assert "Revenue per day" in texts and "Product mix" in texts
    assert "adult" in texts and "card" in texts  # the pie's labels (product names)

    assert {kind: charts[0][0] for kind, charts in CHARTS.items()} == CHART_NEEDS  # what the command asks for
    hours = tmp_path / "entries.svg"
    out = await _parkgate(p.server.address, p.admin.token, "entries", "--period", period, "--park", PARK,
                          "--by", "gate", "--chart", str(hours))
    assert "Entries by gate" in out and "Entries per hour" in svg_texts(hours)

    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "parkgate.common.cli", "report", "--server", p.server.address, "refunds",
        "--park", "no-such-park", stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "PARKGATE_TOKEN": p.admin.token})
    _, err = await proc.communicate()
    assert proc.returncode == 2 and b"UNKNOWN_PARK" in err


async def test_a_replica_that_does_not_answer_leaves_reports_to_the_primary(park, module_dsn: str) -> None:  # type: ignore[no-untyped-def]
    p, _east, _sold = park
    nobody = free_port()  # a replica address where nothing listens
    second = await start_server(module_dsn, **{"reports.dsn": f"host=127.0.0.1 port={nobody} dbname=parkgate "
                                                              "connect_timeout=1",
                                               "reports.replica_wait_seconds": 0.5})
    try:
        admin = await second.login("admin", p.server.admin_password)
        start, until = around_today()
        reply = await reports_pb2_grpc.ReportsStub(admin.channel).SalesReport(reports_pb2.ReportRequest(
            park_id=PARK, date=start, until=until), metadata=admin.metadata, timeout=30)
        assert reply.source == "primary" and reply.total.count == 9
    finally:
        await stop_server(second)


async def test_reports_read_on_a_real_streaming_standby(
        parkgate_server: RunningServer, module_dsn: str, postgres_instance: PostgresInstance) -> None:
    """S28 "reports read from a replica": a real hot standby (pg_basebackup of the test's PostgreSQL, streaming).

    Its replay is paused after the first sales: a report that then still shows only those sales was read on
    the standby, not on the primary; resumed, the standby catches up and the report shows the rest."""
    park = await open_park([parkgate_server], module_dsn, "standby-park", "Standby Park")
    await park.product("standby-adult", entries_total=1)  # product ids are global: not rpark's
    await park.sell("standby-adult", 3)
    replica = _standby_of(postgres_instance)
    second = None
    try:
        dbname = conninfo_to_dict(module_dsn)["dbname"]
        second = await start_server(module_dsn, **{"reports.dsn": replica.conninfo(str(dbname)),
                                                   "reports.replica_wait_seconds": 5.0})
        admin = await second.login("admin", parkgate_server.admin_password)
        start, until = around_today()

        async def report() -> reports_pb2.ReportResponse:
            return await reports_pb2_grpc.ReportsStub(admin.channel).SalesReport(reports_pb2.ReportRequest(
                park_id="standby-park", date=start, until=until), metadata=admin.metadata, timeout=30)

        _caught_up(postgres_instance, replica)
        first = await report()
        assert (first.source, first.total.count) == ("replica", 3)
        with replica.connect() as conn:
            conn.execute("SELECT pg_wal_replay_pause()")
        await park.sell("standby-adult", 2)
        paused = await report()
        assert (paused.source, paused.total.count) == ("replica", 3)  # the primary has 5: read on the standby
        with replica.connect() as conn:
            conn.execute("SELECT pg_wal_replay_resume()")
        _caught_up(postgres_instance, replica)
        resumed = await report()
        assert (resumed.source, resumed.total.count) == ("replica", 5)
    finally:
        if second is not None:
            await stop_server(second)
        replica.stop(mode="immediate")


def _standby_of(primary: PostgresInstance) -> PostgresInstance:
    """A hot standby of ``primary``, streaming from it: pg_basebackup -R as the same user, another port."""
    base = make_test_dir("parkgate-standby-")
    data = base / "data"
    done = subprocess.run(
        [str(primary.binaries.bin_dir / "pg_basebackup"), "-D", str(data), "-R", "-X", "stream", "--no-sync", "--checkpoint=fast",
         "-h", primary.host, "-p", str(primary.port), "-U", primary.superuser],
        capture_output=True, text=True, cwd="/", env=primary.run_as.env(), check=False,
        **primary.run_as.subprocess_kwargs())
    assert done.returncode == 0, done.stderr
    standby = PostgresInstance(data, port=free_port(), auth="trust", settings={**TEST_SETTINGS, "hot_standby": True},
                               run_as=primary.run_as, bin_dir=primary.binaries)
    standby.start(timeout=60)
    return standby


def _caught_up(primary: PostgresInstance, standby: PostgresInstance, timeout: float = 60.0) -> None:
    """Wait until the standby has replayed everything the primary had written when asked."""
    with primary.connect() as conn:
        # the insert position: the test server commits asynchronously, so the write position may lag behind
        target = conn.execute("SELECT pg_current_wal_insert_lsn()").fetchone()[0]  # type: ignore[index]
    deadline = time.monotonic() + timeout
    with standby.connect() as conn:
        conn.autocommit = True
        while not conn.execute("SELECT pg_last_wal_replay_lsn() >= %s::pg_lsn", (target,)).fetchone()[0]:  # type: ignore[index]
            assert time.monotonic() < deadline, "the standby did not catch up"
            time.sleep(0.1)
