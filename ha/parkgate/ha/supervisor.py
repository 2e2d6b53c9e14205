"""Running a whole cluster on one machine: etcd, Patroni + PostgreSQL nodes, parkgate servers.

``parkgate cluster up`` starts every process in its own session (setsid, see
:mod:`parkgate.server.pg.process`) as the unprivileged user, records it in the state
file ``<data_dir>/cluster.json`` (pid plus the kernel's start time, so a
recycled pid is never mistaken for ours) and exits, leaving them running.
``up`` again starts only what is not running (a killed node rejoins this way);
``down`` stops them by pid: servers first (graceful), then the Patroni
replicas, then the leader (Patroni stops its PostgreSQL cleanly on SIGTERM),
then etcd, escalating to SIGKILL only after a timeout.

Layout of the data folder (owned by the unprivileged user)::

    cluster.json          the state: the description and the processes
    secrets.json          passwords (0600, root's when run as root)
    admin.password        the first admin's password (0600), for the drill
    certs/                the tools' copy of the cluster CA and the member certificate (TLS to etcd, PostgreSQL)
    etcd1/ etcd.yaml data/ etcd.log certs/
    pg1/   patroni.yml data/ pgpass patroni.log certs/
    srv1/  server.toml server.log server.pem server.key ca.pem device-ca.pem device-ca.key certs/
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import signal
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import orjson
import psycopg
from psycopg import sql

from parkgate.common.tls import DevPki, dev_pki, issue_certificate
from parkgate.server.pg import RunAs, ensure_user, find_binaries, is_root, prepare_dir, spawn_daemon
from parkgate.server.pg.process import pid_alive, pids_with_cwd

from . import patroni_api
from .etcd_access import etcd_healthy
from .health import server_health
from .programs import cluster_postgres, find_etcd, postgres_env, python_for
from .render import Secrets, dump_yaml, etcd_config, patroni_config, server_config
from .spec import ClusterSpec, SpecError, check_host

log = logging.getLogger("parkgate.ha")

STATE_FILE = "cluster.json"
SECRETS_FILE = "secrets.json"
ADMIN_FILE = "admin.password"


class ClusterError(RuntimeError):
    """The cluster could not be brought up, inspected or stopped; the message says which part and why."""


def _start_time(pid: int) -> int | None:
    """The process start time in clock ticks since boot (field 22 of /proc/PID/stat), None if gone."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = raw[raw.rindex(")") + 2 :].split()
    if fields[0] == "Z":
        return None
    return int(fields[19])


@dataclass
class Proc:
    """One process the supervisor started."""

    name: str
    kind: str  # etcd | patroni | server
    pid: int
    started: int  # /proc start time: identifies the pid
    log: str

    def alive(self) -> bool:
        return _start_time(self.pid) == self.started


@dataclass
class State:
    """What ``cluster.json`` holds."""

    spec: ClusterSpec
    procs: dict[str, Proc]

    def to_json(self) -> bytes:
        return orjson.dumps(
            {"spec": self.spec.model_dump(mode="json"), "procs": {k: asdict(v) for k, v in self.procs.items()}},
            option=orjson.OPT_INDENT_2,
        )

    @classmethod
    def from_json(cls, raw: bytes) -> State:
        data = orjson.loads(raw)
        return cls(ClusterSpec(**data["spec"]), {k: Proc(**v) for k, v in data["procs"].items()})


def load_state(data_dir: Path) -> State:
    path = data_dir / STATE_FILE
    try:
        return State.from_json(path.read_bytes())
    except FileNotFoundError:
        raise ClusterError(f"no cluster in {data_dir}: {path} does not exist (run `parkgate cluster up`)") from None


def load_secrets(data_dir: Path) -> Secrets:
    return Secrets.from_json((data_dir / SECRETS_FILE).read_bytes())


def trust_cluster_ca(spec: ClusterSpec) -> DevPki:
    """The cluster's development CA (made once in its folder); this process's clients trust it from now on."""
    pki = dev_pki(spec.data_dir / "tls", sorted({s.host for s in spec.servers}))
    os.environ.setdefault("PARKGATE_TLS_CA_FILE", str(pki.ca_file))
    return pki


