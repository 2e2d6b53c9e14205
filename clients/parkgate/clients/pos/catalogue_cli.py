"""`parkgate pos member|topup|card|group|voucher|backentry`: the rest of the catalogue at the window.

Member cards (S15), stored-value top-ups and card history (S8, S10), group
reservations and pick-ups (S16), exchange vouchers (S12, S17) and
back-entry after an outage (S19). Money is typed and printed as money
("120.50", "CNY 120.50"), times are printed in the park's own zone.
"""

from __future__ import annotations

import argparse
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

from google.protobuf.timestamp_pb2 import Timestamp
from rich.console import Console
from rich.table import Table

from parkgate.v1 import common_pb2, sales_pb2

from ..money import format_money, parse_amount
from .output import member_card, write_member_card
from .window import Window, describe, new_request_id, payment_method

Cmd = Any


def _money(m: common_pb2.Money) -> str:
    return format_money(m.minor_units, m.currency) if m.currency else str(m.minor_units)


def _currency(w: Window) -> str:
    currencies = {p.currency for p in w.parks().values()}
    return currencies.pop() if len(currencies) == 1 else "CNY"


def _payments(w: Window, specs: list[str] | None, reference: str = "") -> list[sales_pb2.Payment]:
    """METHOD:AMOUNT specs; none = the server takes the whole amount in the window's default method."""
    out = []
    currency = _currency(w)
    for spec in specs or []:
        method, _, amount = spec.partition(":")
        if not amount:
            raise ValueError(f"{spec!r}: METHOD:AMOUNT, e.g. cash:120.50 (or leave --pay out to pay the total)")
        out.append(sales_pb2.Payment(method=payment_method(method), reference=reference,
                                     amount=common_pb2.Money(minor_units=parse_amount(amount, currency),
                                                             currency=currency)))
    return out


def _when(w: Window, ts: Timestamp) -> str:
    if not ts.seconds:
        return ""
    return f"{ts.ToDatetime(tzinfo=UTC).astimezone(w.zone()):%Y-%m-%d %H:%M %Z}"


def _date(d: common_pb2.Date) -> str:
    return f"{d.year:04d}-{d.month:02d}-{d.day:02d}" if d.year else ""


def _date_msg(day: date | None) -> common_pb2.Date | None:
    return common_pb2.Date(year=day.year, month=day.month, day=day.day) if day else None


