"""Every gRPC connection parkgate makes or accepts goes through this module.

One place decides how a process reaches a server and how a server listens, so
transport security is chosen once for the admin CLI, the window, the gate
agent, a site edge, the cluster's own calls and the tools in ``loadtests/``.
Nothing else in the tree calls ``grpc.insecure_channel`` or
``add_insecure_port``.

TLS is the default. A caller that names no :class:`Transport` gets the one the
environment describes: the CA to trust (``PARKGATE_TLS_CA_FILE``; the system's
roots when unset), a client certificate (``PARKGATE_TLS_CERT_FILE`` and
``PARKGATE_TLS_KEY_FILE``, a device's), and a server's own certificate
(``PARKGATE_SERVER__TLS_CERT_FILE`` / ``..._KEY_FILE``, the same names the
server's configuration reads). Plaintext only with ``PARKGATE_INSECURE=1`` or
``Transport(insecure=True)``: a listening port without a certificate is an
error, never a silent fallback.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Sequence
from dataclasses import dataclass

import grpc


@dataclass(frozen=True, slots=True)
class Transport:
    """How a connection is secured.

    A client checks the server's certificate against ``ca_file`` (the
    system's roots when None); with ``cert_file`` and ``key_file`` it also
    presents its own (a device certificate). A server uses
    ``cert_file``/``key_file`` as its own certificate and, with
    ``require_client_cert``, requires clients' certificates signed by
    ``ca_file`` (gRPC Python cannot ask for them optionally: without it, no
    client presents one). ``insecure`` is plaintext: only when asked for.
    """

    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    # the name the server's certificate must carry when it is not the host dialled
    server_name: str | None = None
    insecure: bool = False
    # a server: refuse clients without a certificate from ca_file (mutual TLS)
    require_client_cert: bool = False

    @property
    def secure(self) -> bool:
        return not self.insecure


PLAINTEXT = Transport(insecure=True)


def _env(name: str) -> str | None:
    return os.environ.get(name) or None


def insecure_requested() -> bool:
    return os.environ.get("PARKGATE_INSECURE", "").lower() in ("1", "true", "yes")


def client_transport() -> Transport:
    """The transport a client uses when it names none: TLS, as the environment describes it."""
    if insecure_requested():
        return PLAINTEXT
    return Transport(ca_file=_env("PARKGATE_TLS_CA_FILE"), cert_file=_env("PARKGATE_TLS_CERT_FILE"),
                     key_file=_env("PARKGATE_TLS_KEY_FILE"))


def device_transport(ca_file: os.PathLike[str] | str | None, cert_file: os.PathLike[str] | str | None,
                     key_file: os.PathLike[str] | str | None) -> Transport:
    """A device's transport (gate, site edge): the environment's, with the files its own configuration names.

    A device box names its CA and its client certificate (mTLS) in its TOML file; what it leaves out comes from
    ``PARKGATE_TLS_*`` as for any client, and ``PARKGATE_INSECURE=1`` still means plaintext.
    """
    base = client_transport()
    if base.insecure:
        return base
    return Transport(ca_file=str(ca_file) if ca_file else base.ca_file,
                     cert_file=str(cert_file) if cert_file else base.cert_file,
                     key_file=str(key_file) if key_file else base.key_file)


def server_transport() -> Transport:
    """The transport a listening port uses when it names none (from the environment)."""
    if insecure_requested():
        return PLAINTEXT
    return Transport(ca_file=_env("PARKGATE_SERVER__TLS_CLIENT_CA_FILE"),
                     cert_file=_env("PARKGATE_SERVER__TLS_CERT_FILE"), key_file=_env("PARKGATE_SERVER__TLS_KEY_FILE"))


ChannelOptions = Sequence[tuple[str, object]]


def channel_target(server: str) -> str:
    """The gRPC target for ``server``: one ``HOST:PORT``, or several separated by commas.

    Several addresses (the servers of a cluster, docs/ha.md) become one gRPC
    target listing them all (``ipv4:a:p,b:q``), so the channel's ``pick_first``
    policy connects to the first that answers and moves to the next when that
    server dies: failover between servers without any code of ours in the call
    path. Host names are resolved here, since such a target takes addresses only.
    """
    parts = [p.strip() for p in server.split(",") if p.strip()]
    if len(parts) <= 1:
        return parts[0] if parts else server
    addresses = []
    for part in parts:
        host, _, port = part.rpartition(":")
        host = host.strip("[]")
        try:
            infos = socket.getaddrinfo(host, int(port), type=socket.SOCK_STREAM)
        except (socket.gaierror, ValueError) as exc:
            raise ValueError(f"server address {part!r}: {exc}") from None
        for family, _t, _p, _c, addr in infos:
            entry = f"[{addr[0]}]:{port}" if family == socket.AF_INET6 else f"{addr[0]}:{port}"
            if (family, entry) not in addresses:
                addresses.append((family, entry))
    families = {f for f, _ in addresses}
    scheme = "ipv6" if families == {socket.AF_INET6} else "ipv4"
    return f"{scheme}:" + ",".join(e for f, e in addresses if (f == socket.AF_INET6) == (scheme == "ipv6"))


def _read(path: str | None) -> bytes | None:
    if path is None:
        return None
    with open(path, "rb") as f:
        return f.read()


def _client_credentials(transport: Transport) -> grpc.ChannelCredentials:
    return grpc.ssl_channel_credentials(
        root_certificates=_read(transport.ca_file),
        private_key=_read(transport.key_file),
        certificate_chain=_read(transport.cert_file),
    )


def client_credentials(transport: Transport) -> grpc.ChannelCredentials:
    """The TLS credentials of ``transport``, for a library that opens its own channel (pyetcd for etcd)."""
    return _client_credentials(transport)


def _options(transport: Transport, server: str, options: ChannelOptions) -> list[tuple[str, object]]:
    opts = list(options)
    name = transport.server_name
    if name is None and "," in server:
        # A failover target has no one authority: check every server against the first one's name
        # (a cluster's servers share a certificate naming all of them).
        name = server.split(",")[0].strip().rpartition(":")[0].strip("[]")
    if name:
        opts.append(("grpc.ssl_target_name_override", name))
    return opts


def open_channel(server: str, transport: Transport | None = None, options: ChannelOptions = ()) -> grpc.Channel:
    """A blocking channel to ``server`` (``HOST:PORT`` or a comma list of them, with failover)."""
    transport = client_transport() if transport is None else transport
    target = channel_target(server)
    if transport.secure:
        return grpc.secure_channel(target, _client_credentials(transport), _options(transport, server, options))
    return grpc.insecure_channel(target, list(options))


def open_aio_channel(server: str, transport: Transport | None = None,
                     options: ChannelOptions = ()) -> grpc.aio.Channel:
    """An asyncio channel to ``server``, secured the same way as :func:`open_channel`."""
    transport = client_transport() if transport is None else transport
    target = channel_target(server)
    if transport.secure:
        return grpc.aio.secure_channel(target, _client_credentials(transport), _options(transport, server, options))
    return grpc.aio.insecure_channel(target, list(options))


class NoCertificate(ValueError):
    """A secure port was asked for without a certificate and key to serve it with."""


def listen(server: grpc.Server | grpc.aio.Server, address: str, transport: Transport | None = None) -> int:
    """Bind ``server`` to ``address``; the port it got, or 0 when it could not bind.

    TLS unless ``transport.insecure``; without a certificate that is an error
    (:class:`NoCertificate`), not plaintext.
    """
    transport = server_transport() if transport is None else transport
    if transport.insecure:
        return server.add_insecure_port(address)
    if not (transport.cert_file and transport.key_file):
        raise NoCertificate(f"{address}: TLS needs a certificate and its key (server.tls_cert_file and "
                            "server.tls_key_file); plaintext only when asked for (--insecure)")
    credentials = grpc.ssl_server_credentials(
        [(_read(transport.key_file), _read(transport.cert_file))],
        root_certificates=_read(transport.ca_file),
        require_client_auth=transport.require_client_cert,
    )
    return server.add_secure_port(address, credentials)
