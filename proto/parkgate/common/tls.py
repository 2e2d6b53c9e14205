"""A private certificate authority for development and tests, made with the ``cryptography`` package.

``parkgate up`` and ``parkgate cluster up`` call :func:`dev_pki` for their data
directory: the first run creates a CA and a server certificate for loopback
(``localhost``, ``127.0.0.1``, ``::1`` and the host names given), later runs
reuse them. Clients trust the CA through ``PARKGATE_TLS_CA_FILE``. A park's
production servers take their certificate and key from files named in the
configuration instead (docs/security.md): nothing here is meant for them.

Device certificates (mTLS) come from a second CA, the device CA, kept apart
from the one that signs servers: a device certificate can never pass for a
server, and the server trusts exactly the devices' CA for client
certificates. :func:`device_key_and_csr` runs on the device (its private key
never leaves it); :class:`DeviceCa` runs on the server and signs a CSR's
public key under the name of the device that proved itself.

``PARKGATE_DEV_PKI_DIR`` points every development CA of one machine (or one
test session) at the same folder, so a test suite's clients trust the servers
that ``parkgate up`` and ``parkgate cluster up`` start for it.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

DEV_PKI_ENV = "PARKGATE_DEV_PKI_DIR"
_LOOPBACK = ("localhost", "127.0.0.1", "::1")
_VALID_DAYS = 825


@dataclass(frozen=True, slots=True)
class DevPki:
    folder: Path
    ca_file: Path
    cert_file: Path
    key_file: Path

    @property
    def ca_key_file(self) -> Path:
        return self.folder / "ca.key"

    @property
    def device_ca_file(self) -> Path:
        return self.folder / "device-ca.pem"

    @property
    def device_ca_key_file(self) -> Path:
        return self.folder / "device-ca.key"


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def _write(path: Path, data: bytes, mode: int) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
    os.replace(tmp, path)


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "parkgate development"),
                      x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _make_ca(folder: Path, stem: str = "ca", common_name: str = "parkgate development CA") -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    name = _name(common_name)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(_now() - datetime.timedelta(minutes=5))
            .not_valid_after(_now() + datetime.timedelta(days=_VALID_DAYS))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                         content_commitment=False, key_encipherment=False, data_encipherment=False,
                                         key_agreement=False, encipher_only=False, decipher_only=False),
                           critical=True)
            .sign(key, hashes.SHA256()))
    _write(folder / f"{stem}.key", _pem_key(key), 0o600)
    _write(folder / f"{stem}.pem", cert.public_bytes(serialization.Encoding.PEM), 0o644)


def issue_certificate(pki: DevPki, common_name: str, hosts: list[str], cert_file: Path, key_file: Path, *,
                      client: bool = False, member: bool = False) -> None:
    """A leaf certificate signed by the development CA: a server's (``hosts`` as its names) or a device's.

    ``member``: a cluster member's (etcd, PostgreSQL, Patroni, a parkgate server talking to them), which
    is a server to its clients and a client to its peers, so it carries both usages (etcd checks them).
    """
    ca_key = serialization.load_pem_private_key(pki.ca_key_file.read_bytes(), password=None)
    ca_cert = x509.load_pem_x509_certificate(pki.ca_file.read_bytes())
    key = ec.generate_private_key(ec.SECP256R1())
    names: list[x509.GeneralName] = []
    for host in hosts:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    usages = ([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH] if member
              else [ExtendedKeyUsageOID.CLIENT_AUTH if client else ExtendedKeyUsageOID.SERVER_AUTH])
    builder = (x509.CertificateBuilder().subject_name(_name(common_name)).issuer_name(ca_cert.subject)
               .public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(_now() - datetime.timedelta(minutes=5))
               .not_valid_after(_now() + datetime.timedelta(days=_VALID_DAYS))
               .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
               .add_extension(x509.ExtendedKeyUsage(usages), critical=False))
    if names:
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    cert = builder.sign(ca_key, hashes.SHA256())  # type: ignore[arg-type]
    _write(key_file, _pem_key(key), 0o600)
    _write(cert_file, cert.public_bytes(serialization.Encoding.PEM), 0o644)


# --- device certificates ----------------------------------------------------------------

#: The URI a device certificate carries as its subject alternative name, besides its common name.
DEVICE_URI_PREFIX = "urn:parkgate:device:"


def device_named(uris: list[str], common_name: str | None) -> str | None:
    """The device a verified certificate names: its ``urn:parkgate:device:`` URI, else its common name."""
    for uri in uris:
        if uri.startswith(DEVICE_URI_PREFIX):
            return uri[len(DEVICE_URI_PREFIX):]
    return common_name or None


def device_of_peer(auth_context: Mapping[str, Sequence[bytes]] | None) -> str | None:
    """The device a connection's client certificate names, from gRPC's ``context.auth_context()`` (the
    handshake verified it against the device CA); None when the client presented none. Shared by the
    servers and the site edges, which check it against the device a call claims."""
    auth = auth_context or {}
    if not auth.get("x509_pem_cert"):
        return None
    uris = [v.decode(errors="replace") for v in auth.get("x509_subject_alternative_name", ())]
    names = auth.get("x509_common_name") or [b""]
    return device_named(uris, names[0].decode(errors="replace"))


class BadCertificateRequest(ValueError):
    """A CSR that cannot be signed: it does not parse, its signature is wrong, or its key is weak."""


def device_key_and_csr(device_id: str) -> tuple[bytes, bytes]:
    """A new private key (PEM, PKCS#8) and a CSR for it naming ``device_id`` (PEM): made on the device."""
    key = ec.generate_private_key(ec.SECP256R1())
    csr = (x509.CertificateSigningRequestBuilder()
           .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, device_id)]))
           .sign(key, hashes.SHA256()))
    return _pem_key(key), csr.public_bytes(serialization.Encoding.PEM)


