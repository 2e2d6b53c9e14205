"""The decision engine: parkgate's gate rules, written once, as plain Python over typed values.

Used by every place that decides a validation: the server's central pipeline
(``parkgate.server.services.admission``), the gate agent's offline path
(``parkgate.clients.gate.offline``) and a site edge. It imports nothing but
the contract's Reason type and the standard library; the signature check
that comes before it is :func:`parkgate.native.authenticate_batch`.
"""

from .engine import annul, capacity_paused, decide, move_park
from .model import Direction, GatePlace, LocalTime, ParkState, TicketState, TicketStatus, Verdict, epoch
from .terms import DEFAULT_ENTRIES_TOTAL, AdmissionTerms, effective_terms, ticket_from_code

__all__ = [
    "DEFAULT_ENTRIES_TOTAL",
    "AdmissionTerms",
    "Direction",
    "GatePlace",
    "LocalTime",
    "ParkState",
    "TicketState",
    "TicketStatus",
    "Verdict",
    "annul",
    "capacity_paused",
    "decide",
    "effective_terms",
    "epoch",
    "move_park",
    "ticket_from_code",
]
