"""Every RPC of the contract, called with hostile strings in every string field.

The requests are generated from the descriptors, so an RPC added later is
fuzzed without touching this file. No call may end INTERNAL (or UNKNOWN), a
string field holding hostile text is refused with INVALID_ARGUMENT and a reason
naming the problem, and every mutating call leaves its audit record.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator

import grpc
import orjson
import psycopg
import pytest
from google.protobuf import descriptor_pool
from google.protobuf.descriptor import Descriptor, FieldDescriptor, MethodDescriptor
from google.protobuf.message import Message
from google.protobuf.message_factory import GetMessageClass

from parkgate.server.rpc.access import access_rules
from parkgate.v1 import admin_pb2, auth_pb2
from tests.fixtures.server import RunningServer, reason_of

HOSTILE = [
    "ad\x00min",                    # NUL: PostgreSQL refuses it in text
    "\x1b[2J\x1b[31mowned",         # a terminal escape
    "line\nbreak\rcarriage",         # log-line injection in an identifier
    "admin\u202egnp.exe",           # a bidirectional override
    "x" * 5000,                      # longer than any field allows
]
EXPECTED_REASONS = {"TEXT_NOT_ALLOWED", "TEXT_TOO_LONG"}


def _method(name: str) -> MethodDescriptor:
    return descriptor_pool.Default().FindMethodByName(name.strip("/").replace("/", "."))


def _fill(message: Message, text: str, depth: int = 0) -> int:
    """Put ``text`` into every string field (and nested message) of ``message``; how many were set."""
    filled = 0
    descriptor: Descriptor = message.DESCRIPTOR
    for field in descriptor.fields:
        repeated = field.is_repeated
        if field.type == FieldDescriptor.TYPE_STRING:
            if repeated:
                getattr(message, field.name).append(text)
            else:
                setattr(message, field.name, text)
            filled += 1
        elif field.type == FieldDescriptor.TYPE_MESSAGE and depth < 3:
            if field.message_type.GetOptions().map_entry:
                key_type = field.message_type.fields_by_name["key"].type
                value_type = field.message_type.fields_by_name["value"].type
                if key_type == FieldDescriptor.TYPE_STRING and value_type == FieldDescriptor.TYPE_STRING:
                    getattr(message, field.name)[text] = text
                    filled += 1
            elif field.message_type.full_name.startswith("google.protobuf."):
                continue
            elif repeated:
                filled += _fill(getattr(message, field.name).add(), text, depth + 1)
            elif field.containing_oneof is None or not message.WhichOneof(field.containing_oneof.name):
                filled += _fill(getattr(message, field.name), text, depth + 1)
    return filled


async def _call(channel: grpc.aio.Channel, name: str, method: MethodDescriptor, request: Message,
                metadata: tuple[tuple[str, str], ...]) -> grpc.aio.AioRpcError | None:
    request_class = type(request)
    response_class = GetMessageClass(method.output_type)
    kwargs = {"request_serializer": request_class.SerializeToString,
              "response_deserializer": response_class.FromString}
    try:
        if method.client_streaming:
            call = channel.stream_stream(name, **kwargs)

            async def one() -> AsyncIterator[Message]:
                yield request

            async for _ in call(one(), metadata=metadata, timeout=30):
                pass
        elif method.server_streaming:
            async for _ in channel.unary_stream(name, **kwargs)(request, metadata=metadata, timeout=30):
                break
        else:
            await channel.unary_unary(name, **kwargs)(request, metadata=metadata, timeout=30)
    except grpc.aio.AioRpcError as exc:
        return exc
    return None


async def _audit_counts(dsn: str) -> Counter[str]:
    async with await psycopg.AsyncConnection.connect(dsn) as conn:
        rows = await (await conn.execute("SELECT method, count(*) FROM audit_log GROUP BY method")).fetchall()
    return Counter({method: count for method, count in rows})


async def test_every_rpc_with_hostile_strings(parkgate_server: RunningServer, module_dsn: str) -> None:
    admin = await parkgate_server.admin()
    rules = access_rules()
    before = await _audit_counts(module_dsn)
    calls: Counter[str] = Counter()
    failures = []
    refused_with_reason = 0
    for name in sorted(rules):
        method = _method(name)
        for text in HOSTILE:
            request = GetMessageClass(method.input_type)()
            if name == "/parkgate.v1.Gate/Connect":
                filled = _fill(request.hello, text)
            else:
                filled = _fill(request, text)
            error = await _call(admin.channel, name, method, request, admin.metadata)
            calls[name] += 1
            if name.endswith("/Logout"):  # the one call that ends the session we fuzz with
                admin = await parkgate_server.admin()
                calls["/parkgate.v1.Auth/Login"] += 1
            code = error.code() if error else grpc.StatusCode.OK
            if code in (grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN):
                failures.append(f"{name} with {text[:20]!r}: {code.name} {error.details() if error else ''}")
            elif filled and (code != grpc.StatusCode.INVALID_ARGUMENT or reason_of(error) not in EXPECTED_REASONS):
                failures.append(f"{name} with {text[:20]!r}: {code.name} {reason_of(error) if error else ''}")
            else:
                refused_with_reason += bool(filled)
    assert not failures, "\n".join(failures)
    assert refused_with_reason > 100  # the contract has many string fields: most calls had one
    after = await _audit_counts(module_dsn)
    lost = {name: (calls[name], after[name] - before[name]) for name, rule in rules.items()
            if rule.mutating and after[name] - before[name] != calls[name]}
    assert not lost, f"audit records missing (calls, records): {lost}"


async def test_login_as_nul_name_is_refused_and_recorded(parkgate_server: RunningServer) -> None:
    admin = await parkgate_server.admin()
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await admin.auth.Login(auth_pb2.LoginRequest(username="ad\x00min", password=parkgate_server.admin_password))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert reason_of(err.value) == "TEXT_NOT_ALLOWED"
    assert "username" in (err.value.details() or "")
    log = await admin.admin.ListAuditLog(admin_pb2.ListAuditLogRequest(method_contains="/Login"),
                                         metadata=admin.metadata)
    record = next(r for r in log.records if r.outcome == "TEXT_NOT_ALLOWED")
    assert record.username == "ad\\u0000min"
    assert orjson.loads(record.summary)["password"] == "***"


async def test_free_text_keeps_its_line_breaks(parkgate_server: RunningServer) -> None:
    admin = await parkgate_server.admin()
    entry = admin_pb2.DictionaryEntry(key="label.welcome", language="en", text="Welcome!\nEnjoy the park.")
    await admin.admin.PutDictionaryEntry(admin_pb2.PutDictionaryEntryRequest(entry=entry), metadata=admin.metadata)
    listed = await admin.admin.ListDictionary(admin_pb2.ListDictionaryRequest(language="en", prefix="label.welcome"),
                                              metadata=admin.metadata)
    assert [e.text for e in listed.entries] == ["Welcome!\nEnjoy the park."]
