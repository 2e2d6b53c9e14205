"""Sold tickets out of the window: QR (PNG/SVG), a one-page PDF, ESC/POS thermal printer bytes.

Sending the ESC/POS bytes to a printer is :class:`parkgate.clients.devices.SerialPrinter`.
"""

from .escpos import EscPosLayout, escpos_member_card, escpos_ticket, qr_code, raster_image
from .model import MemberCard, SoldTicket, format_money, member_fields, ticket_fields
from .pdf import FontSet, RenderedPdf, member_card_pdf, ticket_pdf
from .qr import QrError, make_qr, qr_png, qr_svg

__all__ = [
    "EscPosLayout",
    "FontSet",
    "MemberCard",
    "QrError",
    "RenderedPdf",
    "SoldTicket",
    "escpos_member_card",
    "escpos_ticket",
    "format_money",
    "make_qr",
    "member_card_pdf",
    "member_fields",
    "qr_code",
    "qr_png",
    "qr_svg",
    "raster_image",
    "ticket_fields",
    "ticket_pdf",
]
