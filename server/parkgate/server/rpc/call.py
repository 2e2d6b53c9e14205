"""What the interceptors learn about the call in progress, shared through a context variable.

grpc.aio runs every RPC in its own task, so a ContextVar set by the outermost
interceptor is private to that call and visible to the servicer.
"""

from __future__ import annotations

import time
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

import grpc

from parkgate.common.tls import device_of_peer
from parkgate.server.domain.operators import Principal

from .access import AccessRule


@dataclass(slots=True)
class CallState:
    method: str
    peer: str
    rule: AccessRule | None
    started: float = field(default_factory=time.perf_counter)
    principal: Principal | None = None
    device_id: str = ""           # set by device-authenticated calls (gate streams)
    outcome: str = "OK"           # a Reason name, or a gRPC code name for non-domain errors
    request_summary: dict[str, Any] | None = None


current_call: ContextVar[CallState] = ContextVar("parkgate_current_call")


def principal() -> Principal:
    """The authenticated operator of the current call (the Authentication interceptor set it)."""
    state = current_call.get()
    if state.principal is None:  # pragma: no cover - the interceptor guarantees it for non-public calls
        raise RuntimeError("no principal on this call")
    return state.principal


def certified_device(context: grpc.aio.ServicerContext) -> str | None:
    """The device the connection's client certificate names (the handshake verified it against the device CA).

    None without one: a port that does not ask for client certificates never has one (gRPC Python can only
    require them or not ask, hence the separate device port, ``server.device_listen``).
    """
    return device_of_peer(context.auth_context())
