"""Hands the client's deadline to the store, so database waits end when the caller stops waiting.

The innermost interceptor: it sets :data:`parkgate.store.retry.call_deadline`
from the call's remaining time. The store then waits for a connection, and
retries idempotent work, through a failover for as long as the client is
prepared to wait, and not a moment longer (docs/ha.md).
"""

from __future__ import annotations

import time
from typing import Any

import grpc

from parkgate.store.retry import call_deadline

from .call import CallState
from .interceptors import WrappingInterceptor


class DeadlineBudget(WrappingInterceptor):
    """Copies ``context.time_remaining()`` into the call's ContextVar (None: no deadline)."""

    async def enter(self, state: CallState, request: Any, context: grpc.aio.ServicerContext) -> None:
        remaining = context.time_remaining()
        call_deadline.set(None if remaining is None else time.monotonic() + remaining)
