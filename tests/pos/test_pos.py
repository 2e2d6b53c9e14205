"""`parkgate pos` end to end: a window logs in, sells, prints, reads a card, refunds; the screen sells on one key.

The commands run as real subprocesses (the console command a cashier types)
against a real server and PostgreSQL; the QR codes they write are decoded with
a real barcode decoder (zxing-cpp) and the decoded text must verify with the
installation's public keys; the thermal printer is a pseudo-terminal and the
card reader is pcscd with a virtual card.
"""

from __future__ import annotations

import asyncio
import io
import os
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import grpc
import orjson
import psycopg
import pytest
import zxingcpp
from PIL import Image

from parkgate import native
from parkgate.clients.pos.screen import WindowScreen
from parkgate.clients.pos.window import Window
from parkgate.server.pg import free_port
from parkgate.server.services.bootstrap import load_demo
from parkgate.v1 import admin_pb2
from tests.fixtures.server import RunningServer, ServerProcess, spawn_server, start_server, stop_server
from tests.fixtures.wait import until

ZONE = ZoneInfo("Asia/Shanghai")


@dataclass
class Till:
    server: RunningServer
    dsn: str
    env: dict[str, str]

    async def pos(self, *args: str, stdin: str = "", check: bool = True) -> subprocess.CompletedProcess[str]:
        """Run `parkgate pos ARGS` without blocking the event loop the server runs on."""
        result = await asyncio.to_thread(
            subprocess.run, [sys.executable, "-m", "parkgate.common.cli", "pos", "--server", self.server.address, *args],
            input=stdin, capture_output=True, text=True, env=self.env, timeout=120,
        )
        if check:
            assert result.returncode == 0, result.stderr
        return result

    async def pos_json(self, *args: str) -> Any:
        return orjson.loads((await self.pos("--json", *args)).stdout)

    def sql(self, query: str, *params: object) -> list[tuple]:
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            cur = conn.execute(query, params)
            return cur.fetchall() if cur.description else []

    def keyring(self) -> native.Keyring:
        keyring = native.Keyring()
        for key_id, public_key, state in self.sql("SELECT key_id, public_key, state FROM signing_keys"):
            keyring.add(key_id, bytes(public_key), native.KeyState[state.upper()])
        return keyring

    def verify(self, code: str, park_id: str) -> native.Result:
        (number,), = self.sql("SELECT number FROM parks WHERE id = %s", park_id)
        now = datetime.now(UTC)
        offset = int(now.astimezone(ZONE).utcoffset().total_seconds())  # type: ignore[union-attr]
        return native.verify(code, self.keyring(), now=int(now.timestamp()), utc_offset=offset, park_id=number)


@pytest.fixture(scope="module")
async def till(parkgate_server: RunningServer, module_dsn: str, tmp_path_factory: pytest.TempPathFactory
               ) -> AsyncIterator[Till]:
    await load_demo(parkgate_server.server.db)
    admin = await parkgate_server.admin()
    reply = await admin.admin.RegisterDevice(admin_pb2.RegisterDeviceRequest(device=admin_pb2.Device(
        id="win-1", kind=admin_pb2.SALES_WINDOW, park_id="waterpark")), metadata=admin.metadata)
    await admin.admin.CreateUser(admin_pb2.CreateUserRequest(
        username="wendy", password="wendy-password-1", roles=["seller", "manager"]), metadata=admin.metadata)
    config = tmp_path_factory.mktemp("pos-home")
    env = {**os.environ, "XDG_CONFIG_HOME": str(config), "PARKGATE_DEVICE_SECRET": reply.secret}
    t = Till(parkgate_server, module_dsn, env)
    await t.pos("login", "--user", "wendy", "--device", "win-1", "--password-stdin", stdin="wendy-password-1\n")
    yield t


