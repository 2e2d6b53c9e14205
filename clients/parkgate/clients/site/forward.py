"""Store and forward: the edge's own decisions and sales reach the cluster when it answers again.

The queue is the ``outbox`` table: records in the order they were made, with a
gap-free sequence per device, written in the same transaction as the answer
the gate or window got. The forwarder sends the oldest ``forward_batch``
records in one Site.Forward call, and deletes exactly those the cluster
acknowledged (``accepted``, now or as a replay). So:

* in order per device: a batch is a prefix of the queue, and the next batch is
  sent only after the previous one was acknowledged;
* idempotent: the cluster recognises a record by (device, journal, sequence) and
  by its request id (the journal is a random id the store made when it was
  created, so a replaced box starting again at 1 is new work, not a replay), so a batch sent again after a crash or a lost answer is a replay;
* resumable after kill -9: a record leaves the queue only in the transaction
  that saw its acknowledgement;
* backpressure: one call in flight, at most ``forward_batch`` records in it
  (halved each time the cluster misses the call's deadline or says it is
  busy, doubled back on success), a pause with backoff when the cluster is
  away or busy, and the decisions at the gates never wait for it.

A record the cluster refuses for good (a reason, not accepted: the cluster
keeps such records too) moves to ``rejected`` with its reason and is logged as
an ALERT; nothing is dropped silently. OUT_OF_ORDER and the cluster's
"cannot decide now" reasons keep the record in the queue for the next round.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

import grpc

from parkgate.common.reason import Reason
from parkgate.v1 import site_pb2

from .cluster import Cluster, reason_of, transient
from .store import SiteStore

log = logging.getLogger(__name__)


class Forwarder:
    def __init__(self, store: SiteStore, cluster: Cluster) -> None:
        self.store = store
        self.cluster = cluster
        self.wake = asyncio.Event()
        self.forwarded = 0
        self.conflicts = 0
        self.refused = 0
        # Shrinks by half when the cluster is too slow for a batch (deadline, busy), grows back on success.
        self.batch = cluster.config.forward_batch
        # On battery the queue waits (docs/power.md): back on steady mains it is forwarded.
        self.paused = False

    def kick(self) -> None:
        """Something new was queued: forward soon."""
        self.wake.set()

    async def run(self) -> None:
        cfg = self.cluster.config
        delay = cfg.reconnect_min_seconds
        log.debug("forwarder started: %d record(s) queued", self.store.pending_count())
        while True:
            if self.paused:
                self.wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.wake.wait(), 1.0)
                continue
            address = self.cluster.address
            try:
                sent = await self.forward_once()
            except grpc.aio.AioRpcError as exc:
                if exc.code() == grpc.StatusCode.UNAVAILABLE:
                    await self.cluster.next_server(address)
                elif exc.code() in (grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.RESOURCE_EXHAUSTED):
                    self.batch = max(1, self.batch // 2)
                level = logging.INFO if transient(exc) else logging.ERROR
                log.log(level, "forwarding paused: %s %s (%s); again in %.1fs", exc.code().name, exc.details(),
                        reason_of(exc) or "-", delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, cfg.reconnect_max_seconds)
                continue
            except Exception:  # forwarding must never stop for good: log, back off, try again
                log.exception("forwarding failed; again in %.1fs", delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, cfg.reconnect_max_seconds)
                continue
            delay = cfg.reconnect_min_seconds
            if sent:
                self.batch = min(cfg.forward_batch, self.batch * 2)
                await asyncio.sleep(0)  # let the gates' validations run between batches
                continue
            self.wake.clear()
            try:
                await asyncio.wait_for(self.wake.wait(), 1.0)
            except TimeoutError:
                pass

    async def forward_once(self) -> int:
        """Send the oldest batch and drop what the cluster acknowledged; how many left the queue."""
        cfg = self.cluster.config
        batch = self.store.pending(self.batch)
        if not batch:
            return 0
        log.debug("forwarding %d record(s) to %s", len(batch), self.cluster.address)
        request = site_pb2.ForwardRequest(records=[site_pb2.ForwardedRecord.FromString(r.body) for r in batch],
                                          journal_id=self.store.journal_id)
        reply = await self.cluster.stub().Forward(request, timeout=cfg.forward_timeout_seconds,
                                                  metadata=self.cluster.metadata())
        sent = {(r.device_id, r.sequence) for r in batch}
        done: list[tuple[str, int]] = []
        taken: list[tuple[str, int, int]] = []
        refused: list[tuple[str, int, str]] = []
        for ack in reply.acks:
            key = (ack.device_id, ack.sequence)
            if key not in sent:
                continue
            if ack.accepted:
                done.append(key)
                taken.append((*key, ack.taken_in))
                self.conflicts += ack.conflict
                if ack.conflict:
                    log.warning("forwarded %s #%d: the cluster recorded a conflict (admitted at another site)",
                                *key)
            else:
                reason = Reason.from_number(ack.reason).value
                if reason in ("DATABASE_UNAVAILABLE", "SERVER_OVERLOADED", "DEADLINE_EXCEEDED", "OUT_OF_ORDER"):
                    continue  # not a refusal of the record: send it again later (from the first unacknowledged)
                refused.append((*key, reason))
                log.error("ALERT forwarded %s #%d refused by the cluster: %s (kept in 'rejected')", *key, reason)
        self.store.acknowledge(done, refused, taken)
        log.debug("forwarded %d record(s), %d refused", len(done), len(refused))
        self.forwarded += len(done)
        self.refused += len(refused)
        if not done and not refused:
            raise _nothing_taken()
        return len(done) + len(refused)


def _nothing_taken() -> grpc.aio.AioRpcError:
    """The cluster acknowledged none of a batch: treat it as busy and back off."""
    return grpc.aio.AioRpcError(grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.aio.Metadata(), grpc.aio.Metadata(),
                                "the cluster took none of the batch")
