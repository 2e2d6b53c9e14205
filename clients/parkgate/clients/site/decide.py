"""One validation at the edge: the cluster's decision when it comes in time, the edge's own otherwise.

Online, validations of all the site's gates are collected into one
Site.Validate call (up to ``batch_max``, the first waiting at most
``batch_wait_ms``) with the deadline ``decision_deadline_ms``. When no
decision comes in time, the call fails, or the cluster answers
DATABASE_UNAVAILABLE / SERVER_OVERLOADED, the edge decides alone with
:func:`parkgate.rules.decide` (:mod:`.local`), writes the answer, the ticket's
new uses and the record to forward in ONE durable SQLite transaction, and only
then answers the gate.

One admission per ticket within the site: validations of the same ticket (by
serial, or card UID) are serialised by a lock held across the online attempt
and the local decision, and every admission the edge learns of (online or its
own) is kept in ``uses``; so a second gate's scan of the same ticket is
decided knowing the first. A late answer from the cluster for a validation the
edge already decided alone is dropped: the forwarded record carries the same
request id, so the cluster returns (and keeps) its one decision for it.

A ticket the edge admitted alone is decided alone again until the cluster has
acknowledged that record (``unsettled``): before then the cluster does not know
the use, and asking it would let the same single-use ticket in twice (an
online call that timed out in a failover, the edge's admission, then the
cluster's "allow" for the second scan).
"""

from __future__ import annotations

import asyncio
import logging
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass

import grpc
from google.protobuf.timestamp_pb2 import Timestamp

from parkgate import native
from parkgate.common import metrics
from parkgate.common.reason import Reason
from parkgate.rules import GatePlace, ParkState, Verdict, move_park
from parkgate.v1 import gate_pb2, site_pb2

from .cluster import UNDECIDED_REASONS, Cluster, transient
from .local import SitePicture, local_decision, result_of, use_given_back, use_to_json
from .store import SiteStore

log = logging.getLogger(__name__)


@dataclass(slots=True)
class _Waiting:
    item: site_pb2.SiteValidation
    future: asyncio.Future[gate_pb2.ValidationResult | None]


def ticket_key(request: gate_pb2.ValidationRequest) -> str:
    """What identifies the ticket behind a request before any signature check (for the per-ticket lock)."""
    if request.WhichOneof("credential") == "card_uid":
        return "card:" + request.card_uid.strip().upper()
    try:
        return f"serial:{native.decode(request.code.strip()).serial}"
    except (native.CodeError, ValueError):
        return "code:" + request.code[:200]


