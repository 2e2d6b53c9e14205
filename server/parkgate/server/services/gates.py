"""The gates connected to this server: sessions, validations, passage reports, and park-wide commands.

Park state (entry paused at the cap, emergency open) lives in the database,
shared by every server. Each server keeps its own gates in step with it:
PostgreSQL NOTIFY (sent in the transaction that changed the state) is the
fast path; a poll every ``state_poll_seconds`` catches whatever a lost
listener connection missed (a failover). A gate that connects gets the
current state in its welcome, so nothing depends on having heard every
notification.

An emergency open (S25) waits for the acknowledgement of every gate that is
connected to *any* server: acknowledgements are written to the database by the
server that holds the gate, and the server running the command reads them.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import functools
import logging
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from typing import Literal

from parkgate import native
from parkgate.common import metrics
from parkgate.rules import (
    AdmissionTerms,
    Direction,
    GatePlace,
    annul,
    capacity_paused,
    effective_terms,
    move_park,
)
from parkgate.server.domain.admission import Decision
from parkgate.server.domain.errors import InvalidArgument, NotFound, ParkgateError, Reason, Unauthenticated
from parkgate.server.domain.flow import alert_kind
from parkgate.server.domain.limits import DeviceLimits, TokenBucket
from parkgate.server.power import AUDIT_METHOD as POWER_AUDIT_METHOD
from parkgate.server.store import Database
from parkgate.server.store import admissions as admission_store
from parkgate.server.store import catalog as catalog_store
from parkgate.server.store import flow as flow_store
from parkgate.server.store import gates as store
from parkgate.server.store import held_checks as held_store
from parkgate.server.store import reissue as reissue_store
from parkgate.server.store import settings as settings_store
from parkgate.server.store.database import Connection
from parkgate.server.store.gates import GateConnection, ParkView
from parkgate.server.store.held_checks import confirm_command_id
from parkgate.server.store.keys import KEYS_CHANGED
from parkgate.server.store.rows.admin import Device

from .admission import AdmissionPipeline
from .flow import FlowRecorder
from .gate_presence import GatePresence

log = logging.getLogger(__name__)

CommandKind = Literal["PAUSE_ENTRY", "RESUME_ENTRY", "EMERGENCY_OPEN_CMD", "EMERGENCY_RELEASE_CMD", "UPDATE_KEYS",
                      "CONFIRM_CHECK"]
GATE_KINDS = ("gate", "handheld")
PASSAGE_SWEEP_SECONDS = 1.0


class _StreamEnd:
    """Put in a gate's outbox to end its stream (the gate went away, or the server is stopping)."""


GATE_STREAM_END = _StreamEnd()


@dataclass(frozen=True, slots=True)
class GateCommand:
    command_id: str
    kind: CommandKind
    text: str = ""
    request_id: str = ""    # CONFIRM_CHECK: the held validation
    # UPDATE_KEYS: every key a gate may verify with (key id, public key, retired), and the revoked ids
    keys: tuple[tuple[int, bytes, bool], ...] = ()
    revoked_key_ids: tuple[int, ...] = ()
    # UPDATE_KEYS: serials of tickets whose code leaked and was reissued
    revoked_serials: tuple[int, ...] = ()


#: NOTIFY payloads on the park state channel that carry a control-room confirmation, not a park id.
CONFIRM_PREFIX = "confirm-check\t"


@dataclass(frozen=True, slots=True)
class GateResult:
    request_id: str
    decision: Decision
    display_text: str
    currency: str = ""


