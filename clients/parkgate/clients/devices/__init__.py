"""Hardware at the windows and gates, each kind behind one small interface.

=================  ==========================================  =========================
interface          implementation (module)                     library
=================  ==========================================  =========================
``CardReader``     ``PcscCardReader`` (pcsc)                    pyscard, pcscd
``Scanner``        ``SerialScanner`` (scanner)                  pyserial
``Relay``          ``SerialRelay`` (relay, protocol relayproto) pyserial
``Printer``        ``SerialPrinter`` (printer)                  pyserial
=================  ==========================================  =========================

Only the exceptions of :mod:`.errors` leave these classes (the hierarchy is
drawn there). Tools for technicians without hardware:
``python -m parkgate.clients.devices.relay_sim PORT`` (a relay board) and
``python -m parkgate.clients.devices.virtual_card --uid HEX`` (a contactless
card in the vpcd virtual reader). The relay protocol is docs/devices.md.
"""

from .cardreader import GET_UID_APDU, Card, CardReader
from .errors import (
    CardError,
    CardRemoved,
    CardStatusError,
    CommandRefused,
    DeviceClosed,
    DeviceDisconnected,
    DeviceError,
    DeviceNotFound,
    DeviceTimeout,
    DeviceUnavailable,
    NoCard,
    ProtocolError,
)
from .framing import Framing, Scan, ScanProblem
from .pcsc import PcscCardReader, list_readers
from .printer import Printer, SerialPrinter
from .relay import Relay, SerialRelay
from .relayproto import EventKind, LockState, RelayEvent, RelayState
from .scanner import Scanner, SerialScanner
from .serialport import SerialSettings

__all__ = [
    "GET_UID_APDU",
    "Card",
    "CardError",
    "CardReader",
    "CardRemoved",
    "CardStatusError",
    "CommandRefused",
    "DeviceClosed",
    "DeviceDisconnected",
    "DeviceError",
    "DeviceNotFound",
    "DeviceTimeout",
    "DeviceUnavailable",
    "EventKind",
    "Framing",
    "LockState",
    "NoCard",
    "PcscCardReader",
    "Printer",
    "ProtocolError",
    "Relay",
    "RelayEvent",
    "RelayState",
    "Scan",
    "ScanProblem",
    "Scanner",
    "SerialPrinter",
    "SerialRelay",
    "SerialScanner",
    "SerialSettings",
    "list_readers",
]
