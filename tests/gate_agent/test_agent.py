"""The gate agent at a turnstile, against a real server, PostgreSQL, pty serial lines and pcscd.

Read as a runbook: a visitor scans a sold ticket and the gate opens once and
says Welcome; the same ticket again, or a forged one, keeps it shut; a
turnstile nobody walked through gives the entry back; a full park pauses the
entry gates until there is room; an emergency opens and releases the gates
from the control room, and the gate's own fire input holds it open with no
server at all; the gate fails over to another server and, in fast mode,
keeps admitting genuine tickets while no server answers and hands those
admissions over when one is back; an IC card opens it through a real pcscd;
and the agent runs as the `parkgate gate run` process a technician starts.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from parkgate.clients.gate.link import GateLink, Hello
from parkgate.server.pg import free_port
from parkgate.v1 import gate_pb2
from tests.fixtures.park import signature_forged
from tests.fixtures.pcsc import PcscStack
from tests.fixtures.serial import PtyPair, stop_process
from tests.fixtures.server import start_server, stop_server
from tests.fixtures.wait import until

from .conftest import PARK, BoardSim, Rig, Site, toml_config

OPENED = r"^OPEN \d+: one passage granted"


def _parkgate(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "parkgate.common.cli", *args], capture_output=True, text=True, timeout=60)


def _spawn_agent(config: Path, log: Path) -> subprocess.Popen[bytes]:
    """`parkgate gate run` as its own process, its log in a file (a pipe nobody reads could block it)."""
    with open(log, "wb") as out:
        return subprocess.Popen([sys.executable, "-m", "parkgate.common.cli", "gate", "run", "--config", str(config)],
                                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)


def forged(code: str) -> str:
    return code[:-4] + ("AAAA" if not code.endswith("AAAA") else "BBBB")


async def test_a_sold_ticket_opens_once_then_the_second_use_and_a_forged_code_are_refused(
        site: Site, make_rig: Callable[..., Rig]) -> None:
    rig = await make_rig("ag-main", extra='[check]\nconfirm_codes = ["CHECKER-1"]\n')
    ticket, = await site.sell("single")
    mark = rig.board.mark()
    rig.scan(ticket.code)
    await rig.board.wait_for(OPENED, mark)
    await rig.board.wait_for(r"^display: 'Welcome'", mark)
    await rig.board.wait_for(r"^passage: PASSED", mark)  # a person walks through: the server is told
    await site.until_sql("SELECT passed_at IS NOT NULL FROM validations WHERE ticket_id = %s AND allow",
                         ticket.id, expect=[(True,)])

    mark = rig.board.mark()
    rig.scan(ticket.code)
    rig.scan(forged(ticket.code))
    rig.scan("HELLO WORLD")
    shown = await rig.board.wait_for(r"^display: ", mark, times=3)
    assert shown == ["display: 'Ticket already used'", "display: 'Invalid ticket'", "display: 'Wrong scheme'"]
    assert site.sql("SELECT reason FROM validations WHERE ticket_id = %s AND NOT allow", ticket.id) == [
        ("ALREADY_USED",)]
    assert rig.board.count(OPENED, mark) == 0
    assert not any("'Welcome'" in line for line in rig.board.since(mark))

    # A ticket for three opens three times, one passage each.
    group, = await site.sell("trio")
    mark = rig.board.mark()
    rig.scan(group.code)
    await rig.board.wait_for(OPENED, mark, times=3)
    await rig.board.wait_for(r"^passage: PASSED", mark, times=3)

    # A member card that needs a look at the photo: closed until the checker scans the confirm code.
    member, = await site.sell("member")
    mark = rig.board.mark()
    rig.scan(member.code)
    await rig.board.wait_for(r"^display: 'Please see the checker'", mark)
    rig.scan("HELLO WORLD")  # the gate still waits for the checker: it says so again, and opens nothing
    await rig.board.wait_for(r"^display: 'Please see the checker'", mark, times=2)
    assert rig.board.count(OPENED, mark) == 0
    rig.scan("CHECKER-1")
    await rig.board.wait_for(OPENED, mark)


async def test_a_check_nobody_confirms_keeps_the_gate_shut_and_gives_the_entry_back(
        site: Site, make_rig: Callable[..., Rig]) -> None:
    """Hold for check with no checker coming: after check.timeout_seconds the gate says so, the entry goes back."""
    rig = await make_rig("ag-check-late", extra="[check]\ntimeout_seconds = 1.0\n")
    member, = await site.sell("member")
    mark = rig.board.mark()
    rig.scan(member.code)
    await rig.board.wait_for(r"^display: 'Please see the checker'", mark)
    await rig.board.wait_for(r"^display: 'Not confirmed - see staff'", mark, timeout=30)  # the agent's own timeout
    assert rig.board.count(OPENED, mark) == 0
    await site.until_sql("SELECT reason, annulled_at IS NOT NULL FROM validations WHERE ticket_id = %s", member.id,
                         expect=[("PASSAGE_NOT_CONFIRMED", True)], timeout=30)
    rig.scan(member.code)  # no longer waiting for a checker: the next visitor is asked about again
    await rig.board.wait_for(r"^display: 'Please see the checker'", mark, times=2)


async def test_a_turnstile_nobody_walked_through_gives_the_entry_back(
        site: Site, make_rig: Callable[..., Rig]) -> None:
    rig = await make_rig("ag-turn", auto_pass_ms=None, relay_extra="open_ms = 400")
    ticket, = await site.sell("single")
    mark = rig.board.mark()
    rig.scan(ticket.code)
    await rig.board.wait_for(OPENED, mark)
    await rig.board.wait_for(r"NOTPASSED", mark)  # nobody came: the board locks again and says so
    await site.until_sql("SELECT entries_used FROM tickets WHERE id = %s", ticket.id, expect=[(0,)])
    assert site.sql("SELECT reason FROM validations WHERE ticket_id = %s", ticket.id) == [("PASSAGE_NOT_CONFIRMED",)]

    mark = rig.board.mark()
    rig.scan(ticket.code)  # the same visitor tries again: admitted, and this time walks through
    await rig.board.wait_for(OPENED, mark)
    rig.board.do("pass")
    await rig.board.wait_for(r"^passage: PASSED", mark)
    await site.until_sql("SELECT entries_used FROM tickets WHERE id = %s", ticket.id, expect=[(1,)])
    await site.until_sql("SELECT count(*) FROM validations WHERE ticket_id = %s AND passed_at IS NOT NULL",
                         ticket.id, expect=[(1,)])


async def test_a_full_park_pauses_the_entry_gate_until_there_is_room_below_the_margin(
        site: Site, make_rig: Callable[..., Rig]) -> None:
    """Capacity 2 above the count with a resume margin of 2: full after two, still full after one leaves."""
    rig = await make_rig("ag-cap")
    exit_ = GateLink(site.server.address, Hello("ag-cap-out", await site.register_gate("ag-cap-out", direction="out"),
                                                "out", PARK))
    await exit_.open()
    try:
        (inside,), = site.sql("SELECT inside FROM park_state WHERE park_id = %s", PARK)
        await site.control().SetCapacity(gate_pb2.SetCapacityRequest(park_id=PARK, capacity=int(inside) + 2,
                                                                     resume_margin=2), metadata=site.admin.metadata)
        first, second, third = await site.sell("single", 3)
        for ticket in (first, second):
            mark = rig.board.mark()
            rig.scan(ticket.code)
            await rig.board.wait_for(OPENED, mark)
        await rig.board.wait_for(r"^display: 'Park full - please wait'", mark)  # the server's PAUSE_ENTRY

        assert (await exit_.validate("ag-cap-out-1", code=first.code)).allow  # one below the cap: still paused
        await _refused_locally(site, rig, third.id, third.code)

        assert (await exit_.validate("ag-cap-out-2", code=second.code)).allow  # cap - margin: RESUME_ENTRY
        await rig.board.wait_for(r"^display: 'Please scan your ticket'", mark)
        mark = rig.board.mark()
        rig.scan(third.code)
        await rig.board.wait_for(OPENED, mark)
    finally:
        await exit_.close()
        await site.control().SetCapacity(gate_pb2.SetCapacityRequest(park_id=PARK, capacity=0),
                                         metadata=site.admin.metadata)


async def _refused_locally(site: Site, rig: Rig, ticket_id: str, code: str) -> None:
    """The paused gate refuses the ticket without asking: it says so, opens nothing and writes no validation."""
    mark = rig.board.mark()
    rig.scan(code)
    await rig.board.wait_for(r"^display: 'Park full - please wait'", mark)  # the answer to this scan
    rig.scan("HELLO WORLD")  # a later scan's answer proves the first was fully handled before it
    await rig.board.wait_for(r"^display: 'Park full - please wait'", mark, times=2)
    assert rig.board.count(OPENED, mark) == 0
    assert site.sql("SELECT count(*) FROM validations WHERE ticket_id = %s", ticket_id) == [(0,)]


async def test_an_emergency_from_the_control_room_holds_the_gate_open_until_released(
        site: Site, make_rig: Callable[..., Rig]) -> None:
    rig = await make_rig("ag-fire")
    control, md = site.control(), site.admin.metadata
    mark = rig.board.mark()
    reply = await control.EmergencyOpen(gate_pb2.EmergencyRequest(park_id=PARK, note="drill"), metadata=md)
    assert "ag-fire" in reply.acknowledged_by  # acknowledged after the relay held the gate open
    await rig.board.wait_for(r"^HOLD \d+: gate held open", mark)
    await rig.board.wait_for(r"^display: 'Emergency - gate open'", mark)
    assert rig.board.board.lock == "HELD"

    mark = rig.board.mark()
    reply = await control.EmergencyRelease(gate_pb2.EmergencyRequest(park_id=PARK), metadata=md)
    assert "ag-fire" in reply.acknowledged_by
    await rig.board.wait_for(r"^CLOSE \d+: gate locked", mark)
    assert rig.board.board.lock == "LOCKED"


async def test_the_gates_own_fire_input_holds_it_open_without_any_server(
        site: Site, make_rig: Callable[..., Rig]) -> None:
    dead = f"127.0.0.1:{free_port()}"  # no server there: everything below is local
    rig = await make_rig("ag-local", servers=[dead], start=False)
    agent = await rig.start(wait_online=False)
    await rig.board.wait_for(r"^display: 'Please scan your ticket'")
    mark = rig.board.mark()
    rig.board.do("emergency on")
    await rig.board.wait_for(r"^HOLD \d+: gate held open", mark)
    await rig.board.wait_for(r"^display: 'Emergency - gate open'", mark)
    mark = rig.board.mark()
    rig.board.do("emergency off")
    await rig.board.wait_for(r"^CLOSE \d+: gate locked", mark)
    assert agent.emergency == set() and agent.link is None


async def test_the_gate_fails_over_to_the_next_server_when_its_server_stops(
        site: Site, make_rig: Callable[..., Rig], module_dsn: str) -> None:
    first, second = await start_server(module_dsn), await start_server(module_dsn)
    try:
        rig = await make_rig("ag-failover", servers=[first.address, second.address])
        assert rig.agent is not None and rig.agent.link is not None and rig.agent.link.address == first.address
        await stop_server(first)
        agent = rig.agent
        await until(lambda: agent.link is not None and agent.link.address == second.address,
                    "the gate did not move to the second server")
        ticket, = await site.sell("single")
        mark = rig.board.mark()
        rig.scan(ticket.code)
        await rig.board.wait_for(OPENED, mark)
    finally:
        await stop_server(second)


def _scrape(url: str) -> dict[str, float]:
    """A gate agent's /metrics as {sample with labels: value}."""
    import urllib.request

    with urllib.request.urlopen(url, timeout=10) as reply:
        lines = reply.read().decode().splitlines()
    return {name: float(value) for name, _, value in (line.rpartition(" ") for line in lines if line[:1] != "#")}


