"""``parkgate power drill``: the leader's machine loses its mains under gate and sales load; prove the hand-over.

Runbook, on a cluster started by ``parkgate cluster up``:

1. wait until the cluster is whole (a leader, a synchronous standby, every server SERVING);
2. put a simulated UPS on the leader's machine: NUT's ``dummy-ups`` behind a private
   ``upsd`` (:mod:`.dummy_ups`), watched by the node's power watcher (:mod:`.power`),
   as ``parkgate power watch`` would on that machine;
3. start the load: ``clients`` windows quick-selling one ticket each, ``gates``
   turnstiles presenting sold tickets (:mod:`.gate_load`), all through every server;
4. drive the UPS through upsd, as ``upsrw`` does: ``OL`` -> ``OB`` (on battery: nothing
   stops) -> ``OB LB`` (low battery: the watcher switches over to the synchronous
   standby, then stops Patroni and PostgreSQL cleanly);
5. the mains come back (``OL``): after the settle time the watcher starts the node
   again and it rejoins as a replica by itself;
6. report: switchover or failover, the time from low battery to a clean stop, the
   acknowledged sales and admissions lost (target 0) and doubled, the longest gate
   wait and sales stall, how the node rejoined.

By default the gates talk to the servers directly. With ``behind_edge``
(``--behind-edge``) they stand behind a real site edge instead (``parkgate site
run``, :class:`.edge_drill.SiteEdge`, as the failover drill's gates round): the
edge asks the cluster and decides alone within its ``decision_deadline_ms`` when
the cluster is slow, as during the switchover's write pause; after the load
stops the drill waits until the edge has forwarded everything, then counts
lost and doubled admissions in the cluster's database.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from parkgate.common.power import PowerSettings, PowerState
from parkgate.server.pg import free_port

from .drill import _until, whole
from .dummy_ups import DummyUps
from .edge_drill import SiteEdge, register_edge
from .gate_load import GateLoad, prepare_gates, verify_admissions
from .load import Writer, prepare_sales, verify
from .power import NodePower
from .supervisor import ADMIN_FILE, ClusterError, load_secrets, load_state, trust_cluster_ca


class PowerDrill:
    def __init__(self, data_dir: Path, *, clients: int = 4, gates: int = 4, settle: float = 3.0,
                 on_battery_seconds: float = 2.0, timeout: float = 120.0, behind_edge: bool = False,
                 say: Callable[[str], None] = print) -> None:
        self.data_dir, self.clients, self.gates, self.behind_edge = data_dir, clients, gates, behind_edge
        self.settle, self.on_battery_seconds, self.timeout, self.say = settle, on_battery_seconds, timeout, say
        self.spec = load_state(data_dir).spec
        if len(self.spec.postgres) < 2:
            raise ClusterError("power drill needs 2 PostgreSQL nodes or more (someone must take over)")
        self.dsn = self.spec.server_dsn(load_secrets(data_dir).app)
        self.password = (data_dir / ADMIN_FILE).read_text().strip()
        self.run_id = uuid.uuid4().hex[:8]

    async def _state(self, node: NodePower, *states: PowerState) -> float:
        return await _until(lambda: node.watcher.state in states, self.timeout, f"power state {'/'.join(states)}")

    def _step_time(self, node: NodePower, prefix: str) -> float | None:
        return next((s.at for s in node.steps if s.what.startswith(prefix)), None)

    async def _edge(self, servers: list[str], site: str) -> SiteEdge:
        """A real site edge for the drill's gates, registered and started, able to decide alone."""
        device = f"power-edge-{self.run_id}"
        secret = await register_edge(servers[0], self.password, device, site)
        edge = SiteEdge(self.data_dir / "drill-edges" / f"power-{self.run_id}", device, secret, servers,
                        trust_cluster_ca(self.spec))
        edge.start()
        try:
            await edge.ready(self.timeout)
        except BaseException:
            edge.stop()
            raise
        self.say(f"gates behind a site edge: {device} on {edge.address} (its log: {edge.log})")
        return edge

    async def run(self) -> dict[str, Any]:
        await _until(lambda: whole(self.spec), self.timeout, "the cluster to be whole before the drill")
        from . import patroni_api

        view = patroni_api.cluster_view([n.rest_url for n in self.spec.postgres])
        assert view.leader is not None
        victim = view.leader.name
        servers = [s.address for s in self.spec.servers]
        ups = DummyUps(free_port())  # its own folder in the temp folder: the nut user must reach it
        await asyncio.to_thread(ups.start)
        self.say(f"simulated UPS for {victim}'s machine: dummy-ups behind upsd on {ups.address}")
        settings = PowerSettings(source="nut", port=ups.port, poll_seconds=0.25, timeout_seconds=1.0,
                                 settle_seconds=self.settle)
        node = NodePower(self.data_dir, victim, settings, say=self.say, timeout=self.timeout)
        watching = asyncio.create_task(node.run())
        log_file = self.spec.node_dir(victim) / "patroni.log"
        log_mark = log_file.stat().st_size if log_file.exists() else 0
        edge: SiteEdge | None = None
        decided_alone: int | None = None
        try:
            await self._state(node, PowerState.ONLINE)
            token, product = await prepare_sales(servers[0], self.password, self.run_id)
            site = f"power-site-{self.run_id}" if self.behind_edge else ""
            gates, codes = await prepare_gates(servers[0], self.password, token, product, self.run_id,
                                               self.gates, tickets=self.gates * 600, site=site)
            prefix = f"power_{self.run_id}"
            writer = Writer(servers, token, prefix, clients=self.clients, sell=product)
            if self.behind_edge:
                edge = await self._edge(servers, site)
                gate_load = GateLoad([edge.address], gates, codes, connected_first=True)
            else:
                gate_load = GateLoad(servers, gates, codes)
            writer.start()
            gate_load.start()
            try:
                await asyncio.sleep(2)
                self.say(f"mains fail at {victim}'s machine: ups.status OB")
                await asyncio.to_thread(ups.set_status, "OB", 60)
                await self._state(node, PowerState.ON_BATTERY)
                await asyncio.sleep(self.on_battery_seconds)
                self.say("battery low: ups.status OB LB")
                await asyncio.to_thread(ups.set_status, "OB LB", 9)
                await _until(lambda: any(s.what.startswith(("stopped:", "Patroni was not", "Patroni " + victim + " did"))
                                         for s in node.steps), self.timeout, "the node to stop")
                await asyncio.sleep(2)  # the load goes on against the new leader
                self.say("mains back: ups.status OL")
                mains_back = time.monotonic()
                await asyncio.to_thread(ups.set_status, "OL", 30)
                await _until(lambda: any(s.what.startswith(("rejoined", "did not stream", "could not start"))
                                         for s in node.steps), self.timeout + self.settle, "the node to rejoin")
                await asyncio.sleep(1)
            finally:
                sales = await writer.stop()
                gate_result = await gate_load.stop()
            if edge is not None:  # what the edge decided alone reaches the cluster before anything is counted
                await edge.drained(self.timeout)
                decided_alone = edge.decided_alone()
            await _until(lambda: whole(self.spec), self.timeout, "the cluster to be whole after the drill")
        finally:
            if edge is not None:
                edge.stop()
            watching.cancel()
            await asyncio.gather(watching, return_exceptions=True)
            await asyncio.to_thread(ups.remove)
        sales_check = await asyncio.to_thread(verify, self.dsn, prefix, sales.acked, sales=True)
        gate_check = await asyncio.to_thread(verify_admissions, self.dsn, gate_result.acked)
        after = patroni_api.cluster_view([n.rest_url for n in self.spec.postgres])
        low = self._step_time(node, "power on_battery -> low_battery")
        stopped = self._step_time(node, "stopped:")
        rejoined = next((s for s in node.steps if s.what.startswith("rejoined")), None)
        new_log = log_file.read_text(errors="replace")[log_mark:] if log_file.exists() else ""
        rewind = "pg_rewind" in new_log and "running pg_rewind" in new_log
        return {
            "victim": victim,
            "handover": node.handover,
            "switchover": node.handover.startswith("switchover to") and "not confirmed" not in node.handover,
            "new_leader": after.leader.name if after.leader else None,
            "low_battery_to_clean_stop_seconds": round(stopped - low, 2) if low and stopped else None,
            "rejoined": rejoined.what if rejoined else None,
            "rejoin_seconds_after_mains_back": round(rejoined.at - mains_back, 1) if rejoined else None,
            "rejoin_used_pg_rewind": rewind,
            "sales": {**sales_check, "replayed": sales.replayed, "replay_mismatches": len(sales.replay_mismatches),
                      "longest_stall_seconds": round(sales.stall, 2), "errors": dict(sales.errors)},
            "admissions": {**gate_check, "decisions": gate_result.decisions,
                           "longest_gate_wait_seconds": round(gate_result.longest_wait, 2),
                           "denied": dict(gate_result.denied), "errors": dict(gate_result.errors)},
            "gates_behind_site_edge": self.behind_edge,
            "edge_decided_alone": decided_alone,
            "steps": [s.what for s in node.steps],
        }


