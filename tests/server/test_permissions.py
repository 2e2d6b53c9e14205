"""Permissions come from the contract and roles are data changed live (S3, S5)."""

from __future__ import annotations

import grpc
import orjson
import pytest

from parkgate.server.domain.permissions import PERMISSIONS, SELF
from parkgate.server.rpc.access import access_rules
from parkgate.v1 import admin_pb2, catalog_pb2
from tests.fixtures.server import RunningServer, reason_of


def test_every_rpc_names_a_known_permission() -> None:
    rules = access_rules()
    assert "/parkgate.v1.Sales/CreateOrder" in rules
    for method, rule in rules.items():
        assert rule.public or rule.device or rule.permission in (*PERMISSIONS, SELF), method
        assert not (rule.public and rule.permission), method


async def test_role_without_the_right_is_denied_and_granted_live(parkgate_server: RunningServer) -> None:
    admin = await parkgate_server.admin()
    await admin.admin.CreateUser(
        admin_pb2.CreateUserRequest(username="seller1", password="selling tickets 9", roles=["seller"]),
        metadata=admin.metadata,
    )
    seller = await parkgate_server.login("seller1", "selling tickets 9")
    # seller may read the catalog ...
    await seller.catalog.ListParks(catalog_pb2.ListParksRequest(), metadata=seller.metadata)
    # ... but not list operators
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await seller.admin.ListUsers(admin_pb2.ListUsersRequest(), metadata=seller.metadata)
    assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert reason_of(err.value) == "PERMISSION_DENIED"
    # An admin grants the right to the role; the same session may now, without a restart.
    roles = {r.name: r for r in (await admin.admin.ListRoles(admin_pb2.ListRolesRequest(), metadata=admin.metadata)).roles}
    seller_role = roles["seller"]
    seller_role.permissions.append("admin.users.read")
    await admin.admin.PutRole(admin_pb2.PutRoleRequest(role=seller_role), metadata=admin.metadata)
    users = await seller.admin.ListUsers(admin_pb2.ListUsersRequest(), metadata=seller.metadata)
    assert "seller1" in [u.username for u in users.users]


async def test_unknown_permission_in_a_role_is_refused(parkgate_server: RunningServer) -> None:
    admin = await parkgate_server.admin()
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await admin.admin.PutRole(
            admin_pb2.PutRoleRequest(role=admin_pb2.Role(name="typo", permissions=["sales.sel"])),
            metadata=admin.metadata,
        )
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert reason_of(err.value) == "INVALID_ARGUMENT"


async def test_mutating_calls_are_in_the_operation_log_without_secrets(parkgate_server: RunningServer) -> None:
    admin = await parkgate_server.admin()
    await admin.admin.CreateUser(
        admin_pb2.CreateUserRequest(username="audited", password="secret words 77", roles=["checker"]),
        metadata=admin.metadata,
    )
    with pytest.raises(grpc.aio.AioRpcError):
        await parkgate_server.login("audited", "wrong guess")
    log = await admin.admin.ListAuditLog(admin_pb2.ListAuditLogRequest(), metadata=admin.metadata)
    create = next(r for r in log.records if r.method.endswith("/CreateUser") and "audited" in r.summary)
    assert create.username == "admin" and create.outcome == "OK"
    summary = orjson.loads(create.summary)
    assert summary["password"] == "***" and "secret words 77" not in create.summary
    failed = next(r for r in log.records if r.method.endswith("/Login") and r.username == "audited")
    assert failed.outcome == "BAD_CREDENTIALS"
    # reads are not mutating: not logged
    assert not any(r.method.endswith("/ListAuditLog") for r in log.records)


async def test_who_is_online(parkgate_server: RunningServer) -> None:
    admin = await parkgate_server.admin()
    sessions = await admin.admin.ListSessions(admin_pb2.ListSessionsRequest(), metadata=admin.metadata)
    assert any(s.username == "admin" for s in sessions.sessions)


async def test_devices_register_and_unknown_device_login_refused(parkgate_server: RunningServer) -> None:
    admin = await parkgate_server.admin()
    await admin.catalog.PutPark(
        catalog_pb2.PutParkRequest(park=catalog_pb2.Park(id="p1", name="P1", time_zone="Europe/Berlin", currency="EUR")),
        metadata=admin.metadata,
    )
    reply = await admin.admin.RegisterDevice(
        admin_pb2.RegisterDeviceRequest(device=admin_pb2.Device(id="win-1", kind=admin_pb2.SALES_WINDOW, park_id="p1")),
        metadata=admin.metadata,
    )
    assert len(reply.secret) >= 24
    from parkgate.v1 import auth_pb2

    with pytest.raises(grpc.aio.AioRpcError) as err:
        await admin.auth.Login(auth_pb2.LoginRequest(username="admin", password=parkgate_server.admin_password,
                                                     device_id="win-404"))
    assert reason_of(err.value) == "UNKNOWN_DEVICE"
    with pytest.raises(grpc.aio.AioRpcError) as err:  # a device id alone proves nothing
        await admin.auth.Login(auth_pb2.LoginRequest(username="admin", password=parkgate_server.admin_password,
                                                     device_id="win-1", device_secret="guessed"))
    assert reason_of(err.value) == "BAD_DEVICE_CREDENTIALS"
    ok = await admin.auth.Login(auth_pb2.LoginRequest(username="admin", password=parkgate_server.admin_password,
                                                      device_id="win-1", device_secret=reply.secret))
    assert ok.token
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await admin.admin.RegisterDevice(
            admin_pb2.RegisterDeviceRequest(device=admin_pb2.Device(id="gate-x", kind=admin_pb2.GATE, park_id="p1")),
            metadata=admin.metadata,
        )
    assert reason_of(err.value) == "INVALID_ARGUMENT"  # a gate needs a direction
