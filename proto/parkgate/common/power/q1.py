"""A serial UPS speaking the Megatec/Q1 protocol, read with pyserial.

The host sends ``Q1\\r``; the UPS answers one line::

    (MMM.M NNN.N PPP.P QQQ RR.R S.SS TT.T b7b6b5b4b3b2b1b0\\r
     input  fault  output load freq battery temp status bits

Status bits, most significant first: b7 utility fail (on battery), b6 battery
low, b5 bypass/boost active, b4 UPS failed, b3 standby type, b2 test in
progress, b1 shutdown active, b0 beeper on. The protocol gives no charge or
runtime; the charge is estimated from the battery voltage when the two
voltages of :class:`Q1Source` are set (a straight line between them, as
NUT's blazer driver does), else reported as unknown (-1).

A UPS that does not answer within the timeout, or answers a line that is not
a Q1 status (garbled, truncated, NUL bytes), is a :class:`PowerSourceError`.
"""

from __future__ import annotations

import contextlib
import re

import serial

from .reading import PowerSourceError, UpsReading

_LINE = re.compile(
    rb"^\((?P<vin>\d{1,3}\.\d) (?P<vfault>\d{1,3}\.\d) (?P<vout>\d{1,3}\.\d) (?P<load>\d{3}) "
    rb"(?P<freq>\d{1,2}\.\d) (?P<batt>\d{1,2}\.\d{1,2}) (?P<temp>[-\d]\d\.\d) (?P<bits>[01]{8})\r?$"
)


def parse_q1(line: bytes, battery_low_volts: float = 0.0, battery_full_volts: float = 0.0) -> UpsReading:
    """The reading a Q1 answer line carries; PowerSourceError names what is wrong with a bad one."""
    match = _LINE.match(line.strip(b"\n"))
    if match is None:
        shown = line[:60].decode("ascii", "backslashreplace")
        raise PowerSourceError(f"not a Q1 status line: {shown!r}")
    bits = match["bits"].decode()
    charge = -1
    if battery_full_volts > battery_low_volts > 0:
        volts = float(match["batt"])
        charge = round(100 * (volts - battery_low_volts) / (battery_full_volts - battery_low_volts))
        charge = max(0, min(100, charge))
    return UpsReading(on_battery=bits[0] == "1", low_battery=bits[1] == "1", forced_shutdown=bits[6] == "1",
                      charge_percent=charge, status=f"Q1 {bits} batt {match['batt'].decode()}V")


class Q1Source:
    """One UPS on one serial line; the port is opened at the first read and again after an error."""

    def __init__(self, device: str, baudrate: int = 2400, *, timeout: float = 2.0,
                 battery_low_volts: float = 0.0, battery_full_volts: float = 0.0) -> None:
        self.device, self.baudrate, self.timeout = device, baudrate, timeout
        self.low, self.full = battery_low_volts, battery_full_volts
        self.name = f"q1:{device}"
        self._port: serial.Serial | None = None

    def _opened(self) -> serial.Serial:
        if self._port is None:
            try:
                self._port = serial.Serial(self.device, baudrate=self.baudrate, timeout=self.timeout,
                                           write_timeout=self.timeout)
            except (serial.SerialException, OSError, ValueError) as exc:
                raise PowerSourceError(f"{self.name}: cannot open the serial port: {exc}") from None
        return self._port

    def read(self) -> UpsReading:
        port = self._opened()
        try:
            port.reset_input_buffer()  # an answer that came too late for the last poll is not this one
            port.write(b"Q1\r")
            line = port.read_until(b"\r", size=128)
        except (serial.SerialException, OSError) as exc:
            self.close()
            raise PowerSourceError(f"{self.name}: {exc}") from None
        if not line:
            raise PowerSourceError(f"{self.name}: no answer to Q1 within {self.timeout:.1f}s")
        if not line.endswith(b"\r"):
            raise PowerSourceError(f"{self.name}: truncated answer {line[:60]!r}")
        return parse_q1(line, self.low, self.full)

    def close(self) -> None:
        if self._port is not None:
            with contextlib.suppress(serial.SerialException, OSError):
                self._port.close()
            self._port = None
