"""Selling and refunding as rules: what a ticket admits and until when, what a refund pays back.

Everything here is pure: the sales service loads rows, asks these functions,
and stores the answer. A ticket copies its terms from the product version it
is sold under (:func:`ticket_terms`), so the gate decision needs nothing but
the ticket row, and a later product change never touches a sold ticket.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from typing import Any, Protocol
from zoneinfo import ZoneInfo

import orjson

from parkgate.rules import effective_terms

from .errors import Conflict, InvalidArgument, Reason

#: The most tickets one order line may hold: a window typo of 1000 instead of 10 is refused.
MAX_LINE_QUANTITY = 500
#: How far ahead a pre-sale (S20) may name a visit date.
MAX_PRESALE_DAYS = 366
#: A "valid N days from first use" ticket must be first used within this many days of its visit date.
FIRST_USE_HORIZON_DAYS = 365

PAYMENT_METHODS = ("cash", "bank_card", "mobile", "voucher", "on_account", "complimentary_payment")
_CARD_UID = re.compile(r"^(?:[0-9A-F]{2}){4,10}$")


def normalize_card_uid(uid: str) -> str:
    """An IC card UID as upper-case hex without separators (4 to 10 bytes: ISO 14443 UIDs are 4, 7 or 10)."""
    text = re.sub(r"[\s:-]", "", uid).upper()
    if not _CARD_UID.match(text):
        raise InvalidArgument(f"card UID {uid!r}: expected 4-10 bytes of hex, e.g. '04A1B2C3D4E5F6'")
    return text


def check_quantity(quantity: int) -> None:
    if not 1 <= quantity <= MAX_LINE_QUANTITY:
        raise InvalidArgument(
            f"quantity {quantity}: sell between 1 and {MAX_LINE_QUANTITY} tickets per line", Reason.INVALID_QUANTITY
        )


#: A ticket code carries its person count in one byte.
MAX_CODE_PERSONS = 255


def check_group_persons(persons: int) -> int:
    """The head count one group code may admit (S16): its code carries it in a byte."""
    if not 1 <= persons <= MAX_CODE_PERSONS:
        raise InvalidArgument(f"one group code admits 1 to {MAX_CODE_PERSONS} people, not {persons}: "
                              "pick up as separate tickets", Reason.INVALID_QUANTITY)
    return persons


def local_today(zone: ZoneInfo, now: datetime) -> date:
    return now.astimezone(zone).date()


def check_visit_date(visit: date, today: date) -> None:
    if visit < today:
        raise InvalidArgument(f"visit date {visit.isoformat()} is in the past (today is {today.isoformat()})")
    if visit > today + timedelta(days=MAX_PRESALE_DAYS):
        raise InvalidArgument(f"visit date {visit.isoformat()} is more than {MAX_PRESALE_DAYS} days ahead")


def _midnight(day: date, zone: ZoneInfo) -> datetime:
    return datetime.combine(day, time(0), zone)


@dataclass(frozen=True, slots=True)
class TicketTerms:
    """What one ticket of a product admits, as copied onto the ticket row and into its code."""

    valid_from: datetime
    valid_until: datetime  # exclusive
    valid_days: int
    persons: int
    entries_total: int
    entries_per_day: int
    reentry_allowed: bool
    hold_for_check: bool
    card_bound: bool
    deposit: int
    night_window: tuple[int, int] | None
    attraction_ids: tuple[str, ...]
    attraction_limits: Mapping[str, int] | None = None  # count cards per attraction (S10)
    stored_value: bool = False                          # a balance the attractions charge (S8)


def ticket_terms(kind: str, rules: Mapping[str, Any], visit: date, zone: ZoneInfo) -> TicketTerms:
    """The terms of a ticket of this product for this visit date, in the park's time zone."""
    validity = rules.get("validity", "visit_date")
    start_min, end_min = rules.get("window_start_minute", 0), rules.get("window_end_minute", 0)
    night_window = (start_min, end_min) if (start_min or end_min) else None
    # A night window past midnight (22:00-02:00) keeps the ticket alive into the next morning.
    overnight = timedelta(minutes=end_min) if night_window and end_min < start_min else timedelta(0)

    valid_days = 0
    if validity == "fixed_dates":
        first, last = date.fromisoformat(rules["valid_from"]), date.fromisoformat(rules["valid_until"])
        if visit > last:
            raise Conflict(f"this product was valid until {last.isoformat()}", Reason.PRODUCT_NOT_ON_SALE)
        start, end = _midnight(first, zone), _midnight(last + timedelta(days=1), zone) + overnight
    elif validity == "days_from_first_use":
        valid_days = int(rules.get("valid_days", 0))
        if valid_days < 1:
            raise Conflict("a 'days from first use' product needs valid_days of at least 1",
                           Reason.BAD_CONFIGURATION)
        start = _midnight(visit, zone)
        end = _midnight(visit + timedelta(days=FIRST_USE_HORIZON_DAYS + valid_days), zone)
    else:  # visit_date
        start, end = _midnight(visit, zone), _midnight(visit + timedelta(days=1), zone) + overnight

    persons = int(rules.get("person_count", 0)) if kind == "multi_person" else 1
    if kind == "multi_person" and persons < 2:
        raise Conflict("a multi-person product needs a person_count of at least 2", Reason.BAD_CONFIGURATION)
    card_bound = bool(rules.get("card_bound", False))
    admits = effective_terms(kind, dict(rules))  # the kind's safe defaults where the product says nothing
    limits = {str(k): int(v) for k, v in dict(rules.get("entries_per_attraction") or {}).items() if int(v) > 0}
    if kind == "count_card" and not int(rules.get("entries_total", 0) or 0) and not limits:
        raise Conflict("a count card product needs entries_total or entries_per_attraction (the entries it sells)",
                       Reason.BAD_CONFIGURATION)
    attraction_ids = tuple(dict.fromkeys([*rules.get("attraction_ids", ()), *limits]))  # a count there admits there
    return TicketTerms(
        valid_from=start, valid_until=end, valid_days=valid_days, persons=persons,
        entries_total=admits.entries_total, entries_per_day=admits.entries_per_day,
        reentry_allowed=admits.reentry_allowed, hold_for_check=admits.hold_for_check,
        card_bound=card_bound, deposit=int(rules.get("deposit", 0)) if card_bound else 0,
        night_window=night_window, attraction_ids=attraction_ids,
        attraction_limits=limits or None, stored_value=kind == "stored_value",
    )


