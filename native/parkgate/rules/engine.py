"""The gate rules, written once: what one validation decides and what it changes.

The central pipeline (over rows it locked in PostgreSQL), the gate agent's
offline path (over its journal) and, later, a site edge all call
:func:`decide`; the database only stores what this returns, atomically. The
scenarios in ``tests/rules/decisions.toml`` are the table every one of those
places is tested against: change a rule here and that table, together.

The order of the checks is the contract (the first that fails names the
reason):

* exits: an authentic ticket always leaves (people must be able to get out,
  whatever the state of their ticket); a park exit moves occupancy only for
  a ticket that was inside, and says NOT_INSIDE otherwise;
* entries: a blocked card (reported lost, S15), refunded, voided, not yet valid, expired (also N local days after
  the first use), attraction scope, night window; then the counts (re-entry
  after an exit is free where the product allows it, a used single-use
  ticket is ALREADY_USED, a used-up count card NO_ENTRIES_LEFT, the day's
  limit DAILY_LIMIT_REACHED, or REENTRY_NOT_ALLOWED once its holder left
  without the right to come back); a count card's own count at this
  attraction (NO_ENTRIES_LEFT, S10); a stored-value card's balance against
  this gate's fare (INSUFFICIENT_BALANCE, S8: the balance never goes below
  zero, and the caller holds the ticket's lock, so two gates charge it one
  after the other); last the park's cap (PARK_FULL while paused or when
  the group would not fit).

A group code (S16) is a ticket for N persons: it opens N times, like a
multi-person ticket. A stored-value card with no attraction list pays at
every attraction (its fare is its scope).
"""

from __future__ import annotations

from dataclasses import replace

from parkgate.common.reason import Reason

from .model import Direction, GatePlace, LocalTime, ParkState, TicketState, Verdict

__all__ = ["capacity_paused", "decide", "move_park"]


def capacity_paused(inside: int, capacity: int, margin: int, paused: bool) -> bool:
    """S27 with hysteresis: pause at the cap, resume only at or below cap - margin; no cap never pauses."""
    if capacity <= 0:
        return False
    if inside >= capacity:
        return True
    return paused and inside > capacity - margin


def move_park(park: ParkState, delta: int) -> ParkState:
    """The park after ``delta`` people came in (or went out), with its pause judged again."""
    inside = max(park.inside + delta, 0)
    return replace(park, inside=inside,
                   paused=capacity_paused(inside, park.capacity, park.resume_margin, park.paused))


def _in_window(minute: int, window: tuple[int, int]) -> bool:
    start, end = window
    if start < end:
        return start <= minute < end
    return minute >= start or minute < end  # a night tour across midnight


def _deny(reason: Reason, ticket: TicketState) -> Verdict:
    return Verdict(False, reason, ticket)


