"""The edge's link to the cluster: one channel to the server in use, the next server when it fails.

Every Site call carries the edge's device credentials as metadata. The
online/offline switch lives here too: after a call the cluster did not
answer, :attr:`Cluster.offline_until` holds the edge to its own decisions for
a short while (``offline_hold_seconds``) so visitors do not each pay the
deadline; every change of state is logged as one sentence.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence

import grpc

from parkgate.common.channels import open_aio_channel
from parkgate.v1 import site_pb2_grpc

from .config import SiteSection

log = logging.getLogger(__name__)

#: Status codes that say nothing about the request: the server is away, busy or slow. Try elsewhere / later.
TRANSIENT = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED,
                       grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.CANCELLED, grpc.StatusCode.UNKNOWN,
                       grpc.StatusCode.INTERNAL})
#: Reasons that say the cluster could not decide (its database is away or it is overloaded).
UNDECIDED_REASONS = frozenset({"DATABASE_UNAVAILABLE", "SERVER_OVERLOADED", "DEADLINE_EXCEEDED"})


def reason_of(error: grpc.aio.AioRpcError) -> str:
    for key, value in error.trailing_metadata() or ():
        if key == "parkgate-reason":
            return str(value)
    return ""


def transient(error: grpc.aio.AioRpcError) -> bool:
    return error.code() in TRANSIENT or reason_of(error) in UNDECIDED_REASONS


class Cluster:
    """The servers of the cluster, one channel at a time."""

    def __init__(self, config: SiteSection) -> None:
        self.config = config
        self.servers: Sequence[str] = config.servers
        self._index = 0
        self._channel: grpc.aio.Channel | None = None
        self.site: site_pb2_grpc.SiteStub | None = None
        self.offline_until = 0.0
        self.online = True

    @property
    def address(self) -> str:
        return self.servers[self._index]

    def channel(self) -> grpc.aio.Channel:
        if self._channel is None:
            self._channel = open_aio_channel(self.address, self.config.cluster_transport())
            self.site = site_pb2_grpc.SiteStub(self._channel)
        return self._channel

    def stub(self) -> site_pb2_grpc.SiteStub:
        self.channel()
        assert self.site is not None
        return self.site

    def metadata(self) -> tuple[tuple[str, str], ...]:
        return (("parkgate-device-id", self.config.device_id), ("parkgate-device-secret", self.config.secret()))

    async def next_server(self, failed: str) -> None:
        """``failed`` did not answer: use the next server in the list (once, however many callers saw it).

        The old channel is closed a while later, not now: the feed, the
        forwarder and the validations share it, and closing it under a call
        that is just starting would fail that call with a usage error.
        """
        if failed != self.address:
            return  # another caller moved on already
        old = self._channel
        self._channel, self.site = None, None
        self._index = (self._index + 1) % len(self.servers)
        if old is not None:
            asyncio.get_running_loop().call_later(30.0, lambda: asyncio.ensure_future(old.close()))

    # --- the online/offline switch ------------------------------------------------------------

    def may_ask(self) -> bool:
        """Whether to ask the cluster now (False while holding offline after a failure)."""
        return time.monotonic() >= self.offline_until

    def failed(self, why: str) -> None:
        self.offline_until = time.monotonic() + self.config.offline_hold_seconds
        if self.online:
            self.online = False
            log.warning("edge offline: %s via %s; deciding alone, asking again every %.1fs", why, self.address,
                        self.config.offline_hold_seconds)

    def answered(self) -> None:
        self.offline_until = 0.0
        if not self.online:
            self.online = True
            log.warning("edge online: %s answers again; validations go to the cluster", self.address)

    async def close(self) -> None:
        if self._channel is not None:
            await self._channel.close()
            self._channel = None
