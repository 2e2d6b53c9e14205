"""SQL for signing keys, orders, tickets, card bindings, refund reasons and refunds."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from psycopg.types.json import Jsonb

from parkgate.server.domain.sales import PaymentIn

from .database import Connection
from .fetch import fetch_all, fetch_one, params_of
from .rows.sales import (
    MethodTotal,
    NewOrder,
    NewRefund,
    NewTicket,
    Order,
    Payment,
    PublicKey,
    Refund,
    RefundLine,
    RefundReason,
    ShiftTotals,
    SigningKeyRow,
    Ticket,
)

# --- signing keys -------------------------------------------------------------


async def active_signing_key(conn: Connection) -> SigningKeyRow | None:
    return await fetch_one(conn, SigningKeyRow,
                           "SELECT key_id, seed, public_key FROM signing_keys WHERE state = 'active' AND site = ''")


async def add_signing_key(conn: Connection, key_id: int, seed: bytes, public_key: bytes) -> bool:
    """Insert an active key unless one exists already (servers race for it at first start)."""
    cur = await conn.execute(
        """INSERT INTO signing_keys (key_id, seed, public_key) VALUES (%s, %s, %s)
           ON CONFLICT DO NOTHING""",
        (key_id, seed, public_key),
    )
    return cur.rowcount > 0


async def public_keys(conn: Connection) -> list[PublicKey]:
    """Every key's public half and state: what gates verify codes with."""
    return await fetch_all(conn, PublicKey, "SELECT key_id, public_key, state FROM signing_keys ORDER BY key_id")


async def highest_key_id(conn: Connection) -> int:
    """The largest key id ever used (0 when there is no key yet)."""
    row = await (await conn.execute("SELECT coalesce(max(key_id), 0) AS key_id FROM signing_keys")).fetchone()
    return int(row["key_id"]) if row else 0


# --- orders -----------------------------------------------------------------------

_ORDER = """o.id::text AS id, o.request_id, o.request_hash, o.kind, o.currency, o.total, o.window_device_id,
    o.operator, o.customer, o.created_at"""


async def order_by_request(conn: Connection, request_id: str) -> Order | None:
    return await fetch_one(conn, Order, f"SELECT {_ORDER} FROM orders o WHERE o.request_id = %s", (request_id,))


async def get_order(conn: Connection, order_id: str) -> Order | None:
    return await fetch_one(conn, Order, f"SELECT {_ORDER} FROM orders o WHERE o.id = %s", (order_id,))


async def insert_order(conn: Connection, order: NewOrder) -> str | None:
    """Insert the order; None when another call with the same request id got there first.

    ON CONFLICT DO NOTHING waits for that other transaction: when it returns
    None the first order is committed and can be read.
    """
    cur = await conn.execute(
        """INSERT INTO orders (request_id, request_hash, kind, currency, total, window_device_id, operator_id,
                               operator, customer)
           VALUES (%(request_id)s, %(request_hash)s, %(kind)s, %(currency)s, %(total)s, %(window_device_id)s,
                   %(operator_id)s, %(operator)s, %(customer)s)
           ON CONFLICT (request_id) DO NOTHING
           RETURNING id::text""",
        params_of(order),
    )
    row = await cur.fetchone()
    return row["id"] if row else None


async def insert_payments(conn: Connection, order_id: str, payments: Sequence[PaymentIn]) -> None:
    async with conn.cursor() as cur:
        await cur.executemany(
            "INSERT INTO payments (order_id, position, method, amount, reference) VALUES (%s, %s, %s, %s, %s)",
            [(order_id, i, p.method, p.amount, p.reference) for i, p in enumerate(payments)],
        )


async def payments_of(conn: Connection, order_id: str) -> list[Payment]:
    return await fetch_all(
        conn, Payment, "SELECT method, amount, reference FROM payments WHERE order_id = %s ORDER BY position",
        (order_id,),
    )