@dataclass(eq=False)
class GateSession:
    """One connected gate: where it stands, and the messages waiting to be sent to it."""

    place: GatePlace
    language: str
    software_version: str
    # for the welcome: what the gate needs to decide alone when no server answers
    attraction_slots: dict[int, str] = field(default_factory=dict)
    products: list[tuple[int, AdmissionTerms]] = field(default_factory=list)
    outbox: asyncio.Queue[GateResult | GateCommand | _StreamEnd] = field(default_factory=asyncio.Queue)
    paused: bool = False
    emergency: bool = False
    state: str = "ok"
    currency: str = ""          # the park's: a stored-value balance is shown in it
    in_flight: int = 0          # validations submitted and not yet answered
    fast_mode: bool = False     # S24: the gate opens on a locally valid code before our answer
    bucket: TokenBucket | None = None  # messages a second (DeviceLimits)
    reading_done: bool = False  # the gate half-closed its stream: end it once every answer went out

    def end_when_answered(self) -> None:
        """The gate sent its last message: its stream ends after the last answer, never before."""
        self.reading_done = True
        self.end_if_answered()

    def end_if_answered(self) -> None:
        """End the stream of a gate that sent its last message, once nothing it asked is still in flight."""
        if self.reading_done and self.in_flight == 0:
            self.outbox.put_nowait(GATE_STREAM_END)

    @property
    def device_id(self) -> str:
        return self.place.device_id


def emergency_command_id(state: ParkView) -> str:
    """The same id on every server for one emergency open or release, so acknowledgements meet."""
    kind = "open" if state.emergency else "release"
    return f"emergency-{kind}:{state.park_id}:{state.emergency_changed_at.timestamp():.6f}"


@dataclass(frozen=True, slots=True)
class ParkSnapshot:
    """A park as a connecting gate's welcome shows it; ``state`` None: no such park."""

    state: ParkView | None
    slots: dict[str, int]
    products: list[tuple[int, AdmissionTerms]]
    default_language: str


