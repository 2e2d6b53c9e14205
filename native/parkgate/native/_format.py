"""Ticket code format v1: constants and types shared by both implementations.

This module is the single Python source of truth for docs/ticket-code.md. The
pure-Python twin uses it directly; the Cython module reads its constants at
import time and the test-suite checks that the two agree. It depends only
on the standard library and the contract's generated Reason type, so a gate
(which only verifies) never needs more than this package and libsodium.
"""

from __future__ import annotations

import operator
import struct
from typing import NamedTuple

from parkgate.common.reason import Reason

# --- text form ------------------------------------------------------------------
SCHEME = "PG:"
SCHEME_BYTES = SCHEME.encode("ascii")
# RFC 9285: exactly the QR alphanumeric character set, in Base45 digit order.
BASE45_ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ $%*+-./:"
BASE45_ALPHABET_BYTES = BASE45_ALPHABET.encode("ascii")
LOWERCASE_BYTES = b"abcdefghijklmnopqrstuvwxyz"

# --- binary form ----------------------------------------------------------------
# Signed messages are DOMAIN || payload, so a parkgate signature over anything
# else (a receipt, a device token) can never pass as a ticket code.
DOMAIN = b"parkgate/ticket-code\x00"
FORMAT_VERSION = 1
KNOWN_VERSIONS = frozenset({FORMAT_VERSION})
PAYLOAD_LEN = 36
SIGNATURE_LEN = 64
PUBLIC_KEY_LEN = 32
SEED_LEN = 32
CODE_BYTES = PAYLOAD_LEN + SIGNATURE_LEN  # 100
CODE_LEN = len(SCHEME) + CODE_BYTES // 2 * 3  # 153 characters

# version B, key_id H, serial (H hi, I lo), product I, park H, from I, until I,
# flags B, persons B, window (B hi, H lo), attractions Q -- 36 bytes, no padding.
PAYLOAD_STRUCT = struct.Struct(">BHHIIHIIBBBHQ")
assert PAYLOAD_STRUCT.size == PAYLOAD_LEN

FLAG_NIGHT_TOUR = 0x01
FLAG_MULTI_PERSON = 0x02
FLAG_ALL_ATTRACTIONS = 0x04
FLAGS_KNOWN = FLAG_NIGHT_TOUR | FLAG_MULTI_PERSON | FLAG_ALL_ATTRACTIONS

MINUTES_PER_DAY = 1440
WINDOW_BITS = 12
MAX_ATTRACTION_SLOT = 64
MAX_KEY_ID = 0xFFFF
MAX_SERIAL = (1 << 48) - 1
MAX_PRODUCT_ID = 0xFFFFFFFF
MAX_PARK_ID = 0xFFFF
MAX_TIME = 0xFFFFFFFF
MAX_PERSONS = 0xFF
# Wider than any real zone (UTC-12..UTC+14) but bounded, so C arithmetic on
# now + offset cannot overflow.
MAX_UTC_OFFSET = 86_399
MAX_NOW = 1 << 62


# The one Reason type of every parkgate package (generated from the contract's reason.proto).
# The code core gives only these; the Cython module reports them as small ints:
# indexes into REASONS, whose order it checks at import.
REASONS: tuple[Reason, ...] = (
    Reason.OK, Reason.MALFORMED_CODE, Reason.WRONG_SCHEME, Reason.NON_CANONICAL_ENCODING, Reason.WRONG_LENGTH,
    Reason.TRAILING_BYTES, Reason.UNKNOWN_CODE_VERSION, Reason.UNKNOWN_KEY, Reason.REVOKED_KEY, Reason.FORGED_CODE,
    Reason.EXPIRED, Reason.NOT_YET_VALID, Reason.OUTSIDE_TIME_WINDOW, Reason.NOT_VALID_FOR_ATTRACTION,
    Reason.NOT_VALID_FOR_PARK,
)


