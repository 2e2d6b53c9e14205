"""The gate controller agent: one state machine between the hardware and the servers.

What it does, in the order a person at the turnstile meets it:

1. A code from the scanner or a card UID from the reader becomes a
   validation with a device-unique request id (``device-boot-counter``),
   asked over the :class:`~.link.GateLink` with a deadline.
2. Allow: one relay ``OPEN`` per person (a group ticket opens N times) and the
   server's display text. Deny: the text, gate closed. Hold for check: closed,
   "see the checker", until a ``CONFIRM_CHECK`` command or a checker's confirm
   code, then the opens.
3. The board reports ``PASSED seq``/``NOTPASSED seq``; the agent maps the seq
   back to the request id and reports the passage, so a turnstile that did not
   turn gives the entry back (a group counts as passed when anyone passed).
4. Fast mode (S24): a locally valid signature opens at once and the server's
   decision follows; a later denial is an ``ALERT`` line. With no server
   answering in time, fast mode admits on the signature and keeps the
   admission on disk (:mod:`.offline`) until a server takes it.

Around that: pause/resume at the park's cap (entry gates refuse locally while
paused), emergency open/release commands (relay ``HOLD``/``CLOSE``, each
acknowledged), local emergency sources (the board's input, SIGUSR1/SIGUSR2, a
serial line, power loss when so configured) that hold the gate open without any
server, reconnection with exponential backoff across the configured servers,
and a heartbeat with the gate's state.

Every decision is logged as one sentence a person can read (the way Patroni's
HA loop reports each cycle). All state changes happen on one asyncio loop:
device threads only queue events, the credential worker handles one person at
a time, and the event loop handles everything else, so an emergency command
is never stuck behind a slow validation.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import signal
import time
from dataclasses import dataclass, replace
from zoneinfo import ZoneInfo

from parkgate.common import __version__, metrics
from parkgate.common.power import PowerState, PowerWatcher, Transition
from parkgate.common.reason import Reason
from parkgate.rules import AdmissionTerms, Verdict

from ..devices import CommandRefused, DeviceError, EventKind, SerialSettings
from .config import GateConfig, GateConfigError
from .inputs import (
    BoardEvent,
    CardPresented,
    CardThread,
    DeviceThread,
    DeviceTrouble,
    EmergencyInput,
    EmergencyLineThread,
    Scanned,
    ScannerThread,
    threadsafe_put,
)
from .link import Command, GateLink, Hello, LinkError, Result
from .offline import CachedKeys, GateDisk, LocalDecision, OfflineAdmission, OfflineDecider, keyring_from
from .turnstile import Turnstile

log = logging.getLogger("parkgate.gate")
#: After a failed renewal of the gate's client certificate, wait this long before trying again.
RENEW_RETRY_SECONDS = 300.0

TICK_SECONDS = 0.25
#: While the link stays up but the server decides nothing (its database away), offline admissions are
#: offered again this often; a new link offers them at once.
FORWARD_RETRY_SECONDS = 2.0


@dataclass(slots=True)
class Admission:
    """An admission whose opens wait for the board's passage reports."""

    request_id: str
    opens_left: int
    deadline: float
    decided: bool  # the server's decision is known (fast mode opens before it is)
    allowed: bool = True
    offline: bool = False
    passed: bool = False
    outcome: bool | None = None  # reported (or waiting for the decision to be reported)
    sent: bool = False


@dataclass(slots=True)
class HeldCheck:
    """A person the server admitted on condition a checker looks (hold_for_check)."""

    request_id: str
    persons: int
    deadline: float


@dataclass(frozen=True, slots=True)
class Connected:
    link: GateLink


@dataclass(frozen=True, slots=True)
class Disconnected:
    link: GateLink


@dataclass(frozen=True, slots=True)
class Tick:
    pass


