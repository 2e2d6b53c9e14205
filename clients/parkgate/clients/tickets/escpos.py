"""ESC/POS bytes for a ticket on a 58 mm or 80 mm thermal receipt printer.

Only the commands every ESC/POS printer of the last twenty years knows (Epson
TM-T20/T88 and the many compatible Chinese models): ESC @ (initialise), ESC a
(alignment), ESC E (bold), GS ! (character size), ESC d (feed), the native QR
function ``GS ( k`` (model 2, module size, error level, store, print: the
printer draws the symbol itself, so no raster image crosses the serial line)
and GS V (cut). A member card's photo is a raster image (GS v 0), dithered to
black and white with Pillow: the one image a thermal print carries.

Text encoding: ``"cp437"`` (code page 0, the ESC/POS default) for Latin
text; ``"gb18030"`` for printers in Chinese mode (FS & is sent to select it).
Characters the encoding cannot express are printed as ``?``.
"""

from __future__ import annotations

import io
import textwrap
from dataclasses import dataclass
from typing import Literal

from PIL import Image, ImageOps

from .model import MemberCard, SoldTicket, member_fields, ticket_fields
from .qr import ErrorLevel, make_qr

ESC, GS, FS, LF = b"\x1b", b"\x1d", b"\x1c", b"\n"
INIT = ESC + b"@"
CHINESE_MODE_ON = FS + b"&"
#: Feed to the cutter and cut (GS V 66 n: feed n lines, partial cut; 65: full cut).
PARTIAL_CUT = GS + b"V\x42\x03"
FULL_CUT = GS + b"V\x41\x03"

_ALIGN = {"left": 0, "center": 1, "right": 2}
_QR_ERROR = {"L": 48, "M": 49, "Q": 50, "H": 51}

#: Characters per line of font A (12 x 24 dots) on a 203 dpi printer.
COLUMNS = {58: 32, 80: 48}


@dataclass(frozen=True)
class EscPosLayout:
    """Printer-dependent choices; the defaults suit a 58 mm, 203 dpi printer."""

    paper_mm: Literal[58, 80] = 58
    encoding: Literal["cp437", "gb18030"] = "cp437"
    qr_module_dots: int = 5  # 5 dots = 0.625 mm at 203 dpi: 41 modules + quiet zone = 30 mm
    qr_error: ErrorLevel = "M"
    partial_cut: bool = True

    def __post_init__(self) -> None:
        if self.paper_mm not in COLUMNS:
            raise ValueError("paper_mm must be 58 or 80")
        if not 1 <= self.qr_module_dots <= 16:
            raise ValueError("qr_module_dots must be 1..16")


def align(where: str) -> bytes:
    return ESC + b"a" + bytes([_ALIGN[where]])


def bold(on: bool) -> bytes:
    return ESC + b"E" + bytes([1 if on else 0])


def size(width: int = 1, height: int = 1) -> bytes:
    """GS ! n: character magnification 1-8 in each direction."""
    return GS + b"!" + bytes([((width - 1) << 4) | (height - 1)])


def feed(lines: int) -> bytes:
    return ESC + b"d" + bytes([lines])


def _qr_function(fn: int, data: bytes) -> bytes:
    """GS ( k pL pH cn=49 fn data: one function of the QR symbol (cn 49)."""
    length = len(data) + 2
    return GS + b"(k" + bytes([length & 0xFF, length >> 8, 49, fn]) + data


def qr_code(code: str, *, module_dots: int = 5, error: ErrorLevel = "M") -> bytes:
    """The native QR commands: model 2, module size, error level, store ``code``, print it."""
    make_qr(code, error)  # refuses what would not be a compact alphanumeric symbol, like the PDF
    payload = code.encode("ascii")
    if len(payload) > 7089:
        raise ValueError("too long for a QR code")
    return (
        _qr_function(65, b"\x32\x00")  # fn 65 (0x41): select model 2
        + _qr_function(67, bytes([module_dots]))  # fn 67 (0x43): module size in dots
        + _qr_function(69, bytes([_QR_ERROR[error]]))  # fn 69 (0x45): error correction level
        + _qr_function(80, b"\x30" + payload)  # fn 80 (0x50): store the data (m = 48)
        + _qr_function(81, b"\x30")  # fn 81 (0x51): print the stored symbol
    )


