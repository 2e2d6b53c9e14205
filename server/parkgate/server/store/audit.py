"""SQL for the operation log (S5)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from psycopg.types.json import Jsonb

from .database import Connection
from .fetch import fetch_all
from .rows.admin import AuditRecord


async def record(
    conn: Connection,
    *,
    user_id: str | None,
    username: str,
    device_id: str,
    method: str,
    outcome: str,
    summary: dict[str, Any],
    peer: str,
) -> None:
    await conn.execute(
        """INSERT INTO audit_log (user_id, username, device_id, method, outcome, summary, peer)
           VALUES (%s, %s, %s, %s, %s, %s, %s)""",
        (user_id, username, device_id, method, outcome, Jsonb(summary), peer),
    )


async def list_records(
    conn: Connection,
    *,
    start: datetime | None,
    end: datetime | None,
    username: str,
    method_contains: str,
    after_id: int | None,
    limit: int,
) -> list[AuditRecord]:
    return await fetch_all(
        conn, AuditRecord,
        """SELECT id, at, coalesce(user_id::text, '') AS user_id, username, device_id, method, outcome,
                  summary, peer
           FROM audit_log
           WHERE (%(start)s::timestamptz IS NULL OR at >= %(start)s)
             AND (%(end)s::timestamptz IS NULL OR at < %(end)s)
             AND (%(username)s = '' OR username = %(username)s)
             AND (%(method)s = '' OR strpos(method, %(method)s) > 0)
             AND (%(after)s::bigint IS NULL OR id < %(after)s)
           ORDER BY id DESC LIMIT %(limit)s""",
        {"start": start, "end": end, "username": username, "method": method_contains,
         "after": after_id, "limit": limit},
    )
