"""Amounts as people type and read them ("120.50") and as the contract carries them (minor units).

Prices never travel as floats; the clients convert at the edge with the
currency's number of decimals (ISO 4217 minor unit).
"""

from __future__ import annotations

from decimal import Decimal, InvalidOperation

# Currencies whose minor unit is not 1/100 (ISO 4217); everything else has two decimals.
_DECIMALS = {"JPY": 0, "KRW": 0, "VND": 0, "ISK": 0, "CLP": 0, "BHD": 3, "KWD": 3, "OMR": 3, "JOD": 3, "TND": 3}


def decimals(currency: str) -> int:
    return _DECIMALS.get(currency.upper(), 2)


def parse_amount(text: str, currency: str) -> int:
    """'120.5' CNY -> 12050; refuses more decimals than the currency has, and negatives."""
    try:
        value = Decimal(text.strip())
    except InvalidOperation:
        raise ValueError(f"{text!r} is not an amount (e.g. 120.50)") from None
    minor = value.scaleb(decimals(currency))
    if minor != minor.to_integral_value() or value < 0:
        raise ValueError(f"{text!r}: a non-negative amount with at most {decimals(currency)} decimals in {currency}")
    return int(minor)


def format_amount(minor_units: int, currency: str) -> str:
    """12050 CNY -> '120.50 CNY'."""
    places = decimals(currency)
    value = Decimal(minor_units).scaleb(-places)
    return f"{value:.{places}f} {currency}".strip()
