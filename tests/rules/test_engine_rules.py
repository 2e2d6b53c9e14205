"""Each rule of the decision engine at its edges, called directly (the mutation check's fast stage).

The decision table (decisions.toml) is the contract every deciding place runs
against; these tests pin the single rules and their boundaries the table
walks past: the capacity hysteresis at cap, cap - margin and one either side,
a group that does not fit, each state field a decision or an annulment
changes, and a product's effective terms by kind. ``make mutation`` flips each
rule in turn and expects a test here, in the table, or in the gate tests to
fail.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime
from zoneinfo import ZoneInfo

import pytest

from parkgate import native
from parkgate.common.reason import Reason
from parkgate.rules import (
    DEFAULT_ENTRIES_TOTAL,
    AdmissionTerms,
    GatePlace,
    LocalTime,
    ParkState,
    TicketState,
    annul,
    capacity_paused,
    decide,
    effective_terms,
    move_park,
)
from parkgate.rules.terms import ticket_from_code

ZONE = ZoneInfo("Asia/Shanghai")
NOON = datetime(2027, 3, 3, 12, 0, tzinfo=ZONE).timestamp()
DAY = 86400.0
GATE = GatePlace("g", "p", 1, ZONE.key)
RIDE = GatePlace("r", "p", 1, ZONE.key, attraction_id="ride", attraction_slot=1)
OPEN = ParkState("p")


def ticket(**kw: object) -> TicketState:
    base: dict[str, object] = {"ticket_id": "t", "serial": 1, "park_id": "p", "valid_from": NOON - DAY,
                               "valid_until": NOON + DAY, "entries_total": 1}
    return TicketState(**{**base, **kw})  # type: ignore[arg-type]


def at(now: float = NOON) -> LocalTime:
    return LocalTime.at(now, ZONE)


@pytest.mark.parametrize(("inside", "paused_before", "paused_after"), [
    (10, False, True), (11, False, True), (10, True, True),  # at or over the cap: paused
    (9, True, True), (8, True, True),                        # inside the margin: stays paused
    (7, True, False), (6, True, False),                      # at or below cap - margin: resumes
    (9, False, False), (7, False, False),                    # below the cap, never paused: stays open
])
def test_capacity_hysteresis_at_every_edge(inside: int, paused_before: bool, paused_after: bool) -> None:
    assert capacity_paused(inside, 10, 3, paused_before) is paused_after


def test_no_cap_never_pauses() -> None:
    assert capacity_paused(0, 0, 0, True) is False
    assert capacity_paused(500, 0, 3, False) is False
    assert capacity_paused(1, 1, 0, False) is True  # a cap of one is a cap


def test_move_park_counts_people_and_judges_the_pause_again() -> None:
    park = ParkState("p", inside=8, capacity=10, resume_margin=3)
    full = move_park(park, 2)
    assert (full.inside, full.paused) == (10, True)
    assert (move_park(full, -2).inside, move_park(full, -2).paused) == (8, True)
    assert (move_park(full, -3).inside, move_park(full, -3).paused) == (7, False)
    assert move_park(ParkState("p", inside=1), -5).inside == 0  # never below zero


def test_entry_order_of_refusals() -> None:
    assert decide(ticket(park_id="q"), GATE, "in", OPEN, at()).reason is Reason.NOT_VALID_FOR_PARK
    assert decide(ticket(park_id="q"), GATE, "out", OPEN, at()).reason is Reason.NOT_VALID_FOR_PARK
    assert decide(ticket(status="refunded"), GATE, "in", OPEN, at()).reason is Reason.REFUNDED
    assert decide(ticket(status="voided"), GATE, "in", OPEN, at()).reason is Reason.VOIDED
    assert decide(ticket(valid_from=NOON), GATE, "in", OPEN, at(NOON - 1)).reason is Reason.NOT_YET_VALID
    assert decide(ticket(valid_from=NOON), GATE, "in", OPEN, at(NOON)).allow  # from its first second
    assert decide(ticket(valid_until=NOON), GATE, "in", OPEN, at(NOON)).reason is Reason.EXPIRED  # exclusive
    assert decide(ticket(valid_until=NOON), GATE, "in", OPEN, at(NOON - 1)).allow


def test_days_from_first_use_count_local_days() -> None:
    card = ticket(entries_total=0, valid_days=2, valid_until=NOON + 30 * DAY, first_used_at=NOON - DAY)
    assert decide(card, GATE, "in", OPEN, at()).allow  # the second day
    assert decide(card, GATE, "in", OPEN, at(NOON + DAY)).reason is Reason.EXPIRED  # the third
    assert decide(replace(card, first_used_at=None), GATE, "in", OPEN, at(NOON + DAY)).allow
    assert decide(replace(card, valid_days=0), GATE, "in", OPEN, at(NOON + DAY)).allow


def test_attraction_scope() -> None:
    assert decide(ticket(), RIDE, "in", OPEN, at()).reason is Reason.NOT_VALID_FOR_ATTRACTION
    assert decide(ticket(attraction_ids=frozenset({"ride"})), RIDE, "in", OPEN, at()).allow
    assert decide(ticket(all_attractions=True), RIDE, "in", OPEN, at()).allow
    assert decide(ticket(), GATE, "in", OPEN, at()).allow  # the park gate needs no attraction


@pytest.mark.parametrize(("window", "minute", "allow"), [
    ((600, 720), 600, True), ((600, 720), 719, True), ((600, 720), 720, False), ((600, 720), 599, False),
    ((1320, 120), 1320, True), ((1320, 120), 60, True), ((1320, 120), 120, False), ((1320, 120), 700, False),
    ((600, 600), 600, True), ((600, 600), 0, True),  # start = end: from that minute to the same minute tomorrow
])
def test_night_window_edges(window: tuple[int, int], minute: int, allow: bool) -> None:
    midnight = datetime(2027, 3, 3, tzinfo=ZONE).timestamp()
    verdict = decide(ticket(window=window), GATE, "in", OPEN, at(midnight + minute * 60))
    assert (verdict.allow, verdict.reason) == (allow, Reason.OK if allow else Reason.OUTSIDE_TIME_WINDOW)


def test_counts_daily_limits_and_reentry() -> None:
    assert decide(ticket(entries_used=1), GATE, "in", OPEN, at()).reason is Reason.ALREADY_USED
    card = ticket(entries_total=3, entries_used=2)
    assert decide(card, GATE, "in", OPEN, at()).allow
    assert decide(replace(card, entries_used=3), GATE, "in", OPEN, at()).reason is Reason.NO_ENTRIES_LEFT
    assert decide(ticket(entries_total=0, entries_used=99), GATE, "in", OPEN, at()).allow  # unlimited
    today = at().day
    daily = ticket(entries_total=0, entries_per_day=2, entries_day=today, entries_today=2, inside=True,
                   valid_until=NOON + 9 * DAY)
    assert decide(daily, GATE, "in", OPEN, at()).reason is Reason.DAILY_LIMIT_REACHED
    assert decide(replace(daily, entries_today=1), GATE, "in", OPEN, at()).allow
    assert decide(daily, GATE, "in", OPEN, at(NOON + DAY)).allow  # a new day, a new count
    left = replace(daily, inside=False, last_exit_at=NOON - 60)
    assert decide(left, GATE, "in", OPEN, at()).reason is Reason.REENTRY_NOT_ALLOWED
    back = decide(replace(left, reentry_allowed=True), GATE, "in", OPEN, at())
    assert (back.allow, back.counted, back.ticket.entries_today, back.ticket.entries_used) == (True, False, 2, 0)
    assert decide(replace(left, reentry_allowed=True), RIDE, "in", OPEN, at()).reason is Reason.NOT_VALID_FOR_ATTRACTION
    ride = replace(left, reentry_allowed=True, all_attractions=True)
    assert decide(ride, RIDE, "in", OPEN, at()).reason is Reason.DAILY_LIMIT_REACHED  # re-entry is for the park gate


def test_park_full_by_pause_or_by_a_group_that_does_not_fit() -> None:
    trio = ticket(persons=3)
    assert decide(trio, GATE, "in", ParkState("p", inside=7, capacity=10), at()).allow  # exactly fits
    assert decide(trio, GATE, "in", ParkState("p", inside=8, capacity=10), at()).reason is Reason.PARK_FULL
    assert decide(trio, GATE, "in", ParkState("p", inside=0, capacity=10, paused=True), at()).reason is Reason.PARK_FULL
    assert decide(trio, GATE, "in", ParkState("p", inside=100, capacity=0), at()).allow  # no cap
    assert decide(trio, RIDE, "in", ParkState("p", paused=True), at()).reason is not Reason.PARK_FULL


def test_an_admission_changes_the_ticket_and_the_park() -> None:
    v = decide(ticket(persons=2, hold_for_check=True, entries_today=5, entries_day=None), GATE, "in", OPEN, at())
    assert (v.allow, v.reason, v.persons, v.moved, v.counted, v.hold_for_check) == (True, Reason.OK, 2, 2, True, True)
    t = v.ticket
    assert t is not None
    assert (t.entries_used, t.entries_today, t.entries_day, t.first_used_at, t.inside, t.last_entry_at) == (
        1, 1, at().day, NOON, True, NOON)
    kept = decide(ticket(entries_total=0, first_used_at=NOON - 60), GATE, "in", OPEN, at()).ticket
    assert kept is not None and kept.first_used_at == NOON - 60
    ride = decide(ticket(all_attractions=True), RIDE, "in", OPEN, at())
    assert (ride.moved, ride.ticket.inside, ride.hold_for_check) == (0, False, False)  # type: ignore[union-attr]


def test_exits_always_let_an_authentic_ticket_out() -> None:
    inside = ticket(inside=True, persons=2, status="refunded", valid_until=NOON - DAY)
    v = decide(inside, GATE, "out", OPEN, at())
    assert (v.allow, v.reason, v.moved, v.persons) == (True, Reason.OK, -2, 2)
    assert v.ticket is not None and (v.ticket.inside, v.ticket.last_exit_at) == (False, NOON)
    outside = decide(ticket(), GATE, "out", OPEN, at())
    assert (outside.allow, outside.reason, outside.moved) == (True, Reason.NOT_INSIDE, 0)
    ride_exit = decide(ticket(inside=True), RIDE, "out", OPEN, at())
    assert (ride_exit.allow, ride_exit.reason, ride_exit.moved, ride_exit.ticket) == (True, Reason.OK, 0, ticket(inside=True))


def test_annul_gives_back_the_use_the_day_and_the_place() -> None:
    used = ticket(entries_used=1, entries_today=1, inside=True)
    back = annul(used, 1, True)
    assert (back.entries_used, back.entries_today, back.inside) == (0, 0, False)
    reentry = annul(used, 1, False)  # a re-entry was not counted: only the place
    assert (reentry.entries_used, reentry.entries_today, reentry.inside) == (1, 1, False)
    ride = annul(used, 0, True)
    assert (ride.entries_used, ride.inside) == (0, True)
    assert annul(ticket(), 0, True).entries_used == 0  # never below zero


def test_effective_terms_by_kind() -> None:
    assert DEFAULT_ENTRIES_TOTAL == {"single": 1, "multi_person": 1, "group": 1, "complimentary": 1, "member": 0,
                                     "stored_value": 0, "count_card": 0}
    assert effective_terms("single", {}) == AdmissionTerms(entries_total=1)
    assert effective_terms("member", {}) == AdmissionTerms()
    assert effective_terms("mystery", {}) == AdmissionTerms(entries_total=1)
    assert effective_terms("single", {"entries_per_day": 2}) == AdmissionTerms(entries_per_day=2)
    assert effective_terms("single", {"entries_total": 5}) == AdmissionTerms(entries_total=5)
    assert effective_terms("single", {"entries_total": None, "entries_per_day": None}).entries_total == 1
    full = effective_terms("member", {"entries_per_day": 1, "reentry_allowed": True, "hold_for_check": True,
                                      "validity": "days_from_first_use", "valid_days": 3})
    assert full == AdmissionTerms(0, 1, True, True, 3)
    assert effective_terms("member", {"validity": "visit_date", "valid_days": 3}).valid_days == 0


def test_terms_describe_themselves() -> None:
    assert AdmissionTerms(entries_total=1).describe() == "admits once"
    assert AdmissionTerms(entries_total=10, entries_per_day=1, reentry_allowed=True, valid_days=30,
                          hold_for_check=True).describe() == (
        "admits 10 times, at most 1 a day, re-entry after an exit allowed the same day, "
        "valid 30 day(s) from the first use, held for a checker")
    assert AdmissionTerms().describe() == "admits without a total limit"


def test_a_ticket_from_a_code_carries_its_window_only_for_a_night_tour() -> None:
    key = native.SigningKey.generate(7)
    day = native.decode(native.issue(key, serial=5, product_id=1, park_id=1, valid_from=100, valid_until=200))
    night = native.decode(native.issue(key, serial=6, product_id=1, park_id=1, valid_from=100, valid_until=200,
                                       night_window=(1320, 120)))
    terms = AdmissionTerms(entries_total=2)
    plain = ticket_from_code(day, terms, "p", frozenset(), False)
    assert (plain.window, plain.entries_total, plain.serial, plain.valid_from) == (None, 2, 5, 100.0)
    assert ticket_from_code(night, terms, "p", frozenset(), False).window == (1320, 120)


def test_a_negative_fare_never_credits_a_stored_value_card() -> None:
    """A fare below zero (a mistyped price) charges nothing: the card's balance never grows at a gate."""
    card = ticket(entries_total=0, balance=1000, all_attractions=True)
    v = decide(card, RIDE, "in", OPEN, at(), fare=-500)
    assert (v.allow, v.charged) == (True, 0)
    assert v.ticket is not None and v.ticket.balance == 1000
    paid = decide(card, RIDE, "in", OPEN, at(), fare=300)
    assert (paid.charged, paid.ticket.balance) == (300, 700)  # type: ignore[union-attr]


