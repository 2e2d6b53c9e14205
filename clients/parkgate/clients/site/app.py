"""The site edge process: the store, the cluster link, the feed, the forwarder and the server for gates and windows.

Start-up order matters for "nothing acknowledged is lost": the store opens
(and SQLite recovers its WAL) before anything is served; the forward queue
left by a killed edge is simply the outbox table, picked up by the forwarder.
The site key is provisioned in the background whenever the cluster answers
and the serials left run low.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal

import grpc

from parkgate.common.channels import listen
from parkgate.v1 import (  # noqa: F401 -- the descriptors of every service the edge passes through
    admin_pb2,
    auth_pb2,
    catalog_pb2,
    gate_pb2,
    ops_pb2,
    reports_pb2,
    sales_pb2,
    site_pb2,
)

from .cluster import Cluster
from .config import SiteConfig
from .decide import Decider
from .feed import FeedFollower
from .forward import Forwarder
from .local import SitePicture
from .selling import OfflineSeller, load_or_create_key
from .servicers import EdgeHandler
from .store import SiteStore

log = logging.getLogger(__name__)


class SiteEdge:
    def __init__(self, config: SiteConfig) -> None:
        self.config = config
        cfg = config.site
        self.store = SiteStore(config.database)
        self.cluster = Cluster(cfg)
        self.picture = SitePicture.load(self.store)
        self.decider = Decider(self.store, self.cluster, self.picture)
        self.seed = load_or_create_key(cfg.state_dir)
        self.seller = OfflineSeller(self.store, self.seed)
        self.forwarder = Forwarder(self.store, self.cluster)
        self.handler = EdgeHandler(self.store, self.cluster, self.decider, self.seller, lambda: self.picture,
                                   self.forwarder.kick)
        self.feed = FeedFollower(self.store, self.cluster, self._feed_changed)
        self.server: grpc.aio.Server | None = None
        self.port = 0
        self._stop = asyncio.Event()

    def _feed_changed(self) -> None:
        old = self.picture.keyring
        self.picture = SitePicture.load(self.store)
        self.decider.picture = self.picture
        if old.entries() != self.picture.keyring.entries():
            self.handler.keys_changed(self.picture)
        self.handler.sync_park_states(self.picture)

    async def provision(self) -> None:
        """Get a key id and serials for offline sales; again whenever the serials left run low."""
        cfg = self.config.site
        public = self.seller_public()
        while True:
            left, total = self.store.serials_left()
            if total and left > total * cfg.serials_refill_fraction and self.seller.key_id:
                await asyncio.sleep(5)
                continue
            try:
                reply = await self.cluster.stub().Provision(
                    site_pb2.ProvisionRequest(public_key=public, serials_wanted=cfg.serials_wanted),
                    timeout=10, metadata=self.cluster.metadata())
            except grpc.aio.AioRpcError as exc:
                log.info("provisioning waits for the cluster: %s %s", exc.code().name, exc.details())
                await asyncio.sleep(cfg.reconnect_max_seconds)
                continue
            with self.store.transaction() as tx:
                SiteStore.put_meta(tx, "site_key_id", str(reply.key_id))
                SiteStore.add_serials(tx, reply.serial_first, reply.serial_last)
            log.info("site key %d provisioned; serials %d..%d", reply.key_id, reply.serial_first, reply.serial_last)

    def seller_public(self) -> bytes:
        from parkgate import native

        return native.SigningKey(1, self.seed).public_key

    async def start(self) -> int:
        self.server = grpc.aio.server()
        self.server.add_generic_rpc_handlers((self.handler,))
        self.port = listen(self.server, self.config.site.listen)
        await self.server.start()
        log.info("site edge %s listening on %s; cluster %s; %d records wait to be forwarded",
                 self.config.site.device_id, self.config.site.listen, ", ".join(self.config.site.servers),
                 self.store.pending_count())
        return self.port

    async def run(self, *, install_signals: bool = False) -> None:
        if install_signals:
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, self._stop.set)
        await self.start()
        tasks = [asyncio.create_task(t) for t in (self.feed.run(), self.forwarder.run(), self.provision())]
        try:
            await self._stop.wait()
        finally:
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            if self.server is not None:
                await self.server.stop(2)
            await self.cluster.close()
            self.store.close()
            log.info("site edge stopped")
