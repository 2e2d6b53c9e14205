"""Conversions of the rest of the catalogue (members, cards, vouchers, groups, back-entries) to the contract."""

from __future__ import annotations

from parkgate.server.services.held_checks import HeldCheckRow
from parkgate.server.services.members import CardView
from parkgate.server.store.rows.catalogue import BackEntryRow, CardEventRow, GroupRow, MemberRow, VoucherRow
from parkgate.v1 import common_pb2, gate_pb2, sales_pb2

from .convert import date_msg, money, payment_method, ts

#: Reading members' ID documents, photos and (on the control room's screen) names (S15).
PERSONAL = "members.personal"


def member(row: MemberRow, *, personal: bool) -> sales_pb2.Member:
    """A member; the ID document and the photo only for callers holding members.personal."""
    return sales_pb2.Member(
        id=row.id, name=row.name, phone=row.phone, card_uid=row.card_uid, family_id=row.family_id,
        product_id=row.product_id, valid_until=ts(row.valid_until), blocked=row.blocked, ticket_id=row.ticket_id,
        order_id=row.order_id, personal_hidden=not personal,
        id_document=row.id_document if personal else "",
        photo_ref=row.id if personal and row.has_photo else "",
    )


def held_check(row: HeldCheckRow, *, personal: bool) -> gate_pb2.HeldCheck:
    """A check waiting at a gate; who it is (name, photo) only for callers holding members.personal."""
    return gate_pb2.HeldCheck(
        device_id=row.device_id, request_id=row.request_id, at=ts(row.at), ticket_id=row.ticket_id,
        persons=row.persons, personal_hidden=not personal,
        member_name=row.member_name if personal else "",
        photo_ref=row.member_id if personal and row.has_photo else "",
    )


def card_balance(view: CardView) -> sales_pb2.CardBalance:
    c = view.card
    return sales_pb2.CardBalance(
        card_uid=c.card_uid, balance=money(c.balance or 0, c.currency), entries_left=view.entries_left,
        ticket_id=c.ticket_id, entries_left_by_attraction=view.left_by_attraction,
    )


def card_event(row: CardEventRow, currency: str) -> sales_pb2.CardEvent:
    return sales_pb2.CardEvent(
        at=ts(row.at), kind=row.kind, amount=money(row.amount, currency),
        balance_after=money(row.balance_after, currency) if row.balance_after is not None else None,
        where=row.where, operator=row.operator, card_uid=row.card_uid,
    )


def voucher(row: VoucherRow) -> sales_pb2.Voucher:
    return sales_pb2.Voucher(
        id=row.id, code=row.code, product_id=row.product_id, valid_from=date_msg(row.valid_from),
        valid_until=date_msg(row.valid_until), issuer=row.issuer, recipient=row.recipient,
        redeemed=row.state == "redeemed", value=money(row.value, row.currency) if row.value else None,
        series=row.series, state=row.state, redeemed_at=ts(row.redeemed_at), order_id=row.order_id,
    )


def group(row: GroupRow) -> sales_pb2.GroupReservation:
    lines = [sales_pb2.GroupLine(product_id=x["product_id"], quantity=int(x["quantity"]),
                                 unit_price=money(int(x["unit_price"]), row.currency)) for x in row.lines]
    return sales_pb2.GroupReservation(
        id=row.id, company=row.company, head_count=row.head_count, product_id=lines[0].product_id if lines else "",
        unit_price=lines[0].unit_price if len(lines) == 1 else None, visit_date=date_msg(row.visit_date),
        picked_up=row.state == "picked_up", contact=row.contact, deposit=money(row.deposit, row.currency),
        state=row.state, order_id=row.order_id, arrived=row.arrived, lines=lines,
    )


def back_entry(row: BackEntryRow) -> sales_pb2.BackEntry:
    return sales_pb2.BackEntry(
        id=row.id, total=money(row.total, row.currency), operator=row.operator, entered_at=ts(row.entered_at),
        entry=sales_pb2.BackEnterRequest(
            request_id=row.request_id, product_id=row.product_id, sold_at=ts(row.sold_at), quantity=row.quantity,
            method=payment_method(row.method), customer=row.customer, note=row.note,
            entries_checked_by_hand=row.entries_by_hand, device_id=row.device_id),
    )


def total_of(rows: list[BackEntryRow]) -> common_pb2.Money:
    currency = rows[0].currency if rows else ""
    return money(sum(r.total for r in rows), currency)
