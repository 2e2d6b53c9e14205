"""The gRPC server process: wiring, health checking, graceful shutdown.

A server is stateless: everything it knows lives in PostgreSQL, so any number
of them run side by side. It starts even when the database is down (health
says NOT_SERVING and calls answer DATABASE_UNAVAILABLE) and becomes SERVING as
soon as a writable primary answers, so a server never has to be restarted
because the database came back.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from parkgate import native
from parkgate.common import metrics
from parkgate.common.channels import Transport, listen
from parkgate.server.config import Settings
from parkgate.server.domain import device_secrets
from parkgate.server.domain.errors import ParkgateError
from parkgate.server.domain.limits import DeviceLimits
from parkgate.server.services.admin import AdminService
from parkgate.server.services.admission import AdmissionPipeline
from parkgate.server.services.bootstrap import prepare_database
from parkgate.server.services.catalog import CatalogService
from parkgate.server.services.enrolment import DeviceEnrolment
from parkgate.server.services.flow import FlowRecorder, FlowWatch, LiveFlowService
from parkgate.server.services.gates import GateHub
from parkgate.server.services.groups import GroupService
from parkgate.server.services.held_checks import HeldCheckService
from parkgate.server.services.keys import KeyService
from parkgate.server.services.members import MemberService
from parkgate.server.services.operators import OperatorService
from parkgate.server.services.partitions import PartitionKeeper
from parkgate.server.services.reports import ReportService
from parkgate.server.services.sales import SalesService
from parkgate.server.services.sites import SiteService
from parkgate.server.services.vouchers import VoucherService
from parkgate.server.store import Database
from parkgate.server.store.report_reader import ReportReader
from parkgate.v1 import (
    admin_pb2_grpc,
    auth_pb2_grpc,
    catalog_pb2_grpc,
    gate_pb2_grpc,
    ops_pb2_grpc,
    reports_pb2_grpc,
    sales_pb2_grpc,
    site_pb2_grpc,
)

from .discovery import Etcd, Registration, etcd_transport
from .jobs import BackgroundJobs
from .power import ServerPower
from .rpc.access import contract_service_names
from .rpc.deadline import DeadlineBudget
from .rpc.interceptors import interceptor_chain
from .rpc.reflection import enable_server_reflection
from .rpc.servicers.admin import AdminServicer
from .rpc.servicers.auth import AuthServicer
from .rpc.servicers.catalog import CatalogServicer
from .rpc.servicers.gate import GateControlServicer, GateServicer
from .rpc.servicers.ops import OpsServicer
from .rpc.servicers.reports import ReportsServicer
from .rpc.servicers.sales import SalesServicer
from .rpc.servicers.site import SiteServicer
from .rpc.shedding import BatteryQueue, PowerShedding

log = logging.getLogger(__name__)

#: Where `parkgate up` serves /metrics unless configured otherwise (Prometheus' exporter port range).
UP_METRICS_LISTEN = "127.0.0.1:9464"
# How long one part of a stop may take before the stop goes on without it (see ParkgateServer._stop_step).
STOP_STEP_SECONDS = 15.0


def server_transport(settings: Settings) -> Transport:
    """The listening port's security, from the configuration (TLS unless server.insecure)."""
    s = settings.server
    if s.insecure:
        return Transport(insecure=True)
    return Transport(ca_file=s.tls_client_ca_file or None, cert_file=s.tls_cert_file, key_file=s.tls_key_file,
                     require_client_cert=s.require_client_cert)


def device_transport(settings: Settings) -> Transport:
    """The device port's security: TLS where every client presents a certificate of the device CA."""
    s = settings.server
    if s.insecure:
        raise ValueError("server.device_listen needs TLS: a device port cannot be plaintext (server.insecure)")
    ca = s.tls_client_ca_file or s.device_ca_cert_file
    if not ca:
        raise ValueError("server.device_listen needs the device CA (server.device_ca_cert_file or "
                         "server.tls_client_ca_file) to check the devices' certificates with")
    return Transport(ca_file=ca, cert_file=s.tls_cert_file, key_file=s.tls_key_file, require_client_cert=True)


