"""Rows of the site side: site keys and serial blocks, what the feed sends, forward cursors, conflicts."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime


@dataclass(frozen=True, slots=True)
class SiteKey:
    key_id: int
    site: str
    state: str


@dataclass(frozen=True, slots=True)
class SerialBlock:
    key_id: int
    serial_first: int
    serial_last: int


@dataclass(frozen=True, slots=True)
class FeedKey:
    key_id: int
    public_key: bytes
    state: str


@dataclass(frozen=True, slots=True)
class FeedCard:
    card_uid: str
    ticket_id: str


@dataclass(frozen=True, slots=True)
class FeedOperator:
    username: str
    password_hash: str
    permissions: list[str]
    disabled: bool
    display_name: str


@dataclass(frozen=True, slots=True)
class FeedDevice:
    id: str
    kind: str
    secret_hash: str
    park_id: str
    attraction_id: str
    direction: str
    disabled: bool


@dataclass(frozen=True, slots=True)
class FeedRemoval:
    kind: str      # 'card' or 'holiday'
    key: str       # the card UID, or the holiday's ISO date
    park_id: str


@dataclass(frozen=True, slots=True)
class EarlierAdmission:
    """The first admission that used a ticket: where and when, for a conflict row."""

    site: str
    device_id: str
    at: datetime


@dataclass(frozen=True, slots=True)
class ConflictRow:
    ticket_id: str
    park_id: str
    first_site: str
    first_device_id: str
    first_at: datetime
    second_site: str
    second_device_id: str
    second_at: datetime
    recorded_at: datetime
