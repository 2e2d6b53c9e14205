"""The relay board protocol v1 on a socat pseudo-terminal pair: the test plays the board by hand.

The last tests run the board simulator tool against the same host class, as a technician would.
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections.abc import Iterator

import pytest
import serial

from parkgate.clients.devices import (
    CommandRefused,
    DeviceDisconnected,
    DeviceTimeout,
    EventKind,
    LockState,
    RelayEvent,
    SerialRelay,
    SerialSettings,
)
from parkgate.clients.devices.relayproto import (
    BadCommand,
    RelayState,
    format_event,
    format_state,
    parse_board_line,
    parse_host_line,
)
from tests.fixtures.serial import PtyPair


class Board:
    """The far end of the line, played by the test: read a command line, write an answer."""

    def __init__(self, port: serial.Serial) -> None:
        self.port = port

    def command(self) -> str:
        line = self.port.readline()
        assert line.endswith(b"\n"), f"no command line from the host: {line!r}"
        return line.decode().rstrip("\n")

    def send(self, text: str) -> None:
        self.port.write(text.encode() + b"\n")

    def answer_next(self, reply: str = "OK {seq}") -> str:
        line = self.command()
        self.send(reply.format(seq=line.split()[1]))
        return line

    def answer_in_background(self, reply: str = "OK {seq}") -> threading.Thread:
        thread = threading.Thread(target=self.answer_next, args=(reply,), daemon=True)
        thread.start()
        return thread


def _wire(pty_pair: PtyPair, ack_timeout: float, attempts: int = 3) -> Iterator[tuple[SerialRelay, Board]]:
    board = Board(pty_pair.open_far(timeout=30))
    relay = SerialRelay(SerialSettings(pty_pair.device), ack_timeout=ack_timeout, attempts=attempts)
    yield relay, board
    relay.close()
    board.port.close()


@pytest.fixture
def wired(pty_pair: PtyPair) -> Iterator[tuple[SerialRelay, Board]]:
    """Generous: a board thread that answers late on a busy machine must not cause a retry (a stale line)."""
    yield from _wire(pty_pair, ack_timeout=10.0)


@pytest.fixture
def hasty(pty_pair: PtyPair) -> Iterator[tuple[SerialRelay, Board]]:
    """A short ack timeout, for a board that stays silent on purpose (the timeout is the point)."""
    yield from _wire(pty_pair, ack_timeout=0.3)


@pytest.fixture
def patient(pty_pair: PtyPair) -> Iterator[tuple[SerialRelay, Board]]:
    """Short waits but many attempts: a busy machine that answers a retry late meets a later one (same seq)."""
    yield from _wire(pty_pair, ack_timeout=0.5, attempts=40)


def test_open_once_is_acknowledged_and_its_passage_confirmed(wired: tuple[SerialRelay, Board]) -> None:
    relay, board = wired
    board.answer_in_background()
    seq = relay.open_once()
    assert seq == 1
    board.answer_in_background()
    assert relay.open_once(open_ms=3000) == 2
    board.send("PASSED 1")
    board.send("NOTPASSED 2")
    assert relay.next_event(timeout=30) == RelayEvent(EventKind.PASSED, 1)
    assert relay.next_event(timeout=30) == RelayEvent(EventKind.NOT_PASSED, 2)
    board.send("POWER OK")  # a later line comes next: nothing else was queued in between
    assert relay.next_event(timeout=30) == RelayEvent(EventKind.POWER_OK)


def test_every_command_goes_out_as_documented(wired: tuple[SerialRelay, Board]) -> None:
    relay, board = wired
    seen: list[str] = []

    def play() -> None:
        for _ in range(5):
            seen.append(board.answer_next())

    player = threading.Thread(target=play, daemon=True)
    player.start()
    relay.open_once(open_ms=2500)
    relay.open_hold()
    relay.lock()
    relay.show("Welcome\r\nAlice\x07 " + "x" * 100)
    relay.ping()
    player.join(timeout=5)
    assert seen[:4] == ["OPEN 1 2500", "HOLD 2", "CLOSE 3", "SHOW 4 Welcome  Alice  " + "x" * 48]
    assert seen[4] == "PING 5"


def test_status_is_parsed(wired: tuple[SerialRelay, Board]) -> None:
    relay, board = wired
    board.answer_in_background("STATE {seq} HELD EMERGENCY=1 POWER=BATTERY PENDING=2")
    assert relay.status() == RelayState(LockState.HELD, emergency=True, on_battery=True, pending_opens=2)


def test_a_refusal_is_command_refused_with_the_board_code(wired: tuple[SerialRelay, Board]) -> None:
    relay, board = wired
    board.answer_in_background("ERR {seq} EMERGENCY local emergency input active")
    with pytest.raises(CommandRefused) as caught:
        relay.lock()
    assert caught.value.code == "EMERGENCY"


def test_a_silent_board_is_retried_with_the_same_sequence_number_then_times_out(
    hasty: tuple[SerialRelay, Board],
) -> None:
    relay, board = hasty
    started = time.monotonic()
    with pytest.raises(DeviceTimeout):
        relay.open_once()
    assert time.monotonic() - started >= 0.9
    assert [board.command() for _ in range(3)] == ["OPEN 1", "OPEN 1", "OPEN 1"]


def test_a_lost_ack_is_recovered_by_the_retry(patient: tuple[SerialRelay, Board]) -> None:
    relay, board = patient

    def play() -> None:
        board.command()  # the first answer is lost on the line
        board.answer_next()

    threading.Thread(target=play, daemon=True).start()
    assert relay.open_once() == 1


def test_unsolicited_events_and_garbage(wired: tuple[SerialRelay, Board]) -> None:
    relay, board = wired
    board.port.write(b"\x00\xff\xfe noise\n" + b"Z" * 600 + b"\nOK 999\nREADY sim-1\r\n")
    for line in ("EMERGENCY ON", "EMERGENCY OFF", "POWER LOST", "POWER OK", "PASSED 0", "WHAT IS THIS"):
        board.send(line)
    board.send("POWER LOST")  # after WHAT IS THIS: once it is here, every line before it was read
    events = [relay.next_event(timeout=30) for _ in range(7)]
    assert [e.kind if e else None for e in events] == [
        EventKind.READY,
        EventKind.EMERGENCY_ON,
        EventKind.EMERGENCY_OFF,
        EventKind.POWER_LOST,
        EventKind.POWER_OK,
        EventKind.PASSED,
        EventKind.POWER_LOST,
    ]
    assert events[0] is not None and events[0].detail == "sim-1"
    assert events[5] == RelayEvent(EventKind.PASSED, 0)
    assert (
        relay.garbage_lines == 3
    )  # the binary line, the overlong one, WHAT IS THIS (OK 999 is a late answer)


def test_an_unplugged_board_is_device_disconnected(pty_pair: PtyPair) -> None:
    relay = SerialRelay(SerialSettings(pty_pair.device), ack_timeout=0.2)
    pty_pair.stop()
    with pytest.raises(DeviceDisconnected):
        relay.next_event(timeout=5)
    with pytest.raises(DeviceDisconnected):
        relay.ping()
    relay.close()


# ---- the protocol module -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "event",
    [
        RelayEvent(EventKind.PASSED, 17),
        RelayEvent(EventKind.PASSED, 0),
        RelayEvent(EventKind.NOT_PASSED, 65535),
        RelayEvent(EventKind.EMERGENCY_ON),
        RelayEvent(EventKind.POWER_OK),
        RelayEvent(EventKind.READY, detail="2.1"),
    ],
)
def test_board_events_round_trip(event: RelayEvent) -> None:
    assert parse_board_line(format_event(event).decode()) == event


def test_state_round_trips() -> None:
    state = RelayState(LockState.OPEN_ONCE, emergency=False, on_battery=True, pending_opens=3)
    reply = parse_board_line(format_state(9, state).decode())
    assert reply.seq == 9 and reply.state == state  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("line", "code", "seq"),
    [
        ("FLY 3", "UNKNOWN", 3),
        ("OPEN", "SYNTAX", 0),
        ("OPEN 0", "SYNTAX", 0),
        ("OPEN 70000", "SYNTAX", 0),
        ("OPEN 4 fast", "SYNTAX", 4),
        ("OPEN 5 99", "RANGE", 5),
        ("OPEN 6 60001", "RANGE", 6),
        ("CLOSE 7 now", "SYNTAX", 7),
    ],
)
def test_the_board_refuses_malformed_commands(line: str, code: str, seq: int) -> None:
    with pytest.raises(BadCommand) as caught:
        parse_host_line(line)
    assert (caught.value.code, caught.value.seq) == (code, seq)


# ---- the board simulator tool ------------------------------------------------------------------


class SimProcess:
    def __init__(self, port: str, *extra: str) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "parkgate.clients.devices.relay_sim", port, *extra],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )

    def type(self, words: str) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(words + "\n")
        self.process.stdin.flush()

    def stop(self) -> str:
        self.type("quit")
        out, _ = self.process.communicate(timeout=10)
        return out


@pytest.fixture
def simulated(pty_pair: PtyPair) -> Iterator[tuple[SerialRelay, SimProcess]]:
    relay = SerialRelay(SerialSettings(pty_pair.device), ack_timeout=1.0)
    sim = SimProcess(pty_pair.far, "--open-ms", "400")
    try:
        ready = relay.next_event(timeout=20)
        assert ready is not None and ready.kind is EventKind.READY
        yield relay, sim
    finally:
        if sim.process.poll() is None:
            sim.process.kill()
            sim.process.wait()
        relay.close()


def test_simulator_a_passage_confirms_its_open_and_an_unused_open_times_out(
    simulated: tuple[SerialRelay, SimProcess],
) -> None:
    relay, sim = simulated
    first = relay.open_once(open_ms=5000)
    assert relay.status().lock is LockState.OPEN_ONCE
    sim.type("pass")
    assert relay.next_event(timeout=5) == RelayEvent(EventKind.PASSED, first)
    second = relay.open_once()  # the board's default time, 400 ms here: nobody passes
    assert relay.next_event(timeout=5) == RelayEvent(EventKind.NOT_PASSED, second)
    assert relay.status().lock is LockState.LOCKED
    relay.show("Welcome")
    assert "display: 'Welcome'" in sim.stop()


def test_simulator_emergency_holds_the_gate_open_until_released(
    simulated: tuple[SerialRelay, SimProcess],
) -> None:
    relay, sim = simulated
    sim.type("emergency on")
    assert relay.next_event(timeout=5) == RelayEvent(EventKind.EMERGENCY_ON)
    with pytest.raises(CommandRefused) as caught:
        relay.lock()
    assert caught.value.code == "EMERGENCY"
    assert relay.status().emergency is True
    sim.type("emergency off")
    assert relay.next_event(timeout=5) == RelayEvent(EventKind.EMERGENCY_OFF)
    relay.lock()
    sim.type("power lost")
    assert relay.next_event(timeout=5) == RelayEvent(EventKind.POWER_LOST)
    assert relay.status().on_battery is True
    sim.stop()


def test_simulator_queues_opens_and_lock_cancels_them(simulated: tuple[SerialRelay, SimProcess]) -> None:
    relay, sim = simulated
    seqs = [relay.open_once(open_ms=10000) for _ in range(3)]  # a group of three
    sim.type("pass")
    assert relay.next_event(timeout=5) == RelayEvent(EventKind.PASSED, seqs[0])
    assert relay.status().pending_opens == 2
    relay.lock()
    assert relay.next_event(timeout=5) == RelayEvent(EventKind.NOT_PASSED, seqs[1])
    assert relay.next_event(timeout=5) == RelayEvent(EventKind.NOT_PASSED, seqs[2])
    sim.type("pass")  # someone pushes through a locked gate
    assert relay.next_event(timeout=5) == RelayEvent(EventKind.PASSED, 0)
    sim.stop()


def test_simulator_card_collector_swallows_until_its_bin_is_full(pty_pair: PtyPair) -> None:
    """S21: single-use IC cards go into the collector on the way out; a full bin refuses with FULL."""
    relay = SerialRelay(SerialSettings(pty_pair.device), ack_timeout=1.0)
    sim = SimProcess(pty_pair.far, "--collector-capacity", "2")
    try:
        ready = relay.next_event(timeout=20)
        assert ready is not None and ready.kind is EventKind.READY
        relay.swallow_card()
        assert relay.next_event(timeout=5) == RelayEvent(EventKind.CARD_SWALLOWED)
        relay.swallow_card()
        assert relay.next_event(timeout=5) == RelayEvent(EventKind.CARD_SWALLOWED)
        with pytest.raises(CommandRefused) as caught:
            relay.swallow_card()
        assert caught.value.code == "FULL"
        sim.type("empty collector")
        relay.ping()  # the operator's input is read before the next command
        relay.swallow_card()
        assert relay.next_event(timeout=5) == RelayEvent(EventKind.CARD_SWALLOWED)
        out = sim.stop()
        assert "collector emptied: 2 cards out for recycling" in out and "(1/2)" in out
    finally:
        if sim.process.poll() is None:
            sim.process.kill()
            sim.process.wait()
        relay.close()