def _write(path: Path, text: str | bytes, who: RunAs | None, mode: int = 0o600) -> None:
    """Write atomically; hand the file to ``who`` (the user of the process that reads it)."""
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as fh:
        fh.write(text.encode() if isinstance(text, str) else text)
    if who is not None and is_root() and not who.is_current:
        os.chown(tmp, who.uid, who.gid)
    os.replace(tmp, path)


def _wait(what: str, check: Callable[[], bool], timeout: float, interval: float = 0.25) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise ClusterError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)


def _tail(path: str, n: int = 15) -> str:
    with contextlib.suppress(OSError):
        lines = Path(path).read_text(errors="replace").splitlines()
        return "\n    ".join(lines[-n:])
    return "(no log)"


class Supervisor:
    """Starts, inspects and stops one cluster described by ``spec``.

    ``detach`` (the CLI): children survive this process. Otherwise (tests that
    drive the supervisor in-process) they get a parent-death signal, so a
    crashed test run leaves nothing behind.
    """

    def __init__(self, spec: ClusterSpec, *, detach: bool = True, say: Callable[[str], None] | None = None) -> None:
        self.spec = spec
        self.detach = detach
        self.say = say or (lambda text: log.info("%s", text))
        self.who = ensure_user(spec.run_as) if is_root() else None
        self.state = State(spec, {})
        path = spec.data_dir / STATE_FILE
        if path.exists():
            previous = State.from_json(path.read_bytes())
            running = sorted(name for name, p in previous.procs.items() if p.alive())
            if running and previous.spec != spec:
                raise ClusterError(
                    f"the cluster in {spec.data_dir} is running with another description ({', '.join(running)} "
                    f"running): run `parkgate cluster down --data-dir {spec.data_dir}` first, or `up` without "
                    f"options to start what is missing"
                )
            self.state.procs = previous.procs

    @property
    def user(self) -> RunAs:
        from parkgate.server.pg import current_user

        return self.who or current_user()

    def _save(self) -> None:
        _write(self.spec.data_dir / STATE_FILE, self.state.to_json(), None, 0o644)

    def _spawn(self, name: str, kind: str, argv: list[str], log_path: Path, cwd: Path,
               env_extra: dict[str, str] | None = None) -> Proc:
        with open(log_path, "ab") as fh:
            if is_root() and not self.user.is_current:
                os.chown(log_path, self.user.uid, self.user.gid)
            # the cluster's own calls (a server probing its peers' health, the power watcher) trust its CA too
            tls = {k: os.environ[k] for k in ("PARKGATE_TLS_CA_FILE", "PARKGATE_INSECURE") if k in os.environ}
            env = self.user.env({"PYTHONUNBUFFERED": "1", **tls, **(env_extra or {})})
            proc = spawn_daemon(
                argv,
                run_as=self.user,
                log_file=fh,
                cwd=cwd,
                env=env,
                parent_death_signal=None if self.detach else signal.SIGINT,
            )
        # The start time is taken at fork, so exec (setpriv, then the program) does not change it.
        started = _start_time(proc.pid) or 0
        p = Proc(name=name, kind=kind, pid=proc.pid, started=started, log=str(log_path))
        self.state.procs[name] = p
        self._save()
        return p

    # -- up ------------------------------------------------------------------------------------------

    def up(self, timeout: float = 120.0) -> None:
        """Start whatever is not running, wait until the cluster can take writes and the servers serve."""
        spec = self.spec
        check_host(spec)
        who = self.user
        prepare_dir(spec.data_dir, who, 0o755)
        secrets_file = spec.data_dir / SECRETS_FILE
        if secrets_file.exists():
            secrets_ = Secrets.from_json(secrets_file.read_bytes())
        else:
            secrets_ = Secrets.generate()
            _write(secrets_file, secrets_.to_json(), None)
        self._save()

        pki = trust_cluster_ca(spec)
        self._install_certs(pki)
        etcd_bin = find_etcd(spec.etcd_bin, who)
        for member in spec.etcd:
            d = prepare_dir(spec.node_dir(member.name), who)
            _write(d / "etcd.yaml", dump_yaml(etcd_config(spec, member, d / "data")), who)
            if not self._running(member.name):
                self._spawn(member.name, "etcd", [str(etcd_bin), "--config-file", str(d / "etcd.yaml")],
                            d / "etcd.log", d)
                self.say(f"started etcd member {member.name} on {spec.etcd_client_url(member)}")
        for member in spec.etcd:
            self._wait_alive(member.name, f"etcd member {member.name} to answer on {spec.etcd_client_url(member)}",
                             lambda m=member: etcd_healthy(spec, m), timeout)

        python = python_for(who)
        pg = find_binaries(cluster_postgres(spec.postgres_bin_dir, spec.tls.enabled), run_as=who)
        for node in spec.postgres:
            d = prepare_dir(spec.node_dir(node.name), who)
            cfg = patroni_config(spec, node, node_dir=d, bin_dir=pg.bin_dir, secrets_=secrets_)
            _write(d / "patroni.yml", dump_yaml(cfg), who)
            if not self._running(node.name):
                self._spawn(node.name, "patroni", [*python, "-m", "patroni", str(d / "patroni.yml")],
                            d / "patroni.log", d, env_extra=postgres_env(pg.bin_dir) if spec.tls.enabled else None)
                self.say(f"started Patroni node {node.name} (PostgreSQL {pg.version} on port {node.port})")
        rest = [n.rest_url for n in spec.postgres]
        self._wait_alive(spec.postgres[0].name, "a PostgreSQL leader", lambda: _has_leader(rest), timeout)
        view = patroni_api.cluster_view(rest)
        assert view.leader is not None
        self._ensure_database(view.leader, secrets_)
        if len(spec.postgres) > 1:
            _wait("a synchronous standby (Patroni /cluster)", lambda: _healthy(rest, True), timeout)
        try:
            _wait("every PostgreSQL node to run or stream", lambda: _all_up(rest, len(spec.postgres)), timeout)
        except ClusterError as exc:
            raise ClusterError(f"{exc}; {self._describe_nodes(rest)}") from None

        admin_file = spec.data_dir / ADMIN_FILE
        if spec.servers and not admin_file.exists():
            password = _first_admin(spec.server_dsn(secrets_.app))
            if password is not None:
                _write(admin_file, password + "\n", None)
                self.say(f"created the first administrator 'admin'; its password is in {admin_file}")
        for server in spec.servers:
            d = prepare_dir(spec.node_dir(server.name), who)
            # the server's user reads its own copy of the development certificate and key
            _write(d / "server.pem", pki.cert_file.read_bytes(), who, 0o644)
            _write(d / "server.key", pki.key_file.read_bytes(), who)
            # ... and the CA, to trust its peers when it probes their health (Ops.ClusterStatus): the cluster's
            # own folder may be closed to that user
            _write(d / "ca.pem", pki.ca_file.read_bytes(), who, 0o644)
            if server.device_port is not None:  # it signs the devices' certificates at enrolment
                _write(d / "device-ca.pem", pki.device_ca_file.read_bytes(), who, 0o644)
                _write(d / "device-ca.key", pki.device_ca_key_file.read_bytes(), who)
            _write(d / "server.toml", server_config(spec, server, secrets_), who)
            if not self._running(server.name):
                self._spawn(server.name, "server",
                            [*python, "-m", "parkgate.common.cli", "server", "--config", str(d / "server.toml")],
                            d / "server.log", d, env_extra={"PARKGATE_TLS_CA_FILE": str(d / "ca.pem")})
                self.say(f"started parkgate server {server.name} on {server.address}")
        for server in spec.servers:
            self._wait_alive(server.name, f"server {server.name} to report SERVING",
                             lambda s=server: server_health(s.address) == "SERVING", timeout)

    def _install_certs(self, pki: DevPki) -> None:
        """TLS for etcd and PostgreSQL: every member's certificate in its own folder, and the tools' copy.

        Named production files are used where they are (only checked here). Otherwise one member
        certificate from the development CA names every host of the description and serves as server
        and client (etcd peers); each member gets its own copy, the key 0600 and its user's (PostgreSQL
        refuses a key others can read, and the member's user may not read the CA's folder).
        """
        spec = self.spec
        if not spec.tls.enabled:
            return
        if spec.tls.production:
            for field in ("ca_file", "cert_file", "key_file"):
                path = getattr(spec.tls, field)
                if not path.is_file():
                    raise ClusterError(f"tls.{field}: {path} is not a file")
            return
        tools = spec.tls_files(None)
        assert tools is not None
        tools.ca.parent.mkdir(mode=0o700, exist_ok=True)
        hosts = sorted({e.host for e in spec.etcd} | {p.host for p in spec.postgres} | {s.host for s in spec.servers}
                       | {"localhost", "127.0.0.1", "::1"})
        ca = pki.ca_file.read_bytes()
        # Issued again when the hosts or the CA change (a test session's CA differs from the last one's).
        marker = tools.ca.parent / "node.issued"
        wanted = " ".join(hosts) + "\n" + hashlib.sha256(ca).hexdigest()
        if not (tools.cert.exists() and marker.exists() and marker.read_text() == wanted):
            issue_certificate(pki, f"{spec.name} cluster member", hosts, tools.cert, tools.key, member=True)
            _write(tools.ca, ca, None, 0o644)
            _write(marker, wanted, None, 0o644)
        who = self.user
        for name in [m.name for m in spec.etcd] + [p.name for p in spec.postgres] + [s.name for s in spec.servers]:
            prepare_dir(spec.node_dir(name), who)
            own = spec.tls_files(name)
            assert own is not None
            prepare_dir(own.ca.parent, who)
            _write(own.ca, ca, who, 0o644)
            _write(own.cert, tools.cert.read_bytes(), who, 0o644)
            _write(own.key, tools.key.read_bytes(), who, 0o600)

    def _running(self, name: str) -> bool:
        p = self.state.procs.get(name)
        return p is not None and p.alive()

    def _wait_alive(self, name: str, what: str, check: Callable[[], bool], timeout: float) -> None:
        """Wait for ``check``; fail early, quoting the log, if the process ``name`` died."""

        def done() -> bool:
            p = self.state.procs.get(name)
            if p is not None and not p.alive():
                raise ClusterError(f"{p.kind} {name} exited while waiting for {what}; its log {p.log}:\n    "
                                   f"{_tail(p.log)}")
            return check()

        _wait(what, done, timeout)

    def _describe_nodes(self, rest: list[str]) -> str:
        """What Patroni says about each node, and the log tail of those not running (for an error)."""
        try:
            members = {m.name: m for m in patroni_api.cluster_view(rest, timeout=1).members}
        except patroni_api.PatroniError as exc:
            members, said = {}, str(exc)
        else:
            said = ", ".join(f"{m.name} {m.role} {m.state}" for m in members.values())
        parts = [f"Patroni reports: {said or 'no members'}"]
        for node in self.spec.postgres:
            m = members.get(node.name)
            if m is None or m.state not in ("running", "streaming"):
                d = self.spec.node_dir(node.name)
                parts.append(f"{node.name} Patroni log {d / 'patroni.log'}:\n    {_tail(str(d / 'patroni.log'))}")
                parts.append(f"{node.name} PostgreSQL log:\n    {_tail(str(d / 'data' / 'log' / 'postgresql.log'))}")
        return "\n".join(parts)

    def _ensure_database(self, leader: patroni_api.Member, secrets_: Secrets) -> None:
        """The servers' role and database (Patroni 4 creates no application users itself)."""
        dsn = (f"host={leader.host} port={leader.port} user=postgres password={secrets_.superuser} dbname=postgres"
               f"{self.spec.pg_ssl()}")
        name = self.spec.database
        deadline = time.monotonic() + 60
        while True:
            try:
                with psycopg.connect(dsn, autocommit=True, connect_timeout=3) as conn:
                    if not conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", [name]).fetchone():
                        conn.execute(sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(
                            sql.Identifier(name), sql.Literal(secrets_.app)))
                    if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone():
                        conn.execute(sql.SQL("CREATE DATABASE {} OWNER {}").format(
                            sql.Identifier(name), sql.Identifier(name)))
                return
            except psycopg.OperationalError as exc:
                if time.monotonic() > deadline:
                    raise ClusterError(f"cannot create the database on the leader {leader.name}: {exc}") from exc
                time.sleep(0.5)

    # -- down ----------------------------------------------------------------------------------------

    def down(self, timeout: float = 60.0) -> None:
        """Stop every recorded process by pid: servers, replicas, the leader, etcd."""
        procs = self.state.procs
        leader = None
        with contextlib.suppress(patroni_api.PatroniError):
            view = patroni_api.cluster_view([n.rest_url for n in self.spec.postgres], timeout=1)
            leader = view.leader.name if view.leader else None
        patronis = [p for p in procs.values() if p.kind == "patroni"]
        groups = [
            [p for p in procs.values() if p.kind == "server"],
            [p for p in patronis if p.name != leader],
            [p for p in patronis if p.name == leader],  # the leader last: no needless failover
            [p for p in procs.values() if p.kind == "etcd"],
        ]
        for group in groups:
            self._stop_group(group, timeout)
        for node in self.spec.postgres:  # a postmaster left behind by a killed Patroni
            self._stop_postgres(self.spec.node_dir(node.name) / "data", timeout)
        self.state.procs = {}
        self._save()

    def _stop_group(self, group: list[Proc], timeout: float) -> None:
        """SIGTERM every live process of the group, wait for all, SIGKILL what outlives ``timeout``."""
        live = [p for p in group if p.alive()]
        for p in live:
            self.say(f"stopping {p.kind} {p.name} (pid {p.pid})")
            with contextlib.suppress(ProcessLookupError):
                os.kill(p.pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while any(p.alive() for p in live) and time.monotonic() < deadline:
            time.sleep(0.1)
        for p in live:
            if p.alive():
                log.warning("%s %s did not stop within %.0fs: SIGKILL", p.kind, p.name, timeout)
                with contextlib.suppress(ProcessLookupError):
                    os.kill(p.pid, signal.SIGKILL)
                _wait(f"{p.name} to die", lambda p=p: not p.alive(), 10)

    def _stop_postgres(self, data: Path, timeout: float) -> None:
        pidfile = data / "postmaster.pid"
        with contextlib.suppress(OSError, ValueError, IndexError):
            pid = int(pidfile.read_text().splitlines()[0])
            if pid_alive(pid) and data.exists() and os.readlink(f"/proc/{pid}/cwd") == str(data.resolve()):
                self.say(f"stopping a PostgreSQL left running in {data} (pid {pid})")
                os.kill(pid, signal.SIGINT)
                deadline = time.monotonic() + timeout
                while pid_alive(pid) and time.monotonic() < deadline:
                    time.sleep(0.1)
                if pid_alive(pid):
                    os.kill(pid, signal.SIGKILL)
        if data.exists():
            for pid in pids_with_cwd(data):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)


