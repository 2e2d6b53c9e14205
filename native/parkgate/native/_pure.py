"""The pure-Python twin of _native.pyx: same steps, same order, same answers.

It exists for machines where the extension is not built and as the reference
the native module is tested against. It is written to be as fast as honest
Python allows (C-level ``bytes.translate`` for the character checks, PyNaCl's
lowest-level verify binding), so the benchmark compares like with like.
"""

from __future__ import annotations

from collections.abc import Sequence

from nacl.bindings import crypto_sign_open
from nacl.exceptions import BadSignatureError

from ._format import (
    BASE45_ALPHABET_BYTES,
    CODE_BYTES,
    DOMAIN,
    FLAG_ALL_ATTRACTIONS,
    FLAG_NIGHT_TOUR,
    KNOWN_VERSIONS,
    LOWERCASE_BYTES,
    MAX_ATTRACTION_SLOT,
    MINUTES_PER_DAY,
    PAYLOAD_LEN,
    SCHEME,
    SCHEME_BYTES,
    CodeError,
    Reason,
    Result,
    Ticket,
    check_gate_args,
    fields_canonical,
    unpack_payload,
)
from ._keys import Keyring, KeyState

IMPLEMENTATION = "python"

# Base45 character -> digit value, as a bytes.translate table (valid chars only
# ever reach it).
_DIGITS = bytes(BASE45_ALPHABET_BYTES.index(i) if i in BASE45_ALPHABET_BYTES else 0 for i in range(256))
_R = Reason


def _decode(code: str | bytes | bytearray) -> Reason | tuple[bytes, bytes]:
    """Steps 1-10 of docs/ticket-code.md: a reason, or (payload, signature)."""
    if isinstance(code, str):
        if not code.startswith(SCHEME):
            return _R.WRONG_SCHEME
        if not code.isascii():  # a non-ASCII char is never Base45: step 2
            return _R.MALFORMED_CODE
        body = code[len(SCHEME) :].encode("ascii")
    elif isinstance(code, bytes | bytearray):
        if not code.startswith(SCHEME_BYTES):
            return _R.WRONG_SCHEME
        body = bytes(code[len(SCHEME_BYTES) :])
    else:
        raise TypeError(f"a ticket code is str or bytes, not {type(code).__name__}")
    stray = body.translate(None, BASE45_ALPHABET_BYTES)
    if stray:
        if stray.translate(None, LOWERCASE_BYTES):
            return _R.MALFORMED_CODE
        return _R.NON_CANONICAL_ENCODING
    n = len(body)
    if n % 3 == 1:
        return _R.MALFORMED_CODE
    digits = body.translate(_DIGITS)
    out = bytearray()
    full = n - n % 3
    for c, d, e in zip(digits[0:full:3], digits[1:full:3], digits[2:full:3], strict=True):
        v = c + d * 45 + e * 2025
        if v > 0xFFFF:
            return _R.NON_CANONICAL_ENCODING
        out += v.to_bytes(2, "big")
    if n % 3 == 2:
        v = digits[-2] + digits[-1] * 45
        if v > 0xFF:
            return _R.NON_CANONICAL_ENCODING
        out.append(v)
    if not out:
        return _R.WRONG_LENGTH
    if out[0] not in KNOWN_VERSIONS:
        return _R.UNKNOWN_CODE_VERSION
    if len(out) < CODE_BYTES:
        return _R.WRONG_LENGTH
    if len(out) > CODE_BYTES:
        return _R.TRAILING_BYTES
    raw = bytes(out)
    return raw[:PAYLOAD_LEN], raw[PAYLOAD_LEN:]


def _canonical(t: Ticket) -> bool:
    return fields_canonical(
        t.flags, t.persons, t.window_start, t.window_end, t.attractions, t.valid_from, t.valid_until
    )


def _check_keyring(keyring: Keyring) -> None:
    if not isinstance(keyring, Keyring):
        raise TypeError(f"expected a Keyring, not {type(keyring).__name__}")


