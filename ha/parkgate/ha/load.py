"""A steady writer that remembers what the servers acknowledged, for failover tests and drills.

Each of ``clients`` concurrent clients writes one uniquely keyed operation
after another through the gRPC servers: a quick sale of one ticket
(``Sales.QuickSell`` with the request id ``<prefix>.<client>.<n>``, which the
server applies once however often it is retried), or ``Admin.SetParameter``
with that key (an upsert), which every server has. An operation counts as *acknowledged* only when a server
answered OK; a failed attempt is retried with the same key on the next server
(client failover), never skipped. Afterwards :func:`verify` reads the table and
compares: every acknowledged key must be there (lost = 0); for sales, each once.

Duplicates are counted where they CAN happen, for sales: each key is the
*fingerprint* of one sale the client means to make once, and tickets are counted
per fingerprint (a client that retried an unknown outcome under a new request id
would hold two tickets for one fingerprint); and after the load every
acknowledged sale is sent again (:meth:`Writer.replay`, through the other
servers, after the failover) and each reply is compared with the first reply
for that request id: same order id, same ticket ids.

What it measures, from the client's side:

* ``stall``: the longest time one client waited between two acknowledgements;
* ``resumed_after(t)``: when writes flowed again after the interruption that
  followed ``t`` (a kill): the recovery time objective as a client sees it;
* ``errors``: failed attempts by reason (the contract's reason, or the gRPC code).
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import grpc
import psycopg

from parkgate.common.channels import open_aio_channel
from parkgate.v1 import (
    admin_pb2,
    admin_pb2_grpc,
    auth_pb2,
    auth_pb2_grpc,
    catalog_pb2,
    catalog_pb2_grpc,
    common_pb2,
    sales_pb2,
    sales_pb2_grpc,
)

REASON_METADATA = "parkgate-reason"
#: A pause in the acknowledgements of all clients together shorter than this is normal traffic.
INTERRUPTION = 0.5


def _reason(exc: grpc.aio.AioRpcError) -> str:
    for key, value in exc.trailing_metadata() or ():
        if key == REASON_METADATA:
            return str(value)
    return exc.code().name


async def login(address: str, password: str, username: str = "admin", timeout: float = 30.0) -> str:
    """A session token (sessions live in the database, so it is good on every server)."""
    async with open_aio_channel(address) as channel:
        reply = await auth_pb2_grpc.AuthStub(channel).Login(
            auth_pb2.LoginRequest(username=username, password=password), timeout=timeout
        )
    return str(reply.token)


@dataclass
class LoadResult:
    acked: dict[str, float] = field(default_factory=dict)  # key -> monotonic time of the acknowledgement
    errors: Counter[str] = field(default_factory=Counter)
    stall: float = 0.0
    attempts: int = 0
    #: sales: the first reply per key, (order id, ticket ids)
    replies: dict[str, tuple[str, tuple[str, ...]]] = field(default_factory=dict)
    replayed: int = 0
    replay_mismatches: list[str] = field(default_factory=list)

    def first_ack_after(self, t: float) -> float | None:
        after = [a for a in self.acked.values() if a >= t]
        return min(after) if after else None

    def resumed_after(self, t: float) -> float | None:
        """When writes flowed again after the longest interruption that followed ``t``.

        The end of the largest gap between consecutive acknowledgements (all
        clients together) that ends after ``t``: for a killed primary the writes
        stop at once and resume on the new one; for a switchover they go on for a
        moment and stop when the old primary is demoted. None if nothing was
        acknowledged after ``t``. When no pause reached :data:`INTERRUPTION`
        (another server took over at once), the first acknowledgement after ``t``.
        """
        times = sorted(self.acked.values())
        best: tuple[float, float] | None = None
        for prev, nxt in zip([t, *times], times, strict=False):
            if nxt <= t:
                continue
            gap = nxt - max(prev, t)
            if gap >= INTERRUPTION and (best is None or gap > best[0]):
                best = (gap, nxt)
        return best[1] if best is not None else self.first_ack_after(t)

    def longest_gap_around(self, t: float) -> float:
        """The longest gap between consecutive acknowledgements (of any client) that spans ``t``."""
        times = sorted(self.acked.values())
        before = [a for a in times if a < t]
        after = [a for a in times if a >= t]
        if not before or not after:
            return 0.0
        return after[0] - before[-1]


class Writer:
    """``clients`` concurrent writers through ``servers`` (failing over between them)."""

    def __init__(self, servers: list[str], token: str, prefix: str, *, clients: int = 4,
                 call_timeout: float = 10.0, pause: float = 0.01, sell: str | None = None) -> None:
        self.sell = sell  # a product id: quick-sell one ticket per operation instead of SetParameter
        self.servers = servers
        self.token = token
        self.prefix = prefix
        self.clients = clients
        self.call_timeout = call_timeout
        self.pause = pause
        self.result = LoadResult()
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._channels = [open_aio_channel(s) for s in servers]

    async def __aenter__(self) -> Writer:
        self.start()
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.stop()

    @staticmethod
    def request_id(key: str, attempt: int) -> str:
        """The request id of an attempt at the sale ``key``: the same for every attempt.

        A sale whose outcome is unknown (the server died, the deadline passed) is
        retried under the SAME request id, so the server applies it once. ``attempt``
        is part of the signature so the duplicate check can be shown to fail: a
        client that made a new id per attempt doubles sales (see :func:`verify`).
        """
        return key

    async def _sell(self, channel: grpc.aio.Channel, key: str, attempt: int) -> tuple[str, tuple[str, ...]]:
        meta = (("authorization", f"Bearer {self.token}"),)
        order = await sales_pb2_grpc.SalesStub(channel).QuickSell(sales_pb2.QuickSellRequest(
            request_id=self.request_id(key, attempt), product_id=self.sell or "", quantity=1,
            method=common_pb2.CASH), metadata=meta, timeout=self.call_timeout)
        return str(order.id), tuple(sorted(str(t.id) for t in order.tickets))

    async def replay(self, attempts: int = 20) -> LoadResult:
        """Send every acknowledged sale again and compare the reply with the first one.

        Run after the load (and the failover): each replay goes to the server after
        the one that first answered, so it reads the idempotency record the new
        primary holds. A reply with another order or other tickets is a mismatch.
        """
        items = sorted(self.result.replies.items())

        async def one(idx: int, key: str, first: tuple[str, tuple[str, ...]]) -> None:
            for attempt in range(attempts):
                channel = self._channels[(idx + 1 + attempt) % len(self._channels)]
                try:
                    again = await self._sell(channel, key, 1000 + attempt)
                    break
                except grpc.aio.AioRpcError as exc:
                    self.result.errors[f"replay {_reason(exc)}"] += 1
                    await asyncio.sleep(0.2)
            else:
                self.result.replay_mismatches.append(f"{key}: no reply to the replay")
                return
            self.result.replayed += 1
            if again != first:
                self.result.replay_mismatches.append(f"{key}: first {first}, replay {again}")

        for start in range(0, len(items), self.clients):  # as many at once as the load had clients
            batch = items[start:start + self.clients]
            await asyncio.gather(*(one(start + j, k, f) for j, (k, f) in enumerate(batch)))
        return self.result

    def start(self) -> None:
        self._tasks = [asyncio.create_task(self._client(i), name=f"writer-{i}") for i in range(self.clients)]

    async def stop(self, *, replay: bool = True) -> LoadResult:
        """Stop the clients; for sales, replay every acknowledged sale (see :meth:`replay`) first.
        A second call (the context's exit after an explicit stop) does nothing."""
        if self._stop.is_set():
            return self.result
        self._stop.set()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self.sell and replay:
            await self.replay()
        for ch in self._channels:
            await ch.close()
        return self.result

    async def _client(self, i: int) -> None:
        meta = (("authorization", f"Bearer {self.token}"),)
        which = i % len(self._channels)
        n = attempt = 0
        last_ack = time.monotonic()
        while not self._stop.is_set():
            key = f"{self.prefix}.{i}.{n}"
            channel = self._channels[which]
            self.result.attempts += 1
            try:
                if self.sell:
                    self.result.replies[key] = await self._sell(channel, key, attempt)
                else:
                    await admin_pb2_grpc.AdminStub(channel).SetParameter(
                        admin_pb2.SetParameterRequest(key=key, value=str(n)), metadata=meta, timeout=self.call_timeout)
            except grpc.aio.AioRpcError as exc:
                self.result.errors[_reason(exc)] += 1
                which = (which + 1) % len(self._channels)  # fail over to the next server; same key again
                attempt += 1
                await asyncio.sleep(0.1)
                continue
            now = time.monotonic()
            self.result.acked[key] = now
            self.result.stall = max(self.result.stall, now - last_ack)
            last_ack = now
            n, attempt = n + 1, 0
            if self.pause:
                await asyncio.sleep(self.pause)


def fingerprint_of(request_id: str) -> str:
    """The sale a request id belongs to: the load's key (:meth:`Writer.request_id` adds nothing to it)."""
    return request_id.split("~", 1)[0]


def verify(dsn: str, prefix: str, acked: dict[str, float], *, sales: bool = False) -> dict[str, int]:
    """Compare acknowledged operations with the tables: ``{"acked", "present", "lost"}``, plus
    ``"duplicates"`` for sales.

    Sales: tickets are counted per sale fingerprint (:func:`fingerprint_of` the
    request id), over every order of the load, so a sale sent twice under two
    request ids counts as a duplicate; each sale must hold exactly one ticket.
    The parameters load has no duplicate count: an upsert keyed by the
    operation cannot make a second row (the key is the table's primary key),
    so a count there could never fail.
    """
    pattern = prefix.replace("_", r"\_") + ".%"
    with psycopg.connect(dsn, connect_timeout=5) as conn:
        if sales:
            per_request = conn.execute(
                """SELECT o.request_id, count(t.id) FROM orders o LEFT JOIN tickets t ON t.order_id = o.id
                   WHERE o.request_id LIKE %s GROUP BY o.request_id""", [pattern]).fetchall()
            tickets: Counter[str] = Counter()
            for request_id, count in per_request:
                tickets[fingerprint_of(str(request_id))] += int(count)
            present = dict(tickets)
        else:
            present = {str(k): 1 for (k,) in conn.execute("SELECT key FROM parameters WHERE key LIKE %s",
                                                            [pattern]).fetchall()}
    check = {"acked": len(acked), "present": len(present), "lost": sum(1 for k in acked if k not in present)}
    if sales:
        check["duplicates"] = sum(c - 1 for c in present.values() if c > 1)
    return check


async def prepare_sales(address: str, admin_password: str, run_id: str) -> tuple[str, str]:
    """A park, a product, a sales window and a seller logged in at it: ``(seller token, product id)``.

    Through the contract, as an admin would. Re-runnable: the park, product and seller are
    reused; each run registers its own window (a device secret is shown only once).
    """
    token = await login(address, admin_password)
    md = (("authorization", f"Bearer {token}"),)
    park, product, seller, password = "drill", "drill-ticket", "drill-seller", f"drill-{run_id}-password"
    async with open_aio_channel(address) as ch:
        catalog, admin = catalog_pb2_grpc.CatalogStub(ch), admin_pb2_grpc.AdminStub(ch)
        await catalog.PutPark(catalog_pb2.PutParkRequest(park=catalog_pb2.Park(
            id=park, name="Failover drill", time_zone="UTC", currency="CNY")), metadata=md, timeout=30)
        await catalog.PutProduct(catalog_pb2.PutProductRequest(product=catalog_pb2.Product(
            id=product, park_id=park, name="Drill ticket", kind=catalog_pb2.SINGLE, on_sale=True,
            rules=catalog_pb2.ProductRules(validity=catalog_pb2.VISIT_DATE))), metadata=md, timeout=30)
        for day_type in (catalog_pb2.WEEKDAY, catalog_pb2.WEEKEND, catalog_pb2.HOLIDAY):
            await catalog.SetPrice(catalog_pb2.SetPriceRequest(entry=catalog_pb2.PriceEntry(
                product_id=product, day_type=day_type, price=common_pb2.Money(minor_units=100, currency="CNY"))),
                metadata=md, timeout=30)
        window = await admin.RegisterDevice(admin_pb2.RegisterDeviceRequest(device=admin_pb2.Device(
            id=f"drill-window-{run_id}", kind=admin_pb2.SALES_WINDOW, park_id=park)), metadata=md, timeout=30)
        try:
            await admin.CreateUser(admin_pb2.CreateUserRequest(username=seller, password=password, roles=["seller"]),
                                   metadata=md, timeout=30)
        except grpc.aio.AioRpcError as exc:
            if _reason(exc) != "ALREADY_EXISTS":
                raise
            await admin.ResetPassword(admin_pb2.ResetPasswordRequest(username=seller, new_password=password),
                                      metadata=md, timeout=30)
        reply = await auth_pb2_grpc.AuthStub(ch).Login(auth_pb2.LoginRequest(
            username=seller, password=password, device_id=window.device.id, device_secret=window.secret), timeout=30)
    return str(reply.token), product
