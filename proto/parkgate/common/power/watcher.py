"""The loop that polls a UPS and drives a :class:`~.machine.PowerMachine`, for asyncio processes.

Each poll runs the (blocking) source in a thread; each transition is logged as
one sentence and handed to the async handlers in order (the server sheds work,
the gate agent decides locally, the cluster node hands over...). A handler that
fails is logged and does not stop the others or the loop.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from .machine import PowerMachine, PowerState, Transition
from .reading import PowerSource, PowerSourceError
from .settings import PowerSettings, open_source

log = logging.getLogger("parkgate.power")

Handler = Callable[[Transition], Awaitable[None] | None]


class PowerWatcher:
    """Polls ``source`` every ``poll_seconds``; ``source=None`` (no UPS): stays ONLINE, never polls."""

    def __init__(self, source: PowerSource | None, machine: PowerMachine, poll_seconds: float = 2.0,
                 *, who: str = "") -> None:
        self.source = source
        self.machine = machine
        self.poll_seconds = poll_seconds
        self.who = who
        self.handlers: list[Handler] = []
        self._pending: list[Transition] = []
        self._delivering = False
        machine.add_listener(self._pending.append)
        if source is None:
            machine.state = PowerState.ONLINE
            machine.error = ""

    @classmethod
    def from_settings(cls, settings: PowerSettings, *, who: str = "") -> PowerWatcher:
        return cls(open_source(settings), settings.machine(), settings.poll_seconds, who=who)

    @property
    def state(self) -> PowerState:
        return self.machine.state

    @property
    def source_name(self) -> str:
        return self.source.name if self.source is not None else "none"

    def on_transition(self, handler: Handler) -> None:
        self.handlers.append(handler)

    async def poll_once(self) -> Transition | None:
        """One poll: read, feed the machine, run the handlers of what changed."""
        assert self.source is not None
        try:
            reading = await asyncio.to_thread(self.source.read)
        except PowerSourceError as exc:
            if not self.machine.error or self.machine.error == "no reading yet":
                log.warning("%spower: %s", self._prefix, exc)
            self.machine.lost(str(exc))
        else:
            self.machine.observe(reading)
        return await self._deliver()

    async def begin_shutdown(self, why: str) -> None:
        """SHUTTING_DOWN; from inside a handler, delivered after the transition being handled."""
        self.machine.begin_shutdown(why)
        if not self._delivering:
            await self._deliver()

    async def _deliver(self) -> Transition | None:
        last = None
        self._delivering = True
        try:
            while self._pending:
                last = await self._deliver_one(self._pending.pop(0))
        finally:
            self._delivering = False
        return last

    async def _deliver_one(self, t: Transition) -> Transition:
        log.log(logging.WARNING if t.new != PowerState.ONLINE else logging.INFO, "%s%s", self._prefix, t.sentence())
        for handler in self.handlers:
            try:
                result = handler(t)
                if inspect.isawaitable(result):
                    await result
            except Exception:
                log.exception("%spower: a handler of %s failed", self._prefix, t.sentence())
        return t

    @property
    def _prefix(self) -> str:
        return f"{self.who}: " if self.who else ""

    async def run(self) -> None:
        """Poll for ever (cancel the task to stop); closes the source when cancelled."""
        if self.source is None:
            return
        try:
            while True:
                await self.poll_once()
                await asyncio.sleep(self.poll_seconds)
        finally:
            await asyncio.to_thread(self.source.close)

    def snapshot(self) -> dict[str, Any]:
        """The state as plain data (status commands, the etcd record, the audit detail)."""
        r = self.machine.reading
        return {"state": str(self.machine.state), "since": self.machine.since, "source": self.source_name,
                "charge_percent": r.charge_percent if r else -1, "runtime_seconds": r.runtime_seconds if r else -1,
                "status": r.status if r else "", "error": self.machine.error}
