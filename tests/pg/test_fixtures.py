"""The session server and the database fixtures other test folders rely on."""

from __future__ import annotations

from collections.abc import Callable

import psycopg

from parkgate.server.pg import PostgresInstance


def test_session_instance_serves(postgres_instance: PostgresInstance) -> None:
    assert postgres_instance.is_running()
    with psycopg.connect(postgres_instance.dsn) as conn:
        row = conn.execute(
            "SELECT current_setting('server_version_num')::int, current_setting('fsync'), "
            "current_setting('max_connections')::int, pg_encoding_to_char(encoding) "
            "FROM pg_database WHERE datname = current_database()"
        ).fetchone()
    assert row is not None
    assert row[0] >= 180000
    assert row[1] == "off"  # throw-away test data
    assert row[2] == 200
    assert row[3] == "UTF8"


def test_fresh_database_is_new_and_empty(
    fresh_database: Callable[..., str], postgres_instance: PostgresInstance
) -> None:
    a, b = fresh_database(), fresh_database("other")
    assert a != b
    with psycopg.connect(a, autocommit=True) as conn:
        name = conn.execute("SELECT current_database()").fetchone()
        tables = conn.execute(
            "SELECT count(*) FROM pg_tables WHERE schemaname NOT IN ('pg_catalog', 'information_schema')"
        ).fetchone()
        conn.execute("CREATE TABLE t (x int)")
    assert name is not None and postgres_instance.database_exists(name[0])
    assert tables == (0,)
    with psycopg.connect(b) as conn:
        assert conn.execute("SELECT to_regclass('t')").fetchone() == (None,)


def test_module_dsn_is_shared_within_the_module(module_dsn: str, database_dsn: str) -> None:
    assert module_dsn != database_dsn
    with psycopg.connect(module_dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS shared (x int)")
        conn.execute("INSERT INTO shared VALUES (1)")


def test_module_dsn_keeps_data_between_tests(module_dsn: str) -> None:
    with psycopg.connect(module_dsn) as conn:
        assert conn.execute("SELECT count(*) FROM shared").fetchone() == (1,)


async def test_async_connection(database_dsn: str) -> None:
    async with await psycopg.AsyncConnection.connect(database_dsn) as conn:
        cur = await conn.execute("SELECT current_database(), current_setting('port')::int")
        assert await cur.fetchone() == (conn.info.dbname, conn.info.port)  # the fresh database it was given
