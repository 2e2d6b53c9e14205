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
from collections.abc import Callable
from datetime import UTC, datetime

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from parkgate import native
from parkgate.common.channels import Transport, listen
from parkgate.server.config import Settings
from parkgate.server.domain.errors import ParkgateError
from parkgate.server.domain.limits import DeviceLimits
from parkgate.server.services.admin import AdminService
from parkgate.server.services.admission import AdmissionPipeline
from parkgate.server.services.bootstrap import prepare_database
from parkgate.server.services.catalog import CatalogService
from parkgate.server.services.gates import GateHub
from parkgate.server.services.keys import KeyService
from parkgate.server.services.operators import OperatorService
from parkgate.server.services.sales import SalesService
from parkgate.server.store import Database
from parkgate.v1 import (
    admin_pb2_grpc,
    auth_pb2_grpc,
    catalog_pb2_grpc,
    gate_pb2_grpc,
    ops_pb2_grpc,
    reports_pb2_grpc,
    sales_pb2_grpc,
)

from .discovery import Etcd, Registration
from .rpc.access import contract_service_names
from .rpc.deadline import DeadlineBudget
from .rpc.interceptors import interceptor_chain
from .rpc.servicers.admin import AdminServicer
from .rpc.servicers.auth import AuthServicer
from .rpc.servicers.catalog import CatalogServicer
from .rpc.servicers.gate import GateControlServicer, GateServicer
from .rpc.servicers.ops import OpsServicer
from .rpc.servicers.sales import SalesServicer

log = logging.getLogger(__name__)


def server_transport(settings: Settings) -> Transport:
    """The listening port's security, from the configuration (TLS unless server.insecure)."""
    s = settings.server
    if s.insecure:
        return Transport(insecure=True)
    return Transport(ca_file=s.tls_client_ca_file or None, cert_file=s.tls_cert_file, key_file=s.tls_key_file,
                     require_client_cert=s.require_client_cert)