async def next_serials(conn: Connection, count: int) -> list[int]:
    cur = await conn.execute("SELECT nextval('ticket_serials') AS serial FROM generate_series(1, %s)", (count,))
    return [row["serial"] for row in await cur.fetchall()]


# --- tickets ----------------------------------------------------------------------

_TICKET_COLUMNS = (
    "serial", "order_id", "product_id", "product_version", "park_id", "key_id", "code", "card_uid", "price",
    "deposit", "visit_date", "valid_from", "valid_until", "valid_days", "persons", "entries_total",
    "entries_per_day", "reentry_allowed", "hold_for_check", "attraction_ids", "window_start", "window_end",
    "balance", "attraction_limits", "back_entered",
)

_TICKET = """t.id::text AS id, t.serial, t.order_id::text AS order_id, t.product_id, t.product_version, t.park_id,
    t.code, coalesce(t.card_uid, '') AS card_uid, t.price, t.deposit, t.visit_date, t.valid_from, t.valid_until,
    t.persons, t.entries_total, t.entries_per_day, t.entries_used, t.state, pk.currency,
    (SELECT name FROM product_versions v WHERE v.product_id = t.product_id AND v.version = t.product_version)
        AS product_name,
    (SELECT created_at FROM orders o WHERE o.id = t.order_id) AS sold_at"""


async def insert_tickets(conn: Connection, tickets: Sequence[NewTicket]) -> None:
    columns = ", ".join(_TICKET_COLUMNS)
    placeholders = ", ".join(f"coalesce(%({c})s, '{{}}'::jsonb)" if c == "attraction_limits" else f"%({c})s"
                             for c in _TICKET_COLUMNS)
    async with conn.cursor() as cur:
        await cur.executemany(f"INSERT INTO tickets ({columns}) VALUES ({placeholders})",
                              [_ticket_params(t) for t in tickets])


def _ticket_params(ticket: NewTicket) -> dict:
    params = params_of(ticket)
    params["attraction_limits"] = Jsonb(ticket.attraction_limits) if ticket.attraction_limits else None
    return params


async def bind_card(conn: Connection, card_uid: str, serial: int) -> bool:
    """Bind a card to the ticket with this serial; False when the card holds a live ticket.

    A binding is taken over only when its ticket is over: refunded, voided,
    expired, or with no entries left (a recycled single-use card, S21). Two
    sales of one card at once collide on the primary key, and the loser sees
    the winner's live ticket: exactly one wins.
    """
    cur = await conn.execute(
        """INSERT INTO card_bindings (card_uid, ticket_id)
           SELECT %(uid)s, id FROM tickets WHERE serial = %(serial)s
           ON CONFLICT (card_uid) DO UPDATE SET ticket_id = excluded.ticket_id, bound_at = now()
           WHERE EXISTS (SELECT 1 FROM tickets old WHERE old.id = card_bindings.ticket_id
                         AND (old.state <> 'valid' OR old.valid_until <= now()
                              OR (old.entries_total > 0 AND old.entries_used >= old.entries_total)))
           RETURNING card_uid""",
        {"uid": card_uid, "serial": serial},
    )
    return cur.rowcount == 1


async def release_cards(conn: Connection, ticket_ids: Sequence[str]) -> None:
    await conn.execute("DELETE FROM card_bindings WHERE ticket_id = ANY(%s::uuid[])", (list(ticket_ids),))


async def tickets_of_order(conn: Connection, order_id: str, *, for_update: bool = False) -> list[Ticket]:
    lock = "FOR UPDATE OF t" if for_update else ""
    return await fetch_all(
        conn, Ticket,
        f"""SELECT {_TICKET} FROM tickets t JOIN parks pk ON pk.id = t.park_id
            WHERE t.order_id = %s ORDER BY t.serial {lock}""",
        (order_id,),
    )


async def tickets_by_id(conn: Connection, ticket_ids: Sequence[str], *, for_update: bool = False) -> list[Ticket]:
    lock = "FOR UPDATE OF t" if for_update else ""
    return await fetch_all(
        conn, Ticket,
        f"""SELECT {_TICKET} FROM tickets t JOIN parks pk ON pk.id = t.park_id
            WHERE t.id = ANY(%s::uuid[]) ORDER BY t.serial {lock}""",
        (list(ticket_ids),),
    )


