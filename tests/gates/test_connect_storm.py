"""Two hundred gates reconnecting at once (a server restart) all get their welcome, also each with its own
client certificate on the device port (mTLS); old argon2 hashes upgrade.

Device secrets are random tokens checked with a keyed hash
(server/parkgate/server/domain/device_secrets.py). No time is asserted here:
loadtests/bench_connect_storm.py prints the latencies; this test proves every
gate of the storm is welcomed and prints what it saw.
"""

from __future__ import annotations

from pathlib import Path

import psycopg

from loadtests.bench_connect_storm import enroll_gates, percentile, register_gates, storm
from parkgate.clients.gate.link import GateLink, Hello, LinkError
from parkgate.server.domain import passwords
from tests.fixtures.server import RunningServer, start_server, stop_server, use_test_pki

GATES = 200


async def test_two_hundred_gates_connecting_at_once_all_get_their_welcome(parkgate_server: RunningServer) -> None:
    secrets = await register_gates(parkgate_server.address, parkgate_server.admin_password, GATES, "stormpark")
    assert len(secrets) == GATES
    times = await storm(parkgate_server.address, secrets, "stormpark", timeout=120)
    assert len(times) == GATES  # every gate was welcomed (storm raises otherwise)
    print(f"\n{GATES} gates at once: welcome p50 {percentile(times, 0.5) * 1000:.0f} ms, "
          f"p99 {percentile(times, 0.99) * 1000:.0f} ms, max {max(times) * 1000:.0f} ms")


async def test_two_hundred_gates_with_client_certificates_all_get_their_welcome_on_the_device_port(
    parkgate_server: RunningServer, module_dsn: str, tmp_path: Path
) -> None:
    pki = use_test_pki()
    server = await start_server(module_dsn, **{
        "server.device_listen": "127.0.0.1:0", "server.require_device_cert": True,
        "server.device_ca_cert_file": str(pki.device_ca_file), "server.device_ca_key_file": str(pki.device_ca_key_file)})
    try:
        # the module's server made the admin of this database
        secrets = await register_gates(server.address, parkgate_server.admin_password, GATES, "mtlsstorm")
        transports = await enroll_gates(server.address, secrets, tmp_path)
        assert len(transports) == GATES and all(t.cert_file for t in transports.values())
        times = await storm(server.device_address, secrets, "mtlsstorm", timeout=120, transports=transports)
        assert len(times) == GATES  # every gate was welcomed (storm raises otherwise)
        print(f"\n{GATES} gates at once with client certificates: welcome p50 {percentile(times, 0.5) * 1000:.0f} ms, "
              f"p99 {percentile(times, 0.99) * 1000:.0f} ms, max {max(times) * 1000:.0f} ms")
    finally:
        await stop_server(server)


async def test_an_argon2_device_hash_from_before_verifies_and_is_upgraded(
    parkgate_server: RunningServer, module_dsn: str
) -> None:
    secrets = await register_gates(parkgate_server.address, parkgate_server.admin_password, 1, "oldpark")
    (device_id, secret), = secrets.items()
    with psycopg.connect(module_dsn, autocommit=True) as conn:
        conn.execute("UPDATE devices SET secret_hash = %s WHERE id = %s", (passwords.hash_password(secret), device_id))
    wrong = GateLink(parkgate_server.address, Hello(device_id, "not-the-secret", "in", "oldpark"))
    try:
        await wrong.open()
        raise AssertionError("a wrong secret was welcomed")
    except LinkError as exc:
        assert exc.reason == "BAD_DEVICE_CREDENTIALS"
    with psycopg.connect(module_dsn, autocommit=True) as conn:
        (stored,), = conn.execute("SELECT secret_hash FROM devices WHERE id = %s", (device_id,)).fetchall()
    assert stored.startswith("$argon2id$")  # a failed check rewrites nothing
    assert len(await storm(parkgate_server.address, secrets, "oldpark")) == 1
    with psycopg.connect(module_dsn, autocommit=True) as conn:
        (stored,), = conn.execute("SELECT secret_hash FROM devices WHERE id = %s", (device_id,)).fetchall()
    assert stored.startswith("hmac-sha256$") and secret not in stored
    assert len(await storm(parkgate_server.address, secrets, "oldpark")) == 1  # and the fast hash verifies
