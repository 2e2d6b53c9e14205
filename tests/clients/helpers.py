"""A sold ticket with a real signed code, for the ticket and printer tests."""

from __future__ import annotations

from datetime import UTC, date, datetime

from parkgate import native
from parkgate.clients.tickets import SoldTicket

KEY = native.SigningKey.generate(7)
KEYRING = native.Keyring()
KEYRING.add_signing_key(KEY)
PUBLIC_KEYRING = KEYRING.public()

VALID_FROM = int(datetime(2025, 7, 1, tzinfo=UTC).timestamp())
VALID_UNTIL = VALID_FROM + 86400
NOW = VALID_FROM + 3600


def signed_code(serial: int = 4242) -> str:
    return native.issue(
        KEY, serial=serial, product_id=3, park_id=1, valid_from=VALID_FROM, valid_until=VALID_UNTIL, persons=2
    )


def sold_ticket(park_name: str = "Sunny Land Park", product_name: str = "Adult day ticket") -> SoldTicket:
    return SoldTicket(
        serial=4242,
        code=signed_code(4242),
        product_name=product_name,
        park_name=park_name,
        valid_from=date(2025, 7, 1),
        valid_until=date(2025, 7, 1),
        persons=2,
        price_minor=25600,
        currency="CNY",
        order_id="ord-20250701-0001",
        sold_at=datetime(2025, 7, 1, 9, 30, tzinfo=UTC),
        operator="alice",
        window="W3",
        visit_date=date(2025, 7, 1),
    )


def verifies(code: str) -> bool:
    result = native.verify(code, PUBLIC_KEYRING, now=NOW, utc_offset=28800, park_id=1)
    return bool(result.ok)


def qr_payload(data: bytes) -> bytes:
    """The data of the GS ( k store command (cn 49, fn 80, m 48) in an ESC/POS stream."""
    start = data.index(b"\x1d(k")
    while True:
        p_l, p_h, cn, fn = data[start + 3 : start + 7]
        length = p_l | (p_h << 8)
        if (cn, fn) == (49, 80):
            return data[start + 8 : start + 5 + length]
        start = data.index(b"\x1d(k", start + 5 + length)
