"""The cluster's side of a site edge (docs/sites.md, "The cluster's side"): who may call, the feed, online validations,
store and forward, the site's key and serials, conflicts.

An edge is a registered device of kind ``site_edge`` whose ``site`` names its
site; the gates and windows of that site carry the same ``site``. Every call
proves the edge's credentials (the same check a gate's hello passes); a
verified credential is remembered for ``CREDENTIAL_TTL_SECONDS`` because
argon2 costs tens of milliseconds and an edge calls several times a second
(a disabled edge is refused within that time).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime
from zoneinfo import ZoneInfo

from parkgate import native
from parkgate.common.power import PowerState
from parkgate.rules import (
    AdmissionTerms,
    Direction,
    GatePlace,
    LocalTime,
    TicketState,
    effective_terms,
    move_park,
)
from parkgate.server.domain import device_certs
from parkgate.server.domain import sales as sales_rules
from parkgate.server.domain import sites as rules
from parkgate.server.domain.admission import Admission, Decision
from parkgate.server.domain.errors import (
    Conflict,
    Forbidden,
    InvalidArgument,
    NotFound,
    ParkgateError,
    Reason,
    Unavailable,
)
from parkgate.server.store import Database
from parkgate.server.store import admissions as admission_store
from parkgate.server.store import catalog as catalog_store
from parkgate.server.store import devices as device_store
from parkgate.server.store import edge_power as edge_power_store
from parkgate.server.store import gates as gate_store
from parkgate.server.store import keys as keys_store
from parkgate.server.store import sales as sales_store
from parkgate.server.store import settings as settings_store
from parkgate.server.store import sites as store
from parkgate.server.store.database import Connection
from parkgate.server.store.edge_power import EdgePower
from parkgate.server.store.gates import ParkView
from parkgate.server.store.rows.admin import Device, DeviceWithSecret
from parkgate.server.store.rows.catalog import Holiday, Park, Price, Product
from parkgate.server.store.rows.sales import NewOrder, NewTicket
from parkgate.server.store.rows.sites import (
    ConflictRow,
    FeedCard,
    FeedDevice,
    FeedKey,
    FeedOperator,
    SerialBlock,
)

from .catalog import product_or_refuse
from .gates import GateHub
from .sales import SELLING_DEVICE_KINDS

log = logging.getLogger(__name__)

EDGE_KIND = "site_edge"
CREDENTIAL_TTL_SECONDS = 10.0
#: An edge's last contact (devices.last_seen_at) is written at most this often.
CONTACT_WRITE_SECONDS = 5.0
PLACE_TTL_SECONDS = 30.0
#: A journal id is the edge's own random token; bounded so a garbled one cannot bloat the cursors.
MAX_JOURNAL_ID = 64
#: Forwarded records taken in one transaction. One commit (a WAL flush) per record kept a reconnecting edge's
#: queue at about 80 records/s; a larger group holds the park's row lock longer, and the online gates of that
#: park wait behind it, so a group stays a few tens of milliseconds of work.
RECORDS_PER_TRANSACTION = 16
#: Feed history: removal marks older than this are pruned; a cursor from before needs a full resync.
FEED_HISTORY_PARAMETER = "site.feed_history_seconds"
FEED_HISTORY_DEFAULT = 7 * 24 * 3600
FEED_PAGE = 500


@dataclass(frozen=True, slots=True)
class Edge:
    device_id: str
    site: str


# --- what the feed carries (the servicer turns each into a FeedItem) ---------------------------

@dataclass(frozen=True, slots=True)
class SitePark:
    park: Park
    attraction_slots: dict[int, str]
    products: list[tuple[int, AdmissionTerms]]
    fares: list[tuple[str, str, int]] = field(default_factory=list)  # (attraction, day type or "", amount)


@dataclass(frozen=True, slots=True)
class TicketUse:
    ticket: TicketState
    product_number: int


@dataclass(frozen=True, slots=True)
class UnboundCard:
    card_uid: str


@dataclass(frozen=True, slots=True)
class RemovedHoliday:
    park_id: str
    day: date


FeedEntry = (SitePark | FeedKey | TicketUse | FeedCard | Product | Price | Holiday | FeedOperator | FeedDevice
             | UnboundCard | RemovedHoliday | ParkView)


@dataclass(slots=True)
class FeedChunk:
    version: int
    full_resync: bool = False
    caught_up: bool = False
    items: list[FeedEntry] = field(default_factory=list)


# --- what Forward takes -------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class OfflineAdmission:
    request_id: str
    code: str
    card_uid: str
    direction: Direction | None
    allow: bool
    reason: Reason
    decided_at: float
    charged: int = 0            # what the edge took from a stored-value card (minor units)


@dataclass(frozen=True, slots=True)
class NotPassed:
    """A gate behind the edge reported that the person admitted under ``request_id`` did not pass."""

    request_id: str


@dataclass(frozen=True, slots=True)
class OfflineTicket:
    ticket_id: str
    serial: int
    product_id: str
    park_id: str
    code: str
    card_uid: str
    price: int
    visit_date: date | None


@dataclass(frozen=True, slots=True)
class OfflineSale:
    request_id: str
    fingerprint: bytes
    order_id: str
    window_device_id: str
    operator: str
    customer: str
    total: int
    tickets: tuple[OfflineTicket, ...]
    payments: tuple[sales_rules.PaymentIn, ...]
    sold_at: datetime


@dataclass(frozen=True, slots=True)
class Forwarded:
    device_id: str
    sequence: int
    record: OfflineAdmission | OfflineSale | NotPassed
    raw: bytes = b""  # the record as it came, kept when it cannot be taken


@dataclass(frozen=True, slots=True)
class Ack:
    device_id: str
    sequence: int
    accepted: bool
    reason: Reason = Reason.OK
    conflict: bool = False
    taken_in: int = 0           # the transaction that took it (see site.proto ForwardAck.taken_in)


class SiteService:
    def __init__(self, db: Database, gates: GateHub,
                 check_device: Callable[[str, str], Awaitable[DeviceWithSecret]], *,
                 feed_poll_seconds: float = 0.5, feed_heartbeat_seconds: float = 5.0) -> None:
        self.db = db
        self.gates = gates
        self.pipeline = gates.pipeline
        self._check_device = check_device
        self.feed_poll_seconds = feed_poll_seconds
        self.feed_heartbeat_seconds = feed_heartbeat_seconds
        self._verified: dict[tuple[str, bytes, str | None], tuple[Edge, float]] = {}
        self._places: dict[str, tuple[GatePlace, str, float]] = {}
        self._seen: dict[str, float] = {}  # edge -> when its contact was last written

    # --- 1. who calls --------------------------------------------------------------------

    async def authenticate(self, device_id: str, secret: str) -> Edge:
        """The calling edge, proven by its device id and secret (metadata of every Site call)."""
        if not device_id or not secret:
            raise InvalidArgument("a site call carries parkgate-device-id and parkgate-device-secret",
                                  Reason.UNKNOWN_DEVICE)
        # the certificate the call presented is part of what was verified (it must name the edge)
        key = (device_id, hashlib.sha256(secret.encode()).digest(), device_certs.presented_device.get())
        known = self._verified.get(key)
        if known is not None and known[1] > time.monotonic():
            await self._contact(known[0])
            return known[0]
        device = await self._check_device(device_id, secret)
        if device.kind != EDGE_KIND:
            raise Forbidden(f"device {device_id!r} is a {device.kind}, not a site edge", Reason.NOT_A_SITE_EDGE)
        if not device.site:
            raise Forbidden(f"site edge {device_id!r} is registered without a site", Reason.NO_SITE)
        edge = Edge(device.id, device.site)
        self._verified[key] = (edge, time.monotonic() + CREDENTIAL_TTL_SECONDS)
        await self._contact(edge)
        return edge

    async def _contact(self, edge: Edge) -> None:
        """Record that the edge is in contact, at most every CONTACT_WRITE_SECONDS (not a write per call)."""
        now = time.monotonic()
        if now - self._seen.get(edge.device_id, -CONTACT_WRITE_SECONDS) < CONTACT_WRITE_SECONDS:
            return
        self._seen[edge.device_id] = now
        with contextlib.suppress(ParkgateError):  # a missed contact mark never fails the edge's call
            async with self.db.transaction() as conn:
                await device_store.mark_seen(conn, edge.device_id)

    # --- power (S30) -----------------------------------------------------------------------------

    async def report_power(self, edge: Edge, report: EdgePower) -> bool:
        """The edge's power transition: kept as its latest unless a later one is there (the call itself is in
        the operation log); True when kept."""
        if report.device_id != edge.device_id:
            raise InvalidArgument("a power report is the calling edge's own")
        if report.state not in {s.value for s in PowerState}:
            raise InvalidArgument(f"unknown power state {report.state!r}")
        async with self.db.transaction() as conn:
            kept = await edge_power_store.put(conn, report)
        log.log(logging.WARNING if report.state != PowerState.ONLINE else logging.INFO,
                "site edge %s (%s): %s%s", edge.device_id, edge.site, report.detail or report.state,
                f"; gates on battery: {', '.join(report.gates_on_battery)}" if report.gates_on_battery else "")
        return kept

    # --- 5. the site's key and serials -------------------------------------------------------

    async def provision(self, edge: Edge, public_key: bytes, serials_wanted: int) -> SerialBlock:
        """Register the site's public key (once: the same key keeps its id) and reserve a new serial block."""
        if len(public_key) != 32:
            raise InvalidArgument("public_key: a 32-byte Ed25519 public key")
        count = rules.serials_to_reserve(serials_wanted)

        async def work(conn: Connection) -> SerialBlock:
            await store.lock_key_ids(conn)
            existing = await store.site_key_by_public(conn, public_key)
            if existing is not None and existing.site != edge.site:
                raise Conflict("this public key belongs to another site or to the cluster", Reason.SITE_KEY_TAKEN)
            if existing is not None and existing.state == "revoked":
                raise Conflict(f"key {existing.key_id} was revoked: make a new one", Reason.REVOKED_KEY)
            if existing is None:
                key_id = 1 + await sales_store.highest_key_id(conn)
                await store.add_site_key(conn, key_id, public_key, edge.site)
                await keys_store.notify_keys_changed(conn)
            else:
                key_id = existing.key_id
            return await store.reserve_serials(conn, key_id, edge.site, edge.device_id, count)

        block = await self.db.run(work, what="provision a site")
        await self.gates.keys_changed()
        log.info("site %s (edge %s): key %d, serials %d-%d", edge.site, edge.device_id, block.key_id,
                 block.serial_first, block.serial_last)
        return block

    async def revoke_key(self, key_id: int) -> str:
        """Refuse every code the key signed, on every server and gate (a site's key, or a retired one)."""
        async with self.db.transaction() as conn:
            key = await store.lock_key(conn, key_id)
            if key is None:
                raise NotFound(f"no signing key {key_id}", Reason.UNKNOWN_KEY)
            if not key.site and key.state == "active":
                # every central sale signs with it: a new key must take over first (key rotation)
                raise Conflict(f"key {key_id} is the cluster's active signing key; rotate it before revoking",
                               Reason.BAD_CONFIGURATION)
            row = await store.revoke_key(conn, key_id)
            assert row is not None
            await keys_store.notify_keys_changed(conn)
        await self.gates.keys_changed()
        log.warning("signing key %d%s revoked", key_id, f" of site {row.site}" if row.site else "")
        return row.site

    # --- 2. the feed --------------------------------------------------------------------------

    async def feed(self, edge: Edge, from_version: int) -> AsyncIterator[FeedChunk]:
        """Everything changed from ``from_version`` on, then live changes until the edge goes away."""
        async with self.db.transaction() as conn:
            history = await settings_store.get_parameter(conn, FEED_HISTORY_PARAMETER)
            await store.prune_removals(conn, float(history if history is not None else FEED_HISTORY_DEFAULT))
            too_old = from_version < await store.pruned_below(conn) or from_version > await store.next_transaction(conn)
        full = from_version == 0 or too_old
        since = 0 if full else from_version
        first = True
        # Park states are not versioned: every stream gets them all once caught up, then each change.
        sent: dict[str, tuple[bool, bool, int, int]] = {}
        async for chunk in self._snapshot(edge, since, full):
            chunk.full_resync = full and first
            first = False
            if chunk.caught_up:
                since = chunk.version
                chunk.items.extend(await self._changed_states(edge, sent))
            yield chunk
        quiet_since = time.monotonic()
        wake = asyncio.Event()
        self.gates.state_watchers.add(wake)  # a park-state NOTIFY or command wakes the poll at once
        try:
            while True:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(wake.wait(), self.feed_poll_seconds)
                wake.clear()
                # park states first: an emergency must not wait behind a page of tickets
                items: list[FeedEntry] = list(await self._changed_states(edge, sent))
                version = since
                async for chunk in self._snapshot(edge, since, False):
                    items.extend(chunk.items)
                    version = chunk.version if chunk.caught_up else version
                    if not chunk.caught_up and len(items) >= FEED_PAGE:
                        yield FeedChunk(since, caught_up=True, items=items)  # live, resumable from the old version
                        items = []
                if items or time.monotonic() - quiet_since >= self.feed_heartbeat_seconds:
                    yield FeedChunk(version, caught_up=True, items=items)
                    quiet_since = time.monotonic()
                    await self._contact(edge)  # an open feed is contact, even when the site is quiet
                since = version
        finally:
            self.gates.state_watchers.discard(wake)

    async def _changed_states(self, edge: Edge, sent: dict[str, tuple[bool, bool, int, int]]) -> list[ParkView]:
        """The site's parks whose live state differs from what this stream last sent (emergency, pause, counts)."""
        async with self.db.connection() as conn:
            parks = await store.site_park_ids(conn, edge.site)
            states = await gate_store.park_states(conn, parks) if parks else []
        changed = []
        for state in states:
            now = (state.emergency, state.paused, state.inside, state.capacity)
            if sent.get(state.park_id) != now:
                sent[state.park_id] = now
                changed.append(state)
        return changed

    async def _snapshot(self, edge: Edge, since: int, full: bool) -> AsyncIterator[FeedChunk]:
        """One consistent read: pages of changes, the last one caught up and carrying the horizon."""
        async with self.db.connection() as conn, conn.transaction():
            await conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            horizon = await store.feed_horizon(conn)
            parks = await store.site_park_ids(conn, edge.site)
            items: list[FeedEntry] = []
            for park in await store.changed_parks(conn, parks, since):
                items.append(await self._site_park(conn, park))
            items.extend(await store.changed_keys(conn, since))
            items.extend(await store.changed_products(conn, parks, since))
            items.extend(await store.changed_prices(conn, parks, since))
            items.extend(await store.changed_holidays(conn, parks, since))
            items.extend(await store.changed_operators(conn, since))
            items.extend(await store.changed_devices(conn, edge.site, since))
            if not full:
                for removal in await store.changed_removals(conn, parks, since):
                    items.append(UnboundCard(removal.key) if removal.kind == "card"
                                 else RemovedHoliday(removal.park_id, date.fromisoformat(removal.key)))
            after = ""
            while True:
                page = await store.changed_tickets(conn, parks, since, after, FEED_PAGE)
                items.extend(TicketUse(t, n) for t, n in page)
                if len(page) < FEED_PAGE:
                    break
                after = page[-1][0].ticket_id
                if len(items) >= FEED_PAGE:
                    yield FeedChunk(since if not full else 0, items=items)
                    items = []
            # cards after their tickets, so an edge never holds a binding to a ticket it has not seen
            items.extend(await store.changed_cards(conn, parks, since))
            yield FeedChunk(horizon, caught_up=True, items=items)

    async def _site_park(self, conn: Connection, park: Park) -> SitePark:
        slots = {a.slot: a.id for a in await store.park_attractions(conn, park.id)}
        products = [(p.number, effective_terms(p.kind, p.rules))
                    for p in await admission_store.park_products(conn, park.id)]
        return SitePark(park, slots, products, await store.park_fares(conn, park.id))

    # --- 3. online validations ------------------------------------------------------------------

    async def _place(self, edge: Edge, device_id: str) -> GatePlace:
        """Where a gate of the edge's site stands (refused for a gate of another site)."""
        cached = self._places.get(device_id)
        if cached is None or cached[2] <= time.monotonic():
            async with self.db.connection() as conn:
                device = await device_store.get(conn, device_id)
                if device is None:
                    raise NotFound(f"device {device_id!r} is not registered", Reason.UNKNOWN_DEVICE)
                cached = (await self._place_of(conn, device), device.site, time.monotonic() + PLACE_TTL_SECONDS)
            self._places[device_id] = cached
        place, site, _expires = cached
        if site != edge.site:
            raise Forbidden(f"gate {device_id!r} is not a gate of site {edge.site!r}", Reason.NOT_THIS_SITE)
        return place

    async def _place_of(self, conn: Connection, device: Device) -> GatePlace:
        device_id = device.id
        if device.disabled:
            raise Forbidden(f"device {device_id!r} is disabled", Reason.DEVICE_DISABLED)
        if device.kind not in ("gate", "handheld"):
            raise InvalidArgument(f"device {device_id!r} is a {device.kind}, not a gate", Reason.UNKNOWN_DEVICE)
        if not device.park_id:
            raise InvalidArgument(f"gate {device_id!r} has no park", Reason.UNKNOWN_PARK)
        states = await gate_store.park_states(conn, [device.park_id])
        if not states:
            raise NotFound(f"no park {device.park_id!r}", Reason.UNKNOWN_PARK)
        slot = 0
        if device.attraction_id:
            slot = (await catalog_store.attraction_slots(conn, device.park_id)).get(device.attraction_id, 0)
        direction: Direction = "out" if device.direction == "out" else "in"
        return GatePlace(device_id=device.id, park_id=device.park_id, park_number=states[0].number,
                         time_zone=states[0].time_zone, attraction_id=device.attraction_id, attraction_slot=slot,
                         direction=direction, confirms_passage=False)

    async def validate(self, edge: Edge, items: Sequence[tuple[str, str, str, str, Direction | None]]
                       ) -> list[Decision]:
        """Decide validations of the site's gates through the one admission pipeline (exactly once, the cap)."""
        futures: list[asyncio.Future[Decision] | Decision] = []
        for device_id, request_id, code, card_uid, direction in items:
            if not request_id:
                futures.append(Decision.deny(Reason.INVALID_ARGUMENT))
                continue
            try:
                place = await self._place(edge, device_id)
            except ParkgateError as exc:
                futures.append(Decision.deny(exc.reason))
                continue
            futures.append(self.pipeline.submit(place, request_id, code=code, card_uid=card_uid,
                                                direction=direction or place.direction))
        pending = [f for f in futures if not isinstance(f, Decision)]
        outcomes = iter(await asyncio.gather(*pending, return_exceptions=True))
        decisions: list[Decision] = []
        for f in futures:
            outcome = f if isinstance(f, Decision) else next(outcomes)
            if isinstance(outcome, BaseException):
                raise outcome  # no decision (the database stayed away) fails the call: the edge decides alone
            decisions.append(outcome)
        return decisions

    # --- 4. store and forward --------------------------------------------------------------------

    async def forward(self, edge: Edge, journal_id: str, records: Sequence[Forwarded]) -> list[Ack]:
        """Take records in order, up to :data:`RECORDS_PER_TRANSACTION` in one transaction (each in a
        savepoint); a device's records stop at a gap.

        Sequences count within ``journal_id`` (one edge store's life): without it a replaced
        edge box, starting again at 1, would have its new records taken for replays and dropped.
        """
        if not journal_id or len(journal_id) > MAX_JOURNAL_ID or not journal_id.isprintable():
            raise InvalidArgument("a forward needs the edge store's journal id (1-64 printable characters)")
        acks: list[Ack] = []
        stopped: set[str] = set()
        for start in range(0, len(records), RECORDS_PER_TRANSACTION):
            chunk = records[start:start + RECORDS_PER_TRANSACTION]
            # Run again from the same ``stopped`` if the database made the transaction retry.
            taken, stopped = await self.db.run(
                lambda conn, c=chunk, s=frozenset(stopped): self._take_chunk(conn, edge, journal_id, c, s),
                what="forward")
            acks.extend(taken)
        return acks

    async def _take_chunk(self, conn: Connection, edge: Edge, journal_id: str, records: Sequence[Forwarded],
                          stopped_before: frozenset[str]) -> tuple[list[Ack], set[str]]:
        acks: list[Ack] = []
        stopped = set(stopped_before)
        for record in records:
            if record.device_id in stopped:
                acks.append(Ack(record.device_id, record.sequence, False, Reason.OUT_OF_ORDER))
                continue
            try:
                async with store.savepoint(conn):
                    ack = await self._take(conn, edge, journal_id, record)
            except Unavailable:
                raise
            except ParkgateError as exc:  # not this edge's to forward, or not a record at all
                log.warning("forwarded %s #%d from edge %s refused: %s", record.device_id, record.sequence,
                            edge.device_id, exc)
                ack = Ack(record.device_id, record.sequence, False, exc.reason)
                stopped.add(record.device_id)
            if ack.reason is Reason.OUT_OF_ORDER:
                stopped.add(record.device_id)
            acks.append(ack)
        return acks, stopped

    async def _take(self, conn: Connection, edge: Edge, journal_id: str, record: Forwarded) -> Ack:
        if record.sequence <= 0:
            raise InvalidArgument("a forwarded record's sequence starts at 1")
        device = await device_store.get(conn, record.device_id)
        if device is None:
            raise NotFound(f"device {record.device_id!r} is not registered", Reason.UNKNOWN_DEVICE)
        if device.site != edge.site:
            raise Forbidden(f"device {record.device_id!r} is not of site {edge.site!r}", Reason.NOT_THIS_SITE)
        last = await store.lock_cursor(conn, record.device_id, journal_id, edge.device_id)
        if record.sequence <= last:  # a replay: taken (or turned down) before
            rejected = await store.rejection_of(conn, record.device_id, journal_id, record.sequence)
            if rejected is not None:
                return Ack(record.device_id, record.sequence, False, Reason(rejected))
            # this transaction began after the one that took it: a feed above it shows the record too
            return Ack(record.device_id, record.sequence, True, taken_in=await store.current_transaction(conn))
        if record.sequence != last + 1:
            return Ack(record.device_id, record.sequence, False, Reason.OUT_OF_ORDER)
        conflict = False
        try:
            async with store.savepoint(conn):
                if isinstance(record.record, OfflineSale):
                    await self._take_sale(conn, edge, device, record.record)
                elif isinstance(record.record, NotPassed):
                    await self._take_not_passed(conn, device, record.record)
                else:
                    conflict = await self._take_admission(conn, edge, device, record.record)
        except Unavailable:
            raise
        except ParkgateError as exc:
            # Kept whole for an operator; the device's later records go on (one bad record blocks nothing).
            await store.record_rejection(conn, record.device_id, journal_id, record.sequence, edge.device_id,
                                         exc.reason_name, exc.message, record.raw)
            await store.advance_cursor(conn, record.device_id, journal_id, edge.device_id, record.sequence)
            log.error("forwarded %s #%d from edge %s turned down: %s: %s", record.device_id, record.sequence,
                      edge.device_id, exc.reason_name, exc.message)
            return Ack(record.device_id, record.sequence, False, exc.reason)
        await store.advance_cursor(conn, record.device_id, journal_id, edge.device_id, record.sequence)
        return Ack(record.device_id, record.sequence, True, conflict=conflict,
                   taken_in=await store.current_transaction(conn))

    async def _take_admission(self, conn: Connection, edge: Edge, device: Device, made: OfflineAdmission) -> bool:
        """Record the edge's decision; an admission consumes the ticket's use, whatever the row says now."""
        if not made.request_id:
            raise InvalidArgument("a forwarded decision needs its request_id")
        place = await self._place_of(conn, device)
        direction = made.direction or place.direction
        serial = 0
        card = ""
        if made.card_uid:
            card = sales_rules.normalize_card_uid(made.card_uid)
        elif made.code:
            try:
                serial = native.decode(made.code.strip()).serial
            except native.CodeError:
                serial = 0  # the edge admitted on something unreadable here: recorded without a ticket
        # The request's earlier decisions are read under the park's lock (lock_batch), where the admission
        # pipeline reads them too: read before it, a decision of the same request that the pipeline was
        # committing meanwhile (the edge had stopped waiting for it) would be missed and counted again.
        offline_id = f"{made.request_id}:offline"
        locked = await admission_store.lock_batch(conn, {place.park_id},
                                                  [(device.id, made.request_id), (device.id, offline_id)],
                                                  [serial] if serial else [], [card] if card else [])
        prior = locked.prior.get((device.id, made.request_id))
        request_id = made.request_id
        if prior is not None:
            if prior.allow or not made.allow:
                return False  # the cluster decided this request already, the same way or as an admission
            request_id = offline_id  # the cluster refused it, the edge let them in: it stands
            if (device.id, offline_id) in locked.prior:
                return False
        if made.charged < 0 or (made.charged and not made.allow):
            raise InvalidArgument("a forwarded charge is a positive amount of an admission", Reason.INVALID_AMOUNT)
        ticket = locked.by_card.get(card) if card else locked.by_serial.get(serial)
        park = locked.parks.get(place.park_id)
        admission = Admission(place, request_id, direction, serial=serial, card_uid=card)
        if not made.allow or ticket is None or park is None:
            # a refusal changes nothing; an admission of a ticket this cluster does not hold is kept as it was
            row = _row(admission, place.park_id, ticket.ticket_id if ticket else None, made.allow, made.reason,
                       0, False, -1, False)
            await admission_store.write_batch(conn, made.decided_at, [], [row], [], [])
            await store.mark_offline(conn, device.id, request_id, edge.device_id, edge.site)
            return False
        clock = LocalTime.at(made.decided_at, ZoneInfo(place.time_zone))
        outcome = rules.reconcile_admission(ticket, place, direction, park.state, clock)
        verdict = outcome.verdict
        charged = made.charged if ticket.balance is not None else 0
        if charged and verdict.ticket is not None:
            # The gate opened on it: the charge stands, even beyond the balance (the debt shows, see docs/sites.md).
            verdict = replace(verdict, ticket=replace(verdict.ticket, balance=(verdict.ticket.balance or 0) - charged))
            after_balance = verdict.ticket.balance if verdict.ticket is not None else None
            if after_balance is not None and after_balance < 0:
                log.warning("offline charge %s/%s of %d on ticket %s exceeded the balance: %d owed",
                            device.id, request_id, charged, ticket.ticket_id, -after_balance)
        earlier = await store.first_admission(conn, ticket.ticket_id) if outcome.used_elsewhere else None
        if earlier is not None and earlier.site == edge.site and earlier.device_id == device.id:
            earlier = None  # the same gate used it up itself: nothing happened elsewhere
        after_park = move_park(park.state, verdict.moved) if verdict.moved else None
        row = replace(_row(admission, place.park_id, ticket.ticket_id, True, made.reason, verdict.moved,
                           verdict.counted, verdict.entries_left, verdict.hold_for_check),
                      charged=charged, balance=verdict.ticket.balance if verdict.ticket is not None else None)
        await admission_store.write_batch(
            conn, made.decided_at, [verdict.ticket] if verdict.ticket is not None else [], [row],
            [after_park] if after_park else [],
            [place.park_id] if after_park and after_park.paused != park.state.paused else [])
        await store.mark_offline(conn, device.id, request_id, edge.device_id, edge.site)
        if earlier is None:
            return False
        await store.record_conflict(conn, ticket.ticket_id, place.park_id, earlier, edge.site, device.id,
                                    made.decided_at)
        log.warning("conflict: ticket %s admitted at site %s (%s) and, offline, at site %s (%s)", ticket.ticket_id,
                    earlier.site, earlier.device_id, edge.site, device.id)
        return True

    async def _take_not_passed(self, conn: Connection, device: Device, report: NotPassed) -> None:
        """Give the admission back as for a gate of the cluster's own (nothing when it passed or is gone)."""
        for request_id in (report.request_id, f"{report.request_id}:offline"):
            if await self.gates.annul_in(conn, device.id, request_id):
                log.info("gate %s behind an edge: %s not passed, entry given back", device.id, request_id)
                return

    async def _take_sale(self, conn: Connection, edge: Edge, window: Device, sale: OfflineSale) -> None:
        """The order the edge sold, with exactly its tickets, as if sold at the window online."""
        if not 1 <= len(sale.request_id) <= 128:
            raise InvalidArgument("an offline sale needs the window's request_id (1-128 characters)")
        existing = await sales_store.order_by_request(conn, sale.request_id)
        if existing is not None:
            if bytes(existing.request_hash) != sale.fingerprint:
                raise Conflict(f"request id {sale.request_id!r} was used for a different order",
                               Reason.IDEMPOTENCY_CONFLICT)
            return
        if window.kind not in SELLING_DEVICE_KINDS:
            raise InvalidArgument(f"device {window.id!r} is a {window.kind}, not a sales window",
                                  Reason.NOT_A_SALES_WINDOW)
        if not sale.tickets:
            raise InvalidArgument("an offline sale without tickets", Reason.INVALID_QUANTITY)
        operator_id = await store.user_by_name(conn, sale.operator)
        if operator_id is None:
            raise NotFound(f"no operator {sale.operator!r}", Reason.BAD_CREDENTIALS)
        keyring = native.Keyring((k.key_id, bytes(k.public_key), native.KeyState.ACTIVE)
                                 for k in await store.site_public_keys(conn, edge.site) if k.state != "revoked")
        tickets: list[NewTicket] = []
        currencies: set[str] = set()
        for t in sale.tickets:
            new, currency = await self._offline_ticket(conn, edge, keyring, t)
            tickets.append(new)
            currencies.add(currency)
        if len(currencies) > 1:
            raise InvalidArgument("one order is paid in one currency")
        taken = await store.serials_taken(conn, [t.serial for t in tickets])
        if taken:
            raise Conflict(f"serials {taken} are on other tickets already", Reason.SERIAL_NOT_RESERVED)
        sales_rules.check_payments(sale.payments, sale.total, sale.customer)
        order_id = await sales_store.insert_order(conn, NewOrder(
            request_id=sale.request_id, request_hash=sale.fingerprint, kind="sale", currency=currencies.pop(),
            total=sale.total, window_device_id=window.id, operator_id=operator_id, operator=sale.operator,
            customer=sale.customer))
        if order_id is None:
            raise Conflict("the same offline sale is being forwarded twice at once", Reason.CONFLICT)
        order_id = await store.adopt_offline_order(conn, order_id, sale.order_id, sale.sold_at, edge.site)
        await sales_store.insert_tickets(conn, [_with_order(t, order_id) for t in tickets])
        await store.adopt_ticket_ids(conn, [t.serial for t in sale.tickets], [t.ticket_id or None
                                                                              for t in sale.tickets])
        await sales_store.insert_payments(conn, order_id, sale.payments)
        for t in sale.tickets:
            if t.card_uid and not await sales_store.bind_card(conn, sales_rules.normalize_card_uid(t.card_uid),
                                                              t.serial):
                # the card holds a live ticket bound centrally meanwhile: the sale stands, the card stays as it is
                log.warning("offline sale %s: card %s holds a live ticket; not re-bound", sale.request_id,
                            t.card_uid)
        log.info("offline sale %s of site %s: %d tickets, total %d, by %s at %s", sale.request_id, edge.site,
                 len(tickets), sale.total, sale.operator, window.id)

    async def _offline_ticket(self, conn: Connection, edge: Edge, keyring: native.Keyring,
                              t: OfflineTicket) -> tuple[NewTicket, str]:
        """A ticket the edge issued: its code must be signed by the site's key with a serial of its blocks."""
        if t.ticket_id:
            try:
                uuid.UUID(t.ticket_id)
            except ValueError:
                raise InvalidArgument(f"ticket id {t.ticket_id!r} is not a UUID") from None
        result = native.authenticate_batch([t.code.strip()], keyring)[0]
        code = result.ticket
        if not result.ok or code is None:
            raise InvalidArgument(f"ticket {t.serial}: the code is not signed by a key of site {edge.site!r} "
                                  f"({result.reason.name})", Reason.NOT_A_SITE_CODE)
        if code.serial != t.serial:
            raise InvalidArgument(f"ticket {t.serial}: its code carries serial {code.serial}", Reason.NOT_A_SITE_CODE)
        if not await store.serial_reserved(conn, edge.site, code.key_id, code.serial):
            raise InvalidArgument(f"serial {code.serial} is not in a range reserved for site {edge.site!r}",
                                  Reason.SERIAL_NOT_RESERVED)
        product = await product_or_refuse(conn, t.product_id)
        park = await catalog_store.get_park(conn, product.park_id)
        assert park is not None
        if code.product_id != product.number or code.park_id != park.number:
            raise InvalidArgument(f"ticket {t.serial}: the code names another product or park",
                                  Reason.NOT_A_SITE_CODE)
        zone = ZoneInfo(park.time_zone)
        visit = t.visit_date or datetime.fromtimestamp(code.valid_from, zone).date()
        terms = sales_rules.ticket_terms(product.kind, product.rules, visit, zone)
        window = code.night_window
        return NewTicket(
            serial=code.serial, order_id="", product_id=product.id, product_version=product.version,
            park_id=park.id, key_id=code.key_id, code=t.code.strip(), card_uid=(
                sales_rules.normalize_card_uid(t.card_uid) if t.card_uid else None),
            price=t.price, deposit=terms.deposit, visit_date=visit,
            valid_from=datetime.fromtimestamp(code.valid_from, UTC), valid_until=datetime.fromtimestamp(
                code.valid_until, UTC),
            valid_days=terms.valid_days, persons=code.persons, entries_total=terms.entries_total,
            entries_per_day=terms.entries_per_day, reentry_allowed=terms.reentry_allowed,
            hold_for_check=terms.hold_for_check, attraction_ids=list(terms.attraction_ids),
            window_start=window[0] if window else None, window_end=window[1] if window else None,
        ), park.currency

    # --- 6. conflicts ---------------------------------------------------------------------------

    async def conflicts(self, park_id: str, since: datetime | None) -> tuple[list[ConflictRow], int]:
        async with self.db.connection() as conn:
            return await store.list_conflicts(conn, park_id, since), await store.count_conflicts(conn)


def _row(admission: Admission, park_id: str, ticket_id: str | None, allow: bool, reason: Reason, moved: int,
         counted: bool, entries_left: int, hold: bool) -> admission_store.DecisionRow:
    return admission_store.DecisionRow(
        device_id=admission.place.device_id, request_id=admission.request_id, ticket_id=ticket_id, park_id=park_id,
        attraction_id=admission.place.attraction_id, direction=admission.direction, allow=allow,
        reason=reason.value, moved=moved, counted=counted, entries_left=entries_left, hold_for_check=hold,
        awaiting_passage=False)


def _with_order(ticket: NewTicket, order_id: str) -> NewTicket:
    return replace(ticket, order_id=order_id)
