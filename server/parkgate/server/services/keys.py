"""Ticket signing keys: rotate, retire, revoke, without restarting a server or a gate.

A key is ACTIVE (signs new codes), RETIRED (signs nothing new, its codes stay
valid) or REVOKED (every code it signed is refused: the key leaked). Exactly
one key is active, so a rotation adds the new key and retires the old one in
one transaction, and revoking the active key rotates first: selling never
stops. The change is announced on the park-state channel; each server reloads
its keyring and sends UPDATE_KEYS with the keys to every gate it holds
(services/gates.py), which is how offline gates learn to refuse a revoked key.
"""

from __future__ import annotations

from dataclasses import dataclass

from parkgate import native
from parkgate.native._format import MAX_KEY_ID
from parkgate.server.domain.errors import Conflict, InvalidArgument, NotFound, Reason
from parkgate.server.store import Database
from parkgate.server.store import keys as store
from parkgate.server.store import reissue as reissue_store
from parkgate.server.store import sales as sales_store
from parkgate.server.store.database import Connection
from parkgate.server.store.keys import KeyRow


class KeyService:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def list_keys(self) -> list[KeyRow]:
        async with self.db.connection() as conn:
            return await store.list_keys(conn)

    async def rotate(self) -> KeyRow:
        async with self.db.transaction() as conn:
            return await self._rotate(conn, await store.lock_keys(conn))

    async def retire(self, key_id: int) -> KeyRow:
        return await self._change(key_id, "retired")

    async def revoke(self, key_id: int) -> KeyRow:
        return await self._change(key_id, "revoked")

    async def reissue_ticket(self, *, serial: int, code: str, note: str) -> Reissued:
        """A leaked ticket code: the ticket gets a new serial and code, the old code is refused everywhere.

        The old ticket is voided in the same transaction as the new one is
        written (same order, rights and uses so far), so online the old code
        is refused at once (VOIDED); its serial is announced like a key change,
        and every connected gate gets it in UPDATE_KEYS, so offline gates refuse
        it too (CODE_REVOKED).
        """
        if serial <= 0 and not code:
            raise InvalidArgument("name the ticket by its serial or its code")
        async with self.db.transaction() as conn:
            old = await reissue_store.ticket_for_update(conn, serial=serial, code=code.strip())
            if old is None:
                raise NotFound(f"no ticket {serial or code!r}", Reason.UNKNOWN_TICKET)
            if old.state != "valid":
                raise Conflict(f"ticket {old.serial} is {old.state}: nothing to reissue",
                               Reason.VOIDED if old.state == "voided" else Reason.REFUNDED)
            row = await sales_store.active_signing_key(conn)
            if row is None:
                raise Conflict("no active ticket signing key", Reason.BAD_CONFIGURATION)
            key = native.SigningKey(row.key_id, bytes(row.seed))
            new_serial = (await sales_store.next_serials(conn, 1))[0]
            # The new code carries exactly what the old one did, under the new serial and the active key.
            new_code = native.sign(key, native.decode(old.code)._replace(key_id=key.key_id, serial=new_serial))
            ticket_id = await reissue_store.reissue(conn, old.id, serial=new_serial, key_id=key.key_id,
                                                    code=new_code, note=note)
            await store.notify_keys_changed(conn)
        return Reissued(old.serial, new_serial, new_code, ticket_id)

    async def _change(self, key_id: int, state: str) -> KeyRow:
        async with self.db.transaction() as conn:
            keys = await store.lock_keys(conn)
            key = next((k for k in keys if k.key_id == key_id), None)
            if key is None:
                raise NotFound(f"no signing key {key_id}", Reason.UNKNOWN_KEY)
            if key.state == "revoked":
                raise Conflict(f"key {key_id} is revoked already: revoking is for good", Reason.REVOKED_KEY)
            if key.state == "active":  # a new key takes over first: selling goes on
                await self._rotate(conn, keys)
            await store.set_state(conn, key_id, state)
            await store.notify_keys_changed(conn)
            return next(k for k in await store.list_keys(conn) if k.key_id == key_id)

    async def _rotate(self, conn: Connection, keys: list[KeyRow]) -> KeyRow:
        new_id = max((k.key_id for k in keys), default=0) + 1
        if new_id > MAX_KEY_ID:
            raise Conflict("every key id is used up", Reason.KEY_IN_USE)
        for key in keys:
            if key.state == "active":
                await store.set_state(conn, key.key_id, "retired")
        key = native.SigningKey.generate(new_id)
        await sales_store.add_signing_key(conn, key.key_id, key.seed, key.public_key)
        await store.notify_keys_changed(conn)
        return next(k for k in await store.list_keys(conn) if k.key_id == new_id)


@dataclass(frozen=True, slots=True)
class Reissued:
    revoked_serial: int
    serial: int
    code: str
    ticket_id: str
