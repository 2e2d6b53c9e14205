"""``parkgate cluster drill --kill primary --load gates``: turnstiles behind a real site edge through a failover.

One round, as a runbook:

1. wait until the cluster is whole; sell fresh single-use tickets, register a
   ``SITE_EDGE`` device and gate devices of one new site (per run, so rounds and
   runs never share a store or a device);
2. start a real edge (``parkgate site run``) pointed at every server of the
   cluster, with its own state folder, and wait until it listens, followed the
   feed and holds a site key (so it can decide alone);
3. every gate holds a real ``Gate.Connect`` stream to the edge and presents one
   ticket after another (:class:`.gate_load.GateLoad`);
4. kill -9 the primary, let ``cluster up`` restart it, wait until the cluster is
   whole, keep the gates going a little, stop them;
5. wait until the edge's forward queue is empty, then compare every admission
   a gate was told "allow" with the ``validations`` table: lost and doubled.

What a person at the turnstile sees is the figure that matters: the longest
wait for a decision, and refusals the failover caused (the database or the
server "unavailable/overloaded", or no answer in the gate's deadline). The edge
is there precisely so both stay at their targets (<= 1 s and 0) while the
cluster elects a new leader.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from parkgate.common.channels import open_aio_channel
from parkgate.common.tls import DevPki
from parkgate.server.pg import free_port
from parkgate.v1 import admin_pb2, admin_pb2_grpc

from . import patroni_api
from .gate_load import PARK, GateLoad, prepare_gates, verify_admissions
from .load import login, prepare_sales
from .supervisor import ClusterError, Supervisor, trust_cluster_ca

if TYPE_CHECKING:
    from .drill import Drill

# What a gate shows as a refusal the failover caused (the rest are the ticket's own answers).
FAILOVER_REASONS = ("DATABASE_UNAVAILABLE", "SERVER_OVERLOADED", "DEADLINE_EXCEEDED")


@dataclass
class GatesRound:
    number: int
    victim: str
    gates: int
    decisions: int
    longest_wait_seconds: float  # one person's wait from presenting the ticket to the decision
    longest_wait_from_kill_seconds: float  # when that person presented the ticket, relative to the kill
    failover_refusals: int  # DATABASE_UNAVAILABLE / SERVER_OVERLOADED / no answer within the gate's deadline
    acked: int  # admissions a gate was told "allow"
    lost: int  # ... and not in the cluster's database after the edge forwarded everything
    duplicates: int  # tickets counted twice at the cluster
    forwarded_after_seconds: float  # kill -> the edge's forward queue empty
    refusals: dict[str, int] = field(default_factory=dict)
    other_denials: dict[str, int] = field(default_factory=dict)
    new_leader: str | None = None

    @property
    def ok(self) -> bool:
        return self.lost == 0 and self.duplicates == 0 and self.acked > 0

    def sentence(self) -> str:
        return (f"round {self.number}: primary {self.victim} killed with {self.gates} gates behind a site edge -> "
                f"longest wait for a decision {self.longest_wait_seconds:.2f}s (ticket presented "
                f"{self.longest_wait_from_kill_seconds:+.1f}s from the kill), {self.failover_refusals} refusals "
                f"caused by the failover, {self.decisions} decisions, {self.acked} admissions acknowledged, "
                f"{self.lost} lost, {self.duplicates} doubled at the cluster (queue empty "
                f"{self.forwarded_after_seconds:.1f}s after the kill), leader now {self.new_leader}")


class SiteEdge:
    """``parkgate site run`` as a subprocess with its own folder; its log goes to a file, not to the drill's output."""

    def __init__(self, folder: Path, device_id: str, secret: str, servers: list[str], pki: DevPki) -> None:
        self.folder, self.device_id, self.secret, self.servers = folder, device_id, secret, servers
        self.pki = pki  # the cluster's development CA: the edge listens with its certificate
        self.address = f"127.0.0.1:{free_port()}"
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def log(self) -> Path:
        return self.folder / "edge.log"

    def start(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        secret_file = self.folder / "edge.secret"
        secret_file.write_text(self.secret + "\n")
        secret_file.chmod(0o600)
        servers = ", ".join(f'"{s}"' for s in self.servers)
        config = self.folder / "site.toml"
        # The edge's defaults, except a quick reconnect: the drill wants the edge back on the new leader soon.
        config.write_text(f'[site]\ndevice_id = "{self.device_id}"\nsecret_file = "{secret_file}"\n'
                          f'servers = [{servers}]\nlisten = "{self.address}"\n'
                          f'tls_cert_file = "{self.pki.cert_file}"\ntls_key_file = "{self.pki.key_file}"\n'
                          f'state_dir = "{self.folder / "state"}"\nreconnect_min_seconds = 0.2\n'
                          'reconnect_max_seconds = 1.0\n')
        with open(self.log, "ab") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "parkgate.common.cli", "site", "run", "--config", str(config)],
                stdout=out, stderr=out, start_new_session=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})

    def _text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def store_count(self, table: str) -> int:
        path = self.folder / "state" / "site.db"
        if not path.exists():
            return 0
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)
        try:
            return int(db.execute(f"SELECT count(*) FROM {table}").fetchone()[0])  # table: one of our two names
        except sqlite3.OperationalError:
            return 0
        finally:
            db.close()

    def decided_alone(self) -> int:
        """Decisions the edge made without the cluster (offline, on battery, or the cluster too slow)."""
        return self.store_count("decisions WHERE offline = 1")  # the table name and a fixed condition

    def _alive(self) -> None:
        if self.process is not None and self.process.poll() is not None:
            raise ClusterError(f"drill: the site edge exited ({self.process.returncode}); its log: {self.log}")

    async def ready(self, timeout: float) -> None:
        """Listening, the feed followed, a site key held: able to decide on its own."""
        deadline = time.monotonic() + timeout
        while not ("listening on" in (t := self._text()) and "feed caught up" in t and self.store_count("serials")):
            self._alive()
            if time.monotonic() > deadline:
                raise ClusterError(f"drill: the site edge was not ready after {timeout:.0f}s; its log: {self.log}")
            await asyncio.sleep(0.2)

    async def drained(self, timeout: float) -> None:
        """Wait until every record the edge holds for the cluster was forwarded and acknowledged."""
        deadline = time.monotonic() + timeout
        while self.store_count("outbox"):
            self._alive()
            if time.monotonic() > deadline:
                raise ClusterError(f"drill: the edge still holds {self.store_count('outbox')} records after "
                                   f"{timeout:.0f}s; its log: {self.log}")
            await asyncio.sleep(0.2)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        self.process = None


