"""What a product costs on a date (S7), decided in this one place.

A date's *day type* comes from the park's holiday calendar first (a holiday,
or a named peak period), then from the weekday in the park's own calendar
(Saturday and Sunday are the weekend). The price is looked up for that day
type; a peak day without a price of its own falls back to the generic peak
price and then to the holiday price, because a peak period is a kind of
holiday to a park. Nothing else falls back: a weekend without a weekend
price is an error (PRICE_NOT_SET), never silently the weekday price, so a park
that forgot to set a price finds out at the first sale, not at the audit.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date

from .errors import InvalidArgument, Reason

DAY_TYPES = ("weekday", "weekend", "holiday", "peak")
CALENDAR_DAY_TYPES = ("holiday", "peak")

#: (day_type, peak_name) -> price in minor units
PriceTable = Mapping[tuple[str, str], int]


@dataclass(frozen=True, slots=True)
class CalendarEntry:
    """A holiday or peak day of a park's calendar."""

    day_type: str  # "holiday" or "peak"
    name: str = ""


@dataclass(frozen=True, slots=True)
class DayKind:
    """The day type a date has in a park, with the peak period's name."""

    day_type: str
    peak_name: str = ""


@dataclass(frozen=True, slots=True)
class Quote:
    unit_price: int
    day: DayKind

    def total(self, quantity: int) -> int:
        return self.unit_price * quantity


def day_kind(day: date, calendar_entry: CalendarEntry | None) -> DayKind:
    """The day type of ``day`` (a date in the park's own time zone)."""
    if calendar_entry is not None:
        if calendar_entry.day_type == "peak":
            return DayKind("peak", calendar_entry.name)
        return DayKind("holiday")
    return DayKind("weekend" if day.isoweekday() >= 6 else "weekday")


def _candidates(kind: DayKind) -> list[tuple[str, str]]:
    if kind.day_type == "peak":
        named = [("peak", kind.peak_name)] if kind.peak_name else []
        return [*named, ("peak", ""), ("holiday", "")]
    return [(kind.day_type, "")]


def resolve_price(product_id: str, day: date, calendar_entry: CalendarEntry | None, prices: PriceTable) -> Quote:
    """The unit price of a product on a date; PRICE_NOT_SET when the park set none for its day type."""
    kind = day_kind(day, calendar_entry)
    for key in _candidates(kind):
        if key in prices:
            return Quote(prices[key], kind)
    label = f"{kind.day_type} ({kind.peak_name})" if kind.peak_name else kind.day_type
    raise InvalidArgument(
        f"no {label} price is set for product {product_id!r} on {day.isoformat()}", Reason.PRICE_NOT_SET,
        product_id=product_id, date=day.isoformat(), day_type=kind.day_type,
    )


def check_price_entry(day_type: str, peak_name: str, amount: int) -> None:
    if day_type not in DAY_TYPES:
        raise InvalidArgument(f"day type {day_type!r}: one of {', '.join(DAY_TYPES)}")
    if peak_name and day_type != "peak":
        raise InvalidArgument("only a peak price names a peak period")
    if amount < 0:
        raise InvalidArgument("a price cannot be negative")


def check_calendar_entry(day_type: str) -> None:
    if day_type not in CALENDAR_DAY_TYPES:
        raise InvalidArgument(f"a calendar day is a holiday or a peak day, not {day_type!r}")
