"""SQL for parks, attractions, products, their prices and the holiday calendar."""

from __future__ import annotations

from datetime import date
from typing import Any

from psycopg.types.json import Jsonb

from parkgate.server.domain.catalog import AttractionSpec, ParkSpec

from .database import Connection
from .fetch import fetch_all, fetch_one, params_of
from .rows.catalog import Attraction, Holiday, Park, Price, Product

_PARK = "id, name, time_zone, currency, capacity, capacity_resume_margin, disabled, number"


async def list_parks(conn: Connection, include_disabled: bool) -> list[Park]:
    return await fetch_all(conn, Park, f"SELECT {_PARK} FROM parks WHERE %s OR NOT disabled ORDER BY id",
                           (include_disabled,))


async def get_park(conn: Connection, park_id: str) -> Park | None:
    return await fetch_one(conn, Park, f"SELECT {_PARK} FROM parks WHERE id = %s", (park_id,))


async def put_park(conn: Connection, park: ParkSpec) -> Park:
    row = await fetch_one(
        conn, Park,
        f"""INSERT INTO parks (id, name, time_zone, currency, capacity, capacity_resume_margin, disabled)
            VALUES (%(id)s, %(name)s, %(time_zone)s, %(currency)s, %(capacity)s, %(capacity_resume_margin)s,
                    %(disabled)s)
            ON CONFLICT (id) DO UPDATE SET name = excluded.name, time_zone = excluded.time_zone,
                currency = excluded.currency, capacity = excluded.capacity,
                capacity_resume_margin = excluded.capacity_resume_margin, disabled = excluded.disabled
            RETURNING {_PARK}""",
        params_of(park),
    )
    assert row is not None
    return row


# Rows carry their park's currency: prices are minor units of it.
_ATTRACTION = "a.id, a.park_id, a.name, a.stored_value_price, a.disabled, a.slot, pk.currency"


async def list_attractions(conn: Connection, park_id: str) -> list[Attraction]:
    return await fetch_all(
        conn, Attraction,
        f"""SELECT {_ATTRACTION} FROM attractions a JOIN parks pk ON pk.id = a.park_id
            WHERE (%s = '' OR a.park_id = %s) ORDER BY a.park_id, a.id""",
        (park_id, park_id),
    )


async def put_attraction(conn: Connection, attraction: AttractionSpec) -> Attraction:
    row = await fetch_one(
        conn, Attraction,
        f"""WITH a AS (
                INSERT INTO attractions (id, park_id, name, stored_value_price, disabled, slot)
                VALUES (%(id)s, %(park_id)s, %(name)s, %(stored_value_price)s, %(disabled)s,
                        (SELECT coalesce(max(slot), 0) + 1 FROM attractions WHERE park_id = %(park_id)s))
                ON CONFLICT (id) DO UPDATE SET name = excluded.name,
                    stored_value_price = excluded.stored_value_price, disabled = excluded.disabled
                RETURNING *)
            SELECT {_ATTRACTION} FROM a JOIN parks pk ON pk.id = a.park_id""",
        params_of(attraction),
    )
    assert row is not None
    return row


_PRODUCT = """p.id, p.park_id, v.name, v.kind, v.rules, p.current_version AS version, p.on_sale, p.updated_at, p.number,
    (SELECT currency FROM parks pk WHERE pk.id = p.park_id) AS currency"""


async def list_products(conn: Connection, park_id: str, include_off_sale: bool) -> list[Product]:
    return await fetch_all(
        conn, Product,
        f"""SELECT {_PRODUCT} FROM products p
            JOIN product_versions v ON v.product_id = p.id AND v.version = p.current_version
            WHERE (%s = '' OR p.park_id = %s) AND (%s OR p.on_sale) ORDER BY p.park_id, p.id""",
        (park_id, park_id, include_off_sale),
    )


async def get_product(conn: Connection, product_id: str, *, for_update: bool = False) -> Product | None:
    """The product with its current version's name, kind and rules."""
    lock = "FOR UPDATE OF p" if for_update else ""
    return await fetch_one(
        conn, Product,
        f"""SELECT {_PRODUCT} FROM products p
            JOIN product_versions v ON v.product_id = p.id AND v.version = p.current_version
            WHERE p.id = %s {lock}""",
        (product_id,),
    )