async def test_fast_mode_admits_genuine_tickets_while_no_server_answers_and_forwards_them_later(
        site: Site, make_rig: Callable[..., Rig], module_dsn: str, tmp_path: Path) -> None:
    port = free_port()
    server = await start_server(module_dsn, **{"server.listen": f"127.0.0.1:{port}"})
    state = tmp_path / "state"
    rig = await make_rig("ag-fast", servers=[server.address],
                         extra='[fast_mode]\nenabled = true\ntime_zone = "Asia/Shanghai"\n'
                               '[metrics]\nlisten = "127.0.0.1:0"\n',
                         relay_extra="", start=False)
    rig.config_path.write_text(rig.config_path.read_text().replace(
        "[gate]\n", f'[gate]\nstate_dir = "{state}"\n', 1))
    agent = await rig.start()
    assert (state / "keys.json").exists()
    online, offline = await site.sell("single", 2)
    mark = rig.board.mark()
    rig.scan(online.code)  # fast: opens on the signature, the server's decision follows
    await rig.board.wait_for(OPENED, mark)
    await site.until_sql("SELECT allow, passed_at IS NOT NULL FROM validations WHERE ticket_id = %s", online.id,
                         expect=[(True, True)])

    await stop_server(server)
    await until(lambda: agent.link is None, "the gate did not notice its server stopped")
    mark = rig.board.mark()
    rig.scan(offline.code)
    await rig.board.wait_for(OPENED, mark)  # no server: admitted on a valid signature
    await rig.board.wait_for(r"^passage: PASSED", mark)
    rig.scan(signature_forged(offline.code))
    await rig.board.wait_for(r"^display: 'Forged code'", mark)  # refused on the gate's own keys
    assert rig.board.count(OPENED, mark) == 1  # a forged code never opens, online or not
    assert [a.passed for a in agent.disk.admissions] == [True]
    assert (state / "offline.jsonl").read_text().count("\n") == 1
    assert site.sql("SELECT count(*) FROM validations WHERE ticket_id = %s", offline.id) == [(0,)]
    assert agent.metrics_endpoint is not None  # the journal as Prometheus sees it (docs/monitor.md)
    scraped = await asyncio.to_thread(_scrape, agent.metrics_endpoint.url)
    assert scraped["parkgate_offline_journal_depth"] == 1.0 and scraped["parkgate_offline_forward_lag_seconds"] > 0
    assert scraped['parkgate_connected_streams{kind="server_link"}'] == 0.0

    server = await start_server(module_dsn, **{"server.listen": f"127.0.0.1:{port}"})  # the server is back
    try:
        await asyncio.wait_for(agent.online.wait(), 20)
        await site.until_sql("SELECT allow, passed_at IS NOT NULL FROM validations WHERE ticket_id = %s",
                             offline.id, expect=[(True, True)], timeout=20)
        assert site.sql("SELECT entries_used FROM tickets WHERE id = %s", offline.id) == [(1,)]
        await until(lambda: not agent.disk.admissions, "the forwarded admission stayed on the gate's disk")
        assert agent.disk.admissions == [] and (state / "offline.jsonl").read_text() == ""
        scraped = await asyncio.to_thread(_scrape, agent.metrics_endpoint.url)
        assert scraped["parkgate_offline_journal_depth"] == 0.0
        assert scraped["parkgate_offline_forward_lag_seconds"] == 0.0
    finally:
        await rig.stop()
        await stop_server(server)


