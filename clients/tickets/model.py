"""A sold ticket as the window prints it, and the text every output format shares."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime

#: ISO 4217 currencies whose minor unit is not 1/100 (the rest of the world's park currencies are).
_EXPONENTS: dict[str, int] = {
    "JPY": 0, "KRW": 0, "VND": 0, "CLP": 0, "ISK": 0, "UGX": 0, "XAF": 0, "XOF": 0, "PYG": 0,
    "BHD": 3, "IQD": 3, "JOD": 3, "KWD": 3, "LYD": 3, "OMR": 3, "TND": 3,
}  # fmt: skip


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


def format_money(minor: int, currency: str) -> str:
    """``12800, "CNY"`` -> ``"CNY 128.00"``; exact integer arithmetic, no float."""
    exponent = _EXPONENTS.get(currency.upper(), 2)
    sign = "-" if minor < 0 else ""
    units, cents = divmod(abs(minor), 10**exponent)
    amount = f"{units:,}" + (f".{cents:0{exponent}d}" if exponent else "")
    return f"{currency.upper()} {sign}{amount}"


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
