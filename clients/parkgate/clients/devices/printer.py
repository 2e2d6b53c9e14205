"""Ticket printers: the interface, and an ESC/POS thermal printer on a serial port.

The contract (any implementation):

* ``print_ticket(ticket)`` prints one ticket and cuts it; it returns when the
  bytes were handed to the printer (ESC/POS gives no "printed" signal), and
  raises ``DeviceTimeout`` when the printer stops accepting bytes (offline,
  cover open, paper out with hardware flow control), ``DeviceDisconnected``
  when it is unplugged: the window then offers a reprint.
* ``write(data)`` sends raw bytes (a test page, a custom layout).
* ``close()`` releases the port.
"""

from __future__ import annotations

from abc import abstractmethod

from ..tickets.escpos import EscPosLayout, escpos_ticket
from ..tickets.model import SoldTicket
from .closeable import Closeable
from .serialport import SerialLink, SerialSettings


class Printer(Closeable):
    layout: EscPosLayout

    def print_ticket(self, ticket: SoldTicket) -> None:
        """Print one ticket with this printer's layout, and cut."""
        self.write(escpos_ticket(ticket, self.layout))

    @abstractmethod
    def write(self, data: bytes) -> None:
        """Send raw printer bytes, all or an exception."""

    @abstractmethod
    def close(self) -> None:
        """Release the printer; idempotent."""


class SerialPrinter(Printer):
    """An ESC/POS printer on a serial port (RS-232 or a USB-serial adapter).

    Thermal printers buffer only a few kilobytes and pace the line with
    RTS/CTS or XON/XOFF: set the one the printer's DIP switches select in
    ``settings``; ``write_timeout`` bounds how long a stalled printer can
    block the window.
    """

    def __init__(
        self, settings: SerialSettings, layout: EscPosLayout | None = None, *, write_timeout: float = 10.0
    ) -> None:
        self.layout = layout or EscPosLayout()
        self._link = SerialLink(settings, write_timeout=write_timeout)

    @property
    def name(self) -> str:
        return self._link.name

    def write(self, data: bytes) -> None:
        self._link.write(data)

    def close(self) -> None:
        self._link.close()