class CodeError(ValueError):
    """A code was refused by :func:`decode` or :func:`authenticate`.

    The only exception the decoder raises for bad input; ``reason`` says why.
    It subclasses ValueError because a bad code is a bad value, not a bug.
    """

    def __init__(self, reason: Reason) -> None:
        super().__init__(reason.value)
        self.reason = reason

    def __reduce__(self) -> tuple[type[CodeError], tuple[Reason]]:
        return (type(self), (self.reason,))


class Ticket(NamedTuple):
    """The decoded payload of a code (all plain ints, see docs/ticket-code.md).

    A NamedTuple rather than a dataclass: the native batch builds one per
    valid code, and tuple construction is the cheapest Python object there is.
    """

    version: int
    key_id: int
    serial: int
    product_id: int
    park_id: int
    valid_from: int
    valid_until: int
    flags: int
    persons: int
    window_start: int
    window_end: int
    attractions: int

    @property
    def night_tour(self) -> bool:
        return bool(self.flags & FLAG_NIGHT_TOUR)

    @property
    def multi_person(self) -> bool:
        return bool(self.flags & FLAG_MULTI_PERSON)

    @property
    def all_attractions(self) -> bool:
        return bool(self.flags & FLAG_ALL_ATTRACTIONS)

    @property
    def night_window(self) -> tuple[int, int] | None:
        """(start, end) minutes since local midnight, or None for no window."""
        return (self.window_start, self.window_end) if self.night_tour else None

    @property
    def attraction_slots(self) -> frozenset[int]:
        """Attraction slots (1-64) in the scope; see also ``all_attractions``."""
        mask = self.attractions
        return frozenset(i + 1 for i in range(MAX_ATTRACTION_SLOT) if mask >> i & 1)

    @classmethod
    def build(
        cls,
        *,
        key_id: int,
        serial: int,
        product_id: int,
        park_id: int,
        valid_from: int,
        valid_until: int,
        persons: int = 1,
        night_window: tuple[int, int] | None = None,
        attractions: frozenset[int] | set[int] | tuple[int, ...] | list[int] = (),
        all_attractions: bool = False,
    ) -> Ticket:
        """Make the one canonical payload for these facts (flags derived, not given)."""
        mask = 0
        for slot in attractions:
            if not 1 <= slot <= MAX_ATTRACTION_SLOT:
                raise ValueError(f"attraction slot {slot} outside 1..{MAX_ATTRACTION_SLOT}")
            mask |= 1 << (slot - 1)
        if all_attractions and mask:
            raise ValueError("all_attractions and an attraction list exclude each other")
        flags = (FLAG_ALL_ATTRACTIONS if all_attractions else 0) | (FLAG_MULTI_PERSON if persons > 1 else 0)
        start = end = 0
        if night_window is not None:
            flags |= FLAG_NIGHT_TOUR
            start, end = night_window
        return cls(
            FORMAT_VERSION,
            key_id,
            serial,
            product_id,
            park_id,
            valid_from,
            valid_until,
            flags,
            persons,
            start,
            end,
            mask,
        )


class Result(NamedTuple):
    """One gate decision. ``ticket`` is set only once the signature verified."""

    ok: bool
    reason: Reason
    ticket: Ticket | None


def fields_canonical(
    flags: int,
    persons: int,
    window_start: int,
    window_end: int,
    attractions: int,
    valid_from: int,
    valid_until: int,
) -> bool:
    """Step 10 of the decoder: is this the one canonical spelling of these facts?

    Redundant fields (MULTI_PERSON vs persons, window without NIGHT_TOUR, a mask
    beside ALL_ATTRACTIONS) must agree, so no two payloads mean the same thing.
    """
    if flags & ~FLAGS_KNOWN:
        return False
    if persons < 1 or bool(flags & FLAG_MULTI_PERSON) != (persons > 1):
        return False
    if flags & FLAG_NIGHT_TOUR:
        if window_start >= MINUTES_PER_DAY or window_end >= MINUTES_PER_DAY or window_start == window_end:
            return False
    elif window_start or window_end:
        return False
    if flags & FLAG_ALL_ATTRACTIONS and attractions:
        return False
    return valid_from < valid_until