def decide(ticket: TicketState, place: GatePlace, direction: Direction, park: ParkState,
           clock: LocalTime, fare: int = 0) -> Verdict:
    """The decision for an authentic ticket at a gate, at ``clock`` (the park's local time).

    ``park`` is the gate's park as it stands before this decision; the caller
    applies ``Verdict.moved`` (see :func:`move_park`) and keeps
    ``Verdict.ticket`` for the next validation of the same ticket. ``fare``
    is what this gate charges a stored-value card today (minor units, by the
    attraction's price for the day type); other tickets ignore it.
    """
    if ticket.park_id != place.park_id:
        return _deny(Reason.NOT_VALID_FOR_PARK, ticket)
    now = clock.now
    park_gate = place.park_gate

    here = place.attraction_id
    if direction == "out":
        if not park_gate:
            return Verdict(True, Reason.OK, ticket, persons=ticket.persons, attraction_id=here)
        if not ticket.inside:
            return Verdict(True, Reason.NOT_INSIDE, ticket, persons=ticket.persons)
        left = replace(ticket, inside=False, last_exit_at=now)
        return Verdict(True, Reason.OK, left, persons=ticket.persons, moved=-ticket.persons)

    if ticket.blocked:
        return _deny(Reason.CARD_BLOCKED, ticket)
    if ticket.status == "refunded":
        return _deny(Reason.REFUNDED, ticket)
    if ticket.status == "voided":
        return _deny(Reason.VOIDED, ticket)
    if now < ticket.valid_from:
        return _deny(Reason.NOT_YET_VALID, ticket)
    if now >= ticket.valid_until:
        return _deny(Reason.EXPIRED, ticket)
    if ticket.valid_days > 0 and ticket.first_used_at is not None:
        if (clock.day - clock.day_of(ticket.first_used_at)).days >= ticket.valid_days:
            return _deny(Reason.EXPIRED, ticket)
    stored_value = ticket.balance is not None
    pays_anywhere = stored_value and not ticket.attraction_ids
    if (not park_gate and not ticket.all_attractions and not pays_anywhere
            and place.attraction_id not in ticket.attraction_ids):
        return _deny(Reason.NOT_VALID_FOR_ATTRACTION, ticket)
    if ticket.window is not None and not _in_window(clock.minute, ticket.window):
        return _deny(Reason.OUTSIDE_TIME_WINDOW, ticket)

    used_today = ticket.entries_today if ticket.entries_day == clock.day else 0
    reentry = park_gate and ticket.reentry_allowed and not ticket.inside and used_today > 0
    if not reentry:
        left_without_return = ticket.last_exit_at is not None and not ticket.inside and not ticket.reentry_allowed
        if ticket.entries_total > 0 and ticket.entries_used >= ticket.entries_total:
            return _deny(Reason.ALREADY_USED if ticket.entries_total == 1 else Reason.NO_ENTRIES_LEFT, ticket)
        if ticket.entries_per_day > 0 and used_today >= ticket.entries_per_day:
            return _deny(Reason.REENTRY_NOT_ALLOWED if left_without_return else Reason.DAILY_LIMIT_REACHED, ticket)
    limit_here = ticket.attraction_limits.get(here, 0) if here else 0
    if limit_here and ticket.attraction_used.get(here, 0) >= limit_here:
        return Verdict(False, Reason.NO_ENTRIES_LEFT, ticket, attraction_id=here)
    charge = max(fare, 0) if stored_value and not reentry else 0  # a mistyped negative fare never credits a card
    if stored_value and charge > (ticket.balance or 0):
        return _deny(Reason.INSUFFICIENT_BALANCE, ticket)
    if park_gate and (park.paused or (park.capacity > 0 and park.inside + ticket.persons > park.capacity)):
        return _deny(Reason.PARK_FULL, ticket)

    counted = not reentry
    after = replace(
        ticket,
        entries_used=ticket.entries_used + counted,
        entries_today=used_today + counted,
        entries_day=clock.day,
        first_used_at=ticket.first_used_at if ticket.first_used_at is not None else now,
        inside=ticket.inside or park_gate,
        last_entry_at=now,
    )
    if limit_here and counted:
        after = replace(after, attraction_used={**ticket.attraction_used,
                                                here: ticket.attraction_used.get(here, 0) + 1})
    if charge:
        after = replace(after, balance=(ticket.balance or 0) - charge)
    return Verdict(True, Reason.OK, after, persons=ticket.persons, moved=ticket.persons if park_gate else 0,
                   counted=counted, hold_for_check=ticket.hold_for_check, charged=charge, attraction_id=here)


def annul(ticket: TicketState, verdict_moved: int, counted: bool, charged: int = 0,
          attraction_id: str = "") -> TicketState:
    """A ticket after an admission whose person never passed is given back.

    The use, the day's count, the attraction's count, the place inside and
    the fare a stored-value card paid all return.
    """
    used = dict(ticket.attraction_used)
    if counted and attraction_id and used.get(attraction_id):
        used[attraction_id] -= 1
    return replace(
        ticket,
        entries_used=max(ticket.entries_used - counted, 0),
        entries_today=max(ticket.entries_today - counted, 0),
        inside=False if verdict_moved else ticket.inside,
        balance=None if ticket.balance is None else ticket.balance + charged,
        attraction_used=used,
    )
