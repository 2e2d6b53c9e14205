"""Operators, sessions and the lock-out rule, as plain data and functions."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

from .errors import Reason, Unauthenticated
from .permissions import grants


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: an operator's session, resolved afresh on every call.

    Permissions are read with the session on each call, so a role changed by
    an admin applies to the very next call of every operator holding it (S3).
    """

    user_id: str
    username: str
    session_id: str
    device_id: str | None
    roles: tuple[str, ...]
    permissions: frozenset[str] = field(default_factory=frozenset)
    expires_at: datetime | None = None

    def may(self, permission: str) -> bool:
        return grants(self.permissions, permission)


@dataclass(frozen=True, slots=True)
class LoginPolicy:
    max_failed_logins: int
    lockout: timedelta
    session_lifetime: timedelta


@dataclass(frozen=True, slots=True)
class Account:
    """What the log-in decision needs to know of a user row."""

    user_id: str
    username: str
    password_hash: str
    disabled: bool
    failed_logins: int
    locked_until: datetime | None


def check_can_log_in(account: Account | None, now: datetime) -> None:
    """Refuse a log-in attempt before the password is even looked at.

    A locked account is refused even with the right password, so guessing
    during a lock-out learns nothing.
    """
    if account is None:
        return  # the password check fails with BAD_CREDENTIALS, same as a wrong password
    if account.disabled:
        raise Unauthenticated("this account is disabled", Reason.ACCOUNT_DISABLED)
    if account.locked_until is not None and account.locked_until > now:
        raise Unauthenticated(
            f"too many failed log-ins: locked until {account.locked_until.isoformat(timespec='seconds')}",
            Reason.ACCOUNT_LOCKED,
        )


def lock_after_failure(failed_logins: int, policy: LoginPolicy, now: datetime) -> datetime | None:
    """The new lock-out time after one more failure (``failed_logins`` includes it)."""
    if failed_logins >= policy.max_failed_logins:
        return now + policy.lockout
    return None