class GateAgent:
    def __init__(self, config: GateConfig) -> None:
        self.cfg = config
        self.device_id = config.gate.device_id
        self._renew_after = 0.0  # monotonic time before which a failed certificate renewal is not retried
        self.zone = ZoneInfo(config.fast_mode.time_zone)
        self.disk = GateDisk(config.gate.state_dir)
        self.decider = OfflineDecider(config.gate.state_dir)
        cached = self.disk.load_keys()
        self.keys: CachedKeys | None = cached
        self.link: GateLink | None = None
        self.paused = False
        self.emergency: set[str] = set()  # active sources: server, relay, signal, serial, power
        self.on_battery = False
        self.mains_lost: set[str] = set()  # who says the mains are out: "relay" (POWER LOST), "ups"
        self.power = PowerWatcher.from_settings(config.power, who=config.gate.device_id)
        self.power.on_transition(lambda t: self._events.put_nowait(t))
        self.check: HeldCheck | None = None
        # the card collector at an exit (S21): single-use cards it took since start, and whether its bin is full
        self.cards_collected = 0
        self.collector_full = False
        self.opens: dict[int, Admission] = {}  # relay seq -> admission
        self.admissions: list[Admission] = []
        self.unsent: list[tuple[str, bool]] = []  # passage reports made while no link was up
        self.turnstile: Turnstile | None = None
        self.threads: list[DeviceThread] = []
        self.online = asyncio.Event()
        self.stopping = asyncio.Event()
        self._boot = f"{int(time.time() * 1000):x}"
        self._counter = 0
        self._events: asyncio.Queue[object] = asyncio.Queue()
        self._credentials: asyncio.Queue[object] = asyncio.Queue()
        self._background: set[asyncio.Task[None]] = set()
        self.metrics_endpoint: metrics.MetricsEndpoint | None = None
        self._link_gauge = metrics.CONNECTED_STREAMS.labels("server_link")
        self._forwarding: asyncio.Task[None] | None = None
        self._next_forward = 0.0
        self.ticks = 0  # rounds of the event loop's clock: a test's "later event" that a forward would precede

    # --- the one place decisions are announced --------------------------------------------

    def say(self, sentence: str, level: int = logging.INFO) -> None:
        log.log(level, "%s: %s", self.device_id, sentence)

    def state_word(self) -> str:
        if self.emergency:
            return "emergency"
        if self.paused:
            return "paused"
        if self.disk.admissions:
            return "offline-buffering"
        if self.collector_full:
            return "collector-full"
        return "ok"

    # --- lifecycle ----------------------------------------------------------------------------

    async def run(self, *, install_signals: bool = False) -> None:
        """Run until :meth:`stop` (or SIGTERM/SIGINT with ``install_signals``); leave the gate locked."""
        loop = asyncio.get_running_loop()
        put = threadsafe_put(loop, self._events)
        credential_put = threadsafe_put(loop, self._credentials)
        self.cfg.secret()  # fail now, not at the first connection, when the secret file is missing
        if install_signals:
            self._install_signals(loop)
        self._start_metrics()
        self._start_devices(put, credential_put)
        self.say(f"starting: {'handheld (no relay)' if self.cfg.handheld else 'turnstile'}, direction "
                 f"{self.cfg.gate.direction}, servers {', '.join(self.cfg.gate.servers)}"
                 f"{', fast mode' if self.cfg.fast_mode.enabled else ''}"
                 f"{', cached keys' if self.keys else ''}")
        tasks = [asyncio.create_task(c, name=n) for n, c in (
            ("gate-connection", self._connection_loop()), ("gate-events", self._event_loop()),
            ("gate-credentials", self._credential_loop()), ("gate-heartbeat", self._heartbeat_loop()),
            ("gate-tick", self._tick_loop()), ("gate-power", self.power.run()))]
        if self.turnstile is None:
            await self._show(self.cfg.display.idle)  # with a relay: once the board is there (READY)
        try:
            await self.stopping.wait()
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await self._shutdown()

    def stop(self) -> None:
        self.stopping.set()

    def _start_metrics(self) -> None:
        """/metrics when configured: the offline journal's depth and lag are read at each scrape."""
        metrics.track_offline_journal(lambda: len(self.disk.admissions), self._forward_lag)
        metrics.set_power_state("mains")
        if self.cfg.metrics.listen:
            self.metrics_endpoint = metrics.serve_metrics(self.cfg.metrics.listen)
            self.say(f"metrics on {self.metrics_endpoint.url}")

    def _forward_lag(self) -> float:
        """Seconds the oldest offline admission has waited for a server (0: none waits)."""
        waiting = list(self.disk.admissions)
        return max(0.0, time.time() - min(a.scanned_at for a in waiting)) if waiting else 0.0

    def _install_signals(self, loop: asyncio.AbstractEventLoop) -> None:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.stop)
        if self.cfg.emergency.signals:
            loop.add_signal_handler(signal.SIGUSR1, self._events.put_nowait, EmergencyInput("signal", True))
            loop.add_signal_handler(signal.SIGUSR2, self._events.put_nowait, EmergencyInput("signal", False))

    def _start_devices(self, put: object, credential_put: object) -> None:
        cfg = self.cfg
        if cfg.scanner is not None:
            self.threads.append(ScannerThread(cfg.scanner.settings(), cfg.scanner.framing(), credential_put))  # type: ignore[arg-type]
        if cfg.card_reader is not None:
            self.threads.append(CardThread(cfg.card_reader.name, credential_put))  # type: ignore[arg-type]
        if cfg.emergency.serial_port:
            self.threads.append(EmergencyLineThread(
                SerialSettings(cfg.emergency.serial_port, baudrate=cfg.emergency.serial_baud), put))  # type: ignore[arg-type]
        if cfg.relay is not None:
            self.turnstile = Turnstile(cfg.relay.settings(), cfg.relay.open_ms, put)  # type: ignore[arg-type]
            self.turnstile.start()
        for thread in self.threads:
            thread.start()

    async def _shutdown(self) -> None:
        if self.turnstile is not None and self.turnstile.connected:
            if self.emergency:
                self.say(f"stopping during an emergency ({', '.join(sorted(self.emergency))}): gate left open")
            else:
                with contextlib.suppress(DeviceError):
                    await self.turnstile.lock()
                with contextlib.suppress(DeviceError):
                    await self.turnstile.show(self.cfg.display.offline)
                self.say("stopping: relay CLOSE, gate locked")
        if self.link is not None:
            await self.link.close()
        for thread in self.threads:
            await asyncio.to_thread(thread.stop)
        if self.turnstile is not None:
            await asyncio.to_thread(self.turnstile.stop)
        if self.metrics_endpoint is not None:
            self.metrics_endpoint.close()
        self.say("stopped")

    # --- connection: hello, backoff, failover ----------------------------------------------------

    def _hello(self) -> Hello:
        g = self.cfg.gate
        return Hello(self.device_id, self.cfg.secret(), g.direction, g.park, g.attraction,
                     f"parkgate-gate {__version__}", self.cfg.fast_mode.enabled, self.cfg.confirms_passage)

    async def _renew_certificate(self, address: str) -> None:
        """Before connecting: renew the gate's client certificate at ``address`` when it expires soon.

        A refusal or an unreachable server leaves the current certificate in place (it is still valid) and
        is tried again after RENEW_RETRY_SECONDS, not at every reconnect.
        """
        from ..enroll import CallError, enroll, renewal_due

        g = self.cfg.gate
        if (g.tls_cert_file is None or g.tls_key_file is None or g.renew_days_before <= 0
                or time.monotonic() < self._renew_after):
            return
        if not await asyncio.to_thread(renewal_due, g.tls_cert_file, g.renew_days_before):
            return
        try:
            done = await asyncio.to_thread(enroll, address, self.device_id, self.cfg.secret(), g.tls_cert_file,
                                           g.tls_key_file, transport=g.transport(),
                                           timeout=g.connect_timeout_seconds)
        except (CallError, OSError, GateConfigError) as exc:
            self._renew_after = time.monotonic() + RENEW_RETRY_SECONDS
            self.say(f"client certificate renewal at {address} failed: {exc}", logging.WARNING)
            return
        self.say(f"client certificate renewed at {address}: serial {done.serial}, valid until "
                 f"{done.not_after:%Y-%m-%d %H:%M} UTC")

    async def _connection_loop(self) -> None:
        servers = list(self.cfg.gate.servers)
        first = 0  # start each round at the server that last worked
        delay = self.cfg.gate.reconnect_min_seconds
        while True:
            for k in range(len(servers)):
                address = servers[(first + k) % len(servers)]
                await self._renew_certificate(address)
                try:
                    link = GateLink(address, self._hello(), self.cfg.gate.transport())
                    await link.open(timeout=self.cfg.gate.connect_timeout_seconds)
                except (LinkError, GateConfigError) as exc:
                    self.say(f"cannot connect to {address}: {getattr(exc, 'reason', 'CONFIG')} ({exc})",
                             logging.WARNING)
                    continue
                first, delay = (first + k) % len(servers), self.cfg.gate.reconnect_min_seconds
                pump = asyncio.create_task(self._pump_commands(link))
                await self._events.put(Connected(link))
                try:
                    await link.closed.wait()
                finally:
                    pump.cancel()
                    await link.close()  # ends the request stream and the channel of a link that broke
                    await self._events.put(Disconnected(link))
                break  # lost it: start a new round at once, from the same server
            else:
                wait = delay * random.uniform(0.8, 1.2)
                self.say(f"no server answered; trying again in {wait:.1f}s", logging.WARNING)
                await asyncio.sleep(wait)
                delay = min(delay * 2, self.cfg.gate.reconnect_max_seconds)
                continue
            await asyncio.sleep(self.cfg.gate.reconnect_min_seconds)

    async def _pump_commands(self, link: GateLink) -> None:
        while True:
            await self._events.put(await link.commands.get())

    async def _heartbeat_loop(self) -> None:
        while True:
            await asyncio.sleep(self.cfg.gate.heartbeat_seconds)
            if self.link is not None:
                self.link.heartbeat(self.state_word(), len(self.disk.admissions), self.on_battery)

    async def _tick_loop(self) -> None:
        while True:
            await asyncio.sleep(TICK_SECONDS)
            await self._events.put(Tick())

    # --- the event loop: everything but the people at the gate ----------------------------------

    async def _event_loop(self) -> None:
        while True:
            event = await self._events.get()
            try:
                sentence = await self._handle(event)
            except DeviceError as exc:
                sentence = f"relay failed while handling {type(event).__name__}: {exc}"
                self.say(sentence, logging.ERROR)
                continue
            if sentence:
                self.say(sentence)

    async def _handle(self, event: object) -> str:
        if isinstance(event, Tick):
            self.ticks += 1
            self._keep_forwarding()
            return await self._expire()
        if isinstance(event, BoardEvent):
            return await self._board(event)
        if isinstance(event, Command):
            return await self._command(event)
        if isinstance(event, EmergencyInput):
            return await self._set_emergency(event.source, event.on)
        if isinstance(event, Connected):
            return await self._connected(event.link)
        if isinstance(event, Disconnected):
            if self.link is event.link:
                self.link = None
                self._link_gauge.set(0)
                self.online.clear()
                return f"lost the server {event.link.address}: deciding locally until a server answers"
            return ""
        if isinstance(event, Transition):
            return await self._ups(event)
        if isinstance(event, DeviceTrouble):
            self.say(f"{event.device}: {event.text}", logging.INFO if event.ok else logging.ERROR)
            return ""
        return f"ignored an unknown event {event!r}"

    async def _connected(self, link: GateLink) -> str:
        welcome = link.welcome
        assert welcome is not None
        if self.link is not None and self.link is not link:
            await self.link.close()
        self.link = link
        self._link_gauge.set(1)
        keyring = keyring_from([(k.key_id, k.public_key, k.retired) for k in welcome.keys],
                               [int(k) for k in welcome.revoked_key_ids if k.isdigit()],
                               self.keys.keyring if self.keys else None)
        if welcome.time_zone:  # the park's own zone wins over the configured fallback
            self.zone = ZoneInfo(welcome.time_zone)
        self.keys = CachedKeys(
            keyring, welcome.park_number, welcome.attraction_slot, welcome.park_id, welcome.attraction_id,
            welcome.time_zone or self.cfg.fast_mode.time_zone, dict(welcome.attraction_slots),
            {p.product_number: AdmissionTerms(p.entries_total, p.entries_per_day, p.reentry_allowed,
                                              p.hold_for_check, p.valid_days) for p in welcome.products},
            frozenset(welcome.revoked_serials))
        self.disk.save_keys(self.keys)
        was_paused, self.paused = self.paused, welcome.entry_paused
        sentence = (f"connected to {link.address} (server {welcome.server_id}): {len(welcome.keys)} keys, park "
                    f"number {welcome.park_number}, slot {welcome.attraction_slot}, "
                    f"entry {'paused' if self.paused else 'open'}, emergency {'ON' if welcome.emergency_open else 'off'}")
        self.say(sentence)
        try:
            if welcome.emergency_open != ("server" in self.emergency):
                self.say(await self._set_emergency("server", welcome.emergency_open))
            elif was_paused != self.paused and not self.emergency:
                await self._show(self.cfg.display.paused if self.paused else self.cfg.display.idle)
        except DeviceError as exc:  # the link is up all the same: carry on, the relay thread reopens the board
            self.say(f"relay failed while taking the welcome's state: {exc}", logging.ERROR)
        link.heartbeat(self.state_word(), len(self.disk.admissions), self.on_battery)
        for request_id, passed in self.unsent:
            link.passage(request_id, passed)
        self.unsent.clear()
        self._next_forward = 0.0
        self._keep_forwarding()
        self.online.set()
        return ""

    async def _command(self, command: Command) -> str:
        link = self.link
        if command.kind == "PAUSE_ENTRY":
            self.paused = self.cfg.gate.direction == "in"
            if self.paused and not self.emergency:
                await self._show(self.cfg.display.paused)
            return f"entry paused by the server ({command.text}): refusing entries locally"
        if command.kind == "RESUME_ENTRY":
            self.paused = False
            if not self.emergency:
                await self._show(self.cfg.display.idle)
            return f"entry resumed by the server ({command.text})"
        if command.kind in ("EMERGENCY_OPEN_CMD", "EMERGENCY_RELEASE_CMD"):
            on = command.kind == "EMERGENCY_OPEN_CMD"
            try:
                sentence = await self._set_emergency("server", on)
                done, detail = True, ("relay held open" if on else "relay closed") if self.turnstile else "no relay"
            except DeviceError as exc:
                sentence, done, detail = f"emergency {'open' if on else 'release'} failed at the relay: {exc}", False, str(exc)
            if link is not None:
                link.acknowledge(command.command_id, done, detail)
            return f"{sentence}; acknowledged {command.command_id} ({'done' if done else 'FAILED'})"
        if command.kind == "CONFIRM_CHECK":
            sentence = await self._confirm_check(f"command {command.command_id}")
            if link is not None:
                link.acknowledge(command.command_id, True, sentence)
            return sentence
        if command.kind == "UPDATE_KEYS":
            return self._update_keys(command)
        return f"ignored command {command.kind} {command.command_id}"

    def _update_keys(self, command: Command) -> str:
        """The server's keys replace the cached ones at once (and on disk): a revoked key is refused from now on."""
        if self.keys is None:
            return "new keys announced before any welcome: ignored (the welcome carries them)"
        keyring = keyring_from(command.keys, command.revoked_key_ids, self.keys.keyring)
        # The server sends every revoked code that has not expired: the set replaces the cached one.
        self.keys = replace(self.keys, keyring=keyring, revoked_serials=frozenset(command.revoked_serials))
        self.disk.save_keys(self.keys)
        if self.link is not None:
            self.link.acknowledge(command.command_id, True, f"{len(keyring)} keys")
        states = ", ".join(f"{e.key_id}:{e.state.name.lower()}" for e in keyring)
        return (f"keys updated by the server ({states}; {len(command.revoked_serials)} revoked codes); "
                f"acknowledged {command.command_id}")

    async def _set_emergency(self, source: str, on: bool) -> str:
        before = bool(self.emergency)
        (self.emergency.add if on else self.emergency.discard)(source)
        if self.emergency and not before:
            await self._show(self.cfg.display.emergency)
            if self.turnstile is not None:
                await self.turnstile.hold()
            return f"EMERGENCY ON ({source}): relay HOLD, gate open until released"
        if before and not self.emergency:
            if self.turnstile is not None:
                await self.turnstile.lock()
            await self._show(self.cfg.display.paused if self.paused else self.cfg.display.idle)
            return f"emergency over ({source} off): relay CLOSE, back to normal"
        state = ", ".join(sorted(self.emergency)) or "none"
        return f"emergency input {source} {'on' if on else 'off'}; active sources: {state}"

    async def _board(self, event: BoardEvent) -> str:
        e = event.event
        if e.kind in (EventKind.PASSED, EventKind.NOT_PASSED):
            passed = e.kind is EventKind.PASSED
            admission = self.opens.pop(e.seq or 0, None)
            if admission is None:
                return f"passage {'seen' if passed else 'missed'} on OPEN {e.seq}, which grants no admission"
            admission.opens_left -= 1
            admission.passed |= passed
            if admission.outcome is not None:
                return (f"{admission.request_id}: {'another person passed' if passed else 'nobody passed'} on "
                        f"OPEN {e.seq}; {admission.opens_left} opens left")
            if admission.passed or admission.opens_left == 0:
                return self._report(admission, admission.passed)
            return f"{admission.request_id}: nobody passed on OPEN {e.seq}; {admission.opens_left} opens left"
        if e.kind in (EventKind.EMERGENCY_ON, EventKind.EMERGENCY_OFF):
            if not self.cfg.emergency.relay_input:
                return f"board says {e.kind}; ignored (emergency.relay_input = false)"
            return await self._set_emergency("relay", e.kind is EventKind.EMERGENCY_ON)
        if e.kind in (EventKind.POWER_LOST, EventKind.POWER_OK):
            self._mains("relay", e.kind is EventKind.POWER_LOST)
            assert self.cfg.relay is not None
            if self.cfg.relay.on_power_loss == "open":
                return await self._set_emergency("power", self.on_battery)
            return f"mains {'lost: on battery' if self.on_battery else 'back'}; the gate stays as it is"
        if e.kind is EventKind.CARD_SWALLOWED:
            return f"card collector: card in the bin ({self.cards_collected} since start)"
        if e.kind is EventKind.READY:
            lost = list({id(a): a for a in self.opens.values()}.values())
            self.opens.clear()
            for admission in lost:
                self._report(admission, admission.passed)
            if self.emergency and self.turnstile is not None:
                await self.turnstile.hold()
            await self._show(self.cfg.display.emergency if self.emergency else
                             self.cfg.display.paused if self.paused else self.cfg.display.idle)
            return (f"relay board (re)started ({e.detail}): display and state sent again; "
                    f"{len(lost)} waiting admissions counted as they stood")
        return f"board event {e.kind} ignored"

    # --- power (S30) -----------------------------------------------------------------------------

    @property
    def deciding_locally(self) -> bool:
        """On battery with decide_locally_on_battery: every person is decided here, none waits for a server."""
        return self.on_battery and self.cfg.power.decide_locally_on_battery

    def _mains(self, who: str, lost: bool) -> None:
        """``who`` says the mains are out (or back); heartbeats carry it; back on mains: forward the journal."""
        was_local = self.deciding_locally
        (self.mains_lost.add if lost else self.mains_lost.discard)(who)
        self.on_battery = bool(self.mains_lost)
        metrics.set_power_state("on_battery" if self.on_battery else "mains")
        if self.on_battery and not was_local and self.deciding_locally:
            self.disk.flush()  # the journal is on disk before the first local decision
            self.say(f"on battery ({', '.join(sorted(self.mains_lost))}): deciding locally, every admission "
                     f"journalled ({len(self.disk.admissions)} waiting); forwarded when the mains are back",
                     logging.WARNING)
        if self.link is not None:
            self.link.heartbeat(self.state_word(), len(self.disk.admissions), self.on_battery)
            if was_local and not self.deciding_locally and self.disk.admissions:
                task = asyncio.create_task(self._forward_offline(self.link))
                self._background.add(task)
                task.add_done_callback(self._background.discard)

    async def _ups(self, t: Transition) -> str:
        if t.new == PowerState.UNKNOWN:
            return f"{t.sentence()}; the gate carries on as it was (on battery: {self.on_battery})"
        self._mains("ups", t.new.degraded)
        if t.new == PowerState.ONLINE and not self.on_battery:
            return f"{t.sentence()}; back to asking the server"
        return t.sentence()

    async def _expire(self) -> str:
        now = time.monotonic()
        sentences = []
        for admission in [a for a in self.admissions if a.deadline <= now and a.outcome is None]:
            for seq in [s for s, a in self.opens.items() if a is admission]:
                del self.opens[seq]
            sentences.append(f"no passage report in time: {self._report(admission, admission.passed)}")
        if self.check is not None and self.check.deadline <= now:
            held, self.check = self.check, None
            self._send_passage(held.request_id, False)
            sentences.append(f"{held.request_id}: no checker confirmed in time; gate stays closed, entry given back")
            await self._show(self.cfg.display.check_timeout)
        self.admissions = [a for a in self.admissions if not a.sent]
        return "; ".join(sentences)

    # --- passage reports --------------------------------------------------------------------------

    def _report(self, admission: Admission, passed: bool) -> str:
        if admission.outcome is not None:
            return f"{admission.request_id}: passage already reported"
        admission.outcome = passed
        what = "passed" if passed else "did not pass"
        if admission.offline:
            admission.sent = True
            self.disk.set_passed(admission.request_id, passed)
            return f"{admission.request_id} {what} (offline admission; kept for forwarding)"
        if not admission.decided:
            return f"{admission.request_id} {what}; reported once the server has decided"
        return self._flush(admission)

    def _flush(self, admission: Admission) -> str:
        admission.sent = True
        passed = bool(admission.outcome)
        what = "passed" if passed else "did not pass"
        if not admission.allowed or not self.cfg.confirms_passage:
            return f"{admission.request_id} {what}"
        self._send_passage(admission.request_id, passed)
        return f"{admission.request_id} {what}: {'confirmed' if passed else 'entry given back'}"

    def _send_passage(self, request_id: str, passed: bool) -> None:
        if not self.cfg.confirms_passage:
            return
        if self.link is not None:
            self.link.passage(request_id, passed)
        else:
            self.unsent.append((request_id, passed))

    # --- the people at the gate --------------------------------------------------------------

    async def _credential_loop(self) -> None:
        while True:
            item = await self._credentials.get()
            try:
                if isinstance(item, Scanned | CardPresented):
                    sentence = await self._person(item)
                else:
                    continue
            except DeviceError as exc:
                sentence = f"relay failed: {exc}"
            self.say(sentence)

    def _request_id(self) -> str:
        self._counter += 1
        return f"{self.device_id}-{self._boot}-{self._counter}"

    async def _person(self, item: Scanned | CardPresented) -> str:
        code = item.code if isinstance(item, Scanned) else ""
        uid = item.uid if isinstance(item, CardPresented) else ""
        what = f"code {code[:12]}..." if code else f"card {uid}"
        if code and code in self.cfg.check.confirm_codes:
            return await self._confirm_check("checker's confirm code")
        if self.emergency:
            await self._show(self.cfg.display.emergency)
            return f"{what}: not validated, the gate is held open (emergency)"
        if self.check is not None:
            await self._show(self.cfg.display.check)
            return f"{what}: refused locally, the gate waits for a checker ({self.check.request_id})"
        if self.paused:
            await self._show(self.cfg.display.paused)
            return f"{what}: refused locally, entry paused (park full)"
        request_id = self._request_id()
        local = self._decide_locally(code) if code else None
        fast = self.cfg.fast_mode.enabled and local is not None and local.ok
        admission = None
        if fast:
            assert local is not None
            try:
                self.decider.remember(local)  # durable before the gate opens
                admission = await self._open(request_id, local.persons, decided=False)
            except DeviceError as exc:
                self.say(f"{request_id} {what}: fast open failed at the relay ({exc}); asking the server",
                         logging.WARNING)
            else:
                await self._show(self.cfg.display.offline_welcome)
                self.say(f"{request_id} {what}: fast mode, decided locally: opened for {local.persons} "
                         f"before the server's decision")
        result = None if self.deciding_locally else await self._ask(request_id, code, uid)
        if result is None:
            return await self._offline(request_id, what, code, local, admission)
        if admission is not None:
            return self._fast_decided(admission, result, what)
        if result.allow and local is not None and local.ok:
            self.decider.remember(local)  # this gate's memory of the ticket, for when it must decide alone
        return await self._decided(request_id, what, result)

    def _decide_locally(self, code: str) -> LocalDecision | None:
        """The one decision engine on this gate (parkgate.rules), over the code, the cached terms and its memory."""
        decided = self.decider.decide(code, self.cfg.gate.direction, time.time(), self.keys)
        if isinstance(decided, LocalDecision):
            return decided
        if decided is Reason.NO_OFFLINE_TERMS:
            return None
        return LocalDecision(Verdict(False, decided), 0, code, self.cfg.gate.direction)

    async def _ask(self, request_id: str, code: str, uid: str) -> Result | None:
        link = self.link
        if link is None:
            return None
        try:
            return await link.validate(request_id, code=code, card_uid=uid,
                                       timeout=self.cfg.gate.request_deadline_seconds)
        except LinkError as exc:
            self.say(f"{request_id}: no decision from {link.address} ({exc.reason}: {exc})", logging.WARNING)
            return None

    async def _decided(self, request_id: str, what: str, result: Result) -> str:
        persons = max(1, result.persons)
        if not result.allow:
            await self._show(result.display_text)
            return f"{request_id} {what}: refused, {result.reason} ({result.display_text!r})"
        if result.hold_for_check:
            self.check = HeldCheck(request_id, persons, time.monotonic() + self.cfg.check.timeout_seconds)
            await self._show(self.cfg.display.check)
            return f"{request_id} {what}: admitted on condition a checker looks; gate stays closed until confirmed"
        await self._show(result.display_text)
        try:
            await self._open(request_id, persons, decided=True)
        except DeviceError as exc:
            self._send_passage(request_id, False)
            return f"{request_id} {what}: admitted but the relay did not open ({exc}): entry given back"
        swallowed = await self._swallow(request_id) if result.swallow_card else ""
        return (f"{request_id} {what}: admitted {persons} (entries left {result.entries_left}), "
                f"{'relay OPEN x' + str(persons) if self.turnstile else 'handheld: let them pass'}{swallowed}")

    async def _swallow(self, request_id: str) -> str:
        """S21: a used-up single-use card on its way out goes into the card collector, for recycling."""
        if self.turnstile is None:
            return "; a single-use card: keep it for recycling"
        try:
            await self.turnstile.swallow_card()
        except CommandRefused as exc:
            if exc.code == "FULL":
                self.collector_full = True
                if self.link is not None:
                    self.link.heartbeat(self.state_word(), len(self.disk.admissions), self.on_battery)
                self.say(f"ALERT {request_id}: the card collector is full: the card stays in the slot", logging.ERROR)
                return "; card collector FULL: card left in the slot for the attendant"
            return f"; card collector refused ({exc.code})"
        except DeviceError as exc:
            return f"; card collector did not answer ({exc})"
        self.cards_collected += 1
        self.collector_full = False
        return f"; card swallowed ({self.cards_collected} collected)"

    def _fast_decided(self, admission: Admission, result: Result, what: str) -> str:
        admission.decided, admission.allowed = True, result.allow
        if admission.outcome is not None and not admission.sent:
            self._flush(admission)
        if not result.allow:
            self.say(f"ALERT {admission.request_id} {what}: opened in fast mode but the server refused it: "
                     f"{result.reason}", logging.ERROR)
            return f"{admission.request_id}: server refused after a fast open ({result.reason})"
        if result.hold_for_check:
            self.say(f"ALERT {admission.request_id}: opened in fast mode for a ticket that needs a check",
                     logging.WARNING)
        return f"{admission.request_id} {what}: the server confirms the fast admission"

    async def _offline(self, request_id: str, what: str, code: str, local: LocalDecision | None,
                       admission: Admission | None) -> str:
        can_admit = ((self.cfg.fast_mode.enabled or self.deciding_locally) and self.cfg.fast_mode.offline_admit
                     and local is not None and local.ok)
        if not can_admit:
            if admission is not None:  # opened in fast mode, told not to keep offline admissions
                admission.decided = True
                return f"ALERT {request_id} {what}: opened in fast mode, no server decision and none will follow"
            await self._show(self.cfg.display.offline if local is None or local.ok else local.reason.replace("_", " ").capitalize())
            reason = "no server decision in time" if local is None or local.ok else f"locally {local.reason}"
            if local is not None and not local.ok:
                metrics.count_decisions("gate", [(local.reason, False)])
            return f"{request_id} {what}: refused ({reason})"
        assert local is not None
        persons = local.persons
        if admission is None:
            self.decider.remember(local)  # durable before the gate opens
            admission = await self._open(request_id, persons, decided=False)
            await self._show(self.cfg.display.offline_welcome)
        admission.offline, admission.decided = True, True
        admission.sent = admission.outcome is not None
        self.disk.add(OfflineAdmission(request_id, code, time.time(), persons,
                                       admission.passed if admission.outcome is not None else None))
        metrics.count_decisions("gate", [("OK", True)])
        return (f"{request_id} {what}: OFFLINE admission of {persons} on a valid signature; "
                f"kept for forwarding ({len(self.disk.admissions)} waiting)")

    async def _open(self, request_id: str, persons: int, *, decided: bool) -> Admission:
        relay = self.cfg.relay
        timeout = (relay.passage_timeout_seconds + persons * relay.open_ms / 1000) if relay else 0.0
        admission = Admission(request_id, persons, time.monotonic() + timeout, decided)
        if self.turnstile is None:
            admission.outcome, admission.sent = True, True  # handheld: nobody reports passages
            return admission
        for seq in await self.turnstile.open(persons):
            self.opens[seq] = admission
        self.admissions.append(admission)
        return admission

    async def _confirm_check(self, by: str) -> str:
        held = self.check
        if held is None:
            return f"check confirmed by {by}, but nobody is waiting"
        self.check = None
        await self._open(held.request_id, held.persons, decided=True)
        await self._show(self.cfg.display.offline_welcome)
        return f"{held.request_id}: checker confirmed ({by}); relay OPEN x{held.persons}"

    def _keep_forwarding(self) -> None:
        """Offer the offline admissions to the server whenever a link is up and no offer is running.

        An admission made alone while the link stayed up (the server answered
        that it could not decide) waits for no reconnection: it goes as soon as
        the server decides again. On battery with local decisions the journal
        is held until the mains are back (docs/power.md): the servers may be
        handing over, and the site's gates decide alone meanwhile anyway.
        """
        link = self.link
        if link is None or not self.disk.admissions or time.monotonic() < self._next_forward:
            return
        if self.deciding_locally:
            return
        if self._forwarding is not None and not self._forwarding.done():
            return
        self._next_forward = time.monotonic() + FORWARD_RETRY_SECONDS
        self._forwarding = asyncio.create_task(self._forward_offline(link))
        self._background.add(self._forwarding)
        self._forwarding.add_done_callback(self._background.discard)

    async def _forward_offline(self, link: GateLink) -> None:
        """Hand the offline admissions to the server, one by one, while this link lasts."""
        for item in list(self.disk.admissions):
            if link.closed.is_set():
                return
            if item.passed is False:
                self.disk.remove(item.request_id)
                self.say(f"{item.request_id}: offline admission nobody used; dropped")
                continue
            if item.passed is None and any(a.request_id == item.request_id and a.outcome is None
                                           for a in self.admissions):
                continue  # the person is still at the turnstile: offered once the board has reported
            try:
                result = await link.validate(item.request_id, code=item.code, scanned_at=item.scanned_at,
                                             timeout=max(5.0, self.cfg.gate.request_deadline_seconds))
            except LinkError as exc:
                self.say(f"forwarding offline admissions stopped: {exc}", logging.WARNING)
                return
            if result.allow:
                if self.cfg.confirms_passage:
                    link.passage(item.request_id, True)
                self.say(f"{item.request_id}: offline admission forwarded, the server counts it ({result.reason})")
            else:
                self.say(f"ALERT {item.request_id}: offline admission refused by the server when forwarded: "
                         f"{result.reason}", logging.ERROR)
            self.disk.remove(item.request_id)

    # --- display ----------------------------------------------------------------------------

    async def _show(self, text: str) -> None:
        log.info("%s: display %r", self.device_id, text)
        if self.turnstile is not None and self.turnstile.connected:
            try:
                await self.turnstile.show(text)
            except DeviceError as exc:
                log.warning("%s: display failed: %s", self.device_id, exc)
