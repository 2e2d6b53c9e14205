"""SQL for rotating, retiring and revoking ticket signing keys."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from .database import Connection
from .fetch import fetch_all
from .gates import PARK_STATE_CHANNEL

# The payload on the park-state channel that means "the keyring changed": every
# server reloads its keys and tells its gates (no park id starts with '*').
KEYS_CHANGED = "*keys"


@dataclass(frozen=True, slots=True)
class KeyRow:
    key_id: int
    public_key: bytes
    state: str
    created_at: datetime


async def lock_keys(conn: Connection) -> list[KeyRow]:
    """Every key, locked: one change to the keyring at a time across all servers."""
    return await fetch_all(conn, KeyRow, "SELECT key_id, public_key, state, created_at FROM signing_keys "
                                         "ORDER BY key_id FOR UPDATE")


async def list_keys(conn: Connection) -> list[KeyRow]:
    return await fetch_all(conn, KeyRow, "SELECT key_id, public_key, state, created_at FROM signing_keys "
                                         "ORDER BY key_id")


async def set_state(conn: Connection, key_id: int, state: str) -> None:
    await conn.execute("UPDATE signing_keys SET state = %s WHERE key_id = %s", (state, key_id))


async def key_state(conn: Connection, key_id: int) -> str | None:
    row = await (await conn.execute("SELECT state FROM signing_keys WHERE key_id = %s", (key_id,))).fetchone()
    return str(row["state"]) if row else None


async def notify_keys_changed(conn: Connection) -> None:
    """Sent when the transaction commits: every server's listener hears it."""
    await conn.execute("SELECT pg_notify(%s, %s)", (PARK_STATE_CHANNEL, KEYS_CHANGED))
