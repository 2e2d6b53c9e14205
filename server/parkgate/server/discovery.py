"""Servers in etcd: registration under a lease (clients discover them) and locks for one-server jobs.

The one edge to etcd for the servers, like Patroni's ``AbstractDCS``: every
call goes through :class:`Etcd`, which uses ``pyetcd`` (etcd-sdk-python, the
maintained fork of ``etcd3`` that works with current protobuf) over all
endpoints with failover, and turns its exceptions into :class:`EtcdUnavailable`
here, so nothing above sees a pyetcd or grpc error.

* :class:`Registration` keeps ``/parkgate/<cluster>/servers/<server_id>`` =
  ``{"address": ..., "server_id": ...}`` attached to a lease of
  ``cluster.lease_ttl_seconds``, refreshed three times per ttl. When the
  server dies the key disappears within the ttl; when etcd was unreachable for
  longer than the ttl the lease is gone and a new one is granted. Each turn of
  its loop logs what it decided when that changes.
* :func:`lock` is an etcd lock (a key under a lease, released on exit or when
  the holder dies) for jobs that must run on one server only.
* :func:`discover` lists the registered addresses (what clients call).

pyetcd is synchronous (grpc blocking stubs): every call runs in a thread.
An ``https://`` endpoint is reached over TLS with the CA and client certificate
of ``[cluster]`` (etcd of a cluster refuses clients without one, docs/ha.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import AsyncIterator, Callable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import urlsplit

import orjson
import pyetcd
from pyetcd import exceptions as etcd_exceptions

from parkgate.common.channels import Transport, client_credentials

if TYPE_CHECKING:
    from .config import ClusterSettings

log = logging.getLogger(__name__)

T = TypeVar("T")


class EtcdUnavailable(RuntimeError):
    """No etcd endpoint answered (or it refused the request)."""


def etcd_transport(cluster: ClusterSettings) -> Transport:
    """How a server reaches etcd: the CA and client certificate of ``[cluster]`` (used for https:// endpoints)."""
    return Transport(ca_file=_str(cluster.etcd_ca_file), cert_file=_str(cluster.etcd_cert_file),
                     key_file=_str(cluster.etcd_key_file))


def _str(path: os.PathLike[str] | None) -> str | None:
    return None if path is None else os.fspath(path)


def _endpoint(url: str, transport: Transport) -> pyetcd.Endpoint:
    parts = urlsplit(url if "://" in url else f"http://{url}")
    if not parts.hostname or not parts.port or parts.scheme not in ("http", "https"):
        raise ValueError(f"etcd endpoint {url!r}: expected https://HOST:PORT (or http:// for plaintext)")
    # The URL says whether the member speaks TLS, as it does for etcd's own flags and for Patroni.
    secure = parts.scheme == "https"
    # time_retry: how long a failed endpoint is skipped; short, since members come back within seconds.
    return pyetcd.Endpoint(parts.hostname, parts.port, secure=secure,
                           creds=client_credentials(transport) if secure else None, time_retry=2.0)


def servers_prefix(cluster: str) -> str:
    return f"/parkgate/{cluster}/servers/"


class Etcd:
    """A pyetcd client over several endpoints; every failure becomes :class:`EtcdUnavailable`."""

    def __init__(self, endpoints: Sequence[str], timeout: float = 2.0, transport: Transport | None = None) -> None:
        if not endpoints:
            raise ValueError("no etcd endpoints")
        self.endpoints = list(endpoints)
        # https:// endpoints: the CA to trust and the client certificate etcd asks for (system roots, no
        # certificate when None).
        transport = transport or Transport()
        self.client = pyetcd.MultiEndpointEtcd3Client(
            [_endpoint(u, transport) for u in endpoints], timeout=timeout, failover=True
        )

    def call(self, fn: Callable[[Any], T]) -> T:
        """``fn(client)``, tried once on each endpoint before giving up."""
        last: Exception | None = None
        for _ in range(len(self.endpoints)):
            try:
                return fn(self.client)
            except (etcd_exceptions.Etcd3Exception, ValueError) as exc:  # ValueError: all endpoints failed
                last = exc
            except Exception as exc:  # grpc errors pyetcd does not wrap
                last = exc
        raise EtcdUnavailable(f"etcd ({', '.join(self.endpoints)}) did not answer: {type(last).__name__} {last}")

    async def acall(self, fn: Callable[[Any], T]) -> T:
        return await asyncio.to_thread(self.call, fn)

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.client.close()


class Registration:
    """Keeps this server's key in etcd under a lease while the server runs."""

    def __init__(self, etcd: Etcd, cluster: str, server_id: str, address: str, ttl: int = 10) -> None:
        self.etcd = etcd
        self.key = servers_prefix(cluster) + server_id
        self.value = orjson.dumps({"address": address, "server_id": server_id}).decode()
        self.ttl = ttl
        self.lease: Any = None
        self._said = ""

    def _decide(self, sentence: str, level: int = logging.INFO) -> None:
        if sentence != self._said:
            log.log(level, "registration %s: %s", self.key, sentence)
            self._said = sentence

    async def turn(self) -> str:
        """One turn: refresh the lease, or grant a new one and write the key. Returns what it did."""
        if self.lease is not None:
            left = await self.etcd.acall(lambda c: self.lease.refresh()[0].TTL)
            if left > 0:
                return "registered (lease refreshed)"
            self.lease = None  # expired while etcd was away: register anew
        lease = await self.etcd.acall(lambda c: c.lease(self.ttl))
        await self.etcd.acall(lambda c: c.put(self.key, self.value, lease=lease))
        self.lease = lease
        return f"registered with a new lease of {self.ttl}s"

    async def run(self) -> None:
        """Refresh three times per ttl for ever; etcd outages are logged and ridden out."""
        while True:
            try:
                self._decide(await self.turn())
            except EtcdUnavailable as exc:
                self._decide(f"etcd unreachable, retrying ({exc})", logging.WARNING)
            await asyncio.sleep(self.ttl / 3)

    async def close(self) -> None:
        """Remove the key now (clients stop choosing this server before it stops listening)."""
        if self.lease is not None:
            with contextlib.suppress(EtcdUnavailable):
                await self.etcd.acall(lambda c: self.lease.revoke())
            self.lease = None
            log.info("registration %s: removed", self.key)


async def discover(etcd: Etcd, cluster: str) -> list[str]:
    """Addresses of the servers registered now, sorted."""
    rows = await etcd.acall(lambda c: list(c.get_prefix(servers_prefix(cluster))))
    out = []
    for value, _meta in rows:
        with contextlib.suppress(ValueError, KeyError, TypeError):
            out.append(str(orjson.loads(value)["address"]))
    return sorted(out)


@contextlib.asynccontextmanager
async def lock(etcd: Etcd, cluster: str, name: str, *, ttl: int = 10, wait: float = 0.0) -> AsyncIterator[bool]:
    """Hold the etcd lock ``name`` for the block; yields False (and runs the block) if another server has it.

    ``wait`` seconds are spent trying to acquire it. While held, the lease is
    refreshed every ttl/3, so a long job keeps it; if this server dies, the
    lock is free again after ``ttl``.
    """
    held = etcd.client.lock(f"parkgate/{cluster}/{name}", ttl=ttl)
    acquired = await etcd.acall(lambda c: held.acquire(timeout=wait))
    keeper: asyncio.Task[None] | None = None
    if acquired:

        async def keep() -> None:
            while True:
                await asyncio.sleep(ttl / 3)
                with contextlib.suppress(EtcdUnavailable):
                    await etcd.acall(lambda c: held.refresh())

        keeper = asyncio.create_task(keep(), name=f"etcd-lock-{name}")
    try:
        yield bool(acquired)
    finally:
        if keeper is not None:
            keeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await keeper
            with contextlib.suppress(EtcdUnavailable):
                await etcd.acall(lambda c: held.release())
