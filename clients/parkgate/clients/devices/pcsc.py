"""Card readers through PC/SC (pcsc-lite's pcscd on Linux), with pyscard.

Uses pyscard's thin ``smartcard.scard`` layer (the PC/SC C API one to one)
rather than its higher-level classes: the wait for a card is one
``SCardGetStatusChange`` with a timeout, which ``SCardCancel`` can interrupt
from another thread (``close()``), and every return code is converted here,
in one table, to our exceptions.

A reader is chosen by a case-insensitive substring of its PC/SC name (e.g.
``"ACR122"``, ``"OMNIKEY 5422 CL"``, ``"Virtual PCD 00 00"``), looked up at
each wait, so a reader plugged in after start-up is found. Empty = the first
reader.
"""

from __future__ import annotations

import threading
import time

from smartcard import scard

from .cardreader import Card, CardReader
from .errors import (
    CardError,
    CardRemoved,
    DeviceClosed,
    DeviceDisconnected,
    DeviceError,
    DeviceNotFound,
    DeviceUnavailable,
    NoCard,
    ProtocolError,
)

# NOT_TRANSACTED: the reader lost the card in the middle of an APDU -- with a contactless card, the
# card leaving the field before the reader's presence poll noticed it. The remedy is the same:
# present the card again.
_REMOVED = {
    scard.SCARD_W_REMOVED_CARD,
    scard.SCARD_E_NO_SMARTCARD,
    scard.SCARD_W_RESET_CARD,
    scard.SCARD_E_NOT_TRANSACTED,
}
_SERVICE_DOWN = {scard.SCARD_E_NO_SERVICE, scard.SCARD_E_SERVICE_STOPPED, scard.SCARD_E_INVALID_HANDLE}
_READER_GONE = {scard.SCARD_E_UNKNOWN_READER, scard.SCARD_E_READER_UNAVAILABLE}


def _message(hresult: int) -> str:
    return f"{scard.SCardGetErrorMessage(hresult)} (0x{hresult & 0xFFFFFFFF:08X})"


def _convert(hresult: int, what: str, device: str) -> DeviceError:
    """The one table from PC/SC return codes to our exceptions."""
    text = f"{what}: {_message(hresult)}"
    if hresult in _REMOVED:
        return CardRemoved(text, device=device)
    if hresult == scard.SCARD_E_CANCELLED:
        return DeviceClosed(text, device=device)
    if hresult in _SERVICE_DOWN:
        return DeviceUnavailable(f"{text}: is pcscd running?", device=device)
    if hresult in _READER_GONE:
        return DeviceDisconnected(text, device=device)
    if hresult == scard.SCARD_E_NO_READERS_AVAILABLE:
        return DeviceNotFound(text, device=device)
    if hresult == scard.SCARD_E_SHARING_VIOLATION:
        return DeviceUnavailable(f"{text}: another program holds the card exclusively", device=device)
    if hresult in (scard.SCARD_W_UNRESPONSIVE_CARD, scard.SCARD_W_UNPOWERED_CARD):
        return CardError(text, device=device)
    return DeviceError(text, device=device)


def list_readers() -> list[str]:
    """The names of the readers pcscd knows now (for configuration and diagnostics)."""
    hresult, context = scard.SCardEstablishContext(scard.SCARD_SCOPE_USER)
    if hresult != scard.SCARD_S_SUCCESS:
        raise _convert(hresult, "cannot reach the PC/SC service", "pcsc")
    try:
        hresult, names = scard.SCardListReaders(context, [])
        if hresult == scard.SCARD_E_NO_READERS_AVAILABLE:
            return []
        if hresult != scard.SCARD_S_SUCCESS:
            raise _convert(hresult, "cannot list readers", "pcsc")
        return list(names)
    finally:
        scard.SCardReleaseContext(context)


class PcscCard(Card):
    def __init__(self, reader: str, atr: bytes, handle: int, protocol: int) -> None:
        super().__init__(reader, atr)
        self._handle: int | None = handle
        self._protocol = protocol

    def _transmit(self, apdu: bytes) -> tuple[bytes, int]:
        if self._handle is None:
            raise DeviceClosed("card released", device=self.reader)
        hresult, response = scard.SCardTransmit(self._handle, self._protocol, list(apdu))
        if hresult != scard.SCARD_S_SUCCESS:
            raise _convert(hresult, "transmit failed", self.reader)
        if len(response) < 2:
            raise ProtocolError(f"response of {len(response)} bytes has no status word", device=self.reader)
        return bytes(response[:-2]), (response[-2] << 8) | response[-1]

    def release(self) -> None:
        handle, self._handle = self._handle, None
        if handle is not None:
            scard.SCardDisconnect(handle, scard.SCARD_LEAVE_CARD)


