"""Device certificates (mTLS): enrolment, a gate's certificate naming its own device, and certificates required.

A real server on loopback with a device port (``server.device_listen``) where
every client presents a certificate of the test PKI's device CA. Devices
enrol through :func:`parkgate.clients.enroll.enroll` (what ``parkgate gate
enroll`` and ``parkgate device enroll`` run): the key is made on the device,
the server signs the CSR once the device secret is right. Read as a runbook:
an enrolled gate is welcomed on the device port; a gate presenting another
device's certificate is refused DEVICE_CERT_MISMATCH and the operation log
says so; with ``server.require_device_cert`` a gate without one is refused
DEVICE_CERT_REQUIRED (and cannot even finish the handshake on the device
port); a wrong secret enrols nothing; a window and a site edge present theirs.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import psycopg
import pytest
from cryptography import x509

from loadtests.bench_connect_storm import register_gates
from parkgate.clients.enroll import CallError, enroll
from parkgate.clients.gate.link import GateLink, Hello, LinkError
from parkgate.common.channels import Transport, open_aio_channel
from parkgate.common.tls import DevPki
from parkgate.v1 import admin_pb2, auth_pb2, auth_pb2_grpc, common_pb2, site_pb2, site_pb2_grpc
from tests.fixtures.server import RunningServer, reason_of, start_server, stop_server, use_test_pki

PARK = "mtlspark"


@dataclass
class Rig:
    server: RunningServer      # server.require_device_cert off: certificates optional on the main port
    strict: RunningServer      # the same database, server.require_device_cert on
    pki: DevPki
    secrets: dict[str, str]
    folder: Path

    def device_files(self, device_id: str) -> tuple[Path, Path]:
        return self.folder / f"{device_id}.pem", self.folder / f"{device_id}.key"

    def transport(self, device_id: str | None) -> Transport:
        """TLS trusting the test CA, presenting ``device_id``'s enrolled certificate (None: no certificate)."""
        if device_id is None:
            return Transport(ca_file=str(self.pki.ca_file))
        cert, key = self.device_files(device_id)
        return Transport(ca_file=str(self.pki.ca_file), cert_file=str(cert), key_file=str(key))

    async def enroll(self, device_id: str, server: str | None = None, secret: str | None = None) -> None:
        cert, key = self.device_files(device_id)
        await asyncio.to_thread(enroll, server or self.server.address, device_id,
                                self.secrets[device_id] if secret is None else secret, cert, key,
                                transport=self.transport(None))

    def sql(self, dsn: str, query: str, *params: object) -> list[tuple]:
        with psycopg.connect(dsn, autocommit=True) as conn:
            return conn.execute(query, params).fetchall()


def _device_settings(pki: DevPki, **extra: object) -> dict[str, object]:
    return {"server.device_listen": "127.0.0.1:0", "server.device_ca_cert_file": str(pki.device_ca_file),
            "server.device_ca_key_file": str(pki.device_ca_key_file), "server.device_cert_days": 7, **extra}


@pytest.fixture(scope="module")
async def rig(module_dsn: str, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Rig]:
    pki = use_test_pki()
    server = await start_server(module_dsn, **_device_settings(pki))
    strict = await start_server(module_dsn, **_device_settings(pki, **{"server.require_device_cert": True}))
    secrets = await register_gates(server.address, server.admin_password, 4, PARK)
    yield Rig(server, strict, pki, secrets, tmp_path_factory.mktemp("device-certs"))
    await stop_server(strict)
    await stop_server(server)


def _gate(rig: Rig, n: int) -> str:
    return f"{PARK}-gate-{n:03d}"


async def _welcomed(address: str, device_id: str, secret: str, transport: Transport) -> bool:
    link = GateLink(address, Hello(device_id, secret, "in", PARK), transport)
    try:
        await link.open(timeout=30)  # LinkError when refused
        return True
    finally:
        await link.close()


async def _refused(address: str, device_id: str, secret: str, transport: Transport) -> str:
    link = GateLink(address, Hello(device_id, secret, "in", PARK), transport)
    with pytest.raises(LinkError) as info:
        await link.open(timeout=30)
    return info.value.reason


