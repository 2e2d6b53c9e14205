"""`parkgate admin` commands for the catalog: parks, attractions, products, prices, holidays, refund reasons.

Product rules are given as JSON with the contract's field names
(``{"validity": "VISIT_DATE", "entries_total": 1, "attraction_ids": ["coaster"]}``),
the same data the server evaluates, so what an admin writes is what a gate
checks. Amounts are typed as people write them ("120.50") in the park's currency.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from datetime import date
from typing import TYPE_CHECKING, Any

import orjson
from google.protobuf.json_format import ParseDict, ParseError

from parkgate.rules import effective_terms
from parkgate.v1 import catalog_pb2, common_pb2, sales_pb2

from .money import parse_amount

if TYPE_CHECKING:
    from .admin_cli import Session

Command = Callable[[str, Callable[["Session", argparse.Namespace], Any], str], argparse.ArgumentParser]


def _date(text: str) -> common_pb2.Date:
    try:
        day = date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: a date as YYYY-MM-DD") from None
    return common_pb2.Date(year=day.year, month=day.month, day=day.day)


def _park_currency(s: Session, park_id: str) -> str:
    parks = s.catalog.ListParks(catalog_pb2.ListParksRequest(include_disabled=True), metadata=s.metadata, timeout=10)
    for park in parks.parks:
        if park.id == park_id:
            return park.currency
    raise SystemExit(f"error: UNKNOWN_PARK: no park {park_id!r}")


def _product(s: Session, product_id: str) -> catalog_pb2.Product:
    reply = s.catalog.ListProducts(catalog_pb2.ListProductsRequest(include_off_sale=True), metadata=s.metadata,
                                   timeout=10)
    for product in reply.products:
        if product.id == product_id:
            return product
    raise SystemExit(f"error: UNKNOWN_PRODUCT: no product {product_id!r}")


def cmd_park_set(s: Session, a: argparse.Namespace) -> Any:
    park = catalog_pb2.Park(id=a.id, name=a.name, time_zone=a.time_zone, currency=a.currency, capacity=a.capacity,
                            capacity_resume_margin=a.resume_margin, disabled=a.disable)
    return s.catalog.PutPark(catalog_pb2.PutParkRequest(park=park), metadata=s.metadata, timeout=10)


def cmd_attraction_set(s: Session, a: argparse.Namespace) -> Any:
    currency = _park_currency(s, a.park)
    attraction = catalog_pb2.Attraction(
        id=a.id, park_id=a.park, name=a.name, disabled=a.disable,
        stored_value_price=common_pb2.Money(minor_units=parse_amount(a.ride_price, currency), currency=currency),
    )
    return s.catalog.PutAttraction(catalog_pb2.PutAttractionRequest(attraction=attraction), metadata=s.metadata,
                                   timeout=10)


def cmd_product_set(s: Session, a: argparse.Namespace) -> Any:
    try:
        rules = ParseDict(orjson.loads(a.rules), catalog_pb2.ProductRules())
    except (orjson.JSONDecodeError, ParseError) as exc:
        raise SystemExit(f"error: INVALID_ARGUMENT: --rules: {exc}") from None
    product = catalog_pb2.Product(id=a.id, park_id=a.park, name=a.name,
                                  kind=catalog_pb2.ProductKind.Value(a.kind.upper()), rules=rules,
                                  on_sale=not a.off_sale)
    saved = s.catalog.PutProduct(catalog_pb2.PutProductRequest(product=product), metadata=s.metadata, timeout=10)
    print(f"{a.id}: {admits(product)}", file=sys.stderr)  # the effective rules, defaults by kind filled in
    return saved


def admits(product: catalog_pb2.Product) -> str:
    """The product's effective counting rules for people: its own, with its kind's defaults where it says nothing."""
    r = product.rules
    rules = {"entries_total": r.entries_total, "entries_per_day": r.entries_per_day,
             "reentry_allowed": r.reentry_allowed, "hold_for_check": r.hold_for_check, "valid_days": r.valid_days,
             "validity": "days_from_first_use" if r.validity == catalog_pb2.DAYS_FROM_FIRST_USE else ""}
    kind = catalog_pb2.ProductKind.Name(product.kind).lower()
    return effective_terms(kind, rules).describe()


def cmd_price_set(s: Session, a: argparse.Namespace) -> Any:
    product = _product(s, a.product)
    currency = _park_currency(s, product.park_id)
    entry = catalog_pb2.PriceEntry(
        product_id=a.product, day_type=catalog_pb2.DayType.Value(a.day_type.upper()), peak_name=a.peak or "",
        price=common_pb2.Money(minor_units=parse_amount(a.amount, currency), currency=currency),
    )
    return s.catalog.SetPrice(catalog_pb2.SetPriceRequest(entry=entry), metadata=s.metadata, timeout=10)


def cmd_fare_set(s: Session, a: argparse.Namespace) -> Any:
    """S8: what an attraction charges a stored-value card on a day type."""
    attractions = s.catalog.ListAttractions(catalog_pb2.ListAttractionsRequest(), metadata=s.metadata,
                                            timeout=10).attractions
    attraction = next((x for x in attractions if x.id == a.attraction), None)
    currency = _park_currency(s, attraction.park_id) if attraction else ""
    fare = catalog_pb2.AttractionFare(
        attraction_id=a.attraction, day_type=catalog_pb2.DayType.Value(a.day_type.upper()),
        price=common_pb2.Money(minor_units=parse_amount(a.amount, currency or "CNY"), currency=currency))
    return s.catalog.SetAttractionFare(fare, metadata=s.metadata, timeout=10)


def cmd_quote(s: Session, a: argparse.Namespace) -> Any:
    return s.catalog.QuotePrice(catalog_pb2.QuotePriceRequest(product_id=a.product, date=a.date, quantity=a.quantity),
                                metadata=s.metadata, timeout=10)


def cmd_holidays(s: Session, a: argparse.Namespace) -> Any:
    request = catalog_pb2.ListHolidaysRequest(park_id=a.park or "")
    if a.since:
        getattr(request, "from").CopyFrom(a.since)
    if a.until:
        request.until.CopyFrom(a.until)
    return s.catalog.ListHolidays(request, metadata=s.metadata, timeout=10).holidays


def cmd_holiday_set(s: Session, a: argparse.Namespace) -> Any:
    holiday = catalog_pb2.Holiday(park_id=a.park, date=a.date, day_type=catalog_pb2.DayType.Value(a.kind.upper()),
                                  name=a.name or "")
    return s.catalog.PutHoliday(catalog_pb2.PutHolidayRequest(holiday=holiday), metadata=s.metadata, timeout=10)


def cmd_holiday_rm(s: Session, a: argparse.Namespace) -> Any:
    s.catalog.DeleteHoliday(catalog_pb2.DeleteHolidayRequest(park_id=a.park, date=a.date), metadata=s.metadata,
                            timeout=10)
    return None


def cmd_refund_reasons(s: Session, a: argparse.Namespace) -> Any:
    return s.sales.ListRefundReasons(sales_pb2.ListRefundReasonsRequest(), metadata=s.metadata, timeout=10).reasons


def cmd_refund_reason_set(s: Session, a: argparse.Namespace) -> Any:
    reason = sales_pb2.RefundReason(id=a.id, label=a.label, refund_percent=a.percent, disabled=a.disable)
    return s.sales.PutRefundReason(reason, metadata=s.metadata, timeout=10)


def add_commands(cmd: Command) -> None:
    sp = cmd("park-set", cmd_park_set, "create or change a park")
    sp.add_argument("id")
    sp.add_argument("--name", required=True)
    sp.add_argument("--time-zone", required=True, help="IANA zone, e.g. Asia/Shanghai")
    sp.add_argument("--currency", required=True, help="ISO 4217, e.g. CNY")
    sp.add_argument("--capacity", type=int, default=0, help="people inside at most (0: no cap)")
    sp.add_argument("--resume-margin", type=int, default=0, help="entry resumes this far below the cap")
    sp.add_argument("--disable", action="store_true")
    sp = cmd("attraction-set", cmd_attraction_set, "create or change an attraction")
    sp.add_argument("id")
    sp.add_argument("--park", required=True)
    sp.add_argument("--name", required=True)
    sp.add_argument("--ride-price", default="0", help="charged per ride on stored-value cards")
    sp.add_argument("--disable", action="store_true")
    sp = cmd("product-set", cmd_product_set, "create a product or a new version of it")
    sp.add_argument("id")
    sp.add_argument("--park", required=True)
    sp.add_argument("--name", required=True)
    sp.add_argument("--kind", required=True, choices=[k.lower() for k in catalog_pb2.ProductKind.keys()[1:]])
    sp.add_argument("--rules", default="{}", help='JSON, contract field names: {"validity": "VISIT_DATE", ...}')
    sp.add_argument("--off-sale", action="store_true")
    sp = cmd("price-set", cmd_price_set, "set a product's price for a day type")
    sp.add_argument("product")
    sp.add_argument("day_type", choices=["weekday", "weekend", "holiday", "peak"])
    sp.add_argument("amount", help="e.g. 120.00")
    sp.add_argument("--peak", help="the peak period's name (peak prices only)")
    sp = cmd("fare-set", cmd_fare_set, "set what an attraction charges a stored-value card on a day type")
    sp.add_argument("attraction")
    sp.add_argument("day_type", choices=["weekday", "weekend", "holiday", "peak"])
    sp.add_argument("amount", help="e.g. 15.00")
    sp = cmd("quote", cmd_quote, "the price of a product on a date")
    sp.add_argument("product")
    sp.add_argument("date", type=_date)
    sp.add_argument("--quantity", type=int, default=1)
    sp = cmd("holidays", cmd_holidays, "list a park's holidays and peak days")
    sp.add_argument("--park")
    sp.add_argument("--from", dest="since", type=_date)
    sp.add_argument("--until", type=_date)
    sp = cmd("holiday-set", cmd_holiday_set, "mark a date as a holiday or a peak day")
    sp.add_argument("park")
    sp.add_argument("date", type=_date)
    sp.add_argument("--kind", choices=["holiday", "peak"], default="holiday")
    sp.add_argument("--name")
    sp = cmd("holiday-rm", cmd_holiday_rm, "remove a date from the calendar")
    sp.add_argument("park")
    sp.add_argument("date", type=_date)
    cmd("refund-reasons", cmd_refund_reasons, "list refund reasons")
    sp = cmd("refund-reason-set", cmd_refund_reason_set, "create or change a refund reason")
    sp.add_argument("id")
    sp.add_argument("--label", required=True)
    sp.add_argument("--percent", type=int, required=True, help="share of the price refunded, 0-100")
    sp.add_argument("--disable", action="store_true")
