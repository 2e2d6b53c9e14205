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
import sqlite3
import threading
import time
from dataclasses import replace

import grpc

from parkgate.common import metrics
from parkgate.common.channels import Transport, listen, server_transport
from parkgate.common.power import PowerState, PowerWatcher, Transition
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
from .power_report import PowerReporter
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
        self.decider.park_state_changed = self.handler.sync_park_states
        self.feed = FeedFollower(self.store, self.cluster, self._feed_changed)
        self.server: grpc.aio.Server | None = None
        self.port = 0
        self._stop = asyncio.Event()
        self.power = PowerWatcher.from_settings(config.power, who=cfg.device_id)
        self.power.on_transition(self._power_changed)
        # S30: every transition (and the gates' on battery) told to the cluster: operation log, Ops.PowerStatus
        self.power_reporter = PowerReporter(self.store, self.cluster, self.power,
                                            lambda: sorted(self.handler.gates_on_battery))
        self.power.on_transition(self.power_reporter.transition)
        self.handler.gate_power_changed = self.power_reporter.gates_changed
        self.stopping_for_power = False
        self.metrics_endpoint: metrics.MetricsEndpoint | None = None
        self._reader: sqlite3.Connection | None = None
        self._reader_lock = threading.Lock()

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
        site = self.config.site
        transport = (Transport(insecure=True) if site.insecure else
                     Transport(cert_file=site.tls_cert_file, key_file=site.tls_key_file) if site.tls_cert_file
                     else None)  # None: as the environment says (PARKGATE_SERVER__TLS_*), never silently plaintext
        if site.device_ca_file is not None:  # devices here present certificates of the cluster's device CA
            transport = replace(transport or server_transport(), ca_file=str(site.device_ca_file),
                                require_client_cert=True)
        self.port = listen(self.server, site.listen, transport)
        await self.server.start()
        self._start_metrics()
        log.info("site edge %s listening on %s; cluster %s; %d records wait to be forwarded",
                 self.config.site.device_id, self.config.site.listen, ", ".join(self.config.site.servers),
                 self.store.pending_count())
        return self.port

    # --- metrics (docs/monitor.md) ------------------------------------------------------------

    def _start_metrics(self) -> None:
        """/metrics when ``[metrics] listen`` is set; the forward queue is read at each scrape.

        The scraper runs in its own threads, so it reads site.db through its own read-only
        connection (WAL: it never blocks the edge's writes, and never sees half a transaction).
        """
        metrics.track_offline_journal(lambda: self._read_journal()[0], lambda: self._read_journal()[1])
        metrics.set_power_state("mains")
        if self.config.metrics.listen:
            self.metrics_endpoint = metrics.serve_metrics(self.config.metrics.listen)
            log.info("metrics on %s", self.metrics_endpoint.url)

    def _read_journal(self) -> tuple[int, float]:
        """(records waiting, age in seconds of the oldest) for the scraper's thread."""
        with self._reader_lock:
            if self._reader is None:
                self._reader = sqlite3.connect(f"file:{self.store.path}?mode=ro", uri=True,
                                               check_same_thread=False, timeout=5)
            depth = int(self._reader.execute("SELECT count(*) FROM outbox").fetchone()[0])
            row = self._reader.execute("SELECT body FROM outbox ORDER BY id LIMIT 1").fetchone()
        if row is None:
            return depth, 0.0
        record = site_pb2.ForwardedRecord.FromString(bytes(row[0]))
        at = record.decision.decided_at if record.HasField("decision") else record.sale.sold_at
        return depth, max(0.0, time.time() - at.ToNanoseconds() / 1e9) if at.seconds else 0.0

    # --- power (S30, docs/power.md) -----------------------------------------------------------

    async def _power_changed(self, t: Transition) -> None:
        """On battery: decide here at once; low battery / forced shutdown: stop cleanly; mains: the cluster again."""
        if t.new == PowerState.UNKNOWN:
            metrics.set_power_state("unknown")
            log.warning("lost contact with the UPS; the edge carries on as it was (deciding locally: %s)",
                        self.decider.local_only)
            return
        if t.new == PowerState.ON_BATTERY:
            metrics.set_power_state("on_battery")
            if self.config.power.decide_locally_on_battery and not self.decider.local_only:
                self.decider.local_only = True
                self.forwarder.paused = True
                log.warning("ALERT site edge %s on battery: deciding every validation locally (no wait for the "
                            "cluster), each admission durable in site.db; %d record(s) wait to be forwarded "
                            "when the mains are back", self.config.site.device_id, self.store.pending_count())
        elif t.new in (PowerState.LOW_BATTERY, PowerState.SHUTTING_DOWN) and not self.stopping_for_power:
            metrics.set_power_state("low_battery" if t.new == PowerState.LOW_BATTERY else "shutting_down")
            self.stopping_for_power = True
            if t.new == PowerState.LOW_BATTERY:
                await self.power.begin_shutdown("low battery: the edge stops taking calls (the gates decide "
                                                "offline), makes its journal durable and stops")
                metrics.set_power_state("shutting_down")
            log.warning("ALERT site edge %s stopping for power (%s): %d record(s) kept in site.db for the "
                        "next start", self.config.site.device_id, t.why, self.store.pending_count())
            self._stop.set()
        elif t.new == PowerState.ONLINE:
            metrics.set_power_state("mains")
            if self.decider.local_only:
                self.decider.local_only = False
                self.forwarder.paused = False
                self.forwarder.kick()
                log.warning("site edge %s back on steady mains: asking the cluster again; forwarding %d record(s)",
                            self.config.site.device_id, self.store.pending_count())

    async def run(self, *, install_signals: bool = False) -> None:
        if install_signals:
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, self._stop.set)
        await self.start()
        tasks = [asyncio.create_task(t) for t in (self.feed.run(), self.forwarder.run(), self.provision(),
                                                  self.power.run(), self.power_reporter.run())]
        try:
            await self._stop.wait()
        finally:
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            if self.server is not None:
                await self.server.stop(2)  # no new calls; the ones in flight finish (their writes commit)
            # the stop's own transitions to the cluster if it answers at once; else they wait in site.db
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.power_reporter.send_pending(timeout=1.5), 3.0)
            await self.cluster.close()
            if self.metrics_endpoint is not None:
                self.metrics_endpoint.close()
            with self._reader_lock:
                if self._reader is not None:
                    self._reader.close()
            self.store.checkpoint()
            pending = self.store.pending_count()
            self.store.close()
            log.info("site edge stopped%s; journal checkpointed, %d record(s) wait to be forwarded",
                     " for power" if self.stopping_for_power else "", pending)
