"""What the edge knows of its site (from the feed) and the decision it makes alone with the one engine.

:class:`SitePicture` is the in-memory part of the feed (keyring, parks,
devices), rebuilt after each feed batch; tickets and uses are read from the
store per decision. :func:`local_decision` builds the engine's
:class:`parkgate.rules.TicketState` from the signed code (or the card's
binding), the feed's record of the ticket (refunds, voids, its uses at the
cluster) and this edge's own uses, and calls :func:`parkgate.rules.decide`.
Nothing here writes: the caller makes the answer durable before the gate acts.

Stored value (S8): a card's balance is the feed's balance less what this edge
charged alone since (``charges``); the attraction's fare comes from the feed's
park (by day type, with the fed holiday calendar, as the cluster picks it). An
admission that would take the card's offline charges past ``charge_limit`` is
refused OFFLINE_CHARGE_LIMIT: the limit bounds what a card can owe when the
edge's picture of its balance is stale.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace
from datetime import date
from zoneinfo import ZoneInfo

import orjson

from parkgate import native
from parkgate.common.reason import Reason
from parkgate.rules import (
    AdmissionTerms,
    Direction,
    GatePlace,
    LocalTime,
    ParkState,
    TicketState,
    Verdict,
    capacity_paused,
    decide,
    ticket_from_code,
)
from parkgate.v1 import catalog_pb2, common_pb2, gate_pb2, sales_pb2, site_pb2

from .store import SiteStore

log = logging.getLogger(__name__)

_STATUS = {sales_pb2.REFUNDED_STATE: "refunded", sales_pb2.VOIDED_STATE: "voided"}


@dataclass(slots=True)
class SitePicture:
    """The feed's keys, parks and devices in memory: read on every decision, rebuilt on every feed batch."""

    keyring: native.Keyring = field(default_factory=native.Keyring)
    parks: dict[str, site_pb2.SitePark] = field(default_factory=dict)
    parks_by_number: dict[int, site_pb2.SitePark] = field(default_factory=dict)
    devices: dict[str, site_pb2.GateDevice] = field(default_factory=dict)
    park_states: dict[str, site_pb2.SiteParkState] = field(default_factory=dict)

    @classmethod
    def load(cls, store: SiteStore) -> SitePicture:
        keyring = native.Keyring()
        for key_id, public_key, state in store.keys():
            try:
                keyring.add(key_id, public_key, native.KeyState(state))
            except ValueError as exc:
                log.warning("feed key %d ignored: %s", key_id, exc)
        parks = {p.park_id: p for p in (site_pb2.SitePark.FromString(b) for b in store.bodies("parks"))}
        devices = {d.device_id: d for d in (site_pb2.GateDevice.FromString(b) for b in store.bodies("devices"))}
        states = {s.park_id: s for s in (site_pb2.SiteParkState.FromString(b) for b in store.bodies("park_states"))}
        return cls(keyring, parks, {p.park_number: p for p in parks.values()}, devices, states)

    def place(self, device: site_pb2.GateDevice, direction: Direction) -> GatePlace | None:
        park = self.parks.get(device.park_id)
        if park is None:
            return None
        slot = next((s for s, a in park.attraction_slots.items() if a == device.attraction_id), 0)
        return GatePlace(device.device_id, park.park_id, park.park_number, park.time_zone or "UTC",
                         device.attraction_id, slot if device.attraction_id else 0, direction)


def terms_of(park: site_pb2.SitePark, product_number: int) -> AdmissionTerms:
    for t in park.products:
        if t.product_number == product_number:
            return AdmissionTerms(t.entries_total, t.entries_per_day, t.reentry_allowed, t.hold_for_check,
                                  t.valid_days)
    return AdmissionTerms(entries_total=1)  # an unknown product admits once: the safe side


def use_given_back(mine: bytes, counted: int, moved: int) -> bytes:
    """This edge's record of a ticket's uses after an admission it passed on was given back (not passed)."""
    m = orjson.loads(mine)
    m["entries_used"] = max(m["entries_used"] - counted, 0)
    m["entries_today"] = max(m["entries_today"] - counted, 0)
    if moved:
        m["inside"] = False
    return orjson.dumps(m)


def use_to_json(t: TicketState) -> bytes:
    return orjson.dumps({"entries_used": t.entries_used, "entries_today": t.entries_today,
                         "entries_day": t.entries_day.isoformat() if t.entries_day else None,
                         "first_used_at": t.first_used_at, "inside": t.inside, "last_entry_at": t.last_entry_at,
                         "last_exit_at": t.last_exit_at})


