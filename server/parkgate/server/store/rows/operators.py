"""Rows of users, sessions, roles and permissions."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime


@dataclass(frozen=True, slots=True)
class User:
    id: str
    username: str
    display_name: str
    disabled: bool
    must_change_password: bool
    locked: bool
    created_at: datetime
    last_login_at: datetime | None
    roles: list[str]


@dataclass(frozen=True, slots=True)
class Session:
    """An open session, as the admin's session list shows it."""

    id: str
    user_id: str
    username: str
    device_id: str  # '' when the session is not bound to a device
    peer: str
    created_at: datetime
    last_seen_at: datetime | None
    expires_at: datetime


@dataclass(frozen=True, slots=True)
class Role:
    name: str
    description: str
    builtin: bool
    permissions: list[str]


@dataclass(frozen=True, slots=True)
class Permission:
    name: str
    description: str
