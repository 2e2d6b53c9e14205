"""The edge's power, told to the cluster (S30): one Site.ReportPower call per transition, in order.

Each transition of the edge's power state machine (and each change in which of
its gates say they run on battery) becomes a report kept in site.db (table
``meta``, key ``power_reports``) until the cluster has taken it: the mains often
fail at the edge and at the network switch together, and the report of a
low-battery stop must reach the operation log when the edge is back, not be
lost with the battery. The cluster writes each call in its operation log and
keeps the latest per edge for Ops.PowerStatus and Ops.ClusterStatus.

Reporting does not depend on forwarding (which is held on battery): a report is
a few bytes and tells the control room what the site is living through.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
from collections.abc import Callable
from datetime import UTC, datetime

import grpc

from parkgate.common.power import PowerState, PowerWatcher, Transition
from parkgate.v1 import ops_pb2, site_pb2

from .cluster import Cluster
from .store import SiteStore

log = logging.getLogger(__name__)

META_KEY = "power_reports"
#: Reports kept while the cluster is away; older ones go first (the latest state is what matters most).
MAX_KEPT = 64
RETRY_SECONDS = 2.0

STATE = {PowerState.ONLINE: ops_pb2.ON_MAINS, PowerState.ON_BATTERY: ops_pb2.ON_BATTERY,
         PowerState.LOW_BATTERY: ops_pb2.LOW_BATTERY, PowerState.SHUTTING_DOWN: ops_pb2.SHUTTING_DOWN,
         PowerState.UNKNOWN: ops_pb2.POWER_CONTACT_LOST}


class PowerReporter:
    def __init__(self, store: SiteStore, cluster: Cluster, watcher: PowerWatcher,
                 gates_on_battery: Callable[[], list[str]]) -> None:
        self.store = store
        self.cluster = cluster
        self.watcher = watcher
        self.gates_on_battery = gates_on_battery
        self._kick = asyncio.Event()
        self.sent = 0

    def pending(self) -> list[site_pb2.EdgePowerReport]:
        text = self.store.get_meta(META_KEY)
        return [site_pb2.EdgePowerReport.FromString(base64.b64decode(item)) for item in text.split()] if text else []

    def _keep(self, reports: list[site_pb2.EdgePowerReport]) -> None:
        with self.store.transaction() as tx:
            SiteStore.put_meta(tx, META_KEY, " ".join(base64.b64encode(r.SerializeToString()).decode()
                                                      for r in reports[-MAX_KEPT:]))

    def transition(self, t: Transition) -> None:
        """A transition of the edge's power (a handler of its watcher): kept durably, then sent."""
        self._add(t.old, t.new, t.at, t.sentence())

    def gates_changed(self) -> None:
        """A gate behind the edge went on battery or back on mains: the current state, with the new list."""
        m = self.watcher.machine
        self._add(m.state, m.state, datetime.now(UTC).timestamp(), f"power {m.state}: gates on battery changed")

    def _add(self, old: PowerState, new: PowerState, at: float, detail: str) -> None:
        snap = self.watcher.snapshot()
        report = site_pb2.EdgePowerReport(
            state=STATE[new], previous=STATE[old], battery_percent=int(snap["charge_percent"]),
            runtime_seconds=int(snap["runtime_seconds"]), source=str(snap["source"]), detail=detail,
            gates_on_battery=sorted(self.gates_on_battery()))
        report.since.FromDatetime(datetime.fromtimestamp(at, UTC))
        self._keep([*self.pending(), report])
        self._kick.set()

    async def send_pending(self, timeout: float = 5.0) -> bool:
        """Send what is kept, oldest first; True when nothing is left."""
        for report in self.pending():
            address = self.cluster.address
            try:
                await self.cluster.stub().ReportPower(report, timeout=timeout, metadata=self.cluster.metadata())
            except grpc.aio.AioRpcError as exc:
                log.info("power report waits for the cluster: %s %s", exc.code().name, exc.details())
                if exc.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
                    await self.cluster.next_server(address)
                    return False
                # refused for good (a report this cluster cannot take): dropped, or it would block the others
                log.warning("power report refused by the cluster (%s); dropped: %s", exc.code().name, report.detail)
            else:
                self.sent += 1
            rest = self.pending()
            if rest and rest[0] == report:  # (reports added meanwhile go after it)
                self._keep(rest[1:])
        return True

    async def run(self) -> None:
        while True:
            self._kick.clear()
            if not await self.send_pending():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._kick.wait(), RETRY_SECONDS)
                continue
            await self._kick.wait()
