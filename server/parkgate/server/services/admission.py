"""The validation pipeline: every gate stream of a server feeds one micro-batcher.

Why batches: a signature costs ~70 µs of CPU and a durable commit a WAL
fsync (BRIEF); one transaction per validation tops out around a thousand a
second, one statement for 64 validations at tens of thousands. So:

* requests from all gates queue here; the collector takes whatever is queued
  (up to ``max_batch``) the moment a database worker is free. While all
  workers are busy, requests pile up and the next batch is bigger: the batch
  size follows the load by itself, and an idle server answers a lone scan at
  once, with no waiting for company;
* the native core verifies the batch's codes with the GIL released (a worker
  thread), forged and garbled codes are answered without touching the database;
* ONE round trip per batch decides the rest (``admit_batch()``), durably,
  before any result is sent.

``mode="per_validation"`` runs each validation in its own transaction through
the very same code: the baseline the benchmark compares against.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Literal
from zoneinfo import ZoneInfo

from parkgate import native
from parkgate.server.domain.admission import Decision, ValidationItem, code_verdict
from parkgate.server.domain.errors import ParkgateError
from parkgate.server.domain.sales import normalize_card_uid
from parkgate.server.store import Database
from parkgate.server.store import gates as store
from parkgate.server.store import sales as sales_store

log = logging.getLogger(__name__)

Mode = Literal["batched", "per_validation"]
#: Re-read the signing keys at most this often when a code names an unknown key.
KEYRING_REFRESH_SECONDS = 5.0


@dataclass(slots=True)
class _Pending:
    item: ValidationItem
    future: asyncio.Future[Decision]


@dataclass(slots=True)
class PipelineStats:
    batches: int = 0
    validations: int = 0
    largest_batch: int = 0
    sizes: list[int] = field(default_factory=list)  # recent batch sizes, for the benchmark report

    def record(self, size: int) -> None:
        self.batches += 1
        self.validations += size
        self.largest_batch = max(self.largest_batch, size)
        self.sizes.append(size)
        if len(self.sizes) > 10_000:
            del self.sizes[:5_000]


class AdmissionPipeline:
    def __init__(self, db: Database, *, mode: Mode = "batched", max_batch: int = 256, workers: int = 1) -> None:
        self.db = db
        self.mode = mode
        self.max_batch = max_batch
        self.workers = workers
        self.stats = PipelineStats()
        self.keyring = native.Keyring()
        self._keyring_loaded_at = 0.0
        self._queue: asyncio.Queue[_Pending] = asyncio.Queue()
        self._slots = asyncio.Semaphore(workers)
        self._collector: asyncio.Task[None] | None = None
        self._running: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        if self.mode == "batched" and self._collector is None:
            self._collector = asyncio.create_task(self._collect(), name="admission-collector")

    async def stop(self) -> None:
        if self._collector is not None:
            self._collector.cancel()
            await asyncio.gather(self._collector, return_exceptions=True)
            self._collector = None
        await asyncio.gather(*self._running, return_exceptions=True)

    # --- keys ------------------------------------------------------------------------

    async def load_keyring(self, *, force: bool = False) -> native.Keyring:
        """The public keys codes are verified with (re-read when a code names a key we do not know)."""
        if not force and time.monotonic() - self._keyring_loaded_at < KEYRING_REFRESH_SECONDS:
            return self.keyring
        async with self.db.connection() as conn:
            rows = await sales_store.public_keys(conn)
        self.keyring = native.Keyring(
            (r["key_id"], bytes(r["public_key"]), native.KeyState[r["state"].upper()]) for r in rows
        )
        self._keyring_loaded_at = time.monotonic()
        return self.keyring

    # --- the way in --------------------------------------------------------------------

    def submit(self, item: ValidationItem) -> asyncio.Future[Decision]:
        """Queue a validation; the future holds its decision (a gate stream answers from a callback:
        no task per validation on the hot path)."""
        if self.mode == "per_validation":
            return asyncio.ensure_future(self._decide_one(item))
        future: asyncio.Future[Decision] = asyncio.get_running_loop().create_future()
        self._queue.put_nowait(_Pending(item, future))
        return future

    async def _decide_one(self, item: ValidationItem) -> Decision:
        return (await self._decide([item]))[0]

    async def _collect(self) -> None:
        while True:
            batch = [await self._queue.get()]
            await self._slots.acquire()  # while every worker is busy, the queue fills: bigger batches
            while len(batch) < self.max_batch and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            task = asyncio.create_task(self._run(batch))
            self._running.add(task)
            task.add_done_callback(self._running.discard)

    async def _run(self, batch: list[_Pending]) -> None:
        try:
            decisions = await self._decide([p.item for p in batch])
        except Exception as exc:
            # The whole batch failed (the database stayed away past the deadline): every caller hears why.
            for pending in batch:
                if not pending.future.done():
                    pending.future.set_exception(exc)
        else:
            for pending, decision in zip(batch, decisions, strict=True):
                if not pending.future.done():
                    pending.future.set_result(decision)
        finally:
            self._slots.release()

    # --- deciding a batch ----------------------------------------------------------------

    async def _decide(self, items: Sequence[ValidationItem]) -> list[Decision]:
        self.stats.record(len(items))
        decisions: list[Decision | None] = [None] * len(items)
        serials: dict[int, int] = {}
        cards: dict[int, str] = {}
        for index, item in enumerate(items):
            if item.card_uid:
                try:
                    cards[index] = normalize_card_uid(item.card_uid)
                except ParkgateError:
                    decisions[index] = Decision.deny("UNKNOWN_CARD")
            elif not item.code:
                decisions[index] = Decision.deny("MALFORMED_CODE")
        coded = [i for i, item in enumerate(items) if decisions[i] is None and i not in cards]
        if coded:
            results = await self._verify([items[i] for i in coded])
            if any(r.reason == native.Reason.UNKNOWN_KEY for r in results):
                await self.load_keyring()  # a key made since we last looked: verify those again
                results = await self._verify([items[i] for i in coded])
            for index, result in zip(coded, results, strict=True):
                verdict = code_verdict(result, items[index].direction)
                if verdict != "OK":
                    decisions[index] = Decision.deny(verdict)
                else:
                    assert result.ticket is not None
                    serials[index] = result.ticket.serial
        # A gate that resends a request before its answer came puts the same key twice in one batch:
        # the database sees it once and both get its decision.
        first_of: dict[tuple[str, str], int] = {}
        copies: dict[int, int] = {}
        to_db = []
        for i in range(len(items)):
            if decisions[i] is None:
                key = (items[i].place.device_id, items[i].request_id)
                if key in first_of:
                    copies[i] = first_of[key]
                else:
                    first_of[key] = i
                    to_db.append(i)
        if to_db:
            rows = await self.db.run(lambda conn: store.admit_batch(conn, [
                {"device_id": items[i].place.device_id, "request_id": items[i].request_id,
                 "serial": serials.get(i), "card_uid": cards.get(i), "direction": items[i].direction,
                 "park_id": items[i].place.park_id, "attraction_id": items[i].place.attraction_id,
                 "await_passage": items[i].place.confirms_passage}
                for i in to_db
            ]), what="admit batch")
            for index, row in zip(to_db, rows, strict=True):
                decisions[index] = Decision(
                    allow=row["allow"], reason=row["reason"], ticket_id=row["ticket_id"] or "",
                    entries_left=row["entries_left"], persons=row["persons"], hold_for_check=row["hold_for_check"],
                    retried=row["retried"],
                )
        for copy, original in copies.items():
            decisions[copy] = decisions[original]
        return [d for d in decisions if d is not None]

    async def _verify(self, items: Sequence[ValidationItem]) -> list[native.Result]:
        """verify_batch per gate place (park, attraction), in a worker thread: the native core drops the GIL."""
        keyring = self.keyring
        now = datetime.now(UTC)
        groups: dict[tuple[int, int, str], list[int]] = {}
        for index, item in enumerate(items):
            groups.setdefault((item.place.park_number, item.place.attraction_slot, item.place.time_zone), []).append(index)

        def work() -> list[native.Result]:
            out: list[native.Result | None] = [None] * len(items)
            for (park, slot, zone), indexes in groups.items():
                offset = now.astimezone(ZoneInfo(zone)).utcoffset()
                results = native.verify_batch(
                    [items[i].code.strip() for i in indexes], keyring, now=int(now.timestamp()),
                    utc_offset=int(offset.total_seconds()) if offset else 0, park_id=park, attraction_id=slot,
                )
                for i, result in zip(indexes, results, strict=True):
                    out[i] = result
            return [r for r in out if r is not None]

        if len(items) == 1:  # a thread hop costs more than one verify (BRIEF): stay on the loop
            return work()
        return await asyncio.to_thread(work)
