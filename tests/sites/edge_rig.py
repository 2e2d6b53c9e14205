"""A real site edge process (``parkgate site run``) in front of a real server, and what the tests read of it.

The edge runs as a subprocess with its own state folder, so a test can stop
it, kill -9 it and start it again on the same store; its log goes to a file
the tests wait on. The server is started on a fixed free port so it can be
stopped and started again where the edge expects it. The edge's store is
read with sqlite3 (WAL lets a reader look while the edge writes).
"""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from parkgate.server.pg import free_port
from parkgate.v1 import admin_pb2, common_pb2
from tests.fixtures.park import TestPark
from tests.fixtures.server import RunningServer, start_server, stop_server, use_test_pki

SITE = "east"


async def until(condition, what: str, timeout: float = 30.0, every: float = 0.1):  # type: ignore[no-untyped-def]
    """Wait for ``condition()`` to be true(ish); fail naming ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"waited {timeout:.0f}s for {what}")
        await asyncio.sleep(every)


async def register(park: TestPark, device_id: str, kind: int, *, direction: int = common_pb2.IN,
                   site: str = SITE, attraction: str = "") -> str:
    reply = await park.admin.admin.RegisterDevice(admin_pb2.RegisterDeviceRequest(device=admin_pb2.Device(
        id=device_id, kind=kind, site=site, park_id=park.park_id, direction=direction, attraction_id=attraction)),
        metadata=park.admin.metadata)
    park.secrets[device_id] = reply.secret
    return reply.secret


@dataclass
class Cluster:
    """One real server on a fixed port over the test's database, which the test can stop and start."""

    dsn: str
    port: int = field(default_factory=free_port)
    running: RunningServer | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    async def start(self) -> RunningServer:
        self.running = await start_server(self.dsn, **{"server.listen": self.address})
        return self.running

    async def stop(self) -> None:
        """Stop the server; the test's client channels stay open and reconnect when it is back."""
        if self.running is not None:
            await self.running.server.stop(grace=1.0)
            self.running = None

    async def close(self) -> None:
        if self.running is not None:
            await stop_server(self.running)
            self.running = None


@dataclass
class Edge:
    """``parkgate site run`` as a subprocess."""

    folder: Path
    servers: list[str]
    device_id: str
    secret: str
    faketime: str = ""          # e.g. "+5s": the edge's clock is off by this much (libfaketime)
    forward_batch: int = 50
    extra: str = ""             # more site.toml after [site]'s keys: keys of [site], then sections ([power], [metrics])
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None
    starts: int = 0

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def log(self) -> Path:
        return self.folder / "edge.log"

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def start(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        secret_file = self.folder / "edge.secret"
        secret_file.write_text(self.secret + "\n")
        config = self.folder / "site.toml"
        config.write_text(f"""
[site]
device_id = "{self.device_id}"
secret_file = "{secret_file}"
servers = [{", ".join(f'"{s}"' for s in self.servers)}]
listen = "{self.address}"
tls_cert_file = "{use_test_pki().cert_file}"
tls_key_file = "{use_test_pki().key_file}"
state_dir = "{self.folder / 'state'}"
decision_deadline_ms = 400
offline_hold_seconds = 1.0
reconnect_min_seconds = 0.2
reconnect_max_seconds = 1.0
forward_batch = {self.forward_batch}
serials_wanted = 1000
log_level = "info"
{self.extra}
""")
        command = [sys.executable, "-m", "parkgate.common.cli", "site", "run", "--config", str(config)]
        if self.faketime:
            command = ["faketime", "-f", self.faketime, *command]
        self.starts += 1
        with open(self.log, "ab") as log:
            log.write(f"--- start {self.starts}\n".encode())
            self.process = subprocess.Popen(command, stdout=log, stderr=log, start_new_session=True,
                                            env={**os.environ, "PYTHONUNBUFFERED": "1",
                                                 **({"PARKGATE_SITE__LOG_LEVEL": "debug"}
                                                    if os.environ.get("EDGE_DEBUG") else {})})

    async def ready(self, *, feed: bool = True, provisioned: bool = True) -> None:
        """Wait until this start of the edge listens, followed the feed and holds a site key."""
        marker = f"--- start {self.starts}\n"

        def seen(text: str) -> bool:
            tail = self.log_text().rsplit(marker, 1)[-1]
            if self.process is not None and self.process.poll() is not None:
                pytest.fail(f"the edge exited ({self.process.returncode}):\n{tail[-3000:]}")
            return text in tail

        await until(lambda: seen("listening on"), "the edge to listen")
        if feed:
            await until(lambda: seen("feed caught up"), "the edge's feed to catch up")
        if provisioned:
            await until(lambda: self.store_value("SELECT count(*) FROM serials") > 0, "the site key")

    def kill9(self) -> None:
        assert self.process is not None
        os.kill(self.process.pid, signal.SIGKILL)
        self.process.wait(10)
        self.process = None

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        self.process = None

    def store_value(self, query: str, *params: object) -> int:
        path = self.folder / "state" / "site.db"
        if not path.exists():
            return 0
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)
        try:
            row = db.execute(query, params).fetchone()
        except sqlite3.OperationalError:
            return 0
        finally:
            db.close()
        return int(row[0]) if row and row[0] is not None else 0

    @property
    def queued(self) -> int:
        """Records in the forward queue."""
        return self.store_value("SELECT count(*) FROM outbox")
