"""One PostgreSQL server (a data folder plus a postmaster) run as a child of this process.

Used by ``parkgate up`` (the embedded default) and by the test suite. The
Patroni cluster code does not use this class (Patroni runs postgres itself) but
shares :mod:`.binaries` and :mod:`.users`.

Decisions, and why:

* **Authentication.** By default ``scram-sha-256`` for every connection, with
  a random 256-bit superuser password generated at ``initdb`` and kept in
  ``<data_dir>/parkgate_superuser.password`` (mode 0600, owned by the
  PostgreSQL user; root can read it too). It lives in the data folder because
  it belongs to that cluster: deleting or moving the folder deletes or moves
  its password with it. ``auth="trust"`` exists for tests and is refused
  unless the server listens on loopback only.
* **pg_hba.conf** is written by us: loopback (IPv4 and IPv6) for all databases
  and for replication, plus ``all`` hosts when ``host`` is not loopback (never
  with trust), plus ``local`` when Unix sockets are enabled.
* **Unix sockets are off** unless ``socket_dir`` is given
  (``unix_socket_directories=''``): TCP on 127.0.0.1 is all parkgate needs,
  and this avoids ``/tmp`` clashes with a distribution's PostgreSQL, folders
  the user cannot write, and the 107-byte socket path limit.
* **Settings.** The instance identity (``port``, ``listen_addresses``,
  ``unix_socket_directories``) is passed on the ``postgres`` command line; the
  rest (:data:`DEFAULT_SETTINGS` updated with ``settings``) is rewritten at
  every start to ``<data_dir>/parkgate.conf``, which ``postgresql.conf``
  includes; ``ALTER SYSTEM`` still overrides it. Durability is a requirement:
  ``fsync``, ``synchronous_commit`` and ``full_page_writes`` stay on by default
  (the test fixture turns them off for speed, on throw-away data).
* **Locale.** ``initdb -E UTF8 --locale=C --locale-provider=builtin
  --builtin-locale=C.UTF-8``: Unicode-aware, byte-order collation that does not
  depend on the OS locales installed (a replica or a restored backup on
  another machine sorts the same) nor on glibc upgrades.
* **Logs** go to ``<data_dir>/postgres.log`` (stdout+stderr of the postmaster,
  rotated to ``postgres.log.1`` at start when over 50 MB); startup errors quote
  its tail.
* **Process handling**: see :mod:`.process` (own session, parent-death signal
  SIGINT, spawned from a thread that never exits). ``stop()`` sends SIGINT
  (fast shutdown), and escalates to SIGQUIT then SIGKILL only on timeout.
* **Stale postmaster.pid** (after a SIGKILL or power loss): PostgreSQL itself
  ignores a lock file whose pid is dead, but refuses to start while old
  backends still hold the shared memory. ``start()`` therefore waits for
  processes still working in the data folder to go away (they exit on their
  own once they notice the postmaster is dead) and refuses only if the pid in
  postmaster.pid is a live process working in this data folder.
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import os
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Literal

import psycopg
from psycopg import sql
from psycopg.conninfo import make_conninfo

from .binaries import PgBinaries, find_binaries
from .errors import AlreadyRunning, DataDirError, InitFailed, PortInUse, StartFailed, StopFailed
from .process import pid_alive, pids_with_cwd, spawn_daemon, wait_pid_gone
from .users import DEFAULT_HOME, RunAs, check_reachable, is_root, prepare_dir, resolve_run_as

log = logging.getLogger("parkgate.server.pg")

StopMode = Literal["smart", "fast", "immediate"]
Auth = Literal["scram-sha-256", "trust"]

PASSWORD_FILE = "parkgate_superuser.password"
SETTINGS_FILE = "parkgate.conf"
LOG_FILE = "postgres.log"
_LOG_ROTATE_BYTES = 50 * 1024 * 1024
_STOP_SIGNAL = {"smart": signal.SIGTERM, "fast": signal.SIGINT, "immediate": signal.SIGQUIT}

#: Settings written to parkgate.conf; ``settings=`` entries override these.
DEFAULT_SETTINGS: dict[str, str | int | bool] = {
    "max_connections": 200,
    "shared_buffers": "128MB",
    "fsync": True,
    "synchronous_commit": True,
    "full_page_writes": True,
    "wal_level": "replica",
    "password_encryption": "scram-sha-256",
    "logging_collector": False,
    "log_line_prefix": "%m [%p] %q%u@%d ",
    "log_checkpoints": True,
}


def default_data_dir() -> Path:
    """Where ``parkgate up`` keeps its cluster: ``/var/lib/parkgate/pgdata`` as root, else per user."""
    if is_root():
        return DEFAULT_HOME / "pgdata"
    base = os.environ.get("XDG_DATA_HOME") or os.path.expanduser("~/.local/share")
    return Path(base) / "parkgate" / "pgdata"


def _render(value: str | int | float | bool) -> str:
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, int | float):
        return str(value)
    return "'" + str(value).replace("'", "''") + "'"


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def port_is_free(host: str, port: int) -> bool:
    """Can a listener bind ``host:port``? (With SO_REUSEADDR, like postgres, so TIME_WAIT does not count.)"""
    bind_host = {"*": "0.0.0.0", "": "0.0.0.0"}.get(host, host)
    try:
        infos = socket.getaddrinfo(bind_host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror:
        return True  # let postgres report the bad address
    for family, socktype, proto, _canon, addr in infos:
        with socket.socket(family, socktype, proto) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind(addr)
            except OSError:
                return False
    return True


def free_port(host: str = "127.0.0.1") -> int:
    """A port the kernel considers free right now (bind to port 0)."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


