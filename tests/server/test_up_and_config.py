"""`parkgate up` from nothing to a demo park and back; bad configuration refused by name."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from parkgate.server.config import ConfigError, load_settings
from parkgate.server.pg import free_port
from parkgate.server.pg.process import pids_with_cwd
from tests.fixtures.postgres import make_test_dir

PARKGATE = [sys.executable, "-m", "parkgate.common.cli"]


def _start_up(data_dir: Path, listen: str, pg_port: int, home: Path, metrics: str = "off") -> subprocess.Popen[str]:
    env = {**os.environ, "PARKGATE_EMBEDDED__POSTGRES_PORT": str(pg_port), "HOME": str(home),
           "PARKGATE_METRICS__LISTEN": metrics}
    return subprocess.Popen(
        [*PARKGATE, "up", "--demo", "--data-dir", str(data_dir), "--listen", listen],
        stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True, env=env,
    )


def _read_until(proc: subprocess.Popen[str], marker: str, timeout: float = 90) -> str:
    seen = []
    deadline = time.monotonic() + timeout
    assert proc.stderr is not None
    while time.monotonic() < deadline:
        line = proc.stderr.readline()
        if not line:
            raise AssertionError(f"parkgate up exited ({proc.poll()}):\n{''.join(seen)}")
        seen.append(line)
        if marker in line:
            return "".join(seen)
    raise AssertionError(f"no {marker!r} within {timeout}s:\n{''.join(seen)}")


def _admin(listen: str, home: Path, *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run([*PARKGATE, "admin", "--server", listen, *args], input=stdin, capture_output=True,
                          text=True, env={**os.environ, "HOME": str(home)}, timeout=60)


def _stop(proc: subprocess.Popen[str]) -> str:
    proc.send_signal(signal.SIGTERM)
    _out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    return err


@pytest.mark.slow
def test_up_serves_the_demo_park_and_stops_cleanly() -> None:
    base = make_test_dir("parkgate-up-")
    home = base / "home"
    home.mkdir()
    data_dir = base / "data"
    listen = f"127.0.0.1:{free_port()}"
    pg_port = free_port()
    try:
        metrics = f"127.0.0.1:{free_port()}"  # up serves /metrics (default 127.0.0.1:9464; a free port here)
        proc = _start_up(data_dir, listen, pg_port, home, metrics)
        out = _read_until(proc, "press Ctrl-C")
        assert "created a new PostgreSQL cluster" in out
        assert f"Prometheus metrics on http://{metrics}/metrics" in out, out
        with urllib.request.urlopen(f"http://{metrics}/metrics", timeout=10) as reply:
            assert b"parkgate_db_pool_connections" in reply.read()
        password = re.search(r"password: (\S+)", out)
        assert password, out
        login = _admin(listen, home, "login", "--user", "admin", "--password-stdin", stdin=password[1] + "\n")
        assert login.returncode == 0, login.stderr
        parks = _admin(listen, home, "--json", "parks")
        assert parks.returncode == 0, parks.stderr
        assert {"waterpark", "landpark"} <= set(re.findall(r'"id": "(\w+)"', parks.stdout))
        err = _stop(proc)
        assert "stopped" in err
        assert pids_with_cwd(data_dir / "pgdata") == []  # no postgres left behind

        # Started again: the same data, no new admin, the demo not loaded twice.
        proc = _start_up(data_dir, listen, pg_port, home)
        out = _read_until(proc, "press Ctrl-C")
        assert "created a new" not in out and "password:" not in out and "loaded the demo" not in out
        parks = _admin(listen, home, "--json", "parks")
        assert parks.returncode == 0 and "waterpark" in parks.stdout
        _stop(proc)
    finally:
        shutil.rmtree(base, ignore_errors=True)


def test_bad_config_file_names_the_key(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('[server]\nlisten = "nowhere"\n[database]\npool_max_sise = 3\n')
    result = subprocess.run([*PARKGATE, "server", "--config", str(bad)], capture_output=True, text=True, timeout=60)
    assert result.returncode != 0
    assert "server.listen" in result.stderr and "database.pool_max_sise: unknown key" in result.stderr


def test_server_without_database_says_which_key(tmp_path: Path) -> None:
    result = subprocess.run([*PARKGATE, "server"], capture_output=True, text=True, timeout=60,
                            env={k: v for k, v in os.environ.items() if not k.startswith("PARKGATE_")})
    assert result.returncode != 0 and "database.dsn" in result.stderr


def test_environment_overrides_the_file_and_typos_are_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    good = tmp_path / "good.toml"
    good.write_text('[server]\nlisten = "127.0.0.1:6000"\n[auth]\nmax_failed_logins = 3\n')
    monkeypatch.setenv("PARKGATE_AUTH__MAX_FAILED_LOGINS", "7")
    settings = load_settings(good)
    assert settings.server.listen == "127.0.0.1:6000" and settings.auth.max_failed_logins == 7
    monkeypatch.setenv("PARKGATE_LISTEN", "127.0.0.1:7000")
    assert load_settings(good).server.listen == "127.0.0.1:7000"
    monkeypatch.setenv("PARKGATE_AUTH__MAX_FAILED_LOGIN", "7")
    with pytest.raises(ConfigError, match="PARKGATE_AUTH__MAX_FAILED_LOGIN"):
        load_settings(good)
    monkeypatch.delenv("PARKGATE_AUTH__MAX_FAILED_LOGIN")
    monkeypatch.setenv("PARKGATE_AUTH__MAX_FAILED_LOGINS", "many")
    with pytest.raises(ConfigError, match=r"auth\.max_failed_logins"):
        load_settings(good)
    with pytest.raises(ConfigError, match="not found"):
        load_settings(tmp_path / "missing.toml")


def test_admin_init_creates_the_first_admin_once(database_dsn: str) -> None:
    env = {**os.environ, "PARKGATE_DATABASE__DSN": database_dsn}
    first = subprocess.run([*PARKGATE, "admin", "init"], capture_output=True, text=True, timeout=120, env=env)
    assert first.returncode == 0, first.stderr
    assert re.search(r"user: admin\s+password: \S{12,}", first.stdout)
    again = subprocess.run([*PARKGATE, "admin", "init"], capture_output=True, text=True, timeout=120, env=env)
    assert again.returncode == 1 and "users exist already" in again.stderr
    assert "password" not in again.stdout
