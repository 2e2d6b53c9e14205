"""A sold ticket as the window prints it, and the text every output format shares."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime

from ..money import format_money


@dataclass(frozen=True)
class SoldTicket:
    """What the server returned for one sold ticket; enough to print it without asking again.

    ``code`` is the signed ticket code (``PG:`` + Base45, docs/ticket-code.md);
    ``valid_from``/``valid_until`` are the first and last day of validity in
    the park's calendar (inclusive), ``visit_date`` the booked day if any.
    """

    serial: int
    code: str
    product_name: str
    park_name: str
    valid_from: date
    valid_until: date
    persons: int
    price_minor: int
    currency: str
    order_id: str
    sold_at: datetime
    operator: str
    window: str
    visit_date: date | None = None


def validity_text(ticket: SoldTicket) -> str:
    if ticket.valid_from == ticket.valid_until:
        return ticket.valid_from.isoformat()
    return f"{ticket.valid_from.isoformat()} - {ticket.valid_until.isoformat()}"


def ticket_fields(ticket: SoldTicket) -> list[tuple[str, str]]:
    """The labelled lines of a ticket, in print order (PDF and thermal printer alike).

    The ticket number is not among them: every format prints it large under the QR code.
    """
    fields = []
    if ticket.visit_date is not None:
        fields.append(("Visit", ticket.visit_date.isoformat()))
    fields += [
        ("Valid", validity_text(ticket)),
        ("Persons", str(ticket.persons)),
        ("Price", format_money(ticket.price_minor, ticket.currency)),
        ("Order", ticket.order_id),
        ("Sold", ticket.sold_at.strftime("%Y-%m-%d %H:%M")),
        ("Window", f"{ticket.window} / {ticket.operator}"),
    ]
    return fields


@dataclass(frozen=True)
class MemberCard:
    """A member card as the window prints it (S15): who, which card, until when, and the face to check.

    ``photo_jpeg`` is what the server keeps (already resized); it is fetched over the contract only by an
    operator holding ``members.personal``. None = printed without a photo (the caller decides that).
    """

    member_id: str
    name: str
    card_uid: str
    park_name: str
    product_name: str
    valid_until: date | None
    photo_jpeg: bytes | None
    family_id: str = ""


def member_fields(card: MemberCard) -> list[tuple[str, str]]:
    """The labelled lines of a member card, in print order (PDF and thermal printer alike)."""
    fields = [("Member", card.name), ("Card", card.card_uid), ("Pass", card.product_name)]
    if card.valid_until is not None:
        fields.append(("Valid until", card.valid_until.isoformat()))
    fields.append(("No.", card.member_id[:8]))
    return fields
