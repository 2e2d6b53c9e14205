"""Sales, entries and refunds reports (S28), read where they never slow the gates.

A report is: the park's zone and currency (a report of every park needs them
to agree), the span of days in that zone (:mod:`parkgate.server.domain.reports`),
one total and one GROUP BY per breakdown, all in one read-only transaction on
the reports' own pool (:class:`~parkgate.server.store.report_reader.ReportReader`),
so the total and its breakdowns are one consistent snapshot and add up.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, date, datetime
from zoneinfo import ZoneInfo

from parkgate.server.domain import reports as rules
from parkgate.server.domain.errors import InvalidArgument, NotFound, Reason
from parkgate.server.domain.reports import PeriodKind, Report, ReportKind
from parkgate.server.store import reports as store
from parkgate.server.store.database import Connection
from parkgate.server.store.report_reader import ReportReader


class ReportService:
    def __init__(self, reader: ReportReader) -> None:
        self.reader = reader

    async def report(self, kind: ReportKind, *, park_id: str, period: PeriodKind | None, day: date | None,
                     until: date | None, by: Sequence[str]) -> Report:
        dimensions = rules.check_dimensions(kind, by)

        async def work(conn: Connection) -> Report:
            zone, currency = await self._zone_and_currency(conn, park_id)
            today = day or _today(zone)
            span = rules.span(zone, kind=period, day=today, until=until)
            scope = store.Scope(park_id, span.start, span.end, zone)
            total = await store.total(conn, kind, scope)
            if kind == "sales":  # what the period paid back, so the total shows the net takings too
                back = await store.total(conn, "refunds", scope)
                total = rules.with_refunds(total, back.refunded, back.deposits_returned)
            tables = [(d, rules.complete(d, await store.breakdown(conn, kind, scope, d), span)) for d in dimensions]
            return Report(kind, span, currency, total, tables, source="")

        report, source = await self.reader.read(work)
        return Report(report.kind, report.period, report.currency, report.total, report.breakdowns, source)

    @staticmethod
    async def _zone_and_currency(conn: Connection, park_id: str) -> tuple[str, str]:
        parks = await store.park_zones(conn, park_id)
        if not parks:
            if park_id:
                raise NotFound(f"no park {park_id!r}", Reason.UNKNOWN_PARK)
            raise InvalidArgument("there is no park yet to report on", Reason.UNKNOWN_PARK)
        zones = {p.time_zone for p in parks}
        currencies = {p.currency for p in parks}
        if len(zones) > 1 or len(currencies) > 1:
            raise InvalidArgument(f"the parks keep different time zones or currencies ({', '.join(sorted(zones))}; "
                                  f"{', '.join(sorted(currencies))}): name one park (--park)")
        return zones.pop(), currencies.pop()


def _today(zone: str) -> date:
    return datetime.now(UTC).astimezone(ZoneInfo(zone)).date()
