"""Site service: what a site edge asks of the cluster (docs/sites.md, "The cluster's side"), and conflicts for admins.

Every device call names the edge in its metadata (``parkgate-device-id``,
``parkgate-device-secret``); the service proves it before anything else. Text
holding NUL or control characters never gets here: the one check of every
request (rpc/hostile.py) refuses it with TEXT_NOT_ALLOWED.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import grpc
from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp

from parkgate.common.reason import Reason
from parkgate.server.domain.errors import InvalidArgument
from parkgate.server.domain.sales import fingerprint
from parkgate.server.services.sites import (
    Edge,
    FeedChunk,
    FeedEntry,
    Forwarded,
    NotPassed,
    OfflineAdmission,
    OfflineSale,
    OfflineTicket,
    ParkView,
    RemovedHoliday,
    SitePark,
    SiteService,
    TicketUse,
    UnboundCard,
)
from parkgate.server.store.edge_power import EdgePower
from parkgate.server.store.rows.catalog import Holiday, Price, Product
from parkgate.server.store.rows.sites import FeedCard, FeedDevice, FeedKey, FeedOperator
from parkgate.v1 import catalog_pb2, common_pb2, gate_pb2, sales_pb2, site_pb2, site_pb2_grpc

from .. import convert
from ..call import current_call
from .ops import POWER_VALUE
from .sales import _payments

Ctx = grpc.aio.ServicerContext
DEVICE_ID = "parkgate-device-id"
DEVICE_SECRET = "parkgate-device-secret"
_STATES = {"valid": sales_pb2.VALID, "refunded": sales_pb2.REFUNDED_STATE, "voided": sales_pb2.VOIDED_STATE}


def _metadata(context: Ctx) -> tuple[str, str]:
    found = {k: v for k, v in (context.invocation_metadata() or ()) if k in (DEVICE_ID, DEVICE_SECRET)}
    return str(found.get(DEVICE_ID, "")), str(found.get(DEVICE_SECRET, ""))


def _direction(value: int) -> Any:
    return convert.direction_name(value)


def _feed_item(entry: FeedEntry, hash_key: bytes) -> site_pb2.FeedItem:
    if isinstance(entry, ParkView):
        return site_pb2.FeedItem(park_state=site_pb2.SiteParkState(
            park_id=entry.park_id, emergency_open=entry.emergency, entry_paused=entry.paused, inside=entry.inside,
            capacity=entry.capacity))
    if isinstance(entry, SitePark):
        p = entry.park
        return site_pb2.FeedItem(park=site_pb2.SitePark(
            park_id=p.id, park_number=p.number, time_zone=p.time_zone, attraction_slots=entry.attraction_slots,
            capacity=p.capacity, resume_margin=p.capacity_resume_margin,
            products=[gate_pb2.AdmissionTerms(
                product_number=n, entries_total=t.entries_total, entries_per_day=t.entries_per_day,
                reentry_allowed=t.reentry_allowed, hold_for_check=t.hold_for_check, valid_days=t.valid_days)
                for n, t in entry.products],
            fares=[site_pb2.SiteFare(attraction_id=a, day_type=d, amount=m) for a, d, m in entry.fares],
            currency=p.currency))
    if isinstance(entry, FeedKey):
        if entry.state == "revoked":
            return site_pb2.FeedItem(revoked_key_id=entry.key_id)
        return site_pb2.FeedItem(key=gate_pb2.VerifyKey(key_id=entry.key_id, public_key=bytes(entry.public_key),
                                                        retired=entry.state == "retired"))
    if isinstance(entry, TicketUse):
        t = entry.ticket
        return site_pb2.FeedItem(ticket=site_pb2.TicketUse(
            ticket_id=t.ticket_id, serial=t.serial, park_id=t.park_id, product_number=entry.product_number,
            state=_STATES.get(t.status, sales_pb2.VALID), entries_used=t.entries_used,
            entries_today=t.entries_today, entries_day=t.entries_day.isoformat() if t.entries_day else "",
            inside=t.inside, first_used_at=_epoch_ts(t.first_used_at), valid_from=_epoch_ts(t.valid_from),
            valid_until=_epoch_ts(t.valid_until), stored_value=t.balance is not None, balance=t.balance or 0))
    if isinstance(entry, FeedCard):
        return site_pb2.FeedItem(card=site_pb2.CardBinding(card_uid=entry.card_uid, ticket_id=entry.ticket_id))
    if isinstance(entry, UnboundCard):
        return site_pb2.FeedItem(unbound_card_uid=entry.card_uid)
    if isinstance(entry, RemovedHoliday):
        return site_pb2.FeedItem(removed_holiday=catalog_pb2.Holiday(park_id=entry.park_id,
                                                                      date=convert.date_msg(entry.day)))
    if isinstance(entry, Product):
        return site_pb2.FeedItem(product=convert.product(entry))
    if isinstance(entry, Price):
        return site_pb2.FeedItem(price=convert.price_entry(entry))
    if isinstance(entry, Holiday):
        return site_pb2.FeedItem(holiday=convert.holiday(entry))
    if isinstance(entry, FeedOperator):
        return site_pb2.FeedItem(operator=site_pb2.OperatorCredential(
            user_name=entry.username, password_hash=entry.password_hash, permissions=entry.permissions,
            disabled=entry.disabled, display_name=entry.display_name))
    d: FeedDevice = entry
    return site_pb2.FeedItem(device=site_pb2.GateDevice(
        device_id=d.id, secret_hash=d.secret_hash, park_id=d.park_id, attraction_id=d.attraction_id,
        direction=common_pb2.IN if d.direction == "in" else common_pb2.OUT if d.direction == "out" else 0,
        disabled=d.disabled, kind=d.kind, secret_hash_key=hash_key))


def _epoch_ts(seconds: float | None) -> Timestamp | None:
    if seconds is None:
        return None
    stamp = Timestamp()
    stamp.FromNanoseconds(round(seconds * 1e9))
    return stamp


def _batch(chunk: FeedChunk, hash_key: bytes) -> site_pb2.FeedBatch:
    return site_pb2.FeedBatch(version=chunk.version, full_resync=chunk.full_resync, caught_up=chunk.caught_up,
                              items=[_feed_item(i, hash_key) for i in chunk.items])


def _record(r: site_pb2.ForwardedRecord) -> Forwarded:
    kind = r.WhichOneof("record")
    if kind == "decision":
        d = r.decision
        req = d.request
        if not d.HasField("decided_at"):
            raise InvalidArgument(f"{r.device_id} #{r.sequence}: a forwarded decision says when it was made")
        made: OfflineAdmission | OfflineSale | NotPassed = OfflineAdmission(
            request_id=req.request_id, code=req.code, card_uid=req.card_uid, direction=_direction(req.direction),
            allow=d.result.allow, reason=Reason.from_number(d.result.reason) if d.result.reason else (
                Reason.OK if d.result.allow else Reason.REASON_UNSPECIFIED),
            decided_at=d.decided_at.ToNanoseconds() / 1e9, charged=d.charged)
    elif kind == "sale":
        s = r.sale
        o = s.order
        made = OfflineSale(
            request_id=s.request.request_id or o.request_id,
            fingerprint=fingerprint({"order": o.SerializeToString(deterministic=True).hex()}),
            order_id=o.id, window_device_id=r.device_id, operator=s.operator or o.operator, customer=o.customer,
            total=o.total.minor_units,
            tickets=tuple(OfflineTicket(
                ticket_id=t.id, serial=t.serial, product_id=t.product_id, park_id=t.park_id, code=t.code,
                card_uid=t.card_uid, price=t.price.minor_units, visit_date=convert.date_from(t.visit_date))
                for t in o.tickets),
            payments=_payments(list(o.payments)),
            sold_at=(s.sold_at if s.HasField("sold_at") else o.created_at).ToDatetime(tzinfo=UTC))
    elif kind == "not_passed":
        if not r.not_passed.request_id:
            raise InvalidArgument(f"{r.device_id} #{r.sequence}: a passage report names its admission's request id")
        made = NotPassed(r.not_passed.request_id)
    else:
        raise InvalidArgument(f"{r.device_id} #{r.sequence}: a forwarded record holds a decision, a sale or a passage")
    return Forwarded(r.device_id, r.sequence, made, r.SerializeToString())


class SiteServicer(site_pb2_grpc.SiteServicer):
    def __init__(self, sites: SiteService, device_hash_key: bytes) -> None:
        self.sites = sites
        self.device_hash_key = device_hash_key

    async def _edge(self, request: Message, context: Ctx) -> Edge:
        device_id, secret = _metadata(context)
        current_call.get().device_id = device_id
        return await self.sites.authenticate(device_id, secret)

    async def Feed(self, request: site_pb2.FeedRequest, context: Ctx) -> AsyncIterator[site_pb2.FeedBatch]:
        edge = await self._edge(request, context)
        async for chunk in self.sites.feed(edge, request.from_version):
            yield _batch(chunk, self.device_hash_key)

    async def Validate(self, request: site_pb2.SiteValidateRequest, context: Ctx) -> site_pb2.SiteValidateResponse:
        edge = await self._edge(request, context)
        items = [(i.device_id, i.request.request_id, i.request.code, i.request.card_uid,
                  _direction(i.request.direction)) for i in request.items]
        decisions = await self.sites.validate(edge, items)
        return site_pb2.SiteValidateResponse(results=[site_pb2.SiteValidationResult(
            device_id=i.device_id, result=gate_pb2.ValidationResult(
                request_id=i.request.request_id, allow=d.allow, reason=d.reason.number, entries_left=d.entries_left,
                persons=d.persons, ticket_id=d.ticket_id, hold_for_check=d.hold_for_check,
                display_text=d.reason.name.replace("_", " ").capitalize(), photo_ref=d.photo_ref,
                swallow_card=d.swallow_card,
                # the edge fills in the park's currency (it has it from the feed)
                balance=common_pb2.Money(minor_units=d.balance) if d.balance is not None else None))
            for i, d in zip(request.items, decisions, strict=True)])

    async def Forward(self, request: site_pb2.ForwardRequest, context: Ctx) -> site_pb2.ForwardResponse:
        edge = await self._edge(request, context)
        acks = await self.sites.forward(edge, request.journal_id, [_record(r) for r in request.records])
        return site_pb2.ForwardResponse(acks=[site_pb2.ForwardAck(
            device_id=a.device_id, sequence=a.sequence, accepted=a.accepted,
            reason=a.reason.number if not a.accepted else 0, conflict=a.conflict, taken_in=a.taken_in)
            for a in acks])

    async def Provision(self, request: site_pb2.ProvisionRequest, context: Ctx) -> site_pb2.ProvisionResponse:
        edge = await self._edge(request, context)
        block = await self.sites.provision(edge, bytes(request.public_key), request.serials_wanted)
        return site_pb2.ProvisionResponse(key_id=block.key_id, serial_first=block.serial_first,
                                          serial_last=block.serial_last)

    async def ReportPower(self, request: site_pb2.EdgePowerReport, context: Ctx) -> site_pb2.EdgePowerAck:
        edge = await self._edge(request, context)
        state = POWER_VALUE.get(request.state)
        if state is None:
            raise InvalidArgument("state: a power state (ON_MAINS, ON_BATTERY, ...)")
        since = convert.from_ts(request.since, request.HasField("since")) or datetime.now(UTC)
        await self.sites.report_power(edge, EdgePower(
            edge.device_id, state, request.battery_percent, request.runtime_seconds, request.source, since,
            request.detail, list(request.gates_on_battery)))
        return site_pb2.EdgePowerAck()

    async def ListConflicts(self, request: site_pb2.ListConflictsRequest,
                            context: Ctx) -> site_pb2.ListConflictsResponse:
        rows, total = await self.sites.conflicts(request.park_id, convert.from_ts(request.since,
                                                                                   request.HasField("since")))
        return site_pb2.ListConflictsResponse(total=total, conflicts=[site_pb2.Conflict(
            ticket_id=c.ticket_id, first_site=c.first_site, second_site=c.second_site,
            first_device_id=c.first_device_id, second_device_id=c.second_device_id, first_at=convert.ts(c.first_at),
            second_at=convert.ts(c.second_at), recorded_at=convert.ts(c.recorded_at)) for c in rows])

    async def RevokeKey(self, request: site_pb2.RevokeKeyRequest, context: Ctx) -> site_pb2.RevokeKeyResponse:
        site = await self.sites.revoke_key(request.key_id)
        return site_pb2.RevokeKeyResponse(key_id=request.key_id, site=site)
