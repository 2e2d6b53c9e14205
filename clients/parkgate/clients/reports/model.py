"""A report as the console shows, exports and draws it: named columns of plain numbers, from the contract's message.

One place decides which measures each report has and what they are called,
so the table, the CSV, the workbook and the charts always agree.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from typing import Literal

from parkgate.v1 import common_pb2, reports_pb2

from ..money import decimals

Kind = Literal["sales", "entries", "refunds"]

#: --by names -> the contract's GroupBy, per report (what the server accepts for it).
DIMENSIONS: dict[str, int] = {
    "product": reports_pb2.BY_PRODUCT, "window": reports_pb2.BY_WINDOW, "gate": reports_pb2.BY_GATE,
    "payment": reports_pb2.BY_PAYMENT_METHOD, "operator": reports_pb2.BY_OPERATOR, "hour": reports_pb2.BY_HOUR,
    "park": reports_pb2.BY_PARK, "site": reports_pb2.BY_SITE, "day": reports_pb2.BY_DAY,
    "reason": reports_pb2.BY_REASON, "direction": reports_pb2.BY_DIRECTION,
}
DIMENSION_NAMES = {number: name for name, number in DIMENSIONS.items()}

#: (column title, ReportRow field, money?) per report; a breakdown by payment counts payments, not tickets.
COLUMNS: dict[Kind, list[tuple[str, str, bool]]] = {
    "sales": [("tickets", "count", False), ("orders", "orders", False), ("takings", "amount", True),
              ("deposits", "deposits", True)],
    "entries": [("admissions", "count", False), ("persons in", "persons", False), ("persons out", "exits", False),
                ("refused", "refused", False)],
    "refunds": [("refunds", "count", False), ("tickets", "tickets", False), ("refunded", "amount", True),
                ("deposits returned", "deposits_returned", True)],
}
PAYMENT_COLUMNS = [("payments", "count", False), ("orders", "orders", False), ("amount", "amount", True)]
SALES_TOTAL_EXTRA = [("refunded", "refunded", True), ("deposits returned", "deposits_returned", True)]


@dataclass(frozen=True, slots=True)
class Table:
    """One breakdown (or the totals): a title, column titles, and rows of key, label and numbers."""

    title: str
    dimension: str
    columns: list[str]
    money: list[bool]
    rows: list[tuple[str, str, list[float | int]]]


@dataclass(frozen=True, slots=True)
class Report:
    kind: Kind
    park: str
    first_day: date
    last_day: date
    time_zone: str
    currency: str
    source: str
    total: Table
    tables: list[Table]

    def table(self, dimension: str) -> Table | None:
        return next((t for t in self.tables if t.dimension == dimension), None)

    @property
    def period(self) -> str:
        return (self.first_day.isoformat() if self.first_day == self.last_day
                else f"{self.first_day.isoformat()} .. {self.last_day.isoformat()}")


def _value(row: reports_pb2.ReportRow, field: str, money: bool) -> float | int:
    value = getattr(row, field)
    if money:  # major units (yuan, euro) for people and spreadsheets; exact in the minor unit
        return value.minor_units / 10 ** decimals(value.currency or "CNY")
    return int(value)


def _table(kind: Kind, title: str, dimension: str, rows: list[reports_pb2.ReportRow],
           columns: list[tuple[str, str, bool]]) -> Table:
    return Table(title, dimension, [c[0] for c in columns], [c[2] for c in columns],
                 [(r.key, r.label, [_value(r, f, m) for _, f, m in columns]) for r in rows])


def _date(d: common_pb2.Date) -> date:
    return date(d.year, d.month, d.day)


def from_message(kind: Kind, park: str, msg: reports_pb2.ReportResponse) -> Report:
    total_columns = COLUMNS[kind] + (SALES_TOTAL_EXTRA if kind == "sales" else [])
    total = _table(kind, "Total", "total", [msg.total], total_columns)
    tables = []
    for b in msg.breakdowns:
        name = DIMENSION_NAMES.get(b.by, str(b.by))
        columns = PAYMENT_COLUMNS if (kind == "sales" and name == "payment") else COLUMNS[kind]
        tables.append(_table(kind, f"{kind.capitalize()} by {name}", name, list(b.rows), columns))
    return Report(kind, park or "all parks", _date(msg.first_day), _date(msg.last_day), msg.time_zone,
                  msg.total.amount.currency or "", msg.source, total, tables)
