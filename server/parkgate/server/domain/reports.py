"""Reports as rules (S28): which days a period covers in a park's zone, what a report may be broken down by,
and how the rows the store summed become a complete, ordered table.

Pure Python: the store sums in SQL (one GROUP BY per breakdown, over the
park-local key this module names); this module decides the period, checks the
breakdowns, fills the days and hours nobody sold or entered on (a chart of
"revenue per day" must show the empty Tuesday), and orders the rows.
"""

from __future__ import annotations

import calendar
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, time, timedelta
from typing import Literal
from zoneinfo import ZoneInfo

from .errors import InvalidArgument

PeriodKind = Literal["day", "week", "month", "quarter", "year"]
ReportKind = Literal["sales", "entries", "refunds"]
Dimension = Literal["product", "window", "gate", "payment", "operator", "hour", "park", "site", "day", "reason",
                    "direction"]

#: A custom range longer than this is refused: a typo of 2062 for 2026 would scan forty years.
MAX_RANGE_DAYS = 3 * 366 + 1

#: What each report can be broken down by; the store knows the SQL key of each.
DIMENSIONS: dict[ReportKind, tuple[Dimension, ...]] = {
    "sales": ("product", "payment", "operator", "window", "site", "park", "day", "hour"),
    "entries": ("gate", "site", "park", "product", "direction", "reason", "day", "hour"),
    "refunds": ("reason", "product", "operator", "window", "site", "park", "day", "hour"),
}


@dataclass(frozen=True, slots=True)
class Span:
    """The days a report covers, in the park's zone, and the instants they start and end at (UTC)."""

    first_day: date
    last_day: date            # included
    zone: str
    start: datetime           # the park's midnight starting first_day
    end: datetime             # the park's midnight after last_day (exclusive)

    @property
    def days(self) -> list[date]:
        return [self.first_day + timedelta(days=i) for i in range((self.last_day - self.first_day).days + 1)]


def _midnight(day: date, zone: ZoneInfo) -> datetime:
    # A zone whose clocks jump at midnight has no 00:00 that day; zoneinfo then picks the instant after the jump,
    # which is where that local day really begins.
    return datetime.combine(day, time(0), zone).astimezone(UTC)


def period_days(kind: PeriodKind, day: date) -> tuple[date, date]:
    """The first and last day of the day, ISO week (Monday to Sunday), month, quarter or year holding ``day``."""
    if kind == "day":
        return day, day
    if kind == "week":
        first = day - timedelta(days=day.weekday())
        return first, first + timedelta(days=6)
    if kind == "month":
        return day.replace(day=1), day.replace(day=calendar.monthrange(day.year, day.month)[1])
    if kind == "quarter":
        q_first = 3 * ((day.month - 1) // 3) + 1
        last_month = q_first + 2
        return date(day.year, q_first, 1), date(day.year, last_month, calendar.monthrange(day.year, last_month)[1])
    if kind == "year":
        return date(day.year, 1, 1), date(day.year, 12, 31)
    raise InvalidArgument(f"period {kind!r}: one of day, week, month, quarter, year, or a FROM..UNTIL range")


def span(zone_name: str, *, kind: PeriodKind | None, day: date, until: date | None = None) -> Span:
    """The report's span: a named period around ``day``, or ``day .. until`` (both included) when ``until`` is set."""
    zone = ZoneInfo(zone_name)
    if until is not None:
        first, last = day, until
        if last < first:
            raise InvalidArgument(f"the range ends ({last}) before it starts ({first})")
        if (last - first).days + 1 > MAX_RANGE_DAYS:
            raise InvalidArgument(f"a report covers at most {MAX_RANGE_DAYS} days; {first}..{last} is longer")
    else:
        first, last = period_days(kind or "day", day)
    return Span(first, last, zone_name, _midnight(first, zone), _midnight(last + timedelta(days=1), zone))


def check_dimensions(report: ReportKind, wanted: Iterable[str]) -> list[Dimension]:
    """The breakdowns asked for, each once, in the order asked; a dimension this report has not is refused."""
    allowed = DIMENSIONS[report]
    out: list[Dimension] = []
    for name in wanted:
        if name not in allowed:
            raise InvalidArgument(f"a {report} report is broken down by {', '.join(allowed)}; not by {name!r}")
        if name not in out:
            out.append(name)  # type: ignore[arg-type]
    return out


@dataclass(frozen=True, slots=True)
class Line:
    """One row of a report: a key and every measure (the contract's ReportRow says what each means per report)."""

    key: str
    label: str = ""
    count: int = 0
    amount: int = 0
    orders: int = 0
    deposits: int = 0
    persons: int = 0
    exits: int = 0
    refused: int = 0
    refunded: int = 0
    deposits_returned: int = 0
    tickets: int = 0


def complete(dimension: Dimension, lines: Sequence[Line], period: Span) -> list[Line]:
    """Every day of the period (``day``) or every hour 00..23 (``hour``), zero where nothing happened, in order;
    other breakdowns by their amount then count (largest first), then key."""
    if dimension == "day":
        have = {line.key: line for line in lines}
        return [have.get(d.isoformat(), Line(d.isoformat())) for d in period.days]
    if dimension == "hour":
        have = {line.key: line for line in lines}
        return [have.get(f"{h:02d}", Line(f"{h:02d}")) for h in range(24)]
    return sorted(lines, key=lambda line: (-line.amount, -line.count, -line.persons, line.key))


def with_refunds(total: Line, refunded: int, deposits_returned: int) -> Line:
    """A sales total with what the period paid back: the net takings are amount - refunded - deposits_returned."""
    return replace(total, refunded=refunded, deposits_returned=deposits_returned)


@dataclass(frozen=True, slots=True)
class Report:
    """A finished report: its span, its total, one table per breakdown, and where it was read."""

    kind: ReportKind
    period: Span
    currency: str
    total: Line
    breakdowns: list[tuple[Dimension, list[Line]]]
    source: str
