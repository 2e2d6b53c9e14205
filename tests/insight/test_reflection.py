"""Server reflection answers under grpc.reflection.v1 and v1alpha, over a real channel."""

from __future__ import annotations

import asyncio

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from grpc_reflection.v1alpha import reflection_pb2 as v1alpha_pb2

from parkgate.common.channels import open_channel
from parkgate.server.rpc.reflection import V1_FILE, V1_SERVICE, v1_file_descriptor
from tests.fixtures.server import RunningServer


def _v1_messages() -> tuple[type, type]:
    """The v1 request and response classes, built from the v1 proto the way a v1-only tool knows them."""
    pool = descriptor_pool.DescriptorPool()
    pool.Add(v1_file_descriptor())
    request = message_factory.GetMessageClass(pool.FindMessageTypeByName("grpc.reflection.v1.ServerReflectionRequest"))
    response = message_factory.GetMessageClass(pool.FindMessageTypeByName("grpc.reflection.v1.ServerReflectionResponse"))
    return request, response


def _ask(address: str, service: str, request_cls: type, response_cls: type, **question: object) -> object:
    with open_channel(address) as channel:
        call = channel.stream_stream(f"/{service}/ServerReflectionInfo", request_serializer=request_cls.SerializeToString,
                                     response_deserializer=response_cls.FromString)
        return next(iter(call(iter([request_cls(**question)]), timeout=30)))


async def test_v1_and_v1alpha_both_list_the_services(parkgate_server: RunningServer) -> None:
    v1_request, v1_response = _v1_messages()
    v1 = await asyncio.to_thread(_ask, parkgate_server.address, V1_SERVICE, v1_request, v1_response, list_services="")
    alpha = await asyncio.to_thread(_ask, parkgate_server.address, "grpc.reflection.v1alpha.ServerReflection",
                                    v1alpha_pb2.ServerReflectionRequest, v1alpha_pb2.ServerReflectionResponse,
                                    list_services="")
    v1_names = {s.name for s in v1.list_services_response.service}  # type: ignore[attr-defined]
    alpha_names = {s.name for s in alpha.list_services_response.service}  # type: ignore[attr-defined]
    assert v1_names == alpha_names
    for name in ("parkgate.v1.Gate", "parkgate.v1.Reports", "grpc.health.v1.Health",
                 "grpc.reflection.v1.ServerReflection", "grpc.reflection.v1alpha.ServerReflection"):
        assert name in v1_names, v1_names


async def test_v1_describes_a_contract_service_and_itself(parkgate_server: RunningServer) -> None:
    v1_request, v1_response = _v1_messages()
    for symbol, expect_file in (("parkgate.v1.Reports", "parkgate/v1/reports.proto"), (V1_SERVICE, V1_FILE)):
        reply = await asyncio.to_thread(_ask, parkgate_server.address, V1_SERVICE, v1_request, v1_response,
                                        file_containing_symbol=symbol)
        files = [descriptor_pb2.FileDescriptorProto.FromString(raw)
                 for raw in reply.file_descriptor_response.file_descriptor_proto]  # type: ignore[attr-defined]
        assert expect_file in [f.name for f in files], (symbol, [f.name for f in files])


async def test_v1_unknown_symbol_is_a_clear_not_found(parkgate_server: RunningServer) -> None:
    v1_request, v1_response = _v1_messages()
    reply = await asyncio.to_thread(_ask, parkgate_server.address, V1_SERVICE, v1_request, v1_response,
                                    file_containing_symbol="no.such.Service")
    assert reply.error_response.error_code == 5  # type: ignore[attr-defined]  # NOT_FOUND
