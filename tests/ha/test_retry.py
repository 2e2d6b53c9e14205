"""Ride-through in the store: a call waits for the database up to its deadline, and no longer.

A real PostgreSQL is started *after* the call began (as a new primary appears after a
failover); the call must get its connection and succeed. Without a deadline, or with one
shorter than the outage, it must fail with DATABASE_UNAVAILABLE in time.
"""

from __future__ import annotations

import asyncio
import shutil
import time
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest

from parkgate.server.domain.errors import Reason, Unavailable
from parkgate.server.pg import PostgresInstance, free_port
from parkgate.server.store import Database
from parkgate.server.store.retry import MAX_DELAY, budget, call_deadline, retry_idempotent, set_call_deadline
from tests.fixtures.postgres import TEST_SETTINGS, make_test_dir
from tests.fixtures.wait import until

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def stopped_instance() -> Iterator[PostgresInstance]:
    """An initialized but stopped PostgreSQL (trust auth on loopback): tests start and stop it."""
    base = make_test_dir("parkgate-retry-")
    pg = PostgresInstance(base / "data", port=free_port(), auth="trust", settings=TEST_SETTINGS)
    pg.initialize()
    try:
        yield pg
    finally:
        if pg.is_running():
            pg.stop("immediate", timeout=30)
        shutil.rmtree(base, ignore_errors=True)


async def test_a_call_waits_for_a_database_that_appears_within_its_deadline(
    stopped_instance: PostgresInstance,
) -> None:
    db = Database(stopped_instance.conninfo(), min_size=1, max_size=2, acquire_timeout=0.5, connect_timeout=1)
    await db.open()
    try:
        async def call() -> datetime:
            set_call_deadline(120)  # what the gRPC interceptor does for a deadline far past the outage

            async def work(conn) -> datetime:  # type: ignore[no-untyped-def]
                return (await (await conn.execute("SELECT pg_postmaster_start_time() AS t")).fetchone())["t"]

            return await db.run(work, what="the test query")

        asked_at = datetime.now(UTC)
        task = asyncio.create_task(call())
        # the "failover": the pool's waits time out twice (each longer than acquire_timeout), the call goes on
        await until(lambda: db.pool.get_stats().get("requests_errors", 0) >= 2 or task.done(),
                     "the pool never timed out")
        assert not task.done(), task
        await asyncio.to_thread(stopped_instance.start, 60)
        started_at = await asyncio.wait_for(task, 60)
        assert started_at > asked_at  # the answer came from a server started after the call began
    finally:
        await db.close()
        await asyncio.to_thread(stopped_instance.stop, "fast", 30)


async def test_without_a_deadline_the_wait_is_the_acquire_timeout(stopped_instance: PostgresInstance) -> None:
    db = Database(stopped_instance.conninfo(), min_size=1, max_size=2, acquire_timeout=1.0, connect_timeout=1)
    await db.open()
    try:
        started = time.monotonic()
        with pytest.raises(Unavailable) as info:
            async with db.connection():
                pass
        assert info.value.reason == Reason.DATABASE_UNAVAILABLE
        assert time.monotonic() - started >= 0.9  # it waited (a lower bound: a slow machine only adds to it)
        assert db.pool.get_stats().get("requests_errors", 0) == 1  # one wait of acquire_timeout, not asked again
    finally:
        await db.close()


async def test_retry_gives_up_at_the_deadline_and_never_retries_other_refusals() -> None:
    attempts = 0

    async def always_down() -> None:
        nonlocal attempts
        attempts += 1
        raise Unavailable("the database is not available: test")

    token = set_call_deadline(4.0)
    try:
        with pytest.raises(Unavailable):
            await retry_idempotent(always_down)
        # it kept trying until the next backoff would no longer fit: less than the longest delay was left
        assert budget(99.0) < MAX_DELAY
        assert attempts >= 2
    finally:
        call_deadline.reset(token)

    disk_full = 0

    async def full() -> None:
        nonlocal disk_full
        disk_full += 1
        raise Unavailable("the database disk is full", Reason.DISK_FULL)

    token = set_call_deadline(5)
    try:
        with pytest.raises(Unavailable):
            await retry_idempotent(full)
        assert disk_full == 1
    finally:
        call_deadline.reset(token)


async def test_a_task_started_during_a_call_does_not_inherit_its_deadline() -> None:
    """A background job spawned by a call (a batcher) must not die with the call's deadline."""
    token = set_call_deadline(0.5)
    try:
        assert budget(7.0) < 0.5
        child = asyncio.create_task(asyncio.sleep(0, result=None))
        await child
        assert await asyncio.create_task(_budget_in_task()) == 7.0
    finally:
        call_deadline.reset(token)


async def _budget_in_task() -> float:
    return budget(7.0)