class ParkgateServer:
    """One gRPC server process bound to one database (or Patroni cluster)."""

    def __init__(self, settings: Settings, dsn: str, *, clock: Callable[[], float] = time.time,
                 metrics_default: str = "") -> None:
        """``clock`` (UTC epoch seconds) is what gate decisions judge validity by: one reading per batch.
        Drills and the decision table pass their own to stand at a chosen moment (a DST night).
        ``metrics_default`` is where /metrics is served when ``metrics.listen`` is "" (`parkgate up`'s default)."""
        self.settings = settings
        db = settings.database
        self.db = Database(
            dsn,
            min_size=db.pool_min_size,
            max_size=db.pool_max_size,
            acquire_timeout=db.acquire_timeout_seconds,
            connect_timeout=db.connect_timeout_seconds,
        )
        self.operators = OperatorService.from_settings(self.db, settings.auth)
        self.operators.require_device_cert = settings.server.require_device_cert
        self.enrolment = DeviceEnrolment.from_settings(self.operators.verify_device, settings.server)
        self.admin = AdminService(self.db, settings.auth.device_secret_key, settings.auth.audit_key)
        self.catalog = CatalogService(self.db)
        self.keys = KeyService(self.db)
        self.sales = SalesService(self.db)
        self.members = MemberService(self.db, self.sales)
        self.groups = GroupService(self.db, self.sales)
        self.vouchers = VoucherService(self.db)
        gates = settings.gates
        self.pipeline = AdmissionPipeline(self.db, mode=gates.pipeline, max_batch=gates.max_batch, clock=clock)
        self.gates = GateHub(self.db, self.pipeline, settings.server_id, self.operators.verify_device,
                             state_poll_seconds=gates.state_poll_seconds, ack_wait_seconds=gates.ack_wait_seconds,
                             limits=DeviceLimits(gates.max_in_flight_per_gate, gates.messages_per_second,
                                                 gates.message_burst, gates.max_message_bytes,
                                                 gates.max_pending_validations))
        flow = settings.live_flow
        self.flow_recorder = FlowRecorder(self.db, settings.server_id, flush_seconds=flow.flush_seconds,
                                          retention_hours=flow.retention_hours)
        self.pipeline.recorder = self.gates.recorder = self.flow_recorder
        self.gates.audit = self.admin.record_audit  # S30: a gate's power transitions in the operation log
        self.flow_watch = FlowWatch(self.db)
        self.held_checks = HeldCheckService(self.db, flow.held_check_seconds)
        self.live_flow = LiveFlowService(self.db, self.flow_watch, site_online_seconds=flow.site_online_seconds,
                                         held_checks=self.held_checks)
        self.metrics_listen = settings.metrics.address(metrics_default)
        self.metrics_endpoint: metrics.MetricsEndpoint | None = None
        self.sites = SiteService(self.db, self.gates, self.operators.verify_device)
        rs = settings.reports
        self.report_reader = ReportReader(dsn, rs.dsn, pool_max_size=rs.pool_max_size,
                                          statement_timeout=rs.statement_timeout_seconds,
                                          replica_wait=rs.replica_wait_seconds,
                                          acquire_timeout=db.acquire_timeout_seconds)
        self.reports = ReportService(self.report_reader)
        self.partitions = PartitionKeeper(self.db, settings.partitions, clock=clock)
        self.health = health.aio.HealthServicer()
        self.started_at = datetime.now(UTC)
        self.schema_ready = asyncio.Event()
        self._serving: bool | None = None
        # Set while health says SERVING: what a load balancer waits for, and what start-up waits on in tests.
        self.serving = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        # S30: set when the power state orders this server to stop (low battery); serve() then stops it.
        self.power_stop = asyncio.Event()
        # S30: jobs not needed to admit and sell pause on battery, the live-flow flush slows (one switch: power)
        self.jobs = BackgroundJobs()
        self.power = ServerPower(settings.power, settings.server_id, self.admin.record_audit, self._stop_for_power,
                                 self.schema_ready)
        self.power.watcher.on_transition(lambda t: self.jobs.set_on_battery(t.new.degraded))
        battery = settings.battery
        self.report_queue = BatteryQueue(battery.reports_at_once, battery.report_queue)
        self.live_flow.battery_interval = lambda: battery.live_interval_seconds if self.power.shedding() else 0.0
        self.server = grpc.aio.server(
            interceptors=[*interceptor_chain(self.operators.authenticate, self.admin.record_audit),
                          PowerShedding(self.power.shedding, self.report_queue), DeadlineBudget()]
        )
        self.registration: Registration | None = None
        cluster = settings.cluster
        self.etcd = Etcd(cluster.etcd_endpoints, transport=etcd_transport(cluster)) if cluster.etcd_endpoints else None
        self._add_servicers()
        self.port = listen(self.server, settings.server.listen, server_transport(settings))
        if self.port == 0:
            raise OSError(f"cannot listen on {settings.server.listen}")
        self.device_port = 0
        if settings.server.device_listen:
            self.device_port = listen(self.server, settings.server.device_listen, device_transport(settings))
            if self.device_port == 0:
                raise OSError(f"cannot listen on {settings.server.device_listen} (server.device_listen)")

    def _add_servicers(self) -> None:
        s = self.server
        auth_pb2_grpc.add_AuthServicer_to_server(AuthServicer(self.operators, self.enrolment), s)
        admin_pb2_grpc.add_AdminServicer_to_server(AdminServicer(self.operators, self.admin, self.keys), s)
        catalog_pb2_grpc.add_CatalogServicer_to_server(CatalogServicer(self.catalog), s)
        ops_pb2_grpc.add_OpsServicer_to_server(
            OpsServicer(self.db, self.settings.server_id, self.started_at, native.IMPLEMENTATION,
                        power=self.power, etcd=self.etcd, cluster=self.settings.cluster.name,
                        site_online_seconds=self.settings.live_flow.site_online_seconds), s
        )
        sales_pb2_grpc.add_SalesServicer_to_server(SalesServicer(self.sales, self.members, self.groups, self.vouchers), s)
        gate_pb2_grpc.add_GateServicer_to_server(GateServicer(self.gates, self.settings.server_id), s)
        gate_pb2_grpc.add_GateControlServicer_to_server(GateControlServicer(self.gates, self.held_checks), s)
        site_pb2_grpc.add_SiteServicer_to_server(
            SiteServicer(self.sites, device_secrets.key_bytes(self.settings.auth.device_secret_key)), s)
        reports_pb2_grpc.add_ReportsServicer_to_server(ReportsServicer(self.reports, self.live_flow), s)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, s)
        # both grpc.reflection.v1 and v1alpha (tools that ask v1 first see nothing otherwise)
        enable_server_reflection(
            [*contract_service_names(), health_pb2.DESCRIPTOR.services_by_name["Health"].full_name], s
        )

    @property
    def address(self) -> str:
        host = self.settings.server.listen.rpartition(":")[0]
        return f"{host}:{self.port}"

    @property
    def device_address(self) -> str:
        """Where devices connect with their certificates ("" without server.device_listen)."""
        if not self.device_port:
            return ""
        host = self.settings.server.device_listen.rpartition(":")[0]
        return f"{host}:{self.device_port}"

    async def start(self) -> None:
        await self._set_serving(False)
        if self.metrics_listen is not None:
            self._serve_metrics(self.metrics_listen)
        await self.db.open()
        await self.report_reader.open()
        await self.server.start()
        self._tasks.append(asyncio.create_task(self._prepare_schema(), name="prepare-schema"))
        self._tasks.append(asyncio.create_task(self._watch_database(), name="watch-database"))
        cluster = self.settings.cluster
        if self.etcd is not None:  # a cluster member: clients find it through etcd (docs/ha.md)
            self.registration = Registration(self.etcd, cluster.name, self.settings.server_id,
                                             self.address, cluster.lease_ttl_seconds)
            self._tasks.append(asyncio.create_task(self.registration.run(), name="etcd-registration"))
            record = self.power.published_in(self.etcd, cluster.name, cluster.lease_ttl_seconds)
            self._tasks.append(asyncio.create_task(record.run(), name="etcd-power-record"))
        self._tasks.append(asyncio.create_task(self.power.watcher.run(), name="power-watcher"))
        log.info("parkgate server %s listening on %s (ticket-code core: %s)",
                 self.settings.server_id, self.address, native.IMPLEMENTATION)
        if self.device_port:
            log.info("device port %s: devices present client certificates of the device CA (parkgate device enroll)",
                     self.device_address)

    def _serve_metrics(self, address: str) -> None:
        try:
            self.metrics_endpoint = metrics.serve_metrics(address)
        except OSError as exc:
            if self.settings.metrics.listen:  # asked for explicitly: a server without its metrics must not start
                raise OSError(f"metrics.listen {address}: {exc}") from exc
            log.warning("metrics: cannot serve on the default %s (%s); running without /metrics", address, exc)
            return
        metrics.DB_POOLS.add(self.settings.server_id, self.db.pool.get_stats)
        log.info("metrics on %s", self.metrics_endpoint.url)

    async def _prepare_schema(self) -> None:
        delay = 0.5
        while True:
            try:
                await prepare_database(self.db)
            except Exception as exc:  # the database may not be up yet: keep trying
                log.warning("database not ready for migrations (%s); retrying in %.1fs", exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
            else:
                break
        while True:
            try:
                await self.gates.start()
            except ParkgateError as exc:
                log.warning("gate hub not started (%s); retrying in %.1fs", exc, delay)
                await asyncio.sleep(delay)
            else:
                self.flow_recorder.start(self.jobs, flush_on_battery=self.settings.battery.flow_flush_seconds)
                self.jobs.every("partition-maintenance", self.settings.partitions.maintenance_interval_seconds,
                                self.partitions.turn)
                self.jobs.every("audit-outbox", self.settings.auth.audit_outbox_seconds, self._drain_audit_outbox)
                self.schema_ready.set()
                # The database just answered the migrations: say SERVING now rather than at the next probe.
                await self._set_serving(not self.power.stopping)
                return

    async def _drain_audit_outbox(self) -> None:
        """Chain the operation-log records that calls staged but could not chain themselves (a background job:
        they wait durably in the outbox while the machine runs on battery)."""
        try:
            moved = await self.admin.drain_audit_outbox(self.settings.auth.audit_outbox_seconds)
        except Exception as exc:  # the database or the chain write may be failing: try again later
            log.warning("operation log outbox not drained: %s", exc)
        else:
            if moved:
                log.warning("operation log: %d staged records chained by the drainer", moved)

    async def _watch_database(self) -> None:
        interval = self.settings.server.health_interval_seconds
        while True:
            reachable = await self.db.probe(timeout=max(interval, 1.0))
            await self._set_serving(reachable and self.schema_ready.is_set() and not self.power.stopping)
            await asyncio.sleep(interval)

    def _stop_for_power(self, why: str) -> None:
        """Low battery: NOT_SERVING now (clients move on), then serve() drains and stops (S30)."""
        log.warning("stopping on power: %s", why)
        self._tasks.append(asyncio.create_task(self._set_serving(False), name="power-not-serving"))
        self.power_stop.set()

    async def _set_serving(self, serving: bool) -> None:
        if serving == self._serving:
            return
        status = health_pb2.HealthCheckResponse.SERVING if serving else health_pb2.HealthCheckResponse.NOT_SERVING
        for name in ["", *contract_service_names()]:
            await self.health.set(name, status)
        if self._serving is not None:
            log.info("health: %s (database %s)", "SERVING" if serving else "NOT_SERVING",
                     "reachable" if serving else "unreachable")
        self._serving = serving
        if serving:
            self.serving.set()
        else:
            self.serving.clear()

    async def stop(self, grace: float | None = None) -> None:
        """Stop accepting calls, let in-flight ones finish (up to ``grace``), then close the pool."""
        grace = self.settings.server.shutdown_grace_seconds if grace is None else grace
        await self.health.enter_graceful_shutdown()
        if self.registration is not None:
            await self.registration.close()
        # Gate streams never end by themselves: end them now, so they close (and are logged) within the
        # grace period while the database is still there, and the gates move to another server.
        self.gates.end_streams()
        self.live_flow.end_streams()
        await self._stop_step("the gRPC server", self.server.stop(grace), grace + STOP_STEP_SECONDS)
        for task in self._tasks:
            task.cancel()
        await self._stop_step("the server's own tasks", asyncio.gather(*self._tasks, return_exceptions=True))
        await self._stop_step("the background jobs", self.jobs.stop())
        await self._stop_step("the gate hub", self.gates.stop())
        await self._stop_step("the live flow recorder", self.flow_recorder.stop())
        await self._stop_step("the live flow watch", self.flow_watch.stop())
        if self.metrics_endpoint is not None:
            metrics.DB_POOLS.remove(self.settings.server_id)
            self.metrics_endpoint.close()
        await self._stop_step("the report reader", self.report_reader.close())
        await self._stop_step("the database pool", self.db.close())
        log.info("parkgate server %s stopped", self.settings.server_id)

    @staticmethod
    async def _stop_step(what: str, work: Awaitable[object], seconds: float | None = None) -> None:
        """One step of the stop, bounded: a part that does not finish in time is named in the log with where
        each task still running waits, and left behind, so the process stops (a power stop must, S30) instead
        of hanging on one stuck task. ``asyncio.wait`` rather than ``wait_for``: the latter would wait for a
        task that ignores its cancellation, which is exactly the case this guards against."""
        seconds = STOP_STEP_SECONDS if seconds is None else seconds
        step = asyncio.ensure_future(work)
        done, _ = await asyncio.wait({step}, timeout=seconds)
        if done:
            if not step.cancelled() and step.exception() is not None:
                log.warning("stop: %s failed: %s", what, step.exception())
            return
        step.cancel()
        here = asyncio.current_task()
        stuck = [t for t in asyncio.all_tasks() if t is not here and not t.done()]
        log.error("stop: %s did not finish within %.0fs; stopping without it. Still running: %s", what, seconds,
                  "; ".join(f"{t.get_name()} at {_waiting_at(t)}" for t in stuck[:30]))

    async def wait_for_termination(self) -> None:
        await self.server.wait_for_termination()


def _waiting_at(task: asyncio.Task[object]) -> str:
    frames = task.get_stack()
    if not frames:
        return "?"
    frame = frames[-1]
    return f"{frame.f_code.co_filename.rsplit('/', 3)[-1]}:{frame.f_lineno} ({frame.f_code.co_name})"


async def serve(settings: Settings, dsn: str, *, on_ready=None,  # type: ignore[no-untyped-def]
                metrics_default: str = "") -> bool:
    """Run a server until SIGTERM or SIGINT (or its power orders a stop), then shut it down gracefully.

    True when it stopped for power (low battery): ``parkgate server`` exits with EXIT_POWER_STOP then."""
    server = ParkgateServer(settings, dsn, metrics_default=metrics_default)
    await server.start()
    if on_ready is not None:
        await on_ready(server)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    waits = [asyncio.create_task(stop.wait()), asyncio.create_task(server.power_stop.wait())]
    await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
    for w in waits:
        w.cancel()
    log.info("%s: shutting down (grace %.1fs)", "low battery" if server.power_stop.is_set() else "signal received",
             settings.server.shutdown_grace_seconds)
    await server.stop()
    return server.power_stop.is_set()
