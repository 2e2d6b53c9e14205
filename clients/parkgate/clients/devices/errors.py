"""The exceptions every device edge raises; no library exception crosses it.

Exception hierarchy::

    DeviceError                  any failure of a scanner, card reader, relay board or printer
    ├── DeviceNotFound           no such port / no reader matching the configured name
    ├── DeviceUnavailable        the port or the PC/SC service is there but cannot be used
    ├── DeviceDisconnected       the device went away while in use (USB unplugged, pty closed)
    ├── DeviceTimeout            the device did not answer in time
    ├── DeviceClosed             the object was closed (by us) and cannot be used any more
    ├── ProtocolError            the device said something the protocol does not allow
    ├── CommandRefused           the device understood a command and refused it (``code``)
    └── CardError                a card-level failure (the reader itself is fine)
        ├── NoCard               no card was presented within the timeout
        ├── CardRemoved          the card left the reader during the exchange
        └── CardStatusError      the card (or reader) answered an APDU with a status other than 90 00

Why our own classes: the gate agent and the window client decide what to do
(retry, show "present the card again", raise an alert) from the class alone,
whichever library sits behind the interface (pyserial, pyscard, a future
network device). Each implementation converts its library's errors where it
calls the library, and keeps the original as ``__cause__`` for the log.
"""

from __future__ import annotations


class DeviceError(Exception):
    """A device failure; ``device`` names the port or reader for the log and the operator."""

    def __init__(self, message: str, *, device: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.device = device

    def __str__(self) -> str:
        return f"{self.device}: {self.message}" if self.device else self.message


class DeviceNotFound(DeviceError):
    """The configured port or reader does not exist (check the cable and the configuration)."""


class DeviceUnavailable(DeviceError):
    """The device exists but cannot be opened or used (busy, permissions, service down)."""


class DeviceDisconnected(DeviceError):
    """The device vanished while in use; reopening later may work."""


class DeviceTimeout(DeviceError):
    """No answer within the deadline."""


class DeviceClosed(DeviceError):
    """The object was closed; make a new one."""


class ProtocolError(DeviceError):
    """The device sent something the protocol does not allow (see docs/devices.md)."""


class CardError(DeviceError):
    """A card-level failure: the reader works, the card exchange did not."""


class NoCard(CardError):
    """No card was presented within the timeout."""


class CardRemoved(CardError):
    """The card was taken away (or reset) before the exchange finished: ask to present it again."""


class CardStatusError(CardError):
    """An APDU was answered with a status word other than ``90 00``.

    ``sw`` is the two status bytes as an int, e.g. ``0x6A81`` (function not
    supported: a reader that does not know GET DATA UID for this card type).
    """

    def __init__(self, message: str, *, sw: int, device: str = "") -> None:
        super().__init__(message, device=device)
        self.sw = sw

    @property
    def sw_hex(self) -> str:
        return f"{self.sw:04X}"


class CommandRefused(DeviceError):
    """The device understood a command and refused it; ``code`` is the device's reason.

    From a relay board (docs/devices.md): ``EMERGENCY`` (the gate is held open by
    the local emergency input), ``RANGE``, ``SYNTAX``, ``UNKNOWN``.
    """

    def __init__(self, message: str, *, code: str, device: str = "") -> None:
        super().__init__(message, device=device)
        self.code = code
