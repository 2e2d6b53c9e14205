"""One reading of a UPS, and the contract every source keeps (one abstract edge per outside system).

A source's :meth:`PowerSource.read` returns an :class:`UpsReading` or raises
:class:`PowerSourceError` (never a library's own exception): the state machine
turns repeated errors into its own state, lost contact (UNKNOWN).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


class PowerSourceError(RuntimeError):
    """The UPS (or upsd) did not answer, or answered something that is not a UPS status."""


@dataclass(frozen=True, slots=True)
class UpsReading:
    """What the UPS says now. ``charge_percent``/``runtime_seconds`` are -1 when the UPS does not tell."""

    on_battery: bool  # utility (mains) failed: the load runs from the battery
    low_battery: bool  # the UPS itself says its battery is low
    forced_shutdown: bool = False  # NUT's FSD flag, or a Q1 UPS whose shutdown is active
    charge_percent: int = -1
    runtime_seconds: int = -1
    status: str = ""  # the raw status as the UPS put it ("OL CHRG", "OB LB", Q1 bits "10000000")

    def describe(self) -> str:
        parts = [self.status or ("OB" if self.on_battery else "OL")]
        if self.charge_percent >= 0:
            parts.append(f"charge {self.charge_percent}%")
        if self.runtime_seconds >= 0:
            parts.append(f"runtime {self.runtime_seconds}s")
        return ", ".join(parts)


class PowerSource(Protocol):
    """A UPS the process can ask; ``name`` says which ("nut:ups@127.0.0.1:3493", "q1:/dev/ttyS0")."""

    name: str

    def read(self) -> UpsReading:
        """One reading now (blocking; the watcher runs it in a thread). Raises PowerSourceError."""
        ...

    def close(self) -> None:
        """Release the connection or the serial port."""
        ...
