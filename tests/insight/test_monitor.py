"""`parkgate monitor` in a real headless browser (Debian's chromium, driven by playwright).

The wall screen is opened before anything happens; then a gate admits a
person through the real server, and the page shows it without a reload:
the occupancy, the gate's tile, a bar in the flow chart. A forged code
appears in the alert list. Every wait is on the page's DOM, never a sleep.
A monitor whose operator cannot log in says so instead of showing nothing.
"""

from __future__ import annotations

import asyncio
import json
import os
import urllib.request
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from parkgate.clients.monitor.cli import serve
from parkgate.clients.monitor.feed import Credentials
from parkgate.server.pg import free_port
from tests.fixtures.server import RunningServer

from .flow_park import MANAGER, FlowPark, open_flow_park

PARK = "monpark"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
WAIT_MS = 30_000


@pytest.fixture(scope="module")
async def park(parkgate_server: RunningServer, module_dsn: str) -> AsyncIterator[FlowPark]:
    p = await open_flow_park([parkgate_server], module_dsn, PARK)
    await p.manager()  # the operator the monitor logs in as
    yield p
    await p.close()


async def _monitor(park: FlowPark, credentials: Credentials) -> tuple[asyncio.Task[None], int]:
    port = free_port()
    started = asyncio.Event()
    task = asyncio.create_task(serve(park.server.address, credentials, [park.park_id], "127.0.0.1", port, interval=60,
                                     minutes=10, started=started))
    waiter = asyncio.create_task(started.wait())
    await asyncio.wait({task, waiter}, timeout=30, return_when=asyncio.FIRST_COMPLETED)
    if not started.is_set():
        waiter.cancel()
        task.cancel()
        pytest.fail(f"the monitor did not start: {task.exception() if task.done() else 'no answer in 30s'}")
    return task, port


async def _stop(task: asyncio.Task[None]) -> None:
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


@asynccontextmanager
async def running_monitor(park: FlowPark, credentials: Credentials) -> AsyncIterator[int]:
    """``parkgate monitor`` following the park as ``credentials``, on a free port (yielded), until the block ends."""
    task, port = await _monitor(park, credentials)
    try:
        yield port
    finally:
        await _stop(task)


@asynccontextmanager
async def chromium_page(url: str) -> AsyncIterator[Any]:
    """Debian's chromium, headless, with a wall-screen-sized page opened on ``url``."""
    from playwright.async_api import async_playwright

    if not os.access(CHROMIUM, os.X_OK):
        pytest.fail(f"{CHROMIUM} is missing: apt-get install chromium (ops/bootstrap.sh installs it)")
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = await browser.new_page(viewport={"width": 1600, "height": 900})
            await page.goto(url)
            yield page
        finally:
            await browser.close()


async def test_the_wall_screen_shows_a_live_admission(park: FlowPark, tmp_path: Path) -> None:
    async with running_monitor(park, Credentials(*MANAGER)) as port:
        async with chromium_page(f"http://127.0.0.1:{port}/") as page:  # one park: straight to its screen
            assert page.url.endswith(f"/park/{PARK}")
            await page.wait_for_function("document.getElementById('feed-status').textContent === 'live'",
                                         timeout=WAIT_MS)
            await page.wait_for_function("document.getElementById('inside').textContent === '0'",
                                         timeout=WAIT_MS)
            assert await page.locator("#flow-chart rect.in").count() == 0

            gate = await park.gate("mon-in")
            await page.wait_for_selector('[data-gate="mon-in"][data-state="ok"]', timeout=WAIT_MS)
            ticket, = await park.sell("multi")
            assert (await gate.validate("mon-1", code=ticket.code)).allow

            await page.wait_for_function("document.getElementById('inside').textContent === '1'",
                                         timeout=WAIT_MS)
            await page.wait_for_function(
                "document.querySelector('[data-gate=\"mon-in\"] .entries').textContent === '1'", timeout=WAIT_MS)
            assert await page.locator("#flow-chart rect.in").count() == 1
            assert await page.text_content("#entries") == "1"
            assert await page.text_content("#park-state") == "Entry open"

            forged = ticket.code[:-4] + ("AAAA" if not ticket.code.endswith("AAAA") else "BBBB")
            assert not (await gate.validate("mon-forged", code=forged)).allow
            alert = await page.wait_for_selector('#alerts li[data-kind="forged_code"][data-request="mon-forged"]',
                                                 timeout=WAIT_MS)
            assert alert is not None and "mon-in" in (await alert.text_content() or "")
            await page.screenshot(path=str(tmp_path / "monitor.png"), full_page=True)


async def test_a_monitor_that_cannot_log_in_says_why(park: FlowPark) -> None:
    task, port = await _monitor(park, Credentials(MANAGER[0], "not the password"))

    def latest() -> dict:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/parks/{PARK}", timeout=10) as reply:
            return json.loads(reply.read())  # type: ignore[no-any-return]

    try:
        for _ in range(300):
            state = await asyncio.to_thread(latest)
            if state["status"] == "stale":
                break
            await asyncio.sleep(0.1)
        assert state["status"] == "stale" and state["error"].startswith("BAD_CREDENTIALS"), state
        assert state["snapshot"] is None
    finally:
        await _stop(task)


async def test_the_terminal_view_shows_a_live_admission(park: FlowPark) -> None:
    from textual.widgets import DataTable, Static

    from parkgate.clients.monitor.tui import FlowApp

    app = FlowApp(park.server.address, Credentials(*MANAGER), PARK, interval=60, minutes=10)
    async with app.run_test(size=(120, 40)) as pilot:

        async def until(what: str, condition: object) -> None:
            for _ in range(600):
                if condition():  # type: ignore[operator]
                    return
                await pilot.pause(0.05)
            pytest.fail(f"the terminal view never showed {what}; it shows: "
                        f"{app.query_one('#kpis', Static).render()}")

        await until("a live snapshot", lambda: app.status == "live" and app.snapshots > 0)
        before = int(str(app.query_one("#kpis", Static).render()).split()[1])
        gate = await park.gate("tui-in")
        ticket, = await park.sell("multi")
        assert (await gate.validate("tui-1", code=ticket.code)).allow
        await until("the admission", lambda: str(app.query_one("#kpis", Static).render()).startswith(
            f"inside {before + 1} "))
        gates = app.query_one("#gates", DataTable)
        # the row can come with the gate's connection (0 entries) before the admission reaches it
        await until("the gate's row with its admission", lambda: "tui-in" in [str(k.value) for k in gates.rows]
                    and gates.get_row("tui-in")[2] == 1)
