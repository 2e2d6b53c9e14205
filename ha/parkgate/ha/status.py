"""``parkgate cluster status``: what Patroni says about the database, and what each server says about itself.

Three sources, all the systems' own: Patroni's ``/cluster`` (leader, replicas,
lag, which replica is the synchronous standby), each gRPC server's
standard health check (SERVING only while it reaches a writable primary) and
each etcd member's ``/health``.
Process liveness comes from the state file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from . import patroni_api
from .etcd_access import etcd_healthy
from .health import server_health
from .supervisor import load_state

__all__ = ["collect", "server_health"]


def collect(data_dir: Path) -> dict[str, Any]:
    """The whole status as plain data (what ``--json`` prints)."""
    state = load_state(data_dir)
    spec = state.spec
    procs = {name: {"kind": p.kind, "pid": p.pid, "alive": p.alive()} for name, p in state.procs.items()}
    out: dict[str, Any] = {"name": spec.name, "data_dir": str(spec.data_dir), "processes": procs}
    try:
        view = patroni_api.cluster_view([n.rest_url for n in spec.postgres], timeout=1.5)
    except patroni_api.PatroniError as exc:
        out["database"] = {"error": str(exc), "leader": None, "members": []}
    else:
        out["database"] = {
            "leader": view.leader.name if view.leader else None,
            "sync_standby": [m.name for m in view.sync_standbys],
            "members": [
                {"name": m.name, "role": m.role, "state": m.state, "host": m.host, "port": m.port,
                 "lag": m.lag, "timeline": m.timeline}
                for m in view.members
            ],
        }
    out["servers"] = [
        {"name": s.name, "address": s.address, "health": server_health(s.address)} for s in spec.servers
    ]
    # etcd's own /health, over https with the tools' certificate (etcd refuses clients without one)
    out["etcd"] = [{"name": e.name, "endpoint": spec.etcd_client_url(e),
                    "health": "healthy" if etcd_healthy(spec, e) else "unhealthy or unreachable"} for e in spec.etcd]
    return out


def render(status: dict[str, Any]) -> str:
    """A few lines a person reads at a glance."""
    db = status["database"]
    lines = [f"cluster {status['name']} ({status['data_dir']})"]
    if db.get("error"):
        lines.append(f"  database: {db['error']}")
    else:
        lines.append(f"  leader: {db['leader'] or 'NONE'}   synchronous standby: {', '.join(db['sync_standby']) or 'NONE'}")
        for m in db["members"]:
            lag = "" if m["lag"] is None else f" lag {m['lag']} B"
            lines.append(f"    {m['name']:<8} {m['role']:<13} {m['state']:<10} {m['host']}:{m['port']} "
                         f"tl {m['timeline']}{lag}")
    for s in status["servers"]:
        lines.append(f"  server {s['name']:<6} {s['address']:<20} {s['health']}")
    for e in status["etcd"]:
        lines.append(f"  etcd   {e['name']:<6} {e['endpoint']:<28} {e['health']}")
    dead = [f"{n} ({p['kind']})" for n, p in status["processes"].items() if not p["alive"]]
    if dead:
        lines.append(f"  not running: {', '.join(dead)} (`parkgate cluster up` starts them again)")
    return "\n".join(lines)
