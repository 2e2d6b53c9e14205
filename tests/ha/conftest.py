"""One real cluster per test module: etcd, Patroni + PostgreSQL 18, parkgate servers, on 127.0.0.1.

The fixture drives the real command line (``parkgate cluster up`` / ``down``
in a subprocess, as an SRE would), in a fresh folder handed to the
unprivileged user, on ports found free. Teardown runs ``down`` and then kills
by pid whatever the state file still lists, so a failing test leaves nothing
running.
"""

from __future__ import annotations

import contextlib
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from parkgate.ha import patroni_api
from parkgate.ha.drill import kill_node
from parkgate.ha.render import Secrets
from parkgate.ha.spec import PORT_LAYOUT, ClusterSpec
from parkgate.ha.supervisor import ADMIN_FILE, load_secrets, load_state
from parkgate.server.pg import port_is_free
from parkgate.server.pg.process import pids_with_cwd
from tests.fixtures.postgres import make_test_dir


def free_base_port(members: int = 3) -> int:
    """A base port whose whole layout (etcd, PostgreSQL, REST, servers) is free on 127.0.0.1 now.

    Chosen below the ephemeral port range: postgres binds its port only when Patroni starts
    it, seconds after the check, and an outgoing connection (replication, a client) might
    otherwise have been given that port as its local port in between.
    """
    low, _high = (int(x) for x in Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split())
    for _ in range(200):
        # Below the kernel's ephemeral range: an outgoing connection can never take one of them.
        base = random.randrange(10000, max(low, 10100) - 50, 50)
        ports = [base + off + i for off in PORT_LAYOUT.values() for i in range(members)]
        if all(port_is_free("127.0.0.1", p) for p in ports):
            return base
    raise RuntimeError("no free range of ports for a test cluster")


def cli(*args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    """``parkgate cluster ARGS`` in a subprocess (the installed command line, as an SRE runs it)."""
    return subprocess.run([sys.executable, "-m", "parkgate.common.cli", "cluster", *args],
                          capture_output=True, text=True, timeout=timeout, check=False)


@dataclass
class Cluster:
    data_dir: Path
    spec: ClusterSpec
    secrets: Secrets
    admin_password: str

    @property
    def rest(self) -> list[str]:
        return [n.rest_url for n in self.spec.postgres]

    @property
    def servers(self) -> list[str]:
        return [s.address for s in self.spec.servers]

    @property
    def dsn(self) -> str:
        return self.spec.server_dsn(self.secrets.app)

    def view(self) -> patroni_api.ClusterView:
        return patroni_api.cluster_view(self.rest, timeout=1)

    def wait_healthy(self, timeout: float = 90, *, not_leader: str | None = None) -> patroni_api.ClusterView:
        """Wait for a leader (other than ``not_leader``) AND a synchronous standby, every node streaming."""
        deadline = time.monotonic() + timeout
        last: object = None
        while time.monotonic() < deadline:
            try:
                view = self.view()
            except patroni_api.PatroniError as exc:
                last = exc
            else:
                last = view.members
                if (view.healthy(want_sync=True) and view.leader is not None and view.leader.name != not_leader
                        and len(view.members) == len(self.spec.postgres)
                        and all(m.state in ("running", "streaming") for m in view.members)):
                    return view
            time.sleep(0.25)
        raise AssertionError(f"cluster not healthy within {timeout}s: {last}")

    def wait_failover(self, old_leader: str, timeout: float = 90) -> patroni_api.ClusterView:
        """Wait until a node other than ``old_leader`` is the running leader."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                view = self.view()
            except patroni_api.PatroniError:
                view = None
            if view is not None and view.leader is not None and view.leader.name != old_leader:
                return view
            time.sleep(0.2)
        raise AssertionError(f"no new leader within {timeout}s after {old_leader} was killed")

    #: The servers' etcd lease (parkgate server's default cluster.lease_ttl_seconds).
    spec_lease_ttl = 10

    def kill_node(self, name: str) -> None:
        """kill -9 a node's Patroni and its postmaster together (a machine dying)."""
        kill_node(self.spec, self.data_dir, name)

    def up(self) -> subprocess.CompletedProcess[str]:
        res = cli("up", "--data-dir", str(self.data_dir), "--timeout", "120")
        assert res.returncode == 0, res.stderr
        return res


def _kill_leftovers(data_dir: Path) -> None:
    with contextlib.suppress(Exception):
        state = load_state(data_dir)
        for p in state.procs.values():
            if p.alive():
                os.kill(p.pid, signal.SIGKILL)
        for node in state.spec.postgres:
            data = state.spec.node_dir(node.name) / "data"
            if data.exists():
                for pid in pids_with_cwd(data):
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    """3 etcd members, 3 PostgreSQL nodes under Patroni, 2 servers: up for the module, down after it."""
    base_dir = make_test_dir("parkgate-ha-")
    data_dir = base_dir / "cluster"
    try:
        res = cli("up", "--data-dir", str(data_dir), "--base-port", str(free_base_port()), "--etcd", "3",
                  "--nodes", "3", "--servers", "2", "--timeout", "150")
        assert res.returncode == 0, f"cluster up failed:\n{res.stderr}\n{res.stdout}"
        spec = load_state(data_dir).spec
        password = (data_dir / ADMIN_FILE).read_text().strip()
        yield Cluster(data_dir, spec, load_secrets(data_dir), password)
    finally:
        if (data_dir / "cluster.json").exists():
            cli("down", "--data-dir", str(data_dir), "--timeout", "30")
            _kill_leftovers(data_dir)
        if os.environ.get("PARKGATE_TEST_PG_KEEP"):
            print(f"\nkept the test cluster folder {base_dir}")
        else:
            shutil.rmtree(base_dir, ignore_errors=True)
