"""Failed log-ins are throttled per source address, across accounts, on top of the per-account lock-out."""

from __future__ import annotations

import grpc
import pytest

from parkgate.server.domain.throttle import AddressThrottle, source_address
from parkgate.v1 import admin_pb2
from tests.fixtures.server import RunningServer, reason_of, start_server, stop_server


def test_the_window_forgets_old_failures_and_ports_do_not_matter() -> None:
    now = [1000.0]
    throttle = AddressThrottle(limit=3, window=60, clock=lambda: now[0])
    for _ in range(3):
        throttle.failed(source_address("ipv4:10.0.0.7:51234"))
    assert throttle.blocked_for(source_address("ipv4:10.0.0.7:40000")) == pytest.approx(60)
    assert throttle.blocked_for("10.0.0.8") == 0
    now[0] += 61
    assert throttle.blocked_for("10.0.0.7") == 0
    assert source_address("ipv6:[::1]:5000") == "::1"


async def test_spraying_many_accounts_from_one_address_is_throttled(
    parkgate_server: RunningServer, module_dsn: str
) -> None:
    strict = await start_server(module_dsn, **{"auth.max_failed_logins_per_address": 3})
    try:
        for user in ("alice", "bob", "carol"):  # none is locked: each account failed once
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await strict.login(user, "Summer2026!")
            assert reason_of(err.value) == "BAD_CREDENTIALS"
        with pytest.raises(grpc.aio.AioRpcError) as err:  # even the right password, from this address, now
            await strict.login("admin", parkgate_server.admin_password)
        assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert reason_of(err.value) == "LOGIN_THROTTLED"
    finally:
        await stop_server(strict)
    admin = await parkgate_server.admin()  # the account itself was never locked
    log = await admin.admin.ListAuditLog(admin_pb2.ListAuditLogRequest(method_contains="/Login"),
                                         metadata=admin.metadata)
    assert any(r.outcome == "LOGIN_THROTTLED" and r.username == "admin" for r in log.records)
