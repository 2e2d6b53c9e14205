"""One server's standard gRPC health check, as the supervisor and ``cluster status`` both ask it."""

from __future__ import annotations

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from parkgate.common.channels import open_channel


def server_health(address: str, timeout: float = 1.0) -> str:
    """The standard health check of one server: SERVING, NOT_SERVING, ... or UNREACHABLE."""
    try:
        with open_channel(address) as channel:
            reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=timeout)
    except grpc.RpcError as exc:
        code = exc.code() if hasattr(exc, "code") else None
        return "UNREACHABLE" if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED) else str(code)
    return str(health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status))
