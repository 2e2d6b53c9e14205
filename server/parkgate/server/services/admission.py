"""The validation pipeline: every gate stream of a server feeds two stages that overlap.

1. **Verify** -- whatever has arrived is taken at once and its codes are
   authenticated by the native core (:func:`parkgate.native.authenticate_batch`,
   without the GIL, in a worker thread when there is more than one). A forged
   or garbled code is answered here and never reaches the database.
2. **Decide and commit** -- one batch in flight per server: round trip 1 locks
   the batch's parks and tickets and reads retried requests, the decision
   engine decides every item in order (:mod:`parkgate.server.domain.admission`),
   round trip 2 writes it all and commits. Answers go out only once durable.

While batch N commits, the verify stage keeps authenticating what arrives,
so batch N+1 is ready (and as big as the load made it) the moment the
database is free: the batch size follows the load by itself and an idle
server answers a lone scan at once.

Exactly once across servers: every batch locks its parks first, so batches
of one park on several servers run one after the other, and a retried
(device, request) finds the first decision committed. ``mode="per_validation"``
runs each validation in its own transaction through the same code: the
baseline the benchmark compares against.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

from parkgate import native
from parkgate.common import metrics
from parkgate.common.reason import Reason
from parkgate.rules import Direction, GatePlace
from parkgate.server.domain.admission import Admission, BatchOutcome, Decision, decide_batch
from parkgate.server.domain.errors import ParkgateError
from parkgate.server.domain.sales import normalize_card_uid
from parkgate.server.store import Database
from parkgate.server.store import admissions as store
from parkgate.server.store import sales as sales_store

if TYPE_CHECKING:
    from .flow import FlowRecorder

log = logging.getLogger(__name__)

Mode = Literal["batched", "per_validation"]
#: Re-read the signing keys at most this often when a code names an unknown key.
KEYRING_REFRESH_SECONDS = 5.0
#: Fewer codes than this are verified on the event loop: a thread hop costs more than a verify or two.
THREAD_THRESHOLD = 3


@dataclass(slots=True)
class Scan:
    """One validation as it came off the wire (converted once), and where its decision goes."""

    place: GatePlace
    request_id: str
    code: str
    card_uid: str
    direction: Direction
    future: asyncio.Future[Decision]
    arrived: float = 0.0  # time.monotonic() at submit: the decision latency metric starts here
    admission: Admission | None = None


@dataclass(slots=True)
class PipelineStats:
    batches: int = 0
    validations: int = 0
    largest_batch: int = 0
    refused_before_database: int = 0
    sizes: list[int] = field(default_factory=list)  # recent batch sizes, for the benchmark report

    def record(self, size: int) -> None:
        self.batches += 1
        self.validations += size
        self.largest_batch = max(self.largest_batch, size)
        self.sizes.append(size)
        if len(self.sizes) > 10_000:
            del self.sizes[:5_000]


def _settle(future: asyncio.Future[Decision], decision: Decision) -> None:
    if not future.done():
        future.set_result(decision)


class AdmissionPipeline:
    def __init__(self, db: Database, *, mode: Mode = "batched", max_batch: int = 256,
                 clock: Callable[[], float] = time.time) -> None:
        self.db = db
        self.mode = mode
        self.max_batch = max_batch
        self.clock = clock  # one reading per batch decides every item of it
        self.stats = PipelineStats()
        self.keyring = native.Keyring()
        self._keyring_loaded_at = 0.0
        self._inbox: list[Scan] = []
        self._inbox_ready = asyncio.Event()
        self._verified: list[Scan] = []
        self._verified_ready = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._singles: set[asyncio.Task[None]] = set()
        # the live flow's counters (S26), fed once per batch; None: nobody watches
        self.recorder: FlowRecorder | None = None

    async def start(self) -> None:
        if self.mode == "batched" and not self._tasks:
            self._tasks = [asyncio.create_task(self._verify_stage(), name="admission-verify"),
                           asyncio.create_task(self._commit_stage(), name="admission-commit")]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, *self._singles, return_exceptions=True)
        self._tasks = []

    # --- keys ------------------------------------------------------------------------

    async def load_keyring(self, *, force: bool = False) -> native.Keyring:
        """The public keys codes are verified with (re-read when a code names a key we do not know)."""
        if not force and time.monotonic() - self._keyring_loaded_at < KEYRING_REFRESH_SECONDS:
            return self.keyring
        async with self.db.connection() as conn:
            rows = await sales_store.public_keys(conn)
        self.keyring = native.Keyring(
            (r.key_id, r.public_key, native.KeyState[r.state.upper()]) for r in rows
        )
        self._keyring_loaded_at = time.monotonic()
        return self.keyring

    # --- the way in --------------------------------------------------------------------

    def submit(self, place: GatePlace, request_id: str, *, code: str = "", card_uid: str = "",
               direction: Direction) -> asyncio.Future[Decision]:
        """Queue a validation; the future holds its decision (no task per validation on the hot path)."""
        future: asyncio.Future[Decision] = asyncio.get_running_loop().create_future()
        scan = Scan(place, request_id, code, card_uid, direction, future, time.monotonic())
        if self.mode == "per_validation":
            task = asyncio.create_task(self._one(scan))
            self._singles.add(task)
            task.add_done_callback(self._singles.discard)
        else:
            self._inbox.append(scan)
            self._inbox_ready.set()
        return future

    async def _one(self, scan: Scan) -> None:
        try:
            authentic = await self._authenticate([scan])
            if authentic:
                await self._commit(authentic)
        except Exception as exc:
            if not scan.future.done():
                scan.future.set_exception(exc)

    # --- stage 1: authenticate ------------------------------------------------------------

    async def _verify_stage(self) -> None:
        while True:
            await self._inbox_ready.wait()
            scans, self._inbox = self._inbox, []
            self._inbox_ready.clear()
            try:
                authentic = await self._authenticate(scans)
            except Exception as exc:  # the keyring could not be read (database away): every caller hears why
                for scan in scans:
                    if not scan.future.done():
                        scan.future.set_exception(exc)
                continue
            if authentic:
                self._verified.extend(authentic)
                self._verified_ready.set()

    async def _authenticate(self, scans: Sequence[Scan]) -> list[Scan]:
        """Settle what is refused without the database; return the rest with their admissions."""
        coded: list[Scan] = []
        authentic: list[Scan] = []
        refused: list[tuple[Scan, Reason]] = []
        for scan in scans:
            if scan.card_uid:
                try:
                    uid = normalize_card_uid(scan.card_uid)
                except ParkgateError:
                    refused.append((scan, Reason.UNKNOWN_CARD))
                    continue
                scan.admission = Admission(scan.place, scan.request_id, scan.direction, card_uid=uid)
                authentic.append(scan)
            elif scan.code:
                coded.append(scan)
            else:
                refused.append((scan, Reason.MALFORMED_CODE))
        if coded:
            results = await self._verify([s.code for s in coded])
            if any(r.reason is Reason.UNKNOWN_KEY for r in results):
                await self.load_keyring()  # a key made since we last looked: verify those again
                results = await self._verify([s.code for s in coded])
            for scan, result in zip(coded, results, strict=True):
                if result.ok and result.ticket is not None:
                    code = result.ticket
                    scan.admission = Admission(scan.place, scan.request_id, scan.direction, serial=code.serial,
                                               code_valid_from=code.valid_from, code_valid_until=code.valid_until)
                    authentic.append(scan)
                else:
                    refused.append((scan, result.reason))
        if refused:
            self._refuse(refused)
        return authentic

    def _refuse(self, refused: list[tuple[Scan, Reason]]) -> None:
        """Answer what the code check refused, and count it once for the group."""
        self.stats.refused_before_database += len(refused)
        for scan, reason in refused:
            _settle(scan.future, Decision.deny(reason))
        done = time.monotonic()
        metrics.count_decisions("before_database", [(reason.value, False) for _, reason in refused])
        metrics.DECISION_LATENCY.observe_many([done - scan.arrived for scan, _ in refused], "before_database")
        if self.recorder is not None:
            self.recorder.refused_early([(scan.place, reason) for scan, reason in refused], time.time())

    async def _verify(self, codes: list[str]) -> list[native.Result]:
        keyring = self.keyring
        stripped = [c.strip() for c in codes]
        if len(stripped) < THREAD_THRESHOLD:
            return native.authenticate_batch(stripped, keyring)
        return await asyncio.to_thread(native.authenticate_batch, stripped, keyring)

    # --- stage 2: decide and commit ---------------------------------------------------------

    async def _commit_stage(self) -> None:
        while True:
            await self._verified_ready.wait()
            batch, self._verified = self._verified[: self.max_batch], self._verified[self.max_batch:]
            if not self._verified:
                self._verified_ready.clear()
            try:
                await self._commit(batch)
            except Exception as exc:
                # The whole batch failed (the database stayed away past the deadline): every caller hears why.
                for scan in batch:
                    if not scan.future.done():
                        scan.future.set_exception(exc)

    async def _commit(self, batch: list[Scan]) -> None:
        # A gate that resends a request before its answer came puts the same key twice in one batch:
        # the database sees it once and both get its decision.
        first: dict[tuple[str, str], Scan] = {}
        copies: list[tuple[Scan, Scan]] = []
        unique: list[Scan] = []
        for scan in batch:
            assert scan.admission is not None
            original = first.get(scan.admission.key)
            if original is None:
                first[scan.admission.key] = scan
                unique.append(scan)
            else:
                copies.append((scan, original))
        self.stats.record(len(unique))
        admissions = [s.admission for s in unique if s.admission is not None]
        outcome = await self.db.run_pipelined(lambda conn: self._transact(conn, admissions), what="admit batch")
        for scan, decision in zip(unique, outcome.decisions, strict=True):
            _settle(scan.future, decision)
        for scan, original in copies:
            if original.future.done() and not original.future.cancelled():
                _settle(scan.future, original.future.result())
        self._count(unique, outcome)

    def _count(self, unique: list[Scan], outcome: BatchOutcome) -> None:
        """Metrics and live-flow counters, once per batch (after the answers went out)."""
        done = time.monotonic()
        metrics.BATCH_SIZE.observe(len(unique))
        metrics.count_decisions("server", [(r.decision.reason.value, r.decision.allow) for r in outcome.recorded])
        metrics.DECISION_LATENCY.observe_many([done - scan.arrived for scan in unique], "database")
        if self.recorder is not None:
            self.recorder.decided(outcome.recorded, time.time())

    async def _transact(self, conn: store.Connection, admissions: list[Admission]) -> BatchOutcome:
        locked = await store.lock_batch(
            conn, {a.place.park_id for a in admissions}, [a.key for a in admissions],
            [a.serial for a in admissions if a.serial], [a.card_uid for a in admissions if a.card_uid],
            sorted({a.place.attraction_id for a in admissions if a.place.attraction_id}),
        )
        now = self.clock()
        outcome = decide_batch(
            admissions, now, parks={p: (lp.state, lp.time_zone) for p, lp in locked.parks.items()},
            prior=locked.prior, by_serial=locked.by_serial, by_card=locked.by_card,
            fares=locked.fares, calendar=locked.calendar, photos=locked.photos, swallow=locked.swallow,
        )
        rows = [store.DecisionRow(
            device_id=r.admission.place.device_id, request_id=r.admission.request_id,
            ticket_id=r.decision.ticket_id or None, park_id=r.park_id, attraction_id=r.admission.place.attraction_id,
            direction=r.admission.direction, allow=r.decision.allow, reason=r.decision.reason.value, moved=r.moved,
            counted=r.counted, entries_left=r.decision.entries_left, hold_for_check=r.decision.hold_for_check,
            awaiting_passage=(r.decision.allow and r.admission.direction == "in"
                              and r.admission.place.confirms_passage),
            charged=r.decision.charged, balance=r.decision.balance) for r in outcome.recorded]
        await store.write_batch(conn, now, list(outcome.tickets.values()), rows, list(outcome.parks.values()),
                                outcome.pause_changed)
        return outcome
