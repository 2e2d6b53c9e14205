"""SQL of held checks (S15): admissions a gate holds until somebody looks at the member.

A held check is a ``validations`` row the server allowed with ``hold_for_check``
that nothing has settled yet: no acknowledged CONFIRM_CHECK (its command id
names the gate and the request), no passage reported, not given back
(annulled). A gate whose own checker confirmed and that reports no passages (a
handheld) tells the server nothing, so the list is bounded by age: the gate
gives a held check back after its ``check.timeout_seconds`` (15 s by default)
anyway.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from .database import Connection

#: CONFIRM_CHECK's command id is this, the gate and the held request: acknowledgements meet it by name.
CONFIRM_COMMAND_PREFIX = "confirm-check:"

#: More than any gate holds at once (one each): a screen or a console line, not a report.
MAX_HELD = 100


def confirm_command_id(device_id: str, request_id: str) -> str:
    return f"{CONFIRM_COMMAND_PREFIX}{device_id}:{request_id}"


@dataclass(frozen=True, slots=True)
class HeldCheckRow:
    device_id: str
    request_id: str
    at: datetime
    ticket_id: str
    persons: int
    member_id: str    # '' when the ticket is not a member's card
    member_name: str
    has_photo: bool


async def held_checks(conn: Connection, park_id: str, since: datetime) -> list[HeldCheckRow]:
    """The park's held checks since ``since``, newest first (the ``validations_at`` index bounds the scan)."""
    cur = await conn.execute(
        """SELECT v.device_id, v.request_id, v.at, coalesce(v.ticket_id::text, '') AS ticket_id, v.persons,
                  coalesce(m.id::text, '') AS member_id, coalesce(m.name, '') AS member_name,
                  coalesce(m.photo IS NOT NULL, false) AS has_photo
           FROM validations v LEFT JOIN members m ON m.ticket_id = v.ticket_id
           WHERE v.at >= %s AND v.park_id = %s AND v.allow AND v.hold_for_check AND v.direction = 'in'
             AND v.passed_at IS NULL AND v.annulled_at IS NULL
             AND NOT EXISTS (SELECT 1 FROM command_acks a
                             WHERE a.command_id = %s || v.device_id || ':' || v.request_id
                               AND a.device_id = v.device_id AND a.done AND a.at >= %s)
           ORDER BY v.at DESC LIMIT %s""",
        (since, park_id, CONFIRM_COMMAND_PREFIX, since, MAX_HELD),
    )
    return [HeldCheckRow(**row) for row in await cur.fetchall()]


async def device_park(conn: Connection, device_id: str) -> str | None:
    """The park a device belongs to (to wake that park's live screens after a confirmation)."""
    cur = await conn.execute("SELECT park_id FROM devices WHERE id = %s", (device_id,))
    row = await cur.fetchone()
    return row["park_id"] if row else None
