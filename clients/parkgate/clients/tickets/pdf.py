"""A one-page ticket PDF (fpdf2): the QR code and the ticket's text, for print-at-home or a laser printer.

Fonts: the PDF embeds TrueType fonts found on the system, so park and product
names in any script print as they are. DejaVu Sans (Debian
``fonts-dejavu-core``) covers Latin, Greek and Cyrillic but not Chinese,
Japanese or Korean; a CJK font (``fonts-wqy-microhei``, else a few other
Debian CJK fonts) is added as a fallback for the characters DejaVu lacks.
When a character is in no available font, it is printed as ``?`` and the
result carries a note saying which font package to install, instead of
fpdf2 silently dropping it. Without any TrueType font, fpdf2's built-in
Helvetica is used (Latin-1 only), with the same kind of note.
"""

from __future__ import annotations

import io
import logging
from dataclasses import dataclass
from pathlib import Path

from fpdf import FPDF

from .model import MemberCard, SoldTicket, member_fields, ticket_fields
from .qr import qr_png

log = logging.getLogger(__name__)

#: Regular and bold Unicode fonts, first found wins.
LATIN_FONTS: tuple[tuple[str, str], ...] = (
    (
        "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
        "/usr/share/fonts/truetype/dejavu/DejaVuSans-Bold.ttf",
    ),
    (
        "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf",
        "/usr/share/fonts/truetype/liberation/LiberationSans-Bold.ttf",
    ),
)
#: CJK fallback fonts (TrueType outlines, so fpdf2 can subset them), first found wins.
CJK_FONTS: tuple[str, ...] = (
    "/usr/share/fonts/truetype/wqy/wqy-microhei.ttc",
    "/usr/share/fonts/truetype/wqy/wqy-zenhei.ttc",
    "/usr/share/fonts/truetype/droid/DroidSansFallbackFull.ttf",
    "/usr/share/fonts/truetype/arphic/uming.ttc",
)

#: An ID-1 card (ISO/IEC 7810, 85.6 x 54 mm), landscape: what a card printer takes.
CARD_MM = (85.6, 54.0)
PHOTO_MM = (28.0, 36.0)  # a passport-style 7:9 photo on the card's left
PAGE_MM = (105.0, 148.0)  # A6 portrait: a ticket-sized page, four to an A4 sheet
MARGIN_MM = 8.0
QR_MM = 48.0


@dataclass(frozen=True)
class FontSet:
    """Font files to embed; ``None`` = not available."""

    regular: Path | None
    bold: Path | None
    cjk: Path | None

    @classmethod
    def find(cls) -> FontSet:
        """The first installed fonts of LATIN_FONTS and CJK_FONTS."""
        regular = bold = cjk = None
        for regular_path, bold_path in LATIN_FONTS:
            if Path(regular_path).is_file():
                regular = Path(regular_path)
                bold = Path(bold_path) if Path(bold_path).is_file() else None
                break
        for path in CJK_FONTS:
            if Path(path).is_file():
                cjk = Path(path)
                break
        return cls(regular, bold, cjk)


@dataclass(frozen=True)
class RenderedPdf:
    """The PDF bytes, and notes for the operator when something could not be printed as written."""

    data: bytes
    notes: tuple[str, ...] = ()


class _Ticket(FPDF):
    """An FPDF that knows which characters its fonts can print."""

    def __init__(self, fonts: FontSet) -> None:
        super().__init__(unit="mm", format=PAGE_MM)
        self.notes: list[str] = []
        self._covered: set[int] | None = None  # None: core font, Latin-1 only
        self.bold_style = ""
        if fonts.regular is not None:
            self.add_font("body", "", str(fonts.regular))
            self.add_font("body", "B", str(fonts.bold or fonts.regular))
            self.bold_style = "B"
            self._covered = set(self.fonts["body"].cmap)
            if fonts.cjk is not None:
                self.add_font("cjk", "", str(fonts.cjk))
                self._covered |= set(self.fonts["cjk"].cmap)
                self.set_fallback_fonts(["cjk"], exact_match=False)
            self.family = "body"
        else:
            self.family = "helvetica"
            self.bold_style = "B"
            self.notes.append(
                "no Unicode TrueType font found (install Debian fonts-dejavu-core): Latin-1 text only"
            )
        self._missing_font_hint = (
            "install Debian fonts-wqy-microhei for Chinese, Japanese and Korean"
            if fonts.cjk is None
            else "no installed font has them"
        )

    def printable(self, text: str) -> str:
        """``text`` with every character no embedded font can draw replaced by ``?`` (and a note)."""
        if self._covered is None:
            missing = {c for c in text if ord(c) > 0xFF}
        else:
            missing = {c for c in text if ord(c) not in self._covered and not c.isspace()}
        if not missing:
            return text
        self.notes.append(
            f"characters {''.join(sorted(missing))!r} printed as '?': {self._missing_font_hint}"
        )
        return "".join("?" if c in missing else c for c in text)

    def text_line(
        self, text: str, size: float, *, bold: bool = False, align: str = "C", height: float = 0
    ) -> None:
        self.set_font(self.family, self.bold_style if bold else "", size)
        self.multi_cell(
            0, height or size * 0.45, self.printable(text), align=align, new_x="LMARGIN", new_y="NEXT"
        )


