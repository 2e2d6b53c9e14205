"""Stored value at a site edge deciding alone (S8 offline), on real components: a real PostgreSQL, a real
server, a real ``parkgate site run`` process and a gate (the gate agent's own link) behind it.

Read as a runbook:

* the edge follows the feed: each stored-value card's balance and the attractions' fares;
* while the cluster is away the edge charges a card at an attraction gate, durably before the gate opens,
  as long as what it charged the card alone stays within ``offline_stored_value_limit``; beyond the limit
  the card is refused OFFLINE_CHARGE_LIMIT, beyond the balance it knows INSUFFICIENT_BALANCE;
* the card was charged at the cluster meanwhile (the edge's balance is stale): the edge's charge stands,
  and when the cluster is back the forwarded charges are applied exactly once; a charge beyond what was
  left shows as a negative balance (the debt), nothing acknowledged is lost;
* once the feed shows the cluster took them, the edge stops counting the charges against the limit.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from parkgate.clients.gate.link import GateLink, Hello
from parkgate.v1 import admin_pb2, catalog_pb2, common_pb2, sales_pb2
from tests.fixtures.park import PRICE, TestPark, open_park, rid

from .edge_rig import Cluster, Edge, register, until

PARK = "svpark"
EDGE_ID = "sv-edge"
GATE_ID = "sv-coaster-edge"
FARE = 300
LIMIT = 700


def cny(minor: int) -> common_pb2.Money:
    return common_pb2.Money(minor_units=minor, currency="CNY")


@pytest.fixture(scope="module")
async def park(cluster: Cluster, module_dsn: str) -> TestPark:
    assert cluster.running is not None
    p = await open_park([cluster.running], module_dsn, PARK, "Purse Park", time_zone="UTC")
    md = p.admin.metadata
    await p.admin.catalog.PutAttraction(catalog_pb2.PutAttractionRequest(attraction=catalog_pb2.Attraction(
        id="coaster", park_id=PARK, name="coaster", stored_value_price=cny(FARE))), metadata=md)
    await p.admin.catalog.PutProduct(catalog_pb2.PutProductRequest(product=catalog_pb2.Product(
        id="purse", park_id=PARK, name="purse", kind=catalog_pb2.STORED_VALUE, on_sale=True,
        rules=catalog_pb2.ProductRules(validity=catalog_pb2.DAYS_FROM_FIRST_USE, valid_days=365,
                                       card_bound=True))), metadata=md)
    for day_type in (catalog_pb2.WEEKDAY, catalog_pb2.WEEKEND, catalog_pb2.HOLIDAY):
        await p.admin.catalog.SetPrice(catalog_pb2.SetPriceRequest(entry=catalog_pb2.PriceEntry(
            product_id="purse", day_type=day_type, price=cny(PRICE))), metadata=md)
    await register(p, EDGE_ID, admin_pb2.SITE_EDGE)
    await register(p, GATE_ID, admin_pb2.GATE, attraction="coaster")
    return p


async def top_up(park: TestPark, uid: str, amount: int) -> None:
    await park.seller.sales.TopUpCard(sales_pb2.TopUpCardRequest(
        request_id=rid(), card_uid=uid, payment=sales_pb2.Payment(method=common_pb2.CASH, amount=cny(amount))),
        metadata=park.seller.metadata)


def balance(park: TestPark, uid: str) -> int:
    return int(park.sql("SELECT t.balance FROM tickets t JOIN card_bindings b ON b.ticket_id = t.id "
                        "WHERE b.card_uid = %s", uid)[0][0])


async def test_the_edge_charges_cards_alone_within_its_limit_and_the_cluster_takes_each_charge_once(
        park: TestPark, cluster: Cluster, tmp_path: Path) -> None:
    plenty, short = "04C5000001", "04C5000002"
    for uid, amount in ((plenty, 1000), (short, 500)):
        await park.sell("purse", cards=[uid])
        await top_up(park, uid, amount)
    edge = Edge(tmp_path / "edge", [cluster.address], EDGE_ID, park.secrets[EDGE_ID],
                extra=f"offline_stored_value_limit = {LIMIT}")
    edge.start()
    try:
        await edge.ready()
        await until(lambda: edge.store_value("SELECT count(*) FROM cards WHERE card_uid IN (?, ?)", plenty, short)
                    == 2, "the cards in the edge's feed")
        # The edge goes away; meanwhile the short card pays a ride at a gate of the cluster: 500 -> 200.
        edge.stop()
        cluster_gate = GateLink(cluster.address, Hello("sv-coaster-central",
                                                       await park.register_gate("sv-coaster-central",
                                                                                attraction="coaster"), "in", PARK))
        await cluster_gate.open()
        try:
            ride = await cluster_gate.validate(rid(), card_uid=short, timeout=10)
            assert (ride.allow, ride.balance) == (True, 200)
        finally:
            await cluster_gate.close()

        # The cluster goes away; the edge comes back knowing 1000 and 500.
        await cluster.stop()
        edge.start()
        await edge.ready(feed=False)
        gate = GateLink(edge.address, Hello(GATE_ID, park.secrets[GATE_ID], "in", PARK))
        await gate.open()
        try:
            first_id = rid()
            first = await gate.validate(first_id, card_uid=plenty, timeout=10)
            assert (first.allow, first.reason, first.balance) == (True, "OK", 1000 - FARE)
            again = await gate.validate(first_id, card_uid=plenty, timeout=10)  # a retry: the same, no new charge
            assert (again.allow, again.balance) == (True, 1000 - FARE)
            second = await gate.validate(rid(), card_uid=plenty, timeout=10)
            assert (second.allow, second.balance) == (True, 1000 - 2 * FARE)
            third = await gate.validate(rid(), card_uid=plenty, timeout=10)  # 900 > the limit of 700
            assert (third.allow, third.reason) == (False, "OFFLINE_CHARGE_LIMIT")

            stale = await gate.validate(rid(), card_uid=short, timeout=10)  # the edge believes 500
            assert (stale.allow, stale.balance) == (True, 500 - FARE)
            broke = await gate.validate(rid(), card_uid=short, timeout=10)
            assert (broke.allow, broke.reason, broke.balance) == (False, "INSUFFICIENT_BALANCE", 200)
            assert edge.store_value("SELECT sum(amount) FROM charges") == 3 * FARE  # durable before the answers
        finally:
            await gate.close()

        # The cluster is back: three charges are forwarded and taken once each.
        await cluster.start()
        await until(lambda: edge.queued == 0, "the edge to forward its decisions", timeout=60)
        assert balance(park, plenty) == 1000 - 2 * FARE
        assert balance(park, short) == 200 - FARE  # the debt shows: -100
        charged = park.sql("SELECT count(*), sum(v.charged) FROM validations v JOIN card_bindings b "
                           "ON b.ticket_id = v.ticket_id WHERE b.card_uid IN (%s, %s) AND v.device_id = %s",
                           plenty, short, GATE_ID)
        assert charged == [(3, 3 * FARE)]
        history = await park.seller.sales.CardHistory(sales_pb2.CardHistoryRequest(card_uid=short),
                                                      metadata=park.seller.metadata)
        assert history.balance.balance.minor_units == -100
        # The feed catches up past the forward: the edge stops counting the charges against its limit and
        # holds the cluster's balances.
        await until(lambda: edge.store_value("SELECT count(*) FROM charges") == 0, "the charges to settle",
                    timeout=60)

        # Restarted once more, the edge replays nothing and the balances stay as they are.
        edge.stop()
        edge.start()
        await edge.ready()
        assert edge.queued == 0
        assert (balance(park, plenty), balance(park, short)) == (1000 - 2 * FARE, 200 - FARE)
        # a card in debt is refused at the edge too, online or alone
        gate = GateLink(edge.address, Hello(GATE_ID, park.secrets[GATE_ID], "in", PARK))
        await gate.open()
        try:
            owed = await gate.validate(rid(), card_uid=short, timeout=10)
            assert (owed.allow, owed.reason, owed.balance) == (False, "INSUFFICIENT_BALANCE", -100)
        finally:
            await gate.close()
    finally:
        edge.stop()

