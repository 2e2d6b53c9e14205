"""A relay board simulator speaking protocol v1, for technicians without the hardware.

Run it on one end of a serial line (a real port wired to the gate PC, or a
socat pseudo-terminal pair on one machine) and point the gate agent at the
other end::

    socat -d -d pty,raw,echo=0 pty,raw,echo=0     # prints two /dev/pts/N paths
    python -m parkgate.clients.devices.relay_sim /dev/pts/4
    parkgate gate run --config gate.toml           # relay port = /dev/pts/5

Then type on its standard input what a person or the building would do:

    pass            a person walks through (the passage sensor fires)
    emergency on    the local emergency input closes (fire alarm) / ``emergency off``
    power lost      mains fails / ``power ok``
    silent on       the passage sensor's line breaks: passages and timeouts are no
                    longer reported (no PASSED/NOTPASSED), so the agent's own
                    passage timeout must give the entry back / ``silent off``
    reboot          the board restarts (sends READY, forgets all state)
    state           print the board's state
    quit

``--auto-pass MS`` makes a person walk through MS milliseconds after every
OPEN (unattended soak tests). Everything the board does is printed, one line
each, so the tool doubles as a protocol monitor.
"""

from __future__ import annotations

import argparse
import queue
import sys
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, field

from .errors import DeviceClosed, DeviceError
from .relayproto import (
    DEFAULT_OPEN_MS,
    BadCommand,
    EventKind,
    HostCommand,
    LockState,
    RelayEvent,
    RelayState,
    format_ack,
    format_event,
    format_refusal,
    format_state,
    parse_host_line,
)
from .serialport import SerialLink, SerialSettings

FIRMWARE = "sim-1"


@dataclass
class _Open:
    seq: int
    open_ms: int
    deadline: float | None = None  # set when it reaches the head of the queue


