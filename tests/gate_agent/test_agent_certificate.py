"""A gate agent with a client certificate (mTLS): it connects to a server's device port with the files its
configuration names, and renews the certificate by itself when it expires within ``gate.renew_days_before``.

A real agent (scanner and relay board on pseudo-terminals) against a real server on loopback whose device
port requires certificates of the test PKI's device CA (docs/security.md, "Device certificates").
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from pathlib import Path

import pytest
from cryptography import x509

from parkgate.clients.enroll import enroll
from parkgate.common.channels import Transport
from tests.fixtures.server import RunningServer, start_server, stop_server, use_test_pki
from tests.gate_agent.conftest import Rig, Site


async def _agent_with_certificate(site: Site, make_rig: Callable[..., object], module_dsn: str, tmp_path: Path,
                                  device: str, renew_days_before: float) -> tuple[RunningServer, Rig, Path]:
    """A strict server (certificates required) on the agents' database, and an enrolled gate's agent rig
    pointed at its device port (not started)."""
    pki = use_test_pki()
    server = await start_server(module_dsn, **{
        "server.device_listen": "127.0.0.1:0", "server.require_device_cert": True, "server.device_cert_days": 7,
        "server.device_ca_cert_file": str(pki.device_ca_file), "server.device_ca_key_file": str(pki.device_ca_key_file)})
    rig: Rig = await make_rig(device, servers=[server.device_address], start=False)  # type: ignore[assignment,operator]
    cert, key = tmp_path / f"{device}.pem", tmp_path / f"{device}.key"
    secret = (tmp_path / f"{device}.secret").read_text().strip()
    await asyncio.to_thread(enroll, server.address, device, secret, cert, key,
                            transport=Transport(ca_file=str(pki.ca_file)))
    text = rig.config_path.read_text()
    rig.config_path.write_text(text.replace("[gate]\n", f'[gate]\ntls_ca_file = "{pki.ca_file}"\n'
                                                        f'tls_cert_file = "{cert}"\ntls_key_file = "{key}"\n'
                                                        f"renew_days_before = {renew_days_before}\n", 1))
    return server, rig, cert


def _serial(cert: Path) -> int:
    return x509.load_pem_x509_certificate(cert.read_bytes()).serial_number


async def test_an_agent_connects_with_its_certificate_and_keeps_it_while_not_due(
        site: Site, make_rig: Callable[..., object], module_dsn: str, tmp_path: Path) -> None:
    server, rig, cert = await _agent_with_certificate(site, make_rig, module_dsn, tmp_path, "ag-cert-keep", 3)
    try:
        before = _serial(cert)
        agent = await rig.start()  # online: welcomed on the device port, where a certificate is required
        assert agent.link is not None and agent.link.address == server.device_address
        assert _serial(cert) == before  # 7 days left, renewal due at 3
    finally:
        await rig.stop()
        await stop_server(server)


async def test_an_agent_renews_a_certificate_that_expires_soon_then_connects(
        site: Site, make_rig: Callable[..., object], module_dsn: str, tmp_path: Path,
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="parkgate.gate")
    server, rig, cert = await _agent_with_certificate(site, make_rig, module_dsn, tmp_path, "ag-cert-renew", 10)
    try:
        before = _serial(cert)
        agent = await rig.start()
        assert agent.link is not None and agent.link.address == server.device_address
        assert _serial(cert) != before  # renewed over the device port with the certificate it held
        assert any("client certificate renewed" in r.getMessage() for r in caplog.records)
    finally:
        await rig.stop()
        await stop_server(server)