async def test_sell_print_find_and_refund_from_the_command_line(till: Till, tmp_path: Path) -> None:
    prices = await till.pos_json("prices", "--park", "waterpark")
    day = next(p for p in prices if p["product_id"] == "wp-day")
    family = next(p for p in prices if p["product_id"] == "wp-family4")
    assert day["unit_price"] in (18000, 22000, 26000) and day["currency"] == "CNY"

    order = await till.pos_json("sell", "wp-day:2", "wp-family4", "--pay", "mobile", "--reference", "TX-1",
                                "--out", str(tmp_path), "--format", "png,svg,pdf")
    assert len(order["tickets"]) == 3
    assert int(order["total"]["minor_units"]) == 2 * day["unit_price"] + family["unit_price"]
    assert order["payments"][0]["method"] == "MOBILE" and order["payments"][0]["reference"] == "TX-1"
    assert len(order["files"]) == 9

    for ticket in order["tickets"]:
        png = tmp_path / f"ticket-{int(ticket['serial']):06d}.png"
        decoded = zxingcpp.read_barcodes(Image.open(io.BytesIO(png.read_bytes())))
        assert [b.text for b in decoded] == [ticket["code"]]
        assert decoded[0].format == zxingcpp.BarcodeFormat.QRCode
        assert till.verify(decoded[0].text, "waterpark").ok
        pdf = (tmp_path / f"ticket-{int(ticket['serial']):06d}.pdf").read_bytes()
        assert pdf.startswith(b"%PDF-") and b"/Count 1" in pdf

    first = order["tickets"][0]
    found = await till.pos_json("find", "--serial", str(first["serial"]))
    assert [t["id"] for t in found] == [first["id"]]

    refund = await till.pos_json("refund", "--ticket", first["id"], "--reason", "customer-request",
                                 "--note", "rain", "--expect", f"{day['unit_price'] * 8 // 1000}.00")
    assert int(refund["amount"]["minor_units"]) == day["unit_price"] * 80 // 100
    again = await till.pos("refund", "--ticket", first["id"], "--reason", "customer-request", check=False)
    assert again.returncode == 2 and "ALREADY_REFUNDED" in again.stderr

    listed = await till.pos_json("refunds", "--reason", "customer-request", "--operator", "wendy",
                                 "--from", datetime.now(UTC).date().isoformat())
    assert [r["id"] for r in listed] == [refund["id"]] and listed[0]["note"] == "rain"

    shift = await till.pos_json("shift")
    assert int(shift["tickets"]) >= 3 and any(m["method"] == "MOBILE" for m in shift["by_method"])


async def test_refusals_exit_2_with_the_reason(till: Till) -> None:
    unknown = await till.pos("quick-sell", "no-such-product", check=False)
    assert unknown.returncode == 2 and "UNKNOWN_PRODUCT" in unknown.stderr
    bad_line = await till.pos("sell", "wp-day:0", check=False)
    assert bad_line.returncode == 2 and "INVALID_QUANTITY" in bad_line.stderr
    short = await till.pos("sell", "wp-day", "--pay", "cash:1.00", check=False)
    assert short.returncode == 2 and "PAYMENT_MISMATCH" in short.stderr


async def test_a_ticket_goes_to_the_thermal_printer(till: Till, pty_pair: Any) -> None:
    far = pty_pair.open_far(timeout=5)
    order = await till.pos_json("quick-sell", "wp-day", "-n", "1", "--printer", pty_pair.device)
    printed = b""
    deadline = asyncio.get_running_loop().time() + 10
    while b"\x1dV" not in printed and asyncio.get_running_loop().time() < deadline:  # GS V: cut
        printed += await asyncio.to_thread(far.read, 4096)
    code = order["tickets"][0]["code"].encode()
    assert code in printed, printed[:200]
    assert printed.startswith(b"\x1b@")  # ESC @: initialise


async def test_a_card_read_through_pcsc_is_bound_to_the_ticket(till: Till, virtual_card: Callable[..., Any],
                                                               pcsc_stack: Any) -> None:
    card = virtual_card(uid="04C0FFEE123456")
    reader = pcsc_stack.reader_name(0)
    assert (await till.pos_json("read-card", "--reader", reader))["card_uid"] == "04C0FFEE123456"
    order = await till.pos_json("sell", "lp-10x", "--read-card", "--reader", reader)
    ticket = order["tickets"][0]
    assert ticket["card_uid"] == "04C0FFEE123456"
    assert int(ticket["deposit"]["minor_units"]) == 2000
    taken = await till.pos("sell", "lp-10x", "--card", card.uid, check=False)
    assert taken.returncode == 2 and "CARD_ALREADY_BOUND" in taken.stderr


