"""SQL of the time partitions of validations and command_acks (migration 0005): list, create ahead, drop.

DDL on a partitioned table takes a lock on the whole table, which every gate
batch also needs: each statement here runs with a short ``lock_timeout``, so
when gates are busy the maintenance step gives up at once and tries again at
its next run, instead of queueing every gate behind it.
"""

from __future__ import annotations

from datetime import datetime

from psycopg import sql

from parkgate.server.domain.partitions import Bounds

from .database import Connection

#: The partitioned tables (0005); nothing else is ever named in this module's DDL.
TABLES = ("validations", "command_acks")


async def short_lock_timeout(conn: Connection, seconds: float) -> None:
    await conn.execute(sql.SQL("SET LOCAL lock_timeout = {}").format(sql.Literal(f"{int(seconds * 1000)}ms")))


async def partitions(conn: Connection, table: str) -> list[tuple[str, Bounds]]:
    """The table's range partitions (not the DEFAULT one) and their bounds, oldest first."""
    assert table in TABLES
    cur = await conn.execute(
        r"""SELECT c.relname AS name, b[1]::timestamptz AS start, b[2]::timestamptz AS "end"
            FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid,
                 LATERAL (SELECT regexp_match(pg_get_expr(c.relpartbound, c.oid),
                                              'FROM \(''([^'']+)''\) TO \(''([^'']+)''\)') AS b) m
            WHERE i.inhparent = %s::regclass AND b IS NOT NULL ORDER BY 2""",
        (table,),
    )
    return [(r["name"], Bounds(r["start"], r["end"])) for r in await cur.fetchall()]


async def create_partition(conn: Connection, table: str, bounds: Bounds) -> str:
    """Make the partition for ``bounds``, moving into it any rows the DEFAULT partition caught for that range
    (CREATE ... PARTITION OF would refuse while they sit there): built beside, filled, then attached."""
    assert table in TABLES
    name = f"{table}_p{bounds.suffix()}"
    ident, parent, default = sql.Identifier(name), sql.Identifier(table), sql.Identifier(f"{table}_default")
    await conn.execute(sql.SQL("CREATE TABLE {} (LIKE {} INCLUDING DEFAULTS INCLUDING CONSTRAINTS)")
                       .format(ident, parent))
    await conn.execute(
        sql.SQL("WITH moved AS (DELETE FROM {} WHERE at >= %s AND at < %s RETURNING *) "
                "INSERT INTO {} SELECT * FROM moved").format(default, ident),
        (bounds.start, bounds.end),
    )
    await conn.execute(sql.SQL("ALTER TABLE {} ATTACH PARTITION {} FOR VALUES FROM ({}) TO ({})").format(
        parent, ident, sql.Literal(bounds.start), sql.Literal(bounds.end)))
    return name


async def drop_partition(conn: Connection, table: str, name: str) -> None:
    assert table in TABLES and name.startswith(f"{table}_p")
    await conn.execute(sql.SQL("DROP TABLE {}").format(sql.Identifier(name)))


async def purge_default(conn: Connection, table: str, before: datetime) -> int:
    """Rows the DEFAULT partition holds from before the retention cut-off (a clock that was far behind)."""
    assert table in TABLES
    cur = await conn.execute(sql.SQL("DELETE FROM {} WHERE at < %s").format(sql.Identifier(f"{table}_default")),
                             (before,))
    return cur.rowcount


async def try_maintenance_lock(conn: Connection) -> bool:
    """One server at a time runs the maintenance (the lock ends with the transaction)."""
    row = await (await conn.execute("SELECT pg_try_advisory_xact_lock(7061727) AS got")).fetchone()
    return bool(row and row["got"])
