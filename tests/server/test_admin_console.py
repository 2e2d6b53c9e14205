"""The admin console commands added for every Admin RPC: device update and disable, the dictionary, ending a session.

Each runs ``parkgate admin`` as a process against a real server, over TLS with
the test CA, and the effect is checked through the contract.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys

import grpc
import orjson
import pytest

from parkgate.v1 import admin_pb2, auth_pb2
from tests.fixtures.server import RunningServer, reason_of


async def _admin(server: RunningServer, token: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PARKGATE_TOKEN": token}
    return await asyncio.to_thread(
        subprocess.run, [sys.executable, "-m", "parkgate.common.cli", "admin", "--server", server.address, "--json",
                         *args], capture_output=True, text=True, env=env, timeout=60)


async def test_device_set_dictionary_and_session_end_through_the_console(parkgate_server: RunningServer) -> None:
    admin = await parkgate_server.admin()
    registered = await admin.admin.RegisterDevice(admin_pb2.RegisterDeviceRequest(device=admin_pb2.Device(
        id="console-win", kind=admin_pb2.SALES_WINDOW)), metadata=admin.metadata)

    done = await _admin(parkgate_server, admin.token, "device-set", "console-win", "--description", "window 7",
                        "--rotate-secret")
    assert done.returncode == 0, done.stderr
    with pytest.raises(grpc.aio.AioRpcError) as err:  # the old secret is gone
        await parkgate_server.login("admin", parkgate_server.admin_password, "console-win", registered.secret)
    assert reason_of(err.value) == "BAD_DEVICE_CREDENTIALS"
    done = await _admin(parkgate_server, admin.token, "device-set", "console-win", "--disable")
    assert done.returncode == 0, done.stderr
    assert orjson.loads(done.stdout)["disabled"] is True
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await parkgate_server.login("admin", parkgate_server.admin_password, "console-win", "any")
    assert reason_of(err.value) == "DEVICE_DISABLED"

    done = await _admin(parkgate_server, admin.token, "dictionary-set", "label.exit", "de", "Ausgang")
    assert done.returncode == 0, done.stderr
    listed = await _admin(parkgate_server, admin.token, "dictionary", "--language", "de", "--prefix", "label.exit")
    assert [(e["key"], e["text"]) for e in orjson.loads(listed.stdout)] == [("label.exit", "Ausgang")]

    await admin.admin.CreateUser(admin_pb2.CreateUserRequest(username="console-victim", password="victim pass 12",
                                                             roles=["checker"]), metadata=admin.metadata)
    other = await parkgate_server.login("console-victim", "victim pass 12")
    sessions = orjson.loads((await _admin(parkgate_server, admin.token, "sessions")).stdout)
    (victim,) = [s["id"] for s in sessions if s["username"] == "console-victim"]
    done = await _admin(parkgate_server, admin.token, "session-end", victim)
    assert done.returncode == 0, done.stderr
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await other.auth.WhoAmI(auth_pb2.WhoAmIRequest(), metadata=other.metadata)
    assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
    bad = await _admin(parkgate_server, admin.token, "session-end", "not-a-session")
    assert bad.returncode == 2 and "NOT_FOUND" in bad.stderr
