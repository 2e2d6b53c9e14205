"""SQL of the reports (S28): one GROUP BY per breakdown over orders, payments, tickets, refunds and validations.

Every query is read-only and bounded by the report's instants (``start`` <=
time < ``end``, both UTC), so it uses the time indexes (orders_created,
refunds_at, and validations' partitions: a report of one month reads that
month's partitions only). Days and hours are the park's: the keys are taken
``AT TIME ZONE`` the zone the caller names.

The dimension -> SQL key tables below are the only place a dimension name
meets SQL; a name outside them never reaches a query.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from psycopg import sql

from parkgate.server.domain.reports import Dimension, Line, ReportKind

from .database import Connection
from .fetch import fetch_all, fetch_one


@dataclass(frozen=True, slots=True)
class Scope:
    """What a report reads: a park (or every park: ''), the instants, the zone its days and hours are in."""

    park_id: str
    start: datetime
    end: datetime
    zone: str

    def params(self) -> dict[str, object]:
        return {"park": self.park_id, "start": self.start, "end": self.end, "tz": self.zone}


def _local(column: str, fmt: str) -> str:
    return f"to_char({column} AT TIME ZONE %(tz)s, '{fmt}')"


# --- sales: one row per ticket sold in the period ------------------------------------------------

_SALES_KEYS: dict[str, tuple[str, str]] = {  # dimension -> (key, label)
    "product": ("f.product_id", "max(f.product_name)"),
    "window": ("f.window_device_id", "''"),
    "operator": ("f.operator", "''"),
    "site": ("f.site", "''"),
    "park": ("f.park_id", "max(f.park_name)"),
    "day": (_local("f.created_at", "YYYY-MM-DD"), "''"),
    "hour": (_local("f.created_at", "HH24"), "''"),
}

_SOLD = """SELECT t.park_id, pk.name AS park_name, t.product_id, t.price, t.deposit, o.id AS order_id,
                  o.window_device_id, o.operator, o.created_at, coalesce(d.site, '') AS site,
                  (SELECT v.name FROM product_versions v
                    WHERE v.product_id = t.product_id AND v.version = t.product_version) AS product_name
           FROM orders o JOIN tickets t ON t.order_id = o.id JOIN parks pk ON pk.id = t.park_id
           LEFT JOIN devices d ON d.id = o.window_device_id
           WHERE o.created_at >= %(start)s AND o.created_at < %(end)s AND (%(park)s = '' OR t.park_id = %(park)s)"""

_SALES_MEASURES = """count(*) AS count, coalesce(sum(f.price + f.deposit), 0)::bigint AS amount,
    count(DISTINCT f.order_id) AS orders, coalesce(sum(f.deposit), 0)::bigint AS deposits,
    count(*) AS tickets"""


async def _payments_by_method(conn: Connection, scope: Scope) -> list[Line]:
    # Payments belong to orders, not tickets: an order is in a park's report when it holds a ticket of the park.
    return await fetch_all(conn, Line, """
        SELECT p.method AS key, count(*) AS count, coalesce(sum(p.amount), 0)::bigint AS amount,
               count(DISTINCT o.id) AS orders
        FROM payments p JOIN orders o ON o.id = p.order_id
        WHERE o.created_at >= %(start)s AND o.created_at < %(end)s
          AND (%(park)s = '' OR EXISTS (SELECT 1 FROM tickets t WHERE t.order_id = o.id AND t.park_id = %(park)s))
        GROUP BY p.method""", scope.params())


# --- refunds: one row per ticket refunded in the period ------------------------------------------

_REFUND_KEYS: dict[str, tuple[str, str]] = {
    "reason": ("f.reason_id", "max(f.reason_label)"),
    "product": ("f.product_id", "max(f.product_name)"),
    "operator": ("f.operator", "''"),
    "window": ("f.window_device_id", "''"),
    "site": ("f.site", "''"),
    "park": ("f.park_id", "max(f.park_name)"),
    "day": (_local("f.at", "YYYY-MM-DD"), "''"),
    "hour": (_local("f.at", "HH24"), "''"),
}

_REFUNDED = """SELECT r.id AS refund_id, r.reason_id, rr.label AS reason_label, r.operator,
                      coalesce(r.window_device_id, '') AS window_device_id, coalesce(d.site, '') AS site, r.at,
                      t.park_id, pk.name AS park_name, t.product_id, rt.amount, rt.deposit,
                      (SELECT v.name FROM product_versions v
                        WHERE v.product_id = t.product_id AND v.version = t.product_version) AS product_name
               FROM refunds r JOIN refund_tickets rt ON rt.refund_id = r.id JOIN tickets t ON t.id = rt.ticket_id
               JOIN parks pk ON pk.id = t.park_id JOIN refund_reasons rr ON rr.id = r.reason_id
               LEFT JOIN devices d ON d.id = r.window_device_id
               WHERE r.at >= %(start)s AND r.at < %(end)s AND (%(park)s = '' OR t.park_id = %(park)s)"""

_REFUND_MEASURES = """count(DISTINCT f.refund_id) AS count, coalesce(sum(f.amount), 0)::bigint AS amount,
    coalesce(sum(f.amount), 0)::bigint AS refunded, coalesce(sum(f.deposit), 0)::bigint AS deposits_returned,
    count(*) AS tickets"""


# --- entries: one row per gate decision in the period --------------------------------------------

_ENTRY_KEYS: dict[str, tuple[str, str]] = {
    "gate": ("f.device_id", "''"),
    "site": ("f.site", "''"),
    "park": ("f.park_id", "max(f.park_name)"),
    "product": ("coalesce(f.product_id, '')", "max(f.product_name)"),
    "direction": ("f.direction", "''"),
    "reason": ("f.reason", "''"),
    "day": (_local("f.at", "YYYY-MM-DD"), "''"),
    "hour": (_local("f.at", "HH24"), "''"),
}

# The partition key (at) bounds the scan: only the partitions of the period are read.
_DECIDED = """SELECT v.device_id, v.park_id, pk.name AS park_name, v.direction, v.allow, v.reason, v.persons,
                     v.annulled_at, v.at, coalesce(d.site, '') AS site, t.product_id,
                     (SELECT pv.name FROM product_versions pv
                       WHERE pv.product_id = t.product_id AND pv.version = t.product_version) AS product_name
              FROM validations v JOIN parks pk ON pk.id = v.park_id
              LEFT JOIN devices d ON d.id = v.device_id LEFT JOIN tickets t ON t.id = v.ticket_id
              WHERE v.at >= %(start)s AND v.at < %(end)s AND (%(park)s = '' OR v.park_id = %(park)s)"""

_ENTRY_MEASURES = """
    count(*) FILTER (WHERE f.allow AND f.direction = 'in' AND f.annulled_at IS NULL) AS count,
    coalesce(sum(f.persons) FILTER (WHERE f.allow AND f.direction = 'in' AND f.annulled_at IS NULL), 0)::bigint
        AS persons,
    coalesce(sum(f.persons) FILTER (WHERE f.allow AND f.direction = 'out'), 0)::bigint AS exits,
    count(*) FILTER (WHERE NOT f.allow) AS refused"""


# --- one total, one GROUP BY per breakdown, the same way for each report ----------------------------

@dataclass(frozen=True, slots=True)
class _Facts:
    rows: str                          # one row per fact (ticket sold, ticket refunded, decision) in the scope
    measures: str
    keys: dict[str, tuple[str, str]]   # dimension -> (key, label)


_FACTS: dict[ReportKind, _Facts] = {
    "sales": _Facts(_SOLD, _SALES_MEASURES, _SALES_KEYS),
    "refunds": _Facts(_REFUNDED, _REFUND_MEASURES, _REFUND_KEYS),
    "entries": _Facts(_DECIDED, _ENTRY_MEASURES, _ENTRY_KEYS),
}


async def total(conn: Connection, kind: ReportKind, scope: Scope) -> Line:
    facts = _FACTS[kind]
    row = await fetch_one(conn, Line, f"SELECT '' AS key, {facts.measures} FROM ({facts.rows}) f", scope.params())
    assert row is not None
    return row


async def breakdown(conn: Connection, kind: ReportKind, scope: Scope, dimension: Dimension) -> list[Line]:
    if kind == "sales" and dimension == "payment":
        return await _payments_by_method(conn, scope)
    facts = _FACTS[kind]
    key, label = facts.keys[dimension]
    return await fetch_all(conn, Line, f"""SELECT {key} AS key, {label} AS label, {facts.measures}
                                           FROM ({facts.rows}) f GROUP BY 1""", scope.params())


# --- what a report needs to know about its parks -------------------------------------------------

@dataclass(frozen=True, slots=True)
class ParkZone:
    id: str
    time_zone: str
    currency: str


async def park_zones(conn: Connection, park_id: str) -> list[ParkZone]:
    return await fetch_all(
        conn, ParkZone,
        "SELECT id, time_zone, currency FROM parks WHERE %(park)s = '' OR id = %(park)s ORDER BY id",
        {"park": park_id},
    )


async def set_read_only(conn: Connection, statement_timeout_ms: int) -> None:
    """A report's transaction: read-only (a report never writes), and cut off after the timeout."""
    await conn.execute("SET TRANSACTION READ ONLY")
    await conn.execute(sql.SQL("SET LOCAL statement_timeout = {}").format(sql.Literal(statement_timeout_ms)))


async def in_recovery(conn: Connection) -> bool:
    row = await (await conn.execute("SELECT pg_is_in_recovery() AS r")).fetchone()
    return bool(row and row["r"])