@dataclass
class Board:
    """The board's state machine; I/O-free, driven by ``now`` in monotonic seconds.

    Each method returns the bytes the board sends; ``say`` receives one
    human-readable line per thing that happened.
    """

    say: Callable[[str], None] = print
    default_open_ms: int = DEFAULT_OPEN_MS
    auto_pass_ms: int | None = None
    lock: LockState = LockState.LOCKED
    emergency: bool = False
    on_battery: bool = False
    display: str = ""
    pending: deque[_Open] = field(default_factory=deque)
    answered: OrderedDict[str, bytes] = field(default_factory=OrderedDict)
    auto_pass_at: float | None = None
    collector_capacity: int = 500      # single-use cards the collector's bin holds (S21)
    collected: int = 0
    #: a broken sensor line: the board still lets people through and locks again, but reports nothing
    silent: bool = False

    def boot(self) -> bytes:
        self.lock, self.emergency, self.on_battery, self.display = LockState.LOCKED, False, False, ""
        self.pending.clear()
        self.answered.clear()
        self.say(f"board ready (firmware {FIRMWARE}): gate locked")
        return format_event(RelayEvent(EventKind.READY, detail=FIRMWARE))

    def host_line(self, line: str, now: float) -> bytes:
        remembered = self.answered.get(line)
        if remembered is not None:  # a retry of a command already executed: answer again, do not redo
            self.say(f"repeat of {line!r}: answered again, not executed twice")
            return remembered
        try:
            command = parse_host_line(line)
        except BadCommand as exc:
            self.say(f"refused {line[:60]!r}: {exc.code}")
            return format_refusal(exc.seq, exc.code)
        answer = self._execute(command, now)
        self.answered[line] = answer
        while len(self.answered) > 32:
            self.answered.popitem(last=False)
        return answer

    def _execute(self, command: HostCommand, now: float) -> bytes:
        seq = command.seq
        if command.verb == "OPEN":
            open_ms = int(command.args[0]) if command.args else self.default_open_ms
            self.pending.append(_Open(seq, open_ms))
            if self.lock is LockState.LOCKED:
                self.lock = LockState.OPEN_ONCE
            self._start_head(now)
            self.say(f"OPEN {seq}: one passage granted ({open_ms} ms), {len(self.pending)} waiting")
            if self.auto_pass_ms is not None and self.auto_pass_at is None:
                self.auto_pass_at = now + self.auto_pass_ms / 1000
        elif command.verb == "HOLD":
            self.lock = LockState.HELD
            self.say(f"HOLD {seq}: gate held open")
        elif command.verb == "CLOSE":
            if self.emergency:
                self.say(f"CLOSE {seq} refused: emergency input holds the gate open")
                return format_refusal(seq, "EMERGENCY", "local emergency input active")
            events = b"".join(self._not_passed(o) for o in list(self.pending))
            self.pending.clear()
            self.lock = LockState.LOCKED
            self.say(f"CLOSE {seq}: gate locked")
            return format_ack(seq) + events
        elif command.verb == "SHOW":
            self.display = command.text
            self.say(f"display: {command.text!r}")
        elif command.verb == "STATUS":
            return format_state(seq, self.state())
        elif command.verb == "SWALLOW":
            if self.collected >= self.collector_capacity:
                self.say(f"SWALLOW {seq} refused: the collector bin is full ({self.collected} cards)")
                return format_refusal(seq, "FULL", "card collector bin full")
            self.collected += 1
            self.say(f"SWALLOW {seq}: card taken into the collector ({self.collected}/{self.collector_capacity})")
            return format_ack(seq) + format_event(RelayEvent(EventKind.CARD_SWALLOWED))
        return format_ack(seq)

    def empty_collector(self) -> bytes:
        """The attendant emptied the bin: its cards go back to the window for recycling."""
        self.say(f"collector emptied: {self.collected} cards out for recycling")
        self.collected = 0
        return b""

    def passage(self, now: float) -> bytes:
        """The passage sensor fired."""
        if not self.pending:
            self.say("passage with no OPEN pending (held, emergency or forced): PASSED 0")
            return format_event(RelayEvent(EventKind.PASSED, 0))
        done = self.pending.popleft()
        self.say(f"passage of {done.seq}: not reported (silent)" if self.silent else f"passage: PASSED {done.seq}")
        self._after_head_done(now)
        if self.silent:
            return b""
        return format_event(RelayEvent(EventKind.PASSED, done.seq))

    def tick(self, now: float) -> bytes:
        """Expire opens whose time ran out; fire an automatic passage when due."""
        out = b""
        if self.auto_pass_at is not None and now >= self.auto_pass_at:
            self.auto_pass_at = None
            out += self.passage(now)
        while self.pending and self.pending[0].deadline is not None and now >= self.pending[0].deadline:
            out += self._not_passed(self.pending.popleft())
            self._after_head_done(now)
        return out

    def next_deadline(self) -> float | None:
        times = [t for t in (self.auto_pass_at, self.pending[0].deadline if self.pending else None) if t]
        return min(times) if times else None

    def set_emergency(self, on: bool) -> bytes:
        self.emergency = on
        self.say("emergency input ON: gate open until released" if on else "emergency input OFF")
        return format_event(RelayEvent(EventKind.EMERGENCY_ON if on else EventKind.EMERGENCY_OFF))

    def set_power(self, lost: bool) -> bytes:
        self.on_battery = lost
        self.say("mains lost: running on reserve" if lost else "mains back")
        return format_event(RelayEvent(EventKind.POWER_LOST if lost else EventKind.POWER_OK))

    def state(self) -> RelayState:
        return RelayState(self.lock, self.emergency, self.on_battery, len(self.pending))

    def _start_head(self, now: float) -> None:
        if self.pending and self.pending[0].deadline is None:
            self.pending[0].deadline = now + self.pending[0].open_ms / 1000

    def _after_head_done(self, now: float) -> None:
        if self.pending:
            self._start_head(now)
            if self.auto_pass_ms is not None:
                self.auto_pass_at = now + self.auto_pass_ms / 1000
        elif self.lock is LockState.OPEN_ONCE:
            self.lock = LockState.LOCKED
            self.say("gate locked")

    def set_silent(self, on: bool) -> bytes:
        self.silent = on
        self.say("passage reports OFF (silent): nothing passed or not passed is reported" if on
                 else "passage reports ON")
        return b""

    def _not_passed(self, item: _Open) -> bytes:
        if self.silent:
            self.say(f"nobody passed {item.seq}: not reported (silent)")
            return b""
        self.say(f"nobody passed: NOTPASSED {item.seq}")
        return format_event(RelayEvent(EventKind.NOT_PASSED, item.seq))