async def test_an_enrolled_gate_is_welcomed_with_its_certificate_on_the_device_port(rig: Rig) -> None:
    gate = _gate(rig, 0)
    await rig.enroll(gate)
    cert_file, key_file = rig.device_files(gate)
    assert oct(key_file.stat().st_mode & 0o777) == "0o600"
    cert = x509.load_pem_x509_certificate(cert_file.read_bytes())
    assert cert.subject.get_attributes_for_oid(x509.oid.NameOID.COMMON_NAME)[0].value == gate
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.UniformResourceIdentifier) == [f"urn:parkgate:device:{gate}"]
    lifetime = cert.not_valid_after_utc - cert.not_valid_before_utc
    assert 6.9 < lifetime.total_seconds() / 86400 < 7.1  # server.device_cert_days
    device_ca = x509.load_pem_x509_certificate(rig.pki.device_ca_file.read_bytes())
    assert cert.issuer == device_ca.subject
    assert await _welcomed(rig.server.device_address, gate, rig.secrets[gate], rig.transport(gate))
    # the certificate is a second factor, not a replacement: the secret is still checked
    assert await _refused(rig.server.device_address, gate, "not-the-secret",
                          rig.transport(gate)) == "BAD_DEVICE_CREDENTIALS"


async def test_a_gate_presenting_another_devices_certificate_is_refused_and_recorded(rig: Rig,
                                                                                       module_dsn: str) -> None:
    owner, claimant = _gate(rig, 1), _gate(rig, 2)
    await rig.enroll(owner)
    # the claimant's own secret, the owner's certificate: a certificate stolen from another gate
    assert await _refused(rig.server.device_address, claimant, rig.secrets[claimant],
                          rig.transport(owner)) == "DEVICE_CERT_MISMATCH"
    rows = rig.sql(module_dsn, "SELECT device_id, summary->>'client_certificate' FROM audit_log "
                               "WHERE method = '/parkgate.v1.Gate/Connect' AND outcome = 'DEVICE_CERT_MISMATCH'")
    assert (claimant, owner) in rows


async def test_with_certificates_required_a_gate_without_one_is_refused(rig: Rig, module_dsn: str) -> None:
    gate = _gate(rig, 3)
    secret = rig.secrets[gate]
    # the main port of a strict server: right secret, no certificate
    assert await _refused(rig.strict.address, gate, secret, rig.transport(None)) == "DEVICE_CERT_REQUIRED"
    rows = rig.sql(module_dsn, "SELECT device_id FROM audit_log WHERE method = '/parkgate.v1.Gate/Connect' "
                               "AND outcome = 'DEVICE_CERT_REQUIRED'")
    assert (gate,) in rows
    # its device port does not let a client without a certificate finish the handshake
    assert await _refused(rig.strict.device_address, gate, secret, rig.transport(None)) == "SERVER_UNREACHABLE"
    # a first enrolment needs no certificate (that is how a device gets one), then the gate is welcomed
    await rig.enroll(gate, rig.strict.address)
    assert await _welcomed(rig.strict.device_address, gate, secret, rig.transport(gate))
    # the main port asks for no certificate, so even an enrolled gate has none to show there: it uses the device port
    assert await _refused(rig.strict.address, gate, secret, rig.transport(gate)) == "DEVICE_CERT_REQUIRED"


async def test_enrolment_with_a_wrong_secret_or_a_bad_csr_is_refused_and_writes_nothing(rig: Rig) -> None:
    gate = _gate(rig, 2)
    cert_file, key_file = rig.device_files(gate)
    with pytest.raises(CallError) as info:
        await rig.enroll(gate, secret="not-the-secret")
    assert info.value.reason == "BAD_DEVICE_CREDENTIALS"
    assert not cert_file.exists() and not key_file.exists()
    with pytest.raises(CallError) as info:
        await asyncio.to_thread(enroll, rig.server.address, "mtls-nobody", "x", rig.folder / "n.pem",
                                rig.folder / "n.key", transport=rig.transport(None))
    assert info.value.reason == "UNKNOWN_DEVICE"
    async with open_aio_channel(rig.server.address, rig.transport(None)) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await auth_pb2_grpc.AuthStub(channel).EnrollDevice(auth_pb2.EnrollDeviceRequest(
                device_id=gate, device_secret=rig.secrets[gate], csr=b"not a certificate request"), timeout=30)
    assert (err.value.code(), reason_of(err.value)) == (grpc.StatusCode.INVALID_ARGUMENT, "BAD_CERTIFICATE_REQUEST")


