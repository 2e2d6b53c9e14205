"""Contactless IC card readers: the interface and the card UID logic common to all of them.

The contract (any implementation):

* ``wait_for_card(timeout)`` blocks until a card is in the reader's field and
  returns a connected :class:`Card` (use it as a context manager: leaving it
  releases the card); no card within ``timeout`` seconds is ``NoCard``.
* ``Card.uid()`` sends the standard PC/SC GET DATA APDU ``FF CA 00 00 00``
  and returns the UID as upper-case hex (``"04A1B2C3D4E5F6"``); a status other
  than ``90 00`` is ``CardStatusError`` (``sw`` tells which); a card taken
  away meanwhile is ``CardRemoved``. ``Card.transmit(apdu)`` is the same for
  any APDU and returns the response data without the status word.
* ``read_uid(timeout)`` = wait, read the UID, release: what the window and
  the gate usually want.
* ``wait_for_removal(timeout)`` returns True once the field is empty (so a
  card lying on the reader is not read twice), False at the timeout.
* ``close()`` may be called from another thread and ends a blocked wait with
  ``DeviceClosed``.
* Only :mod:`.errors` exceptions leave these methods: ``DeviceNotFound`` when
  no reader matches the configured name, ``DeviceUnavailable`` when the
  smart-card service is down, ``DeviceDisconnected`` when the reader is
  unplugged during a wait.

The UID is what the server binds a card-bound ticket to (S21); it is not a
secret, only an identifier, so nothing here pretends it authenticates a card.
"""

from __future__ import annotations

from abc import abstractmethod

from .closeable import Closeable
from .errors import CardStatusError

#: PC/SC part 3 GET DATA, P1=00: the UID (Le=00: all of it). Answered by the reader, not the card.
GET_UID_APDU = bytes.fromhex("FFCA000000")
SW_SUCCESS = 0x9000


class Card(Closeable):
    """A card connected through a reader; valid until ``release()`` (or the end of a ``with`` block)."""

    def __init__(self, reader: str, atr: bytes) -> None:
        self.reader = reader
        self.atr = atr

    def transmit(self, apdu: bytes) -> bytes:
        """Send one command APDU; the response data on ``90 00``, else ``CardStatusError``."""
        if len(apdu) < 4:
            raise ValueError("an APDU has at least 4 bytes (CLA INS P1 P2)")
        data, sw = self._transmit(apdu)
        if sw != SW_SUCCESS:
            raise CardStatusError(
                f"APDU {apdu[:4].hex().upper()} answered with status {sw:04X}", sw=sw, device=self.reader
            )
        return data

    def uid(self) -> str:
        """The card's UID as upper-case hex, read with GET DATA (``FF CA 00 00 00``)."""
        data = self.transmit(GET_UID_APDU)
        if not data:
            raise CardStatusError("GET DATA returned an empty UID", sw=SW_SUCCESS, device=self.reader)
        return data.hex().upper()

    @abstractmethod
    def _transmit(self, apdu: bytes) -> tuple[bytes, int]:
        """Send an APDU; return (response data, status word); raise CardRemoved/DeviceError."""

    @abstractmethod
    def release(self) -> None:
        """Disconnect from the card (leaving it powered for the next reader of it); idempotent."""

    def close(self) -> None:
        """The same as ``release()`` (so ``with reader.wait_for_card(t) as card:`` releases it)."""
        self.release()


class CardReader(Closeable):
    """One contactless reader."""

    name: str

    @abstractmethod
    def wait_for_card(self, timeout: float) -> Card:
        """A connected card as soon as one is in the field; ``NoCard`` after ``timeout`` seconds."""

    @abstractmethod
    def wait_for_removal(self, timeout: float) -> bool:
        """True once no card is in the field; False if one is still there after ``timeout`` seconds."""

    @abstractmethod
    def close(self) -> None:
        """Release the reader; idempotent; ends a wait in another thread with ``DeviceClosed``."""

    def read_uid(self, timeout: float) -> str:
        """Wait for a card and return its UID (upper-case hex); the card is released afterwards."""
        with self.wait_for_card(timeout) as card:
            return card.uid()
