"""Member cards (S15) and stored-value cards (S8): registration, look-up, loss, reissue, renewal, top-up, refund.

A member card is a ticket of a MEMBER product sold onto an IC card, with a
real-name ``members`` row beside it; a family set is one order with one
card per member. Everything a gate decides still comes from the ticket row
(the decision engine reads its balance, its block and its counts), so a
loss report blocks the card at every gate with the next validation.

Every change is one transaction; the ones that take money are orders
(kind top_up, card_reissue, member_renewal) so their payments count in the
shift totals and reports like a sale's.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

from parkgate.server.domain import catalogue as rules
from parkgate.server.domain.errors import Conflict, InvalidArgument, NotFound, Reason
from parkgate.server.domain.operators import Principal
from parkgate.server.domain.photos import store_photo
from parkgate.server.domain.sales import PaymentIn, fingerprint, local_today, normalize_card_uid
from parkgate.server.store import Database
from parkgate.server.store import cards as store
from parkgate.server.store import catalog as catalog_store
from parkgate.server.store import sales as sales_store
from parkgate.server.store import settings as settings_store
from parkgate.server.store.database import Connection
from parkgate.server.store.rows.catalogue import CardEventRow, CardTicket, MemberRow, NewCardEvent, NewMember

from .catalog import price_on, product_or_refuse
from .sales import LineIn, OrderIn, SalesService

log = logging.getLogger(__name__)

#: A card's balance may not grow past this (minor units) unless the parameter cards.max_balance says otherwise.
DEFAULT_MAX_BALANCE = 1_000_000
#: A renewal adds this many days unless the member product names valid_days.
DEFAULT_RENEWAL_DAYS = 365


@dataclass(frozen=True, slots=True)
class MemberIn:
    name: str
    id_document: str = ""
    phone: str = ""
    card_uid: str = ""
    photo: bytes = b""


@dataclass(frozen=True, slots=True)
class CardView:
    card: CardTicket
    entries_left: int
    left_by_attraction: dict[str, int]


def _card_view(card: CardTicket) -> CardView:
    total_left = -1 if card.entries_total == 0 else max(card.entries_total - card.entries_used, 0)
    by = {a: max(int(n) - int(card.attraction_used.get(a, 0)), 0) for a, n in card.attraction_limits.items()}
    return CardView(card, total_left, by)


def _request_id(request_id: str) -> None:
    if not 1 <= len(request_id) <= 128:
        raise InvalidArgument("request_id: 1-128 characters chosen by the client, the same on a retry")


class MemberService:
    def __init__(self, db: Database, sales: SalesService) -> None:
        self.db = db
        self.sales = sales

    # --- members (S15) -------------------------------------------------------------------

    async def register(self, seller: Principal, request_id: str, product_id: str, members: list[MemberIn],
                       payments: tuple[PaymentIn, ...]) -> list[MemberRow]:
        """Sell one member card per person (a family set when several) and register them by name."""
        _request_id(request_id)
        if not members:
            raise InvalidArgument("register at least one member")
        for m in members:
            if not m.name.strip():
                raise InvalidArgument("a member card is real-name: every member needs a name")
            if not m.card_uid:
                raise InvalidArgument(f"member {m.name!r} needs the UID of the card they get")
        # Decoding and resizing photos is CPU work: off the event loop, before the transaction.
        photos = [await asyncio.to_thread(store_photo, m.photo) if m.photo else None for m in members]
        order = OrderIn(request_id=request_id, kind="member", payments=payments, pay_default=True,
                        lines=(LineIn(product_id, len(members), card_uids=tuple(m.card_uid for m in members)),))

        async def work(conn: Connection) -> list[MemberRow]:
            existing = await sales_store.order_by_request(conn, request_id)
            if existing is None:
                product = await product_or_refuse(conn, product_id)
                if product.kind != "member":
                    raise InvalidArgument(f"product {product_id!r} is a {product.kind}, not a member card",
                                          Reason.NOT_A_MEMBER_CARD)
            view = await self.sales.sell_in(conn, seller, order)
            if existing is not None:
                return await store.members_of_order(conn, view.order.id)
            family = str(uuid.uuid4())
            by_card = {t.ticket.card_uid: t.ticket for t in view.tickets}
            rows = []
            for m, photo in zip(members, photos, strict=True):
                ticket = by_card[normalize_card_uid(m.card_uid)]
                rows.append(NewMember(family_id=family, name=m.name.strip(), id_document=m.id_document.strip(),
                                      phone=m.phone.strip(), photo=photo, product_id=product_id,
                                      ticket_id=ticket.id, order_id=view.order.id))
                await store.insert_event(conn, NewCardEvent(
                    request_id=None, ticket_id=ticket.id, card_uid=ticket.card_uid, kind="issued",
                    amount=ticket.price, balance_after=None, order_id=view.order.id,
                    device_id=view.order.window_device_id, operator=seller.username))
            await store.insert_members(conn, rows)
            return await store.members_of_order(conn, view.order.id)

        result = await self.db.run(work, what="member registration")
        log.info("%d member card(s) of %s registered by %s", len(result), product_id, seller.username)
        return result

    async def find(self, *, name: str, phone: str, card_uid: str) -> list[MemberRow]:
        if not (name.strip() or phone.strip() or card_uid.strip()):
            raise InvalidArgument("look members up by name, phone or card UID")
        card = normalize_card_uid(card_uid) if card_uid.strip() else ""
        async with self.db.connection() as conn:
            return await store.find_members(conn, name=name.strip(), phone=phone.strip(), card_uid=card, limit=200)

    async def photo(self, member_id: str) -> bytes:
        async with self.db.connection() as conn:
            photo = await store.member_photo(conn, _uuid(member_id, Reason.UNKNOWN_MEMBER))
        if photo is None:
            raise NotFound(f"member {member_id} has no photo", Reason.UNKNOWN_MEMBER)
        return photo

    async def _member(self, conn: Connection, member_id: str, card_uid: str) -> MemberRow:
        if member_id:
            row = await store.get_member(conn, _uuid(member_id, Reason.UNKNOWN_MEMBER), for_update=True)
        elif card_uid:
            found = await store.find_members(conn, name="", phone="", card_uid=normalize_card_uid(card_uid), limit=1)
            row = await store.get_member(conn, found[0].id, for_update=True) if found else None
        else:
            raise InvalidArgument("name the member (member id) or the card (card UID)")
        if row is None:
            raise NotFound(f"no member {member_id or card_uid}", Reason.UNKNOWN_MEMBER)
        return row

    async def report_lost(self, operator: Principal, *, member_id: str, card_uid: str, note: str) -> MemberRow:
        """Block the member's card at once: the next validation at any gate is CARD_BLOCKED."""
        async with self.db.transaction() as conn:
            member = await self._member(conn, member_id, card_uid)
            if not member.blocked:
                await store.set_blocked(conn, member.ticket_id, True)
                await store.insert_event(conn, NewCardEvent(
                    request_id=None, ticket_id=member.ticket_id, card_uid=member.card_uid, kind="lost", amount=0,
                    balance_after=None, order_id=None, device_id=operator.device_id or "", operator=operator.username,
                    note=note))
            after = await store.get_member(conn, member.id)
        assert after is not None
        log.warning("card %s of member %s reported lost by %s: blocked", member.card_uid, member.id, operator.username)
        return after

    async def reissue(self, seller: Principal, request_id: str, member_id: str, new_card_uid: str,
                      payments: tuple[PaymentIn, ...]) -> MemberRow:
        """A new card for the member, the replacement fee paid (S13); the old UID stays blocked; history kept."""
        _request_id(request_id)
        new_uid = normalize_card_uid(new_card_uid)
        digest = fingerprint({"member": member_id, "card": new_uid, "payments": [asdict(p) for p in payments]})

        async def work(conn: Connection) -> MemberRow:
            member = await self._member(conn, member_id, "")
            product = await product_or_refuse(conn, member.product_id)
            fee = int(product.rules.get("replacement_fee", 0) or 0)
            card = await store.ticket_card(conn, member.ticket_id, for_update=True)
            assert card is not None
            order_id, new = await self.sales.money_order(
                conn, seller, request_id=request_id, kind="card_reissue", currency=card.currency, total=fee,
                payments=payments, fingerprint=digest)
            if new:
                if not await store.move_card(conn, member.ticket_id, member.card_uid, new_uid):
                    raise Conflict(f"card {new_uid} is in use already", Reason.CARD_ALREADY_BOUND, card_uid=new_uid)
                await store.insert_event(conn, NewCardEvent(
                    request_id=request_id, ticket_id=member.ticket_id, card_uid=new_uid, kind="reissued", amount=fee,
                    balance_after=card.balance, order_id=order_id, device_id=seller.device_id or "",
                    operator=seller.username, note=f"replaces {member.card_uid}"))
            after = await store.get_member(conn, member.id)
            assert after is not None
            return after

        result = await self.db.run(work, what="card reissue")
        log.info("member %s: card reissued as %s by %s", result.id, result.card_uid, seller.username)
        return result

    async def renew(self, seller: Principal, request_id: str, member_id: str,
                    payments: tuple[PaymentIn, ...]) -> MemberRow:
        """A further validity period at today's price of the member product."""
        _request_id(request_id)
        digest = fingerprint({"renew": member_id, "payments": [asdict(p) for p in payments]})

        async def work(conn: Connection) -> MemberRow:
            member = await self._member(conn, member_id, "")
            product = await product_or_refuse(conn, member.product_id)
            card = await store.ticket_card(conn, member.ticket_id, for_update=True)
            assert card is not None
            park = await catalog_store.get_park(conn, product.park_id)
            assert park is not None
            quote = await price_on(conn, product, local_today(ZoneInfo(park.time_zone), datetime.now(UTC)))
            order_id, new = await self.sales.money_order(
                conn, seller, request_id=request_id, kind="member_renewal", currency=card.currency,
                total=quote.unit_price, payments=payments, fingerprint=digest)
            if new:
                days = int(product.rules.get("valid_days", 0) or 0) or DEFAULT_RENEWAL_DAYS
                await store.extend_validity(conn, member.ticket_id, days)
                await store.insert_event(conn, NewCardEvent(
                    request_id=request_id, ticket_id=member.ticket_id, card_uid=member.card_uid, kind="renewed",
                    amount=quote.unit_price, balance_after=card.balance, order_id=order_id,
                    device_id=seller.device_id or "", operator=seller.username, note=f"+{days} days"))
            after = await store.get_member(conn, member.id)
            assert after is not None
            return after

        return await self.db.run(work, what="member renewal")

    # --- stored value (S8) -------------------------------------------------------------------

    async def _card(self, conn: Connection, card_uid: str) -> CardTicket:
        card = await store.card_ticket(conn, normalize_card_uid(card_uid), for_update=True)
        if card is None:
            raise NotFound(f"no live card {card_uid}", Reason.UNKNOWN_CARD)
        if card.lost or card.blocked:
            raise Conflict(f"card {card_uid} is blocked (reported lost)", Reason.CARD_BLOCKED)
        if card.balance is None:
            raise Conflict(f"card {card_uid} is not a stored-value card", Reason.NOT_A_STORED_VALUE_CARD)
        return card

    async def top_up(self, seller: Principal, request_id: str, card_uid: str, payment: PaymentIn) -> CardView:
        """Load money onto a card at the window; paid like a sale (its method counts in the shift totals)."""
        _request_id(request_id)
        rules.check_positive(payment.amount, "a top-up")
        uid = normalize_card_uid(card_uid)
        digest = fingerprint({"top_up": uid, "payment": asdict(payment)})

        async def work(conn: Connection) -> CardView:
            if await store.event_exists(conn, request_id):  # a retry: the balance as it is now
                card = await store.card_ticket(conn, uid)
                assert card is not None
                await self.sales.money_order(conn, seller, request_id=request_id, kind="top_up",
                                             currency=card.currency, total=payment.amount, payments=(payment,),
                                             fingerprint=digest)
                return _card_view(card)
            card = await self._card(conn, uid)
            limit = await settings_store.get_parameter(conn, "cards.max_balance")
            rules.check_top_up(payment.amount, card.balance or 0,
                               int(limit) if limit is not None else DEFAULT_MAX_BALANCE)
            order_id, _new = await self.sales.money_order(
                conn, seller, request_id=request_id, kind="top_up", currency=card.currency, total=payment.amount,
                payments=(payment,), fingerprint=digest)
            balance = await store.add_balance(conn, card.ticket_id, payment.amount)
            await store.insert_event(conn, NewCardEvent(
                request_id=request_id, ticket_id=card.ticket_id, card_uid=uid, kind="top_up", amount=payment.amount,
                balance_after=balance, order_id=order_id, device_id=seller.device_id or "",
                operator=seller.username))
            after = await store.card_ticket(conn, uid)
            assert after is not None
            return _card_view(after)

        view = await self.db.run(work, what="top-up")
        log.info("card %s topped up %d by %s: balance %s", uid, payment.amount, seller.username, view.card.balance)
        return view

    async def refund_balance(self, operator: Principal, request_id: str, card_uid: str, note: str) -> CardView:
        """Pay out what is left on a stored-value card; the balance becomes 0 (the card stays usable)."""
        _request_id(request_id)
        uid = normalize_card_uid(card_uid)

        async def work(conn: Connection) -> CardView:
            if not await store.event_exists(conn, request_id):
                card = await self._card(conn, uid)
                paid_out = card.balance or 0
                if paid_out <= 0:
                    raise Conflict(f"card {uid} holds nothing to refund", Reason.INVALID_AMOUNT)
                await store.add_balance(conn, card.ticket_id, -paid_out)
                await store.insert_event(conn, NewCardEvent(
                    request_id=request_id, ticket_id=card.ticket_id, card_uid=uid, kind="refund", amount=-paid_out,
                    balance_after=0, order_id=None, device_id=operator.device_id or "", operator=operator.username,
                    note=note, operator_id=operator.user_id))
            after = await store.card_ticket(conn, uid)
            assert after is not None
            return _card_view(after)

        return await self.db.run(work, what="balance refund")

    async def card(self, card_uid: str) -> tuple[CardView, list[CardEventRow]]:
        """A card's balance and counts, and its history (window events and gate charges), newest first."""
        async with self.db.connection() as conn:
            card = await store.card_ticket(conn, normalize_card_uid(card_uid))
            if card is None:
                raise NotFound(f"no card {card_uid}", Reason.UNKNOWN_CARD)
            return _card_view(card), await store.history(conn, card.ticket_id)


def _uuid(text: str, reason: Reason) -> str:
    try:
        return str(uuid.UUID(text))
    except ValueError:
        raise NotFound(f"{text!r} is not an id this server issued", reason) from None
