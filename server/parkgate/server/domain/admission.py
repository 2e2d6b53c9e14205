"""A batch of validations at the centre: the decision engine applied in order over rows the store locked.

Why a batch: a durable commit costs a WAL fsync and a signature ~70 µs of
CPU (docs/requirements.md, facts); one transaction per validation tops out
around a thousand a second, one per batch at tens of thousands. So the
pipeline (:mod:`parkgate.server.services.admission`) locks and reads what a
batch needs in one round trip, this module decides every item with
:func:`parkgate.rules.decide` (the same function a gate's offline path and a
site edge call), and the pipeline writes the result and commits in a second
round trip. Items are decided in order: the same ticket twice in one batch
sees its first use, and the park's occupancy moves item by item.

Nothing here knows SQL or gRPC.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import date
from zoneinfo import ZoneInfo

from parkgate.common.reason import Reason
from parkgate.rules import Direction, GatePlace, LocalTime, ParkState, TicketState, decide, move_park

from .pricing import CalendarEntry, day_kind


@dataclass(frozen=True, slots=True)
class Decision:
    """What a gate hears for one validation."""

    allow: bool
    reason: Reason
    ticket_id: str = ""
    entries_left: int = -1       # -1: unlimited
    persons: int = 0
    hold_for_check: bool = False
    retried: bool = False        # the first decision for this request id, returned again
    balance: int | None = None   # a stored-value card's balance after this decision (S8)
    photo_ref: str = ""          # a member card held for a check: whose photo to look at (S15)
    charged: int = 0
    swallow_card: bool = False   # S21: the exit's card collector takes this used-up single-use card

    @classmethod
    def deny(cls, reason: Reason) -> Decision:
        return cls(False, reason)


@dataclass(frozen=True, slots=True)
class Admission:
    """One authentic validation on its way to the database: the ticket named by serial or by card."""

    place: GatePlace
    request_id: str
    direction: Direction
    serial: int = 0
    card_uid: str = ""
    # what the signed code itself says of its validity: a code never admits outside it, whatever the row says
    code_valid_from: float = 0.0
    code_valid_until: float = float("inf")

    @property
    def key(self) -> tuple[str, str]:
        return (self.place.device_id, self.request_id)


@dataclass(frozen=True, slots=True)
class Recorded:
    """A decision as the database keeps it (one ``validations`` row)."""

    admission: Admission
    decision: Decision
    park_id: str
    moved: int
    counted: bool


@dataclass(slots=True)
class BatchOutcome:
    decisions: list[Decision]
    before: Mapping[str, ParkState]                  # the batch's parks as it found them
    recorded: list[Recorded]                         # new decisions, to be written
    tickets: dict[str, TicketState] = field(default_factory=dict)   # changed tickets, final state
    parks: dict[str, ParkState] = field(default_factory=dict)       # changed parks, final state

    @property
    def pause_changed(self) -> list[str]:
        """Parks whose entry paused or resumed (one that did both within the batch changed nothing for its gates)."""
        return [p for p, state in self.parks.items() if state.paused != self.before[p].paused]


_ZONES: dict[str, ZoneInfo] = {}


def _zone(name: str) -> ZoneInfo:
    zone = _ZONES.get(name)
    if zone is None:
        zone = _ZONES[name] = ZoneInfo(name)
    return zone


def decide_batch(
    admissions: Sequence[Admission],
    now: float,
    *,
    parks: Mapping[str, tuple[ParkState, str]],
    prior: Mapping[tuple[str, str], Decision],
    by_serial: Mapping[int, TicketState],
    by_card: Mapping[str, TicketState],
    fares: Mapping[str, Mapping[str, int]] | None = None,
    calendar: Mapping[str, Mapping[date, CalendarEntry]] | None = None,
    photos: Mapping[str, str] | None = None,
    swallow: Collection[str] = (),
) -> BatchOutcome:
    """Decide ``admissions`` in order at ``now`` (one clock for the whole batch).

    ``parks`` maps park id to (its locked state, its time zone); ``prior``
    holds decisions already recorded for these request ids, marked retried
    (a retry gets its first answer and consumes nothing); tickets are found by serial or
    by the IC card bound to them. ``fares`` gives each attraction's stored-value
    price by day type ("" = its flat price), ``calendar`` each park's holidays
    near today (the day type decides the fare, S7/S8), ``photos`` the member
    photo of a ticket held for a check, ``swallow`` the tickets of products
    whose single-use cards the exit's collector takes once used up (S21).
    """
    fares = fares or {}
    calendar = calendar or {}
    photos = photos or {}
    live_parks = {pid: state for pid, (state, _zone_name) in parks.items()}
    outcome = BatchOutcome([], dict(live_parks), [])
    clocks: dict[str, LocalTime] = {}
    tickets: dict[str, TicketState] = {}   # the latest state of each ticket this batch touched
    for item in admissions:
        earlier = prior.get(item.key)
        if earlier is not None:
            outcome.decisions.append(earlier)
            continue
        found = by_card.get(item.card_uid) if item.card_uid else by_serial.get(item.serial)
        park_id = item.place.park_id
        park = live_parks.get(park_id)
        if found is None or park is None:
            reason = Reason.UNKNOWN_CARD if item.card_uid else Reason.UNKNOWN_TICKET
            if park is None:
                reason = Reason.UNKNOWN_PARK
            decision = Decision.deny(reason)
            outcome.decisions.append(decision)
            outcome.recorded.append(Recorded(item, decision, park_id, 0, False))
            continue
        ticket = tickets.get(found.ticket_id, found)
        if found.blocked and not ticket.blocked:  # a lost card stays refused whatever its ticket did in this batch
            ticket = replace(ticket, blocked=True)
        if item.serial and (item.code_valid_from > ticket.valid_from or item.code_valid_until < ticket.valid_until):
            ticket = replace(ticket, valid_from=max(ticket.valid_from, item.code_valid_from),
                             valid_until=min(ticket.valid_until, item.code_valid_until))
        clock = clocks.get(park_id)
        if clock is None:
            clock = clocks[park_id] = LocalTime(now, _zone(parks[park_id][1]))
        fare = 0
        if ticket.balance is not None and item.place.attraction_id:
            fare = fare_today(fares.get(item.place.attraction_id, {}), clock.day,
                              calendar.get(park_id, {}).get(clock.day))
        verdict = decide(ticket, item.place, item.direction, park, clock, fare)
        if verdict.ticket is not None and verdict.ticket is not ticket:
            after = verdict.ticket
            if item.card_uid and ticket.serial in by_serial:  # the old card of a reissue blocks only itself
                after = replace(after, blocked=by_serial[ticket.serial].blocked)
            tickets[ticket.ticket_id] = after
            outcome.tickets[ticket.ticket_id] = after
        if verdict.moved:
            live_parks[park_id] = outcome.parks[park_id] = move_park(park, verdict.moved)
        decision = Decision(verdict.allow, verdict.reason, ticket.ticket_id, verdict.entries_left,
                            verdict.persons if verdict.allow else 0, verdict.hold_for_check,
                            balance=verdict.balance, charged=verdict.charged,
                            photo_ref=photos.get(ticket.ticket_id, "") if verdict.hold_for_check else "",
                            swallow_card=(item.direction == "out" and verdict.allow and bool(item.card_uid)
                                          and ticket.ticket_id in swallow and verdict.entries_left == 0))
        outcome.decisions.append(decision)
        outcome.recorded.append(Recorded(item, decision, park_id, verdict.moved, verdict.counted))
    return outcome


def fare_today(by_day_type: Mapping[str, int], day: date, entry: CalendarEntry | None) -> int:
    """What an attraction charges a stored-value card on ``day`` (S8 with S7's day types).

    Its price for the day type; a peak day without one falls back to the
    holiday price; then the attraction's flat price ("" key); no price is free.
    """
    kind = day_kind(day, entry).day_type
    for key in (kind, "holiday" if kind == "peak" else kind, ""):
        if key in by_day_type:
            return by_day_type[key]
    return 0
