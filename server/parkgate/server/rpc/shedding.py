"""What a call does while the server runs on battery (S30): the contract's ``(access).on_battery``.

* ``ON_BATTERY_QUEUED`` (the reports): at most ``battery.reports_at_once`` run at a
  time; the others wait their turn in a queue of ``battery.report_queue``, and one
  more than that is refused with SERVER_ON_BATTERY (a queue without end would hold
  calls and memory for nothing).
* ``ON_BATTERY_REFUSED`` (truly heavy work nothing at the park waits for, like
  verifying the whole operation log): refused with SERVER_ON_BATTERY.
* ``ON_BATTERY_SLOWED`` (LiveFlow) is the stream's own business
  (:class:`~parkgate.server.services.flow.LiveFlowService` asks the power state
  before each push); everything else passes untouched.

A call that began on mains is not counted in the queue; a call queued on battery
keeps its place in the queue if the mains come back meanwhile.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from typing import Any

import grpc

from parkgate.server.domain.errors import Reason, Unavailable
from parkgate.v1 import options_pb2

from .access import access_rules
from .call import CallState
from .interceptors import WrappingInterceptor

_WRAPPED = (options_pb2.ON_BATTERY_QUEUED, options_pb2.ON_BATTERY_REFUSED)


class BatteryQueue:
    """``at_once`` slots, at most ``queue`` callers waiting for one."""

    def __init__(self, at_once: int, queue: int) -> None:
        self.at_once = at_once
        self.queue = queue
        self.slots = asyncio.Semaphore(at_once)
        self.waiting = 0
        self.running = 0

    async def enter(self, method: str) -> None:
        if self.slots.locked() and self.waiting >= self.queue:
            raise Unavailable(f"{method}: this server runs on battery and its report queue is full "
                              f"({self.at_once} running, {self.waiting} waiting); try later", Reason.SERVER_ON_BATTERY)
        self.waiting += 1
        try:
            await self.slots.acquire()
        finally:
            self.waiting -= 1
        self.running += 1

    def leave(self) -> None:
        self.running -= 1
        self.slots.release()


_queued: ContextVar[bool] = ContextVar("parkgate_battery_queued", default=False)


class PowerShedding(WrappingInterceptor):
    """Queues the reports and refuses the truly heavy calls while ``on_battery()`` says so."""

    def __init__(self, on_battery: Callable[[], bool], queue: BatteryQueue) -> None:
        self._on_battery = on_battery
        self.queue = queue

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        # Only the queued and refused RPCs are wrapped: the gate streams and sales keep their handlers as they are.
        rule = access_rules().get(details.method)
        if rule is None or rule.on_battery not in _WRAPPED:
            return await continuation(details)
        return await super().intercept_service(continuation, details)

    async def enter(self, state: CallState, request: Any, context: grpc.aio.ServicerContext) -> None:
        rule = state.rule
        if rule is None or not self._on_battery():
            return
        if rule.on_battery == options_pb2.ON_BATTERY_REFUSED:
            raise Unavailable(f"{state.method}: this server runs on battery; this heavy work waits until the "
                              f"mains are back", Reason.SERVER_ON_BATTERY)
        if rule.on_battery == options_pb2.ON_BATTERY_QUEUED:
            await self.queue.enter(state.method)
            _queued.set(True)

    async def leave(self, state: CallState, error: BaseException | None) -> None:
        if _queued.get():
            _queued.set(False)
            self.queue.leave()
