"""PostgresInstance: initialize, start, stop, restart, stale pid files, busy ports, dying parents."""

from __future__ import annotations

import os
import signal
import socket
import stat
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from parkgate.server.pg import (
    AlreadyRunning,
    DataDirError,
    PortInUse,
    PostgresInstance,
    free_port,
)
from parkgate.server.pg import (
    instance as instance_module,
)
from parkgate.server.pg.process import pid_alive, pids_with_cwd
from tests.fixtures.postgres import TEST_SETTINGS, make_test_dir


@pytest.fixture
def workdir() -> Iterator[Path]:
    base = make_test_dir("parkgate-test-inst-")
    try:
        yield base
    finally:
        # never leave a server behind, whatever the test did
        for pid in pids_with_cwd(base / "data"):
            os.kill(pid, signal.SIGKILL)
        subprocess.run(["rm", "-rf", str(base)], check=False)


def fast(base: Path, **kwargs: object) -> PostgresInstance:
    """An instance with the throw-away settings (no fsync) on a free port."""
    options: dict[str, object] = {"settings": TEST_SETTINGS, **kwargs}
    return PostgresInstance(base / "data", port=free_port(), **options)  # type: ignore[arg-type]


def assert_gone(pid: int, data_dir: Path) -> None:
    assert not pid_alive(pid), f"postmaster {pid} still alive"
    assert pids_with_cwd(data_dir) == [], "postgres processes left in the data folder"


def test_lifecycle_with_password_auth(workdir: Path) -> None:
    # default (durable) settings and scram-sha-256, as `parkgate up` runs it
    pg = PostgresInstance(workdir / "data", port=free_port())
    assert pg.initialize() is True
    pw = pg.password_file.stat()
    assert stat.S_IMODE(pw.st_mode) == 0o600
    assert stat.S_IMODE((workdir / "data").stat().st_mode) == 0o700
    assert pg.password and len(pg.password) >= 40

    pg.start(timeout=60)
    pid = pg.pid
    assert pid is not None and pg.is_running()
    with pg.connect() as conn:
        settings = dict(
            conn.execute(
                "SELECT name, setting FROM pg_settings WHERE name IN "
                "('fsync', 'synchronous_commit', 'full_page_writes', 'listen_addresses', "
                "'unix_socket_directories', 'max_connections', 'password_encryption')"
            ).fetchall()
        )
    assert settings == {
        "fsync": "on",
        "synchronous_commit": "on",
        "full_page_writes": "on",
        "listen_addresses": "127.0.0.1",
        "unix_socket_directories": "",
        "max_connections": "200",
        "password_encryption": "scram-sha-256",
    }
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        psycopg.connect(pg.conninfo(password="wrong")).close()

    dsn = pg.create_database("lifecycle")
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE kept (x int)")
        conn.execute("INSERT INTO kept VALUES (7)")
    pg.create_database("dropped")
    pg.drop_database("dropped")
    assert not pg.database_exists("dropped")

    pg.stop()
    assert pg.pid is None and not pg.is_running()
    assert_gone(pid, pg.data_dir)
    assert not (pg.data_dir / "postmaster.pid").exists()
    assert "database system is shut down" in pg.log_path.read_text()

    # a new object on the same folder: the cluster and its data are reused
    again = PostgresInstance(workdir / "data", port=free_port())
    assert again.initialize() is False
    with again:
        with psycopg.connect(again.conninfo("lifecycle")) as conn:
            assert conn.execute("SELECT x FROM kept").fetchall() == [(7,)]
        pid2 = again.pid
    assert pid2 is not None
    assert_gone(pid2, again.data_dir)


def test_start_after_kill_9_with_stale_pid_file(workdir: Path) -> None:
    # synchronous_commit on: with it off, a commit still in WAL buffers dies with the postmaster
    pg = fast(workdir, settings={**TEST_SETTINGS, "synchronous_commit": True})
    pg.initialize()
    pg.start()
    with pg.connect() as conn:
        conn.execute("CREATE TABLE survivor (x int)")
        conn.execute("INSERT INTO survivor VALUES (1)")
    pid = pg.pid
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    time.sleep(0.05)
    assert (pg.data_dir / "postmaster.pid").exists()  # stale lock file left behind
    pg.start(timeout=60)  # waits for orphaned backends, postgres ignores the dead pid, crash recovery
    assert pg.pid not in (None, pid)
    with pg.connect() as conn:
        assert conn.execute("SELECT x FROM survivor").fetchall() == [(1,)]
    pg.stop()
    assert_gone(pid, pg.data_dir)


