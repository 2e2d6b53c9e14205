"""Ticket signing keys rotate and are revoked while gates run: no restart, no reconnect.

``parkgate admin keys rotate`` and ``keys revoke`` (the console command) change
the keyring; every connected gate gets UPDATE_KEYS with the keys at once, the
agent's cached keys (what it decides with offline) follow, and a revoked
key's codes are refused online and by the gate's own offline check.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import datetime
from zoneinfo import ZoneInfo

import orjson
import pytest

from parkgate import native
from parkgate.clients.gate.link import GateLink, Hello
from parkgate.clients.gate.offline import CachedKeys

from .conftest import PARK, Rig, Site

OPENED = r"^OPEN \d+: one passage granted"


async def _admin(site: Site, *args: str) -> object:
    env = {**os.environ, "PARKGATE_TOKEN": site.admin.token}
    done = await asyncio.to_thread(
        subprocess.run, [sys.executable, "-m", "parkgate.common.cli", "admin", "--server", site.server.address,
                         "--json", *args], capture_output=True, text=True, env=env, timeout=60)
    assert done.returncode == 0, done.stderr
    return orjson.loads(done.stdout)


async def _until(what: str, check: Callable[[], bool], timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            pytest.fail(f"not within {timeout}s: {what}")
        await asyncio.sleep(0.05)


def _offline_reason(keys: CachedKeys, code: str) -> str:
    """What the gate's own check (no server) says about ``code`` with the keys it holds now."""
    now = int(time.time())
    offset = int(datetime.now(ZoneInfo(keys.time_zone)).utcoffset().total_seconds())  # type: ignore[union-attr]
    return native.verify(code, keys.keyring, now=now, utc_offset=offset, park_id=keys.park_number).reason.name


async def test_rotate_then_revoke_reaches_running_gates_at_once(site: Site, make_rig: Callable[..., Rig]) -> None:
    rig = await make_rig("ag-keys")
    agent = rig.agent
    assert agent is not None and agent.keys is not None
    secret = await site.register_gate("keys-link")
    link = GateLink(site.server.address, Hello("keys-link", secret, "in", PARK))
    await link.open()
    try:
        old_a, old_b = await site.sell("single", 2)
        keys = await _admin(site, "keys", "list")
        assert [k["state"] for k in keys] == ["active"]  # type: ignore[union-attr,index]
        first = int(keys[0]["key_id"])  # type: ignore[index]

        rotated = await _admin(site, "keys", "rotate")
        second = int(rotated["key_id"])  # type: ignore[index]
        command = await asyncio.wait_for(link.commands.get(), 15)
        assert command.kind == "UPDATE_KEYS"
        assert {(k, retired) for k, _, retired in command.keys} == {(first, True), (second, False)}
        await _until("the agent holds the new key", lambda: second in agent.keys.keyring)  # type: ignore[union-attr]
        assert agent.keys.keyring.state(first) == native.KeyState.RETIRED  # type: ignore[union-attr]
        (new,) = await site.sell("single")
        assert native.decode(new.code).key_id == second  # the servers sign with the new key at once
        mark = rig.board.mark()
        rig.scan(new.code)
        await rig.board.wait_for(OPENED, mark)
        assert (await link.validate("k-old-a", code=old_a.code)).reason == "OK"  # retired: still valid

        await _admin(site, "keys", "revoke", str(first))
        command = await asyncio.wait_for(link.commands.get(), 15)
        assert command.kind == "UPDATE_KEYS" and command.revoked_key_ids == (first,)
        await _until("the agent refuses the revoked key",
                     lambda: agent.keys.keyring.state(first) == native.KeyState.REVOKED)  # type: ignore[union-attr]
        assert _offline_reason(agent.keys, old_b.code) == "REVOKED_KEY"  # type: ignore[arg-type]
        assert _offline_reason(agent.keys, new.code) != "REVOKED_KEY"  # type: ignore[arg-type]
        assert (await link.validate("k-old-b", code=old_b.code)).reason == "REVOKED_KEY"  # online too
        states = {int(k["key_id"]): k["state"] for k in await _admin(site, "keys", "list")}  # type: ignore[union-attr]
        assert states == {first: "revoked", second: "active"}
    finally:
        await link.close()
