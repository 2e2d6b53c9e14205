"""Which gates are connected to this server, written to the database in batches (group commit).

After a server restart hundreds of gates connect within a second; a
transaction (and a WAL flush) per gate made the connections queue behind
each other for the pool. Here every connect and disconnect joins the batch
being gathered while the previous one is written, and a batch is one
transaction: a storm of 200 gates costs a handful of commits. Each caller
still waits for its own write, so a gate is recorded as connected before
its welcome, as before; operations stay in the order they were asked for.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import logging
from dataclasses import dataclass, field
from typing import Literal

from parkgate.server.store import Database
from parkgate.server.store import gates as store
from parkgate.server.store.database import Connection

log = logging.getLogger(__name__)


@dataclass(slots=True)
class _Change:
    kind: Literal["connected", "disconnected"]
    device_id: str
    park_id: str
    done: asyncio.Future[None] = field(default_factory=lambda: asyncio.get_running_loop().create_future())


class GatePresence:
    def __init__(self, db: Database, server_id: str) -> None:
        self.db = db
        self.server_id = server_id
        self._waiting: list[_Change] = []
        self._writer: asyncio.Task[None] | None = None

    async def connected(self, device_id: str, park_id: str) -> None:
        """Record the gate as connected here; returns once written (raises what the database raised)."""
        await self._submit(_Change("connected", device_id, park_id))

    async def disconnected(self, device_id: str) -> None:
        await self._submit(_Change("disconnected", device_id, ""))

    async def _submit(self, change: _Change) -> None:
        self._waiting.append(change)
        if self._writer is None or self._writer.done():
            # a context of its own: the writer outlives the call that started it and must not stage that
            # call's operation-log record (domain/audit_outbox.py) in the batches it writes for others
            self._writer = asyncio.create_task(self._write_all(), name="gate-presence", context=contextvars.Context())
        # shielded: a caller that gives up (its stream cancelled) does not cancel the others' write
        await asyncio.shield(change.done)

    async def _write_all(self) -> None:
        while self._waiting:
            batch, self._waiting = self._waiting, []
            try:
                await self.db.run(functools.partial(self._apply, batch=batch), what="gate connections")
            except Exception as exc:  # every caller of the batch gets the database's error
                for change in batch:
                    if not change.done.done():
                        change.done.set_exception(exc)
                continue
            for change in batch:
                if not change.done.done():
                    change.done.set_result(None)

    async def _apply(self, conn: Connection, *, batch: list[_Change]) -> None:
        """Runs of the same kind as one statement each, in the order asked (a gate may come and go)."""
        start = 0
        while start < len(batch):
            end = start
            while end < len(batch) and batch[end].kind == batch[start].kind:
                end += 1
            run = batch[start:end]
            if run[0].kind == "connected":
                await store.gates_connected(conn, self.server_id, {c.device_id: c.park_id for c in run})
            else:
                await store.gates_disconnected(conn, self.server_id, [c.device_id for c in run])
            start = end
