"""The site edge's offline decision latency, durable write included (``python -m loadtests.bench_edge``).

What it measures: a real edge store (SQLite, WAL, synchronous=FULL) on this
machine's disk under ``--dir`` (default: a folder under the current directory,
not /tmp, which may be memory), the edge's real Decider with the cluster held
offline, N fresh single-use codes validated one after the other (each: the
per-ticket lock, the signature check, the one decision engine, one durable
transaction of answer + uses + forward record), then the same codes again
(refusals: ALREADY_USED, no write). Prints p50/p99/max of each, and the
forward queue it left.

The forward rate after a reconnect needs a cluster: ``--cluster HOST:PORT``
with ``--device``/``--secret-file`` of a registered site edge sends the
queue to it with the edge's Forwarder and prints records/s.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

from parkgate.clients.site.cluster import Cluster
from parkgate.clients.site.config import SiteSection
from parkgate.clients.site.decide import Decider
from parkgate.clients.site.forward import Forwarder
from parkgate.clients.site.local import SitePicture
from parkgate.clients.site.sample import feed_sample_site, sample_code
from parkgate.clients.site.store import SiteStore
from parkgate.v1 import gate_pb2


def _pct(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _line(label: str, samples: list[float]) -> str:
    ms = [s * 1000 for s in samples]
    return (f"{label:<34} n={len(ms):>6}  p50={statistics.median(ms):6.3f} ms  p99={_pct(ms, 0.99):6.3f} ms  "
            f"max={max(ms):7.3f} ms")


async def bench(folder: Path, count: int, cluster: str, device: str, secret_file: Path | None) -> None:
    secret = secret_file or folder / "secret"
    if secret_file is None:
        secret.write_text("unused\n")
    section = SiteSection(device_id=device, secret_file=secret, servers=[cluster or "127.0.0.1:9"],
                          state_dir=folder, offline_hold_seconds=300)
    store = SiteStore(folder / "site.db")
    key = feed_sample_site(store)
    link = Cluster(section)
    link.failed("benchmark: the cluster is held away")
    decider = Decider(store, link, SitePicture.load(store))
    place = decider.picture.place(decider.picture.devices["gate-1"], "in")
    assert place is not None
    codes = [sample_code(key, 1_000_000 + i) for i in range(count)]
    admitted: list[float] = []
    for i, code in enumerate(codes):
        start = time.perf_counter()
        result = await decider.validate(place, gate_pb2.ValidationRequest(request_id=f"a{i}", code=code))
        admitted.append(time.perf_counter() - start)
        assert result.allow, result
    refused: list[float] = []
    for i, code in enumerate(codes):
        start = time.perf_counter()
        result = await decider.validate(place, gate_pb2.ValidationRequest(request_id=f"b{i}", code=code))
        refused.append(time.perf_counter() - start)
        assert not result.allow and result.reason, result
    print(f"site edge, offline decisions, store {folder / 'site.db'} (WAL, synchronous=FULL)")
    print(_line("admitted (durable write included)", admitted))
    print(_line("refused ALREADY_USED", refused))
    print(f"forward queue after the run: {store.pending_count()} records")
    if cluster:
        link.answered()
        forwarder = Forwarder(store, link)
        start, before = time.perf_counter(), store.pending_count()
        while store.pending_count():
            await forwarder.forward_once()
        took = time.perf_counter() - start
        print(f"forward after reconnect: {before} records in {took:.2f} s = {before / took:,.0f} records/s "
              f"(batches of {section.forward_batch})")
    else:
        print("forward rate after a reconnect: not measured (no --cluster given)")
    await link.close()
    store.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=5000)
    parser.add_argument("--dir", default="", help="folder for the store (default: a new one under the current directory)")
    parser.add_argument("--cluster", default="", help="HOST:PORT of a cluster server, to measure forwarding")
    parser.add_argument("--device", default="bench-edge", help="the registered site edge's device id")
    parser.add_argument("--secret-file", type=Path, default=None)
    args = parser.parse_args()
    folder = Path(args.dir) if args.dir else Path(tempfile.mkdtemp(prefix=".bench-edge-", dir=os.getcwd()))
    folder.mkdir(parents=True, exist_ok=True)
    try:
        asyncio.run(bench(folder, args.count, args.cluster, args.device, args.secret_file))
    finally:
        if not args.dir:
            shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
