"""``parkgate cluster drill``: kill a part of a running cluster under load, N times, and prove nothing was lost.

One round, as a runbook:

1. wait until the cluster is whole: a leader AND a synchronous standby (Patroni
   will not promote anything else, docs/requirements.md, facts), every node streaming, every server
   SERVING;
2. start ``clients`` steady writers through all servers (:mod:`.load`): quick
   sales of one ticket each (``--load sales``, the default) or parameter
   upserts (``--load params``);
3. kill -9 the chosen part: ``primary`` (the leader's Patroni and postmaster
   together, a machine dying), ``server`` (one gRPC server, in turn),
   ``etcd-member`` (one etcd member, in turn), or ``switchover`` (a planned
   switchover, nothing killed);
4. wait for the first acknowledged write after the kill (RTO as the clients see
   it), keep writing a little, stop the writers;
5. restart what was killed (``cluster up``: only what is not running) and wait
   for the cluster to be whole again;
6. send every acknowledged sale again (same request id, through the other
   servers) and compare each reply with the first: same order, same tickets
   (mismatches must be 0); then compare every acknowledged operation with the
   database: lost (must be 0), duplicates (must be 0: for sales, tickets per
   sale fingerprint beyond one, over every order the load made; the params
   load's upserts cannot duplicate, so none are counted for it).

Each round is logged as one sentence and reported as JSON; the command exits 1
if any round lost or duplicated anything.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from . import patroni_api
from .load import Writer, login, prepare_sales, verify
from .spec import ClusterSpec
from .status import server_health
from .supervisor import ADMIN_FILE, ClusterError, Supervisor, load_secrets, load_state

log = logging.getLogger("parkgate.ha.drill")

KINDS = ("primary", "server", "etcd-member", "switchover")
LOADS = ("sales", "params", "gates")  # gates: turnstiles behind a site edge (.edge_drill)


@dataclass
class Round:
    number: int
    kind: str
    victim: str
    rto_seconds: float | None  # kill -> writes flowing again after the interruption it caused
    longest_stall_seconds: float  # the longest one client waited between two acknowledgements
    recovered_seconds: float  # kill -> the cluster whole again (leader, sync standby, all SERVING)
    acked: int
    lost: int
    #: None for the params load: an upsert keyed by the operation cannot make a second row, so there is
    #: nothing to count (the sales and gates loads count what can double: tickets, admissions)
    duplicates: int | None
    errors: dict[str, int] = field(default_factory=dict)
    new_leader: str | None = None
    #: sales load: acknowledged sales sent again after the round, and the replies unlike the first
    replayed: int = 0
    replay_mismatches: int = 0

    @property
    def ok(self) -> bool:
        return (self.lost == 0 and not self.duplicates and self.replay_mismatches == 0
                and self.rto_seconds is not None)

    def sentence(self) -> str:
        rto = "no write succeeded" if self.rto_seconds is None else f"RTO {self.rto_seconds:.1f}s"
        leader = f", leader now {self.new_leader}" if self.new_leader else ""
        errors = ", ".join(f"{k} {v}" for k, v in sorted(self.errors.items())) or "none"
        return (f"round {self.number}: {self.kind} {self.victim} -> {rto}, longest stall "
                f"{self.longest_stall_seconds:.1f}s, {self.acked} acknowledged, {self.lost} lost, "
                f"{'no duplicates counted (upserts)' if self.duplicates is None else f'{self.duplicates} duplicated'}, "
                f"{self.replayed} replayed ({self.replay_mismatches} "
                f"replies unlike the first), client errors: {errors}, whole again after "
                f"{self.recovered_seconds:.1f}s{leader}")


def kill_node(spec: ClusterSpec, data_dir: Path, name: str) -> None:
    """kill -9 a node's Patroni and its postmaster together."""
    pids = [load_state(data_dir).procs[name].pid]
    with contextlib.suppress(OSError, ValueError, IndexError):
        pids.append(int((spec.node_dir(name) / "data" / "postmaster.pid").read_text().split()[0]))
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def kill_process(data_dir: Path, name: str) -> None:
    p = load_state(data_dir).procs[name]
    if p.alive():
        os.kill(p.pid, signal.SIGKILL)


def whole(spec: ClusterSpec) -> bool:
    """A leader, a synchronous standby (with 2+ nodes), every node streaming, every server SERVING."""
    try:
        view = patroni_api.cluster_view([n.rest_url for n in spec.postgres], timeout=1)
    except patroni_api.PatroniError:
        return False
    return (view.healthy(want_sync=len(spec.postgres) > 1) and len(view.members) == len(spec.postgres)
            and all(m.state in ("running", "streaming") for m in view.members)
            and all(server_health(s.address) == "SERVING" for s in spec.servers))


async def _until(check: Callable[[], bool], timeout: float, what: str) -> float:
    started = time.monotonic()
    while not await asyncio.to_thread(check):
        if time.monotonic() - started > timeout:
            raise ClusterError(f"drill: timed out after {timeout:.0f}s waiting for {what}")
        await asyncio.sleep(0.25)
    return time.monotonic() - started