async def test_an_ic_card_opens_the_gate_through_pcscd(
        site: Site, make_pty_pair: Callable[[], PtyPair], pcsc_stack: PcscStack,
        virtual_card: Callable[..., object], tmp_path: Path) -> None:
    uid, other = "04C0FFEE123456", "04C0FFEE654321"
    await site.sell("card", cards=[uid])
    await site.sell("card", cards=[other])
    relay = make_pty_pair()
    board = BoardSim(relay, auto_pass_ms=200)
    secret = await site.register_gate_file("ag-card", tmp_path)
    path = tmp_path / "card.toml"
    path.write_text(toml_config("ag-card", secret, [site.server.address], scanner=None, relay=relay.device,
                                card_reader=pcsc_stack.reader_name(0)))
    rig = Rig(path, None, board)
    try:
        await rig.start()
        mark = board.mark()
        card = virtual_card(uid)
        await board.wait_for(OPENED, mark)
        await board.wait_for(r"^display: 'Welcome'", mark)
        # the card lies on the reader while the person walks through and the server records it
        await site.until_sql("SELECT count(*) FROM validations v JOIN tickets t ON t.id = v.ticket_id "
                             "WHERE t.card_uid = %s AND v.passed_at IS NOT NULL", uid, expect=[(1,)])
        card.swap(other)  # type: ignore[attr-defined]  # taken away; the next visitor's card
        await site.until_sql("SELECT entries_used FROM tickets WHERE card_uid = %s", other, expect=[(1,)])
        # cards are handled one at a time in order: had the lying card been read again, it would show here
        assert site.sql("SELECT entries_used FROM tickets WHERE card_uid = %s", uid) == [(1,)]
        assert site.sql("SELECT count(*) FROM validations v JOIN tickets t ON t.id = v.ticket_id "
                        "WHERE t.card_uid = %s", uid) == [(1,)]
        await board.wait_for(OPENED, mark, times=2)
        assert board.count(OPENED, mark) == 2
    finally:
        await rig.stop()
        board.stop()


