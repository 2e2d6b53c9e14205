"""A device gets its client certificate: ``parkgate device enroll`` and ``parkgate gate enroll`` (mTLS).

The device (gate box, window PC, site edge) makes a new private key and a CSR
here, sends only the CSR with its device secret (``Auth.EnrollDevice``), and
writes the key (mode 0600) and the certificate the server signed next to each
other. The key never leaves the box. Enrolling again renews: a new key, a new
certificate; while the old certificate is still valid the call presents it,
so renewal also works through a device port that takes certificates only
(docs/security.md, "Device certificates").
"""

from __future__ import annotations

import argparse
import datetime
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc

from parkgate.common.channels import Transport, client_transport, open_channel
from parkgate.common.tls import certificate_not_after, device_key_and_csr, write_private
from parkgate.v1 import auth_pb2, auth_pb2_grpc

from .commands import SERVER_HELP
from .connection import CallError, call_error, server_address


@dataclass(frozen=True, slots=True)
class Enrolled:
    cert_file: Path
    key_file: Path
    not_after: datetime.datetime
    serial: str


def current_certificate(cert_file: Path, key_file: Path) -> bool:
    """Whether the box holds a certificate and key it can still present (a renewal presents them)."""
    try:
        return key_file.exists() and certificate_not_after(cert_file) > datetime.datetime.now(datetime.UTC)
    except (OSError, ValueError):
        return False


def enroll(server: str, device_id: str, secret: str, cert_file: Path, key_file: Path, *,
           transport: Transport | None = None, timeout: float = 30.0) -> Enrolled:
    """Enrol ``device_id`` at ``server`` and write its new key and certificate; CallError when refused.

    ``transport``: how to reach the server (None: the environment's TLS). Its certificate, if any, is replaced by
    the device's current one when that is still valid.
    """
    base = transport or client_transport()
    if not base.insecure:  # the device's own certificate while it lasts, else none (a first enrolment)
        current = current_certificate(cert_file, key_file)
        base = Transport(ca_file=base.ca_file, cert_file=str(cert_file) if current else None,
                         key_file=str(key_file) if current else None, server_name=base.server_name)
    key_pem, csr_pem = device_key_and_csr(device_id)
    with open_channel(server, base) as channel:
        try:
            reply = auth_pb2_grpc.AuthStub(channel).EnrollDevice(
                auth_pb2.EnrollDeviceRequest(device_id=device_id, device_secret=secret, csr=csr_pem), timeout=timeout)
        except grpc.RpcError as exc:
            raise call_error(exc) from None
    cert_file.parent.mkdir(parents=True, exist_ok=True)
    key_file.parent.mkdir(parents=True, exist_ok=True)
    # each file is replaced atomically; a crash between the two leaves a pair that does not match, which
    # enrolling again through the server's main port (not the device port) repairs
    write_private(key_file, key_pem)
    write_private(cert_file, reply.certificate_pem.encode())
    os.chmod(cert_file, 0o644)
    return Enrolled(cert_file, key_file, reply.not_after.ToDatetime(tzinfo=datetime.UTC), reply.serial)


def renewal_due(cert_file: Path, days_before: float) -> bool:
    """Whether the certificate in ``cert_file`` expires within ``days_before`` days (a missing one is not due:
    a first certificate is enrolled by hand, through a port that takes devices without one)."""
    try:
        left = certificate_not_after(cert_file) - datetime.datetime.now(datetime.UTC)
    except (OSError, ValueError):
        return False
    return left < datetime.timedelta(days=days_before)


def add_parser(subparsers: Any) -> None:
    p = subparsers.add_parser("device", help="a device box's own commands (window PC, site edge, gate)")
    sub = p.add_subparsers(dest="device_command", required=True, metavar="COMMAND")
    e = sub.add_parser("enroll", help="get (or renew) this device's client certificate: a new key made here, "
                                      "a CSR signed by the server's device CA")
    e.add_argument("--server", help=SERVER_HELP)
    e.add_argument("--device-id", required=True)
    e.add_argument("--secret-file", required=True, type=Path, help="the device secret from its registration")
    e.add_argument("--cert-file", required=True, type=Path, help="where the certificate goes (PEM)")
    e.add_argument("--key-file", required=True, type=Path, help="where the new private key goes (PEM, mode 0600)")
    e.set_defaults(func=cmd_enroll)


def cmd_enroll(args: argparse.Namespace) -> int:
    try:
        secret = args.secret_file.read_text().strip()
    except OSError as exc:
        print(f"parkgate device: cannot read {args.secret_file}: {exc.strerror or exc}", file=sys.stderr)
        return 2
    try:
        done = enroll(server_address(args.server), args.device_id, secret, args.cert_file, args.key_file)
    except CallError as exc:
        print(f"parkgate device: enrolment refused: {exc}", file=sys.stderr)
        return 1
    print(f"device {args.device_id}: certificate {done.cert_file} (serial {done.serial}, valid until "
          f"{done.not_after:%Y-%m-%d %H:%M} UTC), key {done.key_file}")
    print(f"present it with PARKGATE_TLS_CERT_FILE={done.cert_file} PARKGATE_TLS_KEY_FILE={done.key_file}")
    return 0
