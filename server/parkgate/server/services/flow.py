"""The live flow (S26): counted in the gate pipeline, flushed to the database, streamed to control rooms.

Three parts, one per side of the database:

* :class:`FlowRecorder` -- the pipeline hands it each batch's decisions (and
  each group of refusals made before the database); it adds them up in
  memory per (park, minute, gate, kind, reason) and, about once a second,
  writes the sums and any alerts in one short transaction of its own and
  NOTIFYs the parks that changed. The gates' own transactions never wait for it.
* :class:`FlowWatch` -- one LISTEN connection per server for flow and park
  state notifications, waking the streams of the park concerned.
* :class:`LiveFlowService` -- a snapshot per park read from the database
  (so a stream on any server sees the gates of every server) and
  aggregated by :func:`parkgate.server.domain.flow.aggregate_flow`; sent at
  every change, at most every ``MIN_GAP_SECONDS``, and at least every interval.

A crash loses at most the last second of counters: the live screen is a
view, the exact figures are the ``validations`` rows reports read.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import defaultdict
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from parkgate.common import metrics
from parkgate.rules import GatePlace
from parkgate.server.domain import flow as domain
from parkgate.server.domain.admission import Recorded
from parkgate.server.domain.errors import InvalidArgument, NotFound, ParkgateError, Reason
from parkgate.server.jobs import BackgroundJobs
from parkgate.server.store import Database
from parkgate.server.store import flow as store
from parkgate.server.store import gates as gate_store
from parkgate.server.store import settings as settings_store
from parkgate.server.store.admissions import PARK_STATE_CHANNEL

from .held_checks import HeldCheckRow, HeldCheckService

log = logging.getLogger(__name__)

#: Alerts written per flush at most: a flood of forged codes is counted in full, sampled in the alert list.
MAX_ALERTS_PER_FLUSH = 100
MIN_GAP_SECONDS = 0.25
#: A ticket refused as used at one gate this soon after another gate admitted it is a conflict alert
#: (two gates saw it at once, or it was passed back over the fence).
CONFLICT_SECONDS = 5.0
RETENTION_SWEEP_SECONDS = 600.0

_Key = tuple[str, datetime, str, str, str]  # park, minute, device, kind, reason


def _minute(epoch: float) -> datetime:
    return datetime.fromtimestamp(epoch - epoch % 60, UTC)


class FlowRecorder:
    """Counts decisions per batch in memory; a task flushes them to the database about once a second."""

    def __init__(self, db: Database, server_id: str, *, flush_seconds: float = 1.0,
                 retention_hours: float = 48.0) -> None:
        self.db = db
        self.server_id = server_id
        self.flush_seconds = flush_seconds
        self.retention = timedelta(hours=retention_hours)
        self._counts: dict[_Key, list[int]] = defaultdict(lambda: [0, 0])
        self._alerts: list[store.AlertRow] = []
        self._alerts_dropped = 0
        self._touched: set[str] = set()
        self._jobs: BackgroundJobs | None = None
        self._admitted: dict[str, tuple[str, float]] = {}  # ticket -> (gate, when) of its latest admission

    # --- fed by the pipeline and the gate hub (no awaits, no locks: one event loop) ----------------

    def decided(self, recorded: Sequence[Recorded], now: float) -> None:
        """A committed batch's new decisions (retries are not in it: they counted the first time)."""
        minute = _minute(now)
        counts = self._counts
        admitted = self._admitted
        for r in recorded:
            a = r.admission
            d = r.decision
            kind = domain.counter_kind(d.allow, a.direction, not a.place.attraction_id)
            cell = counts[(r.park_id, minute, a.place.device_id, kind, d.reason.value)]
            cell[0] += 1
            cell[1] += abs(r.moved)
            self._touched.add(r.park_id)
            if not d.ticket_id:
                continue
            if d.allow:
                admitted[d.ticket_id] = (a.place.device_id, now)
            elif d.reason is Reason.ALREADY_USED:
                self._conflict(r, now)

    def _conflict(self, r: Recorded, now: float) -> None:
        earlier = self._admitted.get(r.decision.ticket_id)
        if earlier is None:
            return
        gate, when = earlier
        if gate != r.admission.place.device_id and now - when <= CONFLICT_SECONDS:
            self.alert("conflict", r.admission.place, r.decision.reason, r.admission.request_id,
                       f"ticket admitted at {gate} {now - when:.1f}s before")

    def refused_early(self, refused: Sequence[tuple[GatePlace, Reason]], now: float) -> None:
        """Refusals made before the database (forged, garbled, unknown key): never in ``validations``."""
        minute = _minute(now)
        for place, reason in refused:
            self._counts[(place.park_id, minute, place.device_id, domain.REFUSED, reason.value)][0] += 1
            self._touched.add(place.park_id)

    def alert(self, kind: str, place: GatePlace, reason: Reason, request_id: str, detail: str = "") -> None:
        if len(self._alerts) >= MAX_ALERTS_PER_FLUSH:
            self._alerts_dropped += 1
            return
        self._alerts.append(store.AlertRow(datetime.now(UTC), place.park_id, kind, place.device_id, reason.value,
                                           request_id, detail, self.server_id))
        self._touched.add(place.park_id)

    def touch(self, park_id: str) -> None:
        """Something a snapshot shows changed (a gate came or went): wake the park's streams at the next flush."""
        self._touched.add(park_id)

    # --- the flush --------------------------------------------------------------------------------

    def start(self, jobs: BackgroundJobs, *, flush_on_battery: float) -> None:
        """The flush runs as a background job, slowed to ``flush_on_battery`` seconds on battery (the live
        feeds are slowed too, S30); the retention sweep is paused on battery."""
        if self._jobs is None:
            self._jobs = jobs
            jobs.every("flow-flush", self.flush_seconds, self._flush_turn, on_battery=flush_on_battery)
            jobs.every("flow-retention", RETENTION_SWEEP_SECONDS, self._sweep_turn)

    async def stop(self) -> None:
        with contextlib.suppress(ParkgateError):
            await self.flush()  # the last second, while the pool is still open

    async def _flush_turn(self) -> None:
        try:
            await self.flush()
        except ParkgateError as exc:
            log.warning("live flow: flush failed (%s); the counts are kept for the next one", exc)

    async def _sweep_turn(self) -> None:
        try:
            async with self.db.transaction() as conn:
                dropped = await store.forget_before(conn, datetime.now(UTC) - self.retention)
        except ParkgateError as exc:
            log.warning("live flow: retention sweep failed (%s); the next one tries again", exc)
            return
        if dropped:
            log.info("live flow: %d counters and alerts older than %s dropped", dropped, self.retention)

    async def flush(self) -> None:
        """Write what was counted since the last flush; on failure it stays for the next one."""
        if self._admitted:  # only the last few seconds matter for conflicts
            horizon = time.time() - CONFLICT_SECONDS
            self._admitted = {t: seen for t, seen in self._admitted.items() if seen[1] >= horizon}
        if not self._touched:
            return
        counts, self._counts = self._counts, defaultdict(lambda: [0, 0])
        alerts, self._alerts = self._alerts, []
        touched, self._touched = self._touched, set()
        rows = [domain.FlowCount(p, m, d, k, r, n, persons) for (p, m, d, k, r), (n, persons) in counts.items()]
        try:
            async with self.db.transaction() as conn:
                await store.add_counts(conn, rows)
                await store.add_alerts(conn, alerts)
                await store.notify_flow(conn, sorted(touched))
        except BaseException:
            for key, (n, persons) in counts.items():  # keep them: added to whatever came meanwhile
                cell = self._counts[key]
                cell[0] += n
                cell[1] += persons
            self._alerts[:0] = alerts[: MAX_ALERTS_PER_FLUSH]
            self._touched |= touched
            raise
        if self._alerts_dropped:
            log.warning("live flow: %d alerts beyond %d a second were counted but not listed",
                        self._alerts_dropped, MAX_ALERTS_PER_FLUSH)
            self._alerts_dropped = 0