async def test_a_renewal_goes_through_the_device_port_and_a_disabled_device_is_refused(rig: Rig) -> None:
    gate = _gate(rig, 1)  # enrolled above (test order) or now
    cert_file, _key = rig.device_files(gate)
    if not cert_file.exists():
        await rig.enroll(gate)
    before = x509.load_pem_x509_certificate(cert_file.read_bytes()).serial_number
    # renewing presents the current certificate, so the device port (certificates only) takes it
    await rig.enroll(gate, rig.strict.device_address)
    after = x509.load_pem_x509_certificate(cert_file.read_bytes()).serial_number
    assert after != before
    assert await _welcomed(rig.strict.device_address, gate, rig.secrets[gate], rig.transport(gate))
    admin = await rig.server.admin()
    await admin.admin.UpdateDevice(admin_pb2.UpdateDeviceRequest(id=gate, disabled=True), metadata=admin.metadata)
    try:
        assert await _refused(rig.strict.device_address, gate, rig.secrets[gate],
                              rig.transport(gate)) == "DEVICE_DISABLED"
        with pytest.raises(CallError) as info:
            await rig.enroll(gate, rig.strict.device_address)
        assert info.value.reason == "DEVICE_DISABLED"
    finally:
        await admin.admin.UpdateDevice(admin_pb2.UpdateDeviceRequest(id=gate, disabled=False),
                                       metadata=admin.metadata)


async def _register(rig: Rig, device_id: str, kind: int, **fields: object) -> str:
    admin = await rig.server.admin()
    reply = await admin.admin.RegisterDevice(admin_pb2.RegisterDeviceRequest(device=admin_pb2.Device(
        id=device_id, kind=kind, park_id=PARK, **fields)), metadata=admin.metadata)
    rig.secrets[device_id] = reply.secret
    return reply.secret


async def test_a_window_logs_in_with_its_own_certificate_and_not_with_a_gates(
        rig: Rig, monkeypatch: pytest.MonkeyPatch) -> None:
    from parkgate.clients.pos.window import Window

    window = "mtls-window"
    secret = await _register(rig, window, admin_pb2.SALES_WINDOW)
    await rig.enroll(window)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(rig.folder / "window-config"))
    # the window presents its certificate through the environment, as on a window PC
    cert, key = rig.device_files(window)
    monkeypatch.setenv("PARKGATE_TLS_CERT_FILE", str(cert))
    monkeypatch.setenv("PARKGATE_TLS_KEY_FILE", str(key))
    desk = Window(rig.strict.device_address)
    try:
        reply = await asyncio.to_thread(desk.login, "admin", rig.server.admin_password, window, secret)
        assert reply.token
        who = await asyncio.to_thread(desk.whoami)
        assert who.device_id == window
    finally:
        desk.close()
    gate_cert, gate_key = rig.device_files(_gate(rig, 0))
    monkeypatch.setenv("PARKGATE_TLS_CERT_FILE", str(gate_cert))
    monkeypatch.setenv("PARKGATE_TLS_KEY_FILE", str(gate_key))
    desk = Window(rig.strict.device_address)
    try:
        with pytest.raises(CallError) as info:
            await asyncio.to_thread(desk.login, "admin", rig.server.admin_password, window, secret)
        assert info.value.reason == "DEVICE_CERT_MISMATCH"
    finally:
        desk.close()


async def test_a_site_edge_calls_with_its_own_certificate_and_not_with_another_edges(rig: Rig) -> None:
    north, south = "mtls-edge-north", "mtls-edge-south"
    for edge, site in ((north, "north"), (south, "south")):
        await _register(rig, edge, admin_pb2.SITE_EDGE, site=site)
        await rig.enroll(edge)
    request = site_pb2.ProvisionRequest(public_key=b"\x01" * 32, serials_wanted=10)

    async def provision(edge: str, cert_of: str | None) -> tuple[grpc.StatusCode, str]:
        metadata = (("parkgate-device-id", edge), ("parkgate-device-secret", rig.secrets[edge]))
        address = rig.strict.device_address if cert_of else rig.strict.address
        async with open_aio_channel(address, rig.transport(cert_of)) as channel:
            try:
                await site_pb2_grpc.SiteStub(channel).Provision(request, metadata=metadata, timeout=30)
            except grpc.aio.AioRpcError as exc:
                return exc.code(), reason_of(exc)
        return grpc.StatusCode.OK, ""

    assert await provision(north, north) == (grpc.StatusCode.OK, "")
    # the edge's own cluster link, configured in site.toml, presents its certificate on the device port
    from parkgate.clients.site.cluster import Cluster
    from parkgate.clients.site.config import SiteSection

    secret_file = rig.folder / "edge-south.secret"
    secret_file.write_text(rig.secrets[south])
    cert, key = rig.device_files(south)
    cluster = Cluster(SiteSection(device_id=south, secret_file=secret_file, servers=[rig.strict.device_address],
                                  state_dir=rig.folder / "edge-south", cluster_ca_file=rig.pki.ca_file,
                                  cluster_cert_file=cert, cluster_key_file=key))
    try:
        reply = await cluster.stub().Provision(site_pb2.ProvisionRequest(public_key=b"\x02" * 32, serials_wanted=10),
                                               metadata=cluster.metadata(), timeout=30)
        assert reply.serial_last >= reply.serial_first > 0
    finally:
        await cluster.channel().close()
    assert await provision(north, south) == (grpc.StatusCode.UNAUTHENTICATED, "DEVICE_CERT_MISMATCH")
    # a call verified a moment ago with its certificate does not let the same secret in without one
    assert await provision(north, None) == (grpc.StatusCode.UNAUTHENTICATED, "DEVICE_CERT_REQUIRED")


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "parkgate.common.cli", *args], capture_output=True, text=True,
                          timeout=120, env={**os.environ, "PARKGATE_INSECURE": ""})


