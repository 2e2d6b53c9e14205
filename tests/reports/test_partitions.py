"""validations and command_acks partitioned by time (migration 0005), with retention.

Read as a runbook: an existing installation is converted without losing a row
or a column (one another migration added); gates decide under a server clock
that moves from one month into the next, and a request retried across the
partition boundary still gets its first decision and consumes nothing twice;
the entries report adds up rows of two partitions; the maintenance job makes
partitions ahead, moves what the DEFAULT partition caught into its own, and
drops a month past retention, after which reports of the remaining months
still add up.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime

import psycopg
import pytest

from parkgate.clients.gate.link import GateLink, Hello
from parkgate.server.domain.errors import LockBusy
from parkgate.server.services.partitions import PartitionKeeper
from parkgate.server.store.migrations import apply_migrations, available_migrations
from parkgate.v1 import catalog_pb2, common_pb2, reports_pb2, reports_pb2_grpc, sales_pb2
from tests.fixtures.park import PRICE, open_park, rid
from tests.fixtures.server import start_server, stop_server

PARK = "ppark"


def at(text: str) -> float:
    return datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()


def partition_of(dsn: str, table: str, where: str, *params: object) -> list[tuple]:
    with psycopg.connect(dsn, autocommit=True) as conn:
        return conn.execute(f"SELECT tableoid::regclass::text, count(*) FROM {table} WHERE {where} "
                            "GROUP BY 1 ORDER BY 1", params).fetchall()


async def test_existing_rows_and_columns_survive_the_conversion(fresh_database: Callable[[str], str]) -> None:
    dsn = fresh_database("conv")
    ours = next(m.version for m in available_migrations() if m.name == "partitions")
    before = [m for m in available_migrations() if m.version < ours]
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE schema_migrations (version integer PRIMARY KEY, name text NOT NULL, "
                     "checksum text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())")
        for m in before:
            conn.execute(m.sql)  # type: ignore[arg-type]
            conn.execute("INSERT INTO schema_migrations VALUES (%s, %s, %s)", (m.version, m.name, m.checksum))
        # what another branch's migration may have added before this one: a column with a default, an index
        conn.execute("ALTER TABLE validations ADD COLUMN scanned_offline boolean NOT NULL DEFAULT false")
        conn.execute("CREATE INDEX validations_offline ON validations (scanned_offline) WHERE scanned_offline")
        conn.execute("""INSERT INTO validations (device_id, request_id, at, park_id, direction, allow, reason,
                                                 scanned_offline)
                        SELECT 'g', 'r' || n, timestamptz '2026-10-15 12:00Z' + make_interval(days => n * 20),
                               'p', 'in', n % 2 = 0, 'OK', n % 3 = 0 FROM generate_series(0, 5) n""")
        conn.execute("INSERT INTO command_acks (command_id, device_id, done, at) "
                     "VALUES ('c1', 'g', true, '2026-11-02Z'), ('c1', 'h', false, '2026-12-02Z')")
    await apply_migrations(dsn)
    with psycopg.connect(dsn, autocommit=True) as conn:
        kinds = dict(conn.execute("SELECT relname, relkind FROM pg_class WHERE relname IN "
                                  "('validations', 'command_acks')").fetchall())
        assert kinds == {"validations": "p", "command_acks": "p"}
        assert conn.execute("SELECT count(*), count(*) FILTER (WHERE scanned_offline), "
                            "count(*) FILTER (WHERE allow) FROM validations").fetchone() == (6, 2, 3)
        assert conn.execute("SELECT pg_get_constraintdef(oid) FROM pg_constraint WHERE conrelid = "
                            "'validations'::regclass AND contype = 'p'").fetchone() == (
            "PRIMARY KEY (device_id, request_id, at)",)
        assert conn.execute("SELECT count(*) FROM pg_indexes WHERE tablename = 'validations' "
                            "AND indexname = 'validations_offline'").fetchone() == (1,)
        # the new column keeps its default for rows written after the conversion
        conn.execute("INSERT INTO validations (device_id, request_id, park_id, direction, allow, reason) "
                     "VALUES ('g', 'new', 'p', 'in', true, 'OK')")
        assert conn.execute("SELECT scanned_offline FROM validations WHERE request_id = 'new'").fetchone() == (False,)
    # a partition per month holding rows (Oct 2026 .. Jan 2027), none of them in DEFAULT
    months = partition_of(dsn, "validations", "request_id <> 'new'")
    assert months == [("validations_p20261001", 1), ("validations_p20261101", 2), ("validations_p20261201", 1),
                      ("validations_p20270101", 2)]
    # and this month and the next two, empty, ready for the gates
    this_month = datetime.now(UTC).replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    ahead = [this_month.replace(year=this_month.year + (this_month.month + k - 1) // 12,
                                month=(this_month.month + k - 1) % 12 + 1) for k in range(3)]
    with psycopg.connect(dsn, autocommit=True) as conn:
        names = {r[0] for r in conn.execute("SELECT c.relname FROM pg_inherits i JOIN pg_class c ON "
                                            "c.oid = i.inhrelid WHERE i.inhparent = 'validations'::regclass")}
    assert {f"validations_p{m:%Y%m%d}" for m in ahead} <= names and "validations_default" in names
    assert partition_of(dsn, "command_acks", "true") == [("command_acks_p20261101", 1), ("command_acks_p20261201", 1)]


async def a_round_of_ours(keeper: PartitionKeeper) -> None:
    """One maintenance round run to its end by the test: the server's own round at start may hold the lock."""
    for _ in range(100):
        if not (await keeper.maintain()).skipped:
            return
        await asyncio.sleep(0.1)
    pytest.fail("the maintenance lock was never free")


