"""Ops service: what this server sees of itself, the database cluster and the power (S30, S31).

ClusterStatus and PowerStatus read what the cluster publishes in etcd (Patroni's
keys, every machine's power record) and probe the registered servers' health,
so an admin needs no shell on the database machines. Without etcd (a single
server on the embedded database) they say so: ``managed = false``, only this
server's power.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from parkgate.common import __version__
from parkgate.common.channels import open_aio_channel
from parkgate.common.power import PowerState
from parkgate.server.cluster_view import patroni_view, power_records
from parkgate.server.discovery import Etcd, EtcdUnavailable, discover
from parkgate.server.domain.errors import ParkgateError
from parkgate.server.power import ServerPower
from parkgate.server.store import Database
from parkgate.server.store import edge_power as edge_power_store
from parkgate.server.store import flow as flow_store
from parkgate.server.store.edge_power import EdgePower
from parkgate.server.store.gates import gates_on_battery
from parkgate.server.store.migrations import schema_version
from parkgate.v1 import ops_pb2, ops_pb2_grpc

from ..convert import ts

Ctx = grpc.aio.ServicerContext

_STATE = {PowerState.ONLINE: ops_pb2.ON_MAINS, PowerState.ON_BATTERY: ops_pb2.ON_BATTERY,
          PowerState.LOW_BATTERY: ops_pb2.LOW_BATTERY, PowerState.SHUTTING_DOWN: ops_pb2.SHUTTING_DOWN,
          PowerState.UNKNOWN: ops_pb2.POWER_CONTACT_LOST}
#: The contract's power state -> this package's (a site edge's report, Site.ReportPower).
POWER_VALUE = {number: state.value for state, number in _STATE.items()}


def _power_state(value: str) -> int:
    try:
        return _STATE[PowerState(value)]
    except ValueError:
        return ops_pb2.POWER_STATE_UNSPECIFIED


def _since(epoch: Any) -> Any:
    return ts(datetime.fromtimestamp(float(epoch), UTC)) if isinstance(epoch, int | float) and epoch > 0 else None


def machine_power(r: dict[str, Any]) -> ops_pb2.MachinePower:
    return ops_pb2.MachinePower(
        machine=str(r.get("machine", "")), role=str(r.get("role", "")), state=_power_state(str(r.get("state"))),
        battery_percent=int(r.get("charge_percent", -1)), runtime_seconds=int(r.get("runtime_seconds", -1)),
        source=str(r.get("source", "")), since=_since(r.get("since")), detail=str(r.get("detail", "")))


async def server_health(address: str, timeout: float = 1.5) -> str:
    """SERVING / NOT_SERVING / UNREACHABLE, from the server's standard health check."""
    try:
        async with open_aio_channel(address) as channel:
            reply = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=timeout)
    except grpc.aio.AioRpcError:
        return "UNREACHABLE"
    return str(health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status))


