"""What comes into the gate agent from its hardware: scans, cards, relay events, fire inputs.

Each device is read by one daemon thread that hands what it read to the
agent's asyncio loop (``loop.call_soon_threadsafe``) as a small event object,
so the agent's state machine only ever runs in one thread. The threads
survive their device: an unplugged scanner or a pcscd restart is logged once
(``DeviceTrouble``), retried every ``RETRY_SECONDS`` and logged again when it
works, instead of killing the gate. The relay board, which is both an input
(events) and an output (commands), is in :mod:`.turnstile`.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass

from ..devices import (
    CardError,
    DeviceClosed,
    DeviceError,
    Framing,
    NoCard,
    PcscCardReader,
    RelayEvent,
    SerialScanner,
    SerialSettings,
)

log = logging.getLogger(__name__)

RETRY_SECONDS = 2.0
POLL_SECONDS = 0.5


@dataclass(frozen=True, slots=True)
class Scanned:
    """A code from the barcode/QR scanner, terminator stripped."""

    code: str


@dataclass(frozen=True, slots=True)
class CardPresented:
    """An IC card's UID (upper-case hex) from the PC/SC reader."""

    uid: str


@dataclass(frozen=True, slots=True)
class BoardEvent:
    """An unsolicited line from the relay board (PASSED, NOTPASSED, EMERGENCY, POWER, READY)."""

    event: RelayEvent


@dataclass(frozen=True, slots=True)
class EmergencyInput:
    """A local emergency source changed: ``source`` is ``relay``, ``signal``, ``serial`` or ``power``."""

    source: str
    on: bool


@dataclass(frozen=True, slots=True)
class DeviceTrouble:
    """A device failed or came back (``ok``); the agent logs it and reports it in its state."""

    device: str
    text: str
    ok: bool = False


Put = Callable[[object], None]


def threadsafe_put(loop: asyncio.AbstractEventLoop, queue: asyncio.Queue[object]) -> Put:
    """A ``put`` device threads may call; silently drops events once the loop has closed (shutdown)."""

    def put(item: object) -> None:
        try:
            loop.call_soon_threadsafe(queue.put_nowait, item)
        except RuntimeError:
            pass

    return put


class DeviceThread:
    """One device read in a loop by a daemon thread, reopened after failures, closed from any thread."""

    def __init__(self, name: str, put: Put) -> None:
        self.name = name
        self.put = put
        self.stopping = threading.Event()
        self._device: object | None = None
        self._failed = False
        self._thread = threading.Thread(target=self._main, name=f"gate {name}", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self.stopping.set()
        device = self._device
        if device is not None:
            device.close()  # type: ignore[attr-defined]
        self._thread.join(timeout=5)

    def _main(self) -> None:
        while not self.stopping.is_set():
            try:
                if self._device is None:
                    self._device = self.open()
                    if self._failed:
                        self._failed = False
                        self.put(DeviceTrouble(self.name, "working again", ok=True))
                self.poll(self._device)
            except DeviceClosed:
                if self.stopping.is_set():
                    return
                self._trouble(DeviceClosed("closed", device=self.name))
            except DeviceError as exc:
                self._trouble(exc)

    def _trouble(self, exc: DeviceError) -> None:
        if not self._failed:
            self._failed = True
            self.put(DeviceTrouble(self.name, str(exc)))
        device, self._device = self._device, None
        if device is not None:
            device.close()  # type: ignore[attr-defined]
        self.stopping.wait(RETRY_SECONDS)

    def open(self) -> object:
        raise NotImplementedError

    def poll(self, device: object) -> None:
        """Read once (at most about POLL_SECONDS) and put what was read."""
        raise NotImplementedError


class ScannerThread(DeviceThread):
    def __init__(self, settings: SerialSettings, framing: Framing, put: Put) -> None:
        super().__init__(f"scanner {settings.port}", put)
        self.settings = settings
        self.framing = framing

    def open(self) -> SerialScanner:
        return SerialScanner(self.settings, self.framing)

    def poll(self, device: object) -> None:
        assert isinstance(device, SerialScanner)
        code = device.read_code(timeout=POLL_SECONDS)
        if code:
            code = code.strip("\r\n")  # framing strips its terminator; a CR LF scanner set to CR leaves an LF
            if code:
                self.put(Scanned(code))


class CardThread(DeviceThread):
    """Reads a card's UID, then waits until the card leaves the field, so a card lying there counts once."""

    def __init__(self, name_contains: str, put: Put) -> None:
        super().__init__(f"card reader {name_contains or '(first)'}", put)
        self.name_contains = name_contains

    def open(self) -> PcscCardReader:
        return PcscCardReader(self.name_contains)

    def poll(self, device: object) -> None:
        assert isinstance(device, PcscCardReader)
        try:
            uid = device.read_uid(timeout=POLL_SECONDS * 2)
        except NoCard:
            return
        except CardError as exc:  # taken away too early, or a card type the reader cannot read
            log.warning("%s: %s: present the card again", self.name, exc)
            uid = ""
        if uid:
            self.put(CardPresented(uid))
        while not self.stopping.is_set():
            if device.wait_for_removal(timeout=POLL_SECONDS * 2):
                return


class EmergencyLineThread(DeviceThread):
    """A fire panel on a serial line sending ``ON``/``OFF`` lines (``EMERGENCY ON``/``OFF``, ``1``/``0`` too)."""

    ON = {"ON", "EMERGENCY ON", "1", "FIRE"}
    OFF = {"OFF", "EMERGENCY OFF", "0", "CLEAR"}

    def __init__(self, settings: SerialSettings, put: Put) -> None:
        super().__init__(f"emergency line {settings.port}", put)
        self.settings = settings

    def open(self) -> SerialScanner:
        return SerialScanner(self.settings, Framing(terminator="ANY", max_length=64))

    def poll(self, device: object) -> None:
        assert isinstance(device, SerialScanner)
        line = device.read_code(timeout=POLL_SECONDS)
        if not line:
            return
        word = " ".join(line.upper().split())
        if word in self.ON:
            self.put(EmergencyInput("serial", True))
        elif word in self.OFF:
            self.put(EmergencyInput("serial", False))
        else:
            log.warning("%s: ignored %r (expected ON or OFF)", self.name, line[:40])
