"""A park's live flow (S26) from the counters, connections and alerts the store read: plain Python.

The store gives per-minute counters by gate, kind and reason
(:mod:`parkgate.server.store.flow`), the gates' connections, the site edges
and recent alerts; this module turns them into what the wall screen shows:
a per-minute series with every minute present (a quiet minute is a zero,
not a gap in the chart), occupancy per minute derived back from the exact
count of now, a tile per gate, refusals by reason and sites online or not.

Nothing here knows SQL or gRPC; inputs are read through small protocols so
the store's row types pass straight in.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Protocol

#: Counter kinds (flow_counts.kind): persons in or out at a park gate, a ride's validation, a refusal.
ENTRY, EXIT, RIDE, REFUSED = "in", "out", "ride", "refused"
DEFAULT_MINUTES = 30
MAX_MINUTES = 240
#: A site edge is online when it spoke to the central system at most this long ago.
SITE_ONLINE_SECONDS = 90.0


@dataclass(frozen=True, slots=True)
class FlowCount:
    """One counter: validations (and persons moved) of one kind at one gate of a park in one minute."""

    park_id: str
    minute: datetime      # the start of the minute
    device_id: str
    kind: str             # ENTRY, EXIT, RIDE or REFUSED
    reason: str           # OK for admissions, the refusal's reason otherwise
    n: int
    persons: int


class ParkLike(Protocol):
    park_id: str
    inside: int
    capacity: int
    capacity_resume_margin: int
    paused: bool
    emergency: bool
    emergency_since: datetime | None


class GateLike(Protocol):
    device_id: str
    connected: bool
    server_id: str
    state: str
    last_heartbeat: datetime | None


class SiteLike(Protocol):
    device_id: str
    site: str
    last_contact: datetime | None


@dataclass(frozen=True, slots=True)
class MinuteFlow:
    minute: datetime
    entries: int = 0
    exits: int = 0
    refusals: int = 0
    inside: int = 0


@dataclass(frozen=True, slots=True)
class GateView:
    device_id: str
    connected: bool
    state: str
    server_id: str
    last_heartbeat: datetime | None
    entries: int
    exits: int
    refusals: int


@dataclass(frozen=True, slots=True)
class SiteView:
    device_id: str
    site: str
    online: bool
    last_contact: datetime | None


@dataclass(slots=True)
class FlowView:
    at: datetime
    park: ParkLike
    minutes: list[MinuteFlow]
    gates: list[GateView]
    sites: list[SiteView]
    refusals: list[tuple[str, int]]              # (reason, validations), most frequent first
    entries: int = 0
    exits: int = 0
    by_gate: list[tuple[str, int]] = field(default_factory=list)  # (device, persons in or out)


def clamp_minutes(minutes: int) -> int:
    """The series length a request asked for: 0 means the default; never more than :data:`MAX_MINUTES`."""
    if minutes <= 0:
        return DEFAULT_MINUTES
    return min(minutes, MAX_MINUTES)


def first_minute(now: datetime, minutes: int) -> datetime:
    """The start of the oldest minute a series of ``minutes`` minutes ending with the current one covers."""
    current = now.replace(second=0, microsecond=0)
    return current - timedelta(minutes=minutes - 1)


def aggregate_flow(now: datetime, park: ParkLike, counts: Iterable[FlowCount], gates: Sequence[GateLike],
                   sites: Sequence[SiteLike], minutes: int,
                   site_online_seconds: float = SITE_ONLINE_SECONDS) -> FlowView:
    """The park's flow over the ``minutes`` minutes ending now."""
    start = first_minute(now, minutes)
    slots = [start + timedelta(minutes=k) for k in range(minutes)]
    entries: dict[datetime, int] = defaultdict(int)
    exits: dict[datetime, int] = defaultdict(int)
    refused: dict[datetime, int] = defaultdict(int)
    reasons: dict[str, int] = defaultdict(int)
    per_gate: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0])
    for c in counts:
        if c.minute < start:
            continue
        tile = per_gate[c.device_id]
        if c.kind == ENTRY:
            entries[c.minute] += c.persons
            tile[0] += c.persons
        elif c.kind == EXIT:
            exits[c.minute] += c.persons
            tile[1] += c.persons
        elif c.kind == REFUSED:
            refused[c.minute] += c.n
            reasons[c.reason] += c.n
            tile[2] += c.n
    # occupancy at the end of each minute: today's exact count, walked back through the later minutes
    inside_after = park.inside
    series: list[MinuteFlow] = []
    for minute in reversed(slots):
        series.append(MinuteFlow(minute, entries[minute], exits[minute], refused[minute], max(inside_after, 0)))
        inside_after -= entries[minute] - exits[minute]
    series.reverse()
    known = {g.device_id for g in gates}
    tiles = [GateView(g.device_id, g.connected, g.state, g.server_id, g.last_heartbeat, *per_gate[g.device_id])
             for g in gates]
    # a gate that counted but is no longer registered in the park still shows what it did
    tiles += [GateView(device, False, "unregistered", "", None, *per_gate[device])
              for device in sorted(set(per_gate) - known)]
    site_views = [SiteView(s.device_id, s.site, _online(now, s.last_contact, site_online_seconds), s.last_contact)
                  for s in sites]
    return FlowView(
        at=now, park=park, minutes=series, gates=tiles, sites=site_views,
        refusals=sorted(reasons.items(), key=lambda kv: (-kv[1], kv[0])),
        entries=sum(m.entries for m in series), exits=sum(m.exits for m in series),
        by_gate=sorted(((t.device_id, t.entries + t.exits) for t in tiles if t.entries or t.exits),
                       key=lambda kv: (-kv[1], kv[0])),
    )


