"""The contract at the wire: reflection, unimplemented RPCs, bad bytes, generated code freshness."""

from __future__ import annotations

import filecmp
import importlib
import subprocess
import sys
from pathlib import Path

import grpc
import pytest
from google.protobuf import descriptor_pool, message_factory
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase

from parkgate.common.channels import open_channel
from tests.fixtures.server import RunningServer, reason_of

ROOT = Path(__file__).resolve().parents[2]


async def test_a_call_through_reflection_alone(parkgate_server: RunningServer) -> None:
    """A client that has no generated code finds Auth/Login by reflection and logs in."""

    def reflect_and_call(address: str, password: str) -> tuple[list[str], str]:
        with open_channel(address) as channel:
            db = ProtoReflectionDescriptorDatabase(channel)
            services = list(db.get_services())
            pool = descriptor_pool.DescriptorPool(db)
            method = pool.FindServiceByName("parkgate.v1.Auth").methods_by_name["Login"]
            request_cls = message_factory.GetMessageClass(method.input_type)
            response_cls = message_factory.GetMessageClass(method.output_type)
            login = channel.unary_unary(
                "/parkgate.v1.Auth/Login",
                request_serializer=request_cls.SerializeToString,
                response_deserializer=response_cls.FromString,
            )
            reply = login(request_cls(username="admin", password=password), timeout=30)
            return services, reply.token

    import asyncio

    services, token = await asyncio.to_thread(reflect_and_call, parkgate_server.address,
                                              parkgate_server.admin_password)
    assert "parkgate.v1.Sales" in services and "grpc.health.v1.Health" in services
    assert len(token) > 20


def _unimplemented() -> list[tuple[str, str, str]]:
    """(package module, service, method) of every contract RPC no server servicer overrides."""
    out = []
    for name in ("admin", "auth", "catalog", "gate", "ops", "sales"):
        pb = importlib.import_module(f"parkgate.v1.{name}_pb2")
        grpc_mod = importlib.import_module(f"parkgate.v1.{name}_pb2_grpc")
        servicers = importlib.import_module(f"parkgate.server.rpc.servicers.{name}")
        for service in pb.DESCRIPTOR.services_by_name.values():
            base = getattr(grpc_mod, f"{service.name}Servicer")
            impl = getattr(servicers, f"{service.name}Servicer", base)
            out += [(name, service.name, m.name) for m in service.methods
                    if getattr(impl, m.name) is getattr(base, m.name)]
    return out


def test_no_sales_rpc_is_unimplemented() -> None:
    """Issue 15: every Sales RPC (vouchers, groups, members, top-ups, back-entry included) has a use case."""
    assert [x for x in _unimplemented() if x[1] == "Sales"] == []


def test_every_rpc_the_contract_declares_is_built() -> None:
    """No RPC of the contract falls through to the generated base class (which would answer UNIMPLEMENTED)."""
    assert _unimplemented() == []


async def test_truncated_message_is_refused_with_a_reason(parkgate_server: RunningServer) -> None:
    from parkgate.v1 import auth_pb2

    good = auth_pb2.LoginRequest(username="admin", password="x" * 40).SerializeToString()
    raw = parkgate_server.channel().unary_unary("/parkgate.v1.Auth/Login")
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await raw(good[:-10], timeout=10)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert reason_of(err.value) == "TRUNCATED_MESSAGE"


def test_generated_code_matches_the_proto_files(tmp_path: Path) -> None:
    """The generated modules in the tree are exactly what protoc makes of the .proto files now."""
    from grpc_tools import protoc

    include = Path(protoc.__file__).parent / "_proto"
    protos = sorted(str(p.relative_to(ROOT / "proto")) for p in (ROOT / "proto/parkgate/v1").glob("*.proto"))
    subprocess.run(
        [sys.executable, "-m", "grpc_tools.protoc", "-I.", f"-I{include}", f"--python_out={tmp_path}",
         f"--pyi_out={tmp_path}", f"--grpc_python_out={tmp_path}", *protos],
        cwd=ROOT / "proto", check=True,
    )
    generated = sorted(p.name for p in (tmp_path / "parkgate/v1").iterdir())
    _same, mismatch, errors = filecmp.cmpfiles(tmp_path / "parkgate/v1", ROOT / "proto/parkgate/v1", generated,
                                               shallow=False)
    assert not mismatch and not errors, f"stale generated code: {mismatch + errors}; reinstall (make setup)"