class Drill:
    """Runs rounds against the cluster in ``data_dir`` (which ``cluster up`` started)."""

    def __init__(self, data_dir: Path, kind: str, *, clients: int = 4, settle: float = 2.0,
                 timeout: float = 120.0, load: str = "sales", say: Callable[[str], None] | None = None) -> None:
        if kind not in KINDS:
            raise ValueError(f"--kill: one of {', '.join(KINDS)}, not {kind!r}")
        self.data_dir = data_dir
        self.kind = kind
        if load not in LOADS:
            raise ValueError(f"--load: one of {', '.join(LOADS)}, not {load!r}")
        self.load = load
        if load == "gates" and kind != "primary":
            raise ValueError("--load gates: only with --kill primary")
        self._seller: tuple[str, str] | None = None  # (token, product) for the sales load
        self.clients = clients
        self.settle = settle
        self.timeout = timeout
        self.say = say or (lambda s: log.info("%s", s))
        state = load_state(data_dir)
        self.spec = state.spec
        if kind == "server" and len(self.spec.servers) < 2:
            raise ClusterError("drill --kill server needs 2 servers or more (the clients fail over to another)")
        if kind == "etcd-member" and len(self.spec.etcd) < 3:
            raise ClusterError("drill --kill etcd-member needs 3 etcd members (1 member is a single point of failure)")
        if kind in ("primary", "switchover") and len(self.spec.postgres) < 2:
            raise ClusterError(f"drill --kill {kind} needs 2 PostgreSQL nodes or more")
        self.dsn = self.spec.server_dsn(load_secrets(data_dir).app)
        self.password = (data_dir / ADMIN_FILE).read_text().strip()
        self.run_id = uuid.uuid4().hex[:8]

    def _victim(self, number: int) -> str:
        if self.kind in ("primary", "switchover"):
            view = patroni_api.cluster_view([n.rest_url for n in self.spec.postgres])
            if view.leader is None:
                raise ClusterError("drill: no leader")
            return view.leader.name
        members = self.spec.servers if self.kind == "server" else self.spec.etcd
        return members[(number - 1) % len(members)].name

    def _strike(self, victim: str) -> None:
        if self.kind == "primary":
            kill_node(self.spec, self.data_dir, victim)
        elif self.kind == "switchover":
            view = patroni_api.cluster_view([n.rest_url for n in self.spec.postgres])
            rest = {n.name: n.rest_url for n in self.spec.postgres}
            candidate = view.sync_standbys[0].name if view.sync_standbys else None
            patroni_api.switchover(rest[victim], victim, candidate)
        else:
            kill_process(self.data_dir, victim)

    async def round(self, number: int) -> Round:
        await _until(lambda: whole(self.spec), self.timeout, "the cluster to be whole before the round")
        victim = self._victim(number)
        servers = [s.address for s in self.spec.servers]
        product = None
        if self.load == "sales":
            if self._seller is None:
                self._seller = await prepare_sales(servers[0], self.password, self.run_id)
            token, product = self._seller
        else:
            token = await login(servers[0], self.password)
        prefix = f"drill_{self.run_id}_{number}"
        writer = Writer(servers, token, prefix, clients=self.clients, sell=product)
        writer.start()
        try:
            await asyncio.sleep(self.settle)
            struck = time.monotonic()
            await asyncio.to_thread(self._strike, victim)
            done = time.monotonic()  # a switchover returns when it is over; a kill at once
            for _ in range(int(self.timeout / 0.2)):
                if writer.result.first_ack_after(done + 0.05) is not None:
                    break
                await asyncio.sleep(0.2)
            await asyncio.sleep(self.settle)
        finally:
            result = await writer.stop()
        if self.kind != "switchover":
            await asyncio.to_thread(Supervisor(self.spec, say=lambda s: None).up, self.timeout)
        await _until(lambda: whole(self.spec), self.timeout, "the cluster to be whole again")
        recovered = time.monotonic() - struck
        check = await asyncio.to_thread(lambda: verify(self.dsn, prefix, result.acked, sales=self.load == "sales"))
        first = result.resumed_after(struck)
        leader = None
        if self.kind in ("primary", "switchover"):
            view = patroni_api.cluster_view([n.rest_url for n in self.spec.postgres])
            leader = view.leader.name if view.leader else None
        r = Round(number=number, kind=self.kind, victim=victim,
                  rto_seconds=None if first is None else round(first - struck, 2),
                  longest_stall_seconds=round(result.stall, 2), recovered_seconds=round(recovered, 1),
                  acked=check["acked"], lost=check["lost"], duplicates=check.get("duplicates"),
                  errors=dict(result.errors), new_leader=leader, replayed=result.replayed,
                  replay_mismatches=len(result.replay_mismatches))
        self.say(r.sentence())
        return r

    async def run(self, rounds: int) -> list[Round]:
        return [await self.round(i + 1) for i in range(rounds)]


def report(rounds: list[Round]) -> dict[str, Any]:
    rtos = [r.rto_seconds for r in rounds if r.rto_seconds is not None]
    return {
        "rounds": [asdict(r) for r in rounds],
        "summary": {
            "rounds": len(rounds),
            "ok": all(r.ok for r in rounds),
            "lost": sum(r.lost for r in rounds),
            "duplicates": sum(r.duplicates or 0 for r in rounds),
            "replay_mismatches": sum(r.replay_mismatches for r in rounds),
            "acked": sum(r.acked for r in rounds),
            "rto_max_seconds": max(rtos) if rtos else None,
            "rto_mean_seconds": round(sum(rtos) / len(rtos), 2) if rtos else None,
            "longest_stall_seconds": max((r.longest_stall_seconds for r in rounds), default=0.0),
        },
    }


def render(rep: dict[str, Any], *, rounds: bool = True) -> str:
    """The report for people: one sentence per round (unless already said), then the verdict."""
    s = rep["summary"]
    lines = [Round(**r).sentence() for r in rep["rounds"]] if rounds else []
    lines.append(f"{'PASS' if s['ok'] else 'FAIL'}: {s['rounds']} rounds, {s['acked']} acknowledged, "
                 f"{s['lost']} lost, {s['duplicates']} duplicated; RTO max {s['rto_max_seconds']}s "
                 f"mean {s['rto_mean_seconds']}s; longest client stall {s['longest_stall_seconds']}s")
    return "\n".join(lines)