class PcscCardReader(CardReader):
    """A PC/SC reader chosen by a substring of its name."""

    def __init__(self, name_contains: str = "") -> None:
        self.name_contains = name_contains
        self.name = name_contains or "(first PC/SC reader)"
        self._lock = threading.Lock()  # one PC/SC call sequence at a time on our context
        self._closed = False
        self._context: int | None = None
        with self._lock:
            self._ensure_context()

    def wait_for_card(self, timeout: float) -> Card:
        with self._lock:
            reader, atr = self._wait(timeout, want_card=True)
            hresult, handle, protocol = scard.SCardConnect(
                self._ensure_context(),
                reader,
                scard.SCARD_SHARE_SHARED,
                scard.SCARD_PROTOCOL_T0 | scard.SCARD_PROTOCOL_T1,
            )
            if hresult != scard.SCARD_S_SUCCESS:
                raise self._fail(hresult, "cannot connect to the card", reader)
            return PcscCard(reader, atr, handle, protocol)

    def wait_for_removal(self, timeout: float) -> bool:
        with self._lock:
            try:
                self._wait(timeout, want_card=False)
            except NoCard:
                return False
            return True

    def close(self) -> None:
        self._closed = True
        context = self._context
        if context is not None:
            scard.SCardCancel(context)
        if self._lock.acquire(timeout=5):
            try:
                if self._context is not None:
                    scard.SCardReleaseContext(self._context)
                    self._context = None
            finally:
                self._lock.release()

    # ---- inside the lock -------------------------------------------------------------------

    def _ensure_context(self) -> int:
        if self._closed:
            raise DeviceClosed("reader closed", device=self.name)
        if self._context is None:
            hresult, context = scard.SCardEstablishContext(scard.SCARD_SCOPE_USER)
            if hresult != scard.SCARD_S_SUCCESS:
                raise _convert(hresult, "cannot reach the PC/SC service", self.name)
            self._context = context
        return self._context

    def _fail(self, hresult: int, what: str, device: str) -> DeviceError:
        error = _convert(hresult, what, device)
        if hresult in _SERVICE_DOWN and self._context is not None:
            # pcscd restarted: this context is dead; the next call makes a new one.
            scard.SCardReleaseContext(self._context)
            self._context = None
        if self._closed and not isinstance(error, DeviceClosed):
            return DeviceClosed("reader closed", device=device)
        return error

    def _resolve(self) -> str:
        hresult, names = scard.SCardListReaders(self._ensure_context(), [])
        if hresult == scard.SCARD_E_NO_READERS_AVAILABLE:
            names = []
        elif hresult != scard.SCARD_S_SUCCESS:
            raise self._fail(hresult, "cannot list readers", self.name)
        wanted = self.name_contains.casefold()
        for name in names:
            if wanted in name.casefold():
                return str(name)
        raise DeviceNotFound(
            f"no PC/SC reader whose name contains {self.name_contains!r}; readers: {list(names) or 'none'}",
            device=self.name,
        )

    def _wait(self, timeout: float, *, want_card: bool) -> tuple[str, bytes]:
        """Block until the field has a usable card (``want_card``) or is empty; (reader, ATR)."""
        reader = self._resolve()
        deadline = time.monotonic() + max(0.0, timeout)
        known = scard.SCARD_STATE_UNAWARE
        while True:
            remaining_ms = max(0, int((deadline - time.monotonic()) * 1000))
            hresult, states = scard.SCardGetStatusChange(
                self._ensure_context(), remaining_ms, [(reader, known)]
            )
            if hresult == scard.SCARD_E_TIMEOUT:
                raise NoCard(
                    f"no card within {timeout:g} s" if want_card else "card still present", device=reader
                )
            if hresult != scard.SCARD_S_SUCCESS:
                raise self._fail(hresult, "waiting for the card failed", reader)
            _, state, atr = states[0]
            if state & (scard.SCARD_STATE_UNKNOWN | scard.SCARD_STATE_UNAVAILABLE):
                raise DeviceDisconnected("the reader went away", device=reader)
            present = bool(state & scard.SCARD_STATE_PRESENT) and not state & scard.SCARD_STATE_MUTE
            if present == want_card or (not want_card and state & scard.SCARD_STATE_EMPTY):
                return reader, bytes(atr)
            if time.monotonic() >= deadline:
                raise NoCard(
                    f"no card within {timeout:g} s" if want_card else "card still present", device=reader
                )
            known = state & ~scard.SCARD_STATE_CHANGED
