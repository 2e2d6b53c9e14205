"""Small conversions between store rows (dicts) and contract messages."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from google.protobuf.timestamp_pb2 import Timestamp

from parkgate.domain.errors import InvalidArgument
from parkgate.v1 import admin_pb2, catalog_pb2, common_pb2


def ts(value: datetime | None) -> Timestamp | None:
    if value is None:
        return None
    out = Timestamp()
    out.FromDatetime(value.astimezone(UTC))
    return out


def from_ts(value: Timestamp, present: bool) -> datetime | None:
    return value.ToDatetime(tzinfo=UTC) if present else None


def user(row: dict[str, Any]) -> admin_pb2.User:
    return admin_pb2.User(
        id=row["id"], username=row["username"], display_name=row["display_name"], roles=row["roles"],
        disabled=row["disabled"], locked=row["locked"], must_change_password=row["must_change_password"],
        created_at=ts(row["created_at"]), last_login_at=ts(row["last_login_at"]),
    )


def role(row: dict[str, Any]) -> admin_pb2.Role:
    return admin_pb2.Role(name=row["name"], description=row["description"], permissions=row["permissions"],
                          builtin=row["builtin"])


_DEVICE_KINDS = {"gate": admin_pb2.GATE, "handheld": admin_pb2.HANDHELD, "sales_window": admin_pb2.SALES_WINDOW,
                 "kiosk": admin_pb2.KIOSK}
_DIRECTIONS = {"in": common_pb2.IN, "out": common_pb2.OUT}


def device_kind_name(kind: int) -> str | None:
    return next((name for name, value in _DEVICE_KINDS.items() if value == kind), None)


def direction_name(direction: int) -> str | None:
    return next((name for name, value in _DIRECTIONS.items() if value == direction), None)


def device(row: dict[str, Any]) -> admin_pb2.Device:
    return admin_pb2.Device(
        id=row["id"], kind=_DEVICE_KINDS[row["kind"]], site=row["site"], park_id=row["park_id"],
        attraction_id=row["attraction_id"], direction=_DIRECTIONS.get(row["direction"], 0),
        description=row["description"], disabled=row["disabled"], registered_at=ts(row["registered_at"]),
        last_seen_at=ts(row["last_seen_at"]), language=row["language"],
    )


def device_row(msg: admin_pb2.Device) -> dict[str, Any]:
    kind = device_kind_name(msg.kind)
    if kind is None:
        raise InvalidArgument("device kind is required (gate, handheld, sales_window, kiosk)")
    if not msg.id:
        raise InvalidArgument("a device needs an id")
    return {
        "id": msg.id, "kind": kind, "site": msg.site, "park_id": msg.park_id or None,
        "attraction_id": msg.attraction_id or None, "direction": direction_name(msg.direction),
        "description": msg.description, "language": msg.language or "en",
    }


def park(row: dict[str, Any]) -> catalog_pb2.Park:
    return catalog_pb2.Park(**row)


def park_row(msg: catalog_pb2.Park) -> dict[str, Any]:
    return {"id": msg.id, "name": msg.name, "time_zone": msg.time_zone, "currency": msg.currency,
            "capacity": msg.capacity, "capacity_resume_margin": msg.capacity_resume_margin, "disabled": msg.disabled}


def attraction(row: dict[str, Any]) -> catalog_pb2.Attraction:
    return catalog_pb2.Attraction(
        id=row["id"], park_id=row["park_id"], name=row["name"], disabled=row["disabled"],
        stored_value_price=common_pb2.Money(minor_units=row["stored_value_price"], currency=row["currency"]),
    )


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
        else:
            setattr(rules, key, value)
    return rules


def product(row: dict[str, Any]) -> catalog_pb2.Product:
    return catalog_pb2.Product(
        id=row["id"], park_id=row["park_id"], name=row["name"],
        kind=catalog_pb2.ProductKind.Value(row["kind"].upper()), rules=rules_from_dict(row["rules"], row["currency"]),
        version=row["version"], on_sale=row["on_sale"], updated_at=ts(row["updated_at"]),
    )