class OpsServicer(ops_pb2_grpc.OpsServicer):
    def __init__(self, db: Database, server_id: str, started_at: datetime, native_impl: str, *,
                 power: ServerPower | None = None, etcd: Etcd | None = None, cluster: str = "parkgate",
                 site_online_seconds: float = 90.0) -> None:
        self.db = db
        self.site_online_seconds = site_online_seconds
        self.server_id = server_id
        self.started_at = started_at
        self.native_impl = native_impl
        self.power = power
        self.etcd = etcd
        self.cluster = cluster

    async def ServerStatus(self, request: ops_pb2.ServerStatusRequest, context: Ctx) -> ops_pb2.ServerStatusResponse:
        reachable = await self.db.probe()
        version = 0
        host = ""
        if reachable:
            async with self.db.connection() as conn:
                version = await schema_version(conn)
                host = conn.info.host
        return ops_pb2.ServerStatusResponse(
            server_id=self.server_id, version=__version__, database_reachable=reachable, database_host=host,
            schema_version=version, started_at=ts(self.started_at), native_impl=self.native_impl,
        )

    async def _edge_power(self) -> list[EdgePower]:
        """The site edges' last power reports (Site.ReportPower); none while the database is away."""
        try:
            async with self.db.connection() as conn:
                return await edge_power_store.latest(conn)
        except ParkgateError:
            return []

    async def _records(self, edges: list[EdgePower]) -> list[dict[str, Any]]:
        own = self.power.snapshot() if self.power is not None else None
        records: list[dict[str, Any]] = []
        if self.etcd is not None:
            try:
                records = await power_records(self.etcd, self.cluster)
            except EtcdUnavailable:
                records = []
        if own is not None:  # this server's own state is fresher than what it last published
            records = [r for r in records if r.get("machine") != own["machine"]] + [own]
        records += [{"machine": e.device_id, "role": "edge", "state": e.state, "since": e.since.timestamp(),
                     "charge_percent": e.battery_percent, "runtime_seconds": e.runtime_seconds, "source": e.source,
                     "detail": e.detail} for e in edges]
        return sorted(records, key=lambda r: str(r["machine"]))

    async def PowerStatus(self, request: ops_pb2.PowerStatusRequest, context: Ctx) -> ops_pb2.PowerStatusResponse:
        snap = self.power.snapshot() if self.power is not None else {"state": "online", "source": "none"}
        on_battery: list[str] = []
        if await self.db.probe():
            async with self.db.connection() as conn:
                on_battery = await gates_on_battery(conn)
        edges = await self._edge_power()
        on_battery = sorted({*on_battery, *(g for e in edges for g in e.gates_on_battery)})  # behind edges too
        return ops_pb2.PowerStatusResponse(
            state=_power_state(snap["state"]), battery_percent=int(snap.get("charge_percent", -1)),
            runtime_seconds=int(snap.get("runtime_seconds", -1)), source=str(snap["source"]),
            since=_since(snap.get("since")), detail=str(snap.get("detail", "")),
            machines=[machine_power(r) for r in await self._records(edges)], gates_on_battery=on_battery)

    async def _edges(self, power: list[EdgePower]) -> list[ops_pb2.SiteEdgeContact]:
        """Every site edge, its last contact (what the control room's monitor shows per park) and power."""
        try:
            async with self.db.connection() as conn:
                edges = await flow_store.site_edges(conn)
        except ParkgateError:
            return []  # the database is away: the rest of the picture still comes from etcd
        now = datetime.now(UTC)
        by_edge = {p.device_id: p for p in power}
        return [ops_pb2.SiteEdgeContact(
            device_id=e.device_id, site=e.site, last_contact=ts(e.last_contact),
            online=e.last_contact is not None and (now - e.last_contact).total_seconds() <= self.site_online_seconds,
            power=_power_state(by_edge[e.device_id].state) if e.device_id in by_edge else 0,
            power_detail=by_edge[e.device_id].detail if e.device_id in by_edge else "")
            for e in edges]

    async def ClusterStatus(self, request: ops_pb2.ClusterStatusRequest, context: Ctx) -> ops_pb2.ClusterStatusResponse:
        edge_power = await self._edge_power()
        records = await self._records(edge_power)
        power = [machine_power(r) for r in records]
        edges = await self._edges(edge_power)
        if self.etcd is None:
            health = "SERVING" if await self.db.probe() else "NOT_SERVING"
            return ops_pb2.ClusterStatusResponse(
                managed=False, power=power, error="not a cluster member (no cluster.etcd_endpoints)", edges=edges,
                servers=[ops_pb2.ServerHealth(server_id=self.server_id, health=health)])
        try:
            view = await patroni_view(self.etcd, self.cluster)
            addresses = await discover(self.etcd, self.cluster)
        except EtcdUnavailable as exc:
            return ops_pb2.ClusterStatusResponse(managed=True, power=power, error=str(exc), edges=edges)
        healths = await asyncio.gather(*(server_health(a) for a in addresses))
        by_machine = {p.machine: p.state for p in power}
        return ops_pb2.ClusterStatusResponse(
            managed=True, leader=view.leader, sync_standby=view.sync_standby, power=power, edges=edges,
            members=[ops_pb2.ClusterMember(name=m.name, role=m.role, state=m.state, host=m.host, lag_bytes=m.lag_bytes,
                                           timeline=m.timeline, power=by_machine.get(m.name, 0)) for m in view.members],
            servers=[ops_pb2.ServerHealth(address=a, health=h) for a, h in zip(addresses, healths, strict=True)],
            error="" if view.members else f"no Patroni members under /service/{self.cluster}/ in etcd")
