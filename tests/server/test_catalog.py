"""Catalog through the wire: money carries its park's currency, product changes make versions."""

from __future__ import annotations

from parkgate.v1 import catalog_pb2, common_pb2
from tests.fixtures.server import RunningServer


async def test_attractions_and_products_carry_their_park_currency_and_versions(
    parkgate_server: RunningServer,
) -> None:
    admin = await parkgate_server.admin()
    md = admin.metadata
    await admin.catalog.PutPark(catalog_pb2.PutParkRequest(park=catalog_pb2.Park(
        id="museum", name="City Museum", time_zone="Asia/Tokyo", currency="JPY")), metadata=md)
    put = await admin.catalog.PutAttraction(catalog_pb2.PutAttractionRequest(attraction=catalog_pb2.Attraction(
        id="dino-hall", park_id="museum", name="Dinosaur Hall",
        stored_value_price=common_pb2.Money(minor_units=500, currency="JPY"))), metadata=md)
    assert put.stored_value_price == common_pb2.Money(minor_units=500, currency="JPY")
    listed = await admin.catalog.ListAttractions(catalog_pb2.ListAttractionsRequest(park_id="museum"), metadata=md)
    assert [a.stored_value_price.currency for a in listed.attractions] == ["JPY"]

    rules = catalog_pb2.ProductRules(validity=catalog_pb2.VISIT_DATE, attraction_ids=["dino-hall"],
                                     deposit=common_pb2.Money(minor_units=1000, currency="JPY"))
    product = catalog_pb2.Product(id="museum-day", park_id="museum", name="Day pass", kind=catalog_pb2.SINGLE,
                                  rules=rules, on_sale=True)
    first = await admin.catalog.PutProduct(catalog_pb2.PutProductRequest(product=product), metadata=md)
    assert first.version == 1 and first.rules == rules
    same = await admin.catalog.PutProduct(catalog_pb2.PutProductRequest(product=product), metadata=md)
    assert same.version == 1  # nothing changed: no new version
    product.rules.entries_per_day = 2
    changed = await admin.catalog.PutProduct(catalog_pb2.PutProductRequest(product=product), metadata=md)
    assert changed.version == 2 and changed.rules.entries_per_day == 2
    listed_products = await admin.catalog.ListProducts(catalog_pb2.ListProductsRequest(park_id="museum"), metadata=md)
    assert [(p.id, p.version, p.rules.deposit.currency) for p in listed_products.products] == [
        ("museum-day", 2, "JPY")
    ]
