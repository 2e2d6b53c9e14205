"""The typed values the decision engine reads and writes.

Every place that decides a validation (the central pipeline over rows it
locked, the gate agent's offline path over what it remembers) builds these
same values and calls :func:`parkgate.rules.decide`. Times are UTC epoch
seconds (floats): one clock reading per decision, no time zones until
:class:`LocalTime` turns it into the park's calendar.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Literal
from zoneinfo import ZoneInfo

from parkgate.common.reason import Reason

Direction = Literal["in", "out"]
TicketStatus = Literal["valid", "refunded", "voided"]


@dataclass(frozen=True, slots=True)
class GatePlace:
    """Where a gate stands: its park and attraction, by id and by the numbers codes carry."""

    device_id: str
    park_id: str
    park_number: int
    time_zone: str
    attraction_id: str = ""      # "" = the park gate
    attraction_slot: int = 0     # 0 = the park gate
    direction: Direction = "in"
    confirms_passage: bool = False  # the relay board reports whether the person passed

    @property
    def park_gate(self) -> bool:
        return not self.attraction_id


@dataclass(frozen=True, slots=True)
class TicketState:
    """What a decision needs of one ticket: its terms (copied from the product at sale) and its uses so far.

    The central pipeline reads it from the ticket's locked row; an offline gate
    builds it from the signed code, the product's terms and its own journal.
    """

    ticket_id: str
    serial: int
    park_id: str
    valid_from: float
    valid_until: float                 # exclusive
    status: TicketStatus = "valid"
    valid_days: int = 0                # > 0: valid for N park-local days from the first use
    persons: int = 1
    entries_total: int = 0             # 0 = unlimited
    entries_per_day: int = 0           # 0 = unlimited
    reentry_allowed: bool = False
    hold_for_check: bool = False
    attraction_ids: frozenset[str] = frozenset()
    all_attractions: bool = False
    window: tuple[int, int] | None = None  # night window, minutes since local midnight [start, end)
    # uses so far
    entries_used: int = 0
    entries_day: date | None = None    # the park-local day entries_today counts
    entries_today: int = 0
    first_used_at: float | None = None
    inside: bool = False
    last_entry_at: float | None = None
    last_exit_at: float | None = None
    # the rest of the catalogue (S8, S10, S15)
    blocked: bool = False              # a card reported lost: refused everywhere at once (CARD_BLOCKED)
    balance: int | None = None         # stored-value cards: minor units left; None = not a stored-value card
    # count cards per attraction: attraction id -> entries it gives there, and how many were used
    attraction_limits: Mapping[str, int] = field(default_factory=dict)
    attraction_used: Mapping[str, int] = field(default_factory=dict)

    @property
    def entries_left(self) -> int:
        """-1 for unlimited, else what remains of entries_total."""
        return -1 if self.entries_total == 0 else max(self.entries_total - self.entries_used, 0)

    def entries_left_at(self, attraction_id: str) -> int:
        """What a gate shows: the attraction's own count where the card has one, else the overall count."""
        limit = self.attraction_limits.get(attraction_id, 0) if attraction_id else 0
        if limit:
            left = max(limit - self.attraction_used.get(attraction_id, 0), 0)
            return left if self.entries_total == 0 else min(left, self.entries_left)
        return self.entries_left


@dataclass(frozen=True, slots=True)
class ParkState:
    """A park's live counters, read under its lock: people inside, the cap and whether entry is paused."""

    park_id: str
    inside: int = 0
    capacity: int = 0                 # 0 = no cap
    resume_margin: int = 0            # entry resumes at or below capacity - margin
    paused: bool = False
    emergency: bool = False


@dataclass(frozen=True, slots=True)
class Verdict:
    """One decision and what it changes: the engine's whole answer."""

    allow: bool
    reason: Reason
    ticket: TicketState | None = None   # the ticket as it is after this decision
    persons: int = 0                    # people let through
    moved: int = 0                      # change of the park's occupancy (+ in, - out)
    counted: bool = False               # consumed a use (a re-entry does not)
    hold_for_check: bool = False
    charged: int = 0                    # taken from a stored-value balance by this decision
    attraction_id: str = ""             # where it was decided ("" = the park gate): what entries_left counts

    @property
    def entries_left(self) -> int:
        return -1 if self.ticket is None else self.ticket.entries_left_at(self.attraction_id)

    @property
    def balance(self) -> int | None:
        """A stored-value card's balance after this decision (None for other tickets)."""
        return None if self.ticket is None else self.ticket.balance


@dataclass(slots=True)
class LocalTime:
    """One clock reading in one park's zone: the day and minute the calendar rules judge.

    Made once per park per batch; converting a first-use time to its local day
    is cached too, because a batch often holds several days-from-first-use tickets.
    """

    now: float
    zone: ZoneInfo
    day: date = field(init=False)
    minute: int = field(init=False)

    def __post_init__(self) -> None:
        local = datetime.fromtimestamp(self.now, self.zone)
        self.day = local.date()
        self.minute = local.hour * 60 + local.minute

    def day_of(self, moment: float) -> date:
        return datetime.fromtimestamp(moment, self.zone).date()

    @classmethod
    def at(cls, now: float, zone: str | ZoneInfo) -> LocalTime:
        return cls(now, zone if isinstance(zone, ZoneInfo) else ZoneInfo(zone))


def epoch(moment: datetime | None) -> float | None:
    """A stored timestamp as epoch seconds (naive datetimes are UTC)."""
    if moment is None:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()