async def test_parkgate_gate_run_as_a_process_admits_obeys_signals_and_locks_on_sigterm(
        site: Site, make_pty_pair: Callable[[], PtyPair], tmp_path: Path) -> None:
    scanner, relay = make_pty_pair(), make_pty_pair()
    board = BoardSim(relay, auto_pass_ms=200)
    secret = await site.register_gate_file("ag-proc", tmp_path)
    path = tmp_path / "proc.toml"
    path.write_text(toml_config("ag-proc", secret, [site.server.address], scanner=scanner.device,
                                relay=relay.device))
    check = await asyncio.to_thread(_parkgate, "gate", "check-config", str(path))
    assert check.returncode == 0 and "gate ag-proc" in check.stdout, check.stderr
    process = _spawn_agent(path, tmp_path / "agent.log")
    far = scanner.open_far()
    try:
        await site.until_sql("SELECT connected FROM gate_connections WHERE device_id = 'ag-proc'",
                             expect=[(True,)], timeout=30)
        ticket, = await site.sell("single")
        mark = board.mark()
        far.write(ticket.code.encode() + b"\r")
        await board.wait_for(OPENED, mark, timeout=15)
        await board.wait_for(r"^display: 'Welcome'", mark)

        mark = board.mark()
        os.kill(process.pid, signal.SIGUSR1)  # the fire panel's contact, through a signal
        await board.wait_for(r"^HOLD \d+", mark)
        os.kill(process.pid, signal.SIGUSR2)
        await board.wait_for(r"^CLOSE \d+", mark)

        mark = board.mark()
        process.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(process.wait, 15) == 0
        await board.wait_for(r"^CLOSE \d+: gate locked", mark)  # a stopped gate is a locked gate
    finally:
        stop_process(process)
        far.close()
        board.stop()
    text = (tmp_path / "agent.log").read_text()
    assert "admitted 1" in text and "EMERGENCY ON (signal)" in text and "stopped" in text, text[-3000:]


