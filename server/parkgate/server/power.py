"""What a server does with its machine's power (S30), driven by :mod:`parkgate.common.power`.

* ON_BATTERY: the battery's minutes go to sales and gates. Each RPC does what the
  contract's ``(access).on_battery`` says (:class:`~.rpc.shedding.PowerShedding`):
  reports run one at a time in a bounded queue, LiveFlow pushes at
  ``battery.live_interval_seconds``, truly heavy work (VerifyAuditLog) is refused
  with SERVER_ON_BATTERY; background jobs not needed to admit and sell pause
  (:class:`~.jobs.BackgroundJobs`); an alert line is logged.
* LOW_BATTERY, or the UPS orders a forced shutdown: SHUTTING_DOWN at once; health
  turns NOT_SERVING (clients and load balancers move to another server), the
  server stops taking calls and lets the in-flight ones finish
  (``server.shutdown_grace_seconds``), closes the pool and exits.
* Back on mains (after the settle time): everything served in full, jobs resumed.
* Lost contact with the UPS (UNKNOWN): logged as a warning; the server keeps
  serving in full (it does not know it runs on battery, and stopping for a
  pulled UPS cable would be worse than the risk).

Every transition is written to the operation log (method ``Power/Transition``)
and, in a cluster, published in etcd so ``Ops.PowerStatus`` on any server shows it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from parkgate.common import metrics
from parkgate.common.power import PowerSettings, PowerState, PowerWatcher, Transition
from parkgate.server.domain.errors import ParkgateError

from .cluster_view import PowerRecord
from .discovery import Etcd

log = logging.getLogger("parkgate.server.power")

AUDIT_METHOD = "Power/Transition"


class ServerPower:
    def __init__(self, settings: PowerSettings, server_id: str, record_audit: Callable[..., Awaitable[None]],
                 stop: Callable[[str], None], schema_ready: asyncio.Event | None = None) -> None:
        self.server_id = server_id
        self.schema_ready = schema_ready
        self._last_write: asyncio.Task[None] | None = None
        self.watcher = PowerWatcher.from_settings(settings, who=f"server {server_id}")
        self.record_audit = record_audit
        self.stop = stop
        self.stopping = False
        self.record: PowerRecord | None = None
        self.last_sentence = ""
        for handler in (self._act, self._audit, self._publish):
            self.watcher.on_transition(handler)

    def published_in(self, etcd: Etcd, cluster: str, ttl: int) -> PowerRecord:
        self.record = PowerRecord(etcd, cluster, self.server_id, self.snapshot(), ttl)
        return self.record

    @property
    def state(self) -> PowerState:
        return self.watcher.state

    def shedding(self) -> bool:
        """The server saves its battery now (on battery, low battery, shutting down)."""
        return self.watcher.state.degraded

    def snapshot(self) -> dict[str, Any]:
        return {"machine": self.server_id, "role": "server", **self.watcher.snapshot(),
                "detail": self.last_sentence or self.watcher.machine.error}

    async def _act(self, t: Transition) -> None:
        self.last_sentence = t.sentence()
        metrics.set_power_state("mains" if t.new == PowerState.ONLINE else t.new.value)
        if t.new == PowerState.ON_BATTERY:
            log.warning("ALERT server %s on battery: reports queued, live feeds slowed, heavy work refused "
                        "(SERVER_ON_BATTERY), background jobs paused until the mains are back", self.server_id)
        elif t.new in (PowerState.LOW_BATTERY, PowerState.SHUTTING_DOWN) and not self.stopping:
            self.stopping = True
            if t.new == PowerState.LOW_BATTERY:
                await self.watcher.begin_shutdown(
                    "low battery: health NOT_SERVING, draining in-flight calls, then stopping")
            self.stop(t.why)

    async def _audit(self, t: Transition) -> None:
        """Written in the background: the poll loop must not wait for a database that may be going away."""
        previous = self._last_write
        self._last_write = asyncio.create_task(self._write_audit(t, previous), name="power-audit")

    async def _write_audit(self, t: Transition, previous: asyncio.Task[None] | None) -> None:
        if previous is not None:  # the log keeps the order of the transitions
            await asyncio.gather(previous, return_exceptions=True)
        if self.schema_ready is not None:  # a transition at start-up waits for the operation log to exist
            try:
                await asyncio.wait_for(self.schema_ready.wait(), 60)
            except TimeoutError:
                log.error("power transition not in the operation log (no database): %s", t.sentence())
                return
        reading = t.reading
        summary = {"old": str(t.old), "new": str(t.new), "why": t.why, "source": self.watcher.source_name,
                   "status": reading.status if reading else "",
                   "charge_percent": reading.charge_percent if reading else -1}
        try:
            await self.record_audit(user_id=None, username="", device_id="", method=AUDIT_METHOD,
                                    outcome=t.new.name, summary=summary, peer=self.server_id)
        except (ParkgateError, OSError) as exc:  # the database may be what is going away
            log.error("power transition not in the operation log (%s): %s", exc, t.sentence())

    async def _publish(self, t: Transition) -> None:
        if self.record is not None:
            try:
                await self.record.publish(self.snapshot())
            except Exception as exc:  # etcd away: the next registration turn writes it
                log.warning("power state not published in etcd: %s", exc)
