"""SQL for reissuing a ticket whose code leaked (docs/security.md)."""

from __future__ import annotations

from dataclasses import dataclass

from .database import Connection
from .fetch import fetch_all


@dataclass(frozen=True, slots=True)
class ReissuableTicket:
    id: str
    serial: int
    code: str
    state: str


async def ticket_for_update(conn: Connection, *, serial: int, code: str) -> ReissuableTicket | None:
    """The ticket with this serial (or, without one, this code), locked against a concurrent reissue or use."""
    rows = await fetch_all(
        conn, ReissuableTicket,
        """SELECT id::text AS id, serial, code, state FROM tickets
           WHERE CASE WHEN %(serial)s > 0 THEN serial = %(serial)s ELSE code = %(code)s END FOR UPDATE""",
        {"serial": serial, "code": code},
    )
    return rows[0] if rows else None


# Every column but the identity, the code and its key: the new ticket keeps the
# order, the rights and what was used of them (entries, first use).
_CARRIED = ("order_id", "product_id", "product_version", "park_id", "card_uid", "price", "deposit", "visit_date",
            "valid_from", "valid_until", "valid_days", "persons", "entries_total", "entries_per_day",
            "reentry_allowed", "hold_for_check", "attraction_ids", "window_start", "window_end", "entries_used",
            "first_used_at", "state", "inside", "entries_day", "entries_today", "last_entry_at", "last_exit_at")


async def reissue(conn: Connection, old_id: str, *, serial: int, key_id: int, code: str, note: str) -> str:
    """Copy the ticket under a new serial and code, void the old one, move its card and record the revoked serial;
    the new ticket's id."""
    carried = ", ".join(_CARRIED)
    cur = await conn.execute(
        f"""INSERT INTO tickets (serial, key_id, code, {carried})
            SELECT %s, %s, %s, {carried} FROM tickets WHERE id = %s RETURNING id::text AS id""",
        (serial, key_id, code, old_id),
    )
    row = await cur.fetchone()
    assert row is not None
    new_id = str(row["id"])
    await conn.execute("UPDATE tickets SET state = 'voided', state_changed_at = now() WHERE id = %s", (old_id,))
    await conn.execute("UPDATE card_bindings SET ticket_id = %s WHERE ticket_id = %s", (new_id, old_id))
    await conn.execute(
        """INSERT INTO revoked_codes (serial, ticket_id, reissued_as, valid_until, note)
           SELECT serial, id, %s, valid_until, %s FROM tickets WHERE id = %s""",
        (new_id, note, old_id),
    )
    return new_id


async def revoked_serials(conn: Connection) -> list[int]:
    """Serials a gate must refuse offline, until they expire (an expired code is refused anyway): revoked
    codes, and the tickets refunded or voided, so a gate cut off after a refund still refuses the ticket."""
    cur = await conn.execute(
        """SELECT serial FROM revoked_codes WHERE valid_until > now()
           UNION SELECT serial FROM tickets WHERE state <> 'valid' AND valid_until > now()
           ORDER BY serial""")
    return [int(row["serial"]) for row in await cur.fetchall()]
