"""A validation at a gate and its decision, and how the two halves of the decision fit together.

A decision is made in two places, each deciding what only it can:

1. **The code** (native/, no database): is it ours (signature, key not
   revoked), for this park, inside its validity and night window, for this
   attraction? A forged or garbled code never costs a database round trip.
2. **The database** (``admit_batch()`` in store migration 0003): the ticket's
   live state (refunded, voided), its counts (entries per day and in total,
   re-entry after an exit), validity counted from first use, IC cards (which
   carry no signed data), and the park's capacity. It decides atomically
   under row locks, so a single-use ticket is admitted once even when gates
   on several servers present it in the same millisecond.

Exits are always let through once the code is authentic (people must be able
to leave); they move occupancy only for tickets that were inside.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from parkgate import native

Direction = Literal["in", "out"]

#: Code checks that do not stop a person from leaving.
_EXIT_IGNORES = frozenset({
    native.Reason.EXPIRED, native.Reason.NOT_YET_VALID, native.Reason.OUTSIDE_TIME_WINDOW,
    native.Reason.NOT_VALID_FOR_ATTRACTION,
})


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


@dataclass(frozen=True, slots=True)
class ValidationItem:
    """One scan: a QR code or an IC card UID, at a gate."""

    place: GatePlace
    request_id: str
    code: str = ""
    card_uid: str = ""
    direction: Direction = "in"


@dataclass(frozen=True, slots=True)
class Decision:
    allow: bool
    reason: str                  # a Reason name from the contract
    ticket_id: str = ""
    entries_left: int = -1       # -1: unlimited
    persons: int = 0
    hold_for_check: bool = False
    retried: bool = False        # the first decision for this request id, returned again

    @classmethod
    def deny(cls, reason: str) -> Decision:
        return cls(False, reason)


def code_verdict(result: native.Result, direction: Direction) -> str:
    """The code half of the decision: "OK" to go on to the database, else the refusal reason."""
    if result.ok:
        return "OK"
    if direction == "out" and result.ticket is not None and result.reason in _EXIT_IGNORES:
        return "OK"
    return str(result.reason)
