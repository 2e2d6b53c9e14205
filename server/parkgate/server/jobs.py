"""The server's periodic background jobs, and the one switch that pauses them on battery (S30).

A job is a *turn* (one round of work) run every ``every`` seconds. Jobs that are
not needed to admit and sell (partition maintenance, the operation-log outbox
drainer, the live-flow retention sweep) declare ``on_battery=None``: while the
server's machine runs on battery they wait at the start of their next turn and
resume when the mains are back (after the power state machine's settle time). A
job the control room still wants, slower (the live-flow counters' flush),
declares a longer ``on_battery`` interval instead.

A turn already running when the mains fail finishes: pausing between turns never
leaves a transaction or a DDL statement cut in half. The gate pipeline, the gate
hub, the health watch and the etcd registration are not jobs of this runner: they
run whatever the power does.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

log = logging.getLogger(__name__)

Turn = Callable[[], Awaitable[None]]


@dataclass(slots=True)
class Job:
    name: str
    turn: Turn
    every: float
    on_battery: float | None  # None: paused on battery; else the interval on battery
    turns: int = 0
    state: str = "waiting"  # waiting | running | paused
    task: asyncio.Task[None] | None = field(default=None, repr=False)


class BackgroundJobs:
    """Runs each registered job's turns; :meth:`set_on_battery` pauses or slows them all at once."""

    def __init__(self) -> None:
        self.jobs: dict[str, Job] = {}
        self.on_battery = False
        self._mains = asyncio.Event()
        self._mains.set()
        self._changed = asyncio.Event()  # wakes jobs sleeping out a mains interval when the power changes

    def every(self, name: str, seconds: float, turn: Turn, *, on_battery: float | None = None) -> Job:
        """Start ``turn`` every ``seconds``; ``on_battery``: None = paused on battery, else that interval."""
        if name in self.jobs:
            raise ValueError(f"job {name!r} already runs")
        job = Job(name, turn, seconds, on_battery)
        job.task = asyncio.create_task(self._run(job), name=f"job-{name}")
        self.jobs[name] = job
        return job

    def set_on_battery(self, on_battery: bool) -> None:
        if on_battery == self.on_battery:
            return
        self.on_battery = on_battery
        if on_battery:
            self._mains.clear()
            paused = sorted(j.name for j in self.jobs.values() if j.on_battery is None)
            slowed = sorted(f"{j.name} every {j.on_battery:g}s" for j in self.jobs.values() if j.on_battery is not None)
            log.warning("on battery: background jobs paused: %s; slowed: %s",
                        ", ".join(paused) or "none", ", ".join(slowed) or "none")
        else:
            self._mains.set()
            log.info("mains back: background jobs resumed")
        self._changed.set()
        self._changed = asyncio.Event()

    def paused(self) -> list[str]:
        """The jobs now waiting for the mains (each is blocked before its next turn)."""
        return sorted(j.name for j in self.jobs.values() if j.state == "paused")

    async def _run(self, job: Job) -> None:
        while True:
            if self.on_battery and job.on_battery is None:
                job.state = "paused"
                await self._mains.wait()
            job.state = "running"
            try:
                await job.turn()
            except Exception:  # a turn logs what it expects; anything else must not end the job
                log.exception("background job %s: turn failed", job.name)
            job.turns += 1
            job.state = "waiting"
            await self._sleep(job)

    async def _sleep(self, job: Job) -> None:
        """The job's interval for the current power; cut short when the power changes (a slowed job speeds up)."""
        interval = job.on_battery if self.on_battery and job.on_battery is not None else job.every
        changed = self._changed
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(changed.wait(), interval)

    async def stop(self) -> None:
        tasks = [j.task for j in self.jobs.values() if j.task is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self.jobs.clear()
