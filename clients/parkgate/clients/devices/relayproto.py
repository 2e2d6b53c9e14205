"""The relay board line protocol, version 1 (docs/devices.md): encoding and parsing only.

Shared by the host side (:mod:`.relay`) and the board simulator
(:mod:`.relay_sim`) so both speak exactly the same protocol. Lines are ASCII
(the display text is UTF-8), end with LF, and a CR before the LF is ignored.
Every host command carries a sequence number 1-65535 that the board echoes in
its answer, so an answer is never matched to the wrong command and a
confirmation of passage names the OPEN it belongs to.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from .errors import ProtocolError

PROTOCOL_VERSION = 1
MAX_LINE_BYTES = 256
MAX_DISPLAY_CHARS = 64
MAX_SEQ = 65535
DEFAULT_OPEN_MS = 5000
OPEN_MS_RANGE = (100, 60000)

#: Commands the host sends (verb -> what follows the sequence number).
HOST_VERBS = ("OPEN", "HOLD", "CLOSE", "SHOW", "STATUS", "PING", "SWALLOW")
#: SWALLOW (S21): the card collector takes the card in its slot into its bin; the board answers OK and then
#: CARD SWALLOWED, or ERR FULL when its bin is full (the card stays in the slot for the attendant).


class EventKind(enum.StrEnum):
    """Unsolicited messages from the board."""

    READY = "READY"  # the board (re)started; detail = firmware version
    PASSED = "PASSED"  # a person passed; seq = the OPEN it used, 0 = a passage no OPEN granted
    NOT_PASSED = "NOTPASSED"  # the OPEN with seq timed out (or was cancelled): nobody passed
    EMERGENCY_ON = "EMERGENCY ON"  # local emergency input active: the board holds the gate open itself
    EMERGENCY_OFF = "EMERGENCY OFF"
    POWER_LOST = "POWER LOST"  # mains lost, the board runs on its reserve
    POWER_OK = "POWER OK"
    CARD_SWALLOWED = "CARD SWALLOWED"  # the collector took a single-use card into its bin (S21)


class LockState(enum.StrEnum):
    LOCKED = "LOCKED"
    OPEN_ONCE = "OPEN_ONCE"
    HELD = "HELD"


@dataclass(frozen=True)
class RelayEvent:
    kind: EventKind
    seq: int | None = None
    detail: str = ""


@dataclass(frozen=True)
class RelayState:
    """The board's answer to STATUS."""

    lock: LockState
    emergency: bool
    on_battery: bool
    pending_opens: int


@dataclass(frozen=True)
class Ack:
    seq: int


@dataclass(frozen=True)
class Refusal:
    seq: int
    code: str
    text: str


@dataclass(frozen=True)
class StateReply:
    seq: int
    state: RelayState


BoardMessage = Ack | Refusal | StateReply | RelayEvent


class BadCommand(Exception):
    """A host line the board refuses: ``code`` is SYNTAX, UNKNOWN or RANGE; ``seq`` 0 if unreadable."""

    def __init__(self, code: str, seq: int = 0) -> None:
        super().__init__(code)
        self.code = code
        self.seq = seq


@dataclass(frozen=True)
class HostCommand:
    verb: str
    seq: int
    args: tuple[str, ...] = ()
    text: str = ""  # SHOW only


# ---- host -> board ---------------------------------------------------------------------------


def clean_display_text(text: str) -> str:
    """What a display line may hold: no control characters, at most MAX_DISPLAY_CHARS characters."""
    cleaned = "".join(" " if (ord(c) < 0x20 or ord(c) == 0x7F) else c for c in text)
    return cleaned[:MAX_DISPLAY_CHARS].rstrip()


def format_command(verb: str, seq: int, *args: str | int) -> bytes:
    if verb not in HOST_VERBS:
        raise ValueError(f"unknown relay command {verb!r}")
    if not 1 <= seq <= MAX_SEQ:
        raise ValueError(f"sequence number {seq} outside 1..{MAX_SEQ}")
    if verb == "SHOW":
        text = clean_display_text(" ".join(str(a) for a in args))
        line = f"SHOW {seq} {text}" if text else f"SHOW {seq}"
    else:
        line = " ".join([verb, str(seq), *(str(a) for a in args)])
    data = line.encode("utf-8") + b"\n"
    if len(data) > MAX_LINE_BYTES:
        raise ValueError("relay command line too long")
    return data