def _leader_other_than(drill: Drill, victim: str) -> bool:
    try:
        view = patroni_api.cluster_view([n.rest_url for n in drill.spec.postgres], timeout=1)
    except patroni_api.PatroniError:
        return False
    return view.leader is not None and view.leader.name != victim


async def register_edge(address: str, password: str, device_id: str, site: str) -> str:
    md = (("authorization", f"Bearer {await login(address, password)}"),)
    async with open_aio_channel(address) as ch:
        reply = await admin_pb2_grpc.AdminStub(ch).RegisterDevice(admin_pb2.RegisterDeviceRequest(
            device=admin_pb2.Device(id=device_id, kind=admin_pb2.SITE_EDGE, park_id=PARK, site=site)),
            metadata=md, timeout=30)
    return str(reply.secret)


async def gates_round(drill: Drill, number: int, *, gates: int = 4, pause: float = 0.2) -> GatesRound:
    """One primary kill with ``gates`` turnstiles behind a fresh site edge (runbook in the module docstring)."""
    from .drill import _until, whole

    await _until(lambda: whole(drill.spec), drill.timeout, "the cluster to be whole before the round")
    victim = drill._victim(number)
    servers = [s.address for s in drill.spec.servers]
    tag = f"{drill.run_id}-{number}"
    site = f"drill-site-{tag}"
    token, product = await prepare_sales(servers[0], drill.password, drill.run_id)
    secret = await register_edge(servers[0], drill.password, f"drill-edge-{tag}", site)
    # Enough tickets for a round of about 90 s (a failover here takes 20-40 s) at a turnstile's pace; a ticket
    # is used once, and a gate that runs out simply stops presenting.
    tickets = int(gates * 90 / pause)
    devices, codes = await prepare_gates(servers[0], drill.password, token, product, tag, gates, tickets, site=site)
    edge = SiteEdge(drill.data_dir / "drill-edges" / tag, f"drill-edge-{tag}", secret, servers,
                    trust_cluster_ca(drill.spec))
    edge.start()
    try:
        await edge.ready(drill.timeout)
        load = GateLoad([edge.address], devices, codes, pause=pause, connected_first=True)
        load.start()
        try:
            await asyncio.sleep(drill.settle)
            struck = time.monotonic()
            await asyncio.to_thread(drill._strike, victim)
            # As the sales drill: the killed node comes back only after another took over, a real failover.
            await _until(lambda: _leader_other_than(drill, victim), drill.timeout, "a new leader")
            await asyncio.to_thread(Supervisor(drill.spec, say=lambda s: None).up, drill.timeout)
            await _until(lambda: whole(drill.spec), drill.timeout, "the cluster to be whole again")
            await asyncio.sleep(drill.settle)
        finally:
            result = await load.stop()
        await edge.drained(drill.timeout)
        forwarded = time.monotonic() - struck
    finally:
        edge.stop()
    check = await asyncio.to_thread(verify_admissions, drill.dsn, result.acked)
    view = await asyncio.to_thread(patroni_api.cluster_view, [n.rest_url for n in drill.spec.postgres])
    refusals = {k: v for k, v in result.denied.items() if k in FAILOVER_REASONS}
    for kind, n in result.errors.items():  # a stream broken or no answer in the gate's deadline
        refusals[kind] = refusals.get(kind, 0) + n
    r = GatesRound(number=number, victim=victim, gates=gates, decisions=result.decisions,
                   longest_wait_seconds=round(result.longest_wait, 3),
                   longest_wait_from_kill_seconds=round(result.longest_wait_began - struck, 2), failover_refusals=sum(refusals.values()),
                   acked=check["acked"], lost=check["lost"], duplicates=check["duplicates"],
                   forwarded_after_seconds=round(forwarded, 1), refusals=refusals,
                   other_denials={k: v for k, v in result.denied.items() if k not in FAILOVER_REASONS},
                   new_leader=view.leader.name if view.leader else None)
    drill.say(r.sentence())
    return r


def gates_report(rounds: list[GatesRound]) -> dict[str, Any]:
    return {
        "rounds": [asdict(r) for r in rounds],
        "summary": {
            "rounds": len(rounds),
            "ok": all(r.ok for r in rounds),
            "longest_wait_seconds": max((r.longest_wait_seconds for r in rounds), default=0.0),
            "failover_refusals": sum(r.failover_refusals for r in rounds),
            "acked": sum(r.acked for r in rounds),
            "lost": sum(r.lost for r in rounds),
            "duplicates": sum(r.duplicates for r in rounds),
        },
    }


def gates_render(rep: dict[str, Any]) -> str:
    s = rep["summary"]
    return (f"{'PASS' if s['ok'] else 'FAIL'}: {s['rounds']} rounds with gates behind a site edge; longest wait "
            f"for a decision {s['longest_wait_seconds']}s; {s['failover_refusals']} refusals caused by the failover; "
            f"{s['acked']} admissions acknowledged, {s['lost']} lost, {s['duplicates']} doubled")

