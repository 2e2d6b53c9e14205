"""`parkgate pos`: the window client's scriptable commands (and `pos screen`, the interactive window).

Every command prints a readable summary, or JSON with ``--json`` (the
contract's field names), and exits 2 with ``REASON: message`` on a refusal,
so a window can be scripted and a refusal is never mistaken for a sale.
"""

from __future__ import annotations

import argparse
import getpass
import os
import re
import sys
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Any

import orjson
from rich.console import Console
from rich.table import Table

from parkgate.v1 import common_pb2, sales_pb2

from ..commands import command_group
from ..connection import CallError
from ..devices import DeviceError, PcscCardReader
from ..money import format_money, parse_amount
from . import catalogue_cli, output
from .window import Window, describe, payment_method

_LINE = re.compile(r"^(?P<product>[a-z0-9][a-z0-9_-]*)(?::(?P<quantity>\d+))?$")


def _line(text: str) -> tuple[str, int]:
    match = _LINE.match(text)
    if not match:
        raise argparse.ArgumentTypeError(f"{text!r}: PRODUCT or PRODUCT:N (e.g. wp-day:3)")
    return match["product"], int(match["quantity"] or 1)


def _date(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: a date as YYYY-MM-DD") from None


def read_card(reader_name: str, timeout: float) -> str:
    """The UID of the next card put on the window's PC/SC reader."""

    reader = PcscCardReader(reader_name)
    try:
        return reader.read_uid(timeout)
    finally:
        reader.close()


# --- commands --------------------------------------------------------------------------

def cmd_login(w: Window, a: argparse.Namespace) -> Any:
    username = a.user or input("user: ")
    password = sys.stdin.readline().rstrip("\n") if a.password_stdin else getpass.getpass("password: ")
    secret = Path(a.device_secret_file).read_text().strip() if a.device_secret_file else \
        os.environ.get("PARKGATE_DEVICE_SECRET", "")
    reply = w.login(username, password, a.device, secret)
    print(f"logged in as {username} at window {a.device}", file=sys.stderr)
    return reply


def cmd_prices(w: Window, a: argparse.Namespace) -> Any:
    lines = w.prices(a.date, a.park or "")
    day = a.date.isoformat() if a.date else "today"
    if a.json:
        return [{"product_id": p.product_id, "name": p.name, "park_id": p.park_id, "unit_price": p.unit_price,
                 "currency": p.currency, "day_type": p.day_type, "card_bound": p.card_bound, "deposit": p.deposit}
                for p in lines]
    table = Table("product", "name", "park", f"price {day}", "day type")
    for p in lines:
        price = format_money(p.unit_price, p.currency) if p.unit_price is not None else "no price"
        table.add_row(p.product_id, p.name, p.park_id, price, p.day_type)
    Console().print(table)
    return None


def _emit(w: Window, a: argparse.Namespace, order: sales_pb2.Order,
          tickets: list[sales_pb2.Ticket] | None = None) -> list[str]:
    """Write and/or print the order's tickets as asked; returns what was written, for the report."""
    if not (a.out or a.printer):
        return []

    sold = output.sold_tickets(order, w.parks(), tickets)
    done = []
    if a.out:
        for written in output.write_files(sold, Path(a.out), a.format.split(",")):
            done.append(str(written.path))
            for note in written.notes:
                print(f"note: {written.path.name}: {note}", file=sys.stderr)
    if a.printer:
        output.print_tickets(sold, a.printer, a.baud)
        done.append(f"printed {len(sold)} on {a.printer}")
    return done


def _order_report(w: Window, a: argparse.Namespace, order: sales_pb2.Order, files: list[str]) -> Any:
    if a.json:
        return {**describe(order), "files": files}
    console = Console()
    console.print(f"order {order.id}  total {format_money(order.total.minor_units, order.total.currency)}  "
                  f"({', '.join(common_pb2.PaymentMethod.Name(p.method).lower() for p in order.payments) or 'free'})")
    table = Table("serial", "product", "price", "visit", "card")
    for t in order.tickets:
        visit = f"{t.visit_date.year:04d}-{t.visit_date.month:02d}-{t.visit_date.day:02d}"
        table.add_row(str(t.serial), t.product_name or t.product_id, format_money(t.price.minor_units, t.price.currency),
                      visit, t.card_uid)
    console.print(table)
    for f in files:
        console.print(f"  {f}")
    return None


def cmd_sell(w: Window, a: argparse.Namespace) -> Any:
    visit = a.date
    cards = [c for c in a.card]
    lines = []
    products = {p.id: p for p in w.products()}
    for product_id, quantity in a.lines:
        line = sales_pb2.OrderLine(product_id=product_id, quantity=quantity)
        if visit:
            line.visit_date.CopyFrom(common_pb2.Date(year=visit.year, month=visit.month, day=visit.day))
        product = products.get(product_id)
        if product is not None and product.rules.card_bound:
            for _ in range(quantity):
                if not cards and a.read_card:
                    print(f"put card for {product_id} on the reader...", file=sys.stderr)
                    cards.append(read_card(a.reader or "", a.card_timeout))
                if not cards:
                    raise SystemExit(f"error: INVALID_ARGUMENT: {product_id} is sold onto IC cards: give --card UID "
                                     "or --read-card")
                line.card_uids.append(cards.pop(0))
        lines.append(line)
    payments = []
    for spec in a.pay or ["cash"]:
        method, _, amount = spec.partition(":")
        payments.append((payment_method(method), amount))
    if len(payments) == 1 and not payments[0][1]:
        total, currency = w.order_total(lines)
        paid = [sales_pb2.Payment(method=payments[0][0], amount=common_pb2.Money(minor_units=total, currency=currency),
                                  reference=a.reference or "")]
    else:
        currency = w.parks()[products[lines[0].product_id].park_id].currency if lines[0].product_id in products else ""
        paid = [sales_pb2.Payment(method=m, amount=common_pb2.Money(minor_units=parse_amount(amt or "0", currency),
                                                                     currency=currency), reference=a.reference or "")
                for m, amt in payments]
    order = w.sell(lines, paid, customer=a.customer or "", request_id=a.request_id)
    return _order_report(w, a, order, _emit(w, a, order))


def cmd_quick_sell(w: Window, a: argparse.Namespace) -> Any:
    order = w.quick_sell(a.product, a.n, a.method or "", request_id=a.request_id)
    return _order_report(w, a, order, _emit(w, a, order))


def cmd_refund(w: Window, a: argparse.Namespace) -> Any:
    expected, currency = 0, ""
    if a.expect:
        order = w.order(a.order) if a.order else w.order(w.find(ticket_id=a.ticket[0])[0].order_id)
        currency = order.total.currency
        expected = parse_amount(a.expect, currency)
    record = w.refund(reason_id=a.reason, order_id=a.order or "", ticket_ids=a.ticket, note=a.note or "",
                      refund_deposit=a.deposit, expected_amount=expected, currency=currency,
                      request_id=a.request_id)
    if a.json:
        return describe(record)
    print(f"refund {record.id}: {format_money(record.amount.minor_units, record.amount.currency)} "
          f"+ deposit {format_money(record.deposit_refunded.minor_units, record.deposit_refunded.currency)} "
          f"for {len(record.ticket_ids)} ticket(s), reason {record.reason_id}")
    return None


def cmd_refunds(w: Window, a: argparse.Namespace) -> Any:
    """Refunds by period, operator and reason (S18), e.g. for the end-of-day check."""
    def at(day: date | None) -> datetime | None:
        return datetime.combine(day, time(0), UTC) if day else None

    until = at(a.until + timedelta(days=1)) if a.until else None
    records = w.refunds(start=at(a.since), end=until, operator=a.operator or "", reason_id=a.reason or "")
    if a.json:
        return [describe(r) for r in records]
    table = Table("at (UTC)", "order", "tickets", "reason", "amount", "deposit", "operator", "note")
    for r in records:
        table.add_row(f"{r.at.ToDatetime():%Y-%m-%d %H:%M}", r.order_id[:8], str(len(r.ticket_ids)), r.reason_id,
                      format_money(r.amount.minor_units, r.amount.currency),
                      format_money(r.deposit_refunded.minor_units, r.deposit_refunded.currency), r.operator, r.note)
    Console().print(table if records else "(none)")
    return None


def cmd_find(w: Window, a: argparse.Namespace) -> Any:
    code = a.code.strip() if a.code else ""
    tickets = w.find(code=code, serial=a.serial or 0, card_uid=a.card or "", order_id=a.order or "")
    if a.json:
        return [describe(t) for t in tickets]
    table = Table("serial", "id", "product", "state", "used", "price", "card", "order")
    for t in tickets:
        used = f"{t.entries_used}/{t.entries_total or '∞'}"
        table.add_row(str(t.serial), t.id, t.product_name or t.product_id,
                      sales_pb2.TicketState.Name(t.state).removesuffix("_STATE").lower(), used,
                      format_money(t.price.minor_units, t.price.currency), t.card_uid, t.order_id)
    Console().print(table if tickets else "(none)")
    return None


def cmd_reprint(w: Window, a: argparse.Namespace) -> Any:
    if a.serial:
        tickets = w.find(serial=a.serial)
        if not tickets:
            raise CallError("UNKNOWN_TICKET", "NOT_FOUND", f"no ticket with serial {a.serial}")
        order = w.order(tickets[0].order_id)
        chosen = [t for t in order.tickets if t.serial == a.serial]
    else:
        order = w.order(a.order)
        chosen = list(order.tickets)
    if not (a.out or a.printer):
        raise SystemExit("error: INVALID_ARGUMENT: say where: --out DIR and/or --printer PORT")
    files = _emit(w, a, order, chosen)
    return {"files": files} if a.json else print("\n".join(files))


def cmd_read_card(w: Window, a: argparse.Namespace) -> Any:

    try:
        uid = read_card(a.reader or "", a.timeout)
    except DeviceError as exc:
        raise SystemExit(f"error: {type(exc).__name__}: {exc}") from None
    return {"card_uid": uid} if a.json else print(uid)


def cmd_shift(w: Window, a: argparse.Namespace) -> Any:
    totals = w.shift()
    if a.json:
        return describe(totals)
    console = Console()
    since = totals.since.ToDatetime(tzinfo=UTC).astimezone(w.zone())
    console.print(f"since {since:%Y-%m-%d %H:%M %Z}: {totals.orders} orders, "
                  f"{totals.tickets} tickets, {totals.refunds} refunds "
                  f"({format_money(totals.refunded.minor_units, totals.refunded.currency or 'CNY')} paid out)")
    for m in totals.by_method:
        console.print(f"  {common_pb2.PaymentMethod.Name(m.method).lower():<12} {m.count:>5}  "
                      f"{format_money(m.amount.minor_units, m.amount.currency)}")
    return None


def cmd_screen(w: Window, a: argparse.Namespace) -> Any:
    from .screen import WindowScreen

    printer = None
    if a.out or a.printer:
        def printer(order: sales_pb2.Order) -> list[str]:
            return _emit(w, a, order)
    WindowScreen(w, product_keys=a.keys, printer=printer).run()
    return None


# --- parser ----------------------------------------------------------------------------------

def _outputs(sp: argparse.ArgumentParser) -> None:
    sp.add_argument("--out", help="write tickets into this folder")
    sp.add_argument("--format", default="pdf", help="comma list of png, svg, pdf (default pdf)")
    sp.add_argument("--printer", help="serial port of an ESC/POS thermal printer, e.g. /dev/ttyUSB0")
    sp.add_argument("--baud", type=int, default=9600)
    sp.add_argument("--request-id", help="idempotency key (default: a new UUID; reuse it to retry safely)")


def add_parser(subparsers: Any) -> None:
    cmd = command_group(subparsers, "pos", "the sales window: sell, quick-sell, refund, find, reprint, screen")
    sp = cmd("login", cmd_login, "open a session at this window")
    sp.add_argument("--user", "-u")
    sp.add_argument("--device", required=True, help="this window's registered device id")
    sp.add_argument("--device-secret-file", help="file with the window's secret (default $PARKGATE_DEVICE_SECRET)")
    sp.add_argument("--password-stdin", action="store_true")
    sp = cmd("prices", cmd_prices, "the day's prices")
    sp.add_argument("--date", type=_date)
    sp.add_argument("--park")
    sp = cmd("sell", cmd_sell, "sell an order: one or more PRODUCT or PRODUCT:N")
    sp.add_argument("lines", nargs="+", type=_line, metavar="PRODUCT[:N]")
    sp.add_argument("--date", type=_date, help="visit date (pre-sale); default today")
    sp.add_argument("--card", action="append", default=[], help="IC card UID for a card-bound ticket (repeat)")
    sp.add_argument("--read-card", action="store_true", help="read card UIDs from the PC/SC reader")
    sp.add_argument("--reader", help="PC/SC reader name (part of it)")
    sp.add_argument("--card-timeout", type=float, default=30.0)
    sp.add_argument("--pay", action="append", help="METHOD or METHOD:AMOUNT (repeat to split); default cash")
    sp.add_argument("--reference", help="card slip, mobile transaction or voucher code")
    sp.add_argument("--customer", help="travel agency or company (needed for on_account)")
    _outputs(sp)
    sp = cmd("quick-sell", cmd_quick_sell, "sell N tickets of one product at today's price (S20)")
    sp.add_argument("product")
    sp.add_argument("-n", type=int, default=1)
    sp.add_argument("--method", help="payment method (default: the installation's quick-sale method)")
    _outputs(sp)
    sp = cmd("refund", cmd_refund, "refund an order or single tickets")
    target = sp.add_mutually_exclusive_group(required=True)
    target.add_argument("--order")
    target.add_argument("--ticket", action="append", default=[], help="ticket id (repeat)")
    sp.add_argument("--reason", required=True)
    sp.add_argument("--note")
    sp.add_argument("--deposit", action="store_true", help="the card came back: refund its deposit")
    sp.add_argument("--expect", help="the amount you are about to pay out (refused if the reason allows less)")
    sp.add_argument("--request-id")
    sp = cmd("refunds", cmd_refunds, "look refunds up by day, operator, reason")
    sp.add_argument("--from", dest="since", type=_date, help="first day (UTC), YYYY-MM-DD")
    sp.add_argument("--until", type=_date, help="last day (UTC), YYYY-MM-DD")
    sp.add_argument("--operator")
    sp.add_argument("--reason")
    sp = cmd("find", cmd_find, "look tickets up")
    sp.add_argument("--code")
    sp.add_argument("--serial", type=int)
    sp.add_argument("--card")
    sp.add_argument("--order")
    sp = cmd("reprint", cmd_reprint, "print or save tickets again")
    target = sp.add_mutually_exclusive_group(required=True)
    target.add_argument("--serial", type=int)
    target.add_argument("--order")
    _outputs(sp)
    sp = cmd("read-card", cmd_read_card, "read a card's UID from the PC/SC reader")
    sp.add_argument("--reader")
    sp.add_argument("--timeout", type=float, default=30.0)
    cmd("shift", cmd_shift, "your takings since you logged in")
    catalogue_cli.add_commands(cmd)
    sp = cmd("screen", cmd_screen, "the interactive window screen (one-key quick sale)")
    sp.add_argument("--keys", help="comma list of products for keys 1-9 (default: the first nine on sale)")
    _outputs(sp)


def run(args: argparse.Namespace) -> int:
    window = Window(args.server)
    try:
        result = args.handler(window, args)
    except CallError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except ValueError as exc:
        print(f"error: INVALID_ARGUMENT: {exc}", file=sys.stderr)
        return 2
    finally:
        window.close()
    if result is not None and args.json:
        data = describe(result) if hasattr(result, "DESCRIPTOR") else result
        print(orjson.dumps(data, option=orjson.OPT_INDENT_2).decode())
    return 0
