"""Every gRPC connection parkgate makes or accepts goes through this module.

One place decides how a process reaches a server and how a server listens, so
transport security (plaintext today on loopback, TLS and device certificates
where configured) is chosen once for the admin CLI, the window, the gate
agent, a site edge, the cluster's own calls and the tools in ``loadtests/``.
Nothing else in the tree calls ``grpc.insecure_channel`` or
``add_insecure_port``.
"""

from __future__ import annotations

import socket
from collections.abc import Sequence
from dataclasses import dataclass

import grpc


@dataclass(frozen=True, slots=True)
class Transport:
    """How a connection is secured.

    ``Transport()`` is plaintext. With ``ca_file`` a client checks the
    server's certificate against that CA; with ``cert_file`` and ``key_file``
    it also presents its own (a device certificate). A server uses
    ``cert_file``/``key_file`` as its own certificate and, with ``ca_file``,
    asks clients for theirs.
    """

    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    # the name the server's certificate must carry when it is not the host dialled
    server_name: str | None = None

    @property
    def secure(self) -> bool:
        return bool(self.ca_file or self.cert_file)


PLAINTEXT = Transport()

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


def _options(transport: Transport, options: ChannelOptions) -> list[tuple[str, object]]:
    opts = list(options)
    if transport.server_name:
        opts.append(("grpc.ssl_target_name_override", transport.server_name))
    return opts


def open_channel(server: str, transport: Transport = PLAINTEXT, options: ChannelOptions = ()) -> grpc.Channel:
    """A blocking channel to ``server`` (``HOST:PORT`` or a comma list of them, with failover)."""
    target = channel_target(server)
    if transport.secure:
        return grpc.secure_channel(target, _client_credentials(transport), _options(transport, options))
    return grpc.insecure_channel(target, list(options))


def open_aio_channel(server: str, transport: Transport = PLAINTEXT, options: ChannelOptions = ()) -> grpc.aio.Channel:
    """An asyncio channel to ``server``, secured the same way as :func:`open_channel`."""
    target = channel_target(server)
    if transport.secure:
        return grpc.aio.secure_channel(target, _client_credentials(transport), _options(transport, options))
    return grpc.aio.insecure_channel(target, list(options))


def listen(server: grpc.Server | grpc.aio.Server, address: str, transport: Transport = PLAINTEXT) -> int:
    """Bind ``server`` to ``address``; the port it got, or 0 when it could not bind."""
    if transport.cert_file and transport.key_file:
        credentials = grpc.ssl_server_credentials(
            [(_read(transport.key_file), _read(transport.cert_file))],
            root_certificates=_read(transport.ca_file),
            require_client_auth=False,
        )
        return server.add_secure_port(address, credentials)
    return server.add_insecure_port(address)
