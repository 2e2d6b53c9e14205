"""The fast stored form of a device secret, shared by the cluster and the site edges that check it alone.

A device secret is a random token, so a keyed hash (HMAC-SHA256) protects it as
well as a password KDF would, at a cost of microseconds (see the server's
``domain/device_secrets``). The cluster writes the form; an edge gets the key in
its feed and checks its own gates with the same function, so the two can never
disagree about the format.
"""

from __future__ import annotations

import hashlib
import hmac

PREFIX = "hmac-sha256$"


def fast_hash(secret: str, key: bytes) -> str:
    """The stored form of ``secret`` under ``key``."""
    return PREFIX + hmac.new(key, secret.encode(), hashlib.sha256).hexdigest()


def is_fast(stored: str) -> bool:
    return stored.startswith(PREFIX)


def verify_fast(stored: str, secret: str, key: bytes) -> bool:
    """Constant-time check of ``secret`` against a fast form (``is_fast(stored)`` must hold)."""
    return hmac.compare_digest(stored, fast_hash(secret, key))
