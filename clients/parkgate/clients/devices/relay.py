"""Turnstile relay boards: the interface, and the serial implementation of protocol v1.

The contract (any implementation):

* ``open_once(open_ms)`` unlocks the gate for ONE passage and returns the
  command's sequence number; the board later reports ``PASSED seq`` (the
  sensor saw the person go through) or ``NOT_PASSED seq`` (nobody passed
  within ``open_ms``, the gate locked again). Several ``open_once`` calls
  queue: one passage each, confirmed in order (a group of three = three calls).
* ``open_hold()`` unlocks until ``lock()``; passages meanwhile come as
  ``PASSED 0`` (counted, attributed to no ticket).
* ``lock()`` locks now; queued opens end with ``NOT_PASSED``. (The protocol
  verb is CLOSE; the method is ``lock`` so it is not confused with
  ``close()``, which releases the port.)
* ``show(text)`` sets the display line; ``status()`` returns a
  :class:`RelayState`; ``ping()`` checks the board answers.
* ``next_event(timeout)`` returns the next unsolicited :class:`RelayEvent`
  (passage, emergency input, power) or ``None`` after ``timeout`` seconds.
* Every command is acknowledged; no acknowledgement within the deadline
  (after retries with the same sequence number, which the board executes only
  once) is ``DeviceTimeout``; a refusal (e.g. ``EMERGENCY`` while the local
  emergency input holds the gate open) is ``CommandRefused`` with its code.
* All methods are thread-safe: the gate agent may wait for events in one
  thread and send commands from another.
"""

from __future__ import annotations

import itertools
import logging
import queue
import threading
from abc import abstractmethod

from .closeable import Closeable
from .errors import CommandRefused, DeviceClosed, DeviceError, DeviceTimeout, ProtocolError
from .relayproto import (
    MAX_LINE_BYTES,
    MAX_SEQ,
    Ack,
    BoardMessage,
    Refusal,
    RelayEvent,
    RelayState,
    StateReply,
    format_command,
    parse_board_line,
)
from .serialport import SerialLink, SerialSettings

log = logging.getLogger(__name__)


class Relay(Closeable):
    """A gate's lock, passage sensor, emergency input and display line."""

    def open_once(self, open_ms: int | None = None) -> int:
        """Unlock for one passage; returns the sequence number its PASSED/NOT_PASSED event will carry."""
        args = () if open_ms is None else (open_ms,)
        return self._command("OPEN", *args).seq

    def open_hold(self) -> None:
        """Unlock and stay unlocked until ``lock()`` (fast mode, evacuation by command)."""
        self._command("HOLD")

    def lock(self) -> None:
        """Lock now (protocol CLOSE); pending single opens end with NOT_PASSED."""
        self._command("CLOSE")

    def show(self, text: str) -> None:
        """Put one line on the gate's display (control characters removed, at most 64 characters)."""
        self._command("SHOW", text)

    def swallow_card(self) -> None:
        """S21: the card collector takes the single-use card in its slot (CommandRefused FULL: its bin is full)."""
        self._command("SWALLOW")

    def ping(self) -> None:
        """Raise unless the board answers."""
        self._command("PING")

    def status(self) -> RelayState:
        reply = self._command("STATUS")
        if not isinstance(reply, StateReply):
            raise ProtocolError(f"STATUS answered with {reply!r}")
        return reply.state

    @abstractmethod
    def next_event(self, timeout: float | None = None) -> RelayEvent | None:
        """The next unsolicited event, or ``None`` after ``timeout`` seconds (``None``: wait for ever)."""

    @abstractmethod
    def close(self) -> None:
        """Release the board's port; idempotent. The gate's lock stays as the board has it."""

    @abstractmethod
    def _command(self, verb: str, *args: str | int) -> Ack | StateReply:
        """Send one command and return the board's positive answer; raise on refusal or timeout."""


class _Waiter:
    __slots__ = ("answer", "done")

    def __init__(self) -> None:
        self.done = threading.Event()
        self.answer: Ack | Refusal | StateReply | None = None


