"""What a server makes sure of at start: schema, permission catalogue, defaults; and the demo park."""

from __future__ import annotations

import logging
from datetime import date

from parkgate import native
from parkgate.server.domain.catalog import AttractionSpec, ParkSpec
from parkgate.server.domain.texts import DEFAULT_PARAMETERS, DEFAULT_REFUND_REASONS, default_dictionary
from parkgate.server.store import Database, apply_migrations
from parkgate.server.store import operators as operator_store
from parkgate.server.store import sales as sales_store
from parkgate.server.store import settings as settings_store
from parkgate.server.store.rows.sales import RefundReason

from .catalog import CatalogService

log = logging.getLogger(__name__)

DEMO_MARKER = "demo.loaded"


async def prepare_database(db: Database) -> None:
    """Migrate, then sync permissions, builtin roles, default parameters, texts, refund reasons, a signing key.

    Safe to run from every server at every start: each step only adds what is missing.
    """
    await apply_migrations(db.conninfo)
    async with db.transaction() as conn:
        await conn.execute("SELECT pg_advisory_xact_lock(7061726)")  # one server syncs at a time
        await operator_store.sync_permission_catalog(conn)
        await settings_store.ensure_parameters(conn, DEFAULT_PARAMETERS)
        await settings_store.ensure_dictionary(conn, default_dictionary())
        if not await sales_store.list_refund_reasons(conn):
            for reason in DEFAULT_REFUND_REASONS:
                await sales_store.put_refund_reason(conn, RefundReason(**reason))
        if await sales_store.active_signing_key(conn) is None:
            # The first key of an installation; later ones come from key rotation.
            key_id = 1 + await sales_store.highest_key_id(conn)
            key = native.SigningKey.generate(key_id)
            await sales_store.add_signing_key(conn, key.key_id, key.seed, key.public_key)
            log.info("created ticket signing key %d", key.key_id)


async def load_demo(db: Database) -> bool:
    """Load the demo installation (two parks, attractions, products) once; False if already loaded."""
    async with db.connection() as conn:
        if await settings_store.get_parameter(conn, DEMO_MARKER):
            return False
    catalog = CatalogService(db)
    parks = [
        ParkSpec(id="waterpark", name="Blue Lagoon Water Park", time_zone="Asia/Shanghai", currency="CNY",
                 capacity=8000, capacity_resume_margin=200),
        ParkSpec(id="landpark", name="Dragon Mountain Land Park", time_zone="Asia/Shanghai", currency="CNY",
                 capacity=15000, capacity_resume_margin=300),
    ]
    attractions = [
        ("waterpark", "wave-pool", "Wave Pool", 0),
        ("waterpark", "lazy-river", "Lazy River", 0),
        ("waterpark", "tornado-slide", "Tornado Slide", 3000),
        ("landpark", "dragon-coaster", "Dragon Coaster", 5000),
        ("landpark", "ferris-wheel", "Sky Wheel", 3000),
        ("landpark", "haunted-temple", "Haunted Temple", 2000),
    ]
    products = [
        ("wp-day", "waterpark", "Water Park Day Ticket", "single",
         {"validity": "visit_date", "entries_per_day": 1, "reentry_allowed": True}),
        ("wp-family4", "waterpark", "Water Park Family (4 persons)", "multi_person",
         {"validity": "visit_date", "person_count": 4, "entries_per_day": 1}),
        ("lp-day", "landpark", "Land Park Day Ticket", "single",
         # counts are per ticket over all its gates: the park gate plus one ride on each included attraction
         {"validity": "visit_date", "entries_per_day": 3, "attraction_ids": ["dragon-coaster", "ferris-wheel"]}),
        ("lp-night", "landpark", "Land Park Night Tour", "single",
         {"validity": "visit_date", "window_start_minute": 18 * 60, "window_end_minute": 22 * 60,
          "entries_per_day": 1}),
        ("lp-10x", "landpark", "Land Park 10-Entry Card", "count_card",
         {"validity": "days_from_first_use", "valid_days": 365, "entries_total": 10, "card_bound": True,
          "deposit": 2000}),
    ]
    for park in parks:
        await catalog.put_park(park)
    for park_id, attraction_id, name, price in attractions:
        await catalog.put_attraction(
            AttractionSpec(id=attraction_id, park_id=park_id, name=name, stored_value_price=price)
        )
    for product_id, park_id, name, kind, rules in products:
        await catalog.put_product(product_id=product_id, park_id=park_id, name=name, kind=kind, rules=rules,
                                  on_sale=True)
    # Prices in fen: weekday, weekend, holiday (peak days fall back to the holiday price).
    prices = {"wp-day": (18000, 22000, 26000), "wp-family4": (58000, 68000, 80000), "lp-day": (20000, 24000, 28000),
              "lp-night": (12000, 12000, 15000), "lp-10x": (150000, 150000, 150000)}
    for product_id, amounts in prices.items():
        for day_type, amount in zip(("weekday", "weekend", "holiday"), amounts, strict=True):
            await catalog.set_price(product_id, day_type, "", amount, "parkgate up --demo")
    for park in parks:
        for day, name in (("2027-01-01", "New Year"), ("2027-05-01", "Labour Day"), ("2027-10-01", "National Day")):
            await catalog.put_holiday(park.id, date.fromisoformat(day), "holiday", name)
    async with db.transaction() as conn:
        await settings_store.set_parameter(conn, DEMO_MARKER, True, updated_by="parkgate up --demo",
                                           description="The demo park was loaded into this installation")
    log.info("loaded the demo installation: %d parks, %d attractions, %d products",
             len(parks), len(attractions), len(products))
    return True
