"""Rows of devices, parameters, the display dictionary and the operation log."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any


@dataclass(frozen=True, slots=True)
class DeviceSpec:
    """A device as an admin registers it."""

    id: str
    kind: str
    site: str
    park_id: str | None
    attraction_id: str | None
    direction: str | None
    description: str
    language: str


@dataclass(frozen=True, slots=True)
class Device:
    id: str
    kind: str
    site: str
    park_id: str  # '' when not placed at a park
    attraction_id: str  # '' when not at an attraction
    direction: str  # '' when not a gate
    description: str
    language: str
    disabled: bool
    registered_at: datetime
    last_seen_at: datetime | None


@dataclass(frozen=True, slots=True)
class DeviceWithSecret(Device):
    """A device with the argon2 hash of its secret: what authenticating it needs."""

    secret_hash: str


@dataclass(frozen=True, slots=True)
class Parameter:
    key: str
    value: Any  # the JSON value
    description: str
    updated_at: datetime
    updated_by: str


@dataclass(frozen=True, slots=True)
class DictionaryEntry:
    key: str
    language: str
    text: str


@dataclass(frozen=True, slots=True)
class AuditRecord:
    id: int
    at: datetime
    user_id: str  # '' when the call had no user
    username: str
    device_id: str
    method: str
    outcome: str
    summary: dict[str, Any]
    peer: str
