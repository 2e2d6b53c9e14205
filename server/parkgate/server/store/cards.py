"""SQL of IC cards beyond their sale: members (S15), balances and card events (S8), lost cards."""

from __future__ import annotations

from .database import Connection
from .fetch import fetch_all, fetch_one, params_of
from .rows.catalogue import CardEventRow, CardTicket, MemberRow, NewCardEvent, NewMember

# --- members -------------------------------------------------------------------------------

_MEMBER = """m.id::text AS id, m.family_id::text AS family_id, m.name, m.id_document, m.phone,
    m.photo IS NOT NULL AS has_photo, m.product_id, m.ticket_id::text AS ticket_id, m.order_id::text AS order_id,
    coalesce((SELECT b.card_uid FROM card_bindings b WHERE b.ticket_id = m.ticket_id), t.card_uid, '') AS card_uid,
    t.valid_until, t.blocked_at IS NOT NULL AS blocked"""
_FROM = "FROM members m JOIN tickets t ON t.id = m.ticket_id"


async def insert_members(conn: Connection, members: list[NewMember]) -> None:
    async with conn.cursor() as cur:
        await cur.executemany(
            """INSERT INTO members (family_id, name, id_document, phone, photo, product_id, ticket_id, order_id)
               VALUES (%(family_id)s, %(name)s, %(id_document)s, %(phone)s, %(photo)s, %(product_id)s,
                       %(ticket_id)s, %(order_id)s)""",
            [params_of(m) for m in members],
        )


async def members_of_order(conn: Connection, order_id: str) -> list[MemberRow]:
    return await fetch_all(conn, MemberRow, f"SELECT {_MEMBER} {_FROM} WHERE m.order_id = %s ORDER BY m.created_at, "
                           "m.name", (order_id,))


async def get_member(conn: Connection, member_id: str, *, for_update: bool = False) -> MemberRow | None:
    lock = "FOR UPDATE OF m, t" if for_update else ""
    return await fetch_one(conn, MemberRow, f"SELECT {_MEMBER} {_FROM} WHERE m.id = %s {lock}", (member_id,))


async def member_of_ticket(conn: Connection, ticket_id: str) -> MemberRow | None:
    return await fetch_one(conn, MemberRow, f"SELECT {_MEMBER} {_FROM} WHERE m.ticket_id = %s", (ticket_id,))


async def find_members(conn: Connection, *, name: str, phone: str, card_uid: str, limit: int) -> list[MemberRow]:
    """Members matching every given criterion: a name part (any case), a phone, a card (current or lost)."""
    return await fetch_all(
        conn, MemberRow,
        f"""SELECT {_MEMBER} {_FROM}
            WHERE (%(name)s = '' OR lower(m.name) LIKE '%%' || lower(%(name)s) || '%%')
              AND (%(phone)s = '' OR m.phone = %(phone)s)
              AND (%(card)s = '' OR m.ticket_id IN (
                    SELECT ticket_id FROM card_bindings WHERE card_uid = %(card)s
                    UNION ALL SELECT ticket_id FROM lost_cards WHERE card_uid = %(card)s))
            ORDER BY m.name, m.created_at LIMIT %(limit)s""",
        {"name": name, "phone": phone, "card": card_uid, "limit": limit},
    )


async def member_photo(conn: Connection, member_id: str) -> bytes | None:
    cur = await conn.execute("SELECT photo FROM members WHERE id = %s", (member_id,))
    row = await cur.fetchone()
    return bytes(row["photo"]) if row and row["photo"] is not None else None


# --- the ticket behind a card ----------------------------------------------------------------

_CARD = """t.id::text AS ticket_id, %(uid)s AS card_uid, t.park_id, t.product_id, pk.currency, t.balance,
    t.blocked_at IS NOT NULL AS blocked, {lost} AS lost, t.state, t.valid_until, t.entries_total, t.entries_used,
    t.attraction_limits, t.attraction_used"""


async def card_ticket(conn: Connection, card_uid: str, *, for_update: bool = False) -> CardTicket | None:
    """The ticket a card admits with (or, for a card reported lost and replaced, its old ticket, marked lost)."""
    lock = "FOR UPDATE OF t" if for_update else ""
    row = await fetch_one(
        conn, CardTicket,
        f"""SELECT {_CARD.format(lost='false')} FROM card_bindings b JOIN tickets t ON t.id = b.ticket_id
            JOIN parks pk ON pk.id = t.park_id WHERE b.card_uid = %(uid)s {lock}""",
        {"uid": card_uid},
    )
    if row is not None:
        return row
    return await fetch_one(
        conn, CardTicket,
        f"""SELECT {_CARD.format(lost='true')} FROM lost_cards l JOIN tickets t ON t.id = l.ticket_id
            JOIN parks pk ON pk.id = t.park_id WHERE l.card_uid = %(uid)s""",
        {"uid": card_uid},
    )