async def test_decisions_across_partitions_retries_reports_and_retention(module_dsn: str) -> None:
    now = [at("2026-11-30T23:59:58")]
    server = await start_server(module_dsn, clock=lambda: now[0])
    try:
        await a_round_of_ours(server.server.partitions)
        park = await open_park([server], module_dsn, PARK, "Partition Park", time_zone="UTC")
        md = park.admin.metadata
        await park.admin.catalog.PutProduct(catalog_pb2.PutProductRequest(product=catalog_pb2.Product(
            id="season", park_id=PARK, name="Season pass", kind=catalog_pb2.COUNT_CARD, on_sale=True,
            rules=catalog_pb2.ProductRules(validity=catalog_pb2.FIXED_DATES, entries_total=10,
                                           valid_from=common_pb2.Date(year=2026, month=1, day=1),
                                           valid_until=common_pb2.Date(year=2027, month=12, day=31)))),
            metadata=md)
        for day_type in (catalog_pb2.WEEKDAY, catalog_pb2.WEEKEND, catalog_pb2.HOLIDAY):
            await park.admin.catalog.SetPrice(catalog_pb2.SetPriceRequest(entry=catalog_pb2.PriceEntry(
                product_id="season", day_type=day_type, price=common_pb2.Money(minor_units=PRICE, currency="CNY"))),
                metadata=md)
        order = await park.seller.sales.CreateOrder(sales_pb2.CreateOrderRequest(
            request_id=rid(), lines=[sales_pb2.OrderLine(product_id="season", quantity=2)],
            payments=[sales_pb2.Payment(method=common_pb2.CASH, amount=common_pb2.Money(minor_units=2 * PRICE,
                                                                                         currency="CNY"))]),
            metadata=park.seller.metadata)
        one, two = order.tickets
        gate = GateLink(server.address, Hello("p-gate", await park.register_gate("p-gate"), "in", PARK))
        await gate.open()
        try:
            first = await gate.validate("boundary", code=one.code)               # 30 Nov, 23:59:58 UTC
            assert (first.allow, first.entries_left) == (True, 9)
            now[0] = at("2026-12-01T00:00:03")                                    # the next month's partition
            again = await gate.validate("boundary", code=one.code)               # the same request, retried
            assert (again.allow, again.entries_left) == (True, 9)
            assert (await gate.validate(rid(), code=two.code)).allow
            assert (await gate.validate(rid(), code=one.code)).entries_left == 8
            now[0] = at("2031-06-01T10:00:00")                                    # a clock far ahead: DEFAULT
            assert (await gate.validate(rid(), code=two.code)).reason == "EXPIRED"
        finally:
            await gate.close()
        assert park.sql("SELECT entries_used FROM tickets WHERE id = %s", one.id) == [(2,)]
        assert park.sql("SELECT count(*) FROM validations WHERE request_id = 'boundary'") == [(1,)]
        assert partition_of(module_dsn, "validations", "park_id = %s", PARK) == [
            ("validations_default", 1), ("validations_p20261101", 1), ("validations_p20261201", 2)]

        reports = reports_pb2_grpc.ReportsStub(park.admin.channel)

        async def entries(first: tuple[int, int, int], last: tuple[int, int, int]) -> reports_pb2.ReportResponse:
            return await reports.EntriesReport(reports_pb2.ReportRequest(
                park_id=PARK, date=common_pb2.Date(year=first[0], month=first[1], day=first[2]),
                until=common_pb2.Date(year=last[0], month=last[1], day=last[2]),
                breakdowns=[reports_pb2.BY_DAY]), metadata=md)

        both = await entries((2026, 11, 30), (2026, 12, 1))  # two partitions, one report
        assert both.total.count == 3 and both.total.persons == 3
        assert [(r.key, r.count) for r in both.breakdowns[0].rows] == [("2026-11-30", 1), ("2026-12-01", 2)]

        # maintenance on 15 Jan 2027 keeping 30 days: November is dropped, later months made ahead
        keeper = server.server.partitions
        assert keeper.settings.retention_days == 400
        keeper.settings = keeper.settings.model_copy(update={"retention_days": 30})
        done = await keeper.maintain(now=datetime(2027, 1, 15, tzinfo=UTC))
        assert "validations_p20261101" in done.dropped and "command_acks_p20261101" in done.dropped
        assert "validations_p20261201" not in done.dropped
        assert {"validations_p20270301", "command_acks_p20270301"} <= set(done.created)
        after = await entries((2026, 11, 30), (2026, 12, 1))
        assert after.total.count == 2
        assert [(r.key, r.count) for r in after.breakdowns[0].rows] == [("2026-11-30", 0), ("2026-12-01", 2)]

        # when time reaches the far-off decision, its month gets a partition and the row moves into it
        done = await keeper.maintain(now=datetime(2031, 6, 2, tzinfo=UTC))
        assert "validations_p20310601" in done.created
        assert partition_of(module_dsn, "validations", "park_id = %s", PARK) == [("validations_p20310601", 1)]
        assert done.purged == 0 and "validations_p20261201" in done.dropped
        far = await entries((2031, 6, 1), (2031, 6, 1))
        assert (far.total.count, far.total.refused) == (0, 1)
    finally:
        await stop_server(server)


