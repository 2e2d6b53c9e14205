"""Where reports read: a read-only replica when one is configured and answers, else the primary.

Reports must never slow the gates (S28), so they never use the gates' pool:
they have small pools of their own (``reports.pool_max_size`` connections
each), every report runs in a READ ONLY transaction with a statement timeout
(``reports.statement_timeout_seconds``), and a report that runs longer is
cancelled by PostgreSQL and answered DEADLINE_EXCEEDED. A replica (a Patroni
standby, or any hot standby) carries the reading; when it does not answer
within ``reports.replica_wait_seconds`` the report is read on the primary
instead and says so (``source``). libpq can choose too: a multi-host DSN with
``target_session_attrs=prefer-standby`` as ``reports.dsn`` picks a standby of
the cluster and falls back to the primary by itself.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import TypeVar

from psycopg import errors as pg_errors
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from parkgate.server.domain.errors import Reason, Unavailable

from . import reports as store
from .database import Connection, Database, connection_errors_to_domain

log = logging.getLogger(__name__)
T = TypeVar("T")


class ReportReader:
    def __init__(self, primary_dsn: str, replica_dsn: str = "", *, pool_max_size: int = 2,
                 statement_timeout: float = 30.0, replica_wait: float = 1.0, acquire_timeout: float = 5.0) -> None:
        self.statement_timeout_ms = max(1, int(statement_timeout * 1000))
        self.replica_wait = replica_wait
        # min_size 0: a server that never runs a report holds no connection for it.
        self.primary = Database(primary_dsn, min_size=0, max_size=pool_max_size, acquire_timeout=acquire_timeout)
        self.replica: AsyncConnectionPool | None = None
        if replica_dsn:
            self.replica = Database(replica_dsn, min_size=0, max_size=pool_max_size).pool

    async def open(self) -> None:
        await self.primary.open()
        if self.replica is not None:
            await self.replica.open(wait=False)

    async def close(self) -> None:
        await self.primary.close()
        if self.replica is not None:
            await self.replica.close()

    async def read(self, work: Callable[[Connection], Awaitable[T]]) -> tuple[T, str]:
        """``work(conn)`` in a read-only transaction; returns its result and where it ran ("replica", "primary")."""
        if self.replica is not None:
            try:
                async with connection_errors_to_domain():
                    async with self.replica.connection(timeout=self.replica_wait) as conn, conn.transaction():
                        result = await self._guarded(conn, work)
                        return result, "replica" if await store.in_recovery(conn) else "primary"
            except (Unavailable, PoolTimeout) as exc:
                if getattr(exc, "reason", Reason.DATABASE_UNAVAILABLE) is not Reason.DATABASE_UNAVAILABLE:
                    raise
                log.warning("reports: the replica did not answer (%s); reading on the primary", exc)
        return await self.primary.run(lambda conn: self._guarded(conn, work), what="report"), "primary"

    async def _guarded(self, conn: Connection, work: Callable[[Connection], Awaitable[T]]) -> T:
        await store.set_read_only(conn, self.statement_timeout_ms)
        try:
            return await work(conn)
        except pg_errors.QueryCanceled as exc:
            # Raised here, before the store's edge would call it "database unavailable" and run it again.
            raise Unavailable(f"the report ran longer than {self.statement_timeout_ms / 1000:g}s "
                              "(reports.statement_timeout_seconds) and was stopped; ask for a shorter period",
                              Reason.DEADLINE_EXCEEDED) from exc
