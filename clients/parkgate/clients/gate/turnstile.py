"""The turnstile's relay board as the agent sees it: async commands, events into the agent's queue.

:class:`~parkgate.clients.devices.SerialRelay` is blocking and thread-safe
(each command waits for the board's ``OK``, with retries); here every command
runs in a worker thread so a slow board never stalls the agent's loop, and a
daemon thread turns the board's events into :class:`~.inputs.BoardEvent`.
When the port fails the thread reopens it every few seconds and, once it is
back, reports a synthetic ``READY`` so the agent re-sends the display and
the hold, exactly as after a board restart. Commands while the port is
down raise ``DeviceUnavailable``: the agent logs the failure and carries on.
"""

from __future__ import annotations

import asyncio
import logging
import threading

from ..devices import DeviceError, DeviceUnavailable, EventKind, RelayEvent, SerialRelay, SerialSettings
from .inputs import BoardEvent, DeviceTrouble, Put

log = logging.getLogger(__name__)

RETRY_SECONDS = 2.0


class Turnstile:
    def __init__(self, settings: SerialSettings, open_ms: int, put: Put) -> None:
        self.settings = settings
        self.open_ms = open_ms
        self.put = put
        self._relay: SerialRelay | None = None
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._main, name=f"gate relay {settings.port}", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        relay = self._relay
        if relay is not None:
            relay.close()
        self._thread.join(timeout=5)

    @property
    def connected(self) -> bool:
        return self._relay is not None

    # --- commands (async, from the agent's loop) -------------------------------------------

    async def open(self, persons: int) -> list[int]:
        """One OPEN per person, queued on the board in order; their sequence numbers."""
        relay = self._require()
        return [await asyncio.to_thread(relay.open_once, self.open_ms) for _ in range(max(1, persons))]

    async def hold(self) -> None:
        await asyncio.to_thread(self._require().open_hold)

    async def lock(self) -> None:
        await asyncio.to_thread(self._require().lock)

    async def swallow_card(self) -> None:
        await asyncio.to_thread(self._require().swallow_card)

    async def show(self, text: str) -> None:
        await asyncio.to_thread(self._require().show, text)

    def _require(self) -> SerialRelay:
        relay = self._relay
        if relay is None:
            raise DeviceUnavailable("the relay board is not connected", device=self.settings.port)
        return relay

    # --- events (thread) -----------------------------------------------------------------------

    def _main(self) -> None:
        failed = False
        while not self._stopping.is_set():
            try:
                self._relay = SerialRelay(self.settings)
            except DeviceError as exc:
                if not failed:
                    failed = True
                    self.put(DeviceTrouble(f"relay {self.settings.port}", str(exc)))
                self._stopping.wait(RETRY_SECONDS)
                continue
            if failed:
                failed = False
                self.put(DeviceTrouble(f"relay {self.settings.port}", "working again", ok=True))
            # The board may have changed while we could not hear it: the agent (re)sends its state.
            self.put(BoardEvent(RelayEvent(EventKind.READY, detail="port opened")))
            try:
                while not self._stopping.is_set():
                    event = self._relay.next_event(timeout=0.5)
                    if event is not None:
                        self.put(BoardEvent(event))
            except DeviceError as exc:
                if self._stopping.is_set():
                    return
                failed = True
                self.put(DeviceTrouble(f"relay {self.settings.port}", str(exc)))
                relay, self._relay = self._relay, None
                relay.close()
                self._stopping.wait(RETRY_SECONDS)
