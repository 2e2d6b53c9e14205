"""Which device a call's client certificate names, and whether that may make the call (mTLS, docs/security.md).

The TLS handshake has already checked the certificate against the device CA;
what it cannot know is which device the call then *claims* (the gate's hello,
the window's log-in, the edge's metadata). A certificate names one device, so
a call claiming another is refused ``DEVICE_CERT_MISMATCH`` before any secret
is looked at: a stolen certificate works for its own device only, and a stolen
secret without the certificate (with ``server.require_device_cert``) for none.

The rpc layer reads the name from the connection (it alone knows gRPC) and
sets :data:`presented_device` for the call; the services call :func:`check`.
"""

from __future__ import annotations

from contextvars import ContextVar

from .errors import Reason, Unauthenticated

#: The device the call's verified client certificate names; None when it presented none.
presented_device: ContextVar[str | None] = ContextVar("parkgate_presented_device", default=None)


def check(claimed: str, *, required: bool) -> None:
    """Refuse a call claiming ``claimed`` when its certificate names another device, or names none and one is
    ``required``."""
    named = presented_device.get()
    if named is None:
        if required:
            raise Unauthenticated(f"device {claimed!r} presented no client certificate; this server takes devices "
                                  "only with one (enrol it: parkgate device enroll)", Reason.DEVICE_CERT_REQUIRED)
        return
    if named != claimed:
        raise Unauthenticated(f"the client certificate is device {named!r}'s, the call claims {claimed!r}",
                              Reason.DEVICE_CERT_MISMATCH)
