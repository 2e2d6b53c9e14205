"""A real cluster, run like a runbook: up, status, switchover, the primary killed under load,
a replica killed and rejoined, a server killed while clients write, down.

One cluster for the whole module (3 etcd members, 3 PostgreSQL 18 nodes under Patroni
4.1, 2 parkgate servers, all on 127.0.0.1), brought up by ``parkgate cluster up`` and
stopped by ``parkgate cluster down``. The tests run in this order and each leaves the
cluster healthy (a leader and a synchronous standby) for the next.
"""

from __future__ import annotations

import asyncio
import os
import signal
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import grpc
import orjson
import psycopg
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from loadtests.bench_connect_storm import register_gates
from parkgate.clients.connection import open_channel
from parkgate.clients.enroll import enroll
from parkgate.clients.gate.link import GateLink, Hello, LinkError
from parkgate.common.channels import Transport, open_aio_channel
from parkgate.common.tls import DEV_PKI_ENV, dev_pki, issue_certificate
from parkgate.ha.etcd_access import etcd_healthy, etcd_transport, open_etcd
from parkgate.ha.load import LoadResult, Writer, prepare_sales, verify
from parkgate.ha.status import server_health
from parkgate.ha.supervisor import load_state
from parkgate.server.discovery import Etcd, EtcdUnavailable, discover, lock
from parkgate.server.pg import current_user, is_root
from parkgate.server.pg.process import pid_alive

from .conftest import Cluster, cli

pytestmark = pytest.mark.slow


async def _health_watch(address: str, seen: list[tuple[float, str]], stop: asyncio.Event) -> None:
    """Record every change of a server's health status, with its time."""
    async with open_aio_channel(address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while not stop.is_set():
            try:
                reply = await stub.Check(health_pb2.HealthCheckRequest(), timeout=1)
                status = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
            except grpc.aio.AioRpcError as exc:
                status = exc.code().name
            if not seen or seen[-1][1] != status:
                seen.append((time.monotonic(), status))
            await asyncio.sleep(0.1)


def test_up_brings_up_a_synchronous_cluster_and_status_reports_it(cluster: Cluster) -> None:
    res = cli("status", "--data-dir", str(cluster.data_dir), "--json")
    assert res.returncode == 0, res.stdout + res.stderr
    status = orjson.loads(res.stdout)
    db = status["database"]
    assert db["leader"] in {"pg1", "pg2", "pg3"} and len(db["sync_standby"]) == 1
    assert sorted(m["state"] for m in db["members"]) == ["running", "streaming", "streaming"]
    assert [s["health"] for s in status["servers"]] == ["SERVING", "SERVING"]
    # asked over https with the tools' certificate
    assert [(e["endpoint"][:8], e["health"]) for e in status["etcd"]] == [("https://", "healthy")] * 3
    assert all(p["alive"] for p in status["processes"].values()) and len(status["processes"]) == 8
    human = cli("status", "--data-dir", str(cluster.data_dir)).stdout
    assert f"leader: {db['leader']}" in human and "SERVING" in human
    # Everything runs as the unprivileged user, each in its own session.
    expected_uid = (current_user() if not is_root() else None)
    for p in load_state(cluster.data_dir).procs.values():
        st = os.stat(f"/proc/{p.pid}")
        assert st.st_uid != 0 if expected_uid is None else st.st_uid == expected_uid.uid
        assert os.getsid(p.pid) == p.pid


def _http_get(url: str, context: ssl.SSLContext | None = None) -> int | str:
    """The HTTP status of a GET, or the name of the error that stopped it (a refused handshake)."""
    try:
        with urllib.request.urlopen(url, timeout=5, context=context) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)
    except OSError as exc:
        return type(exc).__name__


