"""Migrations apply once, under a lock, and refuse a history they do not know."""

from __future__ import annotations

import asyncio

import psycopg
import pytest

from parkgate.server.store.migrations import MigrationError, apply_migrations, available_migrations


def _schema(dsn: str) -> list[tuple]:
    with psycopg.connect(dsn) as conn:
        return conn.execute(
            """SELECT table_name, column_name, data_type, is_nullable, column_default
               FROM information_schema.columns WHERE table_schema = 'public' ORDER BY 1, 2"""
        ).fetchall()


async def test_migrations_apply_twice_without_change(database_dsn: str) -> None:
    first = await apply_migrations(database_dsn)
    assert [m.version for m in first] == [m.version for m in available_migrations()]
    before = _schema(database_dsn)
    assert await apply_migrations(database_dsn) == []
    assert _schema(database_dsn) == before


async def test_concurrent_servers_migrate_once(database_dsn: str) -> None:
    results = await asyncio.gather(*(apply_migrations(database_dsn) for _ in range(4)))
    assert sorted(len(r) for r in results) == [0, 0, 0, len(available_migrations())]


async def test_a_changed_migration_file_stops_start_up(database_dsn: str) -> None:
    await apply_migrations(database_dsn)
    with psycopg.connect(database_dsn, autocommit=True) as conn:
        conn.execute("UPDATE schema_migrations SET checksum = 'edited' WHERE version = 1")
    with pytest.raises(MigrationError, match="changed after it was applied"):
        await apply_migrations(database_dsn)


async def test_a_newer_database_is_refused(database_dsn: str) -> None:
    await apply_migrations(database_dsn)
    with psycopg.connect(database_dsn, autocommit=True) as conn:
        conn.execute("INSERT INTO schema_migrations (version, name, checksum) VALUES (9999, 'future', 'x')")
    with pytest.raises(MigrationError, match="newer than this parkgate knows"):
        await apply_migrations(database_dsn)
