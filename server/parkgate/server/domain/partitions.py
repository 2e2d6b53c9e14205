"""Time partitions as rules: which ranges must exist ahead, and which are past retention.

Pure: the store lists and creates partitions; this module says which. Bounds
are UTC midnights (a day) or UTC first-of-month midnights (a month): the
partitions serve retention and pruning, not the park's calendar, so one
installation-wide clock is right; reports cut their periods in the park's zone
over whatever partitions hold the rows.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Literal

Interval = Literal["day", "month"]


@dataclass(frozen=True, slots=True)
class Bounds:
    start: datetime   # included
    end: datetime     # excluded

    def overlaps(self, other: Bounds) -> bool:
        return self.start < other.end and other.start < self.end

    def suffix(self) -> str:
        return self.start.strftime("%Y%m%d")


def _floor(at: datetime, interval: Interval) -> datetime:
    at = at.astimezone(UTC)
    if interval == "day":
        return at.replace(hour=0, minute=0, second=0, microsecond=0)
    return at.replace(day=1, hour=0, minute=0, second=0, microsecond=0)


def _next(start: datetime, interval: Interval) -> datetime:
    if interval == "day":
        return start + timedelta(days=1)
    return start.replace(year=start.year + 1, month=1) if start.month == 12 else start.replace(month=start.month + 1)


def wanted(now: datetime, interval: Interval, ahead: int) -> list[Bounds]:
    """The current interval and ``ahead`` more after it."""
    out: list[Bounds] = []
    start = _floor(now, interval)
    for _ in range(ahead + 1):
        end = _next(start, interval)
        out.append(Bounds(start, end))
        start = end
    return out


def missing(want: list[Bounds], existing: list[Bounds]) -> list[Bounds]:
    """What to create: wanted ranges no existing partition overlaps (an interval change never collides)."""
    return [b for b in want if not any(b.overlaps(e) for e in existing)]


def cutoff(now: datetime, retention_days: int) -> datetime:
    return now.astimezone(UTC) - timedelta(days=retention_days)


def expired(existing: list[Bounds], now: datetime, retention_days: int) -> list[Bounds]:
    """Partitions whose every row is older than the retention: dropped whole."""
    limit = cutoff(now, retention_days)
    return [b for b in existing if b.end <= limit]