def test_second_postmaster_on_same_folder_is_refused(workdir: Path) -> None:
    with fast(workdir) as pg:
        other = PostgresInstance(pg.data_dir, port=free_port(), settings=TEST_SETTINGS)
        with pytest.raises(AlreadyRunning) as err:
            other.start()
        assert err.value.pid == pg.pid
        assert other.is_running()  # it sees the other postmaster
        assert pg.is_running()


def _listener() -> socket.socket:
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind(("127.0.0.1", 0))
    s.listen()
    return s


def test_busy_port_is_refused_before_starting(workdir: Path) -> None:
    with _listener() as busy:
        port = busy.getsockname()[1]
        pg = PostgresInstance(workdir / "data", port=port, settings=TEST_SETTINGS)
        pg.initialize()
        with pytest.raises(PortInUse, match=f"127.0.0.1:{port}") as err:
            pg.start()
        assert err.value.port == port
        assert pg.pid is None and pids_with_cwd(pg.data_dir) == []


def test_busy_port_reported_by_postgres(workdir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # lose the race: the port is free at the check but taken when postgres binds
    monkeypatch.setattr(instance_module, "port_is_free", lambda host, port: True)
    with _listener() as busy:
        port = busy.getsockname()[1]
        pg = PostgresInstance(workdir / "data", port=port, settings=TEST_SETTINGS)
        pg.initialize()
        with pytest.raises(PortInUse) as err:
            pg.start()
        assert "Address already in use" in err.value.log_tail
        assert pg.pid is None and pids_with_cwd(pg.data_dir) == []


def test_refuses_a_folder_that_is_not_a_cluster(workdir: Path) -> None:
    data = workdir / "data"
    data.mkdir()
    (data / "precious.txt").write_text("not a database")
    pg = PostgresInstance(data, port=free_port())
    with pytest.raises(DataDirError, match="not empty"):
        pg.initialize()
    with pytest.raises(DataDirError, match="initialize"):
        pg.start()
    assert (data / "precious.txt").exists()


def test_trust_only_on_loopback(workdir: Path) -> None:
    with pytest.raises(ValueError, match="loopback"):
        PostgresInstance(workdir / "data", host="0.0.0.0", auth="trust")


CHILD = textwrap.dedent(
    """
    import sys, threading, time
    from pathlib import Path
    from parkgate.server.pg import PostgresInstance
    from tests.fixtures.postgres import TEST_SETTINGS

    pg = PostgresInstance(Path(sys.argv[1]), port=int(sys.argv[2]), settings=TEST_SETTINGS, auth="trust")
    pg.initialize()
    # start from a short-lived worker thread: the parent-death signal must not fire when it exits
    t = threading.Thread(target=pg.start)
    t.start()
    t.join()
    time.sleep(0.3)
    assert pg.is_running()
    print(pg.pid, flush=True)
    time.sleep(600)
    """
)


def test_postgres_stops_when_its_parent_is_killed(workdir: Path) -> None:
    script = workdir / "child.py"
    script.write_text(CHILD)
    repo = Path(__file__).resolve().parents[2]
    parent = subprocess.Popen(
        [sys.executable, str(script), str(workdir / "data"), str(free_port())],
        stdout=subprocess.PIPE,
        text=True,
        cwd=repo,
        env={**os.environ, "PYTHONPATH": str(repo)},
    )
    try:
        assert parent.stdout is not None
        line = parent.stdout.readline()
        assert line.strip().isdigit(), f"child did not start postgres (exit {parent.poll()})"
        pid = int(line)
        assert pid_alive(pid)
        # the postmaster is in its own session: a terminal's Ctrl-C to our group does not reach it
        assert os.getsid(pid) == pid != os.getsid(0)
    finally:
        parent.kill()
        parent.wait()
    deadline = time.monotonic() + 30
    while pid_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not pid_alive(pid), "postgres outlived its killed parent"
    log = (workdir / "data" / "postgres.log").read_text()
    assert "received fast shutdown request" in log
    deadline = time.monotonic() + 10
    while pids_with_cwd(workdir / "data") and time.monotonic() < deadline:
        time.sleep(0.05)
    assert pids_with_cwd(workdir / "data") == []