def ticket_pdf(ticket: SoldTicket, *, fonts: FontSet | None = None) -> RenderedPdf:
    """One A6 page: park, product, the QR code (48 mm, version 6-M), the ticket number and details."""
    pdf = _Ticket(fonts or FontSet.find())
    pdf.set_margins(MARGIN_MM, MARGIN_MM, MARGIN_MM)
    pdf.set_auto_page_break(False)
    pdf.set_title(f"{ticket.park_name} - {ticket.product_name} - {ticket.serial}")
    pdf.set_creator("parkgate")
    pdf.add_page()

    pdf.text_line(ticket.park_name, 15, bold=True)
    pdf.text_line(ticket.product_name, 11)
    pdf.ln(2)
    x = (PAGE_MM[0] - QR_MM) / 2
    pdf.image(io.BytesIO(qr_png(ticket.code, scale=8)), x=x, y=pdf.get_y(), w=QR_MM, h=QR_MM)
    pdf.set_y(pdf.get_y() + QR_MM + 1)
    pdf.text_line(f"No. {ticket.serial}", 10, bold=True)
    pdf.ln(2)

    label_w = 24.0
    for label, value in ticket_fields(ticket):
        pdf.set_font(pdf.family, pdf.bold_style, 8.5)
        pdf.cell(label_w, 4.6, pdf.printable(label))
        pdf.set_font(pdf.family, "", 8.5)
        pdf.multi_cell(0, 4.6, pdf.printable(value), new_x="LMARGIN", new_y="NEXT")

    pdf.set_y(PAGE_MM[1] - MARGIN_MM - 7)
    pdf.text_line("Show the QR code at the gate. Valid only as printed by the park.", 6.5)
    notes = tuple(dict.fromkeys(pdf.notes))  # each note once, in order
    for note in notes:
        log.warning("ticket %s PDF: %s", ticket.serial, note)
    return RenderedPdf(bytes(pdf.output()), notes)


def member_card_pdf(card: MemberCard, *, fonts: FontSet | None = None) -> RenderedPdf:
    """One ID-1 page: the member's photo on the left, park, name, card and validity on the right.

    The photo is embedded as it came (a JPEG, fpdf2 keeps it DCT-encoded): the gate's checker compares
    the face with this print. Without a photo the box says so, and the notes carry why.
    """
    pdf = _Ticket(fonts or FontSet.find())
    pdf.set_margins(4.0, 4.0, 4.0)
    pdf.set_auto_page_break(False)
    pdf.set_title(f"{card.park_name} - {card.name}")
    pdf.set_creator("parkgate")
    pdf.add_page(format=CARD_MM)  # wider than high as given: fpdf2 keeps the format as it is in portrait
    x, y = 4.0, (CARD_MM[1] - PHOTO_MM[1]) / 2
    if card.photo_jpeg:
        pdf.image(io.BytesIO(card.photo_jpeg), x=x, y=y, w=PHOTO_MM[0], h=PHOTO_MM[1], keep_aspect_ratio=True)
    else:
        pdf.rect(x, y, *PHOTO_MM)
        pdf.notes.append(f"member {card.member_id[:8]}: printed without a photo")
    left = x + PHOTO_MM[0] + 3.0
    pdf.set_left_margin(left)
    pdf.set_xy(left, 5.0)
    pdf.text_line(card.park_name, 10, bold=True, align="L")
    pdf.ln(1)
    for label, value in member_fields(card):
        pdf.set_x(left)
        pdf.set_font(pdf.family, pdf.bold_style, 7)
        pdf.cell(17, 4.2, pdf.printable(label))
        pdf.set_font(pdf.family, "", 7)
        pdf.multi_cell(0, 4.2, pdf.printable(value), new_x="LMARGIN", new_y="NEXT")
    notes = tuple(dict.fromkeys(pdf.notes))
    for note in notes:
        log.warning("member card %s PDF: %s", card.card_uid, note)
    return RenderedPdf(bytes(pdf.output()), notes)
