"""SQL for gates: the batch decision, passage confirmation and annulment, park state, connections, acks."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from typing import Any

import psycopg
from psycopg import sql

from parkgate.server.domain.errors import Unavailable

from .database import Connection

#: The channel park_move() notifies when a park's entry pauses or resumes; emergencies use it too.
PARK_STATE_CHANNEL = "parkgate_park_state"


async def admit_batch(conn: Connection, items: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Decide a batch in one round trip (the admit_batch() function of migration 0003), in item order."""
    cur = await conn.execute(
        """SELECT ord, allow, reason, ticket_id::text AS ticket_id, entries_left, persons, hold_for_check, retried
           FROM admit_batch(%s::text[], %s::text[], %s::bigint[], %s::text[], %s::text[], %s::text[], %s::text[],
                            %s::boolean[])""",
        (
            [i["device_id"] for i in items], [i["request_id"] for i in items], [i["serial"] for i in items],
            [i["card_uid"] for i in items], [i["direction"] for i in items], [i["park_id"] for i in items],
            [i["attraction_id"] for i in items], [i["await_passage"] for i in items],
        ),
    )
    rows = await cur.fetchall()
    rows.sort(key=lambda r: r["ord"])
    return rows


async def confirm_passage(conn: Connection, device_id: str, request_id: str) -> bool:
    cur = await conn.execute(
        """UPDATE validations SET passed_at = now()
           WHERE device_id = %s AND request_id = %s AND allow AND passed_at IS NULL AND annulled_at IS NULL""",
        (device_id, request_id),
    )
    return cur.rowcount == 1


async def annul_admission(conn: Connection, device_id: str, request_id: str) -> bool:
    cur = await conn.execute("SELECT annul_admission(%s, %s) AS done", (device_id, request_id))
    row = await cur.fetchone()
    return bool(row and row["done"])


async def annul_unconfirmed(conn: Connection, older_than_seconds: float, limit: int = 500) -> list[tuple[str, str]]:
    """Annul admissions still waiting for their passage report after the timeout; returns (device, request)."""
    cur = await conn.execute(
        """SELECT device_id, request_id FROM validations
           WHERE awaiting_passage AND passed_at IS NULL AND annulled_at IS NULL
             AND at < now() - make_interval(secs => %s)
           ORDER BY at LIMIT %s FOR UPDATE SKIP LOCKED""",
        (older_than_seconds, limit),
    )
    due = [(r["device_id"], r["request_id"]) for r in await cur.fetchall()]
    done = []
    for device_id, request_id in due:
        if await annul_admission(conn, device_id, request_id):
            done.append((device_id, request_id))
    return done


# --- park state (S25, S27) ------------------------------------------------------------------

_STATE = """s.park_id, s.inside, s.paused, s.emergency, s.emergency_since, s.emergency_changed_at, pk.capacity,
    pk.capacity_resume_margin, pk.number, pk.time_zone"""


async def park_states(conn: Connection, park_ids: Sequence[str] = ()) -> list[dict[str, Any]]:
    cur = await conn.execute(
        f"""SELECT {_STATE} FROM park_state s JOIN parks pk ON pk.id = s.park_id
            WHERE cardinality(%s::text[]) = 0 OR s.park_id = ANY(%s::text[]) ORDER BY s.park_id""",
        (list(park_ids), list(park_ids)),
    )
    return await cur.fetchall()


async def set_emergency(conn: Connection, park_id: str, on: bool) -> dict[str, Any] | None:
    cur = await conn.execute(
        """UPDATE park_state SET emergency = %(on)s,
               emergency_since = CASE WHEN %(on)s THEN coalesce(emergency_since, now()) END,
               emergency_changed_at = CASE WHEN emergency = %(on)s THEN emergency_changed_at ELSE now() END,
               changed_at = now()
           WHERE park_id = %(park)s RETURNING park_id""",
        {"on": on, "park": park_id},
    )
    if await cur.fetchone() is None:
        return None
    await conn.execute("SELECT pg_notify(%s, %s)", (PARK_STATE_CHANNEL, park_id))
    return (await park_states(conn, [park_id]))[0]