class FlowWatch:
    """One LISTEN connection per server for flow and park-state notifications; wakes each park's streams."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self._events: dict[str, set[asyncio.Event]] = defaultdict(set)
        self._tasks: list[asyncio.Task[None]] = []

    def subscribe(self, park_id: str) -> asyncio.Event:
        if not self._tasks:
            self._tasks = [asyncio.create_task(self._listen(channel), name=f"flow-watch-{channel}")
                           for channel in (store.FLOW_CHANNEL, PARK_STATE_CHANNEL)]
        event = asyncio.Event()
        self._events[park_id].add(event)
        return event

    def unsubscribe(self, park_id: str, event: asyncio.Event) -> None:
        self._events[park_id].discard(event)

    def wake_all(self) -> None:
        for events in self._events.values():
            for event in events:
                event.set()

    async def _listen(self, channel: str) -> None:
        while True:
            try:
                async for park_id in gate_store.notifications(self.db.conninfo, channel):
                    for event in self._events.get(park_id, ()):
                        event.set()
            except (ParkgateError, OSError) as exc:
                log.warning("live flow listener (%s): %s; listening again in 1s (the interval covers the gap)",
                            channel, exc)
            await asyncio.sleep(1.0)

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []


@dataclass(frozen=True, slots=True)
class Snapshot:
    """A flow view with what the store reads alongside it (alerts and sales are passed through)."""

    view: domain.FlowView
    alerts: list[store.AlertRow]
    sales: list[store.WindowSales]
    held: list[HeldCheckRow] = field(default_factory=list)  # S15: checks waiting at the gates, newest first


class LiveFlowService:
    def __init__(self, db: Database, watch: FlowWatch, *, default_interval: float = 5.0,
                 site_online_seconds: float = domain.SITE_ONLINE_SECONDS,
                 held_checks: HeldCheckService | None = None) -> None:
        self.db = db
        self.watch = watch
        self.held_checks = held_checks or HeldCheckService(db)
        self.default_interval = default_interval
        self.site_online_seconds = site_online_seconds
        self.closing = False
        self._closed = asyncio.Event()  # wakes the streams sleeping out a gap at shutdown
        # S30: on battery, the least time between two pushes of a stream (0.0 on mains); set by the server
        self.battery_interval: Callable[[], float] = lambda: 0.0

    def end_streams(self) -> None:
        """At shutdown: every stream ends now (its client reconnects to another server), not after the grace."""
        self.closing = True
        self._closed.set()
        self.watch.wake_all()

    async def snapshot(self, park_id: str, minutes: int) -> Snapshot:
        now = datetime.now(UTC)
        since = domain.first_minute(now, minutes)
        async with self.db.connection() as conn:
            parks = await gate_store.park_states(conn, [park_id])
            if not parks:
                raise NotFound(f"no park {park_id!r}", Reason.UNKNOWN_PARK)
            park = parks[0]
            counts = await store.counts_since(conn, park_id, since)
            gates = await gate_store.list_gates(conn, park_id)
            sites = await store.site_edges(conn, park_id)
            alerts = await store.alerts_since(conn, park_id, now - timedelta(hours=1))
            local_midnight = now.astimezone(ZoneInfo(park.time_zone)).replace(hour=0, minute=0, second=0,
                                                                               microsecond=0)
            sales = await store.sales_by_window(conn, park_id, local_midnight)
            held = await self.held_checks.read(conn, park_id)
        view = domain.aggregate_flow(now, park, counts, gates, sites, minutes, self.site_online_seconds)
        return Snapshot(view, alerts, sales, held)

    async def _default_interval(self) -> float:
        """The park's parameter ``reports.live_interval_seconds`` (S4: changed live), else the server default."""
        async with self.db.connection() as conn:
            value = await settings_store.get_parameter(conn, "reports.live_interval_seconds")
        try:
            return float(value) if value is not None and float(value) > 0 else self.default_interval  # type: ignore[arg-type]
        except (TypeError, ValueError):
            return self.default_interval

    async def stream(self, park_id: str, interval_seconds: float, minutes: int) -> AsyncIterator[Snapshot]:
        """Snapshots of one park until the caller stops iterating."""
        if not park_id:
            raise InvalidArgument("name the park to watch", Reason.UNKNOWN_PARK)
        if interval_seconds < 0 or minutes < 0:
            raise InvalidArgument("interval_seconds and minutes cannot be negative")
        interval = float(interval_seconds) or await self._default_interval()
        interval = max(interval, MIN_GAP_SECONDS)
        minutes = domain.clamp_minutes(minutes)
        changed = self.watch.subscribe(park_id)
        gauge = metrics.CONNECTED_STREAMS.labels("live_flow")
        gauge.inc()
        try:
            loop = asyncio.get_running_loop()
            while not self.closing:
                changed.clear()
                sent_at = loop.time()
                yield await self.snapshot(park_id, minutes)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(changed.wait(), interval)
                if self.closing:
                    return
                # on battery every push waits the battery interval, changes or not (S30: feeds slowed)
                gap = max(MIN_GAP_SECONDS, self.battery_interval()) - (loop.time() - sent_at)
                if gap > 0:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._closed.wait(), gap)
        finally:
            gauge.dec()
            self.watch.unsubscribe(park_id, changed)