class PostgresInstance:
    """A PostgreSQL cluster in ``data_dir`` served by a postmaster that is a child of this process.

    Typical use (``parkgate up``)::

        pg = PostgresInstance(default_data_dir(), port=5432)
        pg.initialize()          # no-op when the folder is already a cluster
        pg.start()
        try:
            serve(pg.dsn)
        finally:
            pg.stop()            # also from the SIGINT/SIGTERM handler

    or ``with PostgresInstance(...) as pg:`` (initialize + start, stop on exit).
    """

    def __init__(
        self,
        data_dir: str | os.PathLike[str],
        port: int = 5432,
        host: str = "127.0.0.1",
        *,
        bin_dir: str | os.PathLike[str] | PgBinaries | None = None,
        run_as: RunAs | str | None = None,
        socket_dir: str | os.PathLike[str] | None = None,
        settings: Mapping[str, str | int | float | bool] | None = None,
        auth: Auth = "scram-sha-256",
        superuser: str = "postgres",
        stage_root: str | os.PathLike[str] | None = None,
    ) -> None:
        if auth not in ("scram-sha-256", "trust"):
            raise ValueError(f"auth must be 'scram-sha-256' or 'trust', not {auth!r}")
        if auth == "trust" and not _is_loopback(host):
            raise ValueError(f"auth='trust' is only allowed on a loopback address, not {host!r}")
        self.data_dir = Path(data_dir).absolute()
        self.port = int(port)
        self.host = host
        self.auth: Auth = auth
        self.superuser = superuser
        self.socket_dir = Path(socket_dir).absolute() if socket_dir is not None else None
        if self.socket_dir is not None and len(str(self.socket_dir)) + len("/.s.PGSQL.65535.lock") > 107:
            raise ValueError(f"socket_dir {self.socket_dir} is too long for a Unix socket path (107 bytes)")
        self.settings: dict[str, str | int | float | bool] = {**DEFAULT_SETTINGS, **(settings or {})}
        self.run_as = resolve_run_as(run_as)
        self._bin_dir = bin_dir
        self._stage_root = stage_root
        self._binaries: PgBinaries | None = bin_dir if isinstance(bin_dir, PgBinaries) else None
        self._proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None
        self._password: str | None = None

    # -- paths and properties -------------------------------------------------

    @property
    def binaries(self) -> PgBinaries:
        """The bin folder (found and, if needed, staged on first use)."""
        if self._binaries is None:
            bin_dir = None if isinstance(self._bin_dir, PgBinaries) else self._bin_dir
            self._binaries = find_binaries(bin_dir, run_as=self.run_as, stage_root=self._stage_root)
        return self._binaries

    @property
    def log_path(self) -> Path:
        return self.data_dir / LOG_FILE

    @property
    def password_file(self) -> Path:
        return self.data_dir / PASSWORD_FILE

    @property
    def password(self) -> str | None:
        """The superuser password (None with trust auth)."""
        if self.auth == "trust":
            return None
        if self._password is None:
            try:
                self._password = self.password_file.read_text().strip()
            except FileNotFoundError:
                raise DataDirError(
                    f"{self.password_file} is missing: the superuser password of this cluster is unknown; "
                    f"restore the file or reset it with ALTER ROLE {self.superuser} PASSWORD ..."
                ) from None
        return self._password

    def conninfo(self, dbname: str = "postgres", **extra: Any) -> str:
        """A libpq connection string for ``dbname`` as the superuser (TCP to host:port)."""
        host = (
            "127.0.0.1" if self.host in ("*", "0.0.0.0", "") else ("::1" if self.host == "::" else self.host)
        )
        params: dict[str, Any] = {"host": host, "port": self.port, "user": self.superuser, "dbname": dbname}
        if self.password is not None:
            params["password"] = self.password
        params.update(extra)
        return make_conninfo(**params)

    @property
    def dsn(self) -> str:
        """Connection string of the ``postgres`` database as the superuser."""
        return self.conninfo()

    @property
    def pid(self) -> int | None:
        """The postmaster pid if we started it and it is still running."""
        return self._proc.pid if self._proc is not None and self._proc.poll() is None else None

    def is_initialized(self) -> bool:
        return (self.data_dir / "PG_VERSION").is_file()

    def postmaster_pid(self) -> int | None:
        """The pid in ``postmaster.pid`` if it is a live process working in this data folder."""
        try:
            first = (self.data_dir / "postmaster.pid").read_text().split("\n", 1)[0]
            pid = int(first.strip())
        except (FileNotFoundError, ValueError):
            return None
        if not pid_alive(pid):
            return None
        try:
            if os.readlink(f"/proc/{pid}/cwd") != os.path.realpath(self.data_dir):
                return None  # pid reused by an unrelated process
        except OSError:
            return None
        return pid

    def is_running(self) -> bool:
        """True if a postmaster (ours or another process's) serves this data folder."""
        return self.pid is not None or self.postmaster_pid() is not None

    # -- files owned by the PostgreSQL user -----------------------------------

    def _write_file(self, path: Path, text: str, mode: int = 0o600) -> None:
        tmp = path.with_name(f".{path.name}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.chmod(tmp, mode)
        if is_root() and not self.run_as.is_current:
            os.chown(tmp, self.run_as.uid, self.run_as.gid)
        os.replace(tmp, path)

    def _hba(self) -> str:
        method = self.auth
        lines = [
            "# Written by parkgate.server.pg at every initialize(); edits are overwritten.",
            "# TYPE  DATABASE     USER  ADDRESS       METHOD",
        ]
        if self.socket_dir is not None:
            lines.append(f"local   all          all                 {method}")
        lines += [
            f"host    all          all   127.0.0.1/32  {method}",
            f"host    all          all   ::1/128       {method}",
            f"host    replication  all   127.0.0.1/32  {method}",
            f"host    replication  all   ::1/128       {method}",
        ]
        if not _is_loopback(self.host):
            lines += ["host    all          all   all           scram-sha-256"]
        return "\n".join(lines) + "\n"

    def _write_settings(self) -> None:
        body = "".join(f"{k} = {_render(v)}\n" for k, v in sorted(self.settings.items()))
        self._write_file(
            self.data_dir / SETTINGS_FILE,
            "# Written by parkgate.server.pg at every start; use ALTER SYSTEM to override.\n" + body,
        )

    def _include_settings(self) -> None:
        conf = self.data_dir / "postgresql.conf"
        text = conf.read_text()
        line = f"include_if_exists = '{SETTINGS_FILE}'"
        if line not in text:
            self._write_file(conf, text.rstrip("\n") + f"\n\n# parkgate settings\n{line}\n")

    # -- lifecycle ------------------------------------------------------------

    def initialize(self) -> bool:
        """Create the cluster with initdb unless the folder already is one; True if it was created.

        An existing cluster must be of the same major version as the binaries.
        A non-empty folder that is not a cluster is refused (never overwritten).
        """
        binaries = self.binaries
        if self.is_initialized():
            major = (self.data_dir / "PG_VERSION").read_text().strip()
            if major != str(binaries.major):
                raise DataDirError(
                    f"{self.data_dir} holds a PostgreSQL {major} cluster but the binaries in "
                    f"{binaries.bin_dir} are PostgreSQL {binaries.version}; upgrade it with pg_upgrade "
                    f"or point bin_dir at PostgreSQL {major} binaries"
                )
            check_reachable(self.data_dir, self.run_as, "write", what="data folder")
            self._write_file(self.data_dir / "pg_hba.conf", self._hba())
            return False
        if self.data_dir.exists() and any(self.data_dir.iterdir()):
            raise DataDirError(
                f"{self.data_dir} is not empty but is not a PostgreSQL cluster (no PG_VERSION); "
                f"refusing to initialize it: empty it or choose another data folder"
            )
        prepare_dir(self.data_dir, self.run_as, 0o700)
        argv = [
            str(binaries.initdb),
            "-D",
            str(self.data_dir),
            "-U",
            self.superuser,
            "-E",
            "UTF8",
            "--locale=C",
            "--locale-provider=builtin",
            "--builtin-locale=C.UTF-8",
            f"--auth-host={self.auth}",
            f"--auth-local={self.auth}",
            "--no-instructions",
        ]
        if self.settings.get("fsync") in (False, "off"):
            argv.append("--no-sync")
        password = secrets.token_urlsafe(32) if self.auth != "trust" else None
        pw_dir = tempfile.mkdtemp(prefix="parkgate-initdb-")  # 0700; /tmp is reachable by everyone
        try:
            if password is not None:
                pw_file = Path(pw_dir) / "pw"
                pw_file.write_text(password + "\n")
                os.chmod(pw_file, 0o600)
                if is_root() and not self.run_as.is_current:
                    os.chown(pw_dir, self.run_as.uid, self.run_as.gid)
                    os.chown(pw_file, self.run_as.uid, self.run_as.gid)
                argv.append(f"--pwfile={pw_file}")
            res = subprocess.run(
                argv,
                capture_output=True,
                text=True,
                cwd="/",
                env=self.run_as.env(),
                check=False,
                **self.run_as.subprocess_kwargs(),
            )
        finally:
            shutil.rmtree(pw_dir, ignore_errors=True)
        if res.returncode != 0:
            raise InitFailed(
                f"initdb for {self.data_dir} failed (exit {res.returncode}):\n{(res.stdout + res.stderr)[-3000:]}"
            )
        if password is not None:
            self._write_file(self.password_file, password + "\n")
            self._password = password
        self._write_file(self.data_dir / "pg_hba.conf", self._hba())
        self._include_settings()
        log.info("initialized PostgreSQL %s cluster in %s", binaries.version, self.data_dir)
        return True

    def _check_not_running(self, timeout: float) -> None:
        pid = self.postmaster_pid()
        if pid is not None:
            raise AlreadyRunning(
                f"{self.data_dir} is already served by a running postmaster (pid {pid}, see postmaster.pid); "
                f"stop that one first (kill -INT {pid})",
                pid=pid,
            )
        # Backends of a killed postmaster still hold its shared memory for a moment.
        deadline = time.monotonic() + timeout
        leftovers = pids_with_cwd(self.data_dir)
        while leftovers and time.monotonic() < deadline:
            time.sleep(0.05)
            leftovers = pids_with_cwd(self.data_dir)
        if leftovers:
            raise StartFailed(
                f"processes {leftovers} are still working in {self.data_dir} (left over from a postmaster "
                f"that died?); stop them before starting PostgreSQL again"
            )

    def _open_log(self) -> IO[bytes]:
        path = self.log_path
        with contextlib.suppress(FileNotFoundError):
            if path.stat().st_size > _LOG_ROTATE_BYTES:
                os.replace(path, path.with_name(LOG_FILE + ".1"))
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        if is_root() and not self.run_as.is_current:
            os.fchown(fd, self.run_as.uid, self.run_as.gid)
        return os.fdopen(fd, "ab")

    def start(self, timeout: float = 60.0) -> None:
        """Start the postmaster and wait until it accepts connections.

        Raises :class:`PortInUse` when the port is taken, :class:`AlreadyRunning`
        when another postmaster serves the folder, :class:`StartFailed` (with the
        log tail) when postgres exits early or is not ready within ``timeout``.
        """
        if self.pid is not None:
            return
        self._forget()  # a previous postmaster of ours that died: close its log
        if not self.is_initialized():
            raise DataDirError(f"{self.data_dir} is not a PostgreSQL cluster yet: call initialize() first")
        binaries = self.binaries
        check_reachable(self.data_dir, self.run_as, "write", what="data folder")
        self._check_not_running(min(timeout, 15.0))
        if not port_is_free(self.host, self.port):
            raise PortInUse(
                f"cannot start PostgreSQL on {self.host}:{self.port}: the port is already in use "
                f"(another PostgreSQL or service?); choose another port or stop the other process "
                f"(ss -ltnp 'sport = :{self.port}')",
                host=self.host,
                port=self.port,
            )
        if self.socket_dir is not None:
            prepare_dir(self.socket_dir, self.run_as, 0o755)
        self._write_settings()
        log_file = self._open_log()
        log_offset = log_file.tell()
        argv = [
            str(binaries.postgres),
            "-D",
            str(self.data_dir),
            "-c",
            f"port={self.port}",
            "-c",
            f"listen_addresses={self.host}",
            "-c",
            f"unix_socket_directories={self.socket_dir or ''}",
        ]
        try:
            self._proc = spawn_daemon(argv, run_as=self.run_as, log_file=log_file, cwd=self.data_dir)
        except BaseException:
            log_file.close()
            raise
        self._log = log_file
        log.info("started postgres pid %d on %s:%d (%s)", self._proc.pid, self.host, self.port, self.data_dir)
        try:
            self._wait_ready(timeout, log_offset)
        except BaseException:
            self._kill_after_failed_start()
            raise

    def _log_since(self, offset: int) -> str:
        """What postgres wrote to its log since ``offset`` (the last 3000 characters)."""
        try:
            with open(self.log_path, "rb") as f:
                size = f.seek(0, os.SEEK_END)
                f.seek(offset if offset <= size else 0)
                f.seek(max(f.tell(), size - 3000))
                return f.read().decode("utf-8", "replace")
        except FileNotFoundError:
            return ""

    def _wait_ready(self, timeout: float, log_offset: int) -> None:
        assert self._proc is not None
        deadline = time.monotonic() + timeout
        pidfile = self.data_dir / "postmaster.pid"
        last_error = ""
        while True:
            code = self._proc.poll()
            if code is not None:
                tail = self._log_since(log_offset)
                if "Address already in use" in tail or "could not bind" in tail:
                    raise PortInUse(
                        f"PostgreSQL could not listen on {self.host}:{self.port}: the port is already in use; "
                        f"choose another port or stop the other process. Log ({self.log_path}):\n{tail}",
                        host=self.host,
                        port=self.port,
                        log_tail=tail,
                    )
                raise StartFailed(
                    f"postgres exited with code {code} while starting; log ({self.log_path}):\n{tail}",
                    log_tail=tail,
                )
            ready = False
            with contextlib.suppress(OSError):
                lines = pidfile.read_text().split("\n")
                ready = (
                    len(lines) > 7 and lines[0].strip() == str(self._proc.pid) and lines[7].strip() == "ready"
                )
            if ready:
                try:
                    with psycopg.connect(self.conninfo(connect_timeout=5), autocommit=True) as conn:
                        conn.execute("SELECT 1")
                    return
                except psycopg.OperationalError as exc:
                    last_error = str(exc).strip()
            if time.monotonic() >= deadline:
                tail = self._log_since(log_offset)
                raise StartFailed(
                    f"PostgreSQL in {self.data_dir} did not accept connections on {self.host}:{self.port} "
                    f"within {timeout:.0f} s{f' (last error: {last_error})' if last_error else ''}; "
                    f"log ({self.log_path}):\n{tail}",
                    log_tail=tail,
                )
            time.sleep(0.05)

    def _kill_after_failed_start(self) -> None:
        with contextlib.suppress(Exception):
            self.stop("immediate", timeout=10)
        self._forget()

    def _forget(self) -> None:
        self._proc = None
        if self._log is not None:
            self._log.close()
            self._log = None

    def stop(self, mode: StopMode = "fast", timeout: float = 60.0) -> None:
        """Shut the postmaster down and wait for it and all its children to exit.

        ``fast`` (SIGINT, the default): roll back open transactions, disconnect
        clients, checkpoint, exit. ``smart`` (SIGTERM): wait for clients to
        leave. ``immediate`` (SIGQUIT): exit without checkpoint (crash recovery
        at next start; nothing committed is lost). On ``timeout`` escalates to
        SIGQUIT, then SIGKILL. Also stops a postmaster of this data folder that
        another process started. No-op when nothing runs.
        """
        proc = self._proc if self._proc is not None and self._proc.poll() is None else None
        pid = proc.pid if proc is not None else self.postmaster_pid()
        if pid is None:
            self._forget()
            return
        sig = _STOP_SIGNAL[mode]
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)
        if not wait_pid_gone(pid, timeout, proc):
            log.warning("postgres pid %d ignored %s for %.0f s; sending SIGQUIT", pid, sig.name, timeout)
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGQUIT)
            if not wait_pid_gone(pid, 10, proc):
                log.warning("postgres pid %d ignored SIGQUIT; sending SIGKILL", pid)
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
                if not wait_pid_gone(pid, 10, proc):
                    raise StopFailed(f"postgres pid {pid} did not exit even after SIGKILL")
        # After a clean exit there are no children left; after SIGQUIT/SIGKILL give them a moment.
        deadline = time.monotonic() + 10
        leftovers = pids_with_cwd(self.data_dir)
        while leftovers and time.monotonic() < deadline:
            time.sleep(0.05)
            leftovers = pids_with_cwd(self.data_dir)
        for child in leftovers:
            with contextlib.suppress(ProcessLookupError):
                os.kill(child, signal.SIGKILL)
        self._forget()
        log.info("stopped postgres pid %d (%s)", pid, mode)

    # -- databases --------------------------------------------------------------

    def connect(self, dbname: str = "postgres", **kwargs: Any) -> psycopg.Connection[Any]:
        """A psycopg connection as the superuser (autocommit unless told otherwise)."""
        kwargs.setdefault("autocommit", True)
        return psycopg.connect(self.conninfo(dbname), **kwargs)

    def database_exists(self, name: str) -> bool:
        with self.connect() as conn:
            return (
                conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone() is not None
            )

    def create_database(self, name: str, owner: str | None = None, template: str = "template1") -> str:
        """Create database ``name``; return its conninfo."""
        query = sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(
            sql.Identifier(name), sql.Identifier(template)
        )
        if owner is not None:
            query = sql.SQL("{} OWNER {}").format(query, sql.Identifier(owner))
        with self.connect() as conn:
            conn.execute(query)
        return self.conninfo(name)

    def drop_database(self, name: str, force: bool = True) -> None:
        """Drop database ``name`` if it exists (``force``: disconnect its sessions first)."""
        query = sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(name))
        if force:
            query = sql.SQL("{} WITH (FORCE)").format(query)
        with self.connect() as conn:
            conn.execute(query)

    # -- context manager ----------------------------------------------------------

    def __enter__(self) -> PostgresInstance:
        self.initialize()
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = f"pid {self.pid}" if self.pid else "stopped"
        return f"PostgresInstance({str(self.data_dir)!r}, port={self.port}, host={self.host!r}, {state})"
