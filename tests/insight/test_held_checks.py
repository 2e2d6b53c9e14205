"""Held checks (S15) reach the control room: the wall screen in a real headless browser, and the console.

A member card with hold_for_check is admitted through a real gate stream
(GateLink on Gate.Connect) on a real server; the monitor's page shows the
hold live with the member's name and photo (an <img> that really loads),
and its Confirm button makes the gate receive CONFIRM_CHECK; the page says
the gate acknowledged. `parkgate admin held-checks` and `confirm-check` do
the same from a terminal, in their own process. An operator without
``members.personal`` sees the hold, never who it is. Every wait is on the
page's DOM, the monitor's answer or the gate's stream, never a sleep.
"""

from __future__ import annotations

import asyncio
import io
import json
import os
import subprocess
import sys
import urllib.error
import urllib.request
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from PIL import Image

from parkgate.clients.gate.link import GateLink
from parkgate.clients.monitor.feed import Credentials
from parkgate.v1 import admin_pb2, catalog_pb2, common_pb2, reports_pb2, reports_pb2_grpc, sales_pb2
from tests.fixtures.park import PRICE, rid
from tests.fixtures.server import RunningServer

from .flow_park import MANAGER, FlowPark, open_flow_park
from .test_monitor import WAIT_MS, chromium_page, running_monitor

PARK = "heldpark"
CONTROL_ROOM = ("held-controlroom", "looking at faces 1")   # reports.live, gates.checks, members.personal
WATCHER = ("held-watcher", "only watching 1")               # reports.live and nothing else


def jpeg(width: int = 480, height: int = 640) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (width, height), (40, 120, 200)).save(out, format="JPEG")
    return out.getvalue()


async def _user(park: FlowPark, role: str, permissions: list[str], username: str, password: str) -> None:
    md = park.admin.metadata
    await park.admin.admin.PutRole(admin_pb2.PutRoleRequest(role=admin_pb2.Role(
        name=role, description=f"test: {role}", permissions=permissions)), metadata=md)
    try:
        await park.admin.admin.CreateUser(admin_pb2.CreateUserRequest(
            username=username, password=password, roles=[role]), metadata=md)
    except grpc.aio.AioRpcError as exc:
        if exc.code() != grpc.StatusCode.ALREADY_EXISTS:
            raise


@pytest.fixture(scope="module")
async def park(parkgate_server: RunningServer, module_dsn: str) -> AsyncIterator[FlowPark]:
    p = await open_flow_park([parkgate_server], module_dsn, PARK)
    md = p.admin.metadata
    await p.admin.catalog.PutProduct(catalog_pb2.PutProductRequest(product=catalog_pb2.Product(
        id="member", park_id=PARK, name="Annual pass", kind=catalog_pb2.MEMBER, on_sale=True,
        rules=catalog_pb2.ProductRules(validity=catalog_pb2.DAYS_FROM_FIRST_USE, valid_days=365, card_bound=True,
                                       hold_for_check=True))), metadata=md)
    for day_type in (catalog_pb2.WEEKDAY, catalog_pb2.WEEKEND, catalog_pb2.HOLIDAY):
        await p.admin.catalog.SetPrice(catalog_pb2.SetPriceRequest(entry=catalog_pb2.PriceEntry(
            product_id="member", day_type=day_type, price=common_pb2.Money(minor_units=PRICE, currency="CNY"))),
            metadata=md)
    await p.manager()  # role manager: reports.live and gates.*, not members.personal
    await _user(p, "controlroom", ["reports.live", "gates.read", "gates.checks", "members.personal"], *CONTROL_ROOM)
    await _user(p, "watcher", ["reports.live"], *WATCHER)
    yield p
    await p.close()


async def _member(park: FlowPark, name: str, card_uid: str) -> sales_pb2.Member:
    return await park.seller.sales.RegisterMember(sales_pb2.RegisterMemberRequest(
        request_id=rid(), member=sales_pb2.Member(name=name, card_uid=card_uid, product_id="member"),
        photo_jpeg=jpeg()), metadata=park.seller.metadata)


async def _held(gate: GateLink, card_uid: str, member: sales_pb2.Member) -> str:
    """The gate presents the card; the server admits it on condition of a check. Returns the request id."""
    request_id = f"held-{uuid.uuid4().hex[:10]}"
    result = await gate.validate(request_id, card_uid=card_uid)
    assert (result.allow, result.hold_for_check, result.photo_ref) == (True, True, member.id), result
    return request_id


async def _acknowledge_confirm(gate: GateLink, request_id: str) -> str:
    """What a gate agent does on CONFIRM_CHECK (it opens): acknowledge it. Returns the command id."""
    while True:
        command = await asyncio.wait_for(gate.commands.get(), 60)
        if command.kind == "CONFIRM_CHECK":
            break
    assert command.command_id.endswith(f":{request_id}"), command
    gate.acknowledge(command.command_id, True, "opened: the control room confirmed")
    return command.command_id


