"""TLS is the default: a plaintext client and a client trusting another CA are both refused.

The whole suite runs its servers with the test CA's certificate (tests/fixtures/server.py),
so every other test exercises TLS; this one shows what is refused.
"""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from parkgate.common.channels import NoCertificate, Transport, listen, open_aio_channel
from parkgate.common.tls import dev_pki
from tests.fixtures.server import RunningServer


async def _check(address: str, transport: Transport | None) -> int:
    async with open_aio_channel(address, transport) as channel:
        reply = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=10)
    return reply.status


async def test_the_default_client_speaks_tls_with_the_configured_ca(parkgate_server: RunningServer) -> None:
    assert await _check(parkgate_server.address, None) == health_pb2.HealthCheckResponse.SERVING


async def test_a_plaintext_client_is_refused(parkgate_server: RunningServer) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await _check(parkgate_server.address, Transport(insecure=True))
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE


async def test_a_client_trusting_another_ca_is_refused(parkgate_server: RunningServer, tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PARKGATE_DEV_PKI_DIR")
    other = dev_pki(tmp_path / "other-ca")
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await _check(parkgate_server.address, Transport(ca_file=str(other.ca_file)))
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE


def test_a_port_without_a_certificate_is_an_error_not_plaintext(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PARKGATE_INSECURE", raising=False)
    server = grpc.aio.server()
    with pytest.raises(NoCertificate):
        listen(server, "127.0.0.1:0", Transport())