async def put_product(
    conn: Connection, *, product_id: str, park_id: str, name: str, kind: str, rules: dict[str, Any], on_sale: bool
) -> Product:
    """Create the product, or add a new version when its name, kind or rules changed."""
    current = await get_product(conn, product_id, for_update=True)
    if current is None:
        await conn.execute(
            "INSERT INTO products (id, park_id, current_version, on_sale) VALUES (%s, %s, 1, %s)",
            (product_id, park_id, on_sale),
        )
        version = 1
    else:
        version = current.version
        if (current.name, current.kind, current.rules) != (name, kind, rules):
            version += 1
        await conn.execute(
            "UPDATE products SET current_version = %s, on_sale = %s, updated_at = now() WHERE id = %s",
            (version, on_sale, product_id),
        )
    await conn.execute(
        """INSERT INTO product_versions (product_id, version, name, kind, rules) VALUES (%s, %s, %s, %s, %s)
           ON CONFLICT DO NOTHING""",
        (product_id, version, name, kind, Jsonb(rules)),
    )
    row = await get_product(conn, product_id)
    assert row is not None
    return row


async def attraction_slots(conn: Connection, park_id: str) -> dict[str, int]:
    """Attraction id -> its slot in the park (what a code's attraction set is made of)."""
    cur = await conn.execute("SELECT id, slot FROM attractions WHERE park_id = %s", (park_id,))
    return {row["id"]: row["slot"] for row in await cur.fetchall()}


# --- prices and the holiday calendar (S7) -----------------------------------

async def put_price(
    conn: Connection, product_id: str, day_type: str, peak_name: str, amount: int, updated_by: str
) -> Price:
    row = await fetch_one(
        conn, Price,
        """INSERT INTO prices (product_id, day_type, peak_name, amount, updated_by)
           VALUES (%s, %s, %s, %s, %s)
           ON CONFLICT (product_id, day_type, peak_name) DO UPDATE
               SET amount = excluded.amount, updated_at = now(), updated_by = excluded.updated_by
           RETURNING product_id, day_type, peak_name, amount,
               (SELECT pk.currency FROM products p JOIN parks pk ON pk.id = p.park_id
                WHERE p.id = prices.product_id) AS currency""",
        (product_id, day_type, peak_name, amount, updated_by),
    )
    assert row is not None
    return row


async def prices_of(conn: Connection, product_ids: list[str]) -> dict[str, dict[tuple[str, str], int]]:
    """Every price of these products: product id -> {(day_type, peak_name): amount}."""
    cur = await conn.execute(
        "SELECT product_id, day_type, peak_name, amount FROM prices WHERE product_id = ANY(%s)", (product_ids,)
    )
    table: dict[str, dict[tuple[str, str], int]] = {pid: {} for pid in product_ids}
    for row in await cur.fetchall():
        table[row["product_id"]][(row["day_type"], row["peak_name"])] = row["amount"]
    return table


async def calendar_day(conn: Connection, park_id: str, day: date) -> Holiday | None:
    return await fetch_one(
        conn, Holiday, "SELECT park_id, day, day_type, name FROM holidays WHERE park_id = %s AND day = %s",
        (park_id, day),
    )


async def list_holidays(conn: Connection, park_id: str, first: date | None, last: date | None) -> list[Holiday]:
    return await fetch_all(
        conn, Holiday,
        """SELECT park_id, day, day_type, name FROM holidays
           WHERE (%(park)s = '' OR park_id = %(park)s)
             AND (%(first)s::date IS NULL OR day >= %(first)s) AND (%(last)s::date IS NULL OR day <= %(last)s)
           ORDER BY park_id, day""",
        {"park": park_id, "first": first, "last": last},
    )


async def put_holiday(conn: Connection, park_id: str, day: date, day_type: str, name: str) -> Holiday:
    row = await fetch_one(
        conn, Holiday,
        """INSERT INTO holidays (park_id, day, day_type, name) VALUES (%s, %s, %s, %s)
           ON CONFLICT (park_id, day) DO UPDATE SET day_type = excluded.day_type, name = excluded.name
           RETURNING park_id, day, day_type, name""",
        (park_id, day, day_type, name),
    )
    assert row is not None
    return row


async def delete_holiday(conn: Connection, park_id: str, day: date) -> bool:
    cur = await conn.execute("DELETE FROM holidays WHERE park_id = %s AND day = %s", (park_id, day))
    return cur.rowcount > 0


async def put_fare(conn: Connection, attraction_id: str, day_type: str, amount: int) -> bool:
    """Set an attraction's stored-value fare for a day type; False when there is no such attraction."""
    cur = await conn.execute(
        """INSERT INTO attraction_fares (attraction_id, day_type, amount)
           SELECT id, %s, %s FROM attractions WHERE id = %s
           ON CONFLICT (attraction_id, day_type) DO UPDATE SET amount = excluded.amount""",
        (day_type, amount, attraction_id),
    )
    return cur.rowcount == 1