def pack_payload(ticket: Ticket) -> bytes:
    """Serialize a payload for signing; refuses anything the decoder would refuse."""
    if ticket.version != FORMAT_VERSION:
        raise ValueError(f"can only sign format version {FORMAT_VERSION}")
    limits = (
        ("key_id", 1, MAX_KEY_ID),
        ("serial", 1, MAX_SERIAL),
        ("product_id", 0, MAX_PRODUCT_ID),
        ("park_id", 1, MAX_PARK_ID),
        ("valid_from", 0, MAX_TIME),
        ("valid_until", 0, MAX_TIME),
        ("flags", 0, 0xFF),
        ("persons", 1, MAX_PERSONS),
        ("window_start", 0, MINUTES_PER_DAY - 1),
        ("window_end", 0, MINUTES_PER_DAY - 1),
        ("attractions", 0, (1 << MAX_ATTRACTION_SLOT) - 1),
    )
    for name, low, high in limits:
        value = operator.index(getattr(ticket, name))
        if not low <= value <= high:
            raise ValueError(f"{name}={value} outside {low}..{high}")
    t = ticket
    if not fields_canonical(
        t.flags, t.persons, t.window_start, t.window_end, t.attractions, t.valid_from, t.valid_until
    ):
        raise ValueError(f"not a canonical payload: {ticket!r}")
    window = t.window_start << WINDOW_BITS | t.window_end
    return PAYLOAD_STRUCT.pack(
        t.version,
        t.key_id,
        t.serial >> 32,
        t.serial & 0xFFFFFFFF,
        t.product_id,
        t.park_id,
        t.valid_from,
        t.valid_until,
        t.flags,
        t.persons,
        window >> 16,
        window & 0xFFFF,
        t.attractions,
    )


def unpack_payload(payload: bytes) -> Ticket:
    """Parse 36 payload bytes (no checks: the decoder checks, see _pure)."""
    (v, key, s_hi, s_lo, product, park, start, until, flags, persons, w_hi, w_lo, mask) = (
        PAYLOAD_STRUCT.unpack(payload)
    )
    window = w_hi << 16 | w_lo
    return Ticket(
        v,
        key,
        s_hi << 32 | s_lo,
        product,
        park,
        start,
        until,
        flags,
        persons,
        window >> WINDOW_BITS,
        window & ((1 << WINDOW_BITS) - 1),
        mask,
    )


def base45_encode(data: bytes) -> str:
    """RFC 9285 Base45 (the canonical spelling; used by the signer and tests)."""
    a = BASE45_ALPHABET
    out: list[str] = []
    for i in range(0, len(data) - 1, 2):
        n = data[i] << 8 | data[i + 1]
        n, c = divmod(n, 45)
        e, d = divmod(n, 45)
        out += (a[c], a[d], a[e])
    if len(data) % 2:
        d, c = divmod(data[-1], 45)
        out += (a[c], a[d])
    return "".join(out)


def check_gate_args(now: int, utc_offset: int, park_id: int, attraction_id: int) -> tuple[int, int, int, int]:
    """Validate the caller's side of a gate decision (TypeError / ValueError).

    Both implementations call this, so they reject the same arguments: a
    float ``now`` or an out-of-range offset is a bug in the caller, not a code.
    """
    now, utc_offset = operator.index(now), operator.index(utc_offset)
    park_id, attraction_id = operator.index(park_id), operator.index(attraction_id)
    if not 0 <= now < MAX_NOW:
        raise ValueError(f"now={now} outside 0..2**62")
    if not -MAX_UTC_OFFSET <= utc_offset <= MAX_UTC_OFFSET:
        raise ValueError(f"utc_offset={utc_offset} is not a UTC offset in seconds")
    if not 0 <= park_id <= MAX_PARK_ID:
        raise ValueError(f"park_id={park_id} outside 0..{MAX_PARK_ID}")
    if not 0 <= attraction_id <= 0xFFFF:
        raise ValueError(f"attraction_id={attraction_id} outside 0..65535")
    return now, utc_offset, park_id, attraction_id