async def find_tickets(
    conn: Connection, *, code: str, serial: int, card_uid: str, order_id: str, ticket_id: str, limit: int,
    after_serial: int,
) -> list[Ticket]:
    """Tickets matching every given criterion (empty ones are ignored), by serial."""
    return await fetch_all(
        conn, Ticket,
        f"""SELECT {_TICKET} FROM tickets t JOIN parks pk ON pk.id = t.park_id
            WHERE (%(code)s = '' OR t.code = %(code)s)
              AND (%(serial)s = 0 OR t.serial = %(serial)s)
              AND (%(card)s = '' OR t.card_uid = %(card)s)
              AND (%(order)s = '' OR t.order_id = nullif(%(order)s, '')::uuid)
              AND (%(ticket)s = '' OR t.id = nullif(%(ticket)s, '')::uuid)
              AND t.serial > %(after)s
            ORDER BY t.serial LIMIT %(limit)s""",
        {"code": code, "serial": serial, "card": card_uid, "order": order_id, "ticket": ticket_id, "after": after_serial,
         "limit": limit},
    )


async def mark_refunded(conn: Connection, ticket_ids: Sequence[str]) -> None:
    await conn.execute(
        "UPDATE tickets SET state = 'refunded', state_changed_at = now() WHERE id = ANY(%s::uuid[])",
        (list(ticket_ids),),
    )


# --- refund reasons and refunds ----------------------------------------------------------


async def list_refund_reasons(conn: Connection) -> list[RefundReason]:
    return await fetch_all(conn, RefundReason,
                           "SELECT id, label, refund_percent, disabled FROM refund_reasons ORDER BY id")


async def get_refund_reason(conn: Connection, reason_id: str) -> RefundReason | None:
    return await fetch_one(
        conn, RefundReason, "SELECT id, label, refund_percent, disabled FROM refund_reasons WHERE id = %s",
        (reason_id,),
    )


async def put_refund_reason(conn: Connection, reason: RefundReason) -> RefundReason:
    row = await fetch_one(
        conn, RefundReason,
        """INSERT INTO refund_reasons (id, label, refund_percent, disabled)
           VALUES (%(id)s, %(label)s, %(refund_percent)s, %(disabled)s)
           ON CONFLICT (id) DO UPDATE SET label = excluded.label, refund_percent = excluded.refund_percent,
               disabled = excluded.disabled
           RETURNING id, label, refund_percent, disabled""",
        params_of(reason),
    )
    assert row is not None
    return row


_REFUND = """r.id::text AS id, r.request_id, r.request_hash, r.order_id::text AS order_id, r.reason_id, r.amount,
    r.deposit_refunded, r.note, r.operator, r.at, o.currency,
    ARRAY(SELECT rt.ticket_id::text FROM refund_tickets rt WHERE rt.refund_id = r.id ORDER BY rt.ticket_id)
        AS ticket_ids"""


async def refund_by_request(conn: Connection, request_id: str) -> Refund | None:
    return await fetch_one(
        conn, Refund, f"SELECT {_REFUND} FROM refunds r JOIN orders o ON o.id = r.order_id WHERE r.request_id = %s",
        (request_id,),
    )


async def refunded_so_far(conn: Connection, order_id: str) -> int:
    cur = await conn.execute("SELECT coalesce(sum(amount), 0) AS total FROM refunds WHERE order_id = %s",
                             (order_id,))
    row = await cur.fetchone()
    return int(row["total"]) if row else 0


