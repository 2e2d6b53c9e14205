"""Amounts as people type and read them ("120.50") and as the contract carries them (minor units).

Prices never travel as floats; the clients convert at the edge with the
currency's number of decimals (ISO 4217 minor unit).
"""

from __future__ import annotations

from decimal import Decimal, InvalidOperation

#: ISO 4217 currencies whose minor unit is not 1/100 (the rest of the world's park currencies are).
_EXPONENTS: dict[str, int] = {
    "JPY": 0, "KRW": 0, "VND": 0, "CLP": 0, "ISK": 0, "UGX": 0, "XAF": 0, "XOF": 0, "PYG": 0,
    "BHD": 3, "IQD": 3, "JOD": 3, "KWD": 3, "LYD": 3, "OMR": 3, "TND": 3,
}  # fmt: skip


def decimals(currency: str) -> int:
    return _EXPONENTS.get(currency.upper(), 2)


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


def format_money(minor: int, currency: str) -> str:
    """``12800, "CNY"`` -> ``"CNY 128.00"``; exact integer arithmetic, no float."""
    exponent = decimals(currency)
    sign = "-" if minor < 0 else ""
    units, cents = divmod(abs(minor), 10**exponent)
    amount = f"{units:,}" + (f".{cents:0{exponent}d}" if exponent else "")
    return f"{currency.upper()} {sign}{amount}"
