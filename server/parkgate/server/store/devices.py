"""SQL for the device registry (S2)."""

from __future__ import annotations

from typing import Any

from .database import Connection

_COLUMNS = """id, kind, site, coalesce(park_id, '') AS park_id, coalesce(attraction_id, '') AS attraction_id,
    coalesce(direction, '') AS direction, description, language, disabled, registered_at, last_seen_at"""


async def register(conn: Connection, device: dict[str, Any], secret_hash: str) -> dict[str, Any]:
    row = await (
        await conn.execute(
            f"""INSERT INTO devices (id, kind, site, park_id, attraction_id, direction, description, language,
                                    secret_hash)
                VALUES (%(id)s, %(kind)s, %(site)s, %(park_id)s, %(attraction_id)s, %(direction)s,
                        %(description)s, %(language)s, %(secret_hash)s)
                RETURNING {_COLUMNS}""",
            {**device, "secret_hash": secret_hash},
        )
    ).fetchone()
    assert row is not None
    return row


async def get(conn: Connection, device_id: str) -> dict[str, Any] | None:
    cur = await conn.execute(f"SELECT {_COLUMNS}, secret_hash FROM devices WHERE id = %s", (device_id,))
    return await cur.fetchone()


async def list_devices(conn: Connection, kind: str | None, park_id: str | None) -> list[dict[str, Any]]:
    cur = await conn.execute(
        f"""SELECT {_COLUMNS} FROM devices
            WHERE (%(kind)s::text IS NULL OR kind = %(kind)s) AND (%(park)s::text IS NULL OR park_id = %(park)s)
            ORDER BY id""",
        {"kind": kind, "park": park_id},
    )
    return await cur.fetchall()


async def update(
    conn: Connection,
    device_id: str,
    *,
    disabled: bool | None,
    description: str | None,
    language: str | None,
    secret_hash: str | None,
) -> dict[str, Any] | None:
    cur = await conn.execute(
        f"""UPDATE devices SET disabled = coalesce(%s, disabled), description = coalesce(%s, description),
                language = coalesce(%s, language), secret_hash = coalesce(%s, secret_hash)
            WHERE id = %s RETURNING {_COLUMNS}""",
        (disabled, description, language, secret_hash, device_id),
    )
    return await cur.fetchone()
