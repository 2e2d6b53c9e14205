"""Offline sales: tickets signed with the site's own key, serials from the site's ranges.

The site's Ed25519 key is generated on the edge (the private half never
leaves it: ``state_dir/site.key``, mode 0600) and registered with the cluster
through Site.Provision, which returns its key id and a range of serials. The
cluster pushes the public half to every gate like any key and can revoke it
centrally. A sale made here follows the cluster's own rules for what a ticket
admits (validity from the product's rules in the park's zone, persons, night
window, attraction slots) and its price list (day type from the holiday
calendar, then weekend/weekday), so a ticket sold alone is the same ticket the
cluster would have sold. It is kept durably with its forward record in one
transaction before the window sees it.

Not sold alone: card-bound products (the card's binding must be unique across
sites) -- refused with OFFLINE_NOT_AVAILABLE.
"""

from __future__ import annotations

import os
import time
import uuid
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from datetime import time as dtime
from pathlib import Path
from zoneinfo import ZoneInfo

from google.protobuf.timestamp_pb2 import Timestamp

from parkgate import native
from parkgate.common.reason import Reason
from parkgate.v1 import catalog_pb2, common_pb2, sales_pb2, site_pb2

from .store import SiteStore

FIRST_USE_HORIZON_DAYS = 365  # as the cluster: a days-from-first-use ticket is first used within a year


class SaleRefused(Exception):
    """A sale the edge cannot make alone; ``reason`` is the contract's reason."""

    def __init__(self, message: str, reason: Reason) -> None:
        super().__init__(message)
        self.reason = reason


def load_or_create_key(folder: Path) -> bytes:
    """The site key's 32-byte seed, generated once and kept in ``site.key`` (0600); never sent anywhere."""
    path = folder / "site.key"
    try:
        return bytes.fromhex(path.read_text().strip())
    except FileNotFoundError:
        pass
    seed = native.SigningKey.generate(1).seed
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(seed.hex())
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    return seed


def _midnight(day: date, zone: ZoneInfo) -> int:
    return int(datetime.combine(day, dtime(0), zone).timestamp())


def _date(d: common_pb2.Date) -> date:
    return date(d.year, d.month, d.day)


@dataclass(frozen=True, slots=True)
class _Line:
    product: catalog_pb2.Product
    park: site_pb2.SitePark
    quantity: int
    visit: date
    unit: common_pb2.Money