def _merge(ticket: TicketState, fed: site_pb2.TicketUse | None, mine: bytes | None,
           returned: tuple[int, bool] = (0, False)) -> TicketState:
    """The ticket with the uses the cluster reported and the uses this edge made, whichever went further.

    ``returned``: uses this edge gave back (a gate reported the person did not pass) that the cluster has not
    taken yet: the feed may still count them, so they come off its figures (this edge's own are given back
    already)."""
    if fed is not None:
        first = fed.first_used_at.ToSeconds() if fed.HasField("first_used_at") else None
        uses_back, left = returned
        ticket = replace(
            ticket, ticket_id=fed.ticket_id or ticket.ticket_id, status=_STATUS.get(fed.state, "valid"),
            entries_used=max(fed.entries_used - uses_back, 0), entries_today=max(fed.entries_today - uses_back, 0),
            entries_day=date.fromisoformat(fed.entries_day) if fed.entries_day else None,
            inside=fed.inside and not left, first_used_at=float(first) if first is not None else None)
    if mine is not None:
        m = orjson.loads(mine)
        if m["entries_used"] >= ticket.entries_used:
            ticket = replace(
                ticket, entries_used=m["entries_used"], entries_today=m["entries_today"],
                entries_day=date.fromisoformat(m["entries_day"]) if m["entries_day"] else None,
                first_used_at=m["first_used_at"] if m["first_used_at"] is not None else ticket.first_used_at,
                inside=m["inside"], last_entry_at=m["last_entry_at"], last_exit_at=m["last_exit_at"])
    return ticket


def _from_use(fed: site_pb2.TicketUse, park: site_pb2.SitePark) -> TicketState:
    terms = terms_of(park, fed.product_number)
    return TicketState(
        ticket_id=fed.ticket_id, serial=fed.serial, park_id=fed.park_id,
        valid_from=float(fed.valid_from.ToSeconds()), valid_until=float(fed.valid_until.ToSeconds()),
        entries_total=terms.entries_total, entries_per_day=terms.entries_per_day,
        reentry_allowed=terms.reentry_allowed, hold_for_check=terms.hold_for_check, valid_days=terms.valid_days)


@dataclass(frozen=True, slots=True)
class LocalOutcome:
    """The engine's verdict here, or the reason none could be made, with the ticket's serial."""

    verdict: Verdict
    serial: int
    park: ParkState | None = None  # the park's state the verdict was judged on (None: refused before that)


def fare_here(store: SiteStore, park: site_pb2.SitePark, attraction_id: str, day: date) -> int:
    """What ``attraction_id`` charges a stored-value card on ``day`` (park-local): the cluster's rule
    (its day type's fare, a peak day falling back to the holiday fare, then the flat price; none is free)."""
    by_type = {f.day_type: f.amount for f in park.fares if f.attraction_id == attraction_id}
    if not by_type:
        return 0
    body = store.body("holidays", "park_id || '/' || day", f"{park.park_id}/{day.isoformat()}")
    if body is not None:
        kind = "peak" if catalog_pb2.Holiday.FromString(body).day_type == catalog_pb2.PEAK else "holiday"
    else:
        kind = "weekend" if day.isoweekday() >= 6 else "weekday"
    for key in (kind, "holiday" if kind == "peak" else kind, ""):
        if key in by_type:
            return by_type[key]
    return 0


def _with_balance(store: SiteStore, ticket: TicketState, fed: site_pb2.TicketUse | None) -> tuple[TicketState, int]:
    """The ticket with its stored-value balance as this edge knows it, and what the edge charged alone since."""
    if fed is None or not fed.stored_value:
        return ticket, 0
    pending = store.charged_since_fed(fed.ticket_id)
    return replace(ticket, balance=fed.balance - pending), pending


def _fed(store: SiteStore, serial: int) -> site_pb2.TicketUse | None:
    body = store.body("tickets", "serial", serial)
    return None if body is None else site_pb2.TicketUse.FromString(body)