def _http(url: str, body: dict[str, Any] | None = None, headers: dict[str, str] | None = None,
          ) -> tuple[int, bytes, str]:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method="POST" if data is not None else "GET",
                                     headers={"Content-Type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(request, timeout=60) as reply:
            return reply.status, reply.read(), reply.headers.get("Content-Type", "")
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read(), exc.headers.get("Content-Type", "")


async def _screen_until(port: int, what: str, condition: Any) -> dict[str, Any]:
    """The monitor's latest event (GET /api/parks/...) until ``condition`` holds on its snapshot."""
    state: dict[str, Any] = {}
    for _ in range(600):
        status, body, _ = await asyncio.to_thread(_http, f"http://127.0.0.1:{port}/api/parks/{PARK}")
        state = json.loads(body)
        if status == 200 and state.get("snapshot") and condition(state["snapshot"]):
            return state
        await asyncio.sleep(0.1)
    pytest.fail(f"the monitor never showed {what}; last: {state}")


async def _held_member(park: FlowPark, name: str, card_uid: str, gate_id: str) -> tuple[str, GateLink, str]:
    """A member registered with a photo, held at a new gate: (member id, the gate's stream, the request id)."""
    member = await _member(park, name, card_uid)
    gate = await park.gate(gate_id)
    return member.id, gate, await _held(gate, card_uid, member)


def _lists(request_id: str) -> Any:
    return lambda snapshot: any(h["request_id"] == request_id for h in snapshot["held_checks"])


async def test_the_wall_screen_shows_a_held_check_with_the_photo_and_confirms_it(park: FlowPark,
                                                                                 tmp_path: Path) -> None:
    async with running_monitor(park, Credentials(*CONTROL_ROOM)) as port:
        async with chromium_page(f"http://127.0.0.1:{port}/park/{PARK}") as page:
            await page.wait_for_function("document.getElementById('feed-status').textContent === 'live'",
                                         timeout=WAIT_MS)
            assert await page.locator("#held").is_hidden()

            member_id, gate, request_id = await _held_member(park, "Wang Fang", "04B1000001", "held-in")
            item = f'#held-checks li[data-gate="held-in"][data-request="{request_id}"]'
            await page.wait_for_selector(item, timeout=WAIT_MS)
            assert await page.locator("#held").is_visible()
            assert await page.text_content(f"{item} .name") == "Wang Fang"
            assert "gate held-in" in (await page.text_content(f"{item} .where") or "")
            # the photo really loads: the browser fetched a JPEG through the monitor and decoded it
            await page.wait_for_function(
                f"(() => {{ const i = document.querySelector('{item} img.photo');"
                " return i && i.complete && i.naturalWidth > 0; })()", timeout=WAIT_MS)
            assert await page.get_attribute(f"{item} img.photo", "src") == f"/photos/{PARK}/{member_id}"

            acker = asyncio.create_task(_acknowledge_confirm(gate, request_id))
            await page.click(f"{item} button.confirm")
            await page.wait_for_selector(f'{item} .result[data-result="acknowledged"]', timeout=WAIT_MS)
            command_id = await asyncio.wait_for(acker, 30)
            assert command_id == f"confirm-check:held-in:{request_id}"
            assert "acknowledged" in (await page.text_content(f"{item} .result") or "")
            await page.screenshot(path=str(tmp_path / "held-check.png"), full_page=True)
        # settled: the next snapshots no longer list it, and its photo is no longer served
        await _screen_until(port, "the confirmed check gone", lambda s: not _lists(request_id)(s))
        status, _, _ = await asyncio.to_thread(_http, f"http://127.0.0.1:{port}/photos/{PARK}/{member_id}")
        assert status == 404


async def test_without_the_personal_data_permission_the_hold_shows_but_not_who(park: FlowPark) -> None:
    member_id, _, request_id = await _held_member(park, "Chen Jie", "04B1000002", "held-in-2")
    async with running_monitor(park, Credentials(*MANAGER)) as port:
        state = await _screen_until(port, "the held check", _lists(request_id))
        check, = [h for h in state["snapshot"]["held_checks"] if h["request_id"] == request_id]
        assert (check["member_name"], check["photo_ref"], check["personal_hidden"]) == ("", "", True)
        assert "Chen Jie" not in json.dumps(state)
        status, _, _ = await asyncio.to_thread(_http, f"http://127.0.0.1:{port}/photos/{PARK}/{member_id}")
        assert status == 404  # the monitor is no way around the permission

        async with chromium_page(f"http://127.0.0.1:{port}/park/{PARK}") as page:
            item = f'#held-checks li[data-request="{request_id}"]'
            await page.wait_for_selector(item, timeout=WAIT_MS)
            assert await page.locator(f"{item} img").count() == 0
            assert "hidden" in (await page.text_content(f"{item} .hidden-name") or "")
            assert "Chen Jie" not in (await page.content())

        # a page of another site cannot make the monitor confirm
        status, body, _ = await asyncio.to_thread(
            _http, f"http://127.0.0.1:{port}/api/parks/{PARK}/checks/confirm",
            {"device_id": "held-in-2", "request_id": request_id}, {"Origin": "http://evil.example"})
        assert status == 403, body

    # the contract itself: the manager's LiveFlow carries the hold without name or photo
    manager = await park.server.login(*MANAGER)
    call = reports_pb2_grpc.ReportsStub(manager.channel).LiveFlow(
        reports_pb2.LiveFlowRequest(park_id=PARK, interval_seconds=60, minutes=5), metadata=manager.metadata)
    try:
        snapshot = await call.read()
    finally:
        call.cancel()
    held = [h for h in snapshot.held_checks if h.request_id == request_id]
    assert [(h.device_id, h.member_name, h.photo_ref, h.personal_hidden) for h in held] == [
        ("held-in-2", "", "", True)]


async def test_a_monitor_without_gates_checks_is_refused_the_confirmation(park: FlowPark) -> None:
    _, gate, request_id = await _held_member(park, "Liu Yang", "04B1000003", "held-in-3")
    async with running_monitor(park, Credentials(*WATCHER)) as port:
        await _screen_until(port, "the held check", _lists(request_id))
        status, body, _ = await asyncio.to_thread(
            _http, f"http://127.0.0.1:{port}/api/parks/{PARK}/checks/confirm",
            {"device_id": "held-in-3", "request_id": request_id})
        assert status == 403 and json.loads(body)["error"].startswith("PERMISSION_DENIED"), body
        assert gate.commands.empty()


# --- the console: parkgate admin held-checks / confirm-check -----------------------------------------

async def _admin_cli(park: FlowPark, token: str, *args: str) -> subprocess.CompletedProcess[str]:
    """``parkgate admin --json ARGS`` with an operator's session (the console command, in its own process)."""
    env = {**os.environ, "PARKGATE_TOKEN": token}
    return await asyncio.to_thread(
        subprocess.run, [sys.executable, "-m", "parkgate.common.cli", "admin", "--server", park.server.address,
                         "--json", *args], capture_output=True, text=True, env=env, timeout=60)


async def test_the_console_lists_held_checks_and_confirms_one(park: FlowPark) -> None:
    member_id, gate, request_id = await _held_member(park, "Zhou Xin", "04B1000004", "held-in-4")

    listed = await _admin_cli(park, park.admin.token, "held-checks", "--park", PARK)
    assert listed.returncode == 0, listed.stderr
    mine = [c for c in json.loads(listed.stdout) if c["request_id"] == request_id]
    assert len(mine) == 1 and mine[0]["device_id"] == "held-in-4"
    assert (mine[0]["member_name"], mine[0]["photo_ref"]) == ("Zhou Xin", member_id)
    assert not mine[0].get("personal_hidden", False)

    manager = await park.server.login(*MANAGER)
    hidden = await _admin_cli(park, manager.token, "held-checks", "--park", PARK)
    assert hidden.returncode == 0, hidden.stderr
    theirs, = [c for c in json.loads(hidden.stdout) if c["request_id"] == request_id]
    assert theirs["personal_hidden"] is True and "member_name" not in theirs and "photo_ref" not in theirs
    assert "Zhou Xin" not in hidden.stdout

    acker = asyncio.create_task(_acknowledge_confirm(gate, request_id))
    done = await _admin_cli(park, park.admin.token, "confirm-check", "held-in-4", request_id,
                            "--note", "face matches the card")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"delivered": True, "command_id": f"confirm-check:held-in-4:{request_id}"}
    await asyncio.wait_for(acker, 30)

    after = await _admin_cli(park, park.admin.token, "held-checks", "--park", PARK)
    assert after.returncode == 0, after.stderr
    assert not [c for c in json.loads(after.stdout) if c["request_id"] == request_id]


async def test_the_console_says_when_the_gate_did_not_acknowledge(park: FlowPark) -> None:
    _, gate, request_id = await _held_member(park, "Xu Lei", "04B1000005", "held-in-5")
    await gate.close()  # the gate went away: nobody receives the confirmation
    park.links.remove(gate)
    done = await _admin_cli(park, park.admin.token, "confirm-check", "held-in-5", request_id)
    assert done.returncode == 3, (done.stdout, done.stderr)
    assert "not acknowledged" in done.stderr
    listed = await _admin_cli(park, park.admin.token, "held-checks", "--park", PARK)
    assert [c["request_id"] for c in json.loads(listed.stdout) if c["device_id"] == "held-in-5"] == [request_id]

    refused = await _admin_cli(park, park.admin.token, "held-checks", "--park", PARK, "--within", "-5")
    assert refused.returncode == 2 and "INVALID_ARGUMENT" in refused.stderr