def ok(rep: dict[str, Any]) -> bool:
    return (rep["switchover"] and rep["sales"]["lost"] == 0 and rep["admissions"]["lost"] == 0
            and rep["sales"]["duplicates"] == 0 and rep["admissions"]["duplicates"] == 0
            and rep["low_battery_to_clean_stop_seconds"] is not None and rep["rejoined"] is not None)


def render(rep: dict[str, Any]) -> str:
    s, a = rep["sales"], rep["admissions"]
    lines = [
        f"{'PASS' if ok(rep) else 'FAIL'}: power drill on {rep['victim']} (the leader's machine)",
        f"  hand-over: {rep['handover'] or 'none'}; leader now {rep['new_leader']}"
        f" ({'switchover, no failover' if rep['switchover'] else 'NOT a switchover'})",
        f"  low battery -> clean stop: {rep['low_battery_to_clean_stop_seconds']}s",
        f"  sales: {s['acked']} acknowledged, {s['lost']} lost, {s['duplicates']} doubled; longest stall "
        f"{s['longest_stall_seconds']}s",
        f"  admissions: {a['acked']} acknowledged, {a['lost']} lost, {a['duplicates']} doubled; longest gate wait "
        f"{a['longest_gate_wait_seconds']}s ("
        + (f"gates behind a site edge, {rep['edge_decided_alone']} decided by the edge alone)"
           if rep["gates_behind_site_edge"] else "gates straight to the servers, no site edge)"),
        f"  rejoin: {rep['rejoined'] or 'NOT rejoined'}, {rep['rejoin_seconds_after_mains_back']}s after the mains "
        f"came back, {'with' if rep['rejoin_used_pg_rewind'] else 'without'} pg_rewind, no manual step",
    ]
    return "\n".join(lines)
