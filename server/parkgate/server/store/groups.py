"""SQL of group reservations (S16) and back-entries (S19)."""

from __future__ import annotations

from datetime import date, datetime

from psycopg.types.json import Jsonb

from .database import Connection
from .fetch import fetch_all, fetch_one
from .rows.catalogue import BackEntryRow, GroupRow

_GROUP = """g.id::text AS id, g.request_id, g.company, g.contact, g.park_id, g.visit_date, g.head_count, g.lines,
    g.deposit, g.state, coalesce(g.order_id::text, '') AS order_id, g.arrived, pk.currency"""
_GROUP_FROM = "FROM group_reservations g JOIN parks pk ON pk.id = g.park_id"


async def insert_group(conn: Connection, *, request_id: str, company: str, contact: str, park_id: str,
                       visit_date: date, head_count: int, lines: list[dict], deposit: int,
                       deposit_order: str | None, operator: str) -> str | None:
    cur = await conn.execute(
        """INSERT INTO group_reservations (request_id, company, contact, park_id, visit_date, head_count, lines,
                                           deposit, deposit_order, operator)
           VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)
           ON CONFLICT (request_id) DO NOTHING RETURNING id::text""",
        (request_id, company, contact, park_id, visit_date, head_count, Jsonb(lines), deposit, deposit_order,
         operator),
    )
    row = await cur.fetchone()
    return row["id"] if row else None


async def group_by_request(conn: Connection, request_id: str) -> GroupRow | None:
    return await fetch_one(conn, GroupRow, f"SELECT {_GROUP} {_GROUP_FROM} WHERE g.request_id = %s", (request_id,))


async def get_group(conn: Connection, group_id: str, *, for_update: bool = False) -> GroupRow | None:
    lock = "FOR UPDATE OF g" if for_update else ""
    return await fetch_one(conn, GroupRow, f"SELECT {_GROUP} {_GROUP_FROM} WHERE g.id = %s {lock}", (group_id,))


async def find_groups(conn: Connection, *, visit_date: date | None, company: str, limit: int) -> list[GroupRow]:
    return await fetch_all(
        conn, GroupRow,
        f"""SELECT {_GROUP} {_GROUP_FROM}
            WHERE (%(day)s::date IS NULL OR g.visit_date = %(day)s)
              AND (%(company)s = '' OR lower(g.company) LIKE '%%' || lower(%(company)s) || '%%')
            ORDER BY g.visit_date, g.company LIMIT %(limit)s""",
        {"day": visit_date, "company": company, "limit": limit},
    )


async def update_group(conn: Connection, group_id: str, *, head_count: int, visit_date: date, lines: list[dict],
                       state: str, order_id: str | None = None, arrived: int = 0) -> None:
    await conn.execute(
        """UPDATE group_reservations SET head_count = %s, visit_date = %s, lines = %s, state = %s,
               order_id = coalesce(%s::uuid, order_id), arrived = %s WHERE id = %s""",
        (head_count, visit_date, Jsonb(lines), state, order_id, arrived, group_id),
    )


# --- back-entry (S19) ---------------------------------------------------------------------------

_BACK = """e.id::text AS id, o.request_id, e.order_id::text AS order_id, e.product_id, e.sold_at, e.quantity, e.method,
    e.customer, e.note, e.entries_by_hand, e.entries_recorded, e.device_id, e.operator, e.entered_at, o.total,
    o.currency"""


async def backdate_order(conn: Connection, order_id: str, sold_at: datetime) -> None:
    """A back-entered sale counts on the day it was made, in every report."""
    await conn.execute("UPDATE orders SET created_at = %s, back_entered = true WHERE id = %s", (sold_at, order_id))


async def record_hand_entries(conn: Connection, *, device_id: str, request_ids: list[str], at: datetime,
                              park_id: str, ticket_ids: list[str | None]) -> int:
    """Entries checked by hand, as the gate's own decisions: a (device, request id) the gate already forwarded
    (or forwards later) is the same entry, so it is counted once. Returns how many were new."""
    # validations is partitioned by time (0008), so no unique key spans (device, request id): like the gate
    # pipeline, whoever records a decision of this park holds the park's row first, then looks for the request.
    await conn.execute("SELECT 1 FROM park_state WHERE park_id = %s FOR UPDATE", (park_id,))
    cur = await conn.execute(
        """INSERT INTO validations (device_id, request_id, at, ticket_id, park_id, direction, allow, reason, persons,
                                    counted, back_entered)
           SELECT %s, x.request, %s, x.ticket, %s, 'in', true, 'OK', 1, true, true
           FROM unnest(%s::text[], %s::uuid[]) AS x(request, ticket)
           WHERE NOT EXISTS (SELECT 1 FROM validations v WHERE v.device_id = %s AND v.request_id = x.request)""",
        (device_id, at, park_id, request_ids, ticket_ids, device_id),
    )
    return cur.rowcount


async def insert_back_entry(conn: Connection, *, order_id: str, product_id: str, sold_at: datetime, quantity: int,
                            method: str, customer: str, note: str, entries_by_hand: int, entries_recorded: int,
                            device_id: str, operator: str) -> None:
    await conn.execute(
        """INSERT INTO back_entries (order_id, product_id, sold_at, quantity, method, customer, note, entries_by_hand,
                                     entries_recorded, device_id, operator)
           VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)""",
        (order_id, product_id, sold_at, quantity, method, customer, note, entries_by_hand, entries_recorded,
         device_id, operator),
    )


async def back_entry_of_order(conn: Connection, order_id: str) -> BackEntryRow | None:
    return await fetch_one(conn, BackEntryRow, f"SELECT {_BACK} FROM back_entries e JOIN orders o ON o.id = e.order_id "
                           "WHERE e.order_id = %s", (order_id,))


async def list_back_entries(conn: Connection, *, start: datetime | None, end: datetime | None,
                            limit: int) -> list[BackEntryRow]:
    return await fetch_all(
        conn, BackEntryRow,
        f"""SELECT {_BACK} FROM back_entries e JOIN orders o ON o.id = e.order_id
            WHERE (%(start)s::timestamptz IS NULL OR e.sold_at >= %(start)s)
              AND (%(end)s::timestamptz IS NULL OR e.sold_at < %(end)s)
            ORDER BY e.sold_at LIMIT %(limit)s""",
        {"start": start, "end": end, "limit": limit},
    )
