"""Tickets out of the window: files (QR PNG/SVG, a PDF page) and the thermal printer.

The server's Ticket message is turned into the printable :class:`SoldTicket`
here, with the dates in the park's own calendar (a ticket valid until
midnight in Shanghai is valid "until the 5th" for a visitor in Shanghai,
whatever the window PC's clock zone is).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

from parkgate.v1 import catalog_pb2, common_pb2, sales_pb2

from ..devices import SerialPrinter, SerialSettings
from ..tickets import MemberCard, SoldTicket, escpos_member_card, member_card_pdf, qr_png, qr_svg, ticket_pdf

FORMATS = ("png", "svg", "pdf")


def _date(msg: common_pb2.Date) -> date | None:
    return date(msg.year, msg.month, msg.day) if msg.year else None


def sold_ticket(ticket: sales_pb2.Ticket, park: catalog_pb2.Park, window: str, operator: str) -> SoldTicket:
    zone = ZoneInfo(park.time_zone)
    valid_from = ticket.valid_from.ToDatetime(tzinfo=UTC).astimezone(zone)
    # valid_until is exclusive: the last valid day is the one just before it
    last = (ticket.valid_until.ToDatetime(tzinfo=UTC) - timedelta(seconds=1)).astimezone(zone)
    sold_at = ticket.sold_at.ToDatetime(tzinfo=UTC).astimezone(zone)
    return SoldTicket(
        serial=ticket.serial, code=ticket.code, product_name=ticket.product_name or ticket.product_id,
        park_name=park.name, valid_from=valid_from.date(), valid_until=last.date(), persons=ticket.persons or 1,
        price_minor=ticket.price.minor_units, currency=ticket.price.currency, order_id=ticket.order_id,
        sold_at=sold_at, operator=operator, window=window, visit_date=_date(ticket.visit_date),
    )


def sold_tickets(order: sales_pb2.Order, parks: dict[str, catalog_pb2.Park],
                 tickets: Iterable[sales_pb2.Ticket] | None = None) -> list[SoldTicket]:
    return [sold_ticket(t, parks[t.park_id], order.window_device_id, order.operator)
            for t in (order.tickets if tickets is None else tickets)]


@dataclass(frozen=True, slots=True)
class Written:
    path: Path
    notes: tuple[str, ...] = ()


def write_files(tickets: Sequence[SoldTicket], folder: Path, formats: Sequence[str]) -> list[Written]:
    """One file per ticket and format, named by serial: ``ticket-000123.png``."""
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for ticket in tickets:
        stem = folder / f"ticket-{ticket.serial:06d}"
        for fmt in formats:
            path = stem.with_suffix(f".{fmt}")
            notes: tuple[str, ...] = ()
            if fmt == "png":
                path.write_bytes(qr_png(ticket.code))
            elif fmt == "svg":
                path.write_bytes(qr_svg(ticket.code))
            elif fmt == "pdf":
                rendered = ticket_pdf(ticket)
                path.write_bytes(rendered.data)
                notes = rendered.notes
            else:
                raise ValueError(f"format {fmt!r}: one of {', '.join(FORMATS)}")
            out.append(Written(path, notes))
    return out


def print_tickets(tickets: Sequence[SoldTicket], port: str, baudrate: int = 9600) -> None:
    """Send each ticket to an ESC/POS thermal printer on a serial port (one cut per ticket)."""
    with SerialPrinter(SerialSettings(port=port, baudrate=baudrate)) as printer:
        for ticket in tickets:
            printer.print_ticket(ticket)


def member_card(member: sales_pb2.Member, product: catalog_pb2.Product | None, park: catalog_pb2.Park | None,
                photo_jpeg: bytes | None) -> MemberCard:
    """The printable member card; the validity's last day in the park's own calendar."""
    zone = ZoneInfo(park.time_zone) if park is not None and park.time_zone else UTC
    until = None
    if member.valid_until.seconds:
        until = (member.valid_until.ToDatetime(tzinfo=UTC) - timedelta(seconds=1)).astimezone(zone).date()
    return MemberCard(member_id=member.id, name=member.name, card_uid=member.card_uid,
                      park_name=park.name if park is not None else "", product_name=(
                          product.name if product is not None else member.product_id),
                      valid_until=until, photo_jpeg=photo_jpeg or None, family_id=member.family_id)


def write_member_card(card: MemberCard, folder: Path, printer: str = "", baudrate: int = 9600) -> Written:
    """``member-<card uid>.pdf`` in ``folder``; with ``printer`` (a serial port), the ESC/POS card too."""
    folder.mkdir(parents=True, exist_ok=True)
    rendered = member_card_pdf(card)
    path = folder / f"member-{card.card_uid}.pdf"
    path.write_bytes(rendered.data)
    if printer:
        with SerialPrinter(SerialSettings(port=printer, baudrate=baudrate)) as out:
            out.write(escpos_member_card(card, out.layout))
    return Written(path, rendered.notes)
