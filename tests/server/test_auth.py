"""Operators log in, get refused with a reason, get locked out, change their password (S3, S4)."""

from __future__ import annotations

import grpc
import pytest

from parkgate.v1 import admin_pb2, auth_pb2, catalog_pb2
from tests.fixtures.server import RunningServer, reason_of


async def _create_user(server: RunningServer, username: str, roles: list[str], password: str = "correct horse 1") -> None:
    admin = await server.admin()
    await admin.admin.CreateUser(
        admin_pb2.CreateUserRequest(username=username, password=password, roles=roles), metadata=admin.metadata
    )


async def test_login_gives_a_working_session(parkgate_server: RunningServer) -> None:
    admin = await parkgate_server.admin()
    who = await admin.auth.WhoAmI(auth_pb2.WhoAmIRequest(), metadata=admin.metadata)
    assert who.username == "admin"
    assert "admin" in who.roles
    assert "admin.users.write" in who.permissions


async def test_wrong_password_is_refused_with_bad_credentials(parkgate_server: RunningServer) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await parkgate_server.login("admin", "not the password")
    assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert reason_of(err.value) == "BAD_CREDENTIALS"


async def test_unknown_user_looks_like_a_wrong_password(parkgate_server: RunningServer) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await parkgate_server.login("nobody", "whatever123")
    assert reason_of(err.value) == "BAD_CREDENTIALS"


async def test_call_without_token_is_unauthenticated(parkgate_server: RunningServer) -> None:
    from parkgate.v1 import catalog_pb2_grpc

    stub = catalog_pb2_grpc.CatalogStub(parkgate_server.channel())
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.ListParks(catalog_pb2.ListParksRequest())
    assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert reason_of(err.value) == "UNAUTHENTICATED"


async def test_lockout_after_repeated_failures_even_with_the_right_password(parkgate_server: RunningServer) -> None:
    await _create_user(parkgate_server, "lockme", ["seller"])
    for _ in range(5):  # auth.max_failed_logins
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await parkgate_server.login("lockme", "wrong password")
        assert reason_of(err.value) == "BAD_CREDENTIALS"
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await parkgate_server.login("lockme", "correct horse 1")
    assert reason_of(err.value) == "ACCOUNT_LOCKED"
    # An admin's password reset lifts the lock.
    admin = await parkgate_server.admin()
    await admin.admin.ResetPassword(
        admin_pb2.ResetPasswordRequest(username="lockme", new_password="a new secret 42"), metadata=admin.metadata
    )
    await parkgate_server.login("lockme", "a new secret 42")


async def test_change_own_password(parkgate_server: RunningServer) -> None:
    await _create_user(parkgate_server, "changer", ["seller"])
    user = await parkgate_server.login("changer", "correct horse 1")
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await user.auth.ChangePassword(
            auth_pb2.ChangePasswordRequest(old_password="wrong one", new_password="brand new pass 7"),
            metadata=user.metadata,
        )
    assert reason_of(err.value) == "BAD_CREDENTIALS"
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await user.auth.ChangePassword(
            auth_pb2.ChangePasswordRequest(old_password="correct horse 1", new_password="short"),
            metadata=user.metadata,
        )
    assert reason_of(err.value) == "PASSWORD_TOO_WEAK"
    await user.auth.ChangePassword(
        auth_pb2.ChangePasswordRequest(old_password="correct horse 1", new_password="brand new pass 7"),
        metadata=user.metadata,
    )
    await parkgate_server.login("changer", "brand new pass 7")
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await parkgate_server.login("changer", "correct horse 1")
    assert reason_of(err.value) == "BAD_CREDENTIALS"


async def test_logout_ends_the_session(parkgate_server: RunningServer) -> None:
    admin = await parkgate_server.admin()
    await admin.auth.Logout(auth_pb2.LogoutRequest(), metadata=admin.metadata)
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await admin.auth.WhoAmI(auth_pb2.WhoAmIRequest(), metadata=admin.metadata)
    assert reason_of(err.value) == "SESSION_EXPIRED"


async def test_disabled_user_loses_sessions_at_once(parkgate_server: RunningServer) -> None:
    await _create_user(parkgate_server, "leaver", ["seller"])
    user = await parkgate_server.login("leaver", "correct horse 1")
    admin = await parkgate_server.admin()
    await admin.admin.UpdateUser(admin_pb2.UpdateUserRequest(username="leaver", disabled=True), metadata=admin.metadata)
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await user.auth.WhoAmI(auth_pb2.WhoAmIRequest(), metadata=user.metadata)
    assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await parkgate_server.login("leaver", "correct horse 1")
    assert reason_of(err.value) == "ACCOUNT_DISABLED"
