"""`parkgate pos screen`: the interactive window at peak hours (S20).

One key sells: keys 1-9 sell the current quantity of the product on that key
at today's price with the current payment method. ``*`` steps the quantity,
``m`` the payment method, ``p`` prints the last order again, ``r`` refreshes
prices and totals, ``c`` asks for a card: its UID alone shows its balance and
counts, ``UID AMOUNT`` tops a stored-value card up with the current payment
method (S8); ``g`` picks a group up (S16): ``RESERVATION [PEOPLE] [one]``
prints its tickets (or one group code for the people who came, with
``one``), the rest after the deposit on the agency's account. The screen shows the day's prices and the operator's
running totals (asked of the server, so they survive a restart of the screen).

The gRPC calls are blocking; each runs in a worker thread so the screen keeps
drawing while a sale is in flight, and a key pressed meanwhile waits for it
(one sale at a time per window, like a cashier).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.widgets import DataTable, Footer, Header, Input, Static

from parkgate.v1 import common_pb2, sales_pb2

from ..connection import CallError
from ..money import format_money
from .window import PriceLine, Window, new_request_id

QUANTITIES = (1, 2, 3, 4, 5, 10)
ASKING = {  # what the one input line asks for, by the key that opened it
    "card": "card UID (balance)  or  card UID and amount (top-up), then Enter",
    "group": "group reservation id, then the people who came and 'one' for one group code (optional), then Enter",
}
METHODS = ("cash", "bank_card", "mobile")


class WindowScreen(App[None]):
    """The window's one screen: prices on keys, running totals, the last sale."""

    TITLE = "parkgate window"
    CSS = """
    #prices { width: 2fr; }
    #side { width: 1fr; padding: 0 1; }
    #status { height: 3; padding: 0 1; }
    .error { color: $error; }
    """
    BINDINGS = [
        *(Binding(str(n), f"sell({n})", f"sell #{n}", show=False) for n in range(1, 10)),
        Binding("asterisk", "next_quantity", "quantity"),
        Binding("m", "next_method", "payment"),
        Binding("p", "print_last", "print again"),
        Binding("r", "refresh", "refresh"),
        Binding("c", "card", "card / top-up"),
        Binding("g", "group", "group pick-up"),
        Binding("escape", "close_card", "close", show=False),
        Binding("q", "quit", "quit"),
    ]

    def __init__(self, window: Window, *, product_keys: str | None = None,
                 printer: Callable[[sales_pb2.Order], list[str]] | None = None) -> None:
        super().__init__()
        self.window = window
        self.wanted_keys = [k.strip() for k in product_keys.split(",")] if product_keys else []
        self.printer = printer
        self.zone: ZoneInfo | None = None
        self.keys: list[PriceLine] = []
        self.quantity = 1
        self.method = METHODS[0]
        self.last_order: sales_pb2.Order | None = None
        self._busy = asyncio.Lock()
        self.asking = "card"

    def compose(self) -> ComposeResult:
        yield Header(show_clock=True)
        with Horizontal():
            yield DataTable(id="prices", cursor_type="none")
            with Vertical(id="side"):
                yield Static(id="mode")
                yield Static(id="totals")
                yield Static(id="last")
        yield Input(placeholder=ASKING["card"], id="card")
        yield Static("", id="status")
        yield Footer()

    async def on_mount(self) -> None:
        table = self.query_one("#prices", DataTable)
        table.add_columns("key", "product", "price today", "day")
        self.action_close_card()
        await self.action_refresh()

    # --- actions ----------------------------------------------------------------------

    async def action_refresh(self) -> None:
        try:
            who = await asyncio.to_thread(self.window.whoami)
            prices = await asyncio.to_thread(self.window.prices, None)
        except CallError as exc:
            self._status(f"{exc.reason}: {exc.message}", error=True)
            return
        self.sub_title = f"{who.username} at {who.device_id or '(no window)'}"
        on_sale = [p for p in prices if not p.card_bound]  # card sales need the reader: `pos sell --read-card`
        if self.wanted_keys:
            by_id = {p.product_id: p for p in on_sale}
            self.keys = [by_id[k] for k in self.wanted_keys if k in by_id][:9]
        else:
            self.keys = on_sale[:9]
        table = self.query_one("#prices", DataTable)
        table.clear()
        for n, p in enumerate(self.keys, start=1):
            price = format_money(p.unit_price, p.currency) if p.unit_price is not None else "no price"
            table.add_row(str(n), p.name, price, p.day_type)
        self._show_mode()
        await self._show_totals()

    async def action_sell(self, key: int) -> None:
        if key > len(self.keys):
            self._status(f"no product on key {key}", error=True)
            return
        product = self.keys[key - 1]
        async with self._busy:
            self._status(f"selling {self.quantity} x {product.name}...")
            try:
                order = await asyncio.to_thread(self.window.quick_sell, product.product_id, self.quantity,
                                                self.method)
            except CallError as exc:
                self._status(f"{exc.reason}: {exc.message}", error=True)
                return
            serials = ", ".join(str(t.serial) for t in order.tickets)
            await self._sold(order, f"SOLD {len(order.tickets)} x {product.name}  "
                                    f"{format_money(order.total.minor_units, order.total.currency)} {self.method}  "
                                    f"serials {serials}")

    async def _sold(self, order: sales_pb2.Order, sentence: str) -> None:
        """What every order made here is followed by: said, shown as the last order, printed, totals again."""
        self.last_order = order
        self._status(sentence)
        self.query_one("#last", Static).update(self._describe_order(order))
        if self.printer is not None:
            await self._print(order)
        await self._show_totals()

    def action_card(self) -> None:
        self._ask("card")

    def action_group(self) -> None:
        self._ask("group")

    def _ask(self, what: str) -> None:
        self.asking = what
        field = self.query_one("#card", Input)
        field.placeholder = ASKING[what]
        field.display = True
        field.value = ""
        field.focus()

    def action_close_card(self) -> None:
        self.query_one("#card", Input).display = False
        self.set_focus(None)  # keys sell again (a hidden field must not swallow them)

    async def on_input_submitted(self, event: Input.Submitted) -> None:
        words = event.value.split()
        self.action_close_card()
        if self.asking == "group":
            await self._pick_up(words)
            return
        if not words or len(words) > 2:
            self._status("card: UID, or UID and a top-up amount", error=True)
            return
        async with self._busy:
            try:
                if len(words) == 2:
                    balance = await asyncio.to_thread(self.window.top_up, words[0], words[1], self.method)
                    money = format_money(balance.balance.minor_units, balance.balance.currency)
                    self._status(f"TOPPED UP {words[0]}: balance {money} ({self.method})")
                    await self._show_totals()
                else:
                    history = await asyncio.to_thread(self.window.card, words[0])
                    b = history.balance
                    left = "unlimited" if b.entries_left < 0 else str(b.entries_left)
                    money = format_money(b.balance.minor_units, b.balance.currency)
                    self._status(f"card {b.card_uid}: balance {money}, entries left {left}")
            except (CallError, ValueError) as exc:
                text = f"{exc.reason}: {exc.message}" if isinstance(exc, CallError) else f"INVALID_ARGUMENT: {exc}"
                self._status(text, error=True)

    async def _pick_up(self, words: list[str]) -> None:
        extra = words[1:]
        people = [w for w in extra if w.isdigit()]
        if not words or len(people) > 1 or any(w != "one" and not w.isdigit() for w in extra):
            self._status("group: RESERVATION, then the people who came and 'one' (optional)", error=True)
            return
        request = sales_pb2.PickUpGroupRequest(request_id=new_request_id(), reservation_id=words[0],
                                               one_code="one" in extra, head_count=int(people[0]) if people else 0)
        async with self._busy:
            try:
                order = await asyncio.to_thread(self.window.call_sales, "PickUpGroup", request, mutating=True)
            except CallError as exc:
                self._status(f"{exc.reason}: {exc.message}", error=True)
                return
            admits = sum(t.persons or 1 for t in order.tickets)
            paid = ", ".join(sorted({common_pb2.PaymentMethod.Name(p.method).lower() for p in order.payments}))
            await self._sold(order, f"PICKED UP group {order.customer or words[0]}: {len(order.tickets)} ticket(s) "
                                    f"admitting {admits}, {format_money(order.total.minor_units, order.total.currency)}"
                                    f" after the deposit ({paid or 'nothing to pay'})")

    def action_next_quantity(self) -> None:
        self.quantity = QUANTITIES[(QUANTITIES.index(self.quantity) + 1) % len(QUANTITIES)]
        self._show_mode()

    def action_next_method(self) -> None:
        self.method = METHODS[(METHODS.index(self.method) + 1) % len(METHODS)]
        self._show_mode()

    async def action_print_last(self) -> None:
        if self.last_order is None:
            self._status("nothing sold yet", error=True)
        elif self.printer is None:
            self._status("no printer or output folder configured (pos screen --out/--printer)", error=True)
        else:
            await self._print(self.last_order)

    # --- drawing ------------------------------------------------------------------------

    async def _print(self, order: sales_pb2.Order) -> None:
        assert self.printer is not None
        try:
            done = await asyncio.to_thread(self.printer, order)
        except Exception as exc:  # a jammed printer must not stop the window: the sale stands
            self._status(f"PRINT FAILED ({type(exc).__name__}: {exc}); reprint with p", error=True)
            return
        self.notify("; ".join(done) or "printed")

    async def _show_totals(self) -> None:
        try:
            totals = await asyncio.to_thread(self.window.shift)
        except CallError as exc:
            self._status(f"{exc.reason}: {exc.message}", error=True)
            return
        if self.zone is None:  # people at the window read the park's clock, not UTC
            self.zone = await asyncio.to_thread(self.window.zone)
        since = totals.since.ToDatetime(tzinfo=UTC).astimezone(self.zone)
        lines = [f"[b]Shift[/b] since {since:%H:%M %Z}",
                 f"{totals.orders} orders, {totals.tickets} tickets"]
        for m in totals.by_method:
            lines.append(f"{common_pb2.PaymentMethod.Name(m.method).lower():<10} "
                         f"{format_money(m.amount.minor_units, m.amount.currency)}")
        if totals.refunds:
            lines.append(f"refunds {totals.refunds}: -{format_money(totals.refunded.minor_units, totals.refunded.currency)}")
        self.query_one("#totals", Static).update("\n".join(lines))

    def _show_mode(self) -> None:
        self.query_one("#mode", Static).update(
            f"[b]Quantity[/b] {self.quantity}  (*)\n[b]Payment[/b] {self.method}  (m)\n")

    def _status(self, text: str, *, error: bool = False) -> None:
        status = self.query_one("#status", Static)
        status.set_class(error, "error")
        status.update(f"{datetime.now():%H:%M:%S}  {text}")

    @staticmethod
    def _describe_order(order: sales_pb2.Order) -> str:
        lines = [f"[b]Last order[/b] {order.id[:8]}"]
        lines += [f"#{t.serial} {t.product_name} {format_money(t.price.minor_units, t.price.currency)}"
                  for t in order.tickets[:6]]
        if len(order.tickets) > 6:
            lines.append(f"... {len(order.tickets) - 6} more")
        return "\n".join(lines)

    @property
    def status_text(self) -> str:
        """What the status line says now (for people reading logs and for tests)."""
        return str(self.query_one("#status", Static).render())

    def snapshot(self) -> dict[str, Any]:
        return {"quantity": self.quantity, "method": self.method, "keys": [k.product_id for k in self.keys]}