@dataclass(frozen=True, slots=True)
class IssuedCertificate:
    pem: bytes
    not_after: datetime.datetime
    serial: int


def _load_csr(data: bytes) -> x509.CertificateSigningRequest:
    try:
        if data.lstrip().startswith(b"-----BEGIN"):
            return x509.load_pem_x509_csr(data)
        return x509.load_der_x509_csr(data)
    except ValueError as exc:
        raise BadCertificateRequest(f"the CSR does not parse: {exc}") from None


def _check_key(public_key: object) -> None:
    if isinstance(public_key, ec.EllipticCurvePublicKey):
        if public_key.curve.key_size < 256:
            raise BadCertificateRequest(f"an EC key on {public_key.curve.name} is too weak (P-256 or more)")
        return
    from cryptography.hazmat.primitives.asymmetric import rsa

    if isinstance(public_key, rsa.RSAPublicKey):
        if public_key.key_size < 2048:
            raise BadCertificateRequest(f"an RSA key of {public_key.key_size} bits is too weak (2048 or more)")
        return
    raise BadCertificateRequest(f"unsupported key type {type(public_key).__name__} (EC P-256 or RSA)")


class DeviceCa:
    """The CA that signs device client certificates (the server's side of enrolment)."""

    def __init__(self, cert_pem: bytes, key_pem: bytes) -> None:
        self.cert = x509.load_pem_x509_certificate(cert_pem)
        self.cert_pem = self.cert.public_bytes(serialization.Encoding.PEM)
        self._key = serialization.load_pem_private_key(key_pem, password=None)

    @classmethod
    def from_files(cls, cert_file: str | Path, key_file: str | Path) -> DeviceCa:
        return cls(Path(cert_file).read_bytes(), Path(key_file).read_bytes())

    def issue(self, csr_data: bytes, device_id: str, days: float) -> IssuedCertificate:
        """A client certificate for the CSR's key, naming ``device_id`` (CN and a URI SAN), valid ``days``.

        The CSR's own subject is ignored: the device proved who it is by its
        secret, so the server writes the name, and a CSR asking for another
        device's name gets its own name anyway.
        """
        csr = _load_csr(csr_data)
        if not csr.is_signature_valid:
            raise BadCertificateRequest("the CSR is not signed by its own key")
        public_key = csr.public_key()
        _check_key(public_key)
        now = _now()
        not_after = min(now + datetime.timedelta(days=days), self.cert.not_valid_after_utc)
        serial = x509.random_serial_number()
        cert = (x509.CertificateBuilder()
                .subject_name(x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "parkgate device"),
                                         x509.NameAttribute(NameOID.COMMON_NAME, device_id)]))
                .issuer_name(self.cert.subject).public_key(public_key)  # type: ignore[arg-type]
                .serial_number(serial).not_valid_before(now - datetime.timedelta(minutes=5))
                .not_valid_after(not_after)
                .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
                .add_extension(x509.KeyUsage(digital_signature=True, key_encipherment=False,
                                             content_commitment=False, data_encipherment=False,
                                             key_agreement=False, key_cert_sign=False, crl_sign=False,
                                             encipher_only=False, decipher_only=False), critical=True)
                .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
                .add_extension(x509.SubjectAlternativeName(
                    [x509.UniformResourceIdentifier(DEVICE_URI_PREFIX + device_id)]), critical=False)
                .sign(self._key, hashes.SHA256()))  # type: ignore[arg-type]
        return IssuedCertificate(cert.public_bytes(serialization.Encoding.PEM), not_after, serial)


def certificate_not_after(cert_file: str | Path) -> datetime.datetime:
    """When the certificate in ``cert_file`` (PEM) expires: a device renews before then."""
    return x509.load_pem_x509_certificate(Path(cert_file).read_bytes()).not_valid_after_utc


def write_private(path: Path, data: bytes) -> None:
    """Write a key (mode 0600) or certificate atomically: a device never reads half a file."""
    _write(path, data, 0o600)


def dev_pki(folder: Path | str, hosts: list[str] | None = None) -> DevPki:
    """The development CA and a loopback server certificate in ``folder`` (or ``$PARKGATE_DEV_PKI_DIR``)."""
    folder = Path(os.environ.get(DEV_PKI_ENV) or folder)
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    pki = DevPki(folder, folder / "ca.pem", folder / "server.pem", folder / "server.key")
    if not pki.ca_file.exists() or not pki.ca_key_file.exists():
        _make_ca(folder)
    if not pki.device_ca_file.exists() or not pki.device_ca_key_file.exists():
        _make_ca(folder, "device-ca", "parkgate development device CA")
    wanted = sorted({*_LOOPBACK, *(hosts or [])})
    marker = folder / "server.hosts"
    if not pki.cert_file.exists() or not marker.exists() or marker.read_text().split() != wanted:
        issue_certificate(pki, "parkgate server", wanted, pki.cert_file, pki.key_file)
        _write(marker, " ".join(wanted).encode(), 0o644)
    return pki
