"""Device secrets are random tokens: a fast keyed hash protects them as well as argon2 would.

argon2id exists to make guessing human passwords expensive; a device secret
is 192 random bits, which nobody guesses, so its stored form only has to be
one-way. HMAC-SHA256 with a server-side key (``auth.device_secret_key``; a
fixed label when unset) costs microseconds, so two hundred gates reconnecting
at once after a restart are authenticated in a moment instead of queueing
behind a memory-hard KDF. Hashes written before this change are argon2id:
they still verify (slowly) and are rewritten to the fast form on the first
successful check, so no device has to be re-registered.
"""

from __future__ import annotations

from parkgate.common import device_secret

from . import passwords

PREFIX = device_secret.PREFIX
_DEFAULT_KEY = b"parkgate device secret v1"


def key_bytes(key: str) -> bytes:
    """The HMAC key a setting names (a fixed label when unset); a site edge gets it to check secrets alone."""
    return key.encode() if key else _DEFAULT_KEY


def hash_secret(secret: str, key: str = "") -> str:
    """The stored form of a device secret."""
    return device_secret.fast_hash(secret, key_bytes(key))


is_fast = device_secret.is_fast


def verify_fast(stored: str, secret: str, key: str = "") -> bool:
    """Constant-time comparison of a fast hash (``is_fast(stored)`` must hold)."""
    return device_secret.verify_fast(stored, secret, key_bytes(key))


def verify_legacy(stored: str, secret: str) -> bool:
    """An argon2id hash from before: slow, run it off the event loop."""
    return passwords.verify_password(stored, secret)
