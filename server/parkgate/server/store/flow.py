"""SQL of the live flow (S26): the counters and alerts servers flush, and what a snapshot reads.

Writes come from :class:`parkgate.server.services.flow.FlowRecorder` about once
a second per server (never from the gate pipeline's own transaction); reads
from :class:`parkgate.server.services.flow.LiveFlowService`. Every read is
bounded by a time window and an index.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from parkgate.server.domain.flow import FlowCount

from .database import Connection

#: NOTIFYed with a park id after a flush that changed its counters or alerts.
FLOW_CHANNEL = "parkgate_flow"


@dataclass(frozen=True, slots=True)
class AlertRow:
    at: datetime
    park_id: str
    kind: str
    device_id: str
    reason: str
    request_id: str
    detail: str
    server_id: str


@dataclass(frozen=True, slots=True)
class SiteRow:
    device_id: str
    site: str
    last_contact: datetime | None


@dataclass(frozen=True, slots=True)
class WindowSales:
    device_id: str
    orders: int
    amount: int
    currency: str


async def add_counts(conn: Connection, rows: Sequence[FlowCount]) -> None:
    """Add to the counters set-wise (two servers adding to one row just add up)."""
    if not rows:
        return
    await conn.execute(
        """INSERT INTO flow_counts AS f (park_id, minute, device_id, kind, reason, n, persons)
           SELECT * FROM unnest(%s::text[], %s::timestamptz[], %s::text[], %s::text[], %s::text[], %s::bigint[],
                                %s::bigint[])
           ORDER BY 1, 2, 3, 4, 5
           ON CONFLICT (park_id, minute, device_id, kind, reason)
           DO UPDATE SET n = f.n + excluded.n, persons = f.persons + excluded.persons""",
        ([r.park_id for r in rows], [r.minute for r in rows], [r.device_id for r in rows], [r.kind for r in rows],
         [r.reason for r in rows], [r.n for r in rows], [r.persons for r in rows]),
    )


async def add_alerts(conn: Connection, rows: Sequence[AlertRow]) -> None:
    if not rows:
        return
    await conn.execute(
        """INSERT INTO flow_alerts (at, park_id, kind, device_id, reason, request_id, detail, server_id)
           SELECT * FROM unnest(%s::timestamptz[], %s::text[], %s::text[], %s::text[], %s::text[], %s::text[],
                                %s::text[], %s::text[])""",
        ([r.at for r in rows], [r.park_id for r in rows], [r.kind for r in rows], [r.device_id for r in rows],
         [r.reason for r in rows], [r.request_id for r in rows], [r.detail for r in rows],
         [r.server_id for r in rows]),
    )


async def notify_flow(conn: Connection, park_ids: Sequence[str]) -> None:
    if park_ids:
        await conn.execute("SELECT pg_notify(%s, p) FROM unnest(%s::text[]) AS p", (FLOW_CHANNEL, list(park_ids)))


async def forget_before(conn: Connection, before: datetime) -> int:
    """Retention: drop counters and alerts older than ``before``; returns the rows dropped."""
    counts = await conn.execute("DELETE FROM flow_counts WHERE minute < %s", (before,))
    alerts = await conn.execute("DELETE FROM flow_alerts WHERE at < %s", (before,))
    return (counts.rowcount or 0) + (alerts.rowcount or 0)


async def counts_since(conn: Connection, park_id: str, since: datetime) -> list[FlowCount]:
    cur = await conn.execute(
        """SELECT park_id, minute, device_id, kind, reason, n, persons FROM flow_counts
           WHERE park_id = %s AND minute >= %s""",
        (park_id, since),
    )
    return [FlowCount(**row) for row in await cur.fetchall()]


async def alerts_since(conn: Connection, park_id: str, since: datetime, limit: int = 50) -> list[AlertRow]:
    cur = await conn.execute(
        """SELECT at, park_id, kind, device_id, reason, request_id, detail, server_id FROM flow_alerts
           WHERE park_id = %s AND at >= %s ORDER BY at DESC, id DESC LIMIT %s""",
        (park_id, since, limit),
    )
    return [AlertRow(**row) for row in await cur.fetchall()]


async def site_edges(conn: Connection, park_id: str | None = None) -> list[SiteRow]:
    """Site edge devices of the park (or of no park; every edge when ``park_id`` is None) by their last contact."""
    cur = await conn.execute(
        """SELECT id AS device_id, site, last_seen_at AS last_contact FROM devices
           WHERE kind = 'site_edge' AND (%s::text IS NULL OR park_id = %s OR park_id IS NULL) AND NOT disabled
           ORDER BY id""",
        (park_id, park_id),
    )
    return [SiteRow(**row) for row in await cur.fetchall()]


async def sales_by_window(conn: Connection, park_id: str, since: datetime) -> list[WindowSales]:
    """Orders taken since ``since`` at the park's sales windows."""
    cur = await conn.execute(
        """SELECT o.window_device_id AS device_id, count(*) AS orders, sum(o.total)::bigint AS amount, o.currency
           FROM orders o JOIN devices d ON d.id = o.window_device_id
           WHERE d.park_id = %s AND o.created_at >= %s GROUP BY o.window_device_id, o.currency
           ORDER BY o.window_device_id""",
        (park_id, since),
    )
    return [WindowSales(**row) for row in await cur.fetchall()]
