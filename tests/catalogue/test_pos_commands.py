"""`parkgate pos member|topup|card|group|voucher|backentry` as a cashier types them: real subprocesses against a
real server; money is typed and printed as money, times in the park's zone."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from datetime import datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import orjson
import pytest

from .conftest import PARK, Catalogue, jpeg


async def pos(cat: Catalogue, env: dict[str, str], *args: str, stdin: str = "", ok: bool = True) -> str:
    result = await asyncio.to_thread(
        subprocess.run, [sys.executable, "-m", "parkgate.common.cli", "pos", "--server", cat.servers[1].address, *args],
        input=stdin, capture_output=True, text=True, env=env, timeout=120)
    assert (result.returncode == 0) == ok, result.stderr
    return result.stdout if ok else result.stderr


async def test_the_catalogue_at_the_window_from_the_command_line(cat: Catalogue, tmp_path: Path) -> None:
    env = {**os.environ, "XDG_CONFIG_HOME": str(tmp_path / "home"), "PARKGATE_DEVICE_SECRET": cat.window_secret,
           "COLUMNS": "200"}
    await pos(cat, env, "login", "--user", "clerk", "--device", f"{PARK}-window2", "--password-stdin",
              stdin="clerk-password-1\n")
    photo = tmp_path / "face.jpg"
    photo.write_bytes(jpeg())
    out = await pos(cat, env, "member", "register", "--product", "member", "--name", "Qian Yu", "--card", "04D4000001",
                    "--name", "Qian Bo", "--card", "04D4000002", "--photo", str(photo), "--phone", "13900000009")
    assert "Qian Yu" in out and "Qian Bo" in out and "(hidden)" in out  # the clerk lacks members.personal
    found = orjson.loads(await pos(cat, env, "--json", "member", "find", "--phone", "13900000009"))
    assert [m["name"] for m in found] == ["Qian Yu"]

    await cat.sell_card("purse", "04D4000010")
    assert "balance CNY 120.50" in await pos(cat, env, "topup", "04D4000010", "120.50")
    err = await pos(cat, env, "topup", "04D4000010", "-5", ok=False)
    assert "INVALID_ARGUMENT" in err or "INVALID_AMOUNT" in err
    history = await pos(cat, env, "card", "04D4000010")
    assert "top_up" in history and "CNY 120.50" in history and "CST" in history  # Asia/Shanghai's own zone

    vouchers = orjson.loads(await pos(cat, env, "--json", "voucher", "issue", "--product", "day", "--count", "2",
                                      "--series", "cli-series"))
    assert len(vouchers) == 2
    out = await pos(cat, env, "voucher", "find", "--series", "cli-series")
    assert vouchers[0]["code"] in out

    out = await pos(cat, env, "group", "reserve", "--company", "CLI Tours", "--line", "tour:6@8.00", "--deposit", "10")
    assert "CNY 8.00" in out and "CNY 10.00" in out
    reservation, = orjson.loads(await pos(cat, env, "--json", "group", "find", "--company", "CLI Tours"))
    out = await pos(cat, env, "group", "pickup", "--reservation", reservation["id"], "--one-code")
    assert "admits 6" in out and "CNY 38.00" in out

    sold = (datetime.now(ZoneInfo("Asia/Shanghai")) - timedelta(hours=2)).strftime("%Y-%m-%dT%H:%M")
    out = await pos(cat, env, "backentry", "add", "--product", "day", "--sold-at", sold, "--quantity", "2",
                    "--note", "printer down, paper tickets 1-2")
    assert "CNY 20.00" in out and sold.replace("T", " ") in out
    assert "printer down" in await pos(cat, env, "backentry", "list")
    shift = await pos(cat, env, "shift")
    assert "CST" in shift and "UTC" not in shift


@pytest.mark.parametrize("args", [("member", "register", "--product", "member"), ("topup", "04D4000010", "abc")])
async def test_bad_input_at_the_command_line_says_why(cat: Catalogue, tmp_path: Path, args: tuple[str, ...]) -> None:
    env = {**os.environ, "XDG_CONFIG_HOME": str(tmp_path / "home"), "PARKGATE_DEVICE_SECRET": cat.window_secret}
    await pos(cat, env, "login", "--user", "clerk", "--device", f"{PARK}-window2", "--password-stdin",
              stdin="clerk-password-1\n")
    assert "INVALID_ARGUMENT" in await pos(cat, env, *args, ok=False)


async def test_admin_prints_prices_and_fares_as_money(cat: Catalogue, tmp_path: Path) -> None:
    env = {**os.environ, "XDG_CONFIG_HOME": str(tmp_path / "home"), "COLUMNS": "200"}

    async def admin(*args: str, stdin: str = "") -> str:
        result = await asyncio.to_thread(
            subprocess.run, [sys.executable, "-m", "parkgate.common.cli", "admin", "--server",
                             cat.servers[0].address, *args],
            input=stdin, capture_output=True, text=True, env=env, timeout=120)
        assert result.returncode == 0, result.stderr
        return result.stdout

    await admin("login", "--user", "admin", "--password-stdin", stdin=cat.server.admin_password + "\n")
    out = await admin("price-set", "plain", "weekday", "10.00")
    assert "CNY 10.00" in out and "minor_units" not in out
    out = await admin("fare-set", "wheel", "holiday", "2.50")
    assert "CNY 2.50" in out and "minor_units" not in out


async def test_the_window_screen_tops_up_shows_a_card_and_picks_a_group_up(cat: Catalogue, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    from textual.widgets import Input

    from parkgate.clients.pos.screen import WindowScreen
    from parkgate.clients.pos.window import Window

    env = {**os.environ, "XDG_CONFIG_HOME": str(tmp_path / "home"), "PARKGATE_DEVICE_SECRET": cat.window_secret}
    await pos(cat, env, "login", "--user", "clerk", "--device", f"{PARK}-window2", "--password-stdin",
              stdin="clerk-password-1\n")
    monkeypatch.setenv("XDG_CONFIG_HOME", env["XDG_CONFIG_HOME"])  # the session `pos login` stored
    await cat.sell_card("purse", "04D4000020")
    window = Window(cat.servers[1].address)
    try:
        app = WindowScreen(window, product_keys="day")
        async with app.run_test() as pilot:
            await until(pilot, lambda: "Shift" in str(app.query_one("#totals").render()))
            assert "CST" in str(app.query_one("#totals").render())  # the park's clock, not UTC
            for typed, expect in (("04D4000020 25.00", "TOPPED UP 04D4000020: balance CNY 25.00"),
                                  ("04D4000020", "balance CNY 25.00, entries left unlimited"),
                                  ("04D4000020 -1", "INVALID_ARGUMENT")):
                await pilot.press("c")
                field = app.query_one("#card", Input)
                assert field.display and field.has_focus
                field.value = typed  # what the cashier typed
                await pilot.press("enter")
                await until(pilot, lambda expect=expect: expect in app.status_text)
            # a travel agency's group picked up at the screen: 4 reserved, 3 came, one group code
            await pos(cat, env, "group", "reserve", "--company", "Screen Tours", "--line", "tour:4@8.00",
                      "--deposit", "5")
            group, = orjson.loads(await pos(cat, env, "--json", "group", "find", "--company", "Screen Tours"))
            for typed, expect in ((f"{group['id']} 3 one", "PICKED UP group Screen Tours: 1 ticket(s) admitting 3, "
                                   "CNY 19.00 after the deposit (on_account)"),
                                  (f"{group['id']} 3 one", "GROUP_ALREADY_PICKED_UP"),  # picked up already
                                  (f"{group['id']} three", "group: RESERVATION")):
                await pilot.press("g")
                field = app.query_one("#card", Input)
                assert field.display and field.has_focus and "group reservation" in field.placeholder
                field.value = typed
                await pilot.press("enter")
                await until(pilot, lambda expect=expect: expect in app.status_text)
            assert app.last_order is not None and app.last_order.customer == "Screen Tours"
    finally:
        window.close()


async def until(pilot: object, condition: object, timeout: float = 20.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not condition():  # type: ignore[operator]
        if loop.time() > deadline:
            pytest.fail(f"the screen did not get there in time: {pilot.app.status_text!r}")  # type: ignore[attr-defined]
        await pilot.pause(0.1)  # type: ignore[attr-defined]