def _online(now: datetime, last: datetime | None, within: float) -> bool:
    return last is not None and (now - last).total_seconds() <= within


# --- what the pipeline's decisions count as --------------------------------------------------------

def counter_kind(allow: bool, direction: str, park_gate: bool) -> str:
    """The counter a decision adds to: persons in or out at a park gate, a ride, or a refusal."""
    if not allow:
        return REFUSED
    if not park_gate:
        return RIDE
    return ENTRY if direction == "in" else EXIT


#: Refusals of a code that is not ours (S22): someone presented a forged or altered code.
FORGERY_REASONS = frozenset({"FORGED_CODE", "REVOKED_KEY", "UNKNOWN_KEY", "NON_CANONICAL_ENCODING",
                             "TRAILING_BYTES"})
#: Refusals of a forwarded offline admission that mean two gates let the same ticket in.
CONFLICT_REASONS = frozenset({"ALREADY_USED", "NO_ENTRIES_LEFT", "DAILY_LIMIT_REACHED", "REENTRY_NOT_ALLOWED",
                              "REFUNDED", "VOIDED"})


#: A validation scanned longer ago than this was decided offline and is being forwarded now (a gate asks
#: live with a deadline of a few seconds).
FORWARDED_AFTER_SECONDS = 10.0


def is_forwarded(scanned_at: float, now: float) -> bool:
    """Whether a validation scanned at ``scanned_at`` (epoch seconds) is an offline admission handed over late."""
    return scanned_at > 0 and now - scanned_at > FORWARDED_AFTER_SECONDS


def alert_kind(reason: str, *, fast_mode: bool, forwarded: bool) -> str | None:
    """Which alert a refusal raises, if any.

    A forwarded offline admission that is refused means the person is
    already inside on a ticket the system says was used elsewhere: a
    conflict. A refusal at a gate in fast mode came after the gate opened.
    A forged or altered code is an attempt at fraud wherever it is shown.
    """
    if forwarded and reason in CONFLICT_REASONS:
        return "conflict"
    if reason in FORGERY_REASONS:
        return "forged_code"
    if fast_mode or forwarded:
        return "fast_mode_refusal"
    return None
