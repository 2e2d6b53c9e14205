"""``parkgate monitor --tui``: the same live flow in a terminal (Textual), for a control room without a browser.

It follows one park through the same :class:`~.feed.MonitorFeed` as the web
page: the park's state, inside against the cap, a sparkline of entries per
minute, a table of gates and the alert list, redrawn at every snapshot.
"""

from __future__ import annotations

from typing import Any

import orjson
from textual.app import App, ComposeResult
from textual.containers import Horizontal
from textual.widgets import DataTable, Footer, Header, Sparkline, Static

from .feed import Credentials, MonitorFeed


def _n(value: Any) -> int:
    return int(value or 0)  # the contract's JSON mapping sends 64-bit counts as strings


class FlowApp(App[None]):
    TITLE = "parkgate live flow"
    CSS = """
    #state { padding: 0 1; text-style: bold; }
    #state.paused { background: $warning; color: black; }
    #state.emergency { background: $error; }
    #kpis { padding: 0 1; height: 3; }
    #flow { height: 4; margin: 0 1; }
    Horizontal { height: 1fr; }
    #gates { width: 3fr; } #alerts { width: 2fr; }
    """
    BINDINGS = [("q", "quit", "Quit")]

    def __init__(self, server: str, credentials: Credentials, park_id: str, *, interval: int = 0,
                 minutes: int = 30) -> None:
        super().__init__()
        self.park_id = park_id
        self.feed = MonitorFeed(server, credentials, [park_id], interval_seconds=interval, minutes=minutes)
        self.status = "connecting"
        self.snapshots = 0

    def compose(self) -> ComposeResult:
        yield Header()
        yield Static("connecting", id="state")
        yield Static("", id="kpis")
        yield Sparkline([0], id="flow")
        with Horizontal():
            yield DataTable(id="gates", cursor_type="none")
            yield DataTable(id="alerts", cursor_type="none")
        yield Footer()

    async def on_mount(self) -> None:
        self.sub_title = self.park_id
        self.query_one("#gates", DataTable).add_columns("gate", "state", "in", "out", "refused", "server")
        self.query_one("#alerts", DataTable).add_columns("time", "alert", "gate", "reason")
        await self.feed.start()
        self.run_worker(self._follow(), exclusive=True)

    async def on_unmount(self) -> None:
        await self.feed.stop()

    async def _follow(self) -> None:
        async for message in self.feed.subscribe(self.park_id):
            self.show(orjson.loads(message))

    def show(self, event: dict[str, Any]) -> None:
        self.status = event["status"]
        snapshot = event.get("snapshot")
        state = self.query_one("#state", Static)
        if snapshot is None:
            state.update(f"{self.status}: {event.get('error') or 'waiting for the first snapshot'}")
            return
        self.snapshots += 1
        word = "emergency" if snapshot["emergency_open"] else "paused" if snapshot["entry_paused"] else "open"
        state.set_classes(word)
        text = {"emergency": "EMERGENCY OPEN", "paused": "ENTRY PAUSED (park full)", "open": "Entry open"}[word]
        state.update(f"{text}   feed {self.status}{': ' + event['error'] if event.get('error') else ''}")
        capacity, inside = _n(snapshot["capacity"]), _n(snapshot["inside"])
        refused = sum(_n(r["count"]) for r in snapshot["refusals"])
        self.query_one("#kpis", Static).update(
            f"inside {inside} of {capacity if capacity else 'no cap'}   entries {_n(snapshot['entries'])}   "
            f"exits {_n(snapshot['exits'])}   refusals {refused}   (last {len(snapshot['minutes'])} min)")
        self.query_one("#flow", Sparkline).data = [_n(m["entries"]) for m in snapshot["minutes"]] or [0]
        gates = self.query_one("#gates", DataTable)
        gates.clear()
        for g in snapshot["gates"]:
            gates.add_row(g["device_id"], (g["state"] or "ok") if g["connected"] else "OFFLINE", _n(g["entries"]),
                          _n(g["exits"]), _n(g["refusals"]), g["server_id"], key=g["device_id"])
        alerts = self.query_one("#alerts", DataTable)
        alerts.clear()
        for a in snapshot["alerts"]:
            alerts.add_row(a["at"][11:19], a["kind"].replace("_", " "), a["device_id"], a["reason"])
