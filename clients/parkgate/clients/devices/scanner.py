"""Barcode/QR scanners: the interface, and the serial-port implementation.

The contract (any implementation):

* ``read(timeout)`` returns the next line the scanner produced as a
  :class:`~.framing.Scan` -- a code, or a flagged problem (garbage, overlong,
  bad framing, incomplete) -- or ``None`` when nothing came within ``timeout``
  seconds (``None`` = wait for ever). It raises only :mod:`.errors` exceptions
  (``DeviceDisconnected`` when the scanner is unplugged, ``DeviceClosed`` after
  ``close``).
* ``read_code(timeout)`` is what a gate loop wants: the next good code string
  (terminator, prefix and suffix stripped), skipping and counting flagged lines
  (``rejected``) and logging each one.
* ``close()`` may be called from another thread to stop a blocked ``read``.

The code string is handed over exactly as scanned (no case folding, no
trimming of inner characters): the ticket-code decoder refuses non-canonical
spellings itself.
"""

from __future__ import annotations

import logging
import time
from abc import abstractmethod
from collections import deque

from .closeable import Closeable
from .framing import FrameDecoder, Framing, Scan
from .serialport import SerialLink, SerialSettings

log = logging.getLogger(__name__)


class Scanner(Closeable):
    """A source of scanned codes."""

    def __init__(self) -> None:
        #: Lines flagged and skipped by ``read_code`` since the scanner was opened.
        self.rejected = 0

    @abstractmethod
    def read(self, timeout: float | None = None) -> Scan | None:
        """The next scanned line, good or flagged; ``None`` after ``timeout`` seconds of silence."""

    @abstractmethod
    def close(self) -> None:
        """Release the device; idempotent; unblocks a ``read`` in another thread."""

    def read_code(self, timeout: float | None = None) -> str | None:
        """The next good code, or ``None`` when no good code came within ``timeout`` seconds."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
            scan = self.read(remaining)
            if scan is None:
                return None
            if scan.ok:
                return scan.code
            self.rejected += 1
            log.warning("scanner: ignored a %s line %r", scan.problem, scan.raw[:64])
            if deadline is not None and time.monotonic() >= deadline:
                return None


class SerialScanner(Scanner):
    """A scanner on a serial port (RS-232, or USB in serial/CDC-ACM emulation mode)."""

    #: How long one low-level read waits; bounds how late a frame timeout or close() is noticed.
    POLL_SECONDS = 0.05

    def __init__(self, settings: SerialSettings, framing: Framing | None = None) -> None:
        super().__init__()
        self.framing = framing or Framing()
        self._link = SerialLink(settings, read_timeout=self.POLL_SECONDS)
        self._decoder = FrameDecoder(self.framing)
        self._ready: deque[Scan] = deque()

    @property
    def name(self) -> str:
        return self._link.name

    def read(self, timeout: float | None = None) -> Scan | None:
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self._ready:
            data = self._link.read()
            now = time.monotonic()
            self._ready.extend(self._decoder.feed(data, now) if data else self._decoder.expire(now))
            if not self._ready and deadline is not None and now >= deadline:
                return None
        return self._ready.popleft()

    def close(self) -> None:
        self._link.close()
