"""SQL for the device registry (S2)."""

from __future__ import annotations

from .database import Connection
from .fetch import fetch_all, fetch_one, params_of
from .rows.admin import Device, DeviceSpec, DeviceWithSecret

_COLUMNS = """id, kind, site, coalesce(park_id, '') AS park_id, coalesce(attraction_id, '') AS attraction_id,
    coalesce(direction, '') AS direction, description, language, disabled, registered_at, last_seen_at"""


async def register(conn: Connection, device: DeviceSpec, secret_hash: str) -> Device:
    row = await fetch_one(
        conn, Device,
        f"""INSERT INTO devices (id, kind, site, park_id, attraction_id, direction, description, language,
                                secret_hash)
            VALUES (%(id)s, %(kind)s, %(site)s, %(park_id)s, %(attraction_id)s, %(direction)s,
                    %(description)s, %(language)s, %(secret_hash)s)
            RETURNING {_COLUMNS}""",
        {**params_of(device), "secret_hash": secret_hash},
    )
    assert row is not None
    return row


async def get(conn: Connection, device_id: str) -> DeviceWithSecret | None:
    return await fetch_one(
        conn, DeviceWithSecret, f"SELECT {_COLUMNS}, secret_hash FROM devices WHERE id = %s", (device_id,)
    )


async def get_many(conn: Connection, device_ids: list[str]) -> dict[str, DeviceWithSecret]:
    """The registered devices among ``device_ids``, by id (one round trip for a reconnect storm's lookups)."""
    rows = await fetch_all(
        conn, DeviceWithSecret, f"SELECT {_COLUMNS}, secret_hash FROM devices WHERE id = ANY(%s::text[])",
        (sorted(set(device_ids)),),
    )
    return {row.id: row for row in rows}


async def list_devices(conn: Connection, kind: str | None, park_id: str | None) -> list[Device]:
    return await fetch_all(
        conn, Device,
        f"""SELECT {_COLUMNS} FROM devices
            WHERE (%(kind)s::text IS NULL OR kind = %(kind)s) AND (%(park)s::text IS NULL OR park_id = %(park)s)
            ORDER BY id""",
        {"kind": kind, "park": park_id},
    )


async def update(
    conn: Connection,
    device_id: str,
    *,
    disabled: bool | None,
    description: str | None,
    language: str | None,
    secret_hash: str | None,
) -> Device | None:
    return await fetch_one(
        conn, Device,
        f"""UPDATE devices SET disabled = coalesce(%s, disabled), description = coalesce(%s, description),
                language = coalesce(%s, language), secret_hash = coalesce(%s, secret_hash)
            WHERE id = %s RETURNING {_COLUMNS}""",
        (disabled, description, language, secret_hash, device_id),
    )


async def replace_secret_hash(conn: Connection, device_id: str, old_hash: str, new_hash: str) -> None:
    """Rewrite a device's stored hash unless a rotation changed it meanwhile."""
    await conn.execute("UPDATE devices SET secret_hash = %s WHERE id = %s AND secret_hash = %s",
                       (new_hash, device_id, old_hash))


async def mark_seen(conn: Connection, device_id: str) -> None:
    """The device spoke to us now (the control room and Ops.ClusterStatus show its last contact)."""
    await conn.execute("UPDATE devices SET last_seen_at = now() WHERE id = %s", (device_id,))