async def ticket_card(conn: Connection, ticket_id: str, *, for_update: bool = False) -> CardTicket | None:
    lock = "FOR UPDATE OF t" if for_update else ""
    return await fetch_one(
        conn, CardTicket,
        f"""SELECT {_CARD.format(lost='false')} FROM tickets t JOIN parks pk ON pk.id = t.park_id
            WHERE t.id = %(id)s {lock}""",
        {"uid": "", "id": ticket_id},
    )


async def add_balance(conn: Connection, ticket_id: str, delta: int) -> int:
    """Change a locked card's balance (callers check it stays >= 0: only offline debts go below)."""
    cur = await conn.execute("UPDATE tickets SET balance = balance + %s WHERE id = %s RETURNING balance",
                             (delta, ticket_id))
    row = await cur.fetchone()
    assert row is not None
    return int(row["balance"])


async def set_blocked(conn: Connection, ticket_id: str, blocked: bool) -> None:
    await conn.execute(
        "UPDATE tickets SET blocked_at = CASE WHEN %s THEN coalesce(blocked_at, now()) END WHERE id = %s",
        (blocked, ticket_id),
    )


async def move_card(conn: Connection, ticket_id: str, old_uid: str, new_uid: str) -> bool:
    """Bind the ticket to a new card; the old UID becomes a lost card. False when the new card is taken."""
    cur = await conn.execute("SELECT 1 FROM card_bindings WHERE card_uid = %s UNION ALL "
                             "SELECT 1 FROM lost_cards WHERE card_uid = %s", (new_uid, new_uid))
    if await cur.fetchone() is not None:
        return False
    await conn.execute("DELETE FROM card_bindings WHERE ticket_id = %s", (ticket_id,))
    await conn.execute("INSERT INTO card_bindings (card_uid, ticket_id) VALUES (%s, %s)", (new_uid, ticket_id))
    if old_uid:
        await conn.execute("INSERT INTO lost_cards (card_uid, ticket_id) VALUES (%s, %s) ON CONFLICT DO NOTHING",
                           (old_uid, ticket_id))
    await conn.execute("UPDATE tickets SET card_uid = %s, blocked_at = NULL WHERE id = %s", (new_uid, ticket_id))
    return True


async def extend_validity(conn: Connection, ticket_id: str, days: int) -> None:
    """A renewal: the card's validity runs on from its end (or from now, if it ended)."""
    await conn.execute(
        """UPDATE tickets SET valid_until = greatest(valid_until, now()) + make_interval(days => %s)
           WHERE id = %s""",
        (days, ticket_id),
    )


# --- card events (S15 history, S8 money) -------------------------------------------------------


async def event_exists(conn: Connection, request_id: str) -> bool:
    cur = await conn.execute("SELECT 1 FROM card_events WHERE request_id = %s", (request_id,))
    return await cur.fetchone() is not None


async def insert_event(conn: Connection, event: NewCardEvent) -> bool:
    """Record an event; False when its request id is recorded already (a retry)."""
    cur = await conn.execute(
        """INSERT INTO card_events (request_id, ticket_id, card_uid, kind, amount, balance_after, order_id,
                                    device_id, operator, note, operator_id)
           VALUES (%(request_id)s, %(ticket_id)s, %(card_uid)s, %(kind)s, %(amount)s, %(balance_after)s,
                   %(order_id)s, %(device_id)s, %(operator)s, %(note)s, %(operator_id)s)
           ON CONFLICT (request_id) DO NOTHING RETURNING id""",
        params_of(event),
    )
    return await cur.fetchone() is not None


async def history(conn: Connection, ticket_id: str, limit: int = 500) -> list[CardEventRow]:
    """Window events and gate charges of one card's ticket, newest first."""
    return await fetch_all(
        conn, CardEventRow,
        """SELECT at, kind, amount, balance_after, "where", operator, card_uid FROM (
               SELECT e.at, e.kind, e.amount, e.balance_after, e.device_id AS "where", e.operator, e.card_uid
               FROM card_events e WHERE e.ticket_id = %(t)s
               UNION ALL
               SELECT v.at, 'charge', -v.charged, v.balance, v.device_id, '', ''
               FROM validations v WHERE v.ticket_id = %(t)s AND v.charged > 0 AND v.annulled_at IS NULL
               UNION ALL
               SELECT v.at, 'entry', 0, NULL, v.device_id, '', ''
               FROM validations v WHERE v.ticket_id = %(t)s AND v.allow AND v.charged = 0 AND v.direction = 'in'
                 AND v.annulled_at IS NULL
           ) h ORDER BY at DESC LIMIT %(limit)s""",
        {"t": ticket_id, "limit": limit},
    )
