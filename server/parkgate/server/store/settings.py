"""SQL for operational parameters and the display dictionary (S4)."""

from __future__ import annotations

from typing import Any

from psycopg.types.json import Jsonb

from .database import Connection
from .fetch import fetch_all, fetch_one
from .rows.admin import DictionaryEntry, Parameter


async def list_parameters(conn: Connection, prefix: str) -> list[Parameter]:
    return await fetch_all(
        conn, Parameter,
        "SELECT key, value, description, updated_at, updated_by FROM parameters WHERE key LIKE %s ORDER BY key",
        (prefix.replace("%", r"\%").replace("_", r"\_") + "%",),
    )


async def get_parameter(conn: Connection, key: str) -> Any:
    """The JSON value of a parameter, None when it is not set."""
    row = await (await conn.execute("SELECT value FROM parameters WHERE key = %s", (key,))).fetchone()
    return None if row is None else row["value"]


async def set_parameter(
    conn: Connection, key: str, value: Any, *, updated_by: str, description: str | None = None
) -> Parameter:
    row = await fetch_one(
        conn, Parameter,
        """INSERT INTO parameters (key, value, description, updated_by) VALUES (%s, %s, coalesce(%s, ''), %s)
           ON CONFLICT (key) DO UPDATE SET value = excluded.value, updated_at = now(),
               updated_by = excluded.updated_by, description = coalesce(%s, parameters.description)
           RETURNING key, value, description, updated_at, updated_by""",
        (key, Jsonb(value), description, updated_by, description),
    )
    assert row is not None
    return row


async def ensure_parameters(conn: Connection, defaults: dict[str, tuple[Any, str]]) -> None:
    """Insert parameters that do not exist yet; never overwrite a park's own values."""
    for key, (value, description) in defaults.items():
        await conn.execute(
            """INSERT INTO parameters (key, value, description, updated_by) VALUES (%s, %s, %s, 'parkgate')
               ON CONFLICT (key) DO NOTHING""",
            (key, Jsonb(value), description),
        )


async def list_dictionary(conn: Connection, language: str, prefix: str) -> list[DictionaryEntry]:
    return await fetch_all(
        conn, DictionaryEntry,
        """SELECT key, language, text FROM dictionary
           WHERE (%s = '' OR language = %s) AND key LIKE %s ORDER BY key, language""",
        (language, language, prefix.replace("%", r"\%").replace("_", r"\_") + "%"),
    )


async def put_dictionary_entry(conn: Connection, key: str, language: str, text: str) -> None:
    await conn.execute(
        """INSERT INTO dictionary (key, language, text) VALUES (%s, %s, %s)
           ON CONFLICT (key, language) DO UPDATE SET text = excluded.text""",
        (key, language, text),
    )


async def ensure_dictionary(conn: Connection, entries: list[tuple[str, str, str]]) -> None:
    await conn.execute(
        """INSERT INTO dictionary (key, language, text)
           SELECT * FROM unnest(%s::text[], %s::text[], %s::text[]) ON CONFLICT DO NOTHING""",
        ([e[0] for e in entries], [e[1] for e in entries], [e[2] for e in entries]),
    )