def parse_host_line(line: str) -> HostCommand:
    """Parse a command line at the board; raises BadCommand."""
    verb, _, rest = line.partition(" ")
    seq_text, _, tail = rest.partition(" ")
    seq = _parse_seq(seq_text)
    if verb not in HOST_VERBS:
        raise BadCommand("UNKNOWN", seq or 0)
    if seq is None:
        raise BadCommand("SYNTAX")
    if verb == "SHOW":
        return HostCommand(verb, seq, text=clean_display_text(tail))
    args = tuple(tail.split()) if tail else ()
    if verb == "OPEN":
        if len(args) > 1 or (args and not args[0].isdigit()):
            raise BadCommand("SYNTAX", seq)
        if args and not OPEN_MS_RANGE[0] <= int(args[0]) <= OPEN_MS_RANGE[1]:
            raise BadCommand("RANGE", seq)
    elif args:
        raise BadCommand("SYNTAX", seq)
    return HostCommand(verb, seq, args)


# ---- board -> host ---------------------------------------------------------------------------


def format_ack(seq: int) -> bytes:
    return f"OK {seq}\n".encode()


def format_refusal(seq: int, code: str, text: str = "") -> bytes:
    return (f"ERR {seq} {code} {text}".rstrip() + "\n").encode()


def format_state(seq: int, state: RelayState) -> bytes:
    return (
        f"STATE {seq} {state.lock} EMERGENCY={int(state.emergency)} "
        f"POWER={'BATTERY' if state.on_battery else 'MAINS'} PENDING={state.pending_opens}\n"
    ).encode()


def format_event(event: RelayEvent) -> bytes:
    if event.kind in (EventKind.PASSED, EventKind.NOT_PASSED):
        return f"{event.kind} {event.seq or 0}\n".encode()
    if event.kind is EventKind.READY:
        return f"READY {event.detail or PROTOCOL_VERSION}\n".encode()
    return f"{event.kind}\n".encode()


def parse_board_line(line: str) -> BoardMessage:
    """Parse one line from the board; raises ProtocolError for anything not in the protocol."""
    words = line.split()
    if not words:
        raise ProtocolError("empty line")
    head = words[0]
    try:
        if head == "OK" and len(words) == 2:
            return Ack(_require_seq(words[1]))
        if head == "ERR" and len(words) >= 3:
            return Refusal(_require_seq(words[1]), words[2], " ".join(words[3:]))
        if head == "STATE" and len(words) == 6:
            return StateReply(_require_seq(words[1]), _parse_state(words[2:]))
        if head in ("PASSED", "NOTPASSED") and len(words) == 2:
            seq = int(words[1]) if words[1].isdigit() else -1
            if not 0 <= seq <= MAX_SEQ:
                raise ValueError(words[1])
            return RelayEvent(EventKind(head), seq)
        if head == "READY" and len(words) <= 2:
            return RelayEvent(EventKind.READY, detail=words[1] if len(words) == 2 else "")
        if len(words) == 2 and f"{head} {words[1]}" in EventKind._value2member_map_:
            return RelayEvent(EventKind(f"{head} {words[1]}"))
    except ValueError as exc:
        raise ProtocolError(f"bad relay board line {line[:80]!r}: {exc}") from exc
    raise ProtocolError(f"unknown relay board line {line[:80]!r}")


def _parse_state(fields: list[str]) -> RelayState:
    lock, emergency, power, pending = fields
    if not (
        emergency.startswith("EMERGENCY=") and power.startswith("POWER=") and pending.startswith("PENDING=")
    ):
        raise ValueError("malformed STATE")
    power_value = power.removeprefix("POWER=")
    if power_value not in ("MAINS", "BATTERY") or emergency not in ("EMERGENCY=0", "EMERGENCY=1"):
        raise ValueError("malformed STATE")
    return RelayState(
        lock=LockState(lock),
        emergency=emergency == "EMERGENCY=1",
        on_battery=power_value == "BATTERY",
        pending_opens=int(pending.removeprefix("PENDING=")),
    )


def _parse_seq(text: str) -> int | None:
    if not text.isdigit() or not text.isascii():
        return None
    value = int(text)
    return value if 1 <= value <= MAX_SEQ else None


def _require_seq(text: str) -> int:
    seq = _parse_seq(text)
    if seq is None:
        raise ValueError(f"bad sequence number {text!r}")
    return seq