async def test_parkgate_gate_enroll_and_device_enroll_write_a_key_and_certificate(rig: Rig, tmp_path: Path) -> None:
    gate = "mtls-cli-gate"
    secret_file = tmp_path / "gate.secret"
    secret_file.write_text(await _register(rig, gate, admin_pb2.GATE, direction=common_pb2.IN) + "\n")
    config = tmp_path / "gate.toml"
    config.write_text(f'[gate]\ndevice_id = "{gate}"\nsecret_file = "{secret_file}"\n'
                      f'servers = ["{rig.strict.device_address}"]\ntls_ca_file = "{rig.pki.ca_file}"\n'
                      f'tls_cert_file = "{tmp_path / "gate.pem"}"\ntls_key_file = "{tmp_path / "gate.key"}"\n'
                      '[scanner]\nport = "/dev/null"\n')
    # a first enrolment cannot use the device port: the gate has no certificate to show there yet
    first = await asyncio.to_thread(_cli, "gate", "enroll", "--config", str(config))
    assert first.returncode == 1 and "SERVER_UNREACHABLE" in first.stderr, first.stderr
    done = await asyncio.to_thread(_cli, "gate", "enroll", "--config", str(config), "--server", rig.strict.address)
    assert done.returncode == 0, done.stderr
    assert f"gate {gate}: certificate {tmp_path / 'gate.pem'}" in done.stdout
    # renewal through the device port (the gate's own servers), with the certificate it holds
    renewed = await asyncio.to_thread(_cli, "gate", "enroll", "--config", str(config))
    assert renewed.returncode == 0, renewed.stderr
    # the agent's link with the transport of the gate's configuration is welcomed on the device port
    from parkgate.clients.gate.config import load_config

    cfg = load_config(config)
    assert await _welcomed(rig.strict.device_address, gate, cfg.secret(), cfg.gate.transport())
    checked = await asyncio.to_thread(_cli, "gate", "check-config", str(config))
    assert f"client certificate: {tmp_path / 'gate.pem'}" in checked.stdout, checked.stderr

    window = "mtls-cli-window"
    window_secret = tmp_path / "window.secret"
    window_secret.write_text(await _register(rig, window, admin_pb2.SALES_WINDOW))
    wrong = tmp_path / "wrong.secret"
    wrong.write_text("not-the-secret")
    args = ["device", "enroll", "--server", rig.strict.address, "--device-id", window]
    refused = await asyncio.to_thread(_cli, *args, "--secret-file", str(wrong), "--cert-file",
                                      str(tmp_path / "w.pem"), "--key-file", str(tmp_path / "w.key"))
    assert refused.returncode == 1 and "BAD_DEVICE_CREDENTIALS" in refused.stderr, refused.stderr
    assert not (tmp_path / "w.key").exists()
    ok = await asyncio.to_thread(_cli, *args, "--secret-file", str(window_secret), "--cert-file",
                                 str(tmp_path / "w.pem"), "--key-file", str(tmp_path / "w.key"))
    assert ok.returncode == 0, ok.stderr
    assert f"PARKGATE_TLS_CERT_FILE={tmp_path / 'w.pem'}" in ok.stdout
