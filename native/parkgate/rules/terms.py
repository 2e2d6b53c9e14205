"""A product's effective admission terms: its own rules over safe defaults by kind.

A product says what it admits through its rules; a product that states no
counting rule at all (neither entries in total nor per day: 0 in the
contract) gets its kind's default here, in one place, so a plain ``single``
product admits once rather than without limit. The admin
CLI prints these effective terms; the window copies them onto every ticket
it sells; an offline gate uses them for codes it has never seen.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .model import TicketState

#: Entries a ticket of each kind gives when its product names none (0 = unlimited).
DEFAULT_ENTRIES_TOTAL: dict[str, int] = {
    "single": 1,            # one visit
    "multi_person": 1,      # one visit of the whole party
    "group": 1,             # one visit of the whole group
    "complimentary": 1,
    "member": 0,            # a member card admits while it is valid (limits come from entries_per_day)
    "stored_value": 0,      # each attraction charges the balance instead
    "count_card": 0,        # must name its count: a count card without one is refused at sale (BAD_CONFIGURATION)
}


@dataclass(frozen=True, slots=True)
class AdmissionTerms:
    """The counting rules of a product: what the engine needs beyond the code's own facts."""

    entries_total: int = 0
    entries_per_day: int = 0
    reentry_allowed: bool = False
    hold_for_check: bool = False
    valid_days: int = 0

    def describe(self) -> str:
        """For people: 'admits once', 'admits 10 times, at most 1 a day, re-entry allowed', ..."""
        if self.entries_total == 1:
            parts = ["admits once"]
        elif self.entries_total:
            parts = [f"admits {self.entries_total} times"]
        else:
            parts = ["admits without a total limit"]
        if self.entries_per_day:
            parts.append(f"at most {self.entries_per_day} a day")
        if self.reentry_allowed:
            parts.append("re-entry after an exit allowed the same day")
        if self.valid_days:
            parts.append(f"valid {self.valid_days} day(s) from the first use")
        if self.hold_for_check:
            parts.append("held for a checker")
        return ", ".join(parts)


def effective_terms(kind: str, rules: dict[str, Any]) -> AdmissionTerms:
    """The product's rules with its kind's defaults filled in (``rules`` as stored: the contract's names)."""
    entries_total = int(rules.get("entries_total", 0) or 0)
    entries_per_day = int(rules.get("entries_per_day", 0) or 0)
    if not entries_total and not entries_per_day:  # the product states no counting rule: its kind's default
        entries_total = DEFAULT_ENTRIES_TOTAL.get(kind, 1)
    valid_days = int(rules.get("valid_days", 0) or 0) if rules.get("validity") == "days_from_first_use" else 0
    return AdmissionTerms(
        entries_total=entries_total,
        entries_per_day=entries_per_day,
        reentry_allowed=bool(rules.get("reentry_allowed", False)),
        hold_for_check=bool(rules.get("hold_for_check", False)),
        valid_days=valid_days,
    )


def ticket_from_code(code: Any, terms: AdmissionTerms, park_id: str, attraction_ids: frozenset[str],
                     all_attractions: bool) -> TicketState:
    """A ticket as an offline gate knows it: the signed code's facts and its product's terms, no uses yet.

    ``code`` is a verified :class:`parkgate.native.Ticket`; ``attraction_ids``
    are the ids of the attraction slots the code names (the gate maps slots
    to ids from its welcome). The caller applies what it remembers of the
    ticket's uses (its journal) before deciding.
    """
    window = (code.window_start, code.window_end) if code.night_tour else None
    return TicketState(
        ticket_id=f"serial:{code.serial}", serial=code.serial, park_id=park_id,
        valid_from=float(code.valid_from), valid_until=float(code.valid_until), persons=code.persons,
        entries_total=terms.entries_total, entries_per_day=terms.entries_per_day,
        reentry_allowed=terms.reentry_allowed, hold_for_check=terms.hold_for_check, valid_days=terms.valid_days,
        attraction_ids=attraction_ids, all_attractions=all_attractions, window=window,
    )
