"""Cutting a serial scanner's byte stream into codes: pure logic, no I/O.

A serial barcode scanner sends each code as one line: an optional prefix, the
code, an optional suffix, a terminator (factory default CR; CR LF or LF when
configured). On a real line there is also noise: a half line when the
scanner is power-cycled, bytes at the wrong baud rate, a misread that floods
the buffer. ``FrameDecoder`` turns any byte sequence into ``Scan`` results,
never raises, and never lets one bad line swallow the next good one:

* a line longer than ``max_length`` is dropped once (``OVERLONG``) and the
  decoder resynchronises on the next terminator;
* a line with bytes outside printable ASCII is ``GARBAGE``;
* a configured prefix/suffix that is missing makes the line ``BAD_FRAME``;
* a partial line with no byte for ``frame_timeout`` seconds is ``INCOMPLETE``
  (else it would be glued to the front of the next code);
* empty lines (e.g. the LF of a CR LF when only CR is configured) are ignored.

Ticket codes (docs/ticket-code.md) are printable ASCII, so this is no loss.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Literal

Terminator = Literal["CR", "LF", "CRLF", "ANY"]

_TERMINATORS: dict[str, bytes] = {"CR": b"\r", "LF": b"\n", "CRLF": b"\r\n"}


class ScanProblem(enum.StrEnum):
    """Why a line was not handed out as a code."""

    OVERLONG = "OVERLONG"
    GARBAGE = "GARBAGE"
    BAD_FRAME = "BAD_FRAME"
    INCOMPLETE = "INCOMPLETE"


@dataclass(frozen=True)
class Framing:
    """How a scanner frames its codes; the defaults match most scanners' serial factory setup.

    ``prefix``/``suffix`` are stripped when present and required when set
    (a scanner set up to send STX...ETX must not pass a line without them);
    they may hold control characters such as STX/ETX, but not CR or LF.
    """

    terminator: Terminator = "CR"
    prefix: str = ""
    suffix: str = ""
    max_length: int = 512
    frame_timeout: float = 0.5

    def __post_init__(self) -> None:
        if self.terminator not in ("CR", "LF", "CRLF", "ANY"):
            raise ValueError(f"terminator must be CR, LF, CRLF or ANY, not {self.terminator!r}")
        if self.max_length < 1:
            raise ValueError("max_length must be at least 1")
        for name in ("prefix", "suffix"):
            value = getattr(self, name)
            if any(c in "\r\n" for c in value) or not value.isascii():
                raise ValueError(f"{name} must be ASCII without CR/LF")


@dataclass(frozen=True)
class Scan:
    """One line from the scanner: a code, or a problem with the raw bytes kept for the log."""

    code: str | None
    problem: ScanProblem | None = None
    raw: bytes = b""

    @property
    def ok(self) -> bool:
        return self.problem is None


class FrameDecoder:
    """Feed bytes as they arrive; get the complete lines as ``Scan`` results."""

    def __init__(self, framing: Framing) -> None:
        self.framing = framing
        self._buffer = bytearray()
        self._overlong = False  # dropping bytes until the next terminator
        self._last_byte_at: float | None = None
        limit = len(framing.prefix) + framing.max_length + len(framing.suffix)
        self._limit = limit

    def feed(self, data: bytes, now: float = 0.0) -> list[Scan]:
        """Decode ``data``; ``now`` (monotonic seconds) drives the frame timeout."""
        results = self.expire(now)
        if data:
            self._last_byte_at = now
        for byte in data:
            if self._is_terminator_byte(byte):
                results.extend(self._end_line(byte))
                continue
            if self._overlong or (not self._buffer and byte in (0x0D, 0x0A)):
                continue  # dropping an overlong line; or the stray half of a CR LF pair
            self._buffer.append(byte)
            if len(self._buffer) > self._limit:
                results.append(Scan(None, ScanProblem.OVERLONG, bytes(self._buffer[:64])))
                self._buffer.clear()
                self._overlong = True
        return results

    def expire(self, now: float) -> list[Scan]:
        """Give up on a partial line that has waited longer than the frame timeout."""
        if (
            self._last_byte_at is not None
            and now - self._last_byte_at > self.framing.frame_timeout
            and (self._buffer or self._overlong)
        ):
            raw = bytes(self._buffer)
            was_overlong = self._overlong
            self._buffer.clear()
            self._overlong = False
            if not was_overlong:
                return [Scan(None, ScanProblem.INCOMPLETE, raw)]
        return []

    @property
    def pending(self) -> bool:
        """True while a partial line waits for its terminator."""
        return bool(self._buffer) or self._overlong

    def _is_terminator_byte(self, byte: int) -> bool:
        term = self.framing.terminator
        if term == "ANY":
            return byte in (0x0D, 0x0A)
        if term == "CRLF":
            # A line ends at LF; a CR right before it is part of the terminator (stripped below).
            return byte == 0x0A
        return byte == _TERMINATORS[term][0]

    def _end_line(self, byte: int) -> list[Scan]:
        if self._overlong:
            self._overlong = False
            self._buffer.clear()
            return []
        raw = bytes(self._buffer)
        self._buffer.clear()
        line = raw.strip(b"\r\n")
        if not line:
            return []
        return [self._decode_line(line, raw)]

    def _decode_line(self, line: bytes, raw: bytes) -> Scan:
        prefix = self.framing.prefix.encode("ascii")
        suffix = self.framing.suffix.encode("ascii")
        if prefix:
            if not line.startswith(prefix):
                return Scan(None, ScanProblem.BAD_FRAME, raw)
            line = line[len(prefix) :]
        if suffix:
            if not line.endswith(suffix):
                return Scan(None, ScanProblem.BAD_FRAME, raw)
            line = line[: -len(suffix)]
        if not line:
            return Scan(None, ScanProblem.BAD_FRAME, raw)
        if any(b < 0x20 or b > 0x7E for b in line):
            return Scan(None, ScanProblem.GARBAGE, raw)
        if len(line) > self.framing.max_length:
            return Scan(None, ScanProblem.OVERLONG, raw[:64])
        return Scan(line.decode("ascii"), None, raw)
