"""Devices, parameters, the display dictionary and the operation log (S2, S4, S5)."""

from __future__ import annotations

import itertools
import secrets
from datetime import datetime
from typing import Any

import orjson

from parkgate.server.domain import device_secrets
from parkgate.server.domain.audit_chain import ChainProblem, verify_chain
from parkgate.server.domain.audit_outbox import CallRecord
from parkgate.server.domain.errors import InvalidArgument, NotFound, Reason
from parkgate.server.domain.texts import DEFAULT_PARAMETERS
from parkgate.server.store import Database
from parkgate.server.store import audit as audit_store
from parkgate.server.store import devices as device_store
from parkgate.server.store import settings as settings_store
from parkgate.server.store.rows.admin import AuditRecord, Device, DeviceSpec, DictionaryEntry, Parameter

DEVICE_KINDS = ("gate", "handheld", "sales_window", "kiosk", "site_edge")


class AdminService:
    def __init__(self, db: Database, device_secret_key: str = "", audit_key: str = "") -> None:
        self.db = db
        self.device_secret_key = device_secret_key
        self.audit_key = audit_key

    # --- devices (S2) -------------------------------------------------------

    async def register_device(self, device: DeviceSpec) -> tuple[Device, str]:
        """Register a device; returns it and its secret (shown once, stored only as a keyed hash)."""
        if device.kind not in DEVICE_KINDS:
            raise InvalidArgument(f"device kind must be one of {', '.join(DEVICE_KINDS)}")
        if device.kind == "gate" and device.direction not in ("in", "out"):
            raise InvalidArgument("a gate needs a direction: in or out")
        secret = secrets.token_urlsafe(24)
        secret_hash = device_secrets.hash_secret(secret, self.device_secret_key)
        async with self.db.transaction() as conn:
            row = await device_store.register(conn, device, secret_hash)
        return row, secret

    async def update_device(
        self, device_id: str, *, disabled: bool | None, description: str | None, language: str | None,
        rotate_secret: bool,
    ) -> tuple[Device, str]:
        secret = secrets.token_urlsafe(24) if rotate_secret else ""
        secret_hash = device_secrets.hash_secret(secret, self.device_secret_key) if rotate_secret else None
        async with self.db.transaction() as conn:
            row = await device_store.update(
                conn, device_id, disabled=disabled, description=description, language=language,
                secret_hash=secret_hash,
            )
        if row is None:
            raise NotFound(f"no device {device_id!r}", Reason.UNKNOWN_DEVICE)
        return row, secret

    async def list_devices(self, kind: str | None, park_id: str | None) -> list[Device]:
        async with self.db.connection() as conn:
            return await device_store.list_devices(conn, kind, park_id)

    # --- parameters and dictionary (S4) -------------------------------------------

    async def list_parameters(self, prefix: str) -> list[Parameter]:
        async with self.db.connection() as conn:
            return await settings_store.list_parameters(conn, prefix)

    async def set_parameter(self, key: str, value_json: str, updated_by: str) -> Parameter:
        try:
            value = orjson.loads(value_json)
        except orjson.JSONDecodeError as exc:
            raise InvalidArgument(f"parameter {key}: the value is not JSON ({exc})") from exc
        expected = DEFAULT_PARAMETERS.get(key)
        if expected is not None and type(value) is not type(expected[0]):
            raise InvalidArgument(f"parameter {key}: expected a {type(expected[0]).__name__}")
        async with self.db.transaction() as conn:
            return await settings_store.set_parameter(conn, key, value, updated_by=updated_by)

    async def list_dictionary(self, language: str, prefix: str) -> list[DictionaryEntry]:
        async with self.db.connection() as conn:
            return await settings_store.list_dictionary(conn, language, prefix)

    async def put_dictionary_entry(self, key: str, language: str, text: str) -> None:
        if not key or not language:
            raise InvalidArgument("a dictionary entry needs a key and a language")
        async with self.db.transaction() as conn:
            await settings_store.put_dictionary_entry(conn, key, language, text)

    # --- operation log (S5) -------------------------------------------------------

    async def record_audit(self, *, call: CallRecord | None = None, **record: Any) -> None:
        """Chain the record of a call, removing what the call staged in the outbox in the same transaction."""
        async with self.db.transaction() as conn:
            if call is not None and not await audit_store.unstage(conn, call.call_id) and call.staged:
                return  # a committed call's staged record was chained by the drainer already
            await audit_store.record(conn, **record, key=self.audit_key)

    async def drain_audit_outbox(self, older_than_seconds: float) -> int:
        """Chain staged records whose call never chained them (its write failed, or its server died)."""
        async with self.db.transaction() as conn:
            return await audit_store.drain(conn, older_than_seconds=older_than_seconds, key=self.audit_key)

    async def verify_audit_log(self, start: datetime | None, end: datetime | None) -> tuple[int, int,
                                                                                             list[ChainProblem]]:
        """(records checked, chains checked, problems) for the chains of the days in [start, end]."""
        async with self.db.transaction() as conn:
            heads = await audit_store.chain_heads(conn, start, end)
            records = await audit_store.chained_records(conn, sorted(heads))
        chains = sorted(set(heads) | {r.chain for r in records})
        by_chain = {chain: list(rows) for chain, rows in itertools.groupby(records, key=lambda r: r.chain)}
        problems: list[ChainProblem] = []
        for chain in chains:  # a chain whose records are all gone still has its head
            problems += verify_chain(self.audit_key, chain, by_chain.get(chain, []), heads.get(chain))
        return len(records), len(chains), problems

    async def audit_log(
        self, *, start: datetime | None, end: datetime | None, username: str, method_contains: str,
        after: str, limit: int,
    ) -> list[AuditRecord]:
        try:
            after_id = int(after) if after else None
        except ValueError as exc:
            raise InvalidArgument("page.after is not a cursor from this log") from exc
        async with self.db.connection() as conn:
            return await audit_store.list_records(
                conn, start=start, end=end, username=username, method_contains=method_contains,
                after_id=after_id, limit=limit,
            )
