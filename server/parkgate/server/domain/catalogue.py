"""Rules of the rest of the catalogue: vouchers (S12, S17), groups (S16), top-ups (S8), back-entry (S19).

Pure: the services load rows, ask these functions, and store the answer.
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta

from .errors import Conflict, InvalidArgument, NotFound, Reason

#: Vouchers one call may issue.
MAX_SERIES = 1000
#: Alphabet of voucher codes: no 0/O or 1/I, so a code read aloud or typed is not misread.
_CODE_ALPHABET = "23456789ABCDEFGHJKLMNPQRSTUVWXYZ"
#: How far back a back-entry may reach: an outage, not last year's books.
MAX_BACK_ENTRY_DAYS = 31


def voucher_code() -> str:
    """A fresh, unguessable voucher code: V + 12 characters (60 bits)."""
    return "V" + "".join(secrets.choice(_CODE_ALPHABET) for _ in range(12))


def check_voucher_issue(*, product_id: str, value: int, valid_from: date, valid_until: date, count: int) -> None:
    if bool(product_id) == (value > 0):
        raise InvalidArgument("a voucher is either for a product or worth a value, not both or neither",
                              Reason.INVALID_AMOUNT if value < 0 else Reason.INVALID_ARGUMENT)
    if value < 0:
        raise InvalidArgument("a voucher's value cannot be negative", Reason.INVALID_AMOUNT)
    if valid_until < valid_from:
        raise InvalidArgument("a voucher's validity ends before it starts")
    if not 1 <= count <= MAX_SERIES:
        raise InvalidArgument(f"issue 1 to {MAX_SERIES} vouchers at a time", Reason.INVALID_QUANTITY)


@dataclass(frozen=True, slots=True)
class VoucherState:
    """What redemption reads of a voucher."""

    code: str
    product_id: str   # '' = a value voucher
    value: int
    valid_from: date
    valid_until: date
    state: str


@dataclass(frozen=True, slots=True)
class LineForVoucher:
    product_id: str
    accepts_vouchers: bool
    unit_price: int
    quantity: int


def check_open(state: str, code: str) -> None:
    """A voucher that was redeemed or cancelled neither redeems nor changes again."""
    if state == "redeemed":
        raise Conflict(f"voucher {code} was redeemed already", Reason.VOUCHER_ALREADY_REDEEMED)
    if state == "cancelled":
        raise Conflict(f"voucher {code} was cancelled", Reason.VOUCHER_CANCELLED)


def check_redemption(voucher: VoucherState | None, code: str, amount: int, lines: Sequence[LineForVoucher],
                     today: date) -> None:
    """Whether this voucher may pay ``amount`` of an order with these lines, today (S12).

    A product voucher pays one ticket of its product, exactly its price; a
    value voucher pays up to its value of products that accept vouchers.
    """
    if voucher is None:
        raise NotFound(f"no voucher {code!r}", Reason.UNKNOWN_VOUCHER)
    check_open(voucher.state, code)
    if not voucher.valid_from <= today <= voucher.valid_until:
        raise Conflict(f"voucher {code} is valid {voucher.valid_from} to {voucher.valid_until}",
                       Reason.VOUCHER_EXPIRED)
    accepting = [line for line in lines if line.accepts_vouchers]
    if voucher.product_id:
        line = next((x for x in accepting if x.product_id == voucher.product_id), None)
        if line is None:
            raise Conflict(f"voucher {code} is for {voucher.product_id!r}, which this order does not hold "
                           "or which accepts no vouchers", Reason.VOUCHER_NOT_ALLOWED)
        if amount != line.unit_price:
            raise InvalidArgument(f"voucher {code} pays one {voucher.product_id!r} ticket: {line.unit_price}, "
                                  f"not {amount}", Reason.PAYMENT_MISMATCH)
        return
    if not accepting:
        raise Conflict("no product of this order accepts vouchers", Reason.VOUCHER_NOT_ALLOWED)
    if amount > voucher.value:
        raise InvalidArgument(f"voucher {code} is worth {voucher.value}, not {amount}", Reason.PAYMENT_MISMATCH)
    if amount > sum(x.unit_price * x.quantity for x in accepting):
        raise InvalidArgument(f"voucher {code} pays only for products that accept vouchers", Reason.VOUCHER_NOT_ALLOWED)


def check_positive(amount: int, what: str) -> None:
    if amount <= 0:
        raise InvalidArgument(f"{what} must be a positive amount (minor units), not {amount}", Reason.INVALID_AMOUNT)


def check_top_up(amount: int, balance: int, max_balance: int) -> None:
    check_positive(amount, "a top-up")
    if max_balance and balance + amount > max_balance:
        raise Conflict(f"the card holds {balance}; {amount} more passes its limit of {max_balance}",
                       Reason.BALANCE_LIMIT_EXCEEDED)


# --- groups (S16) ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class GroupLineIn:
    product_id: str
    quantity: int
    unit_price: int


def group_lines(lines: Sequence[GroupLineIn], head_count: int) -> list[GroupLineIn]:
    """The reservation's product mix; its quantities add up to the head count."""
    if head_count < 1:
        raise InvalidArgument("a group has at least one person", Reason.INVALID_QUANTITY)
    if any(x.quantity < 1 for x in lines):
        raise InvalidArgument("each line of a group's mix holds at least one person", Reason.INVALID_QUANTITY)
    if any(x.unit_price < 0 for x in lines):
        raise InvalidArgument("a unit price cannot be negative", Reason.INVALID_AMOUNT)
    if sum(x.quantity for x in lines) != head_count:
        raise InvalidArgument(f"the product mix holds {sum(x.quantity for x in lines)} people, the head count is "
                              f"{head_count}", Reason.INVALID_QUANTITY)
    return list(lines)


