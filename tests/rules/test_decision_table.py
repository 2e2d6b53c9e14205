"""The decision table (decisions.toml) run against every place that decides a validation.

* ``engine``  -- :func:`parkgate.rules.decide` alone, over a ticket made the way a sale makes it;
* ``central`` -- a real server (its clock set to each step's moment) on real PostgreSQL, the ticket sold
  through the Sales API and presented on real Gate.Connect streams at an entrance, an exit and a ride;
* ``offline`` -- the gate agent's offline path (:class:`OfflineDecider`) over a signed code, the product's
  terms as a welcome carries them, and its durable memory in a folder.

A scenario that one place cannot judge names where it runs (``where``): each place it leaves out is declared there.
"""

from __future__ import annotations

import itertools
import tomllib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from parkgate import native
from parkgate.clients.gate.link import GateLink, Hello
from parkgate.clients.gate.offline import CachedKeys, LocalDecision, OfflineDecider
from parkgate.rules import (
    GatePlace,
    LocalTime,
    ParkState,
    TicketState,
    capacity_paused,
    decide,
    effective_terms,
    move_park,
)
from parkgate.server.domain.sales import ticket_terms
from parkgate.v1 import catalog_pb2, common_pb2, gate_pb2, sales_pb2
from tests.fixtures.park import PRICE, TestPark, open_park, rid
from tests.fixtures.server import RunningServer, start_server, stop_server

TABLE = tomllib.loads((Path(__file__).parent / "decisions.toml").read_text())["scenario"]
PLACES = ("engine", "central", "offline")
KINDS = {"single": catalog_pb2.SINGLE, "multi_person": catalog_pb2.MULTI_PERSON, "member": catalog_pb2.MEMBER,
         "count_card": catalog_pb2.COUNT_CARD, "complimentary": catalog_pb2.COMPLIMENTARY,
         "stored_value": catalog_pb2.STORED_VALUE}


def cases(places: tuple[str, ...]) -> list[Any]:
    """(scenario, place) for each place the scenario runs at (all three unless it names ``where``)."""
    return [pytest.param(index, place, id=f"{place}-{index:02d}-{scenario['name'][:48]}")
            for index, scenario in enumerate(TABLE) for place in places
            if place in scenario.get("where", PLACES)]


def next_spring_forward(zone: ZoneInfo, after: date) -> date:
    """The first local day after ``after`` whose night loses an hour (the visit is the evening before)."""
    day = after
    for _ in range(400):
        day += timedelta(days=1)
        if datetime.combine(day, time(12), zone).utcoffset() > datetime.combine(day - timedelta(days=1), time(12),
                                                                                 zone).utcoffset():
            return day - timedelta(days=1)
    raise AssertionError(f"{zone.key} has no spring-forward within a year")


def visit_day(scenario: dict[str, Any], zone: ZoneInfo) -> date:
    tomorrow = datetime.now(zone).date() + timedelta(days=1)
    return next_spring_forward(zone, tomorrow) if scenario.get("visit") == "dst" else tomorrow


def moment(at: str, visit: date, zone: ZoneInfo) -> float:
    """'D HH:MM' park-local -> epoch seconds (an hour that does not exist is read as the wall clock says)."""
    days, clock = at.split()
    hour, minute = (int(x) for x in clock.split(":"))
    local = datetime.combine(visit + timedelta(days=int(days)), time(hour, minute), zone)
    return local.astimezone(UTC).timestamp()