class SerialRelay(Relay):
    """A relay board on a serial port speaking protocol v1 (docs/devices.md)."""

    def __init__(self, settings: SerialSettings, *, ack_timeout: float = 0.5, attempts: int = 3) -> None:
        self.ack_timeout = ack_timeout
        self.attempts = attempts
        #: Lines from the board that were not protocol v1 (noise, wrong baud rate): logged and counted.
        self.garbage_lines = 0
        self._link = SerialLink(settings, read_timeout=0.05)
        self._seq = itertools.cycle(range(1, MAX_SEQ + 1))
        self._seq_lock = threading.Lock()
        self._waiters: dict[int, _Waiter] = {}
        self._events: queue.Queue[RelayEvent | DeviceError] = queue.Queue()
        self._failure: DeviceError | None = None
        self._reader = threading.Thread(target=self._read_loop, name=f"relay {settings.port}", daemon=True)
        self._reader.start()

    @property
    def name(self) -> str:
        return self._link.name

    def next_event(self, timeout: float | None = None) -> RelayEvent | None:
        if self._failure is not None and self._events.empty():
            raise self._failure
        try:
            item = self._events.get(timeout=timeout)
        except queue.Empty:
            return None
        if isinstance(item, DeviceError):
            self._events.put(item)  # every later caller sees it too
            raise item
        return item

    def close(self) -> None:
        self._link.close()
        if self._reader is not threading.current_thread():
            self._reader.join(timeout=2)

    def _command(self, verb: str, *args: str | int) -> Ack | StateReply:
        if self._failure is not None:
            raise self._failure
        with self._seq_lock:
            seq = next(self._seq)
        line = format_command(verb, seq, *args)
        waiter = _Waiter()
        self._waiters[seq] = waiter
        try:
            for attempt in range(1, self.attempts + 1):
                self._link.write(line)
                if waiter.done.wait(self.ack_timeout):
                    break
                if self._failure is not None:
                    raise self._failure
                log.warning("relay %s: no answer to %s %d (attempt %d)", self.name, verb, seq, attempt)
            else:
                raise DeviceTimeout(
                    f"no answer to {verb} after {self.attempts} attempts of {self.ack_timeout}s",
                    device=self.name,
                )
        finally:
            self._waiters.pop(seq, None)
        answer = waiter.answer
        if answer is None:  # woken by the reader thread failing
            raise self._failure or DeviceClosed("relay closed", device=self.name)
        if isinstance(answer, Refusal):
            raise CommandRefused(
                f"{verb} refused: {answer.code} {answer.text}".rstrip(), code=answer.code, device=self.name
            )
        return answer

    # ---- reader thread ---------------------------------------------------------------------

    def _read_loop(self) -> None:
        buffer = bytearray()
        dropping = False
        while True:
            try:
                data = self._link.read()
            except DeviceClosed as exc:
                self._fail(exc)
                return
            except DeviceError as exc:
                log.error("relay %s: %s", self.name, exc)
                self._fail(exc)
                return
            for byte in data:
                if byte == 0x0A:
                    if not dropping:
                        self._handle_line(bytes(buffer).rstrip(b"\r"))
                    buffer.clear()
                    dropping = False
                elif not dropping:
                    buffer.append(byte)
                    if len(buffer) > MAX_LINE_BYTES:
                        self._garbage(bytes(buffer[:64]), "overlong line")
                        buffer.clear()
                        dropping = True

    def _handle_line(self, raw: bytes) -> None:
        if not raw.strip():
            return
        try:
            message: BoardMessage = parse_board_line(raw.decode("utf-8"))
        except (UnicodeDecodeError, ProtocolError) as exc:
            self._garbage(raw, str(exc))
            return
        if isinstance(message, RelayEvent):
            log.info("relay %s: event %s %s", self.name, message.kind, message.seq or message.detail)
            self._events.put(message)
            return
        waiter = self._waiters.get(message.seq)
        if waiter is None:
            log.info("relay %s: late or duplicate answer %r", self.name, message)
            return
        waiter.answer = message
        waiter.done.set()

    def _garbage(self, raw: bytes, why: str) -> None:
        self.garbage_lines += 1
        log.warning("relay %s: ignored %r (%s)", self.name, raw[:64], why)

    def _fail(self, error: DeviceError) -> None:
        self._failure = error
        for waiter in list(self._waiters.values()):
            waiter.answer = None
            waiter.done.set()
        self._events.put(error)
