"""What the cluster does with an admission an edge made alone: it stands, whatever the ticket's row says now."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

from parkgate.common.reason import Reason
from parkgate.rules import GatePlace, LocalTime, ParkState, TicketState, decide
from parkgate.server.domain.sites import reconcile_admission, serials_to_reserve

ZONE = ZoneInfo("Asia/Shanghai")
NOW = datetime(2026, 12, 1, 11, 0, tzinfo=ZONE).timestamp()
PLACE = GatePlace(device_id="gate-south", park_id="p", park_number=1, time_zone="Asia/Shanghai")
PARK = ParkState(park_id="p", inside=10, capacity=100)


def _ticket(**changes: object) -> TicketState:
    base = {"ticket_id": "t", "serial": 7, "park_id": "p", "valid_from": NOW - 3600, "valid_until": NOW + 3600,
            "entries_total": 1}
    return TicketState(**{**base, **changes})  # type: ignore[arg-type]


def test_an_admission_the_engine_still_allows_is_exactly_the_engines() -> None:
    clock = LocalTime.at(NOW, ZONE)
    ticket = _ticket()
    outcome = reconcile_admission(ticket, PLACE, "in", PARK, clock)
    assert outcome.refused_now is None and not outcome.used_elsewhere
    assert outcome.verdict == decide(ticket, PLACE, "in", PARK, clock)


def test_a_single_use_ticket_used_elsewhere_is_consumed_again_and_says_so() -> None:
    used = _ticket(entries_used=1, entries_today=1, entries_day=LocalTime.at(NOW, ZONE).day, inside=True,
                   first_used_at=NOW - 60)
    outcome = reconcile_admission(used, PLACE, "in", PARK, LocalTime.at(NOW, ZONE))
    assert outcome.refused_now is Reason.ALREADY_USED and outcome.used_elsewhere
    v = outcome.verdict
    assert v.allow and v.counted and v.ticket is not None and v.ticket.entries_used == 2
    assert v.moved == 0  # the holder was counted inside already: occupancy is not counted twice


def test_a_refunded_ticket_admitted_offline_still_counts_its_person_but_is_no_conflict() -> None:
    outcome = reconcile_admission(_ticket(status="refunded"), PLACE, "in", PARK, LocalTime.at(NOW, ZONE))
    assert outcome.refused_now is Reason.REFUNDED and not outcome.used_elsewhere
    assert outcome.verdict.allow and outcome.verdict.moved == 1 and outcome.verdict.ticket.inside  # type: ignore[union-attr]


def test_a_full_park_does_not_undo_an_offline_admission() -> None:
    full = ParkState(park_id="p", inside=100, capacity=100, paused=True)
    outcome = reconcile_admission(_ticket(), PLACE, "in", full, LocalTime.at(NOW, ZONE))
    assert outcome.refused_now is Reason.PARK_FULL and outcome.verdict.allow and outcome.verdict.moved == 1


def test_serial_blocks_have_sane_sizes() -> None:
    assert serials_to_reserve(0) == 100_000
    assert serials_to_reserve(5) == 5
    assert serials_to_reserve(10**12) == 10_000_000
