"""How the cluster's own tools reach etcd: over https with the cluster's CA and a member certificate.

etcd asks every client for a certificate of the cluster's CA (``client-cert-auth``,
:mod:`.render`), so the supervisor's health wait, the power watcher and the tests
present one: the operator's copy (``member=None``, in the cluster folder) or a
member's own (:meth:`ClusterSpec.tls_files`). Without ``[tls]`` the same calls
speak plaintext http, as the endpoints' scheme says.
"""

from __future__ import annotations

import ssl
import urllib.request

from parkgate.common.channels import Transport
from parkgate.server.discovery import Etcd

from .spec import ClusterSpec, EtcdMember


def etcd_transport(spec: ClusterSpec, member: str | None = None) -> Transport:
    """The CA and client certificate ``member`` (None: the operator's tools) shows etcd."""
    files = spec.tls_files(member)
    if files is None:
        return Transport(insecure=True)
    return Transport(ca_file=str(files.ca), cert_file=str(files.cert), key_file=str(files.key))


def open_etcd(spec: ClusterSpec, member: str | None = None) -> Etcd:
    """A client over every etcd member of ``spec``, with ``member``'s certificate."""
    return Etcd(spec.etcd_endpoints, transport=etcd_transport(spec, member))


def ssl_context(spec: ClusterSpec, member: str | None = None) -> ssl.SSLContext | None:
    """An HTTP client context trusting the cluster's CA and showing ``member``'s certificate (None: plaintext)."""
    files = spec.tls_files(member)
    if files is None:
        return None
    context = ssl.create_default_context(cafile=str(files.ca))
    context.load_cert_chain(str(files.cert), str(files.key))
    return context


def etcd_healthy(spec: ClusterSpec, member: EtcdMember, timeout: float = 1.0) -> bool:
    """etcd's ``/health`` on ``member`` answers 200 (over https with the operator's certificate)."""
    url = f"{spec.etcd_client_url(member)}/health"
    try:
        with urllib.request.urlopen(url, timeout=timeout, context=ssl_context(spec)) as resp:
            return bool(resp.status == 200)
    except OSError:
        return False
