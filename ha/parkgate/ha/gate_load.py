"""Turnstiles as load: registered gates that stream validations of sold tickets through the servers.

Each gate holds one ``Gate.Connect`` stream (hello with its device secret,
welcome), presents one ticket after another at a turnstile's pace and waits
for each decision. A stream that breaks, or a server that does not answer in
time, is replaced by a stream to the next server and the SAME request id is sent
again (the server answers a retried request with its first decision), exactly
what a gate agent does. An admission counts as *acknowledged* when a server
said allow. :func:`verify_admissions` then compares with the ``validations``
table: every acknowledged admission there (lost = 0), no ticket counted twice.

What it measures: ``longest_wait`` (one person's wait from the first send to
the decision, retries included), the acknowledged admissions and errors by kind.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import grpc
import psycopg

from parkgate.common.channels import open_aio_channel
from parkgate.v1 import (
    admin_pb2,
    admin_pb2_grpc,
    common_pb2,
    gate_pb2,
    gate_pb2_grpc,
    reason_pb2,
    sales_pb2,
    sales_pb2_grpc,
)

from .load import _reason, login

PARK = "drill"  # the drill park of :func:`parkgate.ha.load.prepare_sales`


@dataclass
class GateResult:
    acked: dict[str, str] = field(default_factory=dict)  # request id -> device id, for allowed admissions
    denied: Counter[str] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)
    longest_wait: float = 0.0
    longest_wait_began: float = 0.0  # time.monotonic() when that person presented the ticket
    decisions: int = 0


async def prepare_gates(address: str, admin_password: str, seller_token: str, product: str, run_id: str,
                        gates: int, tickets: int, site: str = "") -> tuple[list[tuple[str, str]], list[str]]:
    """``gates`` registered gates ``(device id, secret)`` and ``tickets`` sold ticket codes.

    With ``site`` the gates belong to that site, so they talk to the site's edge.
    """
    md = (("authorization", f"Bearer {await login(address, admin_password)}"),)
    seller = (("authorization", f"Bearer {seller_token}"),)
    out, codes = [], []
    async with open_aio_channel(address) as ch:
        admin = admin_pb2_grpc.AdminStub(ch)
        for i in range(gates):
            reply = await admin.RegisterDevice(admin_pb2.RegisterDeviceRequest(device=admin_pb2.Device(
                id=f"drill-gate-{run_id}-{i}", kind=admin_pb2.GATE, park_id=PARK, direction=common_pb2.IN, site=site)),
                metadata=md, timeout=30)
            out.append((reply.device.id, reply.secret))
        sales = sales_pb2_grpc.SalesStub(ch)
        left = tickets
        while left > 0:
            n = min(left, 500)
            order = await sales.QuickSell(sales_pb2.QuickSellRequest(
                request_id=f"drill-gates-{run_id}-{uuid.uuid4().hex[:8]}", product_id=product, quantity=n,
                method=common_pb2.CASH), metadata=seller, timeout=60)
            codes.extend(t.code for t in order.tickets)
            left -= n
    return out, codes


class _Stream:
    def __init__(self, address: str, device: str, secret: str) -> None:
        self.channel = open_aio_channel(address)
        self.call: Any = gate_pb2_grpc.GateStub(self.channel).Connect()
        self.hello = gate_pb2.Hello(device_id=device, device_secret=secret, direction=common_pb2.IN, park_id=PARK,
                                    software_version="parkgate power drill")

    async def open(self, timeout: float) -> None:
        await self.call.write(gate_pb2.GateMessage(hello=self.hello))
        while True:
            msg = await asyncio.wait_for(self.call.read(), timeout)
            if msg is grpc.aio.EOF:
                raise ConnectionError("stream ended before the welcome")
            if msg.WhichOneof("body") == "welcome":
                return
            if msg.WhichOneof("body") == "error":
                raise ConnectionError(f"refused: {msg.error}")

    async def validate(self, request_id: str, code: str, timeout: float) -> gate_pb2.ValidationResult:
        await self.call.write(gate_pb2.GateMessage(validation=gate_pb2.ValidationRequest(
            request_id=request_id, code=code, direction=common_pb2.IN)))
        while True:
            msg = await asyncio.wait_for(self.call.read(), timeout)
            if msg is grpc.aio.EOF:
                raise ConnectionError("stream ended")
            if msg.WhichOneof("body") == "result" and msg.result.request_id == request_id:
                return msg.result

    async def close(self) -> None:
        self.call.cancel()
        await self.channel.close()


class GateLoad:
    """Every gate presents tickets from ``codes`` (shared) through ``servers`` until stopped or out of tickets."""

    def __init__(self, servers: list[str], gates: list[tuple[str, str]], codes: list[str], *,
                 pause: float = 0.1, deadline: float = 2.0, connected_first: bool = False) -> None:
        self.servers, self.gates, self.codes = servers, gates, list(reversed(codes))
        # Codes admitted once, to be shown again at whichever gate is free (the visitor who tries twice):
        # a single-use ticket must be denied then, also when the failover fell between the two.
        self.again: list[str] = []
        self.pause, self.deadline = pause, deadline
        # A gate at a site keeps its stream open all day: with this, connecting is not counted as a person's wait.
        self.connected_first = connected_first
        self.result = GateResult()
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        self._tasks = [asyncio.create_task(self._gate(i, d, s)) for i, (d, s) in enumerate(self.gates)]

    async def stop(self) -> GateResult:
        self._stop.set()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        return self.result

    async def _gate(self, i: int, device: str, secret: str) -> None:
        which, n, stream = i % len(self.servers), 0, None
        try:
            if self.connected_first:
                try:
                    stream = _Stream(self.servers[which], device, secret)
                    await stream.open(30.0)
                except (grpc.aio.AioRpcError, ConnectionError, TimeoutError):
                    await stream.close()
                    stream = None  # the loop below connects again, and counts it
            while not self._stop.is_set() and (self.codes or self.again):
                second = bool(self.again) and (n % 2 == 1 or not self.codes)
                code = self.again.pop(0) if second else self.codes.pop()
                request_id, first = f"{device}-{n}", time.monotonic()
                n += 1
                while True:
                    try:
                        if stream is None:
                            stream = _Stream(self.servers[which], device, secret)
                            await stream.open(5.0)
                        res = await stream.validate(request_id, code, self.deadline)
                        break
                    except (grpc.aio.AioRpcError, ConnectionError, TimeoutError) as exc:
                        kind = _reason(exc) if isinstance(exc, grpc.aio.AioRpcError) else type(exc).__name__
                        self.result.errors[kind] += 1
                        if stream is not None:
                            await stream.close()
                        stream, which = None, (which + 1) % len(self.servers)
                        await asyncio.sleep(0.1)
                wait = time.monotonic() - first
                if wait > self.result.longest_wait:
                    self.result.longest_wait, self.result.longest_wait_began = wait, first
                self.result.decisions += 1
                if res.allow:
                    self.result.acked[request_id] = device
                    if not second:
                        self.again.append(code)
                else:
                    self.result.denied[reason_pb2.Reason.Name(res.reason)] += 1
                await asyncio.sleep(self.pause)
        finally:
            if stream is not None:
                await stream.close()


def verify_admissions(dsn: str, acked: dict[str, str]) -> dict[str, int]:
    """Acknowledged admissions vs the table: ``{"acked", "present", "lost", "duplicates"}``.

    ``duplicates``: single-use tickets admitted more than once, counted over EVERY
    validation the load's gates made (not only the acknowledged ones), so an
    admission the first reply never reached still counts. The load shows each
    admitted ticket a second time (:class:`GateLoad`), so a doubled entry is possible.
    """
    if not acked:
        return {"acked": 0, "present": 0, "lost": 0, "duplicates": 0}
    ids = list(acked)
    # An edge's offline admission the cluster would have refused stands under "<request id>:offline".
    ids += [f"{i}:offline" for i in acked]
    devices = sorted(set(acked.values()))
    with psycopg.connect(dsn, connect_timeout=5) as conn:
        present = {r[0].removesuffix(":offline") for r in conn.execute(
            "SELECT request_id FROM validations WHERE request_id = ANY(%s) AND allow AND annulled_at IS NULL",
            [ids]).fetchall()}
        doubled = conn.execute(
            """SELECT count(*) FROM (SELECT ticket_id FROM validations WHERE device_id = ANY(%s) AND allow
               AND counted AND annulled_at IS NULL AND ticket_id IS NOT NULL GROUP BY ticket_id HAVING count(*) > 1) d""",
            [devices]).fetchone()
    return {"acked": len(acked), "present": len(present), "lost": len(set(acked) - present),
            "duplicates": int(doubled[0]) if doubled else 0}
