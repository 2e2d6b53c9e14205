"""Device enrolment: a device proven by its secret gets a client certificate for the key it made (mTLS).

The device makes its private key and a CSR itself (``parkgate device enroll``)
and sends only the CSR: the key never crosses the network and the server
never holds it. The certificate names the device that proved itself (its
common name and a ``urn:parkgate:device:`` URI), whatever the CSR asked for,
and lives ``server.device_cert_days``; a device renews by enrolling again
(with its secret, and over its current certificate if it has one, which must
then be its own). A disabled device cannot enrol, and its certificate stops
working with it: every device call still checks the device (docs/security.md).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from pathlib import Path

from parkgate.common.tls import BadCertificateRequest, DeviceCa, IssuedCertificate
from parkgate.server.config import ServerSettings
from parkgate.server.domain.errors import Conflict, InvalidArgument, Reason
from parkgate.server.store.rows.admin import DeviceWithSecret

log = logging.getLogger(__name__)

VerifyDevice = Callable[..., Awaitable[DeviceWithSecret]]


class DeviceEnrolment:
    def __init__(self, verify_device: VerifyDevice, ca: DeviceCa | None, days: float) -> None:
        self._verify_device = verify_device
        self.ca = ca
        self.days = days

    @classmethod
    def from_settings(cls, verify_device: VerifyDevice, server: ServerSettings) -> DeviceEnrolment:
        """The device CA named by ``server.device_ca_cert_file`` / ``..._key_file`` (none: enrolment is refused)."""
        ca = None
        if server.device_ca_cert_file and server.device_ca_key_file:
            ca = DeviceCa.from_files(Path(server.device_ca_cert_file), Path(server.device_ca_key_file))
        elif server.device_ca_cert_file or server.device_ca_key_file:
            raise ValueError("server.device_ca_cert_file and server.device_ca_key_file go together")
        return cls(verify_device, ca, server.device_cert_days)

    async def enroll(self, device_id: str, secret: str, csr: bytes) -> IssuedCertificate:
        """A certificate for ``csr``'s key naming ``device_id``, once the device proved itself by its secret."""
        if not device_id or not secret:
            raise InvalidArgument("an enrolment names the device and carries its secret", Reason.UNKNOWN_DEVICE)
        await self._verify_device(device_id, secret, enrolling=True)
        if self.ca is None:
            raise Conflict("this server has no device CA (server.device_ca_cert_file / device_ca_key_file)",
                           Reason.ENROLMENT_NOT_AVAILABLE)
        try:
            issued = self.ca.issue(csr, device_id, self.days)
        except BadCertificateRequest as exc:
            raise InvalidArgument(str(exc), Reason.BAD_CERTIFICATE_REQUEST) from None
        log.info("device %s enrolled: certificate serial %x until %s", device_id, issued.serial,
                 issued.not_after.isoformat())
        return issued