def arrived_lines(lines: Sequence[GroupLineIn], arrived: int) -> list[GroupLineIn]:
    """The mix for the people who came: fewer than reserved drop from the last lines first; more are refused."""
    reserved = sum(x.quantity for x in lines)
    if not 1 <= arrived <= reserved:
        raise InvalidArgument(f"{arrived} people: between 1 and the {reserved} reserved (change the reservation "
                              "for more)", Reason.INVALID_QUANTITY)
    out: list[GroupLineIn] = []
    left = arrived
    for line in lines:
        take = min(line.quantity, left)
        if take:
            out.append(GroupLineIn(line.product_id, take, line.unit_price))
        left -= take
    return out


def check_pickup(state: str) -> None:
    if state == "picked_up":
        raise Conflict("this group was picked up already", Reason.GROUP_ALREADY_PICKED_UP)
    if state in ("cancelled", "no_show"):
        raise Conflict(f"this reservation is {state.replace('_', '-')}", Reason.GROUP_CANCELLED)


# --- back-entry (S19) ------------------------------------------------------------------------


def check_back_entry(*, sold_at: datetime, now: datetime, quantity: int, note: str, entries: int,
                     request_ids: Sequence[str]) -> list[str]:
    """Validate a back-entry; returns the request ids its hand-checked entries are recorded under."""
    if sold_at > now:
        raise InvalidArgument("a back-entry records the past: its sale time is in the future")
    if sold_at < now - timedelta(days=MAX_BACK_ENTRY_DAYS):
        raise InvalidArgument(f"a back-entry reaches at most {MAX_BACK_ENTRY_DAYS} days back")
    if not 1 <= quantity <= 500:
        raise InvalidArgument("a back-entry records 1 to 500 tickets", Reason.INVALID_QUANTITY)
    if not note.strip():
        raise InvalidArgument("a back-entry says why (the note): which outage, which paper tickets")
    if entries < 0:
        raise InvalidArgument("entries checked by hand cannot be negative", Reason.INVALID_QUANTITY)
    if request_ids and len(request_ids) != entries:
        raise InvalidArgument(f"{entries} entries checked by hand, {len(request_ids)} request ids named: one each")
    if len(set(request_ids)) != len(request_ids):
        raise InvalidArgument("the same entry request id appears twice")
    return list(request_ids)
