"""The site edge: offline decision latency with the durable write, and the forward rate after a reconnect.

``python -m loadtests.bench_edge`` starts a real PostgreSQL and a real parkgate
server (a subprocess), registers a site edge and a gate, sells ``--count``
tickets centrally, then runs the edge's real parts in this process: its store
(SQLite, WAL, synchronous=FULL) on this machine's disk (a folder under the
current directory: /tmp may be memory), its feed follower until caught up,
and its Decider with the cluster held away -- each validation takes the
per-ticket lock, checks the signature, runs the one decision engine and
commits answer + uses + forward record in one fsync'd transaction before it
returns. Then the same codes again (ALREADY_USED, nothing written). Then the
cluster is "back": the Forwarder sends the whole queue and the rate is
printed, and the cluster's admissions are counted (lost or doubled = 0 expected).

``--no-cluster`` measures the decisions only, on a sample site (no PostgreSQL).
The disk is shared: the raw fdatasync latency of the same folder is printed
first, so the figures can be read against it.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import tempfile
import time
import uuid
from pathlib import Path

import psycopg

from parkgate.clients.site.cluster import Cluster
from parkgate.clients.site.config import SiteSection
from parkgate.clients.site.decide import Decider
from parkgate.clients.site.feed import FeedFollower
from parkgate.clients.site.forward import Forwarder
from parkgate.clients.site.local import SitePicture
from parkgate.clients.site.sample import feed_sample_site, sample_code
from parkgate.clients.site.store import SiteStore
from parkgate.common.channels import open_aio_channel
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
    gate_pb2,
    sales_pb2,
    sales_pb2_grpc,
)

from .bench_gates import ServerProcess

PARK, SITE, EDGE, GATE = "benchpark", "bench-site", "bench-edge", "bench-gate"


def _pct(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _line(label: str, samples: list[float]) -> str:
    ms = [s * 1000 for s in samples]
    return (f"{label:<36} n={len(ms):>6}  p50={statistics.median(ms):6.3f} ms  p99={_pct(ms, 0.99):6.3f} ms  "
            f"max={max(ms):7.3f} ms")


def fdatasync_line(folder: Path, n: int = 500) -> str:
    path = folder / "fdatasync.probe"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    samples = []
    try:
        for _ in range(n):
            os.write(fd, b"x" * 512)
            start = time.perf_counter()
            os.fdatasync(fd)
            samples.append(time.perf_counter() - start)
    finally:
        os.close(fd)
        path.unlink()
    return _line("raw fdatasync of this folder", samples)


async def decide_all(decider: Decider, codes: list[str], prefix: str) -> tuple[list[float], int]:
    place = decider.picture.place(decider.picture.devices[GATE], "in")
    assert place is not None, "the gate is not in the edge's picture"
    samples, allowed = [], 0
    for i, code in enumerate(codes):
        start = time.perf_counter()
        result = await decider.validate(place, gate_pb2.ValidationRequest(request_id=f"{prefix}{i}", code=code))
        samples.append(time.perf_counter() - start)
        allowed += result.allow
    return samples, allowed


async def prepare(address: str, admin_password: str, count: int) -> tuple[list[str], str]:
    """The park, a single-use product, the edge and a gate of its site, ``count`` tickets; (codes, edge secret)."""
    async with open_aio_channel(address) as channel:
        auth = auth_pb2_grpc.AuthStub(channel)
        login = await auth.Login(auth_pb2.LoginRequest(username="admin", password=admin_password), timeout=30)
        md = (("authorization", f"Bearer {login.token}"),)
        catalog, admin = catalog_pb2_grpc.CatalogStub(channel), admin_pb2_grpc.AdminStub(channel)
        await catalog.PutPark(catalog_pb2.PutParkRequest(park=catalog_pb2.Park(
            id=PARK, name="Bench Park", time_zone="UTC", currency="CNY")), metadata=md)
        await catalog.PutProduct(catalog_pb2.PutProductRequest(product=catalog_pb2.Product(
            id="single", park_id=PARK, name="Single", kind=catalog_pb2.SINGLE, on_sale=True,
            rules=catalog_pb2.ProductRules(validity=catalog_pb2.VISIT_DATE, entries_total=1))), metadata=md)
        for day_type in (catalog_pb2.WEEKDAY, catalog_pb2.WEEKEND, catalog_pb2.HOLIDAY):
            await catalog.SetPrice(catalog_pb2.SetPriceRequest(entry=catalog_pb2.PriceEntry(
                product_id="single", day_type=day_type, price=common_pb2.Money(minor_units=100, currency="CNY"))),
                metadata=md)
        secrets = {}
        for device, kind in ((EDGE, admin_pb2.SITE_EDGE), (GATE, admin_pb2.GATE), ("bench-window",
                                                                                  admin_pb2.SALES_WINDOW)):
            reply = await admin.RegisterDevice(admin_pb2.RegisterDeviceRequest(device=admin_pb2.Device(
                id=device, kind=kind, site=SITE, park_id=PARK, direction=common_pb2.IN)), metadata=md)
            secrets[device] = reply.secret
        seller = await auth.Login(auth_pb2.LoginRequest(username="admin", password=admin_password,
                                                        device_id="bench-window",
                                                        device_secret=secrets["bench-window"]), timeout=30)
        sales, codes = sales_pb2_grpc.SalesStub(channel), []
        while len(codes) < count:
            order = await sales.QuickSell(sales_pb2.QuickSellRequest(
                request_id=str(uuid.uuid4()), product_id="single", quantity=min(200, count - len(codes))),
                metadata=(("authorization", f"Bearer {seller.token}"),), timeout=60)
            codes += [t.code for t in order.tickets]
    return codes, secrets[EDGE]


async def run_edge(folder: Path, servers: list[str], secret: str, codes: list[str] | None, dsn: str,
                   count: int = 0) -> None:
    (folder / "edge.secret").write_text(secret + "\n")
    section = SiteSection(device_id=EDGE, secret_file=folder / "edge.secret", servers=servers, state_dir=folder,
                          offline_hold_seconds=300)
    store = SiteStore(folder / "site.db")
    cluster = Cluster(section)
    decider = Decider(store, cluster, SitePicture.load(store))
    if codes is None:  # no cluster: a sample site
        key = feed_sample_site(store, gate_id=GATE)
        decider.picture = SitePicture.load(store)
        codes = [sample_code(key, 1_000_000 + i) for i in range(count)]
    else:
        def changed() -> None:
            decider.picture = SitePicture.load(store)

        follower = FeedFollower(store, cluster, changed)
        task = asyncio.create_task(follower.run())
        await asyncio.wait_for(follower.caught_up.wait(), 120)
        task.cancel()
    cluster.failed("benchmark: the cluster is held away")
    admitted, allowed = await decide_all(decider, codes, "a")
    refused, again = await decide_all(decider, codes, "b")
    print(f"site edge offline decisions, store {folder / 'site.db'} (WAL, synchronous=FULL), {len(codes)} codes")
    print(_line("admitted (durable write included)", admitted) + f"  allowed={allowed}")
    print(_line("refused ALREADY_USED (no write)", refused) + f"  allowed={again}")
    queued = store.pending_count()
    print(f"forward queue: {queued} records")
    if dsn:
        cluster.answered()
        forwarder = Forwarder(store, cluster)
        start = time.perf_counter()
        task = asyncio.create_task(forwarder.run())  # the edge's own loop: backoff and batch sizing included
        while store.pending_count():  # noqa: ASYNC110 -- the queue lives in SQLite: polled, not signalled
            await asyncio.sleep(0.05)
        took = time.perf_counter() - start
        task.cancel()
        print(f"forward after reconnect: {queued} records in {took:.2f} s = {queued / took:,.0f} records/s "
              f"(batches of up to {section.forward_batch}, one call in flight)")
        with psycopg.connect(dsn, autocommit=True) as conn:
            rows = conn.execute("SELECT count(*), count(DISTINCT ticket_id) FROM validations "
                                "WHERE allow AND direction = 'in' AND device_id = %s", (GATE,)).fetchone()
        assert rows is not None
        print(f"cluster: {rows[0]} admissions of {rows[1]} tickets from {allowed} acknowledged at the edge "
              f"(lost {allowed - rows[1]}, doubled {rows[0] - rows[1]})")
    await cluster.close()
    store.close()


async def bench(folder: Path, count: int, with_cluster: bool) -> None:
    print(fdatasync_line(folder))
    if not with_cluster:
        await run_edge(folder, ["127.0.0.1:9"], "unused", None, "", count)
        return
    base = Path(tempfile.mkdtemp(prefix="parkgate-bench-edge-"))
    run_as = ensure_user() if is_root() else None
    if run_as is not None:
        os.chown(base, run_as.uid, run_as.gid)
    pg = PostgresInstance(base / "pgdata", free_port(), run_as=run_as, auth="trust")
    server: ServerProcess | None = None
    try:
        pg.initialize()
        pg.start()
        dsn = pg.create_database("bench")
        password = await init_first_admin(load_settings(None), dsn, "admin")
        assert password
        server = ServerProcess(dsn, "batched", base / "server.log")
        await server.wait_serving()
        codes, secret = await prepare(server.address, password, count)
        await run_edge(folder, [server.address], secret, codes, dsn)
    finally:
        if server is not None:
            server.stop()
        pg.stop()
        shutil.rmtree(base, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=3000)
    parser.add_argument("--dir", default="", help="folder for the edge's store (default: new, under the current dir)")
    parser.add_argument("--no-cluster", action="store_true", help="decisions only, on a sample site")
    args = parser.parse_args()
    folder = Path(args.dir) if args.dir else Path(tempfile.mkdtemp(prefix=".bench-edge-", dir=os.getcwd()))
    folder.mkdir(parents=True, exist_ok=True)
    try:
        asyncio.run(bench(folder, args.count, not args.no_cluster))
    finally:
        if not args.dir:
            shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
