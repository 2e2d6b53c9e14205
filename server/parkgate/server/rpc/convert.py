"""Small conversions between typed values (store rows, service results) and contract messages.

Only this module and the servicers know the contract; nothing here reads a SQL
column name: rows arrive as the dataclasses of :mod:`parkgate.server.store.rows`.
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Any

import orjson
from google.protobuf.timestamp_pb2 import Timestamp

from parkgate.server.domain.catalog import AttractionSpec, ParkSpec
from parkgate.server.domain.errors import InvalidArgument
from parkgate.server.services.sales import OrderView, TicketView
from parkgate.server.store.rows.admin import AuditRecord, Device, DeviceSpec, DictionaryEntry, Parameter
from parkgate.server.store.rows.catalog import Attraction, Holiday, Park, Price, Product
from parkgate.server.store.rows.operators import Permission, Role, Session, User
from parkgate.server.store.rows.sales import Payment, Refund, RefundReason, ShiftTotals
from parkgate.v1 import admin_pb2, catalog_pb2, common_pb2, sales_pb2


def ts(value: datetime | None) -> Timestamp | None:
    if value is None:
        return None
    out = Timestamp()
    out.FromDatetime(value.astimezone(UTC))
    return out


def from_ts(value: Timestamp, present: bool) -> datetime | None:
    return value.ToDatetime(tzinfo=UTC) if present else None


def user(row: User) -> admin_pb2.User:
    return admin_pb2.User(
        id=row.id, username=row.username, display_name=row.display_name, roles=row.roles,
        disabled=row.disabled, locked=row.locked, must_change_password=row.must_change_password,
        created_at=ts(row.created_at), last_login_at=ts(row.last_login_at),
    )


def role(row: Role) -> admin_pb2.Role:
    return admin_pb2.Role(name=row.name, description=row.description, permissions=row.permissions,
                          builtin=row.builtin)


def permission(row: Permission) -> admin_pb2.Permission:
    return admin_pb2.Permission(name=row.name, description=row.description)


def session(row: Session) -> admin_pb2.Session:
    return admin_pb2.Session(
        id=row.id, user_id=row.user_id, username=row.username, device_id=row.device_id, peer=row.peer,
        created_at=ts(row.created_at), last_seen_at=ts(row.last_seen_at), expires_at=ts(row.expires_at),
    )


def parameter(row: Parameter) -> admin_pb2.Parameter:
    return admin_pb2.Parameter(
        key=row.key, value=orjson.dumps(row.value).decode(), description=row.description,
        updated_at=ts(row.updated_at), updated_by=row.updated_by,
    )


def dictionary_entry(row: DictionaryEntry) -> admin_pb2.DictionaryEntry:
    return admin_pb2.DictionaryEntry(key=row.key, language=row.language, text=row.text)


def audit_record(row: AuditRecord) -> admin_pb2.AuditRecord:
    return admin_pb2.AuditRecord(
        id=row.id, at=ts(row.at), user_id=row.user_id, username=row.username, device_id=row.device_id,
        method=row.method, outcome=row.outcome, summary=orjson.dumps(row.summary).decode(), peer=row.peer,
    )


_DEVICE_KINDS = {"gate": admin_pb2.GATE, "handheld": admin_pb2.HANDHELD, "sales_window": admin_pb2.SALES_WINDOW,
                 "kiosk": admin_pb2.KIOSK, "site_edge": admin_pb2.SITE_EDGE}
_DIRECTIONS = {"in": common_pb2.IN, "out": common_pb2.OUT}


def device_kind_name(kind: int) -> str | None:
    return next((name for name, value in _DEVICE_KINDS.items() if value == kind), None)


def direction_name(direction: int) -> str | None:
    return next((name for name, value in _DIRECTIONS.items() if value == direction), None)


def device(row: Device) -> admin_pb2.Device:
    return admin_pb2.Device(
        id=row.id, kind=_DEVICE_KINDS[row.kind], site=row.site, park_id=row.park_id,
        attraction_id=row.attraction_id, direction=_DIRECTIONS.get(row.direction, 0),
        description=row.description, disabled=row.disabled, registered_at=ts(row.registered_at),
        last_seen_at=ts(row.last_seen_at), language=row.language,
    )


def device_spec(msg: admin_pb2.Device) -> DeviceSpec:
    kind = device_kind_name(msg.kind)
    if kind is None:
        raise InvalidArgument("device kind is required (gate, handheld, sales_window, kiosk, site_edge)")
    if not msg.id:
        raise InvalidArgument("a device needs an id")
    return DeviceSpec(
        id=msg.id, kind=kind, site=msg.site, park_id=msg.park_id or None,
        attraction_id=msg.attraction_id or None, direction=direction_name(msg.direction),
        description=msg.description, language=msg.language or "en",
    )


def park(row: Park) -> catalog_pb2.Park:
    return catalog_pb2.Park(
        id=row.id, name=row.name, time_zone=row.time_zone, currency=row.currency, capacity=row.capacity,
        capacity_resume_margin=row.capacity_resume_margin, disabled=row.disabled, number=row.number,
    )


def park_spec(msg: catalog_pb2.Park) -> ParkSpec:
    return ParkSpec(id=msg.id, name=msg.name, time_zone=msg.time_zone, currency=msg.currency,
                    capacity=msg.capacity, capacity_resume_margin=msg.capacity_resume_margin, disabled=msg.disabled)


def attraction(row: Attraction) -> catalog_pb2.Attraction:
    return catalog_pb2.Attraction(
        id=row.id, park_id=row.park_id, name=row.name, disabled=row.disabled, slot=row.slot,
        stored_value_price=common_pb2.Money(minor_units=row.stored_value_price, currency=row.currency),
    )


def attraction_spec(msg: catalog_pb2.Attraction) -> AttractionSpec:
    return AttractionSpec(id=msg.id, park_id=msg.park_id, name=msg.name,
                          stored_value_price=msg.stored_value_price.minor_units, disabled=msg.disabled)


# Product rules are stored as JSON with the contract's field names; enums as
# lower-case names and money as minor units (the park fixes the currency).
_KINDS = {v: k.lower() for k, v in catalog_pb2.ProductKind.items() if v}
_VALIDITY = {v: k.lower() for k, v in catalog_pb2.ValidityKind.items() if v}
_MONEY_RULES = ("deposit", "replacement_fee")
_DATE_RULES = ("valid_from", "valid_until")


def product_kind_name(kind: int) -> str:
    if kind not in _KINDS:
        raise InvalidArgument("product kind is required")
    return _KINDS[kind]


def rules_to_dict(rules: catalog_pb2.ProductRules) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for field, value in rules.ListFields():
        if field.name == "validity":
            out["validity"] = _VALIDITY[value]
        elif field.name in _MONEY_RULES:
            out[field.name] = value.minor_units
        elif field.name in _DATE_RULES:
            out[field.name] = f"{value.year:04d}-{value.month:02d}-{value.day:02d}"
        elif field.name == "attraction_ids":
            out[field.name] = list(value)
        elif field.name == "entries_per_attraction":
            out[field.name] = dict(value)
        else:
            out[field.name] = value
    return out


def rules_from_dict(data: dict[str, Any], currency: str) -> catalog_pb2.ProductRules:
    rules = catalog_pb2.ProductRules()
    for key, value in data.items():
        if key == "validity":
            rules.validity = catalog_pb2.ValidityKind.Value(value.upper())
        elif key in _MONEY_RULES:
            getattr(rules, key).CopyFrom(common_pb2.Money(minor_units=value, currency=currency))
        elif key in _DATE_RULES:
            y, m, d = (int(x) for x in value.split("-"))
            getattr(rules, key).CopyFrom(common_pb2.Date(year=y, month=m, day=d))
        elif key == "attraction_ids":
            rules.attraction_ids.extend(value)
        elif key == "entries_per_attraction":
            rules.entries_per_attraction.update(value)
        else:
            setattr(rules, key, value)
    return rules


def product(row: Product) -> catalog_pb2.Product:
    return catalog_pb2.Product(
        id=row.id, park_id=row.park_id, name=row.name,
        kind=catalog_pb2.ProductKind.Value(row.kind.upper()), rules=rules_from_dict(row.rules, row.currency),
        version=row.version, on_sale=row.on_sale, updated_at=ts(row.updated_at), number=row.number,
    )


def money(minor_units: int, currency: str) -> common_pb2.Money:
    return common_pb2.Money(minor_units=minor_units, currency=currency)


def date_msg(value: date) -> common_pb2.Date:
    return common_pb2.Date(year=value.year, month=value.month, day=value.day)


def date_from(msg: common_pb2.Date, what: str = "date") -> date | None:
    """The date of a Date message, or None when it is empty (all zero)."""
    if not (msg.year or msg.month or msg.day):
        return None
    try:
        return date(msg.year, msg.month, msg.day)
    except ValueError as exc:
        raise InvalidArgument(f"{what} {msg.year:04d}-{msg.month:02d}-{msg.day:02d}: {exc}") from None


_DAY_TYPES = {v: k.lower() for k, v in catalog_pb2.DayType.items() if v}


def day_type_name(value: int) -> str:
    if value not in _DAY_TYPES:
        raise InvalidArgument("day type is required (WEEKDAY, WEEKEND, HOLIDAY, PEAK)")
    return _DAY_TYPES[value]


def day_type(name: str) -> int:
    return catalog_pb2.DayType.Value(name.upper())


def price_entry(row: Price) -> catalog_pb2.PriceEntry:
    return catalog_pb2.PriceEntry(product_id=row.product_id, day_type=day_type(row.day_type),
                                  peak_name=row.peak_name, price=money(row.amount, row.currency))


def holiday(row: Holiday) -> catalog_pb2.Holiday:
    return catalog_pb2.Holiday(park_id=row.park_id, date=date_msg(row.day), day_type=day_type(row.day_type),
                               name=row.name)


# Payment methods travel as the contract's enum names, stored lower-case.
_PAYMENT_METHODS = {v: k.lower() for k, v in common_pb2.PaymentMethod.items() if v}


def payment_method_name(value: int) -> str:
    """The stored name of a payment method; '' for unspecified (the caller picks a default)."""
    if value and value not in _PAYMENT_METHODS:
        raise InvalidArgument(f"unknown payment method {value}")
    return _PAYMENT_METHODS.get(value, "")


def payment_method(name: str) -> int:
    return common_pb2.PaymentMethod.Value(name.upper())


def payment(row: Payment, currency: str) -> sales_pb2.Payment:
    return sales_pb2.Payment(method=payment_method(row.method),
                             amount=money(row.amount, currency), reference=row.reference)


_TICKET_STATES = {"valid": sales_pb2.VALID, "used": sales_pb2.USED, "refunded": sales_pb2.REFUNDED_STATE,
                  "voided": sales_pb2.VOIDED_STATE, "expired": sales_pb2.EXPIRED_STATE}


def ticket(view: TicketView) -> sales_pb2.Ticket:
    t = view.ticket
    return sales_pb2.Ticket(
        id=t.id, serial=t.serial, order_id=t.order_id, product_id=t.product_id,
        product_version=t.product_version, park_id=t.park_id, code=t.code, card_uid=t.card_uid,
        price=money(t.price, t.currency), state=_TICKET_STATES[view.display_state],
        valid_from=ts(t.valid_from), valid_until=ts(t.valid_until), entries_used=t.entries_used,
        entries_total=t.entries_total, visit_date=date_msg(t.visit_date), persons=t.persons,
        deposit=money(t.deposit, t.currency), product_name=t.product_name, sold_at=ts(t.sold_at),
    )


def order(view: OrderView) -> sales_pb2.Order:
    o = view.order
    return sales_pb2.Order(
        id=o.id, request_id=o.request_id, window_device_id=o.window_device_id,
        operator=o.operator, tickets=[ticket(t) for t in view.tickets],
        payments=[payment(p, o.currency) for p in view.payments], total=money(o.total, o.currency),
        created_at=ts(o.created_at), customer=o.customer,
    )


def refund_reason(row: RefundReason) -> sales_pb2.RefundReason:
    return sales_pb2.RefundReason(id=row.id, label=row.label, refund_percent=row.refund_percent,
                                  disabled=row.disabled)


def refund_reason_value(msg: sales_pb2.RefundReason) -> RefundReason:
    return RefundReason(id=msg.id, label=msg.label, refund_percent=msg.refund_percent, disabled=msg.disabled)


def refund(row: Refund) -> sales_pb2.RefundRecord:
    return sales_pb2.RefundRecord(
        id=row.id, order_id=row.order_id, ticket_ids=row.ticket_ids, reason_id=row.reason_id,
        amount=money(row.amount, row.currency), deposit_refunded=money(row.deposit_refunded, row.currency),
        note=row.note, operator=row.operator, at=ts(row.at),
    )


def shift_totals(totals: ShiftTotals) -> sales_pb2.ShiftTotalsResponse:
    currency = totals.currency or next((m.currency for m in totals.by_method), "")
    return sales_pb2.ShiftTotalsResponse(
        since=ts(totals.since), orders=totals.orders, tickets=totals.tickets,
        by_method=[sales_pb2.PaymentTotal(method=payment_method(m.method), count=m.count,
                                          amount=money(m.amount, m.currency))
                   for m in totals.by_method],
        refunded=money(totals.refunded, currency), refunds=totals.refunds,
    )