class OfflineSeller:
    def __init__(self, store: SiteStore, seed: bytes) -> None:
        self.store = store
        self.seed = seed

    @property
    def key_id(self) -> int:
        return int(self.store.get_meta("site_key_id", "0"))

    def _line(self, product_id: str, quantity: int, visit: date | None) -> _Line:
        body = self.store.body("products", "product_id", product_id)
        if body is None:
            raise SaleRefused(f"unknown product {product_id!r}", Reason.UNKNOWN_PRODUCT)
        product = catalog_pb2.Product.FromString(body)
        if not product.on_sale:
            raise SaleRefused(f"product {product_id!r} is not on sale", Reason.PRODUCT_NOT_ON_SALE)
        if product.rules.card_bound:
            raise SaleRefused("card-bound products are sold only while the cluster answers",
                              Reason.OFFLINE_NOT_AVAILABLE)
        if not 1 <= quantity <= 500:
            raise SaleRefused(f"quantity {quantity}: between 1 and 500", Reason.INVALID_QUANTITY)
        park_body = self.store.body("parks", "park_id", product.park_id)
        if park_body is None:
            raise SaleRefused(f"unknown park {product.park_id!r}", Reason.UNKNOWN_PARK)
        park = site_pb2.SitePark.FromString(park_body)
        zone = ZoneInfo(park.time_zone or "UTC")
        day = visit or datetime.now(zone).date()
        return _Line(product, park, quantity, day, self._price(product, park, day))

    def _price(self, product: catalog_pb2.Product, park: site_pb2.SitePark, day: date) -> common_pb2.Money:
        holiday_body = self.store.body("holidays", "park_id || '/' || day", f"{park.park_id}/{day.isoformat()}")
        candidates: list[tuple[int, str]]
        if holiday_body is not None:
            h = catalog_pb2.Holiday.FromString(holiday_body)
            if h.day_type == catalog_pb2.PEAK:
                candidates = [*([(catalog_pb2.PEAK, h.name)] if h.name else []), (catalog_pb2.PEAK, ""),
                              (catalog_pb2.HOLIDAY, "")]
            else:
                candidates = [(catalog_pb2.HOLIDAY, "")]
        else:
            candidates = [(catalog_pb2.WEEKEND if day.isoweekday() >= 6 else catalog_pb2.WEEKDAY, "")]
        prices = {(p.day_type, p.peak_name): p.price for p in
                  (catalog_pb2.PriceEntry.FromString(b) for b in self.store.price_bodies(product.id))}
        for key in candidates:
            if key in prices:
                return prices[key]
        raise SaleRefused(f"no price set for {product.id!r} on {day.isoformat()}", Reason.PRICE_NOT_SET)

    def _validity(self, line: _Line) -> tuple[int, int, tuple[int, int] | None]:
        r, zone = line.product.rules, ZoneInfo(line.park.time_zone or "UTC")
        window = (r.window_start_minute, r.window_end_minute) if (r.window_start_minute or r.window_end_minute) \
            else None
        overnight = r.window_end_minute * 60 if window and r.window_end_minute < r.window_start_minute else 0
        if r.validity == catalog_pb2.FIXED_DATES:
            first, last = _date(r.valid_from), _date(r.valid_until)
            return _midnight(first, zone), _midnight(last + timedelta(days=1), zone) + overnight, window
        if r.validity == catalog_pb2.DAYS_FROM_FIRST_USE:
            return (_midnight(line.visit, zone),
                    _midnight(line.visit + timedelta(days=FIRST_USE_HORIZON_DAYS + r.valid_days), zone), window)
        return _midnight(line.visit, zone), _midnight(line.visit + timedelta(days=1), zone) + overnight, window

    def sell(self, *, device_id: str, operator: str, session: str, request: sales_pb2.CreateOrderRequest,
             quick_method: int = 0) -> sales_pb2.Order:
        """Sell alone; the order and its forward record are durable when this returns (idempotent by request id)."""
        prior = self.store.sale(device_id, request.request_id)
        if prior is not None:
            return sales_pb2.Order.FromString(prior)
        if not self.key_id:
            raise SaleRefused("this edge has no signing key yet (never reached the cluster)",
                              Reason.SITE_NOT_PROVISIONED)
        lines = [self._line(ln.product_id, ln.quantity, _date(ln.visit_date) if ln.HasField("visit_date") else None)
                 for ln in request.lines]
        if not lines:
            raise SaleRefused("an order needs at least one line", Reason.INVALID_ARGUMENT)
        currency = lines[0].unit.currency
        total = sum(ln.unit.minor_units * ln.quantity for ln in lines)
        payments = list(request.payments)
        if quick_method and not payments:
            payments = [sales_pb2.Payment(method=quick_method, amount=common_pb2.Money(minor_units=total,
                                                                                          currency=currency))]
        paid = sum(p.amount.minor_units for p in payments)
        if paid != total:
            raise SaleRefused(f"payments add up to {paid}, the order costs {total}", Reason.PAYMENT_MISMATCH)
        key = native.SigningKey(self.key_id, self.seed)
        now = time.time()
        sold_at = Timestamp()
        sold_at.FromNanoseconds(int(now * 1e9))
        order = sales_pb2.Order(id=str(uuid.uuid4()), request_id=request.request_id, window_device_id=device_id,
                                operator=operator, payments=payments, customer=request.customer,
                                total=common_pb2.Money(minor_units=total, currency=currency), created_at=sold_at)
        with self.store.transaction() as tx:
            serials = SiteStore.take_serials(tx, sum(ln.quantity for ln in lines))
            if serials is None:
                raise SaleRefused("the site's serial ranges are used up", Reason.SERIALS_EXHAUSTED)
            for line in lines:
                self._tickets(order, line, key, serials, sold_at)
            record = site_pb2.OfflineSale(request=request, order=order, operator=operator, sold_at=sold_at)
            sequence = SiteStore.enqueue(tx, device_id, lambda seq: site_pb2.ForwardedRecord(
                device_id=device_id, sequence=seq, sale=record).SerializeToString())
            SiteStore.put_sale(tx, device_id, request.request_id, order.id, operator, session,
                               order.SerializeToString(), now, sequence)
        return order

    def _tickets(self, order: sales_pb2.Order, line: _Line, key: native.SigningKey, serials: list[int],
                 sold_at: Timestamp) -> None:
        r = line.product.rules
        valid_from, valid_until, window = self._validity(line)
        persons = r.person_count if line.product.kind == catalog_pb2.MULTI_PERSON else 1
        slots = [s for s, a in line.park.attraction_slots.items() if a in set(r.attraction_ids)]
        for _ in range(line.quantity):
            serial = serials.pop(0)
            code = native.issue(key, serial=serial, product_id=int(line.product.number),
                                park_id=line.park.park_number, valid_from=valid_from, valid_until=valid_until,
                                persons=persons, night_window=window, attractions=slots)
            t = order.tickets.add(id=str(uuid.uuid4()), serial=serial, order_id=order.id, product_id=line.product.id,
                                  product_version=line.product.version, park_id=line.product.park_id, code=code,
                                  price=line.unit, state=sales_pb2.VALID, entries_total=r.entries_total,
                                  persons=persons, product_name=line.product.name, sold_at=sold_at)
            t.valid_from.FromSeconds(valid_from)
            t.valid_until.FromSeconds(valid_until)
            t.visit_date.CopyFrom(common_pb2.Date(year=line.visit.year, month=line.visit.month, day=line.visit.day))


def quick_request(q: sales_pb2.QuickSellRequest) -> sales_pb2.CreateOrderRequest:
    """A quick sale as the order it is (today, one line, paid in one go)."""
    req = sales_pb2.CreateOrderRequest(request_id=q.request_id,
                                       lines=[sales_pb2.OrderLine(product_id=q.product_id, quantity=q.quantity)])
    return req
