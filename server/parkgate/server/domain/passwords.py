"""Password rules and hashing (S3, S4).

Hashes are argon2id through argon2-cffi, the reference implementation's
binding: we never write our own KDF. Hashing costs tens of milliseconds on
purpose, so callers run it off the event loop (``asyncio.to_thread``).
"""

from __future__ import annotations

import secrets
import string

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from .errors import InvalidArgument, Reason

_HASHER = PasswordHasher()  # argon2id, RFC 9106 low-memory profile

# A hash to verify against when the user does not exist, so a wrong user name
# costs as long as a wrong password and does not reveal which names exist.
_DUMMY_HASH = _HASHER.hash(secrets.token_hex(16))


def hash_password(password: str) -> str:
    return _HASHER.hash(password)


def verify_password(password_hash: str | None, password: str) -> bool:
    try:
        return _HASHER.verify(password_hash or _DUMMY_HASH, password) and password_hash is not None
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


def needs_rehash(password_hash: str) -> bool:
    return _HASHER.check_needs_rehash(password_hash)


def check_policy(password: str, *, username: str, min_length: int) -> None:
    """Refuse passwords that are short, equal to the user name, or one character repeated."""
    if len(password) < min_length:
        raise InvalidArgument(f"the password needs at least {min_length} characters", Reason.PASSWORD_TOO_WEAK)
    if password.lower() == username.lower() or len(set(password)) < 3:
        raise InvalidArgument("the password is too easy to guess", Reason.PASSWORD_TOO_WEAK)


def generate_password(length: int = 16) -> str:
    """A random password for a first admin or a reset, easy to read aloud (no 0/O, 1/l)."""
    alphabet = "".join(c for c in string.ascii_letters + string.digits if c not in "0O1lI")
    return "".join(secrets.choice(alphabet) for _ in range(length))
