"""The one power state machine of a process, with hysteresis against flapping mains.

States, and what moves between them::

    UNKNOWN --first reading--> ONLINE / ON_BATTERY / LOW_BATTERY / SHUTTING_DOWN
    ONLINE --mains fail--> ON_BATTERY --battery low--> LOW_BATTERY --the process stops--> SHUTTING_DOWN
    ON_BATTERY / LOW_BATTERY / SHUTTING_DOWN --mains back for settle_seconds--> ONLINE
    any state but SHUTTING_DOWN --no reading for lost_after_seconds--> UNKNOWN (lost contact)

Rules that make it safe:

* going down is immediate (mains fail: ON_BATTERY at the first reading that says so);
  coming back needs the mains to stay good for ``settle_seconds`` without a break, so
  mains that flap (on, off, on...) keep the process degraded instead of
  re-arming it each time;
* once LOW_BATTERY, the machine does not return to ON_BATTERY while the mains are
  out (a charge that wobbles around the threshold must not toggle a shutdown);
* SHUTTING_DOWN is entered when the UPS orders it (NUT's FSD, Q1's shutdown bit)
  or when the process starts its own stop (:meth:`PowerMachine.begin_shutdown`), and
  is left only for ONLINE: a stop that has begun is not undone by a lost UPS;
* losing contact with the UPS is UNKNOWN, a state of its own: the process does not
  know whether it runs on battery, so it does not pretend either way.

Every transition is a :class:`Transition` with a sentence saying why, given to the
listeners in the order they were added.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum

from .reading import UpsReading


class PowerState(StrEnum):
    ONLINE = "online"
    ON_BATTERY = "on_battery"
    LOW_BATTERY = "low_battery"
    SHUTTING_DOWN = "shutting_down"
    UNKNOWN = "unknown"

    @property
    def degraded(self) -> bool:
        return self in (PowerState.ON_BATTERY, PowerState.LOW_BATTERY, PowerState.SHUTTING_DOWN)


@dataclass(frozen=True, slots=True)
class Transition:
    old: PowerState
    new: PowerState
    at: float  # wall clock (epoch seconds)
    why: str
    reading: UpsReading | None = None

    def sentence(self) -> str:
        return f"power {self.old} -> {self.new}: {self.why}"


Listener = Callable[[Transition], None]


class PowerMachine:
    """Feed it readings (:meth:`observe`) and failed polls (:meth:`lost`); it says when the state changes."""

    def __init__(self, *, settle_seconds: float = 30.0, lost_after_seconds: float = 10.0,
                 low_charge_percent: int = -1, low_runtime_seconds: int = -1,
                 clock: Callable[[], float] = time.monotonic, wall: Callable[[], float] = time.time) -> None:
        self.settle_seconds = settle_seconds
        self.lost_after_seconds = lost_after_seconds
        self.low_charge_percent = low_charge_percent
        self.low_runtime_seconds = low_runtime_seconds
        self.clock, self.wall = clock, wall
        self.state = PowerState.UNKNOWN
        self.since = wall()
        self.reading: UpsReading | None = None
        self.error = "no reading yet"
        self.listeners: list[Listener] = []
        self._last_ok = clock()
        self._mains_since: float | None = None
        self._was_degraded = False  # the last known state (before a lost contact) was degraded

    def add_listener(self, listener: Listener) -> None:
        self.listeners.append(listener)

    def _go(self, new: PowerState, why: str) -> Transition | None:
        if new == self.state:
            return None
        t = Transition(self.state, new, self.wall(), why, self.reading)
        self.state, self.since = new, t.at
        if new != PowerState.UNKNOWN:
            self._was_degraded = new.degraded
        for listener in self.listeners:
            listener(t)
        return t

    def _low(self, r: UpsReading) -> str:
        if r.low_battery:
            return "the UPS reports battery low"
        if 0 <= self.low_charge_percent and 0 <= r.charge_percent <= self.low_charge_percent:
            return f"charge {r.charge_percent}% at or below {self.low_charge_percent}%"
        if 0 <= self.low_runtime_seconds and 0 <= r.runtime_seconds <= self.low_runtime_seconds:
            return f"runtime {r.runtime_seconds}s at or below {self.low_runtime_seconds}s"
        return ""

    def observe(self, r: UpsReading) -> Transition | None:
        """A successful reading."""
        now = self.clock()
        self._last_ok, self.reading, self.error = now, r, ""
        if r.forced_shutdown:
            self._mains_since = None
            return self._go(PowerState.SHUTTING_DOWN, f"the UPS orders a forced shutdown ({r.describe()})")
        if r.on_battery:
            self._mains_since = None
            low = self._low(r)
            if self.state == PowerState.SHUTTING_DOWN:
                return None
            if low:
                return self._go(PowerState.LOW_BATTERY, f"{low} ({r.describe()})")
            if self.state == PowerState.LOW_BATTERY:
                return None  # no way back up while the mains are out
            return self._go(PowerState.ON_BATTERY, f"mains failed ({r.describe()})")
        # on mains
        if self.state == PowerState.ONLINE:
            return None
        degraded = self.state.degraded or (self.state == PowerState.UNKNOWN and self._was_degraded)
        if not degraded:
            return self._go(PowerState.ONLINE, f"on mains ({r.describe()})")
        if self._mains_since is None:
            self._mains_since = now
        steady = now - self._mains_since
        if steady >= self.settle_seconds:
            return self._go(PowerState.ONLINE, f"mains back and steady for {steady:.1f}s ({r.describe()})")
        return None

    def lost(self, error: str) -> Transition | None:
        """A poll that failed; contact counts as lost once no reading came for ``lost_after_seconds``."""
        self.error = error
        self._mains_since = None  # a mains return must be seen steady, without a gap
        silent = self.clock() - self._last_ok
        if self.state in (PowerState.UNKNOWN, PowerState.SHUTTING_DOWN) or silent < self.lost_after_seconds:
            return None
        return self._go(PowerState.UNKNOWN, f"lost contact with the UPS for {silent:.1f}s ({error})")

    def begin_shutdown(self, why: str) -> Transition | None:
        """The process starts its own clean stop (low battery): SHUTTING_DOWN, said to every listener."""
        return self._go(PowerState.SHUTTING_DOWN, why)
