"""The power watcher of a database machine: hand over before the battery is empty, rejoin when mains return.

One per machine that runs a Patroni node (``parkgate power watch --node pg1``),
reading that machine's UPS through :mod:`parkgate.common.power`:

* ON_BATTERY: nothing stops (the UPS carries the load); the state is published
  in etcd (``Ops.PowerStatus`` shows it) and logged as an alert.
* LOW_BATTERY (or the UPS orders a shutdown): if this node is the Patroni
  leader, a **planned switchover** to the synchronous standby through Patroni's
  REST API (``POST /switchover``) first, waiting until another node leads with
  the standby's data in sync; then Patroni is stopped cleanly (SIGTERM: Patroni
  stops PostgreSQL with a fast shutdown and removes its member key), so no
  failover, no lease to expire, no acknowledged commit lost.
* Mains back and steady (the settle time): the node is started again
  (``cluster up``: only what is not running) and rejoins as a replica by itself
  (Patroni runs pg_rewind if its timeline diverged): no manual step.
* Lost contact with the UPS: logged and published; nothing is stopped.

Each step is one sentence (``say``) and one :class:`Step` in :attr:`NodePower.steps`,
with its time, for the drill's report. This module drives a cluster started by
``parkgate cluster up`` (processes by pid, :mod:`.supervisor`); machines under
systemd are not handled here yet (docs/power.md says what to run instead).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from parkgate.common.power import PowerSettings, PowerState, PowerWatcher, Transition
from parkgate.server.cluster_view import PowerRecord

from . import patroni_api
from .etcd_access import open_etcd
from .supervisor import ClusterError, load_state

log = logging.getLogger("parkgate.ha.power")


@dataclass
class Step:
    at: float  # monotonic
    what: str


@dataclass
class NodePower:
    """Watches one node's UPS and acts on it; :meth:`run` until cancelled."""

    data_dir: Path
    node: str
    settings: PowerSettings
    say: Callable[[str], None] = field(default=lambda s: log.info("%s", s))
    timeout: float = 90.0
    steps: list[Step] = field(default_factory=list)
    stopped: bool = False  # this watcher stopped the node (and so starts it again)
    handover: str = ""  # "switchover to pg2" / "not the leader" / "switchover refused: ..."

    def __post_init__(self) -> None:
        self.spec = load_state(self.data_dir).spec
        if self.node not in {n.name for n in self.spec.postgres}:
            raise ClusterError(f"--node: no PostgreSQL node {self.node!r} in {self.data_dir}")
        self.watcher = PowerWatcher.from_settings(self.settings, who=f"node {self.node}")
        self.watcher.on_transition(self._on_transition)
        self.rest = {n.name: n.rest_url for n in self.spec.postgres}
        self.etcd = open_etcd(self.spec, self.node)  # the node's own certificate, as its Patroni uses
        self.record = PowerRecord(self.etcd, self.spec.name, self.node, self.snapshot())
        self._busy: asyncio.Task[None] | None = None

    def _step(self, what: str) -> None:
        self.steps.append(Step(time.monotonic(), what))
        self.say(f"{self.node}: {what}")

    def snapshot(self) -> dict[str, Any]:
        return {"machine": self.node, "role": "database", "host": socket.gethostname(), **self.watcher.snapshot(),
                "detail": self.steps[-1].what if self.steps else self.watcher.machine.error}

    async def run(self) -> None:
        tasks = [asyncio.create_task(self.watcher.run()), asyncio.create_task(self.record.run())]
        try:
            await asyncio.gather(*tasks)
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            if self._busy is not None:
                await asyncio.gather(self._busy, return_exceptions=True)
            self.etcd.close()

    async def _on_transition(self, t: Transition) -> None:
        self._step(t.sentence())
        with contextlib.suppress(Exception):
            await self.record.publish(self.snapshot())
        if t.new in (PowerState.LOW_BATTERY, PowerState.SHUTTING_DOWN) and not self.stopped:
            self.stopped = True
            self._busy = asyncio.create_task(self._hand_over_and_stop(t))
        elif t.new == PowerState.ONLINE and self.stopped:
            previous = self._busy
            self._busy = asyncio.create_task(self._rejoin(previous))

    # -- low battery --------------------------------------------------------------------------------

    def _leader(self) -> str | None:
        try:
            view = patroni_api.cluster_view(self.rest.values(), timeout=1)
        except patroni_api.PatroniError:
            return None
        return view.leader.name if view.leader else None

    async def _hand_over_and_stop(self, t: Transition) -> None:
        if self.watcher.state != PowerState.SHUTTING_DOWN:
            await self.watcher.begin_shutdown("low battery: hand over, then stop Patroni and PostgreSQL cleanly")
        leader = await asyncio.to_thread(self._leader)
        if leader == self.node:
            await self._switchover()
        else:
            self.handover = f"not the leader ({leader or 'no leader'} leads): nothing to hand over"
            self._step(self.handover)
        await self._stop_patroni()

    async def _switchover(self) -> None:
        view = await asyncio.to_thread(patroni_api.cluster_view, self.rest.values())
        candidate = view.sync_standbys[0].name if view.sync_standbys else None
        if candidate is None:
            self.handover = "no synchronous standby to switch over to: stopping as the leader (a failover follows)"
            self._step(self.handover)
            return
        self._step(f"leader on low battery: planned switchover to the synchronous standby {candidate}")
        try:
            message = await asyncio.to_thread(patroni_api.switchover, self.rest[self.node], self.node, candidate)
        except patroni_api.PatroniError as exc:
            self.handover = f"switchover refused ({exc}): stopping as the leader (a failover follows)"
            self._step(self.handover)
            return
        deadline = time.monotonic() + self.timeout
        while time.monotonic() < deadline:
            if await asyncio.to_thread(self._leader) == candidate:
                self.handover = f"switchover to {candidate}"
                self._step(f"{candidate} leads ({message})")
                return
            await asyncio.sleep(0.2)
        self.handover = f"switchover to {candidate} not confirmed within {self.timeout:.0f}s"
        self._step(self.handover)

    async def _stop_patroni(self) -> None:
        proc = load_state(self.data_dir).procs.get(self.node)
        if proc is None or not proc.alive():
            self._step("Patroni was not running")
            return
        self._step(f"stopping Patroni {self.node} (pid {proc.pid}) with SIGTERM: PostgreSQL shuts down cleanly")
        os.kill(proc.pid, signal.SIGTERM)
        for _ in range(int(self.timeout * 10)):  # not our child: its exit is seen by polling /proc
            if not proc.alive():
                break
            await asyncio.sleep(0.1)
        if proc.alive():
            self._step(f"Patroni {self.node} did not stop within {self.timeout:.0f}s")
            return
        pid_file = self.spec.node_dir(self.node) / "data" / "postmaster.pid"
        self._step(f"stopped: Patroni exited, PostgreSQL {'still has a pid file' if pid_file.exists() else 'down'}")

    # -- mains back ---------------------------------------------------------------------------------

    async def _rejoin(self, previous: asyncio.Task[None] | None) -> None:
        if previous is not None:
            await asyncio.gather(previous, return_exceptions=True)
        self._step("mains back and steady: starting the node again (cluster up: only what is not running)")
        # `parkgate cluster up` in its own process, as an SRE would run it: forking daemons from this
        # process (threads, grpc) could hang in the child before exec.
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "parkgate.common.cli", "cluster", "up", "--data-dir", str(self.data_dir),
            "--timeout", str(self.timeout), stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE)
        _out, err = await proc.communicate()
        if proc.returncode != 0:
            self._step(f"could not start the node again: {err.decode(errors='replace').strip()[-400:]}")
            return
        self.stopped = False
        deadline = time.monotonic() + self.timeout
        while time.monotonic() < deadline:
            with contextlib.suppress(patroni_api.PatroniError):
                view = await asyncio.to_thread(patroni_api.cluster_view, self.rest.values(), 1)
                me = next((m for m in view.members if m.name == self.node), None)
                if me is not None and me.state == "streaming":
                    self._step(f"rejoined as {me.role} (streaming, lag {me.lag or 0} B)")
                    return
            await asyncio.sleep(0.25)
        self._step(f"did not stream again within {self.timeout:.0f}s")


def settings_from(nut: str | None, q1: str | None, **kw: Any) -> PowerSettings:
    """``--nut UPS@HOST:PORT`` or ``--q1 DEVICE`` as PowerSettings."""
    if nut:
        ups, _, where = nut.partition("@")
        host, _, port = (where or "127.0.0.1:3493").rpartition(":")
        return PowerSettings(source="nut", ups=ups, host=host or "127.0.0.1", port=int(port or 3493), **kw)
    if q1:
        return PowerSettings(source="q1", device=q1, **kw)
    raise ClusterError("say which UPS: --nut UPS@HOST:PORT or --q1 DEVICE")
