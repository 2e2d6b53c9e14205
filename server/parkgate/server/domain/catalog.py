"""Catalog rules: what makes a park, an attraction or a product acceptable."""

from __future__ import annotations

import re
from dataclasses import dataclass
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

from .errors import InvalidArgument

_SLUG = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")

#: Codes carry a park's attractions as a 64-bit set (docs/ticket-code.md).
MAX_ATTRACTIONS_PER_PARK = 64

PRODUCT_KINDS = ("single", "multi_person", "group", "member", "complimentary", "stored_value", "count_card")


@dataclass(frozen=True, slots=True)
class ParkSpec:
    """A park as an admin defines it (the server adds its number)."""

    id: str
    name: str
    time_zone: str
    currency: str
    capacity: int
    capacity_resume_margin: int
    disabled: bool = False


@dataclass(frozen=True, slots=True)
class AttractionSpec:
    """An attraction as an admin defines it (the server gives it its slot in the park)."""

    id: str
    park_id: str
    name: str
    stored_value_price: int  # minor units of the park's currency
    disabled: bool = False


def check_slug(what: str, value: str) -> None:
    if not _SLUG.match(value):
        raise InvalidArgument(f"{what} id {value!r}: use 1-63 lower-case letters, digits, '-' or '_'")


def check_time_zone(zone: str) -> ZoneInfo:
    """Parks name an IANA zone; calendar rules (weekday, holiday, night tour) are in its local time."""
    if zone not in available_timezones():
        raise InvalidArgument(f"time zone {zone!r} is not an IANA time zone (e.g. 'Asia/Shanghai')")
    try:
        return ZoneInfo(zone)
    except ZoneInfoNotFoundError as exc:  # pragma: no cover - listed but not loadable
        raise InvalidArgument(f"time zone {zone!r} cannot be loaded") from exc


def check_currency(code: str) -> None:
    if not re.fullmatch(r"[A-Z]{3}", code):
        raise InvalidArgument(f"currency {code!r}: use the ISO 4217 code, e.g. 'CNY'")


def check_park(park: ParkSpec) -> None:
    check_slug("park", park.id)
    if not park.name:
        raise InvalidArgument("a park needs a name")
    check_time_zone(park.time_zone)
    check_currency(park.currency)
    if park.capacity < 0 or park.capacity_resume_margin < 0:
        raise InvalidArgument("capacity and its resume margin cannot be negative")


def check_product_kind(kind: str) -> None:
    if kind not in PRODUCT_KINDS:
        raise InvalidArgument(f"product kind {kind!r}: one of {', '.join(PRODUCT_KINDS)}")
