"""Held checks (S15): what the control room sees of admissions a gate holds until somebody looks at the member.

Read from the database (any server sees the gates of every server), for the
live screen (:class:`parkgate.server.services.flow.LiveFlowService`) and for
``GateControl.ListHeldChecks``; the confirmation itself is
:meth:`parkgate.server.services.gates.GateHub.confirm_check`. Whether the
caller may see the member's name and photo is the RPC layer's to decide.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from parkgate.server.domain.errors import InvalidArgument, Reason
from parkgate.server.store import Database
from parkgate.server.store import held_checks as store
from parkgate.server.store.database import Connection
from parkgate.server.store.held_checks import HeldCheckRow

__all__ = ["HeldCheckRow", "HeldCheckService"]


class HeldCheckService:
    def __init__(self, db: Database, held_check_seconds: float = 60.0) -> None:
        self.db = db
        self.held_check_seconds = held_check_seconds

    async def read(self, conn: Connection, park_id: str, within_seconds: float = 0) -> list[HeldCheckRow]:
        """On a connection the caller already holds (the live screen reads its snapshot on one)."""
        within = within_seconds or self.held_check_seconds
        return await store.held_checks(conn, park_id, datetime.now(UTC) - timedelta(seconds=within))

    async def waiting(self, park_id: str, within_seconds: int = 0) -> list[HeldCheckRow]:
        if not park_id:
            raise InvalidArgument("name the park whose held checks to list", Reason.UNKNOWN_PARK)
        if within_seconds < 0:
            raise InvalidArgument("within_seconds cannot be negative")
        async with self.db.connection() as conn:
            return await self.read(conn, park_id, within_seconds)