async def insert_refund(conn: Connection, refund: NewRefund, lines: Sequence[RefundLine]) -> str | None:
    """Insert a refund and its tickets; None when the same request id was taken by a concurrent call."""
    cur = await conn.execute(
        """INSERT INTO refunds (request_id, request_hash, order_id, reason_id, amount, deposit_refunded, note,
                                operator_id, operator, window_device_id)
           VALUES (%(request_id)s, %(request_hash)s, %(order_id)s, %(reason_id)s, %(amount)s,
                   %(deposit_refunded)s, %(note)s, %(operator_id)s, %(operator)s, %(window_device_id)s)
           ON CONFLICT (request_id) DO NOTHING
           RETURNING id::text""",
        params_of(refund),
    )
    row = await cur.fetchone()
    if row is None:
        return None
    async with conn.cursor() as c:
        await c.executemany(
            "INSERT INTO refund_tickets (ticket_id, refund_id, amount, deposit) VALUES (%s, %s, %s, %s)",
            [(line.ticket_id, row["id"], line.amount, line.deposit) for line in lines],
        )
    return str(row["id"])


async def list_refunds(
    conn: Connection, *, start: datetime | None, end: datetime | None, operator: str, reason_id: str, limit: int,
    after: datetime | None,
) -> list[Refund]:
    return await fetch_all(
        conn, Refund,
        f"""SELECT {_REFUND} FROM refunds r JOIN orders o ON o.id = r.order_id
            WHERE (%(start)s::timestamptz IS NULL OR r.at >= %(start)s)
              AND (%(end)s::timestamptz IS NULL OR r.at < %(end)s)
              AND (%(operator)s = '' OR r.operator = %(operator)s)
              AND (%(reason)s = '' OR r.reason_id = %(reason)s)
              AND (%(after)s::timestamptz IS NULL OR r.at > %(after)s)
            ORDER BY r.at LIMIT %(limit)s""",
        {"start": start, "end": end, "operator": operator, "reason": reason_id, "after": after, "limit": limit},
    )


# --- an operator's shift ------------------------------------------------------------------


async def shift_totals(conn: Connection, session_id: str, operator_id: str) -> ShiftTotals:
    """Takings of one operator since the session started: payments by method, refunds paid out."""
    cur = await conn.execute("SELECT created_at FROM sessions WHERE id = %s", (session_id,))
    row = await cur.fetchone()
    since = row["created_at"] if row else None
    cur = await conn.execute(
        """SELECT count(DISTINCT o.id) AS orders, count(t.id) AS tickets
           FROM orders o LEFT JOIN tickets t ON t.order_id = o.id
           WHERE o.operator_id = %(op)s AND o.created_at >= %(since)s""",
        {"op": operator_id, "since": since},
    )
    counts = await cur.fetchone()
    by_method = await fetch_all(
        conn, MethodTotal,
        """SELECT p.method, o.currency, count(*) AS count, sum(p.amount)::bigint AS amount
           FROM payments p JOIN orders o ON o.id = p.order_id
           WHERE o.operator_id = %(op)s AND o.created_at >= %(since)s
           GROUP BY p.method, o.currency ORDER BY p.method""",
        {"op": operator_id, "since": since},
    )
    # Refunds of orders, and stored-value balances paid out (S8): both leave this operator's drawer.
    cur = await conn.execute(
        """SELECT count(*) AS refunds, coalesce(sum(paid), 0)::bigint AS refunded, max(currency) AS currency FROM (
               SELECT r.amount + r.deposit_refunded AS paid, o.currency
               FROM refunds r JOIN orders o ON o.id = r.order_id
               WHERE r.operator_id = %(op)s AND r.at >= %(since)s
               UNION ALL
               SELECT -e.amount, pk.currency FROM card_events e JOIN tickets t ON t.id = e.ticket_id
               JOIN parks pk ON pk.id = t.park_id
               WHERE e.kind = 'refund' AND e.operator_id = %(op)s AND e.at >= %(since)s) paid_out""",
        {"op": operator_id, "since": since},
    )
    refunds = await cur.fetchone()
    assert counts is not None and refunds is not None
    return ShiftTotals(since=since, orders=counts["orders"], tickets=counts["tickets"], by_method=by_method,
                       refunds=refunds["refunds"], refunded=refunds["refunded"], currency=refunds["currency"])