def _has_leader(rest: list[str]) -> bool:
    return _healthy(rest, False)


def _healthy(rest: list[str], want_sync: bool) -> bool:
    try:
        return patroni_api.cluster_view(rest, timeout=1).healthy(want_sync)
    except patroni_api.PatroniError:
        return False


def _all_up(rest: list[str], n: int) -> bool:
    try:
        view = patroni_api.cluster_view(rest, timeout=1)
    except patroni_api.PatroniError:
        return False
    return len(view.members) == n and all(m.state in ("running", "streaming") for m in view.members)


def _first_admin(dsn: str) -> str | None:
    """Migrate the schema and create the first admin (None when operators exist already)."""
    import asyncio

    from parkgate.server.config import load_settings
    from parkgate.server.embedded import init_first_admin

    return asyncio.run(init_first_admin(load_settings(None), dsn, "admin"))


def spec_from_state_or(data_dir: Path, fallback: Callable[[], ClusterSpec]) -> ClusterSpec:
    """The description a running cluster was started with, else ``fallback()``."""
    path = data_dir / STATE_FILE
    if path.exists():
        return load_state(data_dir).spec
    return fallback()


__all__ = ["ClusterError", "Proc", "SpecError", "State", "Supervisor", "load_secrets", "load_state",
           "spec_from_state_or"]
