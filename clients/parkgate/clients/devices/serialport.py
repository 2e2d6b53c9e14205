"""One serial port, opened and used with pyserial's errors converted to ours.

Scanners, relay boards and ticket printers all sit on a serial line (RS-232,
or USB-serial adapters that show up as /dev/ttyUSB*/ttyACM*). This module is
the single place that talks to pyserial, so the device classes never see a
``serial.SerialException`` and every port is opened the same way: exclusive
(a second agent on the same port fails at once instead of stealing bytes),
with explicit read and write timeouts (a blocked write to a printer that ran
out of paper must not hang the window).
"""

from __future__ import annotations

import errno
import threading
from dataclasses import dataclass
from typing import Literal

import serial

from .errors import DeviceClosed, DeviceDisconnected, DeviceNotFound, DeviceTimeout, DeviceUnavailable

Parity = Literal["N", "E", "O", "M", "S"]


@dataclass(frozen=True)
class SerialSettings:
    """Line settings of one port, as they come from a gate or window configuration file."""

    port: str
    baudrate: int = 9600
    bytesize: Literal[5, 6, 7, 8] = 8
    parity: Parity = "N"
    stopbits: Literal[1, 2] = 1
    rtscts: bool = False
    xonxoff: bool = False


class SerialLink:
    """An open serial port; ``read`` and ``write`` raise only :mod:`.errors` exceptions.

    ``read`` may be called from one reader thread while other threads call
    ``write``: writes are serialised by a lock so two commands never interleave.
    """

    def __init__(
        self, settings: SerialSettings, *, read_timeout: float = 0.2, write_timeout: float = 5.0
    ) -> None:
        self.settings = settings
        self.name = settings.port
        self._write_lock = threading.Lock()
        self._closed = False
        try:
            self._port = serial.Serial(
                port=settings.port,
                baudrate=settings.baudrate,
                bytesize=settings.bytesize,
                parity=settings.parity,
                stopbits=settings.stopbits,
                rtscts=settings.rtscts,
                xonxoff=settings.xonxoff,
                timeout=read_timeout,
                write_timeout=write_timeout,
                exclusive=True,
            )
        except (serial.SerialException, OSError, ValueError) as exc:
            raise _open_error(exc, settings.port) from exc

    def read(self, max_bytes: int = 4096) -> bytes:
        """What arrived, up to ``max_bytes``, waiting at most the read timeout; ``b""`` if nothing came."""
        self._check_open()
        try:
            waiting = self._port.in_waiting
            return bytes(self._port.read(min(max(1, waiting), max_bytes)))
        except (serial.SerialException, OSError, TypeError, AttributeError) as exc:
            # TypeError/AttributeError: pyserial's read racing a close() from another thread.
            if self._closed:
                raise DeviceClosed("port closed", device=self.name) from exc
            raise DeviceDisconnected(f"read failed: {exc}", device=self.name) from exc

    def write(self, data: bytes) -> None:
        """Send all of ``data`` or raise (``DeviceTimeout`` when the device stops accepting bytes)."""
        self._check_open()
        with self._write_lock:
            try:
                self._port.write(data)
                self._port.flush()
            except serial.SerialTimeoutException as exc:
                raise DeviceTimeout(
                    f"write of {len(data)} bytes timed out (device offline, flow control, paper out?)",
                    device=self.name,
                ) from exc
            except (serial.SerialException, OSError) as exc:
                raise DeviceDisconnected(f"write failed: {exc}", device=self.name) from exc

    def close(self) -> None:
        """Close the port; idempotent. A thread blocked in ``read`` gets ``DeviceClosed``."""
        self._closed = True
        try:
            self._port.close()
        except (serial.SerialException, OSError):
            pass

    @property
    def closed(self) -> bool:
        return self._closed

    def _check_open(self) -> None:
        if self._closed:
            raise DeviceClosed("port closed", device=self.name)


def _open_error(exc: BaseException, port: str) -> Exception:
    code = getattr(exc, "errno", None)
    if code is None and exc.__context__ is not None:
        code = getattr(exc.__context__, "errno", None)
    if code in (errno.ENOENT, errno.ENODEV, errno.ENXIO):
        return DeviceNotFound(f"no such serial port ({exc})", device=port)
    if code == errno.EACCES:
        return DeviceUnavailable(f"permission denied: add the user to group dialout ({exc})", device=port)
    if isinstance(exc, ValueError):
        return DeviceUnavailable(f"bad line settings: {exc}", device=port)
    # Busy (flock by another process: EAGAIN/EWOULDBLOCK), a port that is not a tty, ...
    return DeviceUnavailable(f"cannot open serial port: {exc}", device=port)
