"""Rows of signing keys, orders, payments, tickets, refund reasons and refunds; and what is inserted."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime


@dataclass(frozen=True, slots=True)
class PublicKey:
    """A signing key's public half and state (active, retired, revoked): what gates verify codes with."""

    key_id: int
    public_key: bytes
    state: str


@dataclass(frozen=True, slots=True)
class SigningKeyRow:
    """The active signing key, private half included."""

    key_id: int
    seed: bytes
    public_key: bytes


@dataclass(frozen=True, slots=True)
class Order:
    id: str
    request_id: str
    request_hash: bytes
    kind: str
    currency: str
    total: int
    window_device_id: str
    operator: str
    customer: str
    created_at: datetime


@dataclass(frozen=True, slots=True)
class NewOrder:
    request_id: str
    request_hash: bytes
    kind: str
    currency: str
    total: int
    window_device_id: str
    operator_id: str
    operator: str
    customer: str


@dataclass(frozen=True, slots=True)
class Payment:
    method: str
    amount: int
    reference: str


@dataclass(frozen=True, slots=True)
class Ticket:
    id: str
    serial: int
    order_id: str
    product_id: str
    product_version: int
    park_id: str
    code: str
    card_uid: str  # '' when not on a card
    price: int
    deposit: int
    visit_date: date
    valid_from: datetime
    valid_until: datetime
    persons: int
    entries_total: int
    entries_per_day: int
    entries_used: int
    state: str  # as stored: valid, refunded or voided (see domain.sales.ticket_state for what is shown)
    currency: str
    product_name: str
    sold_at: datetime


@dataclass(frozen=True, slots=True)
class NewTicket:
    """A ticket as issued: its terms copied from the product version it is sold under."""

    serial: int
    order_id: str
    product_id: str
    product_version: int
    park_id: str
    key_id: int
    code: str
    card_uid: str | None
    price: int
    deposit: int
    visit_date: date
    valid_from: datetime
    valid_until: datetime
    valid_days: int
    persons: int
    entries_total: int
    entries_per_day: int
    reentry_allowed: bool
    hold_for_check: bool
    attraction_ids: list[str]
    window_start: int | None
    window_end: int | None
    balance: int | None = None                 # stored-value cards start at 0 (S8)
    attraction_limits: dict[str, int] | None = None  # count cards: {attraction: entries} (S10)
    back_entered: bool = False                 # S19


@dataclass(frozen=True, slots=True)
class RefundReason:
    id: str
    label: str
    refund_percent: int
    disabled: bool


@dataclass(frozen=True, slots=True)
class Refund:
    id: str
    request_id: str
    request_hash: bytes
    order_id: str
    reason_id: str
    amount: int
    deposit_refunded: int
    note: str
    operator: str
    at: datetime
    currency: str
    ticket_ids: list[str]


@dataclass(frozen=True, slots=True)
class NewRefund:
    request_id: str
    request_hash: bytes
    order_id: str
    reason_id: str
    amount: int
    deposit_refunded: int
    note: str
    operator_id: str
    operator: str
    window_device_id: str | None


@dataclass(frozen=True, slots=True)
class RefundLine:
    """What one ticket of a refund pays back."""

    ticket_id: str
    amount: int
    deposit: int


@dataclass(frozen=True, slots=True)
class MethodTotal:
    method: str
    currency: str
    count: int
    amount: int


@dataclass(frozen=True, slots=True)
class ShiftTotals:
    """Takings of one operator since their session started."""

    since: datetime | None
    orders: int
    tickets: int
    by_method: list[MethodTotal]
    refunds: int
    refunded: int
    currency: str | None  # of the refunds; None when there were none
