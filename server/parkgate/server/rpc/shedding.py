"""Sheds heavy calls while the server runs on battery (S30): the contract's ``(access).heavy`` RPCs."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import grpc

from parkgate.server.domain.errors import Reason, Unavailable

from .access import access_rules
from .call import CallState
from .interceptors import WrappingInterceptor


class PowerShedding(WrappingInterceptor):
    """Refuses a heavy RPC with SERVER_ON_BATTERY while ``shedding()`` says so; everything else passes."""

    def __init__(self, shedding: Callable[[], bool]) -> None:
        self._shedding = shedding

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        # Only heavy RPCs are wrapped: the gate streams and sales keep their handlers as they are.
        rule = access_rules().get(details.method)
        if rule is None or not rule.heavy:
            return await continuation(details)
        return await super().intercept_service(continuation, details)

    async def enter(self, state: CallState, request: Any, context: grpc.aio.ServicerContext) -> None:
        rule = state.rule
        if rule is not None and rule.heavy and self._shedding():
            raise Unavailable(f"{state.method}: this server runs on battery; reports and live feeds wait until "
                              f"the mains are back", Reason.SERVER_ON_BATTERY)
