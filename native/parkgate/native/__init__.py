"""Ticket-code core: decoding, Ed25519 verification and rule checks (native + pure Python).

The format is docs/ticket-code.md. Two implementations give the same answer
for every input, as psycopg does with its C and Python layers:

* ``native`` -- the Cython extension ``_native`` calling libsodium directly;
  batches run without the GIL;
* ``python`` -- ``_pure``, PyNaCl for the signature.

At import the native one is used when it is built. ``PARKGATE_NATIVE_IMPL``
forces one: ``native`` (an ImportError if it is not built: never a silent
fallback on a gate that was meant to be fast) or ``python``.
``IMPLEMENTATION`` says which one is in use.

Signing (``issue``/``sign``, ``SigningKey``) is server-side only and always
pure Python: it is not the hot path. This package imports nothing from the
server, grpc or psycopg, so gates can use it alone.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Sequence
from types import ModuleType
from typing import Final, Literal

from ._format import CODE_LEN, FORMAT_VERSION, SCHEME, CodeError, Reason, Result, Ticket
from ._keys import KeyEntry, Keyring, KeyState, SigningKey, issue, sign

__all__ = [
    "CODE_LEN",
    "FORMAT_VERSION",
    "IMPLEMENTATION",
    "SCHEME",
    "CodeError",
    "KeyEntry",
    "KeyState",
    "Keyring",
    "Reason",
    "Result",
    "SigningKey",
    "Ticket",
    "authenticate",
    "authenticate_batch",
    "decode",
    "get_implementation",
    "issue",
    "sign",
    "verify",
    "verify_batch",
]

ENV_VAR: Final = "PARKGATE_NATIVE_IMPL"
ImplName = Literal["native", "python"]


def get_implementation(name: ImplName) -> ModuleType:
    """The module of one implementation (``decode``, ``authenticate``, ``verify``, ``verify_batch``).

    For tests and benchmarks that need both side by side; production code
    uses the functions of this package.
    """
    if name == "python":
        return importlib.import_module(f"{__name__}._pure")
    if name == "native":
        try:
            return importlib.import_module(f"{__name__}._native")
        except ImportError as exc:
            raise ImportError(
                f"the native ticket-code implementation ({__name__}._native) is not built or does not "
                f"load: {exc}. Build it with `pip install -e .` (needs Cython and libsodium-dev), "
                f"or set {ENV_VAR}=python."
            ) from exc
    raise ValueError(f"unknown implementation {name!r}: expected 'native' or 'python'")


def _select() -> ModuleType:
    wanted = os.environ.get(ENV_VAR, "").strip().lower()
    if wanted in ("native", "python"):
        return get_implementation(wanted)  # type: ignore[arg-type]
    if wanted:
        raise ImportError(f"{ENV_VAR}={wanted!r}: expected 'native' or 'python' (or unset)")
    try:
        return get_implementation("native")
    except ImportError:
        return get_implementation("python")


_impl = _select()

#: "native" or "python": the implementation behind the functions below.
IMPLEMENTATION: Final[str] = _impl.IMPLEMENTATION


def decode(code: str | bytes) -> Ticket:
    """Parse a code's payload WITHOUT checking its signature (never trust it for access).

    Raises CodeError(reason) for steps 1-10 of docs/ticket-code.md.
    """
    return _impl.decode(code)  # type: ignore[no-any-return]


def authenticate(code: str | bytes, keyring: Keyring) -> Ticket:
    """Decode and check the key and the signature; the payload can then be trusted.

    No gate rules (park, dates, window, attraction): for the server, e.g. to
    find the ticket behind a code. Raises CodeError(reason).
    """
    return _impl.authenticate(code, keyring)  # type: ignore[no-any-return]


def authenticate_batch(codes: Sequence[str | bytes], keyring: Keyring) -> list[Result]:
    """``authenticate`` for many codes, in order, never raising for a bad code: the gates' hot path.

    ``Result.ok`` means the code is ours (known, unrevoked key; signature
    verifies) and ``Result.ticket`` its trusted payload; every admission rule
    is then the decision engine's (:mod:`parkgate.rules`). The native
    implementation verifies the batch without the GIL.
    """
    return _impl.authenticate_batch(codes, keyring)  # type: ignore[no-any-return]


def verify(
    code: str | bytes, keyring: Keyring, *, now: int, utc_offset: int, park_id: int, attraction_id: int = 0
) -> Result:
    """The database-free gate decision for one code; never raises for a bad code.

    ``now``: UTC epoch seconds; ``utc_offset``: the park's UTC offset in seconds
    at ``now``; ``park_id``: the gate's park number; ``attraction_id``: its
    attraction slot, 0 for the park entrance.
    """
    return _impl.verify(  # type: ignore[no-any-return]
        code, keyring, now=now, utc_offset=utc_offset, park_id=park_id, attraction_id=attraction_id
    )


def verify_batch(
    codes: Sequence[str | bytes],
    keyring: Keyring,
    *,
    now: int,
    utc_offset: int,
    park_id: int,
    attraction_id: int = 0,
) -> list[Result]:
    """``verify`` for many codes at one gate, in order; the hot path.

    The native implementation verifies the batch without the GIL, so batches
    in two threads use two cores. Raises only for bad arguments (TypeError,
    ValueError), never for a bad code.
    """
    return _impl.verify_batch(  # type: ignore[no-any-return]
        codes, keyring, now=now, utc_offset=utc_offset, park_id=park_id, attraction_id=attraction_id
    )