async def test_a_fire_panel_line_and_a_power_cut_hold_the_gate_open_when_so_configured(
        site: Site, make_rig: Callable[..., Rig], make_pty_pair: Callable[[], PtyPair]) -> None:
    panel = make_pty_pair()
    rig = await make_rig("ag-panel", relay_extra='open_ms = 3000\non_power_loss = "open"',
                         extra=f'[emergency]\nserial_port = "{panel.device}"\n')
    line = panel.open_far()
    try:
        mark = rig.board.mark()
        line.write(b"ON\r\n")
        await rig.board.wait_for(r"^HOLD \d+", mark)
        rig.board.do("power lost")  # a second source: the gate stays open until both are gone
        assert rig.agent is not None
        agent = rig.agent
        await until(lambda: "power" in agent.emergency, "the power loss did not reach the agent")
        assert rig.agent.emergency == {"serial", "power"} and rig.agent.on_battery
        line.write(b"OFF\r\n")
        await until(lambda: agent.emergency == {"power"}, "the panel's OFF did not reach the agent")
        assert rig.board.count(r"^CLOSE \d+", mark) == 0  # one source is still on: the gate stays open
        rig.board.do("power ok")
        await rig.board.wait_for(r"^CLOSE \d+: gate locked", mark)
        assert rig.agent.emergency == set() and not rig.agent.on_battery
    finally:
        line.close()


