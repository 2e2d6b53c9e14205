"""Which gates are connected to this server, written to the database in batches (group commit).

After a server restart hundreds of gates connect within a second; a
transaction (and a WAL flush) per gate made the connections queue behind
each other for the pool. Here every connect and disconnect joins the batch
gathered while the previous one is written (:class:`.batching.Batched`), and
a batch is one transaction: a storm of 200 gates costs a handful of commits.
Each caller still waits for its own write, so a gate is recorded as
connected before its welcome, as before; changes keep the order they were
asked in.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from parkgate.server.store import Database
from parkgate.server.store import gates as store
from parkgate.server.store.database import Connection

from .batching import Batched


@dataclass(frozen=True, slots=True)
class _Change:
    kind: Literal["connected", "disconnected"]
    device_id: str
    park_id: str


class GatePresence:
    def __init__(self, db: Database, server_id: str) -> None:
        self.db = db
        self.server_id = server_id
        self._write = Batched(self._write_batch, "gate-presence")

    async def connected(self, device_id: str, park_id: str) -> None:
        """Record the gate as connected here; returns once written (raises what the database raised)."""
        await self._write(_Change("connected", device_id, park_id))

    async def disconnected(self, device_id: str) -> None:
        await self._write(_Change("disconnected", device_id, ""))

    async def _write_batch(self, batch: list[_Change]) -> list[None]:
        async def apply(conn: Connection) -> None:
            # runs of the same kind as one statement each, in the order asked (a gate may come and go)
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

        await self.db.run(apply, what="gate connections")
        return [None] * len(batch)
