"""A park with the whole catalogue on two real servers: member cards, stored value, count cards, vouchers, groups.

Everything goes through the contract. ``clerk`` is a second window operator
holding the catalogue's own permissions (vouchers, groups, back-entry) but
not ``members.personal``; ``admin`` holds everything.
"""

from __future__ import annotations

import io
from collections.abc import AsyncIterator
from dataclasses import dataclass, field, fields

import pytest
from PIL import Image

from parkgate.clients.gate.link import GateLink, Hello
from parkgate.v1 import admin_pb2, catalog_pb2, common_pb2, sales_pb2
from tests.fixtures.park import PRICE, TestPark, open_park, rid
from tests.fixtures.server import Client, RunningServer, start_server, stop_server

PARK = "cpark"
CNY = "CNY"
COASTER_FARE = 300      # what the coaster charges a stored-value card on every day type
REPLACEMENT_FEE = 500


def cny(minor: int) -> common_pb2.Money:
    return common_pb2.Money(minor_units=minor, currency=CNY)


def cash(minor: int) -> sales_pb2.Payment:
    return sales_pb2.Payment(method=common_pb2.CASH, amount=cny(minor))


def jpeg(width: int = 640, height: int = 480) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (width, height), (200, 120, 40)).save(out, format="JPEG")
    return out.getvalue()


@dataclass
class Catalogue(TestPark):
    clerk: Client | None = None
    window_secret: str = ""
    links: list[GateLink] = field(default_factory=list)

    __test__ = False

    async def gate(self, device_id: str, *, attraction: str = "", server: int = 0,
                   direction: str = "in") -> GateLink:
        secret = await self.register_gate(device_id, attraction=attraction, direction=direction)
        link = GateLink(self.servers[server].address, Hello(device_id, secret, direction, PARK))  # type: ignore[arg-type]
        await link.open()
        self.links.append(link)
        return link

    async def put_product(self, pid: str, kind: int, **rules: object) -> None:
        md = self.admin.metadata
        validity = rules.pop("validity", catalog_pb2.DAYS_FROM_FIRST_USE)
        valid_days = rules.pop("valid_days", 365 if validity == catalog_pb2.DAYS_FROM_FIRST_USE else 0)
        await self.admin.catalog.PutProduct(catalog_pb2.PutProductRequest(product=catalog_pb2.Product(
            id=pid, park_id=self.park_id, name=pid, kind=kind, on_sale=True,
            rules=catalog_pb2.ProductRules(validity=validity, valid_days=valid_days, **rules))), metadata=md)
        for day_type in (catalog_pb2.WEEKDAY, catalog_pb2.WEEKEND, catalog_pb2.HOLIDAY):
            await self.admin.catalog.SetPrice(catalog_pb2.SetPriceRequest(entry=catalog_pb2.PriceEntry(
                product_id=pid, day_type=day_type, price=cny(PRICE))), metadata=md)

    async def sell_card(self, pid: str, uid: str) -> sales_pb2.Ticket:
        ticket, = await self.sell(pid, cards=[uid])
        return ticket


@pytest.fixture(scope="module")
async def cat(parkgate_server: RunningServer, module_dsn: str) -> AsyncIterator[Catalogue]:
    second = await start_server(module_dsn)
    opened = await open_park([parkgate_server, second], module_dsn, PARK, "Catalogue Park")
    c = Catalogue(**{f.name: getattr(opened, f.name) for f in fields(TestPark)})
    md = c.admin.metadata
    for a, fare in (("coaster", COASTER_FARE), ("wheel", 0)):
        await c.admin.catalog.PutAttraction(catalog_pb2.PutAttractionRequest(attraction=catalog_pb2.Attraction(
            id=a, park_id=PARK, name=a, stored_value_price=cny(fare))), metadata=md)
    await c.put_product("member", catalog_pb2.MEMBER, card_bound=True, hold_for_check=True,
                        replacement_fee=cny(REPLACEMENT_FEE), entries_per_day=2)
    await c.put_product("purse", catalog_pb2.STORED_VALUE, card_bound=True)
    await c.put_product("count", catalog_pb2.COUNT_CARD, card_bound=True, entries_total=5,
                        entries_per_attraction={"coaster": 2})
    await c.put_product("day", catalog_pb2.SINGLE, validity=catalog_pb2.VISIT_DATE, entries_total=1,
                        voucher_redeemable=True)
    await c.put_product("plain", catalog_pb2.SINGLE, validity=catalog_pb2.VISIT_DATE, entries_total=1)
    await c.put_product("tour", catalog_pb2.GROUP, validity=catalog_pb2.VISIT_DATE, entries_total=1)
    await c.admin.admin.PutRole(admin_pb2.PutRoleRequest(role=admin_pb2.Role(
        name="clerk", description="window clerk for the whole catalogue",
        permissions=["sales.sell", "sales.read", "sales.members", "sales.vouchers", "sales.groups",
                     "sales.backentry", "sales.refund", "catalog.read"])), metadata=md)
    await c.admin.admin.CreateUser(admin_pb2.CreateUserRequest(
        username="clerk", password="clerk-password-1", roles=["clerk"]), metadata=md)
    window = await c.admin.admin.RegisterDevice(admin_pb2.RegisterDeviceRequest(device=admin_pb2.Device(
        id=f"{PARK}-window2", kind=admin_pb2.SALES_WINDOW, park_id=PARK)), metadata=md)
    c.window_secret = window.secret
    c.clerk = await second.login("clerk", "clerk-password-1", f"{PARK}-window2", window.secret)
    yield c
    for link in c.links:
        await link.close()
    await stop_server(second)


__all__ = ["CNY", "COASTER_FARE", "PARK", "REPLACEMENT_FEE", "Catalogue", "cash", "cny", "jpeg", "rid"]
