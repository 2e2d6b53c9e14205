"""What the cluster looks like, read from etcd: Patroni's keys and every machine's published power state.

Patroni keeps its whole picture in etcd under ``/service/<scope>/`` (``leader``:
the leader's name; ``members/<name>``: JSON with role, state, timeline and WAL
position; ``sync``: the synchronous standbys; ``status``: the leader's
position), so any server reaches it through the etcd client it already has,
without the Patroni REST ports. Power records are written by each machine that
watches a UPS (servers, database nodes: :class:`PowerRecord`) under
``/parkgate/<cluster>/power/<machine>``, attached to a lease so a dead machine's
record disappears.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Any

import orjson

from .discovery import Etcd, Registration

PATRONI_NAMESPACE = "/service/"


def power_prefix(cluster: str) -> str:
    return f"/parkgate/{cluster}/power/"


class PowerRecord(Registration):
    """This machine's power state in etcd, under a lease refreshed like a server's registration."""

    def __init__(self, etcd: Etcd, cluster: str, machine: str, record: dict[str, Any], ttl: int = 10) -> None:
        super().__init__(etcd, cluster, machine, "", ttl)
        self.key = power_prefix(cluster) + machine
        self.value = orjson.dumps(record).decode()

    async def publish(self, record: dict[str, Any]) -> None:
        """Write the new state now (under the current lease; the next turn grants one if there is none)."""
        self.value = orjson.dumps(record).decode()
        if self.lease is not None:
            await self.etcd.acall(lambda c: c.put(self.key, self.value, lease=self.lease))


async def power_records(etcd: Etcd, cluster: str) -> list[dict[str, Any]]:
    rows = await etcd.acall(lambda c: list(c.get_prefix(power_prefix(cluster))))
    out = []
    for value, _meta in rows:
        with contextlib.suppress(ValueError, TypeError):
            record = orjson.loads(value)
            if isinstance(record, dict) and record.get("machine"):
                out.append(record)
    return sorted(out, key=lambda r: str(r["machine"]))


@dataclass(frozen=True)
class NodeView:
    name: str
    role: str  # leader, sync_standby, replica
    state: str
    host: str
    lag_bytes: int  # -1: unknown
    timeline: int


@dataclass(frozen=True)
class PatroniView:
    leader: str
    members: list[NodeView] = field(default_factory=list)
    sync_standby: list[str] = field(default_factory=list)


def _host(conn_url: str) -> str:
    # postgres://HOST:PORT/postgres
    return conn_url.split("://", 1)[-1].split("/", 1)[0]


async def patroni_view(etcd: Etcd, scope: str) -> PatroniView:
    base = f"{PATRONI_NAMESPACE}{scope}/"
    rows = await etcd.acall(lambda c: [(v, m.key.decode()) for v, m in c.get_prefix(base)])
    keys = {k[len(base):]: v for v, k in rows}
    leader = (keys.get("leader") or b"").decode()
    sync: list[str] = []
    with contextlib.suppress(ValueError, TypeError, AttributeError):
        raw = orjson.loads(keys.get("sync") or b"{}").get("sync_standby") or ""
        sync = [s for s in str(raw).split(",") if s]
    optime = -1
    with contextlib.suppress(ValueError, TypeError, AttributeError):
        optime = int(orjson.loads(keys.get("status") or b"{}").get("optime", -1))
    members = []
    for key, value in sorted(keys.items()):
        if not key.startswith("members/"):
            continue
        name = key[len("members/"):]
        try:
            data = orjson.loads(value)
        except ValueError:
            continue
        position = data.get("xlog_location")
        lag = max(0, optime - int(position)) if optime >= 0 and isinstance(position, int) and name != leader else -1
        role = "leader" if name == leader else "sync_standby" if name in sync else "replica"
        members.append(NodeView(name, role, str(data.get("replication_state") or data.get("state", "")),
                                _host(str(data.get("conn_url", ""))), 0 if name == leader else lag,
                                int(data.get("timeline") or 0)))
    return PatroniView(leader, members, sync)