def park_state_here(store: SiteStore, picture: SitePicture, park_id: str) -> ParkState:
    """The park's occupancy as this edge can know it: the feed's last count plus this site's own flow
    the cluster has not counted yet (people entering at the park's other sites during a cut are not
    known here), with the cap and its pause judged again on that count (S27)."""
    park = picture.parks[park_id]
    state = picture.park_states.get(park_id)
    if state is None:
        return ParkState(park_id, capacity=park.capacity, resume_margin=park.resume_margin)
    capacity = state.capacity or park.capacity
    inside = max(state.inside + store.unsettled_moves(park_id), 0)
    return ParkState(park_id, inside=inside, capacity=capacity, resume_margin=park.resume_margin,
                     paused=capacity_paused(inside, capacity, park.resume_margin, state.entry_paused))


def local_decision(store: SiteStore, picture: SitePicture, place: GatePlace,
                   request: gate_pb2.ValidationRequest, now: float, charge_limit: int | None = None, *,
                   count_capacity: bool = True) -> LocalOutcome:
    """The decision this edge makes alone for ``request`` at ``place`` at ``now`` (epoch seconds).

    ``charge_limit`` (minor units per card) caps the stored-value charges made alone; None = no cap
    (replaying an admission the cluster made online). ``count_capacity=False`` leaves the park's cap out:
    replaying an admission the cluster made, which stands whatever this edge thinks of the occupancy."""
    direction: Direction = "out" if request.direction == common_pb2.OUT else place.direction
    park = picture.parks[place.park_id]
    if request.WhichOneof("credential") == "card_uid":
        bound = store.card(request.card_uid.strip().upper())
        if bound is None:
            return LocalOutcome(Verdict(False, Reason.UNKNOWN_CARD), 0)
        if bound[1]:
            return LocalOutcome(Verdict(False, Reason.CARD_BLOCKED), 0)
        body = store.body("tickets", "ticket_id", bound[0])
        if body is None:
            return LocalOutcome(Verdict(False, Reason.UNKNOWN_TICKET), 0)
        fed: site_pb2.TicketUse | None = site_pb2.TicketUse.FromString(body)
        assert fed is not None
        ticket = _merge(_from_use(fed, park), fed, store.use(fed.serial), store.returned_uses(fed.serial))
    else:
        checked = native.authenticate_batch([request.code.strip()], picture.keyring)[0]
        if not checked.ok or checked.ticket is None:
            return LocalOutcome(Verdict(False, checked.reason), 0)
        code = checked.ticket
        code_park = picture.parks_by_number.get(code.park_id)
        if code_park is None or code_park.park_id != place.park_id:
            return LocalOutcome(Verdict(False, Reason.NOT_VALID_FOR_PARK), code.serial)
        slots = frozenset(park.attraction_slots[s] for s in code.attraction_slots if s in park.attraction_slots)
        base = ticket_from_code(code, terms_of(park, code.product_id), park.park_id, slots, code.all_attractions)
        fed = _fed(store, code.serial)
        ticket = _merge(base, fed, store.use(code.serial), store.returned_uses(code.serial))
    ticket, pending = _with_balance(store, ticket, fed)
    clock = LocalTime(now, ZoneInfo(place.time_zone))
    fare = fare_here(store, park, place.attraction_id, clock.day) if ticket.balance is not None else 0
    park_state = park_state_here(store, picture, place.park_id) if count_capacity else ParkState(place.park_id)
    verdict = decide(ticket, place, direction, park_state, clock, fare)
    if verdict.allow and verdict.charged and charge_limit is not None and pending + verdict.charged > charge_limit:
        verdict = Verdict(False, Reason.OFFLINE_CHARGE_LIMIT, ticket, attraction_id=place.attraction_id)
    return LocalOutcome(verdict, ticket.serial, park_state)


def result_of(request_id: str, verdict: Verdict, currency: str = "") -> gate_pb2.ValidationResult:
    """The answer a gate gets for a verdict made here (the same fields the cluster fills)."""
    ticket = verdict.ticket
    balance = (common_pb2.Money(minor_units=ticket.balance, currency=currency)
               if ticket is not None and ticket.balance is not None else None)
    return gate_pb2.ValidationResult(balance=balance,
        request_id=request_id, allow=verdict.allow, reason=verdict.reason.number,
        display_text="Welcome" if verdict.allow else verdict.reason.value.replace("_", " ").capitalize(),
        entries_left=verdict.entries_left, persons=verdict.persons or (ticket.persons if ticket else 0),
        ticket_id=ticket.ticket_id if ticket else "", hold_for_check=verdict.hold_for_check)