async def test_the_window_screen_sells_on_one_key(till: Till, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CONFIG_HOME", till.env["XDG_CONFIG_HOME"])  # the session `pos login` stored
    window = Window(till.server.address)
    try:
        app = WindowScreen(window, product_keys="wp-day,lp-day")
        (before,), = till.sql("SELECT count(*) FROM orders WHERE kind = 'quick_sale'")
        async with app.run_test() as pilot:
            await pilot.pause(0.5)
            assert app.snapshot()["keys"] == ["wp-day", "lp-day"]
            await pilot.press("1")
            await _until(pilot, lambda: "SOLD 1 x" in app.status_text)
            await pilot.press("asterisk", "m", "2")
            await _until(pilot, lambda: "SOLD 2 x" in app.status_text)
            assert "bank_card" in app.status_text
            await pilot.press("9")
            await _until(pilot, lambda: "no product on key 9" in app.status_text)
        (after,), = till.sql("SELECT count(*) FROM orders WHERE kind = 'quick_sale'")
        assert after == before + 2
        assert till.sql("""SELECT p.method FROM payments p JOIN orders o ON o.id = p.order_id
                           WHERE o.kind = 'quick_sale' ORDER BY o.created_at DESC LIMIT 1""") == [("bank_card",)]
    finally:
        window.close()


async def test_the_window_resends_a_sale_across_a_server_restart_and_it_sells_once(
        till: Till, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """The sale is sent while no server answers (UNAVAILABLE): the window resends the very same request."""
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    listen = {"server.listen": f"127.0.0.1:{free_port()}"}
    server = await start_server(till.dsn, **listen)
    window = Window(server.address, call_timeout=10.0, retry_for=180.0)
    states: list[grpc.ChannelConnectivity] = []
    running: RunningServer | None = server
    try:
        await asyncio.to_thread(window.login, "wendy", "wendy-password-1", "win-1", till.env["PARKGATE_DEVICE_SECRET"])
        running = None
        await stop_server(server)  # the server goes away; the session lives on in the database
        window.channel.subscribe(states.append)
        request_id = "window-resend-1"
        sale = asyncio.ensure_future(asyncio.to_thread(window.quick_sell, "wp-day", 2, request_id=request_id))
        # the first attempt found nobody: the channel failed to connect, and the window keeps trying
        await until(lambda: grpc.ChannelConnectivity.TRANSIENT_FAILURE in states or sale.done(),
                    "the window's first attempt did not fail")
        assert not sale.done()
        running = await start_server(till.dsn, **listen)  # back on the same address
        order = await asyncio.wait_for(sale, 180)
        assert len(order.tickets) == 2
        assert till.sql("SELECT count(*) FROM orders WHERE request_id = %s", request_id) == [(1,)]
        again = await asyncio.to_thread(window.quick_sell, "wp-day", 2, request_id=request_id)  # a late resend
        assert again == order
        assert till.sql("SELECT count(*) FROM tickets t JOIN orders o ON o.id = t.order_id "
                        "WHERE o.request_id = %s", request_id) == [(2,)]
    finally:
        window.close()
        if running is not None:
            await stop_server(running)


async def test_a_sale_that_committed_while_its_server_was_killed_is_resent_and_answered_with_that_order(
        till: Till, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """The worst moment: the sale COMMITS, the server dies before the reply leaves, the window never hears.

    A deferred constraint trigger on orders (for this request id only) makes the
    sale's COMMIT wait for an advisory lock the test holds, so the server's
    backend sits inside COMMIT for as long as the test likes: no timing luck.
    The test sees it there (pg_stat_activity), kills the server process with
    SIGKILL, lets the backend finish the commit (the order exists, nobody was
    told), and starts a server again on the same address. The window, which
    only saw its call fail, resends the very same request: the reply must be
    the order that committed, the same id, tickets and codes, and it must be
    the only order of that request id.
    """
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    address = f"127.0.0.1:{free_port()}"
    request_id = f"window-kill-{uuid.uuid4()}"
    lock_key = 1_700_017
    first: ServerProcess | None = await spawn_server(till.dsn, address, tmp_path / "server-1.log")
    second: ServerProcess | None = None
    window = Window(address, call_timeout=120.0, retry_for=240.0)
    holder = psycopg.connect(till.dsn, autocommit=True)
    try:
        holder.execute(f"""
            CREATE OR REPLACE FUNCTION public.test_hold_commit() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN PERFORM pg_advisory_xact_lock({lock_key}); RETURN NULL; END $$""")
        holder.execute(f"""
            CREATE CONSTRAINT TRIGGER test_hold_commit AFTER INSERT ON orders DEFERRABLE INITIALLY DEFERRED
            FOR EACH ROW WHEN (NEW.request_id = '{request_id}') EXECUTE FUNCTION public.test_hold_commit()""")
        (holder_pid,), = holder.execute("SELECT pg_backend_pid()").fetchall()
        await asyncio.to_thread(window.login, "wendy", "wendy-password-1", "win-1", till.env["PARKGATE_DEVICE_SECRET"])
        holder.execute("SELECT pg_advisory_lock(%s)", (lock_key,))

        sale = asyncio.ensure_future(asyncio.to_thread(window.quick_sell, "wp-day", 2, request_id=request_id))

        def committing() -> list[tuple]:
            return till.sql("SELECT pid, query FROM pg_stat_activity WHERE %s = ANY(pg_blocking_pids(pid))",
                            holder_pid)
        await until(lambda: bool(committing()) or sale.done(), "the sale did not reach its COMMIT")
        assert not sale.done(), "the sale answered although its COMMIT is held"
        [(backend, query)] = committing()
        assert query.strip().rstrip(";").upper() == "COMMIT", query  # tickets and payments written, not committed

        first.kill()  # no reply can leave now
        first = None
        holder.execute("SELECT pg_advisory_unlock(%s)", (lock_key,))  # the orphaned backend finishes its COMMIT
        await until(lambda: till.sql("SELECT count(*) FROM pg_stat_activity WHERE pid = %s", backend) == [(0,)],
                    "the killed server's backend did not finish")
        committed = till.sql("SELECT id::text FROM orders WHERE request_id = %s", request_id)
        assert len(committed) == 1, "the sale's COMMIT did not go through after its server was killed"
        assert not sale.done()  # the window knows nothing yet: it keeps resending to an address nobody serves

        second = await spawn_server(till.dsn, address, tmp_path / "server-2.log")
        order = await asyncio.wait_for(sale, 240)
        [(order_id,)] = committed
        assert order.id == order_id  # the order that committed, not a new one
        stored = till.sql("SELECT t.id::text, t.serial, t.code FROM tickets t JOIN orders o ON o.id = t.order_id "
                          "WHERE o.request_id = %s ORDER BY t.serial", request_id)
        assert len(stored) == 2
        assert sorted(((t.id, t.serial, t.code) for t in order.tickets), key=lambda t: t[1]) == stored
        assert till.sql("SELECT count(*) FROM orders WHERE request_id = %s", request_id) == [(1,)]
        assert await asyncio.to_thread(window.order, order_id) == order
    finally:
        window.close()
        for server in (first, second):
            if server is not None:
                server.kill()
        holder.execute("DROP TRIGGER IF EXISTS test_hold_commit ON orders")
        holder.execute("DROP FUNCTION IF EXISTS public.test_hold_commit()")
        holder.close()


async def _until(pilot: Any, condition: Callable[[], bool], timeout: float = 20.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not condition():
        assert loop.time() < deadline, "the screen did not get there in time"
        await pilot.pause(0.1)
