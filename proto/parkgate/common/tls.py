"""A private certificate authority for development and tests, made with the ``cryptography`` package.

``parkgate up`` and ``parkgate cluster up`` call :func:`dev_pki` for their data
directory: the first run creates a CA and a server certificate for loopback
(``localhost``, ``127.0.0.1``, ``::1`` and the host names given), later runs
reuse them. Clients trust the CA through ``PARKGATE_TLS_CA_FILE``. A park's
production servers take their certificate and key from files named in the
configuration instead (docs/security.md): nothing here is meant for them.

``PARKGATE_DEV_PKI_DIR`` points every development CA of one machine (or one
test session) at the same folder, so a test suite's clients trust the servers
that ``parkgate up`` and ``parkgate cluster up`` start for it.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
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


def _make_ca(folder: Path) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    name = _name("parkgate development CA")
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(_now() - datetime.timedelta(minutes=5))
            .not_valid_after(_now() + datetime.timedelta(days=_VALID_DAYS))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                         content_commitment=False, key_encipherment=False, data_encipherment=False,
                                         key_agreement=False, encipher_only=False, decipher_only=False),
                           critical=True)
            .sign(key, hashes.SHA256()))
    _write(folder / "ca.key", _pem_key(key), 0o600)
    _write(folder / "ca.pem", cert.public_bytes(serialization.Encoding.PEM), 0o644)


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


def dev_pki(folder: Path | str, hosts: list[str] | None = None) -> DevPki:
    """The development CA and a loopback server certificate in ``folder`` (or ``$PARKGATE_DEV_PKI_DIR``)."""
    folder = Path(os.environ.get(DEV_PKI_ENV) or folder)
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    pki = DevPki(folder, folder / "ca.pem", folder / "server.pem", folder / "server.key")
    if not pki.ca_file.exists() or not pki.ca_key_file.exists():
        _make_ca(folder)
    wanted = sorted({*_LOOPBACK, *(hosts or [])})
    marker = folder / "server.hosts"
    if not pki.cert_file.exists() or not marker.exists() or marker.read_text().split() != wanted:
        issue_certificate(pki, "parkgate server", wanted, pki.cert_file, pki.key_file)
        _write(marker, " ".join(wanted).encode(), 0o644)
    return pki
