"""Riding through a database failover: wait and retry within the caller's deadline.

During a Patroni failover the primary is gone for 3-30 s (docs/ha.md). A call
that fails the moment its connection breaks turns every failover into a burst
of errors at the windows and gates; a call that simply waits, up to the
deadline its caller gave it, succeeds on the new primary. Two tools, both
bounded by :data:`call_deadline`:

* :func:`acquire` gets a pooled connection, asking the pool again in short
  slices until the deadline. Asking again matters: psycopg_pool (with
  ``reconnect_timeout=0``) makes a couple of connection attempts per demand and
  then waits for the next demand, so a single long wait would sleep through the
  new primary's arrival. Nothing has been executed yet, so this is safe for
  every operation.
* :func:`retry_idempotent` re-runs a whole unit of work after the database
  became unavailable *during* it (connection lost, admin shutdown, the server
  turned read-only because it was demoted). Only for work that may run twice
  with the effect of once: reads, upserts, and writes keyed by a client request
  id (the unique key makes the second run a no-op or a conflict the caller
  resolves). A plain INSERT is not such work: an unknown COMMIT outcome could
  then apply twice.

:data:`call_deadline` is set per gRPC call from the client's deadline
(``parkgate.server.rpc.deadline``), for the task serving the call only; without one
(background jobs, tasks started by a call, a call without a deadline) the
defaults passed in apply.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from contextvars import ContextVar, Token
from typing import Any, TypeVar

from psycopg_pool import AsyncConnectionPool, PoolTimeout

from parkgate.server.domain.errors import Reason, Unavailable

log = logging.getLogger(__name__)

T = TypeVar("T")

#: (the task serving the call, time.monotonic() by which it must answer); None: no deadline known.
#: The task is kept because asyncio copies context variables into every task created inside the
#: call: a background job started during a call (a batcher, a cache refresher) must not inherit a
#: deadline that expires with that call. See :func:`set_call_deadline`.
call_deadline: ContextVar[tuple[object, float] | None] = ContextVar("parkgate_call_deadline", default=None)

#: Time kept back from the deadline to send the answer (an error is more useful than DEADLINE_EXCEEDED).
MARGIN = 0.2
#: Longest single wait for a pooled connection before asking the pool again.
ACQUIRE_SLICE = 1.0
FIRST_DELAY = 0.05
MAX_DELAY = 1.0


def set_call_deadline(seconds: float | None) -> Token[tuple[object, float] | None]:
    """The current call must answer within ``seconds`` (None: no deadline); for this task only."""
    value = None if seconds is None else (_current_task(), time.monotonic() + seconds)
    return call_deadline.set(value)


def _current_task() -> object:
    try:
        return asyncio.current_task()
    except RuntimeError:  # no running loop
        return None


def budget(default: float) -> float:
    """Seconds this operation may still take: up to the call's deadline, else ``default``."""
    entry = call_deadline.get()
    if entry is None or entry[0] is not _current_task():
        return default
    return max(0.0, entry[1] - time.monotonic() - MARGIN)


def backoff(attempt: int) -> float:
    """Exponential delay with jitter (so many servers do not retry in step)."""
    return min(MAX_DELAY, FIRST_DELAY * 2**attempt) * random.uniform(0.5, 1.0)


@asynccontextmanager
async def acquire(pool: AsyncConnectionPool[Any], default_timeout: float) -> AsyncIterator[Any]:
    """A connection from ``pool``, waiting up to the call's deadline (else ``default_timeout``)."""
    ends = time.monotonic() + budget(default_timeout)
    attempt = 0
    while True:
        left = ends - time.monotonic()
        try:
            cm = pool.connection(timeout=max(0.01, min(ACQUIRE_SLICE, left)))
            conn = await cm.__aenter__()
        except PoolTimeout:
            if time.monotonic() + FIRST_DELAY >= ends:
                raise
            attempt += 1
            if attempt == 1:
                log.info("no database connection yet; waiting up to %.1fs more", max(0.0, ends - time.monotonic()))
            continue
        break
    try:
        yield conn
    except BaseException as exc:
        if not await cm.__aexit__(type(exc), exc, exc.__traceback__):
            raise
    else:
        await cm.__aexit__(None, None, None)


async def retry_idempotent(work: Callable[[], Awaitable[T]], *, what: str = "", default_budget: float = 10.0) -> T:
    """Run ``work``; while the database is unavailable, run it again with backoff until the deadline.

    Only :class:`Unavailable` with reason ``DATABASE_UNAVAILABLE`` is retried
    (not DISK_FULL, not a refusal): see the module docstring for which work
    may be passed here.
    """
    ends = time.monotonic() + budget(default_budget)
    attempt = 0
    while True:
        try:
            return await work()
        except Unavailable as exc:
            if exc.reason != Reason.DATABASE_UNAVAILABLE:
                raise
            delay = backoff(attempt)
            if time.monotonic() + delay >= ends:
                log.warning("giving up %s after %d attempts: %s", what or "database work", attempt + 1, exc)
                raise
            attempt += 1
            log.info("retrying %s in %.2fs (attempt %d): %s", what or "database work", delay, attempt + 1, exc)
            await asyncio.sleep(delay)
