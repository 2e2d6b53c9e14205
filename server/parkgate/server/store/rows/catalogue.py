"""Rows of the rest of the catalogue: members, card events, vouchers, group reservations, back-entries."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime


@dataclass(frozen=True, slots=True)
class MemberRow:
    """A member with their current card (the ticket it admits with); the photo itself is read apart."""

    id: str
    family_id: str
    name: str
    id_document: str
    phone: str
    has_photo: bool
    product_id: str
    ticket_id: str
    order_id: str
    card_uid: str
    valid_until: datetime
    blocked: bool


@dataclass(frozen=True, slots=True)
class NewMember:
    family_id: str
    name: str
    id_document: str
    phone: str
    photo: bytes | None
    product_id: str
    ticket_id: str
    order_id: str


@dataclass(frozen=True, slots=True)
class CardTicket:
    """The live ticket an IC card admits with, locked for a change of its balance or state."""

    ticket_id: str
    card_uid: str
    park_id: str
    product_id: str
    currency: str
    balance: int | None
    blocked: bool
    lost: bool              # the UID is of a card reported lost and replaced
    state: str
    valid_until: datetime
    entries_total: int
    entries_used: int
    attraction_limits: dict
    attraction_used: dict


@dataclass(frozen=True, slots=True)
class CardEventRow:
    at: datetime
    kind: str
    amount: int
    balance_after: int | None
    where: str
    operator: str
    card_uid: str


@dataclass(frozen=True, slots=True)
class NewCardEvent:
    request_id: str | None
    ticket_id: str
    card_uid: str
    kind: str
    amount: int
    balance_after: int | None
    order_id: str | None
    device_id: str
    operator: str
    note: str = ""
    operator_id: str | None = None


@dataclass(frozen=True, slots=True)
class VoucherRow:
    id: str
    code: str
    series: str
    request_id: str
    product_id: str     # '' for a value voucher
    value: int          # 0 for a product voucher
    currency: str
    valid_from: date
    valid_until: date
    issuer: str
    recipient: str
    state: str
    order_id: str
    redeemed_at: datetime | None


@dataclass(frozen=True, slots=True)
class NewVoucher:
    code: str
    series: str
    request_id: str
    product_id: str | None
    value: int | None
    currency: str
    valid_from: date
    valid_until: date
    issuer: str
    recipient: str


@dataclass(frozen=True, slots=True)
class GroupRow:
    id: str
    request_id: str
    company: str
    contact: str
    park_id: str
    visit_date: date
    head_count: int
    lines: list          # [{"product_id", "quantity", "unit_price"}]
    deposit: int
    state: str
    order_id: str
    arrived: int
    currency: str


@dataclass(frozen=True, slots=True)
class BackEntryRow:
    id: str
    request_id: str
    order_id: str
    product_id: str
    sold_at: datetime
    quantity: int
    method: str
    customer: str
    note: str
    entries_by_hand: int
    entries_recorded: int
    device_id: str
    operator: str
    entered_at: datetime
    total: int
    currency: str
