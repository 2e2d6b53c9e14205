"""SQL for parks, attractions and products (the catalog; prices come with sales)."""

from __future__ import annotations

from typing import Any

from psycopg.types.json import Jsonb

from .database import Connection

_PARK = "id, name, time_zone, currency, capacity, capacity_resume_margin, disabled"


async def list_parks(conn: Connection, include_disabled: bool) -> list[dict[str, Any]]:
    cur = await conn.execute(f"SELECT {_PARK} FROM parks WHERE %s OR NOT disabled ORDER BY id", (include_disabled,))
    return await cur.fetchall()


async def get_park(conn: Connection, park_id: str) -> dict[str, Any] | None:
    return await (await conn.execute(f"SELECT {_PARK} FROM parks WHERE id = %s", (park_id,))).fetchone()


async def put_park(conn: Connection, park: dict[str, Any]) -> dict[str, Any]:
    row = await (
        await conn.execute(
            f"""INSERT INTO parks (id, name, time_zone, currency, capacity, capacity_resume_margin, disabled)
                VALUES (%(id)s, %(name)s, %(time_zone)s, %(currency)s, %(capacity)s, %(capacity_resume_margin)s,
                        %(disabled)s)
                ON CONFLICT (id) DO UPDATE SET name = excluded.name, time_zone = excluded.time_zone,
                    currency = excluded.currency, capacity = excluded.capacity,
                    capacity_resume_margin = excluded.capacity_resume_margin, disabled = excluded.disabled
                RETURNING {_PARK}""",
            park,
        )
    ).fetchone()
    assert row is not None
    return row


# Rows carry their park's currency: prices are minor units of it.
_ATTRACTION = "a.id, a.park_id, a.name, a.stored_value_price, a.disabled, pk.currency"


async def list_attractions(conn: Connection, park_id: str) -> list[dict[str, Any]]:
    cur = await conn.execute(
        f"""SELECT {_ATTRACTION} FROM attractions a JOIN parks pk ON pk.id = a.park_id
            WHERE (%s = '' OR a.park_id = %s) ORDER BY a.park_id, a.id""",
        (park_id, park_id),
    )
    return await cur.fetchall()


async def put_attraction(conn: Connection, attraction: dict[str, Any]) -> dict[str, Any]:
    row = await (
        await conn.execute(
            f"""WITH a AS (
                    INSERT INTO attractions (id, park_id, name, stored_value_price, disabled)
                    VALUES (%(id)s, %(park_id)s, %(name)s, %(stored_value_price)s, %(disabled)s)
                    ON CONFLICT (id) DO UPDATE SET name = excluded.name,
                        stored_value_price = excluded.stored_value_price, disabled = excluded.disabled
                    RETURNING *)
                SELECT {_ATTRACTION} FROM a JOIN parks pk ON pk.id = a.park_id""",
            attraction,
        )
    ).fetchone()
    assert row is not None
    return row


_PRODUCT = """p.id, p.park_id, v.name, v.kind, v.rules, p.current_version AS version, p.on_sale, p.updated_at,
    (SELECT currency FROM parks pk WHERE pk.id = p.park_id) AS currency"""


async def list_products(conn: Connection, park_id: str, include_off_sale: bool) -> list[dict[str, Any]]:
    cur = await conn.execute(
        f"""SELECT {_PRODUCT} FROM products p
            JOIN product_versions v ON v.product_id = p.id AND v.version = p.current_version
            WHERE (%s = '' OR p.park_id = %s) AND (%s OR p.on_sale) ORDER BY p.park_id, p.id""",
        (park_id, park_id, include_off_sale),
    )
    return await cur.fetchall()


async def get_product(conn: Connection, product_id: str, *, for_update: bool = False) -> dict[str, Any] | None:
    """The product with its current version's name, kind and rules."""
    lock = "FOR UPDATE OF p" if for_update else ""
    cur = await conn.execute(
        f"""SELECT {_PRODUCT} FROM products p
            JOIN product_versions v ON v.product_id = p.id AND v.version = p.current_version
            WHERE p.id = %s {lock}""",
        (product_id,),
    )
    return await cur.fetchone()


async def put_product(
    conn: Connection, *, product_id: str, park_id: str, name: str, kind: str, rules: dict[str, Any], on_sale: bool
) -> dict[str, Any]:
    """Create the product, or add a new version when its name, kind or rules changed."""
    current = await get_product(conn, product_id, for_update=True)
    if current is None:
        await conn.execute(
            "INSERT INTO products (id, park_id, current_version, on_sale) VALUES (%s, %s, 1, %s)",
            (product_id, park_id, on_sale),
        )
        version = 1
    else:
        version = current["version"]
        if (current["name"], current["kind"], current["rules"]) != (name, kind, rules):
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
