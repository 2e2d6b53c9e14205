"""A bare grpc.aio server with the contract's Gate.Connect shape and nothing behind it: the transport's ceiling.

    python -m loadtests.echo_gate_server --listen 127.0.0.1:PORT

It answers the hello with a Welcome and every validation with a
ValidationResult carrying the same request_id (allow=true); heartbeats, acks
and passage reports are read and ignored. Same grpc settings as `parkgate
server` (``grpc.aio.server()`` with default options, one asyncio loop, no
interceptors since there is nothing to authenticate). It also serves the
standard health service so loadtests.bench_gates can wait for it exactly like
for a parkgate server. Used by loadtests/bench_gates.py; listens on loopback only.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from collections.abc import AsyncIterator

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from parkgate.common.channels import listen as listen_on
from parkgate.v1 import gate_pb2, gate_pb2_grpc


class EchoGate(gate_pb2_grpc.GateServicer):
    async def Connect(self, request_iterator: AsyncIterator[gate_pb2.GateMessage],
                      context: grpc.aio.ServicerContext) -> AsyncIterator[gate_pb2.ServerMessage]:
        async for message in request_iterator:
            kind = message.WhichOneof("body")
            if kind == "validation":
                yield gate_pb2.ServerMessage(result=gate_pb2.ValidationResult(
                    request_id=message.validation.request_id, allow=True, entries_left=-1, persons=1))
            elif kind == "hello":
                yield gate_pb2.ServerMessage(welcome=gate_pb2.Welcome(server_id="echo"))


async def serve(listen: str) -> None:
    server = grpc.aio.server()
    gate_pb2_grpc.add_GateServicer_to_server(EchoGate(), server)
    checker = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(checker, server)
    if listen_on(server, listen) == 0:
        raise OSError(f"cannot listen on {listen}")
    await server.start()
    await checker.set("", health_pb2.HealthCheckResponse.SERVING)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await server.stop(1.0)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--listen", required=True, help="host:port, e.g. 127.0.0.1:50123")
    args = parser.parse_args(argv)
    if not args.listen.startswith(("127.0.0.1:", "localhost:", "[::1]:")):
        parser.error("the echo server listens on loopback only")
    asyncio.run(serve(args.listen))
    return 0


if __name__ == "__main__":
    sys.exit(main())
