"""Hands the client's deadline to the store, so database waits end when the caller stops waiting.

The innermost interceptor: it sets :data:`parkgate.server.store.retry.call_deadline`
from the call's remaining time, for the task that serves the call (tasks it
starts do not inherit it). The store then waits for a connection, and
retries idempotent work, through a failover for as long as the client is
prepared to wait, and not a moment longer (docs/ha.md).
"""

from __future__ import annotations

from typing import Any

import grpc

from parkgate.server.store.retry import set_call_deadline

from .call import CallState
from .interceptors import WrappingInterceptor


class DeadlineBudget(WrappingInterceptor):
    """Copies ``context.time_remaining()`` into the call's deadline (None: no deadline)."""

    async def enter(self, state: CallState, request: Any, context: grpc.aio.ServicerContext) -> None:
        set_call_deadline(context.time_remaining())
