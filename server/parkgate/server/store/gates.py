"""SQL for gates: passage confirmation, park state, connections, command acknowledgements.

The batch decision's SQL is :mod:`.admissions`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import datetime

import psycopg
from psycopg import sql

from parkgate.server.domain.errors import Unavailable

from .admissions import PARK_STATE_CHANNEL
from .database import Connection

__all__ = ["PARK_STATE_CHANNEL"]


async def confirm_passage(conn: Connection, device_id: str, request_id: str) -> bool:
    cur = await conn.execute(
        """UPDATE validations SET passed_at = now()
           WHERE device_id = %s AND request_id = %s AND allow AND passed_at IS NULL AND annulled_at IS NULL""",
        (device_id, request_id),
    )
    return cur.rowcount == 1


# --- park state (S25, S27) ------------------------------------------------------------------

_STATE = """s.park_id, s.inside, s.paused, s.emergency, s.emergency_since, s.emergency_changed_at, pk.capacity,
    pk.capacity_resume_margin, pk.number, pk.time_zone, pk.currency"""


@dataclass(frozen=True, slots=True)
class ParkView:
    """A park's live state as gates and the control room see it."""

    park_id: str
    inside: int
    paused: bool
    emergency: bool
    emergency_since: datetime | None
    emergency_changed_at: datetime
    capacity: int
    capacity_resume_margin: int
    number: int
    time_zone: str
    currency: str = ""


async def park_states(conn: Connection, park_ids: Sequence[str] = ()) -> list[ParkView]:
    cur = await conn.execute(
        f"""SELECT {_STATE} FROM park_state s JOIN parks pk ON pk.id = s.park_id
            WHERE cardinality(%s::text[]) = 0 OR s.park_id = ANY(%s::text[]) ORDER BY s.park_id""",
        (list(park_ids), list(park_ids)),
    )
    return [ParkView(**row) for row in await cur.fetchall()]


async def set_emergency(conn: Connection, park_id: str, on: bool) -> ParkView | None:
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


async def set_capacity(conn: Connection, park_id: str, capacity: int, margin: int) -> bool:
    """Change the cap; the caller judges the pause again under the park's lock (a lower cap may pause entry now)."""
    cur = await conn.execute(
        "UPDATE parks SET capacity = %s, capacity_resume_margin = %s WHERE id = %s RETURNING id",
        (capacity, margin, park_id),
    )
    return await cur.fetchone() is not None


async def reason_texts(conn: Connection) -> dict[tuple[str, str], str]:
    """(reason name, language) -> the display text gates show (S4: parks reword them)."""
    cur = await conn.execute("SELECT key, language, text FROM dictionary WHERE key LIKE 'reason.%'")
    return {(r["key"].removeprefix("reason."), r["language"]): r["text"] for r in await cur.fetchall()}


# --- connected gates and acknowledgements ----------------------------------------------------

async def gates_connected(conn: Connection, server_id: str, parks: dict[str, str]) -> None:
    """Gates (device id -> park) now connected to ``server_id``: one statement for a whole batch."""
    devices = sorted(parks)  # one lock order for every server writing a batch
    await conn.execute(
        """INSERT INTO gate_connections (device_id, server_id, park_id)
           SELECT d, %s, p FROM unnest(%s::text[], %s::text[]) AS t(d, p)
           ON CONFLICT (device_id) DO UPDATE SET server_id = excluded.server_id, park_id = excluded.park_id,
               connected = true, state = 'ok', connected_at = now(), last_heartbeat = now()""",
        (server_id, devices, [parks[d] for d in devices]),
    )
    await conn.execute("UPDATE devices SET last_seen_at = now() WHERE id = ANY(%s::text[])", (devices,))


async def gate_heartbeat(conn: Connection, device_id: str, server_id: str, state: str,
                         on_battery: bool = False) -> bool:
    """Record a heartbeat; True when it changed the gate's on-battery state (S30)."""
    cur = await conn.execute(
        """UPDATE gate_connections g SET state = %s, last_heartbeat = now(), connected = true, server_id = %s,
               on_battery = %s,
               on_battery_since = CASE WHEN %s AND NOT old.on_battery THEN now()
                                       WHEN %s THEN g.on_battery_since END
           FROM gate_connections old WHERE g.device_id = %s AND old.device_id = g.device_id
           RETURNING old.on_battery AS was""",
        (state, server_id, on_battery, on_battery, on_battery, device_id),
    )
    row = await cur.fetchone()
    await conn.execute("UPDATE devices SET last_seen_at = now() WHERE id = %s", (device_id,))
    return row is not None and bool(row["was"]) != on_battery


async def gates_on_battery(conn: Connection) -> list[str]:
    """Connected gates whose last heartbeat said their mains are out."""
    cur = await conn.execute(
        "SELECT device_id FROM gate_connections WHERE on_battery AND connected ORDER BY device_id")
    return [str(r["device_id"]) for r in await cur.fetchall()]


async def gates_disconnected(conn: Connection, server_id: str, device_ids: list[str]) -> None:
    # Only the server holding the connection may mark it gone: the gate may have moved on already.
    await conn.execute(
        "UPDATE gate_connections SET connected = false WHERE device_id = ANY(%s::text[]) AND server_id = %s",
        (sorted(device_ids), server_id),
    )


@dataclass(frozen=True, slots=True)
class GateConnection:
    device_id: str
    connected: bool
    server_id: str
    state: str
    last_heartbeat: datetime | None
    on_battery: bool = False


async def list_gates(conn: Connection, park_id: str) -> list[GateConnection]:
    cur = await conn.execute(
        """SELECT d.id AS device_id, coalesce(c.connected, false) AS connected, coalesce(c.server_id, '') AS server_id,
                  coalesce(c.state, 'never connected') AS state, c.last_heartbeat,
                  coalesce(c.on_battery, false) AS on_battery
           FROM devices d LEFT JOIN gate_connections c ON c.device_id = d.id
           WHERE d.kind IN ('gate', 'handheld') AND (%s = '' OR d.park_id = %s) ORDER BY d.id""",
        (park_id, park_id),
    )
    return [GateConnection(**row) for row in await cur.fetchall()]


async def connected_gates(conn: Connection, park_id: str) -> list[str]:
    cur = await conn.execute(
        "SELECT device_id FROM gate_connections WHERE park_id = %s AND connected ORDER BY device_id", (park_id,)
    )
    return [r["device_id"] for r in await cur.fetchall()]


async def record_ack(conn: Connection, command_id: str, device_id: str, done: bool, detail: str) -> None:
    # command_acks is partitioned by time (0005): its key holds "at", so there is no ON CONFLICT on
    # (command, device). A gate acknowledges a command on its one stream, one ack after the other.
    await conn.execute(
        """WITH changed AS (UPDATE command_acks SET done = %(done)s, detail = %(detail)s
                            WHERE command_id = %(command)s AND device_id = %(device)s RETURNING 1)
           INSERT INTO command_acks (command_id, device_id, done, detail)
           SELECT %(command)s, %(device)s, %(done)s, %(detail)s WHERE NOT EXISTS (SELECT 1 FROM changed)""",
        {"command": command_id, "device": device_id, "done": done, "detail": detail},
    )


async def acks_for(conn: Connection, command_id: str) -> list[str]:
    cur = await conn.execute(
        "SELECT DISTINCT device_id FROM command_acks WHERE command_id = %s AND done ORDER BY device_id",
        (command_id,)
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
