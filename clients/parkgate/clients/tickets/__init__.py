"""Sold tickets out of the window: QR (PNG/SVG), a one-page PDF, ESC/POS thermal printer bytes.

Sending the ESC/POS bytes to a printer is :class:`parkgate.clients.devices.SerialPrinter`.
"""

from .escpos import EscPosLayout, escpos_ticket, qr_code
from .model import SoldTicket, format_money, ticket_fields
from .pdf import FontSet, RenderedPdf, ticket_pdf
from .qr import QrError, make_qr, qr_png, qr_svg

__all__ = [
    "EscPosLayout",
    "FontSet",
    "QrError",
    "RenderedPdf",
    "SoldTicket",
    "escpos_ticket",
    "format_money",
    "make_qr",
    "qr_code",
    "qr_png",
    "qr_svg",
    "ticket_fields",
    "ticket_pdf",
]
