"""SQL for the site edges' last power reports (Site.ReportPower, S30; migration 0012)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from .database import Connection


@dataclass(frozen=True, slots=True)
class EdgePower:
    device_id: str
    state: str                  # parkgate.common.power.PowerState value
    battery_percent: int
    runtime_seconds: int
    source: str
    since: datetime
    detail: str
    gates_on_battery: list[str]


async def put(conn: Connection, p: EdgePower) -> bool:
    """Keep ``p`` unless a report of a later transition is already there (reports may arrive late, in any order
    across servers); True when it was kept."""
    cur = await conn.execute(
        """INSERT INTO edge_power AS e (device_id, state, battery_percent, runtime_seconds, source, since, detail,
                                        gates_on_battery)
           VALUES (%s, %s, %s, %s, %s, %s, %s, %s)
           ON CONFLICT (device_id) DO UPDATE SET
               state = excluded.state, battery_percent = excluded.battery_percent,
               runtime_seconds = excluded.runtime_seconds, source = excluded.source, since = excluded.since,
               detail = excluded.detail, gates_on_battery = excluded.gates_on_battery, reported_at = now()
           WHERE e.since <= excluded.since
           RETURNING device_id""",
        (p.device_id, p.state, p.battery_percent, p.runtime_seconds, p.source, p.since, p.detail,
         list(p.gates_on_battery)),
    )
    return await cur.fetchone() is not None


async def latest(conn: Connection) -> list[EdgePower]:
    """Every enabled edge's last report, by device id."""
    cur = await conn.execute(
        """SELECT e.device_id, e.state, e.battery_percent, e.runtime_seconds, e.source, e.since, e.detail,
                  e.gates_on_battery
           FROM edge_power e JOIN devices d ON d.id = e.device_id WHERE NOT d.disabled ORDER BY e.device_id""")
    return [EdgePower(**row) for row in await cur.fetchall()]
