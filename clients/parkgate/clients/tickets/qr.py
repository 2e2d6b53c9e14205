"""The QR symbol of a ticket code (segno), as PNG or SVG.

A version-1 ticket code is 153 characters of the QR alphanumeric alphabet
(Base45, docs/ticket-code.md), so it must be encoded in alphanumeric mode:
855 data bits, version 6 at error correction M (41 x 41 modules), the
default for print. In byte mode the same text would need version 8 at M:
a denser symbol that cheap scanners read worse. ``make_qr`` refuses to hand
out a symbol that did not come out in alphanumeric mode (a lower-case or
otherwise non-canonical code would), rather than silently printing a
bigger one that the gate will refuse anyway.
"""

from __future__ import annotations

import io
from typing import Literal

import segno

ErrorLevel = Literal["L", "M", "Q", "H"]

#: Modules of quiet zone around the symbol (ISO/IEC 18004 asks for 4).
QUIET_ZONE = 4


class QrError(ValueError):
    """The text cannot be printed as a compact alphanumeric QR code."""


def make_qr(code: str, error: ErrorLevel = "M") -> segno.QRCode:
    """The QR symbol for a ticket code; alphanumeric mode guaranteed, error level exactly ``error``."""
    if not code:
        raise QrError("empty code")
    # boost_error=False: the level is what the caller chose (docs/ticket-code.md: 6-M for print,
    # 5-L for screens, 8-Q for wristbands), not whatever still fits the version.
    try:
        symbol = segno.make_qr(code, error=error.lower(), mode="alphanumeric", boost_error=False)
    except ValueError as exc:  # not QR-alphanumeric text, or too long (segno.DataOverflowError)
        raise QrError(f"cannot encode the code as an alphanumeric QR symbol: {exc}") from exc
    if symbol.mode != "alphanumeric":
        raise QrError(f"code was encoded in {symbol.mode} mode, not alphanumeric")
    return symbol


def qr_png(code: str, *, scale: int = 8, error: ErrorLevel = "M") -> bytes:
    """PNG bytes: ``scale`` pixels per module, black on white, with the quiet zone."""
    buffer = io.BytesIO()
    make_qr(code, error).save(buffer, kind="png", scale=scale, border=QUIET_ZONE)
    return buffer.getvalue()


def qr_svg(code: str, *, module_mm: float = 0.5, error: ErrorLevel = "M") -> bytes:
    """SVG bytes sized in millimetres (``module_mm`` per module), for print layouts."""
    buffer = io.BytesIO()
    make_qr(code, error).save(buffer, kind="svg", scale=module_mm, unit="mm", border=QUIET_ZONE, xmldecl=True)
    return buffer.getvalue()
