"""Parks, attractions and products (S1, S6, S14)."""

from __future__ import annotations

from typing import Any

from parkgate.domain.catalog import check_park, check_product_kind, check_slug
from parkgate.domain.errors import InvalidArgument, Reason
from parkgate.store import Database
from parkgate.store import catalog as store


class CatalogService:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def list_parks(self, include_disabled: bool = False) -> list[dict[str, Any]]:
        async with self.db.connection() as conn:
            return await store.list_parks(conn, include_disabled)

    async def put_park(self, park: dict[str, Any]) -> dict[str, Any]:
        check_park(park)
        async with self.db.transaction() as conn:
            return await store.put_park(conn, park)

    async def list_attractions(self, park_id: str = "") -> list[dict[str, Any]]:
        async with self.db.connection() as conn:
            return await store.list_attractions(conn, park_id)

    async def put_attraction(self, attraction: dict[str, Any]) -> dict[str, Any]:
        check_slug("attraction", attraction["id"])
        if attraction["stored_value_price"] < 0:
            raise InvalidArgument("a price cannot be negative")
        async with self.db.transaction() as conn:
            if await store.get_park(conn, attraction["park_id"]) is None:
                raise InvalidArgument(f"no park {attraction['park_id']!r}", Reason.UNKNOWN_PARK)
            return await store.put_attraction(conn, attraction)

    async def list_products(self, park_id: str = "", include_off_sale: bool = False) -> list[dict[str, Any]]:
        async with self.db.connection() as conn:
            return await store.list_products(conn, park_id, include_off_sale)

    async def put_product(
        self, *, product_id: str, park_id: str, name: str, kind: str, rules: dict[str, Any], on_sale: bool
    ) -> dict[str, Any]:
        check_slug("product", product_id)
        check_product_kind(kind)
        if not name:
            raise InvalidArgument("a product needs a name")
        async with self.db.transaction() as conn:
            if await store.get_park(conn, park_id) is None:
                raise InvalidArgument(f"no park {park_id!r}", Reason.UNKNOWN_PARK)
            known = {a["id"] for a in await store.list_attractions(conn, park_id)}
            unknown = set(rules.get("attraction_ids", [])) - known
            if unknown:
                raise InvalidArgument(
                    f"attractions not in park {park_id}: {', '.join(sorted(unknown))}", Reason.UNKNOWN_ATTRACTION
                )
            return await store.put_product(
                conn, product_id=product_id, park_id=park_id, name=name, kind=kind, rules=rules, on_sale=on_sale
            )