def test_annul_gives_back_the_attractions_count_and_the_fare() -> None:
    """A person who never passed a limited ride keeps that ride's use; a stored-value card gets its fare back."""
    limited = ticket(entries_total=0, all_attractions=True, attraction_limits={"ride": 2}, balance=1000)
    v = decide(limited, RIDE, "in", OPEN, at(), fare=300)
    assert v.ticket is not None and v.ticket.attraction_used == {"ride": 1} and v.ticket.balance == 700
    back = annul(v.ticket, v.moved, v.counted, v.charged, attraction_id="ride")
    assert (dict(back.attraction_used), back.balance) == ({"ride": 0}, 1000)
    # a use that was not counted (a re-entry) gives no ride use back, and a ride never used stays at none
    assert dict(annul(v.ticket, 0, False, 0, attraction_id="ride").attraction_used) == {"ride": 1}
    assert dict(annul(limited, 0, True, 0, attraction_id="ride").attraction_used) == {}


def test_only_a_stored_value_card_pays_and_it_may_pay_its_last_coin() -> None:
    """The fare is charged to stored-value cards only, not on a re-entry, and a balance of exactly the fare pays."""
    plain = decide(ticket(entries_total=0, all_attractions=True), RIDE, "in", OPEN, at(), fare=300)
    assert (plain.allow, plain.charged) == (True, 0) and plain.ticket.balance is None  # type: ignore[union-attr]
    last = decide(ticket(entries_total=0, all_attractions=True, balance=300), RIDE, "in", OPEN, at(), fare=300)
    assert (last.allow, last.charged, last.ticket.balance) == (True, 300, 0)  # type: ignore[union-attr]
    short = decide(ticket(entries_total=0, all_attractions=True, balance=299), RIDE, "in", OPEN, at(), fare=300)
    assert (short.allow, short.reason) == (False, Reason.INSUFFICIENT_BALANCE)
    back_in = ticket(entries_total=0, reentry_allowed=True, entries_today=1, entries_day=at().day, balance=100)
    again = decide(back_in, GATE, "in", OPEN, at(), fare=300)  # a re-entry at the park gate: not charged again
    assert (again.allow, again.counted, again.charged, again.ticket.balance) == (  # type: ignore[union-attr]
        True, False, 0, 100)


def test_only_a_ride_with_a_limit_counts_its_uses() -> None:
    """attraction_used is kept for rides with a per-ride limit; other admissions leave it alone."""
    unlimited = decide(ticket(entries_total=0, all_attractions=True), RIDE, "in", OPEN, at())
    assert unlimited.ticket is not None and dict(unlimited.ticket.attraction_used) == {}
    gate = decide(ticket(entries_total=0, attraction_limits={"ride": 2}), GATE, "in", OPEN, at())
    assert gate.ticket is not None and dict(gate.ticket.attraction_used) == {}