def _authenticate(code: str | bytes, keyring: Keyring) -> Reason | Ticket:
    """Steps 1-13: a reason, or the payload whose signature verified."""
    parts = _decode(code)
    if isinstance(parts, Reason):
        return parts
    payload, signature = parts
    ticket = unpack_payload(payload)
    if not _canonical(ticket):
        return _R.MALFORMED_CODE
    key = keyring._table.get(ticket.key_id)
    if key is None:
        return _R.UNKNOWN_KEY
    state, public_key = key
    if state == KeyState.REVOKED:
        return _R.REVOKED_KEY
    try:
        crypto_sign_open(signature + DOMAIN + payload, public_key)
    except BadSignatureError:
        return _R.FORGED_CODE
    return ticket


def _rules(t: Ticket, now: int, utc_offset: int, park_id: int, attraction_id: int) -> Reason:
    """Steps 14-18: the checks that need no database."""
    if t.park_id != park_id:
        return _R.NOT_VALID_FOR_PARK
    if now < t.valid_from:
        return _R.NOT_YET_VALID
    if now >= t.valid_until:
        return _R.EXPIRED
    if t.flags & FLAG_NIGHT_TOUR:
        minute = (now + utc_offset) // 60 % MINUTES_PER_DAY
        start, end = t.window_start, t.window_end
        inside = start <= minute < end if start < end else (minute >= start or minute < end)
        if not inside:
            return _R.OUTSIDE_TIME_WINDOW
    if attraction_id and not t.flags & FLAG_ALL_ATTRACTIONS:
        if attraction_id > MAX_ATTRACTION_SLOT or not t.attractions >> (attraction_id - 1) & 1:
            return _R.NOT_VALID_FOR_ATTRACTION
    return _R.OK


def decode(code: str | bytes) -> Ticket:
    """Parse a code without checking its signature. Raises CodeError."""
    parts = _decode(code)
    if isinstance(parts, Reason):
        raise CodeError(parts)
    ticket = unpack_payload(parts[0])
    if not _canonical(ticket):
        raise CodeError(_R.MALFORMED_CODE)
    return ticket


def authenticate(code: str | bytes, keyring: Keyring) -> Ticket:
    """Decode and check key and signature (no gate rules). Raises CodeError."""
    _check_keyring(keyring)
    out = _authenticate(code, keyring)
    if isinstance(out, Reason):
        raise CodeError(out)
    return out


def authenticate_batch(codes: Sequence[str | bytes], keyring: Keyring) -> list[Result]:
    """Decode and check key and signature of each code, in order; no gate rules. ``ok`` = authentic."""
    _check_keyring(keyring)
    results: list[Result] = []
    for code in codes:
        out = _authenticate(code, keyring)
        results.append(Result(False, out, None) if isinstance(out, Reason) else Result(True, _R.OK, out))
    return results


def verify(
    code: str | bytes, keyring: Keyring, *, now: int, utc_offset: int, park_id: int, attraction_id: int = 0
) -> Result:
    """The full gate decision for one code; never raises for a bad code."""
    return verify_batch(
        (code,), keyring, now=now, utc_offset=utc_offset, park_id=park_id, attraction_id=attraction_id
    )[0]


def verify_batch(
    codes: Sequence[str | bytes],
    keyring: Keyring,
    *,
    now: int,
    utc_offset: int,
    park_id: int,
    attraction_id: int = 0,
) -> list[Result]:
    """The full gate decision for each code, in order; never raises for a bad code."""
    now, utc_offset, park_id, attraction_id = check_gate_args(now, utc_offset, park_id, attraction_id)
    _check_keyring(keyring)
    results: list[Result] = []
    for code in codes:
        out = _authenticate(code, keyring)
        if isinstance(out, Reason):
            results.append(Result(False, out, None))
        else:
            reason = _rules(out, now, utc_offset, park_id, attraction_id)
            results.append(Result(reason is _R.OK, reason, out))
    return results
