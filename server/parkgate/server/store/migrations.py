"""Versioned SQL migrations, applied at start under an advisory lock.

Files are ``migrations/NNNN_name.sql``; each is applied once, in its own
transaction, and recorded with its checksum. Several servers starting at once
serialize on one advisory lock, so exactly one applies each file and the others
find it done. A file changed after it was applied stops start-up: the schema of
a running park must never depend on which server migrated it.
"""

from __future__ import annotations

import hashlib
import logging
import re
from dataclasses import dataclass
from importlib import resources

import psycopg

log = logging.getLogger(__name__)

# Any fixed number; all parkgate servers use the same one.
_ADVISORY_LOCK_KEY = 0x7061726B67617465 & 0x7FFFFFFFFFFFFFFF  # "parkgate"
_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")


class MigrationError(Exception):
    """The database's schema history does not match this version's files."""


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


def available_migrations() -> list[Migration]:
    found = []
    for entry in resources.files("parkgate.server.store").joinpath("migrations").iterdir():
        match = _NAME.match(entry.name)
        if match:
            found.append(Migration(int(match[1]), match[2], entry.read_text(encoding="utf-8")))
    found.sort(key=lambda m: m.version)
    versions = [m.version for m in found]
    if versions != list(range(1, len(found) + 1)):
        raise MigrationError(f"migration files are not numbered 1..N without gaps: {versions}")
    return found


_HISTORY_DDL = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    version    integer PRIMARY KEY,
    name       text NOT NULL,
    checksum   text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
)
"""


async def _applied(conn: psycopg.AsyncConnection) -> dict[int, str]:
    cur = await conn.execute("SELECT version, checksum FROM schema_migrations")
    return {v: c for v, c in await cur.fetchall()}


async def pending_migrations(conn: psycopg.AsyncConnection) -> list[Migration]:
    exists = await (await conn.execute("SELECT to_regclass('schema_migrations') IS NOT NULL")).fetchone()
    applied = await _applied(conn) if exists and exists[0] else {}
    return [m for m in available_migrations() if m.version not in applied]


async def apply_migrations(conninfo: str) -> list[Migration]:
    """Bring the schema up to date; returns the migrations this call applied."""
    done: list[Migration] = []
    async with await psycopg.AsyncConnection.connect(conninfo, autocommit=True) as conn:
        await conn.execute("SELECT pg_advisory_lock(%s)", (_ADVISORY_LOCK_KEY,))
        try:
            await conn.execute(_HISTORY_DDL)
            applied = await _applied(conn)
            known = {m.version: m for m in available_migrations()}
            for version, checksum in sorted(applied.items()):
                if version not in known:
                    raise MigrationError(
                        f"the database has schema version {version}, newer than this parkgate knows: upgrade it"
                    )
                if known[version].checksum != checksum:
                    raise MigrationError(f"migration {version:04d}_{known[version].name}.sql changed after it was applied")
            for migration in known.values():
                if migration.version in applied:
                    continue
                async with conn.transaction():
                    await conn.execute(migration.sql)  # type: ignore[arg-type]  # trusted file from the package
                    await conn.execute(
                        "INSERT INTO schema_migrations (version, name, checksum) VALUES (%s, %s, %s)",
                        (migration.version, migration.name, migration.checksum),
                    )
                log.info("applied migration %04d_%s", migration.version, migration.name)
                done.append(migration)
        finally:
            await conn.execute("SELECT pg_advisory_unlock(%s)", (_ADVISORY_LOCK_KEY,))
    return done


async def schema_version(conn: psycopg.AsyncConnection) -> int:
    # Pool connections return dict rows, a bare connection tuples: name the column and read either.
    cur = await conn.execute("SELECT coalesce(max(version), 0) AS version FROM schema_migrations")
    row = await cur.fetchone()
    if row is None:
        return 0
    return int(row["version"] if isinstance(row, dict) else row[0])
