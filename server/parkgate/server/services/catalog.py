"""Parks, attractions, products, prices and the holiday calendar (S1, S6, S7, S14)."""

from __future__ import annotations

from datetime import date
from typing import Any

from parkgate.server.domain.catalog import (
    MAX_ATTRACTIONS_PER_PARK,
    AttractionSpec,
    ParkSpec,
    check_park,
    check_product_kind,
    check_slug,
)
from parkgate.server.domain.errors import Conflict, InvalidArgument, NotFound, Reason
from parkgate.server.domain.pricing import (
    CalendarEntry,
    Quote,
    check_calendar_entry,
    check_price_entry,
    resolve_price,
)
from parkgate.server.store import Database
from parkgate.server.store import catalog as store
from parkgate.server.store.database import Connection
from parkgate.server.store.rows.catalog import Attraction, Holiday, Park, Price, Product


async def price_on(conn: Connection, product: Product, day: date) -> Quote:
    """The price of a product on a date: the calendar and price rows, judged by domain.pricing."""
    holiday = await store.calendar_day(conn, product.park_id, day)
    entry = CalendarEntry(holiday.day_type, holiday.name) if holiday else None
    prices = (await store.prices_of(conn, [product.id]))[product.id]
    return resolve_price(product.id, day, entry, prices)


async def product_or_refuse(conn: Connection, product_id: str) -> Product:
    product = await store.get_product(conn, product_id)
    if product is None:
        raise NotFound(f"no product {product_id!r}", Reason.UNKNOWN_PRODUCT, product_id=product_id)
    return product


class CatalogService:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def list_parks(self, include_disabled: bool = False) -> list[Park]:
        async with self.db.connection() as conn:
            return await store.list_parks(conn, include_disabled)

    async def put_park(self, park: ParkSpec) -> Park:
        check_park(park)
        async with self.db.transaction() as conn:
            return await store.put_park(conn, park)

    async def list_attractions(self, park_id: str = "") -> list[Attraction]:
        async with self.db.connection() as conn:
            return await store.list_attractions(conn, park_id)

    async def put_attraction(self, attraction: AttractionSpec) -> Attraction:
        check_slug("attraction", attraction.id)
        if attraction.stored_value_price < 0:
            raise InvalidArgument("a price cannot be negative")
        async with self.db.transaction() as conn:
            if await store.get_park(conn, attraction.park_id) is None:
                raise InvalidArgument(f"no park {attraction.park_id!r}", Reason.UNKNOWN_PARK)
            slots = await store.attraction_slots(conn, attraction.park_id)
            if attraction.id not in slots and len(slots) >= MAX_ATTRACTIONS_PER_PARK:
                raise Conflict(f"park {attraction.park_id} has {MAX_ATTRACTIONS_PER_PARK} attractions already "
                               "(disable one and reuse it)", Reason.TOO_MANY_ATTRACTIONS)
            return await store.put_attraction(conn, attraction)

    async def list_products(self, park_id: str = "", include_off_sale: bool = False) -> list[Product]:
        async with self.db.connection() as conn:
            return await store.list_products(conn, park_id, include_off_sale)

    async def put_product(
        self, *, product_id: str, park_id: str, name: str, kind: str, rules: dict[str, Any], on_sale: bool
    ) -> Product:
        check_slug("product", product_id)
        check_product_kind(kind)
        if not name:
            raise InvalidArgument("a product needs a name")
        async with self.db.transaction() as conn:
            if await store.get_park(conn, park_id) is None:
                raise InvalidArgument(f"no park {park_id!r}", Reason.UNKNOWN_PARK)
            known = {a.id for a in await store.list_attractions(conn, park_id)}
            unknown = set(rules.get("attraction_ids", [])) - known
            if unknown:
                raise InvalidArgument(
                    f"attractions not in park {park_id}: {', '.join(sorted(unknown))}", Reason.UNKNOWN_ATTRACTION
                )
            return await store.put_product(
                conn, product_id=product_id, park_id=park_id, name=name, kind=kind, rules=rules, on_sale=on_sale
            )

    # --- prices and calendar (S7) ---------------------------------------------------

    async def set_price(self, product_id: str, day_type: str, peak_name: str, amount: int, by: str) -> Price:
        check_price_entry(day_type, peak_name, amount)
        async with self.db.transaction() as conn:
            await product_or_refuse(conn, product_id)
            return await store.put_price(conn, product_id, day_type, peak_name, amount, by)

    async def set_fare(self, attraction_id: str, day_type: str, amount: int) -> int:
        """S8: an attraction's stored-value fare on a day type (the gate pipeline reads it per batch)."""
        check_price_entry(day_type, "", amount)
        async with self.db.transaction() as conn:
            if not await store.put_fare(conn, attraction_id, day_type, amount):
                raise NotFound(f"no attraction {attraction_id!r}", Reason.UNKNOWN_ATTRACTION)
        return amount

    async def quote(self, product_id: str, day: date) -> tuple[Product, Quote]:
        async with self.db.connection() as conn:
            product = await product_or_refuse(conn, product_id)
            return product, await price_on(conn, product, day)

    async def list_holidays(self, park_id: str, first: date | None, last: date | None) -> list[Holiday]:
        async with self.db.connection() as conn:
            return await store.list_holidays(conn, park_id, first, last)

    async def put_holiday(self, park_id: str, day: date, day_type: str, name: str) -> Holiday:
        check_calendar_entry(day_type)
        async with self.db.transaction() as conn:
            if await store.get_park(conn, park_id) is None:
                raise NotFound(f"no park {park_id!r}", Reason.UNKNOWN_PARK)
            return await store.put_holiday(conn, park_id, day, day_type, name)

    async def delete_holiday(self, park_id: str, day: date) -> None:
        async with self.db.transaction() as conn:
            if not await store.delete_holiday(conn, park_id, day):
                raise NotFound(f"{day.isoformat()} is not in the calendar of park {park_id!r}")