def test_check_config_names_the_bad_key(tmp_path: Path) -> None:
    secret = tmp_path / "secret"
    secret.write_text("s3cret\n")
    good = toml_config("ag-x", secret, ["127.0.0.1:50051"], scanner="/dev/null", relay=None)
    (tmp_path / "good.toml").write_text(good)
    assert "relay: none (handheld mode)" in _parkgate("gate", "check-config", str(tmp_path / "good.toml")).stdout
    for text, key in ((good + "\n[relay]\nport = 'x'\nopen_ms = 50\n", "relay.open_ms"),
                      (good.replace("[gate]", "[gate]\nsecert_file = 'x'"), "gate.secert_file: unknown key"),
                      (good.replace("127.0.0.1:50051", "nowhere"), "gate.servers"),
                      (good.replace(str(secret), str(tmp_path / "missing")), "gate.secret_file: cannot read")):
        (tmp_path / "bad.toml").write_text(text)
        result = _parkgate("gate", "check-config", str(tmp_path / "bad.toml"))
        assert result.returncode == 2 and key in result.stderr, result.stderr


async def test_a_used_up_single_use_card_is_swallowed_by_the_exit_card_collector(
        site: Site, make_pty_pair: Callable[[], PtyPair], pcsc_stack: PcscStack,
        virtual_card: Callable[..., object], tmp_path: Path) -> None:
    """S21: a one-entry IC card leaves through the exit, and its collector takes it for recycling."""
    from parkgate.clients.gate.link import GateLink, Hello
    from parkgate.v1 import catalog_pb2

    uid = "04C0FFEE5A110A"
    await site.product("oneride", catalog_pb2.COUNT_CARD, entries_total=1, card_bound=True, swallow_card_at_exit=True)
    await site.sell("oneride", cards=[uid])
    entrance = GateLink(site.server.address, Hello("ag-swallow-in", await site.register_gate("ag-swallow-in"), "in",
                                                   PARK))
    await entrance.open()
    try:
        assert (await entrance.validate("in-1", card_uid=uid)).allow
    finally:
        await entrance.close()
    relay = make_pty_pair()
    board = BoardSim(relay, auto_pass_ms=200)
    secret = tmp_path / "ag-swallow-out.secret"
    secret.write_text(await site.register_gate("ag-swallow-out", direction="out") + "\n")
    path = tmp_path / "swallow.toml"
    path.write_text(toml_config("ag-swallow-out", secret, [site.server.address], scanner=None, relay=relay.device,
                                card_reader=pcsc_stack.reader_name(0)).replace("[gate]\n", '[gate]\ndirection = "out"\n'))
    rig = Rig(path, None, board)
    try:
        agent = await rig.start()
        mark = board.mark()
        card = virtual_card(uid)
        await board.wait_for(OPENED, mark)
        await board.wait_for(r"^SWALLOW \d+: card taken into the collector \(1/500\)", mark)
        card.remove()  # type: ignore[attr-defined]
        assert agent.cards_collected == 1 and not agent.collector_full
    finally:
        await rig.stop()
        board.stop()


async def test_a_board_that_never_reports_the_passage_gives_the_entry_back_by_the_agents_own_timeout(
        site: Site, make_rig: Callable[..., Rig], caplog: pytest.LogCaptureFixture) -> None:
    """The passage sensor's line is broken (the board reports neither PASSED nor NOTPASSED).

    The agent's own timer (relay.passage_timeout_seconds after the open) tells the
    server "did not pass", which gives the entry back; the server's sweep (2 x the
    parameter, 20 s) is not what did it: the agent says so in its log.
    """
    caplog.set_level(logging.INFO)
    rig = await make_rig("ag-silent", auto_pass_ms=None, relay_extra="open_ms = 400\npassage_timeout_seconds = 1.0")
    rig.board.do("silent on")
    await rig.board.wait_for(r"^passage reports OFF")
    ticket, = await site.sell("single")
    mark = rig.board.mark()
    rig.scan(ticket.code)
    await rig.board.wait_for(OPENED, mark)
    await rig.board.wait_for(r"^nobody passed \d+: not reported \(silent\)", mark)
    await until(lambda: any("no passage report in time" in r.getMessage() for r in caplog.records),
                timeout=30, what="the agent's own passage timeout")
    await site.until_sql("SELECT reason, annulled_at IS NOT NULL, entries_used FROM validations v "
                         "JOIN tickets t ON t.id = v.ticket_id WHERE v.ticket_id = %s", ticket.id,
                         expect=[("PASSAGE_NOT_CONFIRMED", True, 0)], timeout=30)
    assert rig.board.count(r"NOTPASSED|^passage: PASSED", mark) == 0  # the board really said nothing
