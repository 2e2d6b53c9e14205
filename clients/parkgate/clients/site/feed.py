"""Consumes the cluster's Site.Feed into the local store: resumable from a version, full resync on request.

Each FeedBatch is applied in one transaction together with its version, so
after a crash the edge resumes exactly after the last batch it kept (a batch
is either wholly in the store or not at all). A batch marked ``full_resync``
first empties the feed's tables: what follows is the whole picture. After each
batch the ``on_change`` callback runs (the servicers rebuild the keyring and
tell connected gates about new or revoked keys).
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from collections.abc import Callable

import grpc

from parkgate.common import metrics
from parkgate.v1 import site_pb2

from .cluster import Cluster
from .store import SiteStore

log = logging.getLogger(__name__)

VERSION_KEY = "feed_version"


def apply_item(tx: sqlite3.Connection, item: site_pb2.FeedItem) -> None:
    """One change of the feed into the store (inside the batch's transaction)."""
    kind = item.WhichOneof("item")
    if kind == "park":
        SiteStore.upsert(tx, "parks", (item.park.park_id,), item.park.SerializeToString())
    elif kind == "key":
        SiteStore.put_key(tx, item.key.key_id, item.key.public_key, 1 if item.key.retired else 0)
    elif kind == "revoked_key_id":
        SiteStore.revoke_key(tx, item.revoked_key_id)
    elif kind == "ticket":
        SiteStore.upsert(tx, "tickets", (item.ticket.ticket_id, item.ticket.serial), item.ticket.SerializeToString())
    elif kind == "card":
        SiteStore.put_card(tx, item.card.card_uid.upper(), item.card.ticket_id, item.card.blocked)
    elif kind == "product":
        SiteStore.upsert(tx, "products", (item.product.id,), item.product.SerializeToString())
    elif kind == "price":
        p = item.price
        SiteStore.upsert(tx, "prices", (p.product_id, p.day_type, p.peak_name), p.SerializeToString())
    elif kind == "holiday":
        h = item.holiday
        day = f"{h.date.year:04d}-{h.date.month:02d}-{h.date.day:02d}"
        SiteStore.upsert(tx, "holidays", (h.park_id, day), h.SerializeToString())
    elif kind == "unbound_card_uid":
        SiteStore.delete(tx, "cards", "card_uid", item.unbound_card_uid.upper())
    elif kind == "removed_holiday":
        h = item.removed_holiday
        SiteStore.delete(tx, "holidays", "park_id || '/' || day",
                         f"{h.park_id}/{h.date.year:04d}-{h.date.month:02d}-{h.date.day:02d}")
    elif kind == "operator":
        SiteStore.upsert(tx, "operators", (item.operator.user_name,), item.operator.SerializeToString())
    elif kind == "park_state":
        SiteStore.upsert(tx, "park_states", (item.park_state.park_id,), item.park_state.SerializeToString())
    elif kind == "device":
        SiteStore.upsert(tx, "devices", (item.device.device_id,), item.device.SerializeToString())


def apply_batch(store: SiteStore, batch: site_pb2.FeedBatch) -> None:
    with store.transaction() as tx:
        if batch.full_resync:
            SiteStore.clear_feed(tx)
        for item in batch.items:
            apply_item(tx, item)
        SiteStore.put_meta(tx, VERSION_KEY, str(batch.version))
        SiteStore.settle_charges(tx, batch.version)


class FeedFollower:
    """Keeps one Feed stream open, from the stored version, and reconnects with backoff when it breaks."""

    def __init__(self, store: SiteStore, cluster: Cluster, on_change: Callable[[], None]) -> None:
        self.store = store
        self.cluster = cluster
        self.on_change = on_change
        self.caught_up = asyncio.Event()
        self.batches = 0

    @property
    def version(self) -> int:
        return int(self.store.get_meta(VERSION_KEY, "0"))

    async def run(self) -> None:
        delay = self.cluster.config.reconnect_min_seconds
        while True:
            address = self.cluster.address
            try:
                await self._follow()
                delay = self.cluster.config.reconnect_min_seconds
            except grpc.aio.AioRpcError as exc:
                log.info("feed from %s ended: %s %s; again in %.1fs", self.cluster.address, exc.code().name,
                         exc.details(), delay)
                if exc.code() == grpc.StatusCode.UNAVAILABLE:
                    await self.cluster.next_server(address)
            except Exception:  # the feed must never stop for good: log, back off, follow again
                log.exception("feed from %s failed; again in %.1fs", self.cluster.address, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, self.cluster.config.reconnect_max_seconds)

    async def _follow(self) -> None:
        start = self.version
        call = self.cluster.stub().Feed(site_pb2.FeedRequest(from_version=start), metadata=self.cluster.metadata())
        with metrics.CONNECTED_STREAMS.labels("site_feed").track_inprogress():
            await self._apply(call, start)

    async def _apply(self, call: grpc.aio.UnaryStreamCall, start: int) -> None:  # type: ignore[type-arg]
        async for batch in call:
            apply_batch(self.store, batch)
            self.batches += 1
            if batch.full_resync:
                log.info("feed: full resync from %s at version %d", self.cluster.address, batch.version)
            if batch.caught_up and not self.caught_up.is_set():
                log.info("feed caught up at version %d (resumed from %d)", batch.version, start)
                self.caught_up.set()
            self.on_change()