def product_rules(scenario: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    product = dict(scenario["product"])
    kind = product.pop("kind")
    if "attractions" in product:
        product["attraction_ids"] = product.pop("attractions")
    return kind, product


def check(step: dict[str, Any], allow: bool, reason: str, entries_left: int, moved: int, hold: bool,
          where: str, balance: int | None = None) -> None:
    got = {"allow": allow, "reason": reason, "entries_left": entries_left, "moved": moved, "hold_for_check": hold,
           "balance": balance}
    want = {k: step[k] for k in got if k in step}
    assert {k: got[k] for k in want} == want, f"{where} at {step['at']} {step['gate']}"


# --- the engine alone ------------------------------------------------------------------------------

def run_engine(scenario: dict[str, Any]) -> None:
    zone = ZoneInfo(scenario.get("zone", "Asia/Shanghai"))
    visit = visit_day(scenario, zone)
    kind, rules = product_rules(scenario)
    t = ticket_terms(kind, rules, visit, zone)
    ticket = TicketState(
        ticket_id="t1", serial=1, park_id="p", valid_from=t.valid_from.timestamp(),
        valid_until=t.valid_until.timestamp(), valid_days=t.valid_days, persons=t.persons,
        entries_total=t.entries_total, entries_per_day=t.entries_per_day, reentry_allowed=t.reentry_allowed,
        hold_for_check=t.hold_for_check, attraction_ids=frozenset(t.attraction_ids), window=t.night_window,
        attraction_limits=dict(t.attraction_limits or {}), balance=scenario.get("balance"))
    cap = scenario.get("park", {})
    park = ParkState("p", capacity=cap.get("capacity", 0), resume_margin=cap.get("margin", 0))
    park = move_park(park, cap.get("others", 0))
    for step in scenario["steps"]:
        now = moment(step["at"], visit, zone)
        if step.get("refund"):
            ticket = replace(ticket, status="refunded")
            continue
        if step.get("block"):
            ticket = replace(ticket, blocked=True)
            continue
        if "others_leave" in step:
            park = move_park(park, -step["others_leave"])
            continue
        gate = step["gate"]
        place = GatePlace("g", "p", 1, zone.key, attraction_id="ride" if gate == "ride-in" else "")
        direction = "out" if gate == "out" else "in"
        fare = scenario.get("fare", 0) if gate == "ride-in" else 0
        verdict = decide(ticket, place, direction, park, LocalTime.at(now, zone), fare)
        check(step, verdict.allow, verdict.reason.value, verdict.entries_left, verdict.moved,
              verdict.hold_for_check, "engine", verdict.balance)
        if verdict.ticket is not None:
            ticket = verdict.ticket
        park = move_park(park, verdict.moved) if verdict.moved else park


# --- the gate agent's offline path -------------------------------------------------------------------

def run_offline(scenario: dict[str, Any], folder: Path) -> None:
    zone = ZoneInfo(scenario.get("zone", "Asia/Shanghai"))
    visit = visit_day(scenario, zone)
    kind, rules = product_rules(scenario)
    t = ticket_terms(kind, rules, visit, zone)
    key = native.SigningKey.generate(7)
    code = native.issue(key, serial=4242, product_id=9, park_id=3, valid_from=int(t.valid_from.timestamp()),
                        valid_until=int(t.valid_until.timestamp()), persons=t.persons, night_window=t.night_window,
                        attractions=[1] if "ride" in t.attraction_ids else [])
    keyring = native.Keyring([(7, key.public_key, native.KeyState.ACTIVE)])
    terms = {9: effective_terms(kind, rules)}
    # each gate's place, as its welcome said; the gates of one scenario share the state folder,
    # as the entrance and exit of one gate box would
    places = {gate: CachedKeys(keyring, 3, 1 if gate == "ride-in" else 0, "p", "ride" if gate == "ride-in" else "",
                               zone.key, {1: "ride"}, terms) for gate in ("in", "out", "ride-in")}
    for step in scenario["steps"]:
        assert not {"refund", "block", "others_leave"} & set(step), "offline cannot judge these: use where"
        cached = places[step["gate"]]
        decider = OfflineDecider(folder)  # what the gates wrote so far, read back from disk
        direction = "out" if step["gate"] == "out" else "in"
        decided = decider.decide(code, direction, moment(step["at"], visit, zone), cached)
        assert isinstance(decided, LocalDecision), decided
        v = decided.verdict
        check(step, v.allow, v.reason.value, v.entries_left, v.moved, v.hold_for_check, "offline")
        decider.remember(decided)


# --- the central pipeline through real gate streams -----------------------------------------------------

@dataclass
class Clock:
    now: float = 0.0

    def __call__(self) -> float:
        return self.now


@dataclass
class Central:
    server: RunningServer
    clock: Clock
    dsn: str
    parks: itertools.count = field(default_factory=lambda: itertools.count(1))


@pytest.fixture(scope="module")
async def central(module_dsn: str) -> AsyncIterator[Central]:
    clock = Clock()
    running = await start_server(module_dsn, clock=clock)
    yield Central(running, clock, module_dsn)
    await stop_server(running)


async def run_central(scenario: dict[str, Any], c: Central) -> None:
    zone_name = scenario.get("zone", "Asia/Shanghai")
    zone = ZoneInfo(zone_name)
    visit = visit_day(scenario, zone)
    park_id = f"dt{next(c.parks)}"
    park: TestPark = await open_park([c.server], c.dsn, park_id, park_id, time_zone=zone_name)
    md = park.admin.metadata
    await park.admin.catalog.PutAttraction(catalog_pb2.PutAttractionRequest(attraction=catalog_pb2.Attraction(
        id=f"{park_id}-ride", park_id=park_id, name="ride", stored_value_price=common_pb2.Money(
            minor_units=scenario.get("fare", 0), currency="CNY"))), metadata=md)  # attraction ids are installation-wide
    kind, rules = product_rules(scenario)
    rules["attraction_ids"] = [f"{park_id}-{a}" for a in rules.get("attraction_ids", [])]
    if "entries_per_attraction" in rules:
        rules["entries_per_attraction"] = {f"{park_id}-{a}": n for a, n in rules["entries_per_attraction"].items()}
    validity = {"days_from_first_use": catalog_pb2.DAYS_FROM_FIRST_USE}.get(rules.pop("validity", ""),
                                                                           catalog_pb2.VISIT_DATE)
    await park.admin.catalog.PutProduct(catalog_pb2.PutProductRequest(product=catalog_pb2.Product(
        id=f"{park_id}-p", park_id=park_id, name="p", kind=KINDS[kind], on_sale=True,
        rules=catalog_pb2.ProductRules(validity=validity, **rules))), metadata=md)
    for day_type in (catalog_pb2.WEEKDAY, catalog_pb2.WEEKEND, catalog_pb2.HOLIDAY):
        await park.admin.catalog.SetPrice(catalog_pb2.SetPriceRequest(entry=catalog_pb2.PriceEntry(
            product_id=f"{park_id}-p", day_type=day_type, price=common_pb2.Money(minor_units=PRICE, currency="CNY"))), metadata=md)
    order = await park.seller.sales.CreateOrder(sales_pb2.CreateOrderRequest(
        request_id=rid(), lines=[sales_pb2.OrderLine(product_id=f"{park_id}-p", quantity=1, visit_date=common_pb2.Date(
            year=visit.year, month=visit.month, day=visit.day))],
        payments=[sales_pb2.Payment(method=common_pb2.CASH, amount=common_pb2.Money(minor_units=PRICE,
                                                                                     currency="CNY"))]),
        metadata=park.seller.metadata)
    ticket, = order.tickets
    if "balance" in scenario:
        park.sql("UPDATE tickets SET balance = %s WHERE id = %s", scenario["balance"], ticket.id)
    cap = scenario.get("park", {})
    if cap:
        await park.control().SetCapacity(gate_pb2.SetCapacityRequest(
            park_id=park_id, capacity=cap["capacity"], resume_margin=cap["margin"]), metadata=md)
        others = cap.get("others", 0)
        park.sql("UPDATE park_state SET inside = %s, paused = %s WHERE park_id = %s", others,
                 capacity_paused(others, cap["capacity"], cap["margin"], False), park_id)
    links = {}
    for gate, direction, attraction in (("in", "in", ""), ("out", "out", ""), ("ride-in", "in", f"{park_id}-ride")):
        secret = await park.register_gate(f"{park_id}-{gate}", direction=direction, attraction=attraction)
        links[gate] = GateLink(c.server.address, Hello(f"{park_id}-{gate}", secret, direction, park_id))  # type: ignore[arg-type]
        await links[gate].open()
    try:
        for step in scenario["steps"]:
            c.clock.now = moment(step["at"], visit, zone)
            if step.get("refund"):
                park.sql("UPDATE tickets SET state = 'refunded' WHERE id = %s", ticket.id)
                continue
            if step.get("block"):
                park.sql("UPDATE tickets SET blocked_at = now() WHERE id = %s", ticket.id)
                continue
            if "others_leave" in step:
                (inside, paused), = park.sql("SELECT inside, paused FROM park_state WHERE park_id = %s", park_id)
                inside -= step["others_leave"]
                park.sql("UPDATE park_state SET inside = %s, paused = %s WHERE park_id = %s", inside,
                         capacity_paused(inside, cap["capacity"], cap["margin"], paused), park_id)
                continue
            (before,), = park.sql("SELECT inside FROM park_state WHERE park_id = %s", park_id)
            result = await links[step["gate"]].validate(rid(), code=ticket.code)
            (after,), = park.sql("SELECT inside FROM park_state WHERE park_id = %s", park_id)
            check(step, result.allow, result.reason, result.entries_left, after - before, result.hold_for_check,
                  "central", result.balance)
    finally:
        for link in links.values():
            await link.close()


@pytest.mark.parametrize(("index", "place"), cases(("engine", "offline")))
def test_decision_table_alone(index: int, place: str, tmp_path: Path) -> None:
    scenario = TABLE[index]
    if place == "engine":
        run_engine(scenario)
    else:
        run_offline(scenario, tmp_path)


@pytest.mark.parametrize(("index", "place"), cases(("central",)))
async def test_decision_table_central(index: int, place: str, central: Central) -> None:
    await run_central(TABLE[index], central)


def test_the_table_covers_what_it_must() -> None:
    """The cases the rules are known to get wrong when they drift, all present."""
    names = " | ".join(s["name"] for s in TABLE)
    for must in ("expired day ticket after local midnight", "past its days", "DST night", "night tour across midnight",
                 "count card: the last entry", "re-entry after an exit", "cap", "refunded before",
                 "refunded while inside", "ALREADY_USED", "stored value", "blocked", "per attraction"):
        assert must in names, must