def _text(text: str, encoding: str) -> bytes:
    cleaned = "".join(" " if ord(c) < 0x20 else c for c in text)
    return cleaned.encode(encoding, errors="replace")


def raster_image(jpeg: bytes, width_dots: int) -> bytes:
    """GS v 0: ``jpeg`` scaled to ``width_dots`` wide and dithered (Floyd-Steinberg) to black and white.

    ValueError when the bytes are not an image Pillow reads (the caller prints the card without it)."""
    try:
        with Image.open(io.BytesIO(jpeg)) as img:
            grey = ImageOps.exif_transpose(img).convert("L")
    except (OSError, Image.DecompressionBombError) as exc:
        raise ValueError(f"not an image: {exc}") from None
    height = max(1, round(grey.height * width_dots / grey.width))
    # ESC/POS prints a 1 bit; Pillow's "1" mode stores white as 1: invert before dithering.
    bits = ImageOps.invert(grey.resize((width_dots, height))).convert("1")
    row_bytes = (width_dots + 7) // 8
    return (GS + b"v0\x00" + bytes([row_bytes & 0xFF, row_bytes >> 8, height & 0xFF, height >> 8])
            + bits.tobytes())


#: The photo's width on the card: 192 dots = 24 mm at 203 dpi.
PHOTO_DOTS = 192


def _start(layout: EscPosLayout) -> bytearray:
    """Initialise the printer (and its Chinese mode for gb18030): how every print begins."""
    out = bytearray(INIT)
    if layout.encoding == "gb18030":
        out += CHINESE_MODE_ON
    return out


def _labelled(fields: list[tuple[str, str]], columns: int, enc: str) -> bytes:
    """Label/value lines, values wrapped under themselves."""
    out = bytearray()
    label_width = max(len(label) for label, _ in fields) + 1
    for label, value in fields:
        wrapped = textwrap.wrap(value, max(8, columns - label_width)) or [""]
        out += _text(f"{label:<{label_width}}{wrapped[0]}", enc) + LF
        for more in wrapped[1:]:
            out += _text(" " * label_width + more, enc) + LF
    return bytes(out)


def escpos_member_card(card: MemberCard, layout: EscPosLayout | None = None) -> bytes:
    """A member card on the thermal printer: park, the photo (raster), then the card's lines; ends with the cut."""
    layout = layout or EscPosLayout()
    columns = COLUMNS[layout.paper_mm]
    enc = layout.encoding
    out = _start(layout) + align("center") + bold(True)
    for line in textwrap.wrap(card.park_name, columns) or [""]:
        out += _text(line, enc) + LF
    out += bold(False)
    if card.photo_jpeg:
        out += raster_image(card.photo_jpeg, PHOTO_DOTS) + LF
    out += align("left") + _labelled(member_fields(card), columns, enc)
    out += feed(2) + (PARTIAL_CUT if layout.partial_cut else FULL_CUT)
    return bytes(out)


def escpos_ticket(ticket: SoldTicket, layout: EscPosLayout | None = None) -> bytes:
    """The whole ticket as one ESC/POS byte string, ending with the cut."""
    layout = layout or EscPosLayout()
    columns = COLUMNS[layout.paper_mm]
    enc = layout.encoding
    out = _start(layout) + align("center") + bold(True) + size(2, 2)
    # Double width halves the line; wrap long park names rather than let the printer cut words.
    for line in textwrap.wrap(ticket.park_name, max(1, columns // 2)) or [""]:
        out += _text(line, enc) + LF
    out += size() + bold(False)
    for line in textwrap.wrap(ticket.product_name, columns) or [""]:
        out += _text(line, enc) + LF
    out += LF
    out += qr_code(ticket.code, module_dots=layout.qr_module_dots, error=layout.qr_error)
    out += bold(True) + size(1, 2) + _text(f"No. {ticket.serial}", enc) + LF + size() + bold(False)
    out += align("left") + LF
    out += _labelled(ticket_fields(ticket), columns, enc)
    out += align("center") + _text("Show the QR code at the gate.", enc) + LF
    out += feed(2) + (PARTIAL_CUT if layout.partial_cut else FULL_CUT)
    return bytes(out)