class ParkgateServer:
    """One gRPC server process bound to one database (or Patroni cluster)."""

    def __init__(self, settings: Settings, dsn: str, *, clock: Callable[[], float] = time.time) -> None:
        """``clock`` (UTC epoch seconds) is what gate decisions judge validity by: one reading per batch.
        Drills and the decision table pass their own to stand at a chosen moment (a DST night)."""
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
        self.admin = AdminService(self.db, settings.auth.device_secret_key, settings.auth.audit_key)
        self.catalog = CatalogService(self.db)
        self.keys = KeyService(self.db)
        self.sales = SalesService(self.db)
        gates = settings.gates
        self.pipeline = AdmissionPipeline(self.db, mode=gates.pipeline, max_batch=gates.max_batch, clock=clock)
        self.gates = GateHub(self.db, self.pipeline, settings.server_id, self.operators.verify_device,
                             state_poll_seconds=gates.state_poll_seconds, ack_wait_seconds=gates.ack_wait_seconds,
                             limits=DeviceLimits(gates.max_in_flight_per_gate, gates.messages_per_second,
                                                 gates.message_burst, gates.max_message_bytes,
                                                 gates.max_pending_validations))
        self.health = health.aio.HealthServicer()
        self.started_at = datetime.now(UTC)
        self.schema_ready = asyncio.Event()
        self._serving: bool | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self.server = grpc.aio.server(
            interceptors=[*interceptor_chain(self.operators.authenticate, self.admin.record_audit), DeadlineBudget()]
        )
        self.registration: Registration | None = None
        self._add_servicers()
        self.port = listen(self.server, settings.server.listen, server_transport(settings))
        if self.port == 0:
            raise OSError(f"cannot listen on {settings.server.listen}")

    def _add_servicers(self) -> None:
        s = self.server
        auth_pb2_grpc.add_AuthServicer_to_server(AuthServicer(self.operators), s)
        admin_pb2_grpc.add_AdminServicer_to_server(AdminServicer(self.operators, self.admin, self.keys), s)
        catalog_pb2_grpc.add_CatalogServicer_to_server(CatalogServicer(self.catalog), s)
        ops_pb2_grpc.add_OpsServicer_to_server(
            OpsServicer(self.db, self.settings.server_id, self.started_at, native.IMPLEMENTATION), s
        )
        sales_pb2_grpc.add_SalesServicer_to_server(SalesServicer(self.sales), s)
        gate_pb2_grpc.add_GateServicer_to_server(GateServicer(self.gates, self.settings.server_id), s)
        gate_pb2_grpc.add_GateControlServicer_to_server(GateControlServicer(self.gates), s)
        # Declared in the contract, built by later work: the generated base
        # classes answer UNIMPLEMENTED (reason NOT_IMPLEMENTED), never a fake success.
        reports_pb2_grpc.add_ReportsServicer_to_server(reports_pb2_grpc.ReportsServicer(), s)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, s)
        reflection.enable_server_reflection(
            [*contract_service_names(), health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
             reflection.SERVICE_NAME],
            s,
        )

    @property
    def address(self) -> str:
        host = self.settings.server.listen.rpartition(":")[0]
        return f"{host}:{self.port}"

    async def start(self) -> None:
        await self._set_serving(False)
        await self.db.open()
        await self.server.start()
        self._tasks.append(asyncio.create_task(self._prepare_schema(), name="prepare-schema"))
        self._tasks.append(asyncio.create_task(self._watch_database(), name="watch-database"))
        self._tasks.append(asyncio.create_task(self._drain_audit_outbox(), name="drain-audit-outbox"))
        cluster = self.settings.cluster
        if cluster.etcd_endpoints:  # a cluster member: clients find it through etcd (docs/ha.md)
            self.registration = Registration(Etcd(cluster.etcd_endpoints), cluster.name, self.settings.server_id,
                                             self.address, cluster.lease_ttl_seconds)
            self._tasks.append(asyncio.create_task(self.registration.run(), name="etcd-registration"))
        log.info("parkgate server %s listening on %s (ticket-code core: %s)",
                 self.settings.server_id, self.address, native.IMPLEMENTATION)

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
                self.schema_ready.set()
                return

    async def _drain_audit_outbox(self) -> None:
        """Chain the operation-log records that calls staged but could not chain themselves."""
        await self.schema_ready.wait()
        age = self.settings.auth.audit_outbox_seconds
        while True:
            try:
                moved = await self.admin.drain_audit_outbox(age)
            except Exception as exc:  # the database or the chain write may be failing: try again later
                log.warning("operation log outbox not drained: %s", exc)
            else:
                if moved:
                    log.warning("operation log: %d staged records chained by the drainer", moved)
            await asyncio.sleep(age)

    async def _watch_database(self) -> None:
        interval = self.settings.server.health_interval_seconds
        while True:
            reachable = await self.db.probe(timeout=max(interval, 1.0))
            await self._set_serving(reachable and self.schema_ready.is_set())
            await asyncio.sleep(interval)

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

    async def stop(self, grace: float | None = None) -> None:
        """Stop accepting calls, let in-flight ones finish (up to ``grace``), then close the pool."""
        grace = self.settings.server.shutdown_grace_seconds if grace is None else grace
        await self.health.enter_graceful_shutdown()
        if self.registration is not None:
            await self.registration.close()
        # Gate streams never end by themselves: end them now, so they close (and are logged) within the
        # grace period while the database is still there, and the gates move to another server.
        self.gates.end_streams()
        await self.server.stop(grace)
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.gates.stop()
        await self.db.close()
        log.info("parkgate server %s stopped", self.settings.server_id)

    async def wait_for_termination(self) -> None:
        await self.server.wait_for_termination()


async def serve(settings: Settings, dsn: str, *, on_ready=None) -> None:  # type: ignore[no-untyped-def]
    """Run a server until SIGTERM or SIGINT, then shut it down gracefully."""
    server = ParkgateServer(settings, dsn)
    await server.start()
    if on_ready is not None:
        await on_ready(server)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    log.info("signal received: shutting down (grace %.1fs)", settings.server.shutdown_grace_seconds)
    await server.stop()
