"""Ticket outputs: the QR symbol read back by a real decoder (zxing-cpp), the PDF, ESC/POS bytes."""

from __future__ import annotations

import io
import xml.etree.ElementTree as ET

import pypdf
import pytest
import zxingcpp
from PIL import Image

from parkgate.clients.tickets import (
    EscPosLayout,
    FontSet,
    QrError,
    escpos_ticket,
    format_money,
    make_qr,
    qr_code,
    qr_png,
    qr_svg,
    ticket_pdf,
)
from parkgate.clients.tickets.escpos import FULL_CUT, INIT, PARTIAL_CUT
from tests.clients.helpers import qr_payload, signed_code, sold_ticket, verifies


def decode_qr(image: Image.Image) -> str:
    results = zxingcpp.read_barcodes(image, formats=zxingcpp.BarcodeFormat.QRCode)
    assert len(results) == 1, results
    return results[0].text


def test_a_ticket_code_is_a_version_6_m_alphanumeric_symbol() -> None:
    symbol = make_qr(signed_code())
    assert (symbol.designator, symbol.mode) == ("6-M", "alphanumeric")
    assert make_qr(signed_code(), "L").designator == "5-L"  # screens
    assert make_qr(signed_code(), "Q").designator == "8-Q"  # wristbands


def test_the_png_decodes_with_zxing_to_a_code_that_verifies() -> None:
    code = signed_code(777)
    image = Image.open(io.BytesIO(qr_png(code, scale=4)))
    decoded = decode_qr(image)
    assert decoded == code
    assert verifies(decoded)


def test_the_png_still_decodes_at_the_smallest_print_scale() -> None:
    code = signed_code(778)
    image = Image.open(io.BytesIO(qr_png(code, scale=2)))
    assert image.size == (2 * (41 + 8), 2 * (41 + 8))
    assert decode_qr(image) == code


def test_the_svg_is_sized_in_millimetres() -> None:
    root = ET.fromstring(qr_svg(signed_code(), module_mm=0.5))
    assert root.tag.endswith("svg")
    assert root.get("width") == "24.5mm"  # (41 + 2 * 4 quiet zone) * 0.5 mm


def test_a_non_canonical_code_is_refused_rather_than_printed_in_byte_mode() -> None:
    with pytest.raises(QrError):
        make_qr(signed_code().lower())
    with pytest.raises(QrError):
        qr_png("")


@pytest.mark.parametrize(
    ("minor", "currency", "text"),
    [
        (25600, "CNY", "CNY 256.00"),
        (5, "usd", "USD 0.05"),
        (-1250, "EUR", "EUR -12.50"),
        (123456789, "CNY", "CNY 1,234,567.89"),
        (1500, "JPY", "JPY 1,500"),
        (12345, "KWD", "KWD 12.345"),
    ],
)
def test_money_is_formatted_from_minor_units_exactly(minor: int, currency: str, text: str) -> None:
    assert format_money(minor, currency) == text


def _pdf(data: bytes) -> pypdf.PdfReader:
    assert data.startswith(b"%PDF-")
    return pypdf.PdfReader(io.BytesIO(data))


def test_the_pdf_is_one_page_with_the_text_and_a_qr_that_verifies() -> None:
    ticket = sold_ticket(park_name="欢乐水世界 Happy Water World", product_name="成人票 Adult")
    rendered = ticket_pdf(ticket)
    reader = _pdf(rendered.data)
    assert len(reader.pages) == 1
    text = reader.pages[0].extract_text()
    for expected in (
        "欢乐水世界 Happy Water World",
        "成人票 Adult",
        "No. 4242",
        "CNY 256.00",
        "ord-20250701-0001",
    ):
        assert expected in text
    assert rendered.notes == ()  # DejaVu + a CJK font are installed (fonts-wqy-microhei)
    images = reader.pages[0].images
    assert len(images) == 1
    decoded = decode_qr(images[0].image)
    assert decoded == ticket.code
    assert verifies(decoded)


def test_the_pdf_without_a_cjk_font_prints_question_marks_and_says_what_to_install() -> None:
    latin_only = FontSet(FontSet.find().regular, FontSet.find().bold, None)
    rendered = ticket_pdf(sold_ticket(park_name="欢乐 Park"), fonts=latin_only)
    assert "?? Park" in _pdf(rendered.data).pages[0].extract_text()
    assert any("fonts-wqy-microhei" in note for note in rendered.notes)


def test_the_pdf_without_any_truetype_font_falls_back_to_helvetica() -> None:
    rendered = ticket_pdf(sold_ticket(park_name="Parc Été 欢乐"), fonts=FontSet(None, None, None))
    reader = _pdf(rendered.data)
    assert len(reader.pages) == 1
    assert "Parc Été ??" in reader.pages[0].extract_text()
    assert any("fonts-dejavu-core" in note for note in rendered.notes)


def test_escpos_carries_the_code_in_the_native_qr_commands_and_ends_with_a_cut() -> None:
    ticket = sold_ticket()
    data = escpos_ticket(ticket)
    assert data.startswith(INIT)
    assert data.endswith(PARTIAL_CUT)
    assert qr_payload(data) == ticket.code.encode()
    assert qr_code(ticket.code) in data
    assert b"\x1d(k\x04\x001A2\x00" in data  # model 2
    assert b"\x1d(k\x03\x001E1" in data  # error correction M
    assert b"\x1d(k\x03\x001Q0" in data  # print
    assert b"CNY 256.00" in data


@pytest.mark.parametrize("paper_mm", [58, 80])
def test_escpos_text_lines_fit_the_paper(paper_mm: int) -> None:
    ticket = sold_ticket(product_name="Family ticket two adults two children with lunch and parking")
    data = escpos_ticket(ticket, EscPosLayout(paper_mm=paper_mm, partial_cut=False))
    assert data.endswith(FULL_CUT)
    columns = {58: 32, 80: 48}[paper_mm]
    text = data.split(b"\x1d(k")[-1]  # after the QR commands: plain-size detail lines
    for line in text.split(b"\n")[1:-1]:
        printable = bytes(b for b in line if b >= 0x20)
        assert len(printable) <= columns + 8, line  # + the escape sequences' printable bytes


def test_escpos_in_chinese_mode_encodes_gb18030() -> None:
    data = escpos_ticket(sold_ticket(park_name="欢乐水世界"), EscPosLayout(encoding="gb18030"))
    assert data.startswith(INIT + b"\x1c&")
    assert "欢乐水世界".encode("gb18030") in data
    latin = escpos_ticket(sold_ticket(park_name="欢乐水世界"))
    assert b"?????" in latin