async def set_capacity(conn: Connection, park_id: str, capacity: int, margin: int) -> dict[str, Any] | None:
    """Change the cap and re-judge the pause at once (a lower cap may pause entry right now)."""
    cur = await conn.execute(
        "UPDATE parks SET capacity = %s, capacity_resume_margin = %s WHERE id = %s RETURNING id",
        (capacity, margin, park_id),
    )
    if await cur.fetchone() is None:
        return None
    await conn.execute("SELECT 1 FROM park_state WHERE park_id = %s FOR UPDATE", (park_id,))
    await conn.execute("SELECT park_move(%s, 0)", (park_id,))
    return (await park_states(conn, [park_id]))[0]


async def reason_texts(conn: Connection) -> dict[tuple[str, str], str]:
    """(reason name, language) -> the display text gates show (S4: parks reword them)."""
    cur = await conn.execute("SELECT key, language, text FROM dictionary WHERE key LIKE 'reason.%'")
    return {(r["key"].removeprefix("reason."), r["language"]): r["text"] for r in await cur.fetchall()}


# --- connected gates and acknowledgements ----------------------------------------------------

async def gate_connected(conn: Connection, device_id: str, server_id: str, park_id: str) -> None:
    await conn.execute(
        """INSERT INTO gate_connections (device_id, server_id, park_id) VALUES (%s, %s, %s)
           ON CONFLICT (device_id) DO UPDATE SET server_id = excluded.server_id, park_id = excluded.park_id,
               connected = true, state = 'ok', connected_at = now(), last_heartbeat = now()""",
        (device_id, server_id, park_id),
    )
    await conn.execute("UPDATE devices SET last_seen_at = now() WHERE id = %s", (device_id,))


async def gate_heartbeat(conn: Connection, device_id: str, server_id: str, state: str) -> None:
    await conn.execute(
        """UPDATE gate_connections SET state = %s, last_heartbeat = now(), connected = true, server_id = %s
           WHERE device_id = %s""",
        (state, server_id, device_id),
    )
    await conn.execute("UPDATE devices SET last_seen_at = now() WHERE id = %s", (device_id,))


async def gate_disconnected(conn: Connection, device_id: str, server_id: str) -> None:
    # Only the server holding the connection may mark it gone: the gate may have moved on already.
    await conn.execute(
        "UPDATE gate_connections SET connected = false WHERE device_id = %s AND server_id = %s",
        (device_id, server_id),
    )


async def list_gates(conn: Connection, park_id: str) -> list[dict[str, Any]]:
    cur = await conn.execute(
        """SELECT d.id AS device_id, coalesce(c.connected, false) AS connected, coalesce(c.server_id, '') AS server_id,
                  coalesce(c.state, 'never connected') AS state, c.last_heartbeat
           FROM devices d LEFT JOIN gate_connections c ON c.device_id = d.id
           WHERE d.kind IN ('gate', 'handheld') AND (%s = '' OR d.park_id = %s) ORDER BY d.id""",
        (park_id, park_id),
    )
    return await cur.fetchall()


async def connected_gates(conn: Connection, park_id: str) -> list[str]:
    cur = await conn.execute(
        "SELECT device_id FROM gate_connections WHERE park_id = %s AND connected ORDER BY device_id", (park_id,)
    )
    return [r["device_id"] for r in await cur.fetchall()]


async def record_ack(conn: Connection, command_id: str, device_id: str, done: bool, detail: str) -> None:
    await conn.execute(
        """INSERT INTO command_acks (command_id, device_id, done, detail) VALUES (%s, %s, %s, %s)
           ON CONFLICT (command_id, device_id) DO UPDATE SET done = excluded.done, detail = excluded.detail""",
        (command_id, device_id, done, detail),
    )


async def acks_for(conn: Connection, command_id: str) -> list[str]:
    cur = await conn.execute(
        "SELECT device_id FROM command_acks WHERE command_id = %s AND done ORDER BY device_id", (command_id,)
    )
    return [r["device_id"] for r in await cur.fetchall()]


async def notifications(conninfo: str, channel: str) -> AsyncIterator[str]:
    """Payloads NOTIFYed on ``channel``, on a connection of its own (LISTEN needs one outside the pool).

    Ends with an error when the connection is lost (a failover): the caller
    listens again and re-reads the state it may have missed meanwhile.
    """
    try:
        conn = await psycopg.AsyncConnection.connect(conninfo, autocommit=True)
    except psycopg.OperationalError as exc:
        raise Unavailable(f"cannot listen for {channel}: {exc}") from exc
    try:
        await conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(channel)))
        async for notify in conn.notifies():
            yield notify.payload
    except psycopg.OperationalError as exc:
        raise Unavailable(f"lost the {channel} listener: {exc}") from exc
    finally:
        await conn.close()
