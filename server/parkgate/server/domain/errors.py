"""The one exception the domain raises, carrying a stable reason code.

Exception hierarchy::

    ParkgateError            any refusal or failure with a Reason
    ├── NotFound             the thing named does not exist
    ├── Conflict             it exists, or the state does not allow it
    ├── Unauthenticated      no valid session or device credentials
    ├── Forbidden            authenticated, but not allowed
    ├── InvalidArgument      the request itself is wrong
    └── Unavailable          a dependency (the database) is down: retry later

The reason codes are the contract's one ``Reason`` type (``parkgate.common.reason``,
generated from ``proto/parkgate/v1/reason.proto``), so the set of refusals is the same for the server, the clients and the docs.
The rpc layer maps each class to a gRPC status code; the reason travels as the
``parkgate-reason`` trailing metadata.
"""

from __future__ import annotations

from parkgate.common.reason import Reason

__all__ = ["Conflict", "Forbidden", "InvalidArgument", "NotFound", "ParkgateError", "Reason", "Unauthenticated",
           "Unavailable"]


class ParkgateError(Exception):
    """A refusal with a stable reason; the message is for people."""

    default_reason: Reason = Reason.INTERNAL

    def __init__(self, message: str, reason: Reason | None = None, **details: str) -> None:
        super().__init__(message)
        self.reason: Reason = self.default_reason if reason is None else reason
        self.message = message
        self.details = details

    @property
    def reason_name(self) -> str:
        """The stable name, e.g. ``"ALREADY_USED"`` (a Reason is its own name)."""
        return self.reason.value

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.reason_name}: {self.message})"


class NotFound(ParkgateError):
    default_reason = Reason.NOT_FOUND


class Conflict(ParkgateError):
    default_reason = Reason.CONFLICT


class Unauthenticated(ParkgateError):
    default_reason = Reason.UNAUTHENTICATED


class Forbidden(ParkgateError):
    default_reason = Reason.PERMISSION_DENIED


class InvalidArgument(ParkgateError):
    default_reason = Reason.INVALID_ARGUMENT


class Unavailable(ParkgateError):
    default_reason = Reason.DATABASE_UNAVAILABLE


class LockBusy(Unavailable):
    """A statement gave up waiting for a table lock (its ``lock_timeout``): nothing changed, and the same
    work a moment later normally gets through. Jobs that choose a short lock timeout so as never to stall the
    gates (partition maintenance) catch this one to try again, rather than every database failure."""
