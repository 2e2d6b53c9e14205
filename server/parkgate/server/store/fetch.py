"""Queries whose rows come back as typed dataclasses (see :mod:`.rows`)."""

from __future__ import annotations

from typing import Any, TypeVar

from psycopg.abc import Query
from psycopg.rows import class_row

from .database import Connection

R = TypeVar("R")


async def fetch_one(conn: Connection, cls: type[R], query: Query, params: Any = None) -> R | None:
    """The first row of ``query`` as a ``cls`` (built from its columns by name), or None."""
    async with conn.cursor(row_factory=class_row(cls)) as cur:
        await cur.execute(query, params)
        return await cur.fetchone()


async def fetch_all(conn: Connection, cls: type[R], query: Query, params: Any = None) -> list[R]:
    """Every row of ``query`` as a ``cls`` (built from its columns by name)."""
    async with conn.cursor(row_factory=class_row(cls)) as cur:
        await cur.execute(query, params)
        return await cur.fetchall()


def params_of(record: Any) -> dict[str, Any]:
    """A dataclass's fields as named query parameters (shallow: a list field stays a list, for an array)."""
    return {name: getattr(record, name) for name in record.__dataclass_fields__}