@pytest.mark.parametrize("interval", ["day", "month"])
def test_partition_ranges(interval: str) -> None:
    from parkgate.server.domain import partitions as rules

    want = rules.wanted(datetime(2026, 12, 31, 23, tzinfo=UTC), interval, 2)  # type: ignore[arg-type]
    assert [b.suffix() for b in want] == (["20261231", "20270101", "20270102"] if interval == "day"
                                         else ["20261201", "20270101", "20270201"])
    existing = rules.wanted(datetime(2026, 12, 1, tzinfo=UTC), "month", 0)
    assert all(not b.overlaps(existing[0]) for b in rules.missing(want, existing))


def partitions_named(dsn: str, prefix: str) -> list[str]:
    with psycopg.connect(dsn, autocommit=True) as conn:
        return [r[0] for r in conn.execute(
            "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
            "WHERE c.relname LIKE %s ORDER BY 1", (prefix + "%",)).fetchall()]


async def test_a_busy_table_delays_maintenance_and_never_half_does_it(fresh_database: Callable[[str], str]) -> None:
    """Maintenance waits at most half a second per lock (the gates must not queue behind it): a table held
    for a moment is waited out within the round; one held longer leaves the round undone as a whole."""
    dsn = fresh_database("busy")
    server = await start_server(dsn)
    try:
        keeper = server.server.partitions
        await a_round_of_ours(keeper)
        far = datetime(2030, 3, 15, tzinfo=UTC)  # months with no partition yet

        async def held_for(seconds: float) -> asyncio.Task[None]:
            taken = threading.Event()

            def hold() -> None:
                with psycopg.connect(dsn) as conn:
                    conn.execute("LOCK TABLE validations IN ACCESS EXCLUSIVE MODE")
                    taken.set()
                    time.sleep(seconds)

            holder = asyncio.create_task(asyncio.to_thread(hold))
            assert await asyncio.to_thread(taken.wait, 10)
            return holder

        holder = await held_for(8.0)  # longer than all the tries of one round
        with pytest.raises(LockBusy):
            await keeper.maintain(now=far)
        await holder
        assert partitions_named(dsn, "validations_p2030") == []

        holder = await held_for(1.0)  # a moment: the round tries again and does everything
        done = await keeper.maintain(now=far)
        await holder
        assert "validations_p20300301" in done.created
        assert "validations_p20300301" in partitions_named(dsn, "validations_p2030")
    finally:
        await stop_server(server)
