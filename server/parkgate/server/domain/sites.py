"""The cluster's rules for what a site edge did alone: an admission it made stands, whatever happened meanwhile.

A gate behind an edge opened for a visitor while the cluster could not be
asked; by the time the record is forwarded the ticket may have been used at
another site, refunded, or the park may be full. None of that undoes the
admission: the visitor is inside. So the cluster applies the decision engine
to the ticket's *current* row (so counts, re-entry, occupancy move exactly as
for an online admission) and, where the engine would now refuse, consumes
the use anyway and says why, so a double use across sites becomes a counted
conflict instead of a lost or silently ignored entry.

Nothing here knows SQL or gRPC.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from parkgate.common.reason import Reason
from parkgate.rules import Direction, GatePlace, LocalTime, ParkState, TicketState, Verdict, decide

#: Refusals that mean "its uses are gone": another admission got there first, so a forced one is a conflict.
USED_UP = frozenset({Reason.ALREADY_USED, Reason.NO_ENTRIES_LEFT, Reason.DAILY_LIMIT_REACHED,
                     Reason.REENTRY_NOT_ALLOWED})
#: The serial range an edge asks for when it names none, and the most one call hands out.
DEFAULT_SERIALS = 100_000
MAX_SERIALS = 10_000_000


@dataclass(frozen=True, slots=True)
class Reconciled:
    verdict: Verdict          # what is recorded: always allowed for an admission the edge made
    refused_now: Reason | None  # what the engine says today (None: it agrees with the edge)

    @property
    def used_elsewhere(self) -> bool:
        return self.refused_now in USED_UP


def reconcile_admission(ticket: TicketState, place: GatePlace, direction: Direction, park: ParkState,
                        clock: LocalTime) -> Reconciled:
    """An admission the edge made, applied to the ticket as it stands now (``clock`` = when it happened)."""
    verdict = decide(ticket, place, direction, park, clock)
    if verdict.allow:
        return Reconciled(verdict, None)
    used_today = ticket.entries_today if ticket.entries_day == clock.day else 0
    park_gate = place.park_gate
    after = replace(
        ticket,
        entries_used=ticket.entries_used + 1,
        entries_today=used_today + 1,
        entries_day=clock.day,
        first_used_at=ticket.first_used_at if ticket.first_used_at is not None else clock.now,
        inside=ticket.inside or park_gate,
        last_entry_at=clock.now,
    )
    moved = ticket.persons if park_gate and not ticket.inside else 0
    forced = Verdict(True, Reason.OK, after, persons=ticket.persons, moved=moved, counted=True,
                     hold_for_check=ticket.hold_for_check)
    return Reconciled(forced, verdict.reason)


def serials_to_reserve(wanted: int) -> int:
    """How many serials one Provision hands out: what was asked, within sane bounds."""
    if wanted <= 0:
        return DEFAULT_SERIALS
    return min(wanted, MAX_SERIALS)
