"""The interceptors every contract RPC passes through (order in :mod:`parkgate.server.rpc`).

Each one wraps the method handler's behaviour with an ``enter`` before the
call and a ``leave`` after it (also for streams), so the cross-cutting rules
live here once instead of in every servicer. Calls outside the contract
(health checking, reflection) pass through untouched.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
import orjson
from google.protobuf.json_format import MessageToDict
from google.protobuf.message import Message

from parkgate.server.domain import device_certs
from parkgate.server.domain.audit_outbox import COMMITTED, CallRecord, current_call_record
from parkgate.server.domain.errors import (
    Conflict,
    Forbidden,
    InvalidArgument,
    NotFound,
    ParkgateError,
    Reason,
    Unauthenticated,
    Unavailable,
)

from .access import access_rules
from .call import CallState, certified_device, current_call
from .hostile import check_request, printable

log = logging.getLogger("parkgate.server.rpc")
request_log = logging.getLogger("parkgate.requests")

REASON_METADATA = "parkgate-reason"

_STATUS_OF: list[tuple[type[ParkgateError], grpc.StatusCode]] = [
    (NotFound, grpc.StatusCode.NOT_FOUND),
    (Unauthenticated, grpc.StatusCode.UNAUTHENTICATED),
    (Forbidden, grpc.StatusCode.PERMISSION_DENIED),
    (InvalidArgument, grpc.StatusCode.INVALID_ARGUMENT),
    (Unavailable, grpc.StatusCode.UNAVAILABLE),
    (Conflict, grpc.StatusCode.FAILED_PRECONDITION),
]


_STATUS_OF_REASON = {
    Reason.ALREADY_EXISTS: grpc.StatusCode.ALREADY_EXISTS,
    Reason.INTERNAL: grpc.StatusCode.INTERNAL,
    Reason.SERVER_OVERLOADED: grpc.StatusCode.RESOURCE_EXHAUSTED,
    Reason.DEVICE_FLOODING: grpc.StatusCode.RESOURCE_EXHAUSTED,
    Reason.LOGIN_THROTTLED: grpc.StatusCode.RESOURCE_EXHAUSTED,
}


def status_for(error: ParkgateError) -> grpc.StatusCode:
    if error.reason in _STATUS_OF_REASON:
        return _STATUS_OF_REASON[error.reason]
    for cls, code in _STATUS_OF:
        if isinstance(error, cls):
            return code
    return grpc.StatusCode.FAILED_PRECONDITION


# Personal data (S15) never reaches the operation log: it is read with members.personal, not with the log.
_SECRET_WORDS = ("password", "secret", "token", "photo", "id_document")


def summarize(request: Any) -> dict[str, Any]:
    """The request as JSON for the operation log, with secrets replaced and hostile text made harmless."""
    if not isinstance(request, Message):
        return {}

    def scrub(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: ("***" if any(w in k for w in _SECRET_WORDS) else scrub(v)) for k, v in value.items()}
        if isinstance(value, list):
            return [scrub(v) for v in value]
        return value

    return printable(scrub(MessageToDict(request, preserving_proto_field_name=True)))


class _Undecodable:
    """Stands in for a request whose bytes did not parse, so the error can carry a reason."""

    def __init__(self, error: Exception) -> None:
        self.error = error


Behavior = Callable[..., Any]


class WrappingInterceptor(grpc.aio.ServerInterceptor):
    """Base class: wraps every contract handler with :meth:`enter` and :meth:`leave`."""

    async def enter(self, state: CallState, request: Any, context: grpc.aio.ServicerContext) -> None:
        """Runs before the servicer; raise to refuse the call."""

    async def leave(self, state: CallState, error: BaseException | None) -> None:
        """Runs after the servicer (and after a stream's last message), with what it raised."""

    def wrap_deserializer(self, deserializer: Callable[[bytes], Any] | None) -> Callable[[bytes], Any] | None:
        return deserializer

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(details)
        if handler is None or details.method not in access_rules():
            return handler
        kind = ("stream" if handler.request_streaming else "unary") + "_" + (
            "stream" if handler.response_streaming else "unary"
        )
        inner = getattr(handler, kind)
        wrap = self._wrap_stream if handler.response_streaming else self._wrap_unary
        wrapped = wrap(inner, details.method)
        factory = getattr(grpc, f"{kind}_rpc_method_handler")
        return factory(
            wrapped,
            request_deserializer=self.wrap_deserializer(handler.request_deserializer),
            response_serializer=handler.response_serializer,
        )

    def _wrap_unary(self, inner: Behavior, method: str) -> Behavior:
        async def behavior(request: Any, context: grpc.aio.ServicerContext) -> Any:
            state = current_call.get()
            await self.enter(state, request, context)
            try:
                result = inner(request, context)
                if inspect.isawaitable(result):
                    result = await result
            except BaseException as exc:
                await self.leave(state, exc)
                raise
            await self.leave(state, None)
            return result

        return behavior

    def _wrap_stream(self, inner: Behavior, method: str) -> Behavior:
        async def behavior(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
            state = current_call.get()
            await self.enter(state, request, context)
            try:
                result = inner(request, context)
                if inspect.isawaitable(result):  # a servicer writing with context.write()
                    await result
                else:
                    async for item in result:
                        yield item
            except BaseException as exc:
                await self.leave(state, exc)
                raise
            await self.leave(state, None)

        return behavior


class RequestLog(WrappingInterceptor):
    """Outermost: creates the call state and writes one JSON line per call."""

    def _wrap_unary(self, inner: Behavior, method: str) -> Behavior:
        wrapped = super()._wrap_unary(inner, method)

        async def behavior(request: Any, context: grpc.aio.ServicerContext) -> Any:
            return await wrapped(request, self._start(context, method))

        return behavior

    def _wrap_stream(self, inner: Behavior, method: str) -> Behavior:
        wrapped = super()._wrap_stream(inner, method)

        async def behavior(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
            async for item in wrapped(request, self._start(context, method)):
                yield item

        return behavior

    def _start(self, context: grpc.aio.ServicerContext, method: str) -> grpc.aio.ServicerContext:
        rule = access_rules().get(method)
        current_call.set(CallState(method=method, peer=context.peer() or "", rule=rule))
        if rule is not None and (rule.device or rule.public):  # calls that may claim a device (log-in at a window)
            device_certs.presented_device.set(certified_device(context))
        return context

    async def leave(self, state: CallState, error: BaseException | None) -> None:
        if error is not None and state.outcome == "OK":
            state.outcome = "CANCELLED" if isinstance(error, asyncio.CancelledError) else "INTERNAL"
        line = {
            "ts": time.time(),
            "method": state.method,
            "peer": state.peer,
            "user": state.principal.username if state.principal else "",
            "device": state.device_id or (state.principal.device_id if state.principal else "") or "",
            "outcome": state.outcome,
            "ms": round((time.perf_counter() - state.started) * 1000, 3),
        }
        request_log.info(orjson.dumps(line).decode())


class ErrorMapping(WrappingInterceptor):
    """Turns exceptions into a gRPC status with the reason as trailing metadata.

    Domain errors keep their reason; a request whose bytes do not parse gets
    TRUNCATED_MESSAGE; an RPC nobody implemented yet gets UNIMPLEMENTED with
    NOT_IMPLEMENTED (never a fake success); anything else is INTERNAL, logged
    with its traceback, and the client learns nothing of the internals.
    """

    def wrap_deserializer(self, deserializer: Callable[[bytes], Any] | None) -> Callable[[bytes], Any] | None:
        if deserializer is None:
            return None

        def parse(data: bytes) -> Any:
            try:
                return deserializer(data)
            except Exception as exc:
                return _Undecodable(exc)

        return parse

    def _wrap_unary(self, inner: Behavior, method: str) -> Behavior:
        async def checked(request: Any, context: grpc.aio.ServicerContext) -> Any:
            return await _call(inner, _check_any(request), context)

        wrapped = super()._wrap_unary(checked, method)

        async def behavior(request: Any, context: grpc.aio.ServicerContext) -> Any:
            try:
                return await wrapped(request, context)
            except BaseException as exc:
                await self._abort(context, exc)

        return behavior

    def _wrap_stream(self, inner: Behavior, method: str) -> Behavior:
        wrapped = super()._wrap_stream(inner, method)

        async def behavior(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
            try:
                async for item in wrapped(_check_any(request), context):
                    yield item
            except BaseException as exc:
                await self._abort(context, exc)

        return behavior

    async def _abort(self, context: grpc.aio.ServicerContext, exc: BaseException) -> None:
        state = current_call.get()
        if isinstance(exc, ParkgateError):
            error = exc
        elif isinstance(exc, NotImplementedError):
            state.outcome = Reason.NOT_IMPLEMENTED.value
            await context.abort(
                grpc.StatusCode.UNIMPLEMENTED,
                f"{state.method} is not implemented yet",
                trailing_metadata=((REASON_METADATA, state.outcome),),
            )
        elif isinstance(exc, asyncio.CancelledError | grpc.aio.AbortError):
            raise exc
        else:
            log.exception("internal error in %s", state.method, exc_info=exc)
            error = ParkgateError("internal server error", Reason.INTERNAL)
        state.outcome = error.reason_name
        await context.abort(status_for(error), error.message, trailing_metadata=((REASON_METADATA, state.outcome),))


def _check_decoded(request: Any) -> Any:
    if isinstance(request, _Undecodable):
        raise InvalidArgument(f"the request message does not parse: {request.error}", Reason.TRUNCATED_MESSAGE)
    return request


def _check_any(request: Any) -> Any:
    """A unary request is checked now; a request stream message by message."""
    if hasattr(request, "__aiter__"):
        return _checked_stream(request)
    return _check_decoded(request)


async def _checked_stream(requests: AsyncIterator[Any]) -> AsyncIterator[Any]:
    async for request in requests:
        yield _check_decoded(request)


async def _call(inner: Behavior, request: Any, context: grpc.aio.ServicerContext) -> Any:
    result = inner(request, context)
    return await result if inspect.isawaitable(result) else result


class InputCheck(WrappingInterceptor):
    """Innermost: refuses hostile strings (:mod:`.hostile`) before any servicer sees them.

    It runs after the audit interceptor has taken the call's summary, so a
    refused mutating call still leaves its record (with the text made printable).
    """

    def _wrap_unary(self, inner: Behavior, method: str) -> Behavior:
        async def checked(request: Any, context: grpc.aio.ServicerContext) -> Any:
            if hasattr(request, "__aiter__"):
                return await _call(inner, _hostile_checked_stream(request), context)
            check_request(request)
            return await _call(inner, request, context)

        return checked

    def _wrap_stream(self, inner: Behavior, method: str) -> Behavior:
        async def checked(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
            if hasattr(request, "__aiter__"):
                request = _hostile_checked_stream(request)
            else:
                check_request(request)
            result = inner(request, context)
            if inspect.isawaitable(result):
                await result
            else:
                async for item in result:
                    yield item

        return checked


async def _hostile_checked_stream(requests: AsyncIterator[Any]) -> AsyncIterator[Any]:
    async for request in requests:
        check_request(request)
        yield request


class Authentication(WrappingInterceptor):
    """Resolves ``authorization: Bearer <token>`` into the caller's Principal.

    Public calls (log-in) need none; device calls (gate streams) authenticate
    the device inside the stream, where its credentials arrive.
    """

    def __init__(self, authenticate: Callable[[str], Awaitable[Any]]) -> None:
        self._authenticate = authenticate

    async def enter(self, state: CallState, request: Any, context: grpc.aio.ServicerContext) -> None:
        rule = state.rule
        if rule is None or rule.public or rule.device:
            return
        token = ""
        for key, value in context.invocation_metadata() or ():
            if key == "authorization" and isinstance(value, str) and value.startswith("Bearer "):
                token = value[len("Bearer ") :].strip()
        state.principal = await self._authenticate(token)


class Permission(WrappingInterceptor):
    """Checks the permission the contract declares for the RPC (S3)."""

    async def enter(self, state: CallState, request: Any, context: grpc.aio.ServicerContext) -> None:
        rule = state.rule
        if rule is None or rule.public or rule.device or not rule.permission:
            return
        if state.principal is None or not state.principal.may(rule.permission):
            raise Forbidden(f"{state.method} needs the permission {rule.permission!r}", Reason.PERMISSION_DENIED)


class Audit(WrappingInterceptor):
    """Records every mutating call, with its outcome, in the operation log (S5).

    A unary mutating call runs with its :class:`CallRecord` current, so each
    transaction it commits stages the record in the outbox too; the record
    written here removes that row in the same transaction. If this write
    fails, the staged row stays and the server's drainer chains it: a change
    that committed never goes without its record.
    """

    def __init__(self, record: Callable[..., Awaitable[None]]) -> None:
        self._record = record

    def _wrap_unary(self, inner: Behavior, method: str) -> Behavior:
        wrapped = super()._wrap_unary(inner, method)

        async def behavior(request: Any, context: grpc.aio.ServicerContext) -> Any:
            state = current_call.get()
            if state.rule is None or not state.rule.mutating:
                return await wrapped(request, context)
            # Streams are left out: tasks they start would carry the record past the stream's end.
            token = current_call_record.set(CallRecord(str(uuid.uuid4()), lambda: self._fields(state, COMMITTED)))
            try:
                return await wrapped(request, context)
            finally:
                current_call_record.reset(token)

        return behavior

    async def enter(self, state: CallState, request: Any, context: grpc.aio.ServicerContext) -> None:
        if state.rule is not None and state.rule.mutating:
            state.request_summary = summarize(request)
            named = device_certs.presented_device.get()
            if named is not None:  # which device's certificate made the call (a mismatch is refused, and recorded)
                state.request_summary["client_certificate"] = printable(named)

    @staticmethod
    def _fields(state: CallState, outcome: str) -> dict[str, Any]:
        who = state.principal
        summary = state.request_summary or {}
        if who is None and state.method.endswith("/Login"):
            username = str(summary.get("username", ""))
        else:
            username = who.username if who else ""
        return {"user_id": who.user_id if who else None, "username": username,
                "device_id": state.device_id or (who.device_id if who else "") or "",
                "method": state.method, "outcome": outcome, "summary": summary, "peer": state.peer}

    async def leave(self, state: CallState, error: BaseException | None) -> None:
        if state.rule is None or not state.rule.mutating:
            return
        if isinstance(error, ParkgateError):
            outcome = error.reason_name
        elif isinstance(error, NotImplementedError):
            outcome = Reason.NOT_IMPLEMENTED.value
        elif error is not None:
            outcome = "CANCELLED" if isinstance(error, asyncio.CancelledError) else "INTERNAL"
        else:
            outcome = "OK"
        call = current_call_record.get()
        current_call_record.set(None)  # the record's own transaction stages nothing
        fields = self._fields(state, outcome)
        try:
            await self._record(**fields, call=call)
        except Exception as exc:
            # The call itself has already happened; a lost record is an
            # operational alarm, not a reason to tell the client it failed. A
            # committed change's record is still staged in the outbox; the whole
            # record also goes to the server log.
            log.error("operation log write failed for %s (%s): %s; record: %s", state.method, outcome, exc,
                      orjson.dumps({k: v for k, v in fields.items() if k != "user_id"}).decode())


def interceptor_chain(
    authenticate: Callable[[str], Awaitable[Any]], record_audit: Callable[..., Awaitable[None]]
) -> list[grpc.aio.ServerInterceptor]:
    # Audit sits outside authentication: a refused attempt at a mutating call
    # (no session, no permission, hostile text) is recorded too.
    return [RequestLog(), ErrorMapping(), Audit(record_audit), Authentication(authenticate), Permission(),
            InputCheck()]
