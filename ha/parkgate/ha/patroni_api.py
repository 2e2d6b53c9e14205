"""The one edge to Patroni: its REST API (``/cluster``, ``/switchover``), nothing else.

Every node answers ``GET /cluster`` with the whole cluster as Patroni sees it
in etcd (members, roles, lag, timeline), so asking any live node is enough;
:func:`cluster_view` asks each node in turn until one answers. Errors of the
HTTP library become :class:`PatroniUnreachable` here and nowhere else.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any


class PatroniError(RuntimeError):
    """Patroni refused a request (the message carries its answer)."""


class PatroniUnreachable(PatroniError):
    """No Patroni REST API answered."""


@dataclass(frozen=True)
class Member:
    """One PostgreSQL node as Patroni reports it."""

    name: str
    role: str  # leader | sync_standby | replica | standby_leader ...
    state: str  # running | streaming | starting | stopped | ...
    host: str
    port: int
    lag: int | None  # bytes behind the leader (None: unknown, e.g. for the leader)
    timeline: int | None

    @property
    def is_leader(self) -> bool:
        return self.role == "leader" and self.state == "running"

    @property
    def is_sync(self) -> bool:
        return self.role in ("sync_standby", "quorum_standby") and self.state == "streaming"


@dataclass(frozen=True)
class ClusterView:
    """``/cluster`` of one answering node."""

    members: list[Member]
    asked: str
    raw: dict[str, Any] = field(repr=False, default_factory=dict)

    @property
    def leader(self) -> Member | None:
        return next((m for m in self.members if m.is_leader), None)

    @property
    def sync_standbys(self) -> list[Member]:
        return [m for m in self.members if m.is_sync]

    @property
    def replicas(self) -> list[Member]:
        return [m for m in self.members if m.role != "leader"]

    def healthy(self, want_sync: bool) -> bool:
        """A running leader, and (when wanted) a streaming synchronous standby."""
        return self.leader is not None and (not want_sync or bool(self.sync_standbys))


def _request(url: str, method: str = "GET", body: dict[str, Any] | None = None, timeout: float = 3.0) -> tuple[int, str]:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, resp.read().decode("utf-8", "replace")
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode("utf-8", "replace")
    except (urllib.error.URLError, OSError, TimeoutError) as exc:
        raise PatroniUnreachable(f"{url}: {getattr(exc, 'reason', exc)}") from None


def _member(m: dict[str, Any]) -> Member:
    lag = m.get("lag")
    return Member(
        name=str(m.get("name")),
        role=str(m.get("role")),
        state=str(m.get("state")),
        host=str(m.get("host")),
        port=int(m.get("port") or 0),
        lag=lag if isinstance(lag, int) else None,
        timeline=m.get("timeline"),
    )


def cluster_view(rest_urls: Iterable[str], timeout: float = 2.0) -> ClusterView:
    """``/cluster`` from the first node that answers; PatroniUnreachable if none does."""
    failures = []
    for url in rest_urls:
        try:
            status, text = _request(f"{url}/cluster", timeout=timeout)
        except PatroniUnreachable as exc:
            failures.append(str(exc))
            continue
        if status == 200:
            raw = json.loads(text)
            return ClusterView([_member(m) for m in raw.get("members", [])], asked=url, raw=raw)
        failures.append(f"{url}/cluster: HTTP {status}")
    raise PatroniUnreachable("no Patroni REST API answered: " + "; ".join(failures))


def node_state(rest_url: str, timeout: float = 2.0) -> dict[str, Any]:
    """``GET /patroni`` of one node (its own view: state, role, postmaster pid)."""
    status, text = _request(f"{rest_url}/patroni", timeout=timeout)
    try:
        return dict(json.loads(text))
    except ValueError:
        raise PatroniError(f"{rest_url}/patroni: HTTP {status}: {text[:200]}") from None


def switchover(rest_url: str, leader: str, candidate: str | None = None, timeout: float = 60.0) -> str:
    """Ask Patroni for a planned switchover now; returns Patroni's message (raises PatroniError if refused)."""
    body: dict[str, Any] = {"leader": leader}
    if candidate:
        body["candidate"] = candidate
    status, text = _request(f"{rest_url}/switchover", method="POST", body=body, timeout=timeout)
    if status != 200:
        raise PatroniError(f"switchover refused by {rest_url} (HTTP {status}): {text.strip()}")
    return text.strip()
