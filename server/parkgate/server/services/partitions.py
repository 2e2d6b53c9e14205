"""The partition maintenance job: partitions made ahead, expired ones dropped (migration 0005, docs/reports.md).

Every server runs the loop; an advisory lock lets one of them do each round.
Each round says what it decided in one log line. A round that cannot get its
locks quickly (gates busy) changes nothing and the next round tries again:
``create_ahead`` intervals of slack mean a late round never leaves a decision
without its partition (and the DEFAULT partition would catch it if it did).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from parkgate.server.config import PartitionSettings
from parkgate.server.domain import partitions as rules
from parkgate.server.domain.errors import LockBusy, ParkgateError
from parkgate.server.store import Database
from parkgate.server.store import partitions as store

log = logging.getLogger(__name__)

LOCK_TIMEOUT_SECONDS = 0.5
# A round that meets a busy table tries again a few times before leaving it to the next round: each try
# holds the gates back at most LOCK_TIMEOUT_SECONDS, and the pauses let the queued batches through.
ATTEMPTS_PER_ROUND = 4
PAUSE_BETWEEN_ATTEMPTS_SECONDS = 0.25


@dataclass(slots=True)
class Round:
    created: list[str] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)
    purged: int = 0
    skipped: bool = False

    def sentence(self) -> str:
        if self.skipped:
            return "partitions: another server holds the maintenance lock; nothing to do here"
        return (f"partitions: created {', '.join(self.created) or 'none'}; dropped {', '.join(self.dropped) or 'none'}"
                f"; {self.purged} expired rows purged from the default partitions")


class PartitionKeeper:
    def __init__(self, db: Database, settings: PartitionSettings, *, clock: Callable[[], float] = time.time) -> None:
        self.db = db
        self.settings = settings
        self.clock = clock

    async def turn(self) -> None:
        """One round as a background job (every ``maintenance_interval_seconds``; paused on battery, S30):
        a failed round is logged and the next one tries again."""
        try:
            await self.maintain()
        except ParkgateError as exc:  # database away, or a lock not had in time: the next round again
            log.warning("partitions: maintenance not done this round (%s)", exc)

    async def maintain(self, now: datetime | None = None) -> Round:
        """One round at ``now`` (default: the server's clock): create what is missing ahead, drop what expired.
        A try that cannot get a table lock in time rolls back whole and is made again after a pause; after
        ATTEMPTS_PER_ROUND tries the LockBusy goes to the caller (the job logs it; the next round tries)."""
        now = now or datetime.fromtimestamp(self.clock(), UTC)
        for attempt in range(1, ATTEMPTS_PER_ROUND + 1):
            try:
                return await self._maintain_once(now)
            except LockBusy as exc:
                if attempt == ATTEMPTS_PER_ROUND:
                    raise
                log.info("partitions: a table was busy (%s); trying again (%d/%d)", exc, attempt, ATTEMPTS_PER_ROUND)
                await asyncio.sleep(PAUSE_BETWEEN_ATTEMPTS_SECONDS * attempt)
        raise AssertionError("unreachable")

    async def _maintain_once(self, now: datetime) -> Round:
        s = self.settings
        done = Round()
        async with self.db.transaction() as conn:
            if not await store.try_maintenance_lock(conn):
                done.skipped = True
                return done
            await store.short_lock_timeout(conn, LOCK_TIMEOUT_SECONDS)
            for table in store.TABLES:
                existing = await store.partitions(conn, table)
                for bounds in rules.missing(rules.wanted(now, s.interval, s.create_ahead), [b for _, b in existing]):
                    done.created.append(await store.create_partition(conn, table, bounds))
                old = set(rules.expired([b for _, b in existing], now, s.retention_days))
                for name, bounds in existing:
                    if bounds in old:
                        await store.drop_partition(conn, table, name)
                        done.dropped.append(name)
                done.purged += await store.purge_default(conn, table, rules.cutoff(now, s.retention_days))
        log.info(done.sentence())
        return done
