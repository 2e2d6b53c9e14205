"""The connection pool, and the one edge where psycopg errors become domain errors.

Like Patroni's ``@catch_etcd_errors``, every store call goes through
:meth:`Database.connection` or :meth:`Database.transaction`, which turn
"the database is gone" into :class:`~parkgate.server.domain.errors.Unavailable`
(reason DATABASE_UNAVAILABLE) and constraint violations into
:class:`~parkgate.server.domain.errors.Conflict`. The layers above never see psycopg.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import TypeVar

import psycopg
from psycopg import errors as pg_errors
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from parkgate.server.domain.audit_outbox import CallRecord, current_call_record
from parkgate.server.domain.errors import Conflict, InvalidArgument, LockBusy, Reason, Unavailable

from . import retry

log = logging.getLogger(__name__)

Connection = psycopg.AsyncConnection[dict]
T = TypeVar("T")


@asynccontextmanager
async def connection_errors_to_domain() -> AsyncIterator[None]:
    """Translate psycopg/pool exceptions raised inside the block."""
    try:
        yield
    except PoolTimeout as exc:
        raise Unavailable("the database is not reachable (no connection within the time limit)") from exc
    except pg_errors.UniqueViolation as exc:
        raise Conflict(f"already exists: {exc.diag.constraint_name or exc}", Reason.ALREADY_EXISTS) from exc
    except pg_errors.ForeignKeyViolation as exc:
        raise InvalidArgument(f"refers to something that does not exist: {exc.diag.message_detail}",
                              Reason.NOT_FOUND) from exc
    except (pg_errors.CheckViolation, pg_errors.NotNullViolation, pg_errors.DataException) as exc:
        raise InvalidArgument(f"not accepted by the database: {exc.diag.message_primary}") from exc
    except (pg_errors.DeadlockDetected, pg_errors.SerializationFailure) as exc:
        # Transient by nature: the whole transaction may simply run again (callers that retry do).
        raise Unavailable(f"the database aborted a transaction that collided with another: {exc}") from exc
    except pg_errors.LockNotAvailable as exc:
        raise LockBusy(f"a table lock was not had in time: {exc}") from exc
    except pg_errors.DiskFull as exc:
        raise Unavailable("the database disk is full", Reason.DISK_FULL) from exc
    except (psycopg.OperationalError, pg_errors.AdminShutdown, pg_errors.ReadOnlySqlTransaction) as exc:
        raise Unavailable(f"the database is not available: {exc}") from exc


async def _stage_call_record(conn: Connection) -> CallRecord | None:
    """Inside a mutating call, stage its operation-log record in this transaction (once per call): if the
    change commits, so does the record; store/audit.py chains it or the drainer does (domain/audit_outbox.py).
    Here rather than in store/audit.py, which needs this module."""
    call = current_call_record.get()
    if call is not None:
        fields = call.describe()
        await conn.execute(
            """INSERT INTO audit_outbox (call_id, user_id, username, device_id, method, summary, peer)
               VALUES (%s, %s, %s, %s, %s, %s, %s) ON CONFLICT (call_id) DO NOTHING""",
            (call.call_id, fields["user_id"], fields["username"], fields["device_id"], fields["method"],
             Jsonb(fields["summary"]), fields["peer"]),
        )
    return call


class Database:
    """An async pool of connections to the primary, with rows as dicts."""

    def __init__(
        self,
        conninfo: str,
        *,
        min_size: int = 2,
        max_size: int = 20,
        acquire_timeout: float = 5.0,
        connect_timeout: float = 5.0,
    ) -> None:
        self.conninfo = conninfo
        self.acquire_timeout = acquire_timeout
        self.pool = AsyncConnectionPool(
            conninfo,
            min_size=min_size,
            max_size=max_size,
            open=False,
            timeout=acquire_timeout,
            kwargs={"row_factory": dict_row, "connect_timeout": max(1, int(connect_timeout))},
            # A connection that died with its server is found out before use,
            # not in the middle of a sale.
            check=AsyncConnectionPool.check_connection,
            # 0: a failed reconnection is given up after a second attempt, and every later demand
            # (a call, the health probe) starts a fresh one without backoff; retry.acquire asks
            # again every second, so a new primary is picked up within a second of its promotion.
            reconnect_timeout=0,
            name="parkgate",
        )

    async def open(self) -> None:
        # wait=False: a server may start while the database is down; health
        # says NOT_SERVING until it is reachable.
        await self.pool.open(wait=False)

    async def close(self) -> None:
        await self.pool.close()

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[Connection]:
        # Waits for a connection up to the call's deadline (a failover in progress), see retry.py.
        async with connection_errors_to_domain(), retry.acquire(self.pool, self.acquire_timeout) as conn:
            yield conn

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[Connection]:
        async with self.connection() as conn:
            async with conn.transaction():
                call = await _stage_call_record(conn)
                yield conn
            if call is not None:
                call.staged = True  # committed: from now on the row is the drainer's unless the call removes it

    async def run(self, work: Callable[[Connection], Awaitable[T]], *, what: str = "") -> T:
        """Run ``work(conn)`` in one transaction, again while the database is unavailable (up to the deadline).

        Only for idempotent work (reads, upserts, writes keyed by a client
        request id): see :mod:`parkgate.server.store.retry`.
        """

        async def once() -> T:
            async with self.transaction() as conn:
                return await work(conn)

        return await retry.retry_idempotent(once, what=what, default_budget=self.acquire_timeout)

    async def run_pipelined(self, work: Callable[[Connection], Awaitable[T]], *, what: str = "") -> T:
        """``run`` in pipeline mode: statements ``work`` sends without reading travel together, and the
        COMMIT goes with the last of them. A batch that reads once and then writes is two round trips."""

        async def once() -> T:
            async with self.connection() as conn:
                async with conn.pipeline(), conn.transaction():
                    call = await _stage_call_record(conn)
                    result = await work(conn)
                if call is not None:
                    call.staged = True
                return result

        return await retry.retry_idempotent(once, what=what, default_budget=self.acquire_timeout)

    async def probe(self, timeout: float = 2.0) -> bool:
        """Whether a writable primary answers now (used by health checking)."""
        try:
            async with self.pool.connection(timeout=timeout) as conn:
                cur = await conn.execute("SELECT NOT pg_is_in_recovery() AS writable")
                row = await cur.fetchone()
                return bool(row and row["writable"])
        except (PoolTimeout, psycopg.Error) as exc:
            log.debug("database probe failed: %s", exc)
            return False