def _day(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: a date as YYYY-MM-DD") from None


# --- members (S15) ---------------------------------------------------------------------------

def _member_table(w: Window, members: list[sales_pb2.Member]) -> Table:
    table = Table("member", "name", "phone", "ID document", "card", "valid until", "state", "family")
    for m in members:
        table.add_row(m.id[:8], m.name, m.phone, m.id_document or ("(hidden)" if m.personal_hidden else ""),
                      m.card_uid, _when(w, m.valid_until), "BLOCKED" if m.blocked else "ok", m.family_id[:8])
    return table


def cmd_member(w: Window, a: argparse.Namespace) -> Any:
    rid = a.request_id or new_request_id()
    if a.action == "register":
        if not (a.name and a.card and a.product):
            raise ValueError("member register needs --product, --name and --card (repeat --name/--card for a family)")
        if len(a.name) != len(a.card):
            raise ValueError("one --card per --name")
        photos = [Path(p).read_bytes() for p in a.photo]
        people = [sales_pb2.Member(name=n, card_uid=c, product_id=a.product) for n, c in zip(a.name, a.card, strict=True)]
        people[0].phone, people[0].id_document = a.phone or "", a.id_document or ""
        reply = w.call_sales("RegisterMember", sales_pb2.RegisterMemberRequest(
            request_id=rid, member=people[0], photo_jpeg=photos[0] if photos else b"",
            family=[sales_pb2.FamilyMember(member=m, photo_jpeg=photos[i + 1] if i + 1 < len(photos) else b"")
                    for i, m in enumerate(people[1:])], payments=_payments(w, a.pay)), mutating=True)
        members = [m for card in a.card
                   for m in w.call_sales("FindMembers", sales_pb2.FindMembersRequest(card_uid=card)).members
                   if m.family_id == reply.family_id]
    elif a.action == "find":
        members = list(w.call_sales("FindMembers", sales_pb2.FindMembersRequest(
            name=a.name[0] if a.name else "", phone=a.phone or "", card_uid=a.card[0] if a.card else "")).members)
    elif a.action == "lost":
        members = [w.call_sales("ReportCardLost", sales_pb2.ReportCardLostRequest(
            member_id=a.member or "", card_uid=a.card[0] if a.card else "", note=a.note or ""), mutating=True)]
    elif a.action == "reissue":
        if not (a.member and a.card):
            raise ValueError("member reissue needs --member and --card (the new card's UID)")
        members = [w.call_sales("ReissueCard", sales_pb2.ReissueCardRequest(
            request_id=rid, member_id=a.member, new_card_uid=a.card[0], payments=_payments(w, a.pay)), mutating=True)]
    elif a.action == "print":
        return _print_member(w, a)
    else:  # renew
        members = [w.call_sales("RenewMember", sales_pb2.RenewMemberRequest(
            request_id=rid, member_id=a.member or "", payments=_payments(w, a.pay)), mutating=True)]
    if a.json:
        return [describe(m) for m in members]
    Console().print(_member_table(w, members) if members else "(none)")
    return None


def _print_member(w: Window, a: argparse.Namespace) -> Any:
    """The member card of ``--card`` as a PDF (and on ``--printer``), with the photo: needs members.personal."""
    if not a.card:
        raise ValueError("member print needs --card (the member's card UID)")
    uid = a.card[0].strip().upper()
    member = next((m for m in w.call_sales("FindMembers", sales_pb2.FindMembersRequest(card_uid=uid)).members
                   if m.card_uid.upper() == uid), None)
    if member is None:
        raise ValueError(f"no member holds card {uid}")
    # PERMISSION_DENIED here (an operator without members.personal) stops the print: a member card without
    # its face is no member card.
    photo = w.call_sales("GetMemberPhoto", sales_pb2.GetMemberPhotoRequest(member_id=member.id)).jpeg
    product = next((p for p in w.products() if p.id == member.product_id), None)
    park = w.parks().get(product.park_id) if product is not None else None
    written = write_member_card(member_card(member, product, park, photo), Path(a.out or "."), a.printer or "")
    for note in written.notes:
        print(f"note: {note}")
    if a.json:
        return {"member_id": member.id, "card_uid": member.card_uid, "pdf": str(written.path), "photo": bool(photo)}
    print(f"member card {member.card_uid} ({member.name}): {written.path}" + (f", printed on {a.printer}"
                                                                          if a.printer else ""))
    return None


# --- cards: top-up, balance, history, refund (S8, S10) ------------------------------------------

def _balance_line(b: sales_pb2.CardBalance) -> str:
    left = "unlimited" if b.entries_left < 0 else str(b.entries_left)
    per = ", ".join(f"{k}: {v}" for k, v in sorted(b.entries_left_by_attraction.items()))
    return f"card {b.card_uid}: balance {_money(b.balance)}, entries left {left}" + (f" ({per})" if per else "")


def cmd_topup(w: Window, a: argparse.Namespace) -> Any:
    balance = w.top_up(a.card, a.amount, a.method, request_id=a.request_id)
    return describe(balance) if a.json else print(_balance_line(balance))


def cmd_card(w: Window, a: argparse.Namespace) -> Any:
    if a.refund:
        balance = w.call_sales("RefundBalance", sales_pb2.RefundBalanceRequest(
            request_id=a.request_id or new_request_id(), card_uid=a.card, note=a.note or ""), mutating=True)
        return describe(balance) if a.json else print(f"paid out; {_balance_line(balance)}")
    history = w.card(a.card)
    if a.json:
        return describe(history)
    console = Console()
    console.print(_balance_line(history.balance))
    table = Table("at", "what", "amount", "balance after", "where", "operator")
    for e in history.events:
        table.add_row(_when(w, e.at), e.kind, _money(e.amount) if e.amount.minor_units else "",
                      _money(e.balance_after) if e.HasField("balance_after") else "", e.where, e.operator)
    console.print(table)
    return None


# --- groups (S16) ------------------------------------------------------------------------------

def _group_table(w: Window, groups: list[sales_pb2.GroupReservation]) -> Table:
    table = Table("reservation", "company", "date", "people", "mix", "deposit", "state", "came")
    for g in groups:
        mix = ", ".join(f"{x.quantity} x {x.product_id} @ {_money(x.unit_price)}" for x in g.lines)
        table.add_row(g.id, g.company, _date(g.visit_date), str(g.head_count), mix, _money(g.deposit), g.state,
                      str(g.arrived or ""))
    return table


def cmd_group(w: Window, a: argparse.Namespace) -> Any:
    rid = a.request_id or new_request_id()
    currency = _currency(w)
    if a.action == "reserve":
        lines = []
        for spec in a.line:
            product, _, rest = spec.partition(":")
            quantity, _, price = rest.partition("@")
            line = sales_pb2.GroupLine(product_id=product, quantity=int(quantity or 0))
            if price:
                line.unit_price.CopyFrom(common_pb2.Money(minor_units=parse_amount(price, currency), currency=currency))
            lines.append(line)
        reservation = sales_pb2.GroupReservation(
            company=a.company or "", head_count=a.people or sum(x.quantity for x in lines), visit_date=_date_msg(a.date),
            contact=a.contact or "", lines=lines,
            deposit=common_pb2.Money(minor_units=parse_amount(a.deposit or "0", currency), currency=currency),
            deposit_payments=_payments(w, a.pay))
        groups = [w.call_sales("ReserveGroup", sales_pb2.ReserveGroupRequest(request_id=rid, reservation=reservation),
                               mutating=True)]
    elif a.action == "pickup":
        order = w.call_sales("PickUpGroup", sales_pb2.PickUpGroupRequest(
            request_id=rid, reservation_id=a.reservation, payments=_payments(w, a.pay), one_code=a.one_code,
            head_count=a.people or 0), mutating=True)
        if a.json:
            return describe(order)
        print(f"order {order.id}: {len(order.tickets)} ticket(s), paid {_money(order.total)}")
        for t in order.tickets:
            print(f"  {t.serial}  {t.product_id}  admits {t.persons}  {_money(t.price)}")
        return None
    elif a.action == "change":
        groups = [w.call_sales("ChangeGroup", sales_pb2.ChangeGroupRequest(
            reservation_id=a.reservation, head_count=a.people or 0, visit_date=_date_msg(a.date),
            no_show=a.no_show, cancel=a.cancel), mutating=True)]
    else:
        groups = list(w.call_sales("FindGroups", sales_pb2.FindGroupsRequest(
            visit_date=_date_msg(a.date), company=a.company or "", reservation_id=a.reservation or "")).reservations)
    if a.json:
        return [describe(g) for g in groups]
    Console().print(_group_table(w, groups) if groups else "(none)")
    return None


# --- vouchers (S12, S17) ---------------------------------------------------------------------------

def cmd_voucher(w: Window, a: argparse.Namespace) -> Any:
    currency = _currency(w)
    if a.action == "issue":
        voucher = sales_pb2.Voucher(product_id=a.product or "", recipient=a.recipient or "", series=a.series or "",
                                    valid_from=_date_msg(a.valid_from), valid_until=_date_msg(a.valid_until))
        if a.value:
            voucher.value.CopyFrom(common_pb2.Money(minor_units=parse_amount(a.value, currency), currency=currency))
        vouchers = list(w.call_sales("IssueVouchers", sales_pb2.IssueVoucherRequest(
            request_id=a.request_id or new_request_id(), voucher=voucher, count=a.count), mutating=True).vouchers)
    elif a.action == "change":
        vouchers = [w.call_sales("ChangeVoucher", sales_pb2.ChangeVoucherRequest(
            code=a.code or "", recipient=a.recipient or "", valid_until=_date_msg(a.valid_until), cancel=a.cancel),
            mutating=True)]
    else:
        vouchers = list(w.call_sales("FindVouchers", sales_pb2.FindVouchersRequest(
            code=a.code or "", recipient=a.recipient or "", series=a.series or "")).vouchers)
    if a.json:
        return [describe(v) for v in vouchers]
    table = Table("code", "series", "for", "valid", "recipient", "state")
    for v in vouchers:
        table.add_row(v.code, v.series, v.product_id or _money(v.value),
                      f"{_date(v.valid_from)} .. {_date(v.valid_until)}", v.recipient, v.state)
    Console().print(table if vouchers else "(none)")
    return None


# --- back-entry (S19) -------------------------------------------------------------------------------

def cmd_backentry(w: Window, a: argparse.Namespace) -> Any:
    if a.action == "add":
        if not (a.product and a.sold_at and a.note):
            raise ValueError("backentry add needs --product, --sold-at (park-local YYYY-MM-DDTHH:MM) and --note (why)")
        sold = datetime.fromisoformat(a.sold_at)
        if sold.tzinfo is None:
            sold = sold.replace(tzinfo=w.zone())
        stamp = Timestamp()
        stamp.FromDatetime(sold.astimezone(UTC))
        entry = w.call_sales("BackEnter", sales_pb2.BackEnterRequest(
            request_id=a.request_id or new_request_id(), product_id=a.product, sold_at=stamp, quantity=a.quantity,
            method=payment_method(a.method), customer=a.customer or "", note=a.note,
            entries_checked_by_hand=a.entries, device_id=a.device or "", entry_request_ids=a.entry_id), mutating=True)
        entries = [entry]
        total = entry.total
    else:
        reply = w.call_sales("ListBackEntries", sales_pb2.ListBackEntriesRequest())
        entries, total = list(reply.entries), reply.total
    if a.json:
        return [describe(e) for e in entries]
    table = Table("sold at", "product", "qty", "method", "customer", "hand entries", "total", "by", "why")
    for e in entries:
        table.add_row(_when(w, e.entry.sold_at), e.entry.product_id, str(e.entry.quantity),
                      common_pb2.PaymentMethod.Name(e.entry.method).lower() if e.entry.method else "",
                      e.entry.customer, str(e.entry.entries_checked_by_hand), _money(e.total), e.operator, e.entry.note)
    console = Console()
    console.print(table if entries else "(none)")
    console.print(f"total {_money(total)}")
    return None


# --- parser ----------------------------------------------------------------------------------------

def add_commands(cmd: Cmd) -> None:
    sp = cmd("member", cmd_member, "member cards: register (a family with several --name/--card), find, lost, "
                                   "reissue, renew, print (the card with the photo: PDF, and --printer)")
    sp.add_argument("action", choices=("register", "find", "lost", "reissue", "renew", "print"))
    sp.add_argument("--out", help="print: the folder for member-<card>.pdf (default: here)")
    sp.add_argument("--printer", help="print: an ESC/POS printer's serial port, e.g. /dev/ttyUSB0")
    sp.add_argument("--product")
    sp.add_argument("--name", action="append", default=[])
    sp.add_argument("--card", action="append", default=[], help="card UID (repeat for a family; the new card for reissue)")
    sp.add_argument("--photo", action="append", default=[], help="photo file, in --name order")
    sp.add_argument("--phone")
    sp.add_argument("--id-document")
    sp.add_argument("--member", help="member id (lost, reissue, renew)")
    sp.add_argument("--note")
    sp.add_argument("--pay", action="append", help="METHOD:AMOUNT (default: the total in the default method)")
    sp.add_argument("--request-id")
    sp = cmd("topup", cmd_topup, "load money onto a stored-value card")
    sp.add_argument("card")
    sp.add_argument("amount", help="e.g. 100.00")
    sp.add_argument("--method", default="cash")
    sp.add_argument("--request-id")
    sp = cmd("card", cmd_card, "a card's balance, counts and history (or --refund its balance)")
    sp.add_argument("card")
    sp.add_argument("--refund", action="store_true", help="pay out the remaining balance")
    sp.add_argument("--note")
    sp.add_argument("--request-id")
    sp = cmd("group", cmd_group, "group reservations: reserve, pickup, change, find")
    sp.add_argument("action", choices=("reserve", "pickup", "change", "find"))
    sp.add_argument("--company")
    sp.add_argument("--contact")
    sp.add_argument("--date", type=_day)
    sp.add_argument("--people", type=int, help="head count (reserve, change) or people who came (pickup)")
    sp.add_argument("--line", action="append", default=[], help="PRODUCT:N[@PRICE] (repeat for a mix)")
    sp.add_argument("--deposit")
    sp.add_argument("--reservation")
    sp.add_argument("--one-code", action="store_true", help="one group code admitting everybody")
    sp.add_argument("--no-show", action="store_true")
    sp.add_argument("--cancel", action="store_true")
    sp.add_argument("--pay", action="append", help="METHOD:AMOUNT (default: on the company's account)")
    sp.add_argument("--request-id")
    sp = cmd("voucher", cmd_voucher, "exchange vouchers: issue (a series), find, change (or --cancel)")
    sp.add_argument("action", choices=("issue", "find", "change"))
    sp.add_argument("--product", help="a voucher for one ticket of this product")
    sp.add_argument("--value", help="... or worth this amount, e.g. 50.00")
    sp.add_argument("--count", type=int, default=1)
    sp.add_argument("--series")
    sp.add_argument("--recipient")
    sp.add_argument("--valid-from", type=_day)
    sp.add_argument("--valid-until", type=_day)
    sp.add_argument("--code")
    sp.add_argument("--cancel", action="store_true")
    sp.add_argument("--request-id")
    sp = cmd("backentry", cmd_backentry, "sales and entries made by hand during an outage: add, list")
    sp.add_argument("action", choices=("add", "list"))
    sp.add_argument("--product")
    sp.add_argument("--sold-at", help="when it was sold, park-local YYYY-MM-DDTHH:MM")
    sp.add_argument("--quantity", type=int, default=1)
    sp.add_argument("--method", default="cash")
    sp.add_argument("--customer")
    sp.add_argument("--note", help="why: which outage, which paper tickets")
    sp.add_argument("--entries", type=int, default=0, help="entries checked by hand")
    sp.add_argument("--device", help="the gate (or handheld) that checked them by hand")
    sp.add_argument("--entry-id", action="append", default=[], help="the gate's request id of a hand-checked entry")
    sp.add_argument("--request-id")
