"""Rows of parks, attractions, products, prices and the holiday calendar."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from typing import Any


@dataclass(frozen=True, slots=True)
class Park:
    id: str
    name: str
    time_zone: str
    currency: str
    capacity: int
    capacity_resume_margin: int
    disabled: bool
    number: int


@dataclass(frozen=True, slots=True)
class Attraction:
    id: str
    park_id: str
    name: str
    stored_value_price: int  # minor units of the park's currency
    disabled: bool
    slot: int
    currency: str  # the park's


@dataclass(frozen=True, slots=True)
class Product:
    """A product with its current version's name, kind and rules."""

    id: str
    park_id: str
    name: str
    kind: str
    rules: dict[str, Any]  # JSON with the contract's field names (see rpc.convert)
    version: int
    on_sale: bool
    updated_at: datetime
    number: int
    currency: str  # the park's


@dataclass(frozen=True, slots=True)
class Price:
    product_id: str
    day_type: str
    peak_name: str
    amount: int  # minor units
    currency: str  # the product's park's


@dataclass(frozen=True, slots=True)
class Holiday:
    """A holiday or peak day of a park's calendar."""

    park_id: str
    day: date
    day_type: str
    name: str