@dataclass(frozen=True, slots=True)
class PaymentIn:
    method: str
    amount: int
    reference: str = ""


def check_payments(payments: Iterable[PaymentIn], total: int, customer: str) -> None:
    """Payments must add up to the order total exactly; some methods need a reference or a customer."""
    payments = list(payments)
    paid = 0
    for p in payments:
        if p.method not in PAYMENT_METHODS:
            raise InvalidArgument(f"payment method {p.method!r}: one of {', '.join(PAYMENT_METHODS)}",
                                  Reason.PAYMENT_METHOD_NOT_ALLOWED)
        if p.amount < 0:
            raise InvalidArgument("a payment cannot be negative")
        if p.method == "on_account" and not customer:
            raise InvalidArgument("a sale on account names the customer (the agency or company)",
                                  Reason.PAYMENT_METHOD_NOT_ALLOWED)
        if p.method == "voucher" and not p.reference:
            raise InvalidArgument("a voucher payment needs the voucher code as its reference",
                                  Reason.PAYMENT_METHOD_NOT_ALLOWED)
        paid += p.amount
    if paid != total:
        raise InvalidArgument(f"payments add up to {paid}, the order costs {total} (minor units)",
                              Reason.PAYMENT_MISMATCH, paid=str(paid), total=str(total))


def refund_amount(price: int, percent: int) -> int:
    """The refund for a ticket: ``percent`` of its price, rounded half up to the minor unit.

    Integer arithmetic only: 80 % of 12.345 would otherwise drift with floats.
    """
    if not 0 <= percent <= 100:
        raise InvalidArgument(f"refund percentage {percent}: between 0 and 100")
    return (price * percent + 50) // 100


class TicketProgress(Protocol):
    """What :func:`ticket_state` reads of a ticket (a store row has these fields)."""

    @property
    def state(self) -> str: ...
    @property
    def entries_total(self) -> int: ...
    @property
    def entries_used(self) -> int: ...
    @property
    def valid_until(self) -> datetime: ...


def ticket_state(ticket: TicketProgress, now: datetime) -> str:
    """The state shown to people: refunded/voided from the row, else used, expired or valid."""
    if ticket.state != "valid":
        return ticket.state
    if ticket.entries_total and ticket.entries_used >= ticket.entries_total:
        return "used"
    if ticket.valid_until <= now:
        return "expired"
    return "valid"


def fingerprint(request: Any) -> bytes:
    """A stable hash of a request's content: tells a true retry from a reused request id."""
    return hashlib.sha256(orjson.dumps(request, option=orjson.OPT_SORT_KEYS)).digest()