class GateHub:
    def __init__(
        self, db: Database, pipeline: AdmissionPipeline, server_id: str,
        check_device: Callable[[str, str], Awaitable[Device]], *,
        state_poll_seconds: float = 2.0, ack_wait_seconds: float = 5.0, limits: DeviceLimits | None = None,
    ) -> None:
        self.db = db
        self.pipeline = pipeline
        self.server_id = server_id
        self._check_device = check_device
        self.state_poll_seconds = state_poll_seconds
        self.ack_wait_seconds = ack_wait_seconds
        self.sessions: dict[str, GateSession] = {}
        self.limits = limits or DeviceLimits()
        self.pending = 0  # validations of all gates submitted and not yet answered
        self._keyring_seen: tuple[tuple[int, str], ...] | None = None
        # Revoked ticket codes (services/keys.py ReissueService): in the welcome and in UPDATE_KEYS.
        self.revoked_serials: tuple[int, ...] = ()
        self._texts: dict[tuple[str, str], str] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self.recorder: FlowRecorder | None = None  # the live flow's counters and alerts (S26)
        # S30: writes a gate's power transition (heartbeat on_battery changed) to the operation log
        self.audit: Callable[..., Awaitable[None]] | None = None
        self._streams = metrics.CONNECTED_STREAMS.labels("gate")
        # Set whenever a park's state is synced (NOTIFY, poll, a command here): wakes the site feeds at once.
        self.state_watchers: set[asyncio.Event] = set()
        self.presence = GatePresence(db, server_id)  # connects and disconnects, written in batches
        # A park's welcome data being read for the gates connecting now (see _park_snapshot).
        self._park_reads: dict[str, asyncio.Future[ParkSnapshot]] = {}

    # --- lifecycle ----------------------------------------------------------------------

    async def start(self) -> None:
        await self.pipeline.start()
        await self.keys_changed()
        async with self.db.connection() as conn:
            self._texts = await store.reason_texts(conn)
        self._tasks = [
            asyncio.create_task(self._listen(), name="gates-listen"),
            asyncio.create_task(self._poll(), name="gates-poll"),
            asyncio.create_task(self._sweep_passages(), name="gates-passages"),
        ]

    def end_streams(self) -> None:
        """End every gate stream of this server (at shutdown): gates reconnect to another server."""
        for session in list(self.sessions.values()):
            session.outbox.put_nowait(GATE_STREAM_END)

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.pipeline.stop()

    # --- a gate's stream ------------------------------------------------------------------

    async def connect(self, *, device_id: str, secret: str, direction: Direction | None, park_id: str,
                      attraction_id: str, software_version: str, confirms_passage: bool,
                      fast_mode: bool = False) -> tuple[GateSession, ParkView]:
        """Authenticate the device (S2) and place it; returns its session and the park's state for the welcome."""
        if not device_id:
            raise Unauthenticated("the hello names no device", Reason.UNKNOWN_DEVICE)
        device = await self._check_device(device_id, secret)
        if device.kind not in GATE_KINDS:
            raise Unauthenticated(f"device {device_id!r} is a {device['kind']}, not a gate", Reason.UNKNOWN_DEVICE)
        registered_park = device.park_id
        if park_id and registered_park and park_id != registered_park:
            raise InvalidArgument(f"device {device_id!r} is registered at park {registered_park!r}, not {park_id!r}",
                                  Reason.NOT_VALID_FOR_PARK)
        park_id = registered_park or park_id
        if not park_id:
            raise InvalidArgument(f"device {device_id!r} has no park: register it with one", Reason.UNKNOWN_PARK)
        attraction_id = device.attraction_id or attraction_id
        park = await self._park_snapshot(park_id)
        if park.state is None:
            raise NotFound(f"no park {park_id!r}", Reason.UNKNOWN_PARK)
        slots_by_id, products, default_language = park.slots, park.products, park.default_language
        slot = 0
        if attraction_id:
            if attraction_id not in slots_by_id:
                raise InvalidArgument(f"no attraction {attraction_id!r} in park {park_id!r}",
                                      Reason.UNKNOWN_ATTRACTION)
            slot = slots_by_id[attraction_id]
        await self.presence.connected(device_id, park_id)
        state = park.state
        place = GatePlace(
            device_id=device_id, park_id=park_id, park_number=state.number, time_zone=state.time_zone,
            attraction_id=attraction_id, attraction_slot=slot,
            direction=device.direction or direction or "in", confirms_passage=confirms_passage,
        )
        session = GateSession(place, device.language or str(default_language), software_version,
                              attraction_slots={slot: aid for aid, slot in slots_by_id.items()}, products=products,
                              paused=state.paused and place.direction == "in", emergency=state.emergency,
                              fast_mode=fast_mode, currency=state.currency,
                              bucket=TokenBucket(self.limits.messages_per_second, self.limits.burst))
        previous = self.sessions.get(device_id)
        if previous is not None:  # the same gate reconnected before its old stream noticed it was gone
            previous.outbox.put_nowait(GATE_STREAM_END)
        self.sessions[device_id] = session
        self._streams.inc()
        if self.recorder is not None:
            self.recorder.touch(park_id)
        log.info("gate %s connected (park %s, %s%s, version %s)", device_id, park_id, place.direction,
                 f", attraction {attraction_id}" if attraction_id else "", software_version or "?")
        return session, state

    async def _park_snapshot(self, park_id: str) -> ParkSnapshot:
        """What every gate of the park gets in its welcome, read once for all the gates connecting meanwhile.

        A reconnect storm (a server restart: hundreds of gates of one park within a second) would otherwise
        read the same park state, attractions, products and parameter once per gate. Only a read in flight
        is shared, nothing is kept: a gate connecting after it finished starts a new one. A change that
        lands while the shared read runs reaches the gate like any change to a connected gate (NOTIFY, and
        the state poll compares each gate's own state).
        """
        pending = self._park_reads.get(park_id)
        if pending is None:
            # shared by several calls, so it belongs to none of them (no call's operation-log record)
            pending = asyncio.get_running_loop().create_task(self._read_park(park_id), context=contextvars.Context())
            self._park_reads[park_id] = pending
            pending.add_done_callback(functools.partial(self._park_read_done, park_id))
        return await asyncio.shield(pending)

    def _park_read_done(self, park_id: str, future: asyncio.Future[ParkSnapshot]) -> None:
        if self._park_reads.get(park_id) is future:
            del self._park_reads[park_id]
        if not future.cancelled():
            future.exception()  # retrieved: every waiter got it already (no "never retrieved" warning)

    async def _read_park(self, park_id: str) -> ParkSnapshot:
        async with self.db.transaction() as conn:
            states = await store.park_states(conn, [park_id])
            if not states:
                return ParkSnapshot(None, {}, [], "en")
            slots = await catalog_store.attraction_slots(conn, park_id)
            products = [(p.number, effective_terms(p.kind, p.rules))
                        for p in await admission_store.park_products(conn, park_id)]
            language = await settings_store.get_parameter(conn, "gate.default_language") or "en"
        return ParkSnapshot(states[0], slots, products, str(language))

    async def disconnect(self, session: GateSession) -> None:
        self._streams.dec()
        if self.recorder is not None:
            self.recorder.touch(session.place.park_id)
        if self.sessions.get(session.device_id) is session:
            del self.sessions[session.device_id]
            with contextlib.suppress(ParkgateError):
                await self.presence.disconnected(session.device_id)
            log.info("gate %s disconnected", session.device_id)

    def submit(self, session: GateSession, request_id: str, *, code: str = "", card_uid: str = "",
               direction: Direction | None = None, forwarded: bool = False) -> None:
        """Queue a validation; its result (or why there is none) goes to the gate's outbox when decided.

        ``forwarded``: an admission the gate made offline, handed over now (its scan time is in the past).
        """
        if not request_id:
            session.outbox.put_nowait(self.result(session, "", Decision.deny(Reason.INVALID_ARGUMENT)))
            return
        refusal = self._over_limit(session)
        if refusal is not None:
            session.outbox.put_nowait(self.result(session, request_id, Decision.deny(refusal)))
            return
        session.in_flight += 1
        self.pending += 1
        future = self.pipeline.submit(session.place, request_id, code=code, card_uid=card_uid,
                                      direction=direction or session.place.direction)
        future.add_done_callback(functools.partial(self._answer, session, request_id, forwarded))

    def message_allowed(self, session: GateSession) -> bool:
        """Every message a gate sends takes a token; False when it sends faster than its share."""
        return session.bucket is None or session.bucket.take()

    def _over_limit(self, session: GateSession) -> Reason | None:
        if session.in_flight >= self.limits.max_in_flight:
            return Reason.DEVICE_FLOODING
        if self.pending >= self.limits.max_pending:
            return Reason.SERVER_OVERLOADED
        return None

    def _answer(self, session: GateSession, request_id: str, forwarded: bool,
                future: asyncio.Future[Decision]) -> None:
        session.in_flight -= 1
        self.pending -= 1
        if not future.cancelled():
            error = future.exception()
            if error is None:
                decision = future.result()
            elif isinstance(error, ParkgateError):
                # No decision could be made (the database stayed away): the gate falls back to its offline rules.
                decision = Decision.deny(error.reason)
            else:
                log.error("validation %s of gate %s failed", request_id, session.device_id, exc_info=error)
                decision = Decision.deny(Reason.INTERNAL)
            session.outbox.put_nowait(self.result(session, request_id, decision))
            if not decision.allow and self.recorder is not None:
                self._alert(session, request_id, decision, forwarded)
        session.end_if_answered()

    def _alert(self, session: GateSession, request_id: str, decision: Decision, forwarded: bool) -> None:
        """A refusal the control room must see: a forged code, a refusal after a fast open, a conflict."""
        kind = alert_kind(decision.reason.value, fast_mode=session.fast_mode, forwarded=forwarded)
        if kind is not None and self.recorder is not None and not decision.retried:
            detail = "offline admission refused when forwarded" if forwarded else (
                "gate opened in fast mode before this refusal" if session.fast_mode else "")
            self.recorder.alert(kind, session.place, decision.reason, request_id, detail)

    def result(self, session: GateSession, request_id: str, decision: Decision) -> GateResult:
        return GateResult(request_id, decision, self.display_text(decision.reason, session.language),
                          session.currency)

    def display_text(self, reason: str, language: str) -> str:
        return (self._texts.get((reason, language)) or self._texts.get((reason, "en"))
                or reason.replace("_", " ").capitalize())

    async def heartbeat(self, session: GateSession, state: str, on_battery: bool = False) -> None:
        state_changed, session.state = (state or "ok") != session.state, state or "ok"
        async with self.db.transaction() as conn:
            changed = await store.gate_heartbeat(conn, session.device_id, self.server_id, session.state, on_battery)
        if changed:  # S30: a gate's mains going or coming back is worth one line, and a record
            log.warning("gate %s: %s", session.device_id,
                        "on battery (its mains are out)" if on_battery else "back on mains")
            if self.audit is not None:
                try:
                    await self.audit(user_id=None, username="", device_id=session.device_id,
                                     method=POWER_AUDIT_METHOD, outcome="ON_BATTERY" if on_battery else "ONLINE",
                                     summary={"role": "gate", "on_battery": on_battery}, peer=self.server_id)
                except ParkgateError as exc:  # the heartbeat itself is written; a lost record is only logged
                    log.error("gate %s power transition not in the operation log: %s", session.device_id, exc)
        if state_changed and self.recorder is not None:  # the gate's tile on the wall screen changes colour
            self.recorder.touch(session.place.park_id)

    async def passage(self, session: GateSession, request_id: str, passed: bool) -> bool:
        """The relay board's report: passed confirms the admission; not passed gives the entry back."""
        if passed:
            async with self.db.transaction() as conn:
                return await store.confirm_passage(conn, session.device_id, request_id)
        done = await self.annul(session.device_id, request_id)
        if done:
            log.info("gate %s: %s not passed, entry given back", session.device_id, request_id)
        return done

    async def annul(self, device_id: str, request_id: str) -> bool:
        """Give an admission back (the use, the day's count, the place inside); once only, on any server."""
        async with self.db.transaction() as conn:
            return await self.annul_in(conn, device_id, request_id)

    async def annul_in(self, conn: Connection, device_id: str, request_id: str) -> bool:
        """:meth:`annul` in the caller's transaction (a site edge forwards a gate's passage report with others)."""
        now = self.pipeline.clock()
        held = await admission_store.lock_unconfirmed(conn, device_id, request_id)
        if held is None:
            return False
        if held.ticket is not None:
            await admission_store.write_ticket_uses(conn, annul(held.ticket, held.moved, held.counted,
                                                                       held.charged, held.attraction_id))
        if held.park_gate and held.moved:
            park = await admission_store.lock_park(conn, held.park_id)
            if park is not None:
                after = move_park(park.state, -held.moved)
                await admission_store.write_parks(conn, now, [after])
                if after.paused != park.state.paused:
                    await admission_store.notify_park(conn, held.park_id)
        await admission_store.mark_annulled(conn, device_id, request_id, now)
        return True

    async def acknowledge(self, session: GateSession, command_id: str, done: bool, detail: str) -> None:
        async with self.db.transaction() as conn:
            await store.record_ack(conn, command_id, session.device_id, done, detail)

    # --- park state: pause/resume (S27) and emergency (S25) -----------------------------------

    def _sync_park(self, state: ParkView) -> None:
        """Send each of the park's gates what changed since it last heard (and wake the site feeds)."""
        for watcher in self.state_watchers:
            watcher.set()
        for session in list(self.sessions.values()):
            if session.place.park_id != state.park_id:
                continue
            if state.emergency != session.emergency:
                session.emergency = state.emergency
                kind: CommandKind = "EMERGENCY_OPEN_CMD" if state.emergency else "EMERGENCY_RELEASE_CMD"
                session.outbox.put_nowait(GateCommand(emergency_command_id(state), kind,
                                                      "Emergency: open and stay open" if state.emergency
                                                      else "Emergency over: back to normal"))
            paused = state.paused and session.place.direction == "in"
            if paused != session.paused:
                session.paused = paused
                text = (f"Park full ({state.inside}/{state.capacity})" if paused
                        else f"Entry resumes ({state.inside}/{state.capacity})")
                session.outbox.put_nowait(GateCommand(str(uuid.uuid4()), "PAUSE_ENTRY" if paused else "RESUME_ENTRY",
                                                      text))

    async def refresh(self, park_ids: list[str] | None = None) -> None:
        wanted = park_ids if park_ids is not None else sorted({s.place.park_id for s in self.sessions.values()})
        if not wanted:
            return
        async with self.db.connection() as conn:
            states = await store.park_states(conn, wanted)
        for state in states:
            self._sync_park(state)

    async def _listen(self) -> None:
        while True:
            try:
                async for park_id in store.notifications(self.db.conninfo, store.PARK_STATE_CHANNEL):
                    if park_id.startswith(CONFIRM_PREFIX):
                        self._deliver_confirm(park_id)
                    elif park_id == KEYS_CHANGED:
                        await self.keys_changed()
                    else:
                        await self.refresh([park_id])
            except (ParkgateError, OSError) as exc:
                log.warning("park state listener: %s; listening again in 1s (the poll covers the gap)", exc)
            await asyncio.sleep(1.0)

    async def _poll(self) -> None:
        while True:
            await asyncio.sleep(self.state_poll_seconds)
            try:
                await self.refresh()
                await self.keys_changed()
            except ParkgateError as exc:
                log.warning("park state poll: %s", exc)

    async def _sweep_passages(self) -> None:
        """Annul admissions whose gate never reported the passage (the gate died mid-way)."""
        while True:
            await asyncio.sleep(PASSAGE_SWEEP_SECONDS)
            try:
                async with self.db.transaction() as conn:
                    timeout = float(await settings_store.get_parameter(conn, "gate.passage_timeout_seconds") or 10)
                    # twice the gate's own wait: a gate that is alive reports first
                    due = await admission_store.unconfirmed_due(conn, 2 * timeout)
                done = [key for key in due if await self.annul(*key)]
                if done:
                    log.info("annulled %d admissions without a passage report", len(done))
            except ParkgateError as exc:
                log.warning("passage sweep: %s", exc)

    async def keys_changed(self) -> None:
        """Reload the keyring and the revoked codes; when they changed, send every gate of this server the keys
        and revoked serials (UPDATE_KEYS)."""
        keyring = await self.pipeline.load_keyring(force=True)
        async with self.db.connection() as conn:
            revoked_serials = tuple(await reissue_store.revoked_serials(conn))
        seen = tuple((e.key_id, e.state.name) for e in keyring)
        previous, self._keyring_seen = self._keyring_seen, seen
        previous_serials, self.revoked_serials = self.revoked_serials, revoked_serials
        if previous is None or (previous == seen and previous_serials == revoked_serials):
            return
        command = self.keys_command(keyring, revoked_serials)
        for session in list(self.sessions.values()):
            session.outbox.put_nowait(command)
        log.info("keyring changed (%s): UPDATE_KEYS sent to %d gates",
                 ", ".join(f"{k}:{state.lower()}" for k, state in seen), len(self.sessions))

    @staticmethod
    def keys_command(keyring: native.Keyring, revoked_serials: tuple[int, ...] = ()) -> GateCommand:
        keys = tuple((e.key_id, e.public_key, e.state.name == "RETIRED") for e in keyring
                     if e.state.name != "REVOKED")
        revoked = tuple(e.key_id for e in keyring if e.state.name == "REVOKED")
        fingerprint = (",".join(f"{k}{'r' if r else ''}" for k, _, r in keys) + "-" + ",".join(map(str, revoked))
                       + f"-{len(revoked_serials)}:{revoked_serials[-1] if revoked_serials else 0}")
        return GateCommand(f"keys:{fingerprint}", "UPDATE_KEYS", "the ticket signing keys or revoked codes changed",
                           keys=keys, revoked_key_ids=revoked, revoked_serials=revoked_serials)

    async def emergency(self, park_id: str, on: bool) -> tuple[int, list[str]]:
        """Open (or release) every gate of the park; returns (gates told, gates that acknowledged)."""
        async with self.db.transaction() as conn:
            state = await store.set_emergency(conn, park_id, on)
        if state is None:
            raise NotFound(f"no park {park_id!r}", Reason.UNKNOWN_PARK)
        log.warning("EMERGENCY %s for park %s", "OPEN" if on else "RELEASE", park_id)
        self._sync_park(state)
        command_id = emergency_command_id(state)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.ack_wait_seconds
        while True:
            async with self.db.connection() as conn:
                expected = await store.connected_gates(conn, park_id)
                acked = await store.acks_for(conn, command_id)
            if set(expected) <= set(acked) or loop.time() >= deadline:
                return len(expected), acked
            await asyncio.sleep(0.1)

    async def confirm_check(self, device_id: str, request_id: str, note: str) -> tuple[bool, str]:
        """S15: the control room confirms a held check; whichever server holds the gate's stream sends it.

        Every server hears the NOTIFY; the one holding the gate sends
        CONFIRM_CHECK; the answer is whether the gate acknowledged in time.
        """
        if not device_id or "\t" in device_id or "\t" in request_id or "\t" in note:
            raise InvalidArgument("name the gate (device id) whose held check to confirm")
        command_id = confirm_command_id(device_id, request_id or str(uuid.uuid4()))
        async with self.db.transaction() as conn:
            await admission_store.notify_park(conn, f"{CONFIRM_PREFIX}{device_id}\t{request_id}\t{command_id}\t{note}")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.ack_wait_seconds
        while loop.time() < deadline:
            async with self.db.connection() as conn:
                acked = device_id in await store.acks_for(conn, command_id)
            if acked:
                async with self.db.transaction() as conn:
                    # the park's live screens drop the held check now, not at their next interval
                    park_id = await held_store.device_park(conn, device_id)
                    if park_id:
                        await flow_store.notify_flow(conn, [park_id])
                return True, command_id
            await asyncio.sleep(0.1)
        return False, command_id

    def _deliver_confirm(self, payload: str) -> None:
        parts = payload[len(CONFIRM_PREFIX):].split("\t")
        if len(parts) != 4:
            return
        device_id, request_id, command_id, note = parts
        session = self.sessions.get(device_id)
        if session is not None:
            log.info("control room confirms the held check %s at gate %s", request_id or "(current)", device_id)
            session.outbox.put_nowait(GateCommand(command_id, "CONFIRM_CHECK", note or "Checked by the control room",
                                                  request_id))

    async def set_capacity(self, park_id: str, capacity: int, margin: int) -> ParkView:
        if capacity < 0 or margin < 0:
            raise InvalidArgument("capacity and its resume margin cannot be negative")
        async with self.db.transaction() as conn:
            if not await store.set_capacity(conn, park_id, capacity, margin):
                raise NotFound(f"no park {park_id!r}", Reason.UNKNOWN_PARK)
            locked = await admission_store.lock_park(conn, park_id)
            assert locked is not None
            park = locked.state
            paused = capacity_paused(park.inside, capacity, margin, park.paused)
            if paused != park.paused:
                await admission_store.write_parks(conn, self.pipeline.clock(), [replace(park, paused=paused)])
                await admission_store.notify_park(conn, park_id)
            state = (await store.park_states(conn, [park_id]))[0]
        log.info("park %s capacity %d (resume at or below %d), %d inside%s", park_id, capacity, capacity - margin,
                 state.inside, ", entry paused" if state.paused else "")
        self._sync_park(state)
        return state

    async def occupancy(self, park_id: str) -> ParkView:
        async with self.db.connection() as conn:
            states = await store.park_states(conn, [park_id])
        if not states:
            raise NotFound(f"no park {park_id!r}", Reason.UNKNOWN_PARK)
        return states[0]

    async def list_gates(self, park_id: str) -> list[GateConnection]:
        async with self.db.connection() as conn:
            return await store.list_gates(conn, park_id)