async def test_etcd_speaks_only_tls_and_only_to_clients_with_a_certificate_of_the_cluster(
        cluster: Cluster, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    spec = cluster.spec
    files = spec.tls_files()
    assert files is not None
    member = spec.etcd[0]
    assert spec.etcd_client_url(member).startswith("https://")
    assert etcd_healthy(spec, member)  # with the tools' certificate: what is refused below is refused for TLS
    assert _http_get(f"http://{member.host}:{member.client_port}/health") != 200
    ca_only = ssl.create_default_context(cafile=str(files.ca))
    assert _http_get(f"{spec.etcd_client_url(member)}/health", ca_only) != 200
    # A certificate from another CA is no better than none.
    monkeypatch.delenv(DEV_PKI_ENV)
    other = dev_pki(tmp_path / "other-ca")
    issue_certificate(other, "stranger", [], tmp_path / "stranger.pem", tmp_path / "stranger.key", client=True)
    stranger = ssl.create_default_context(cafile=str(files.ca))
    stranger.load_cert_chain(str(tmp_path / "stranger.pem"), str(tmp_path / "stranger.key"))
    assert _http_get(f"{spec.etcd_client_url(member)}/health", stranger) != 200
    # etcd's gRPC API (Patroni's and the servers' way in) likewise.
    plain_urls = [f"http://{e.host}:{e.client_port}" for e in spec.etcd]
    for refused in (Etcd(plain_urls, timeout=2), Etcd(spec.etcd_endpoints, timeout=2,
                                                      transport=Transport(ca_file=str(files.ca)))):
        try:
            with pytest.raises(EtcdUnavailable):
                await discover(refused, spec.name)
        finally:
            refused.close()
    etcd = open_etcd(spec)
    try:
        assert await discover(etcd, spec.name) == sorted(cluster.servers)
        members = await etcd.acall(lambda c: list(c.members))
    finally:
        etcd.close()
    # The members talk to each other over TLS too (peer URLs), and advertise https to clients.
    assert len(members) == len(spec.etcd)
    assert all(u.startswith("https://") for m in members for u in [*m.peer_urls, *m.client_urls]), members


def test_replication_and_every_connection_to_postgresql_use_tls(cluster: Cluster) -> None:
    view = cluster.wait_healthy()
    leader = view.leader
    assert leader is not None
    superuser = f"host={leader.host} port={leader.port} user=postgres password={cluster.secrets.superuser}"
    with psycopg.connect(f"{superuser} dbname=postgres{cluster.spec.pg_ssl()}", connect_timeout=5) as conn:
        replicas = conn.execute(
            "SELECT r.application_name, s.ssl, s.version FROM pg_stat_replication r JOIN pg_stat_ssl s USING (pid)"
        ).fetchall()
        assert sorted(name for name, _ssl, _v in replicas) == sorted(
            m.name for m in view.members if m.name != leader.name)
        assert all(on for _n, on, _v in replicas), replicas
        # Nothing reaches the primary over TCP in plaintext: not Patroni, not the servers, not this test.
        plain = conn.execute(
            "SELECT a.usename, a.application_name, a.backend_type FROM pg_stat_activity a JOIN pg_stat_ssl s "
            "USING (pid) WHERE a.client_addr IS NOT NULL AND NOT s.ssl").fetchall()
        assert plain == []
        servers = conn.execute(
            "SELECT count(*) FROM pg_stat_activity a JOIN pg_stat_ssl s USING (pid) WHERE a.usename = %s AND s.ssl",
            [cluster.spec.database]).fetchone()
        assert servers is not None and servers[0] > 0  # the parkgate servers' pools
    replicator = f"host={leader.host} port={leader.port} user=replicator password={cluster.secrets.replication}"
    for dsn in (f"{superuser} dbname=postgres", f"{replicator} replication=true"):
        with pytest.raises(psycopg.OperationalError, match=r"pg_hba\.conf rejects .*no encryption"):
            psycopg.connect(f"{dsn} sslmode=disable", connect_timeout=5).close()


def test_ops_cluster_status_over_grpc_shows_members_servers_and_power(cluster: Cluster, tmp_path: Path) -> None:
    """What `parkgate power cluster` shows an admin with no shell on the database machines."""
    view = cluster.wait_healthy()
    env = {**os.environ, "XDG_CONFIG_HOME": str(tmp_path)}  # the admin session file
    res = subprocess.run([sys.executable, "-m", "parkgate.common.cli", "admin", "--server", cluster.servers[0],
                          "login", "-u", "admin", "--password-stdin"], input=cluster.admin_password + "\n",
                         capture_output=True, text=True, timeout=60, check=False, env=env)
    assert res.returncode == 0, res.stderr
    res = subprocess.run([sys.executable, "-m", "parkgate.common.cli", "power", "--server", cluster.servers[0],
                          "--json", "cluster"], capture_output=True, text=True, timeout=60, check=False, env=env)
    assert res.returncode == 0, res.stderr
    status = orjson.loads(res.stdout)
    assert status["managed"] is True and status["leader"] == view.leader.name
    assert status["sync_standby"] == [m.name for m in view.sync_standbys]
    assert sorted((m["name"], m["role"]) for m in status["members"]) == sorted(
        (m.name, "leader" if m.is_leader else "sync_standby" if m.is_sync else "replica") for m in view.members)
    assert sorted(s["address"] for s in status["servers"]) == sorted(cluster.servers)
    assert {s["health"] for s in status["servers"]} == {"SERVING"}
    assert {p["machine"] for p in status["power"]} >= {"srv1", "srv2"}  # each server publishes its power


def test_up_with_another_description_is_refused_while_running(cluster: Cluster) -> None:
    res = cli("up", "--data-dir", str(cluster.data_dir), "--nodes", "2")
    assert res.returncode == 2 and "running with another description" in res.stderr, res.stderr
    assert cli("status", "--data-dir", str(cluster.data_dir)).returncode == 0


async def test_servers_register_in_etcd_under_a_lease(cluster: Cluster) -> None:
    etcd = open_etcd(cluster.spec)
    try:
        assert await discover(etcd, cluster.spec.name) == sorted(cluster.servers)
    finally:
        etcd.close()


async def test_an_etcd_lock_lets_one_server_run_a_job(cluster: Cluster) -> None:
    one, other = open_etcd(cluster.spec), Etcd(list(reversed(cluster.spec.etcd_endpoints)), transport=etcd_transport(cluster.spec))
    try:
        async with lock(one, cluster.spec.name, "nightly-report", ttl=5) as first:
            assert first is True
            async with lock(other, cluster.spec.name, "nightly-report", ttl=5, wait=0.5) as second:
                assert second is False  # held by the first "server"
        async with lock(other, cluster.spec.name, "nightly-report", ttl=5) as third:
            assert third is True  # released on exit
    finally:
        one.close()
        other.close()


async def test_a_gate_enrols_on_one_server_and_connects_to_another_servers_device_port(
        cluster: Cluster, tmp_path: Path) -> None:
    """`cluster up` gives every server the cluster's device CA and a device port (docs/security.md): a gate
    enrols on one server and, with that certificate, is welcomed on another's device port; without one it
    does not get past the handshake there."""
    cluster.wait_healthy()
    secrets = await register_gates(cluster.servers[0], cluster.admin_password, 1, "certpark")
    ((device, secret),) = secrets.items()
    cert, key = tmp_path / "gate.pem", tmp_path / "gate.key"
    await asyncio.to_thread(enroll, cluster.servers[0], device, secret, cert, key)
    other = cluster.spec.servers[1]
    assert other.device_port is not None
    address = f"{other.host}:{other.device_port}"
    ca = os.environ["PARKGATE_TLS_CA_FILE"]
    link = GateLink(address, Hello(device, secret), Transport(ca_file=ca, cert_file=str(cert), key_file=str(key)))
    await link.open(timeout=30)
    try:
        assert link.welcome is not None and link.welcome.park_id == "certpark"
    finally:
        await link.close()
    with pytest.raises(LinkError):
        await GateLink(address, Hello(device, secret), Transport(ca_file=ca)).open(timeout=15)


async def _seller(cluster: Cluster, run: str) -> tuple[str, str]:
    """A seller's token at a new sales window and the product it sells: the failover tests sell tickets,
    because sales are what can double (an upsert on a primary key cannot)."""
    return await prepare_sales(cluster.servers[0], cluster.admin_password, run)


def _no_duplicate(check: dict[str, int], result: LoadResult) -> None:
    """Tickets per sale fingerprint, and every acknowledged sale sent again after the failover answered
    with its first reply (same order, same tickets): duplicates counted where they can happen."""
    assert check["lost"] == 0 and check["duplicates"] == 0, check
    assert result.replayed == check["acked"] and result.replay_mismatches == [], result.replay_mismatches[:5]


async def test_planned_switchover_loses_nothing(cluster: Cluster) -> None:
    before = cluster.wait_healthy()
    assert before.leader is not None
    prefix = f"sw_{uuid.uuid4().hex[:8]}"
    token, product = await _seller(cluster, prefix)
    async with Writer(cluster.servers, token, prefix, sell=product) as writer:
        await asyncio.sleep(1.5)
        started = time.monotonic()
        res = await asyncio.to_thread(cli, "switchover", "--data-dir", str(cluster.data_dir))
        assert res.returncode == 0, res.stderr
        await asyncio.sleep(2)
    after = cluster.wait_healthy()
    assert after.leader is not None and after.leader.name != before.leader.name
    check = verify(cluster.dsn, prefix, writer.result.acked, sales=True)
    stall = writer.result.longest_gap_around(started + 1)
    print(f"\nswitchover: {check}, {writer.result.replayed} replayed, longest client stall "
          f"{writer.result.stall:.2f}s ({stall:.2f}s around it), errors {dict(writer.result.errors)}")
    _no_duplicate(check, writer.result)
    # sales before and after the switchover (how many is a figure of the machine's speed, not a test)
    assert any(t < started for t in writer.result.acked.values())
    assert writer.result.first_ack_after(started) is not None  # the stall is printed, not bounded (a figure)


async def test_primary_killed_under_load_loses_no_acknowledged_write(cluster: Cluster) -> None:
    """The leader's Patroni and postmaster are killed -9 together while 4 clients write.

    A replica becomes the leader, the servers report NOT_SERVING while no primary
    answers and SERVING again after, and every acknowledged write is in the table once.
    Then `cluster up` brings the dead node back as a replica.
    """
    before = cluster.wait_healthy()
    assert before.leader is not None
    victim = before.leader.name
    prefix = f"kill_{uuid.uuid4().hex[:8]}"
    token, product = await _seller(cluster, prefix)
    seen: list[tuple[float, str]] = []
    stop_watch = asyncio.Event()
    watcher = asyncio.create_task(_health_watch(cluster.servers[0], seen, stop_watch))
    try:
        async with Writer(cluster.servers, token, prefix, sell=product) as writer:
            await asyncio.sleep(2)
            killed_at = time.monotonic()
            cluster.kill_node(victim)
            view = await asyncio.to_thread(cluster.wait_failover, victim, 90)
            assert view.leader is not None and view.leader.name != victim
            for _ in range(300):  # the writers see the new primary (60 s at most)
                if writer.result.first_ack_after(killed_at + 0.5) is not None:
                    break
                await asyncio.sleep(0.2)
            await asyncio.sleep(1)
    finally:
        stop_watch.set()
        await watcher
    first = writer.result.first_ack_after(killed_at + 0.5)
    assert first is not None, f"no write succeeded after the kill; errors {dict(writer.result.errors)}"
    check = verify(cluster.dsn, prefix, writer.result.acked, sales=True)
    statuses = [s for _t, s in seen]
    print(f"\nkill primary {victim}: RTO {first - killed_at:.1f}s, longest client stall "
          f"{writer.result.stall:.1f}s, {check}, {writer.result.replayed} replayed, "
          f"errors {dict(writer.result.errors)}, health {statuses}")
    _no_duplicate(check, writer.result)  # the replay ran after the failover, on the new primary
    assert "NOT_SERVING" in statuses and statuses[-1] == "SERVING", statuses
    # The dead node comes back as a replica of the new leader (pg_rewind as needed).
    await asyncio.to_thread(cluster.up)
    after = await asyncio.to_thread(cluster.wait_healthy, 120)
    assert any(m.name == victim and m.role != "leader" for m in after.members)


async def test_replica_killed_and_rejoined_while_writing(cluster: Cluster) -> None:
    """The synchronous standby dies: the other replica becomes synchronous, writes go on; it rejoins."""
    before = cluster.wait_healthy()
    victim = before.sync_standbys[0].name
    prefix = f"rep_{uuid.uuid4().hex[:8]}"
    token, product = await _seller(cluster, prefix)
    async with Writer(list(reversed(cluster.servers)), token, prefix, sell=product) as writer:
        await asyncio.sleep(1)
        killed_at = time.monotonic()
        cluster.kill_node(victim)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            view = cluster.view()
            if view.sync_standbys and view.sync_standbys[0].name != victim:
                break
            await asyncio.sleep(0.25)
        else:
            raise AssertionError(f"no other synchronous standby after {victim} died: {cluster.view().members}")
        await asyncio.sleep(1)
    check = verify(cluster.dsn, prefix, writer.result.acked, sales=True)
    print(f"\nkill replica {victim}: longest stall {writer.result.stall:.1f}s, {check}, "
          f"{writer.result.replayed} replayed")
    _no_duplicate(check, writer.result)
    assert writer.result.first_ack_after(killed_at + 1) is not None
    status = orjson.loads(cli("status", "--data-dir", str(cluster.data_dir), "--json").stdout)
    assert status["processes"][victim]["alive"] is False
    await asyncio.to_thread(cluster.up)
    after = await asyncio.to_thread(cluster.wait_healthy, 120)
    assert next(m for m in after.members if m.name == victim).state == "streaming"


async def test_server_killed_clients_fail_over_and_its_registration_expires(cluster: Cluster) -> None:
    cluster.wait_healthy()
    prefix = f"srv_{uuid.uuid4().hex[:8]}"
    token, product = await _seller(cluster, prefix)
    srv2 = load_state(cluster.data_dir).procs["srv2"]
    etcd = open_etcd(cluster.spec)
    try:
        # sales in flight on the killed server lose their reply: retried on the other, they must not double
        async with Writer(list(reversed(cluster.servers)), token, prefix, clients=2, sell=product) as writer:
            await asyncio.sleep(1)
            killed_at = time.monotonic()
            os.kill(srv2.pid, signal.SIGKILL)
            await asyncio.sleep(2)
        check = verify(cluster.dsn, prefix, writer.result.acked, sales=True)
        _no_duplicate(check, writer.result)
        assert writer.result.first_ack_after(killed_at + 0.5) is not None
        assert server_health(cluster.servers[1]) == "UNREACHABLE"
        # A client given both addresses (dead one first) reaches the live one by itself.
        with open_channel(f"{cluster.servers[1]},{cluster.servers[0]}") as channel:
            reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
            assert reply.status == health_pb2.HealthCheckResponse.SERVING
        deadline = time.monotonic() + cluster.spec_lease_ttl + 10
        while await discover(etcd, cluster.spec.name) != [cluster.servers[0]]:
            assert time.monotonic() < deadline, "the dead server's registration did not expire"
            await asyncio.sleep(0.5)
        await asyncio.to_thread(cluster.up)
        assert server_health(cluster.servers[1]) == "SERVING"
        deadline = time.monotonic() + 15
        while await discover(etcd, cluster.spec.name) != sorted(cluster.servers):
            assert time.monotonic() < deadline, "the restarted server did not register again"
            await asyncio.sleep(0.5)
    finally:
        etcd.close()


@pytest.mark.parametrize("kind", ["etcd-member", "primary"])
def test_the_drill_reports_rto_and_zero_loss(cluster: Cluster, kind: str) -> None:
    res = cli("drill", "--data-dir", str(cluster.data_dir), "--kill", kind, "--rounds", "1", "--json", timeout=400)
    assert res.returncode == 0, res.stdout + res.stderr
    report = orjson.loads(res.stdout)
    (round_,) = report["rounds"]
    print(f"\ndrill {kind}: {round_}")
    assert "fork_posix" not in res.stderr and "fork()" not in res.stderr, res.stderr  # only the drill's own lines
    assert round_["lost"] == 0 and round_["duplicates"] == 0, round_  # tickets per sale fingerprint
    # Every acknowledged sale sent again after the failover got the first reply back (order, tickets).
    assert round_["replayed"] == round_["acked"] and round_["replay_mismatches"] == 0, round_
    assert report["summary"]["ok"] is True
    assert round_["acked"] > 0 and round_["rto_seconds"] is not None
    if kind == "primary":
        # a failover happened (no bound on how long it took: that is the drill's printed figure, not a test)
        assert round_["new_leader"] != round_["victim"], round_
    cluster.wait_healthy()


def test_the_drill_with_gates_behind_a_site_edge_loses_and_doubles_nothing(cluster: Cluster) -> None:
    res = cli("drill", "--data-dir", str(cluster.data_dir), "--kill", "primary", "--load", "gates", "--rounds", "1",
              "--json", timeout=400)
    assert res.returncode == 0, res.stdout + res.stderr
    report = orjson.loads(res.stdout)
    (round_,) = report["rounds"]
    print(f"\ndrill primary, gates behind an edge: {round_}")
    assert "fork_posix" not in res.stderr and "fork()" not in res.stderr, res.stderr  # only the drill's own lines
    # Checked in the database after the edge's forward queue was empty.
    assert round_["acked"] > 0 and round_["lost"] == 0 and round_["duplicates"] == 0, round_
    assert round_["decisions"] > 0 and round_["longest_wait_seconds"] > 0
    cluster.wait_healthy()


def test_power_drill_hands_over_on_low_battery_and_the_node_rejoins(cluster: Cluster) -> None:
    """The leader's UPS (dummy-ups behind upsd) goes OL -> OB -> OB LB -> OL under gate and sales load."""
    before = cluster.wait_healthy()
    res = subprocess.run([sys.executable, "-m", "parkgate.common.cli", "power", "drill", "--data-dir",
                          str(cluster.data_dir), "--clients", "2", "--gates", "2", "--json"],
                         capture_output=True, text=True, timeout=400, check=False)
    assert res.returncode == 0, res.stdout + res.stderr
    report = orjson.loads(res.stdout)
    print(f"\npower drill: {report}")
    assert report["victim"] == before.leader.name and report["switchover"] is True
    assert report["new_leader"] != report["victim"]
    sales, admissions = report["sales"], report["admissions"]
    assert sales["lost"] == 0 and sales["duplicates"] == 0 and sales["acked"] > 0, sales
    assert sales["replayed"] == sales["acked"] and sales["replay_mismatches"] == 0, sales
    assert admissions["lost"] == 0 and admissions["duplicates"] == 0, admissions  # per single-use ticket
    # Admitted tickets were shown again and refused: the duplicate count had something to catch.
    assert admissions["denied"].get("ALREADY_USED", 0) > 0, admissions
    assert report["admissions"]["acked"] > 0 and report["low_battery_to_clean_stop_seconds"] is not None
    assert report["rejoined"].startswith("rejoined as")
    # Lines for people only: the drill's own, no grpc fork-handler noise.
    assert all(line.startswith("parkgate power: ") for line in res.stderr.splitlines()), res.stderr
    view = cluster.wait_healthy()
    assert any(m.name == report["victim"] and m.role != "leader" for m in view.members)


def test_power_drill_with_gates_behind_a_site_edge(cluster: Cluster) -> None:
    """The same hand-over with the turnstiles behind a real site edge, as at a site (docs/power.md)."""
    cluster.wait_healthy()
    res = subprocess.run([sys.executable, "-m", "parkgate.common.cli", "power", "drill", "--data-dir",
                          str(cluster.data_dir), "--clients", "2", "--gates", "2", "--behind-edge", "--json"],
                         capture_output=True, text=True, timeout=400, check=False)
    assert res.returncode == 0, res.stdout + res.stderr
    report = orjson.loads(res.stdout)
    print(f"\npower drill, gates behind a site edge: {report}")
    assert report["switchover"] is True and report["gates_behind_site_edge"] is True
    admissions = report["admissions"]
    # counted in the cluster's database after the edge forwarded everything it decided alone
    assert admissions["acked"] > 0 and admissions["lost"] == 0 and admissions["duplicates"] == 0, admissions
    assert admissions["denied"].get("ALREADY_USED", 0) > 0, admissions  # the edge refuses a ticket used there
    assert report["edge_decided_alone"] is not None and report["rejoined"].startswith("rejoined as")
    assert all(line.startswith("parkgate power: ") for line in res.stderr.splitlines()), res.stderr
    cluster.wait_healthy()


def test_down_stops_every_process(cluster: Cluster) -> None:
    procs = load_state(cluster.data_dir).procs
    res = cli("down", "--data-dir", str(cluster.data_dir), "--timeout", "60")
    assert res.returncode == 0, res.stderr
    assert not [p.name for p in procs.values() if pid_alive(p.pid)]
    for node in cluster.spec.postgres:
        assert not (cluster.spec.node_dir(node.name) / "data" / "postmaster.pid").exists()
    assert cli("status", "--data-dir", str(cluster.data_dir)).returncode == 1
