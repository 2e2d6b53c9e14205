"""Ticket signing keys rotate and are revoked while gates run: no restart, no reconnect.

``parkgate admin keys rotate`` and ``keys revoke`` (the console command) change
the keyring; every connected gate gets UPDATE_KEYS with the keys at once, the
agent's cached keys (what it decides with offline) follow, and a revoked
key's codes are refused online and by the gate's own offline check.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from datetime import datetime
from zoneinfo import ZoneInfo

import orjson

from parkgate import native
from parkgate.clients.gate.offline import CachedKeys

from .conftest import Rig, Site, open_link, run_admin, until

OPENED = r"^OPEN \d+: one passage granted"


async def _admin(site: Site, *args: str) -> object:
    done = await run_admin(site, *args)
    assert done.returncode == 0, done.stderr
    return orjson.loads(done.stdout)


_until = until


def _offline_reason(keys: CachedKeys, code: str) -> str:
    """What the gate's own check (no server) says about ``code`` with the keys it holds now."""
    now = int(time.time())
    offset = int(datetime.now(ZoneInfo(keys.time_zone)).utcoffset().total_seconds())  # type: ignore[union-attr]
    return native.verify(code, keys.keyring, now=now, utc_offset=offset, park_id=keys.park_number).reason.name


async def test_rotate_then_revoke_reaches_running_gates_at_once(site: Site, make_rig: Callable[..., Rig]) -> None:
    rig = await make_rig("ag-keys")
    agent = rig.agent
    assert agent is not None and agent.keys is not None
    link = await open_link(site, "keys-link")
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
