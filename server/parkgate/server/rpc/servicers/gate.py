"""Gate service (the turnstile stream) and GateControl (emergency, capacity, occupancy, gates, held checks).

One Connect stream per gate: the first message must be a hello with the
device's credentials; then validations, heartbeats, acknowledgements and
passage reports flow in while results and commands flow out. A gate may send
its next validation before the previous answer arrived: each is decided as
soon as the pipeline can, and answers go out in the order they are ready.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

import grpc

from parkgate.server.domain.admission import Decision
from parkgate.server.domain.errors import InvalidArgument, ParkgateError, Reason
from parkgate.server.domain.flow import is_forwarded
from parkgate.server.services.gates import GATE_STREAM_END, GateCommand, GateHub, GateResult, GateSession
from parkgate.server.services.held_checks import HeldCheckService
from parkgate.server.store.gates import ParkView
from parkgate.v1 import gate_pb2, gate_pb2_grpc

from .. import convert
from .. import convert_catalogue as cc
from ..call import current_call, principal

log = logging.getLogger(__name__)
Ctx = grpc.aio.ServicerContext



def _welcome(hub: GateHub, session: GateSession, server_id: str) -> gate_pb2.ServerMessage:
    keys = [gate_pb2.VerifyKey(key_id=e.key_id, public_key=e.public_key, retired=e.state.name == "RETIRED")
            for e in hub.pipeline.keyring if e.state.name != "REVOKED"]
    revoked = [str(e.key_id) for e in hub.pipeline.keyring if e.state.name == "REVOKED"]
    return gate_pb2.ServerMessage(welcome=gate_pb2.Welcome(
        server_id=server_id, keys=keys, revoked_key_ids=revoked, revoked_serials=hub.revoked_serials,
        entry_paused=session.paused,
        emergency_open=session.emergency, language=session.language,
        park_number=session.place.park_number, attraction_slot=session.place.attraction_slot,
        time_zone=session.place.time_zone, park_id=session.place.park_id, attraction_id=session.place.attraction_id,
        attraction_slots=session.attraction_slots,
        products=[gate_pb2.AdmissionTerms(
            product_number=number, entries_total=t.entries_total, entries_per_day=t.entries_per_day,
            reentry_allowed=t.reentry_allowed, hold_for_check=t.hold_for_check, valid_days=t.valid_days)
            for number, t in session.products],
    ))


def _outgoing(message: GateResult | GateCommand) -> gate_pb2.ServerMessage:
    if isinstance(message, GateCommand):
        return gate_pb2.ServerMessage(command=gate_pb2.GateCommand(
            command_id=message.command_id, kind=gate_pb2.CommandKind.Value(message.kind), reason_text=message.text,
            request_id=message.request_id,
            keys=[gate_pb2.VerifyKey(key_id=k, public_key=pk, retired=retired) for k, pk, retired in message.keys],
            revoked_key_ids=[str(k) for k in message.revoked_key_ids], revoked_serials=message.revoked_serials))
    d = message.decision
    return gate_pb2.ServerMessage(result=gate_pb2.ValidationResult(
        request_id=message.request_id, allow=d.allow, reason=d.reason.number,
        display_text=message.display_text, entries_left=d.entries_left, persons=d.persons, ticket_id=d.ticket_id,
        hold_for_check=d.hold_for_check, photo_ref=d.photo_ref, swallow_card=d.swallow_card,
        balance=convert.money(d.balance, message.currency) if d.balance is not None else None,
    ))


class GateServicer(gate_pb2_grpc.GateServicer):
    def __init__(self, hub: GateHub, server_id: str) -> None:
        self.hub = hub
        self.server_id = server_id

    async def Connect(
        self, request_iterator: AsyncIterator[gate_pb2.GateMessage], context: Ctx
    ) -> AsyncIterator[gate_pb2.ServerMessage]:
        first = await anext(aiter(request_iterator), None)
        if first is None or first.WhichOneof("body") != "hello":
            raise InvalidArgument("a gate stream starts with a hello naming the device and its secret")
        hello = first.hello
        current_call.get().device_id = hello.device_id  # a refused hello's record names the device it claimed
        session, _state = await self.hub.connect(
            device_id=hello.device_id, secret=hello.device_secret, direction=convert.direction_name(hello.direction),
            park_id=hello.park_id, attraction_id=hello.attraction_id, software_version=hello.software_version,
            confirms_passage=hello.confirms_passage, fast_mode=hello.fast_mode,
        )
        current_call.get().device_id = session.device_id
        yield _welcome(self.hub, session, self.server_id)
        tasks: set[asyncio.Task[None]] = set()
        reader = asyncio.create_task(self._read(request_iterator, session, tasks))
        try:
            while True:
                message = await session.outbox.get()
                if message is GATE_STREAM_END:
                    break
                yield _outgoing(message)  # type: ignore[arg-type]
            reader.result()  # a broken stream ends here with its error
        finally:
            reader.cancel()
            for task in tasks:
                task.cancel()
            await self.hub.disconnect(session)

    async def _read(self, requests: AsyncIterator[gate_pb2.GateMessage], session: GateSession,
                    tasks: set[asyncio.Task[None]]) -> None:
        try:
            limits = self.hub.limits
            async for message in requests:
                if message.ByteSize() > limits.max_message_bytes:
                    raise ParkgateError(f"a gate message of {message.ByteSize()} bytes (at most "
                                        f"{limits.max_message_bytes})", Reason.DEVICE_FLOODING)
                kind = message.WhichOneof("body")
                allowed = self.hub.message_allowed(session)
                if kind == "validation":
                    v = message.validation
                    if not allowed:  # answered at once: the gate decides offline, the others do not wait
                        session.outbox.put_nowait(self.hub.result(session, v.request_id,
                                                                  Decision.deny(Reason.DEVICE_FLOODING)))
                        continue
                    credential = v.WhichOneof("credential")
                    self.hub.submit(session, v.request_id, code=v.code if credential == "code" else "",
                                    card_uid=v.card_uid if credential == "card_uid" else "",
                                    direction=convert.direction_name(v.direction),  # type: ignore[arg-type]
                                    forwarded=v.HasField("scanned_at") and is_forwarded(v.scanned_at.seconds, time.time()))
                    continue
                if not allowed:
                    continue  # a flood of heartbeats or acknowledgements is dropped, not queued
                if kind == "heartbeat":
                    work = self.hub.heartbeat(session, message.heartbeat.state, message.heartbeat.on_battery)
                elif kind == "ack":
                    a = message.ack
                    work = self.hub.acknowledge(session, a.command_id, a.done, a.detail)
                elif kind == "passage":
                    work = self.hub.passage(session, message.passage.request_id, message.passage.passed)
                else:
                    continue  # a second hello changes nothing
                task = asyncio.create_task(_logged(work, session.device_id, kind))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
        finally:
            session.end_when_answered()


async def _logged(work: Any, device_id: str, kind: str) -> None:
    try:
        await work
    except ParkgateError as exc:
        log.warning("gate %s: %s failed: %s", device_id, kind, exc)


class GateControlServicer(gate_pb2_grpc.GateControlServicer):
    def __init__(self, hub: GateHub, held_checks: HeldCheckService) -> None:
        self.hub = hub
        self.held_checks = held_checks

    async def EmergencyOpen(self, request: gate_pb2.EmergencyRequest, context: Ctx) -> gate_pb2.EmergencyResponse:
        told, acked = await self.hub.emergency(request.park_id, True)
        return gate_pb2.EmergencyResponse(gates_notified=told, acknowledged_by=acked)

    async def EmergencyRelease(self, request: gate_pb2.EmergencyRequest, context: Ctx) -> gate_pb2.EmergencyResponse:
        told, acked = await self.hub.emergency(request.park_id, False)
        return gate_pb2.EmergencyResponse(gates_notified=told, acknowledged_by=acked)

    async def SetCapacity(self, request: gate_pb2.SetCapacityRequest, context: Ctx) -> gate_pb2.Occupancy:
        return _occupancy(await self.hub.set_capacity(request.park_id, request.capacity, request.resume_margin))

    async def GetOccupancy(self, request: gate_pb2.GetOccupancyRequest, context: Ctx) -> gate_pb2.Occupancy:
        return _occupancy(await self.hub.occupancy(request.park_id))

    async def ListGates(self, request: gate_pb2.ListGatesRequest, context: Ctx) -> gate_pb2.ListGatesResponse:
        rows = await self.hub.list_gates(request.park_id)
        return gate_pb2.ListGatesResponse(gates=[gate_pb2.GateStatus(
            device_id=r.device_id, connected=r.connected, server_id=r.server_id, state=r.state,
            last_heartbeat=convert.ts(r.last_heartbeat), on_battery=r.on_battery) for r in rows])


    async def ConfirmCheck(self, request: gate_pb2.ConfirmCheckRequest, context: Ctx) -> gate_pb2.ConfirmCheckResponse:
        delivered, command_id = await self.hub.confirm_check(request.device_id, request.request_id, request.note)
        return gate_pb2.ConfirmCheckResponse(delivered=delivered, command_id=command_id)

    async def ListHeldChecks(self, request: gate_pb2.ListHeldChecksRequest,
                             context: Ctx) -> gate_pb2.ListHeldChecksResponse:
        rows = await self.held_checks.waiting(request.park_id, request.within_seconds)
        personal = principal().may(cc.PERSONAL)
        return gate_pb2.ListHeldChecksResponse(checks=[cc.held_check(r, personal=personal) for r in rows])


def _occupancy(state: ParkView) -> gate_pb2.Occupancy:
    return gate_pb2.Occupancy(park_id=state.park_id, inside=state.inside, capacity=state.capacity,
                              entry_paused=state.paused, emergency_open=state.emergency)