class Decider:
    """Answers validations for the site's gates; counts what it did for the log and the benchmark."""

    def __init__(self, store: SiteStore, cluster: Cluster, picture: SitePicture) -> None:
        self.store = store
        self.cluster = cluster
        self.picture = picture
        cfg = cluster.config
        self.deadline = cfg.decision_deadline_ms / 1000
        self.batch_max = cfg.batch_max
        self.batch_wait = cfg.batch_wait_ms / 1000
        self.charge_limit = cfg.offline_stored_value_limit
        self._batch: list[_Waiting] = []
        self._flush_handle: asyncio.TimerHandle | None = None
        self._locks: weakref.WeakValueDictionary[str, asyncio.Lock] = weakref.WeakValueDictionary()
        self._tasks: set[asyncio.Task[None]] = set()
        self.online_decisions = 0
        self.offline_decisions = 0
        # Told when the edge's own count pauses or resumes entry while it decides alone (the handler tells the gates).
        self.park_state_changed: Callable[[SitePicture], None] | None = None
        # On battery (docs/power.md): every validation is decided here at once, the cluster is not asked.
        self.local_only = False

    async def validate(self, place: GatePlace, request: gate_pb2.ValidationRequest) -> gate_pb2.ValidationResult:
        prior = self.store.answer(place.device_id, request.request_id)
        if prior is not None:  # a retry (or a gate forwarding its own journal): the first answer again
            return gate_pb2.ValidationResult.FromString(prior)
        key = ticket_key(request)
        lock = self._locks.get(key)
        if lock is None:
            lock = self._locks[key] = asyncio.Lock()
        async with lock:
            prior = self.store.answer(place.device_id, request.request_id)
            if prior is not None:
                return gate_pb2.ValidationResult.FromString(prior)
            asking = self.cluster.may_ask() and not self.local_only and not self.store.unsettled(key)
            result = await self._ask(place, request) if asking else None
            if result is not None:
                if result.HasField("balance") and not result.balance.currency and place.park_id in self.picture.parks:
                    result.balance.currency = self.picture.parks[place.park_id].currency
                self._keep_online(place, request, result, key)
                metrics.count_decisions("server", [(Reason.from_number(result.reason).value, result.allow)])
                return result
            result = self.decide_alone(place, request, key=key)
            metrics.count_decisions("edge", [(Reason.from_number(result.reason).value, result.allow)])
            return result

    # --- alone ----------------------------------------------------------------------------------

    def decide_alone(self, place: GatePlace, request: gate_pb2.ValidationRequest,
                     now: float | None = None, key: str | None = None) -> gate_pb2.ValidationResult:
        """The engine's decision here; an admission is durable (answer + uses + forward record, one fsync)
        before it returns. A refusal is not written: it consumed nothing."""
        now = time.time() if now is None else now
        if place.park_id not in self.picture.parks:
            return result_of(request.request_id, Verdict(False, Reason.NO_OFFLINE_TERMS))
        outcome = local_decision(self.store, self.picture, place, request, now, self.charge_limit)
        verdict = outcome.verdict
        result = result_of(request.request_id, verdict, self.picture.parks[place.park_id].currency)
        self.offline_decisions += 1
        if not verdict.allow:
            return result  # a refusal changes nothing: no write, no fsync (a retry is decided again)
        body = result.SerializeToString()
        paused = self._pause_after(place.park_id, outcome.park, verdict.moved) if verdict.moved else None
        with self.store.transaction() as tx:
            if paused is not None:
                SiteStore.upsert(tx, "park_states", (place.park_id,), paused.SerializeToString())
            if verdict.allow and verdict.ticket is not None and outcome.serial:
                SiteStore.put_use(tx, outcome.serial, use_to_json(verdict.ticket))
            SiteStore.put_answer(tx, place.device_id, request.request_id, body, True)
            decided_at = Timestamp()
            decided_at.FromNanoseconds(int(now * 1e9))
            sequence = SiteStore.enqueue(tx, place.device_id, lambda seq: site_pb2.ForwardedRecord(
                device_id=place.device_id, sequence=seq, decision=site_pb2.OfflineDecision(
                    request=_with_scan_time(request, decided_at), result=result, decided_at=decided_at,
                    charged=verdict.charged),
            ).SerializeToString())
            key = key or ticket_key(request)
            SiteStore.put_unsettled(tx, place.device_id, sequence, key, place.park_id, verdict.moved)
            SiteStore.put_admitted(tx, place.device_id, request.request_id, key, outcome.serial, place.park_id,
                                   verdict.moved, verdict.counted)
            if verdict.charged and verdict.ticket is not None:
                # counted against the card's offline limit until the feed shows the cluster took it
                SiteStore.put_charge(tx, place.device_id, sequence, verdict.ticket.ticket_id, verdict.charged, now)
        if paused is not None:
            self.picture.park_states[place.park_id] = paused
            log.warning("park %s %s by this site's own count while the cluster is away", place.park_id,
                        "full: entry paused" if paused.entry_paused else "below its cap again: entry resumes")
            if self.park_state_changed is not None:
                self.park_state_changed(self.picture)
        return result

    def _pause_after(self, park_id: str, before: ParkState | None, moved: int) -> site_pb2.SiteParkState | None:
        """The park's state with entry paused or resumed, when ``moved`` more people take this edge's count
        across the cap (S27, with its margin); None when the pause stays as it is. Kept in ``park_states``
        until the feed brings the cluster's own count again."""
        fed = self.picture.park_states.get(park_id)
        if fed is None or before is None:
            return None
        after = move_park(before, moved)
        if after.paused == fed.entry_paused:
            return None
        changed = site_pb2.SiteParkState()
        changed.CopyFrom(fed)
        changed.entry_paused = after.paused
        return changed

    # --- online -----------------------------------------------------------------------------------

    async def _ask(self, place: GatePlace, request: gate_pb2.ValidationRequest) -> gate_pb2.ValidationResult | None:
        future: asyncio.Future[gate_pb2.ValidationResult | None] = asyncio.get_running_loop().create_future()
        self._batch.append(_Waiting(site_pb2.SiteValidation(device_id=place.device_id, request=request), future))
        if len(self._batch) >= self.batch_max:
            self._flush()
        elif self._flush_handle is None:
            self._flush_handle = asyncio.get_running_loop().call_later(self.batch_wait, self._flush)
        try:
            return await asyncio.wait_for(asyncio.shield(future), self.deadline)
        except TimeoutError:
            self.cluster.failed(f"no decision within {self.deadline * 1000:.0f} ms")
            return None

    def _flush(self) -> None:
        if self._flush_handle is not None:
            self._flush_handle.cancel()
            self._flush_handle = None
        batch, self._batch = self._batch, []
        if batch:
            task = asyncio.create_task(self._send(batch))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _send(self, batch: list[_Waiting]) -> None:
        request = site_pb2.SiteValidateRequest(items=[w.item for w in batch])
        address = self.cluster.address
        try:
            reply = await self.cluster.stub().Validate(request, timeout=self.deadline, metadata=self.cluster.metadata())
        except Exception as exc:  # whatever went wrong, these people get the edge's own decision
            if isinstance(exc, grpc.aio.AioRpcError):
                self.cluster.failed(f"Validate failed: {exc.code().name} {exc.details()}")
                if exc.code() == grpc.StatusCode.UNAVAILABLE:
                    await self.cluster.next_server(address)
                elif not transient(exc):
                    log.error("the cluster refused a validation batch: %s %s", exc.code().name, exc.details())
            else:
                log.exception("validation batch to %s failed", address)
                self.cluster.failed(f"Validate failed: {type(exc).__name__}")
            for w in batch:
                if not w.future.done():
                    w.future.set_result(None)
            return
        answers = {(r.device_id, r.result.request_id): r.result for r in reply.results}
        undecided = 0
        for w in batch:
            result = answers.get((w.item.device_id, w.item.request.request_id))
            if result is not None and Reason.from_number(result.reason).value in UNDECIDED_REASONS:
                result, undecided = None, undecided + 1
            if not w.future.done():
                w.future.set_result(result)
        if undecided:
            self.cluster.failed(f"{undecided} validation(s) answered without a decision")
        else:
            self.cluster.answered()

    def _keep_online(self, place: GatePlace, request: gate_pb2.ValidationRequest,
                     result: gate_pb2.ValidationResult, key: str) -> None:
        """Remember the cluster's answer and, for an admission, the ticket's new uses (for when we decide alone)."""
        self.online_decisions += 1
        use: tuple[int, bytes] | None = None
        replayed: Verdict | None = None
        if result.allow and place.park_id in self.picture.parks:
            outcome = local_decision(self.store, self.picture, place, request, time.time(), count_capacity=False)
            if outcome.verdict.allow and outcome.verdict.ticket is not None and outcome.serial:
                use = (outcome.serial, use_to_json(outcome.verdict.ticket))
                replayed = outcome.verdict
        with self.store.transaction() as tx:
            if use is not None:
                SiteStore.put_use(tx, *use)
            if result.allow:  # what a passage report needs to give it back (the cluster's figures when no replay)
                SiteStore.put_admitted(tx, place.device_id, request.request_id, key,
                                       use[0] if use else 0, place.park_id,
                                       replayed.moved if replayed else 0, replayed.counted if replayed else True)
            SiteStore.put_answer(tx, place.device_id, request.request_id, result.SerializeToString(), False)

    # --- passage reports ------------------------------------------------------------------------------

    def give_back(self, place: GatePlace, request_id: str, now: float | None = None) -> bool:
        """The gate reported that the person admitted under ``request_id`` did not pass: the ticket's use and the
        place inside come back here at once, and the report is forwarded so the cluster gives them back too
        (as for its own gates). Until the cluster has it, the ticket is decided here. Once only."""
        made = self.store.admitted(place.device_id, request_id)
        if made is None or made.given_back:
            return False
        now = time.time() if now is None else now
        reported_at = Timestamp()
        reported_at.FromNanoseconds(int(now * 1e9))
        with self.store.transaction() as tx:
            SiteStore.mark_given_back(tx, place.device_id, request_id)
            mine = self.store.use(made.serial) if made.serial else None
            if mine is not None:
                SiteStore.put_use(tx, made.serial, use_given_back(mine, made.counted, made.moved))
            sequence = SiteStore.enqueue(tx, place.device_id, lambda seq: site_pb2.ForwardedRecord(
                device_id=place.device_id, sequence=seq,
                not_passed=site_pb2.NotPassed(request_id=request_id, reported_at=reported_at)).SerializeToString())
            SiteStore.put_unsettled(tx, place.device_id, sequence, made.ticket_key, made.park_id, -made.moved,
                                    made.serial, made.counted)
        log.info("gate %s: %s not passed, entry given back", place.device_id, request_id)
        return True


def _with_scan_time(request: gate_pb2.ValidationRequest, at: Timestamp) -> gate_pb2.ValidationRequest:
    copy = gate_pb2.ValidationRequest()
    copy.CopyFrom(request)
    if not copy.HasField("scanned_at"):
        copy.scanned_at.CopyFrom(at)
    return copy