def run(settings: SerialSettings, board: Board, commands: queue.Queue[str]) -> None:
    """Serve the board on the port until ``quit`` is queued or the port fails."""
    link = SerialLink(settings, read_timeout=0.02)
    lines: queue.Queue[str | None] = queue.Queue()

    def reader() -> None:
        buffer = bytearray()
        while True:
            try:
                data = link.read()
            except DeviceError:
                lines.put(None)
                return
            for byte in data:
                if byte == 0x0A:
                    lines.put(bytes(buffer).rstrip(b"\r").decode("utf-8", "replace"))
                    buffer.clear()
                else:
                    buffer.append(byte)

    threading.Thread(target=reader, daemon=True).start()
    link.write(board.boot())
    try:
        while True:
            now = time.monotonic()
            out = board.tick(now)
            try:
                line = lines.get(timeout=0.01)
            except queue.Empty:
                line = ""
            if line is None:
                board.say("serial port closed")
                return
            if line:
                out += board.host_line(line, now)
            while not commands.empty():
                word = commands.get_nowait().strip().lower()
                if word == "quit":
                    if out:
                        link.write(out)
                    return
                out += _operator(board, word, now)
            if out:
                link.write(out)
    except DeviceClosed:
        return
    finally:
        link.close()


def _operator(board: Board, word: str, now: float) -> bytes:
    actions: dict[str, Callable[[], bytes]] = {
        "pass": lambda: board.passage(now),
        "emergency on": lambda: board.set_emergency(True),
        "emergency off": lambda: board.set_emergency(False),
        "power lost": lambda: board.set_power(True),
        "power ok": lambda: board.set_power(False),
        "silent on": lambda: board.set_silent(True),
        "silent off": lambda: board.set_silent(False),
        "reboot": board.boot,
        "empty collector": lambda: board.empty_collector(),
    }
    if word == "state":
        board.say(f"state: {board.state()} display={board.display!r}")
        return b""
    action = actions.get(" ".join(word.split()))
    if action is None:
        if word:
            board.say(f"unknown input {word!r}: pass, emergency on|off, power lost|ok, silent on|off, empty collector, reboot, state, quit")
        return b""
    return action()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m parkgate.clients.devices.relay_sim",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("port", help="serial port the board sits on, e.g. /dev/pts/4 or /dev/ttyUSB0")
    parser.add_argument("--baud", type=int, default=9600)
    parser.add_argument(
        "--open-ms", type=int, default=DEFAULT_OPEN_MS, help="OPEN time when the host gives none"
    )
    parser.add_argument("--auto-pass", type=int, metavar="MS", help="a person passes MS ms after each OPEN")
    parser.add_argument("--collector-capacity", type=int, default=500, help="cards the collector bin holds (S21)")
    args = parser.parse_args(argv)

    def say(text: str) -> None:
        print(f"{time.strftime('%H:%M:%S')} {text}", flush=True)

    commands: queue.Queue[str] = queue.Queue()

    def stdin_reader() -> None:
        for raw in sys.stdin:
            commands.put(raw)
        # End of input (no terminal): keep serving until killed.

    threading.Thread(target=stdin_reader, daemon=True).start()
    board = Board(say=say, default_open_ms=args.open_ms, auto_pass_ms=args.auto_pass,
                  collector_capacity=args.collector_capacity)
    try:
        run(SerialSettings(args.port, baudrate=args.baud), board, commands)
    except DeviceError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
