"""Selling at the windows and refunding (S6, S7, S13, S18, S20, S21).

An order is one database transaction: every ticket of it is issued, signed
and stored, every card bound and every payment recorded, or nothing is. The
client's request id makes a retried call return the first outcome instead of
selling twice; the request's fingerprint tells a true retry from a different
request that reused the id (IDEMPOTENCY_CONFLICT).
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, date, datetime
from zoneinfo import ZoneInfo

from parkgate import native
from parkgate.common import metrics
from parkgate.server.domain import sales as rules
from parkgate.server.domain.catalog import check_slug
from parkgate.server.domain.errors import Conflict, Forbidden, InvalidArgument, NotFound, Reason
from parkgate.server.domain.operators import Principal
from parkgate.server.store import Database
from parkgate.server.store import catalog as catalog_store
from parkgate.server.store import devices as device_store
from parkgate.server.store import keys as keys_store
from parkgate.server.store import sales as store
from parkgate.server.store import settings as settings_store
from parkgate.server.store.database import Connection
from parkgate.server.store.rows.catalog import Park, Product
from parkgate.server.store.rows.sales import (
    NewOrder,
    NewRefund,
    NewTicket,
    Order,
    Payment,
    Refund,
    RefundLine,
    RefundReason,
    ShiftTotals,
    Ticket,
)

from .catalog import price_on, product_or_refuse
from .vouchers import redeem_vouchers

log = logging.getLogger(__name__)

#: Devices an operator may sell at.
SELLING_DEVICE_KINDS = ("sales_window", "kiosk")
DEFAULT_PAGE = 100


@dataclass(frozen=True, slots=True)
class LineIn:
    product_id: str
    quantity: int
    visit_date: date | None = None
    card_uids: tuple[str, ...] = ()
    # set only by the catalogue's own use cases, never from a window's order:
    unit_price: int | None = None   # a group's agreed price (S16)
    persons: int = 0                # one group code admitting N people (S16)
    past: bool = False              # back-entry (S19): a visit date before today is the point


@dataclass(frozen=True, slots=True)
class OrderIn:
    request_id: str
    lines: tuple[LineIn, ...]
    payments: tuple[rules.PaymentIn, ...] = ()
    customer: str = ""
    kind: str = "sale"
    credit: int = 0                 # paid before this order (a group's deposit): payments cover total - credit
    pay_default: bool = False       # no payments given: the total in the window's default method
    default_method: str = ""        # ... or in this one (a back-entry's hand sale)

    def fingerprint(self) -> bytes:
        data = asdict(self)
        del data["request_id"]
        return rules.fingerprint(data)


@dataclass(frozen=True, slots=True)
class RefundIn:
    request_id: str
    reason_id: str
    order_id: str = ""
    ticket_ids: tuple[str, ...] = ()
    note: str = ""
    refund_deposit: bool = False
    expected_amount: int = 0

    def fingerprint(self) -> bytes:
        data = asdict(self)
        del data["request_id"]
        data["ticket_ids"] = sorted(self.ticket_ids)
        return rules.fingerprint(data)


@dataclass(frozen=True, slots=True)
class TicketView:
    """A ticket with the state shown to people (used, expired, ... as of when it was read)."""

    ticket: Ticket
    display_state: str


@dataclass(frozen=True, slots=True)
class OrderView:
    """An order with its tickets and payments."""

    order: Order
    tickets: list[TicketView]
    payments: list[Payment]


def _shown(tickets: list[Ticket], now: datetime) -> list[TicketView]:
    return [TicketView(t, rules.ticket_state(t, now)) for t in tickets]


@dataclass(slots=True)
class _PreparedLine:
    product: Product
    park: Park
    visit: date
    unit_price: int
    terms: rules.TicketTerms
    quantity: int
    card_uids: tuple[str, ...]
    attraction_slots: list[int] = field(default_factory=list)


def _check_request_id(request_id: str) -> None:
    if not 1 <= len(request_id) <= 128:
        raise InvalidArgument("request_id: 1-128 characters chosen by the client (a UUID), the same on a retry")


class SalesService:
    def __init__(self, db: Database) -> None:
        self.db = db
        self._key: native.SigningKey | None = None

    # --- signing key ----------------------------------------------------------------

    async def _signing_key(self, conn: Connection) -> native.SigningKey:
        """The installation's active key (a rotation restarts nothing: services/keys.py)."""
        # One indexed read per order: a key rotated or revoked through any server stops signing here at once.
        if self._key is not None and await keys_store.key_state(conn, self._key.key_id) != "active":
            self._key = None
        if self._key is None:
            row = await store.active_signing_key(conn)
            if row is None:
                raise Conflict("no active ticket signing key (the server creates one at start)",
                               Reason.BAD_CONFIGURATION)
            self._key = native.SigningKey(row.key_id, bytes(row.seed))
        return self._key

    # --- orders -------------------------------------------------------------------------

    async def _selling_device(self, conn: Connection, seller: Principal) -> str:
        device = await device_store.get(conn, seller.device_id) if seller.device_id else None
        if device is None or device.kind not in SELLING_DEVICE_KINDS or device.disabled:
            raise Forbidden(
                "selling needs a session opened at a registered, enabled sales window "
                "(log in with --device and its secret)", Reason.NOT_A_SALES_WINDOW,
            )
        return device.id

    async def _prepare_line(self, conn: Connection, line: LineIn, now: datetime) -> _PreparedLine:
        rules.check_quantity(line.quantity)
        product = await product_or_refuse(conn, line.product_id)
        if not product.on_sale:
            raise Conflict(f"product {line.product_id!r} is not on sale", Reason.PRODUCT_NOT_ON_SALE)
        park = await catalog_store.get_park(conn, product.park_id)
        assert park is not None  # a foreign key
        zone = ZoneInfo(park.time_zone)
        visit = line.visit_date or rules.local_today(zone, now)
        if not line.past:
            rules.check_visit_date(visit, rules.local_today(zone, now))
        unit_price = line.unit_price if line.unit_price is not None else (await price_on(conn, product, visit)).unit_price
        terms = rules.ticket_terms(product.kind, product.rules, visit, zone)
        if line.persons > 1:
            terms = replace(terms, persons=rules.check_group_persons(line.persons))
        cards = tuple(rules.normalize_card_uid(uid) for uid in line.card_uids)
        if terms.card_bound and len(cards) != line.quantity:
            raise InvalidArgument(f"product {line.product_id!r} is sold onto IC cards: give one card UID per ticket "
                                  f"({line.quantity} tickets, {len(cards)} UIDs)")
        if not terms.card_bound and cards:
            raise InvalidArgument(f"product {line.product_id!r} is not card-bound: sell it without card UIDs")
        slots = await catalog_store.attraction_slots(conn, park.id)
        return _PreparedLine(product, park, visit, unit_price, terms, line.quantity, cards,
                             [slots[a] for a in terms.attraction_ids if a in slots])

    async def create_order(self, seller: Principal, order: OrderIn) -> OrderView:
        _check_request_id(order.request_id)
        if not order.lines:
            raise InvalidArgument("an order needs at least one line", Reason.INVALID_QUANTITY)
        all_cards = [rules.normalize_card_uid(u) for line in order.lines for u in line.card_uids]
        if len(set(all_cards)) != len(all_cards):
            raise InvalidArgument("the same card UID appears twice in one order", Reason.CARD_ALREADY_BOUND)
        fingerprint = order.fingerprint()
        # Keyed by the request id, so running it again after the database went away mid-way (a failover,
        # an unknown commit outcome) returns the order of the first run instead of selling twice.
        created: list[bool] = []  # whether the run that committed made a new order (a replay takes no money)
        result = await self.db.run(lambda conn: self._create_order(conn, seller, order, fingerprint, created),
                                   what="sale")
        if created and created[-1]:
            metrics.count_sale([(p.method, p.amount) for p in order.payments], result.order.currency)
        log.info("order %s: %d tickets, total %d %s, by %s at %s", result.order.id, len(result.tickets),
                 result.order.total, result.order.currency, seller.username, result.order.window_device_id)
        return result

    async def sell_in(self, conn: Connection, seller: Principal, order: OrderIn) -> OrderView:
        """An order inside the caller's transaction: the catalogue's use cases (members, groups, back-entry)
        sell through here, so their tickets are issued, priced and paid exactly like a window's."""
        _check_request_id(order.request_id)
        created: list[bool] = []
        result = await self._create_order(conn, seller, order, order.fingerprint(), created)
        if created[-1]:  # counted before the caller's commit: a use case that fails after this over-counts once
            metrics.count_sale([(p.method, p.amount) for p in order.payments], result.order.currency)
        return result

    async def selling_device(self, conn: Connection, seller: Principal) -> str:
        return await self._selling_device(conn, seller)

    async def default_payments(self, conn: Connection, payments: tuple[rules.PaymentIn, ...],
                               total: int, customer: str = "", method: str = "") -> tuple[rules.PaymentIn, ...]:
        """The payments given, or the whole amount in the window's default method (as a quick sale pays)."""
        if payments or total == 0:
            return payments
        if method:
            return (rules.PaymentIn(method, total, customer if method == "on_account" else ""),)
        if customer:
            return (rules.PaymentIn("on_account", total, customer),)
        method = str(await settings_store.get_parameter(conn, "sales.default_payment_method") or "cash").lower()
        return (rules.PaymentIn(method, total),)

    async def money_order(self, conn: Connection, seller: Principal, *, request_id: str, kind: str, currency: str,
                          total: int, payments: tuple[rules.PaymentIn, ...], fingerprint: bytes,
                          customer: str = "") -> tuple[str, bool]:
        """An order that issues no ticket (a top-up, a replacement fee, a group's deposit): paid like a sale,
        so it counts in the shift totals and the reports. Returns (order id, whether it is new)."""
        _check_request_id(request_id)
        existing = await store.order_by_request(conn, request_id)
        if existing is None:
            window = await self._selling_device(conn, seller)
            payments = await self.default_payments(conn, payments, total, customer)
            rules.check_payments(payments, total, customer)
            order_id = await store.insert_order(conn, NewOrder(
                request_id=request_id, request_hash=fingerprint, kind=kind, currency=currency, total=total,
                window_device_id=window, operator_id=seller.user_id, operator=seller.username, customer=customer))
            if order_id is not None:
                await store.insert_payments(conn, order_id, payments)
                return order_id, True
            existing = await store.order_by_request(conn, request_id)
            assert existing is not None
        if bytes(existing.request_hash) != fingerprint:
            raise Conflict(f"request id {request_id!r} was used for a different request", Reason.IDEMPOTENCY_CONFLICT)
        return existing.id, False

    async def _create_order(self, conn: Connection, seller: Principal, order: OrderIn,
                            fingerprint: bytes, created: list[bool]) -> OrderView:
        created.append(False)
        existing = await store.order_by_request(conn, order.request_id)
        if existing is not None:
            return await self._replay(conn, existing, fingerprint)
        window = await self._selling_device(conn, seller)
        now = datetime.now(UTC)
        lines = [await self._prepare_line(conn, line, now) for line in order.lines]
        currencies = {line.park.currency for line in lines}
        if len(currencies) > 1:
            raise InvalidArgument(f"one order is paid in one currency; these lines are in {sorted(currencies)}")
        total = max(sum((line.unit_price + line.terms.deposit) * line.quantity for line in lines) - order.credit, 0)
        payments = order.payments
        if order.pay_default:
            payments = await self.default_payments(conn, payments, total, order.customer, order.default_method)
        rules.check_payments(payments, total, order.customer)
        order_id = await store.insert_order(conn, NewOrder(
            request_id=order.request_id, request_hash=fingerprint, kind=order.kind,
            currency=currencies.pop(), total=total, window_device_id=window,
            operator_id=seller.user_id, operator=seller.username, customer=order.customer,
        ))
        if order_id is None:  # the same request id committed meanwhile by a concurrent retry
            existing = await store.order_by_request(conn, order.request_id)
            assert existing is not None
            return await self._replay(conn, existing, fingerprint)
        await self._issue_tickets(conn, order_id, lines, back_entered=order.kind == "back_entry")
        await store.insert_payments(conn, order_id, payments)
        await redeem_vouchers(conn, order_id, payments,
                              [(line.product.id, bool(line.product.rules.get("voucher_redeemable")),
                                line.unit_price, line.quantity) for line in lines],
                              rules.local_today(ZoneInfo(lines[0].park.time_zone), now))
        created[-1] = True
        return await self._load_order(conn, order_id)

    async def _issue_tickets(self, conn: Connection, order_id: str, lines: list[_PreparedLine], *,
                             back_entered: bool = False) -> None:
        key = await self._signing_key(conn)
        serials = await store.next_serials(conn, sum(line.quantity for line in lines))
        rows: list[NewTicket] = []
        bindings: list[tuple[str, int]] = []
        for line in lines:
            t = line.terms
            for i in range(line.quantity):
                serial = serials[len(rows)]
                card = line.card_uids[i] if line.card_uids else None
                code = native.issue(
                    key, serial=serial, product_id=line.product.number, park_id=line.park.number,
                    valid_from=int(t.valid_from.timestamp()), valid_until=int(t.valid_until.timestamp()),
                    persons=t.persons, night_window=t.night_window, attractions=line.attraction_slots,
                )
                rows.append(NewTicket(
                    serial=serial, order_id=order_id, product_id=line.product.id,
                    product_version=line.product.version, park_id=line.park.id, key_id=key.key_id,
                    code=code, card_uid=card, price=line.unit_price, deposit=t.deposit,
                    visit_date=line.visit, valid_from=t.valid_from, valid_until=t.valid_until,
                    valid_days=t.valid_days, persons=t.persons, entries_total=t.entries_total,
                    entries_per_day=t.entries_per_day, reentry_allowed=t.reentry_allowed,
                    hold_for_check=t.hold_for_check, attraction_ids=list(t.attraction_ids),
                    window_start=t.night_window[0] if t.night_window else None,
                    window_end=t.night_window[1] if t.night_window else None,
                    balance=0 if t.stored_value else None,
                    attraction_limits=dict(t.attraction_limits) if t.attraction_limits else None,
                    back_entered=back_entered,
                ))
                if card:
                    bindings.append((card, serial))
        await store.insert_tickets(conn, rows)
        for card, serial in bindings:
            if not await store.bind_card(conn, card, serial):
                raise Conflict(f"card {card} already holds a live ticket", Reason.CARD_ALREADY_BOUND, card_uid=card)

    async def _replay(self, conn: Connection, existing: Order, fingerprint: bytes) -> OrderView:
        if bytes(existing.request_hash) != fingerprint:
            raise Conflict(f"request id {existing.request_id!r} was used for a different order",
                           Reason.IDEMPOTENCY_CONFLICT)
        return await self._load_order(conn, existing.id)

    async def _load_order(self, conn: Connection, order_id: str) -> OrderView:
        order = await store.get_order(conn, order_id)
        if order is None:
            raise NotFound(f"no order {order_id}", Reason.UNKNOWN_ORDER)
        now = datetime.now(UTC)
        tickets = _shown(await store.tickets_of_order(conn, order_id), now)
        return OrderView(order, tickets, await store.payments_of(conn, order_id))

    async def quick_sell(self, seller: Principal, request_id: str, product_id: str, quantity: int,
                         method: str) -> OrderView:
        """S20: N tickets of one product for today at today's price, paid in one go."""
        rules.check_quantity(quantity)
        async with self.db.connection() as conn:
            if not method:
                method = str(await settings_store.get_parameter(conn, "sales.default_payment_method") or "cash")
                method = method.lower()
            product = await product_or_refuse(conn, product_id)
            park = await catalog_store.get_park(conn, product.park_id)
            assert park is not None
            today = rules.local_today(ZoneInfo(park.time_zone), datetime.now(UTC))
            quote = await price_on(conn, product, today)
        if product.rules.get("card_bound"):
            raise InvalidArgument(f"product {product_id!r} is sold onto IC cards: use a full sale with card UIDs")
        order = OrderIn(
            request_id=request_id, kind="quick_sale",
            lines=(LineIn(product_id, quantity, today),),
            payments=(rules.PaymentIn(method, quote.total(quantity)),),
        )
        return await self.create_order(seller, order)

    async def get_order(self, order_id: str = "", request_id: str = "") -> OrderView:
        async with self.db.connection() as conn:
            if request_id:
                row = await store.order_by_request(conn, request_id)
                if row is None:
                    raise NotFound(f"no order with request id {request_id!r}", Reason.UNKNOWN_ORDER)
                order_id = row.id
            if not order_id:
                raise InvalidArgument("name an order id or a request id")
            return await self._load_order(conn, _uuid(order_id, Reason.UNKNOWN_ORDER))

    async def find_tickets(self, *, code: str = "", serial: int = 0, card_uid: str = "", order_id: str = "",
                           ticket_id: str = "", limit: int = 0, after: str = "") -> list[TicketView]:
        if not (code or serial or card_uid or order_id or ticket_id):
            raise InvalidArgument("look tickets up by code, serial, card UID, order id or ticket id")
        card = rules.normalize_card_uid(card_uid) if card_uid else ""
        async with self.db.connection() as conn:
            rows = await store.find_tickets(
                conn, code=code.strip(), serial=serial, card_uid=card,
                order_id=_uuid(order_id, Reason.UNKNOWN_ORDER) if order_id else "",
                ticket_id=_uuid(ticket_id, Reason.UNKNOWN_TICKET) if ticket_id else "",
                limit=_page_limit(limit), after_serial=int(after) if after.isdigit() else 0,
            )
        return _shown(rows, datetime.now(UTC))

    # --- refunds (S18) -------------------------------------------------------------------

    async def list_refund_reasons(self) -> list[RefundReason]:
        async with self.db.connection() as conn:
            return await store.list_refund_reasons(conn)

    async def put_refund_reason(self, reason: RefundReason) -> RefundReason:
        check_slug("refund reason", reason.id)
        if not reason.label:
            raise InvalidArgument("a refund reason needs a label")
        rules.refund_amount(0, reason.refund_percent)  # validates the percentage
        async with self.db.transaction() as conn:
            return await store.put_refund_reason(conn, reason)

    async def refund(self, operator: Principal, request: RefundIn) -> Refund:
        _check_request_id(request.request_id)
        if not request.order_id and not request.ticket_ids:
            raise InvalidArgument("refund an order (order id) or single tickets (ticket ids)")
        fingerprint = request.fingerprint()
        result = await self.db.run(lambda conn: self._refund(conn, operator, request, fingerprint), what="refund")
        log.info("refund %s of order %s: %d tickets, %d + deposit %d, reason %s, by %s", result.id,
                 result.order_id, len(result.ticket_ids), result.amount, result.deposit_refunded,
                 result.reason_id, operator.username)
        return result

    async def _refund(self, conn: Connection, operator: Principal, request: RefundIn,
                      fingerprint: bytes) -> Refund:
        existing = await store.refund_by_request(conn, request.request_id)
        if existing is not None:
            return _replayed_refund(existing, fingerprint)
        reason = await store.get_refund_reason(conn, request.reason_id)
        if reason is None or reason.disabled:
            raise NotFound(f"no refund reason {request.reason_id!r}", Reason.UNKNOWN_REFUND_REASON)
        tickets = await self._tickets_to_refund(conn, request)
        order_id = tickets[0].order_id
        order = await store.get_order(conn, order_id)
        assert order is not None
        lines: list[RefundLine] = []
        for t in tickets:
            if t.entries_used > 0 and not operator.may("sales.refund_used"):
                raise Conflict(f"ticket {t.serial} was used already; refunding it needs sales.refund_used",
                               Reason.TICKET_USED_NO_REFUND, serial=str(t.serial))
            lines.append(RefundLine(ticket_id=t.id, amount=rules.refund_amount(t.price, reason.refund_percent),
                                    deposit=t.deposit if request.refund_deposit else 0))
        amount = sum(line.amount for line in lines)
        deposit = sum(line.deposit for line in lines)
        if request.expected_amount > amount:
            raise Conflict(f"asked to pay out {request.expected_amount}, reason {reason.id!r} "
                           f"({reason.refund_percent} %) allows {amount}", Reason.REFUND_EXCEEDS_PAID)
        already = await store.refunded_so_far(conn, order_id)
        if already + amount + deposit > order.total:
            raise Conflict(f"the order was paid {order.total}; {already} is refunded already, "
                           f"{amount + deposit} more is too much", Reason.REFUND_EXCEEDS_PAID)
        refund_id = await store.insert_refund(conn, NewRefund(
            request_id=request.request_id, request_hash=fingerprint, order_id=order_id,
            reason_id=reason.id, amount=amount, deposit_refunded=deposit, note=request.note,
            operator_id=operator.user_id, operator=operator.username,
            window_device_id=operator.device_id,
        ), lines)
        if refund_id is not None:
            ids = [t.id for t in tickets]
            await store.mark_refunded(conn, ids)
            await keys_store.notify_keys_changed(conn)  # the gates hear the serials with the revoked codes
            if request.refund_deposit:
                await store.release_cards(conn, ids)
        result = await store.refund_by_request(conn, request.request_id)
        assert result is not None
        return _replayed_refund(result, fingerprint) if refund_id is None else result

    async def _tickets_to_refund(self, conn: Connection, request: RefundIn) -> list[Ticket]:
        if request.ticket_ids:
            ids = [_uuid(t, Reason.UNKNOWN_TICKET) for t in request.ticket_ids]
            tickets = await store.tickets_by_id(conn, ids, for_update=True)
            missing = set(ids) - {t.id for t in tickets}
            if missing:
                raise NotFound(f"no tickets {', '.join(sorted(missing))}", Reason.UNKNOWN_TICKET)
            if len({t.order_id for t in tickets}) > 1 or (
                request.order_id and tickets[0].order_id != request.order_id
            ):
                raise InvalidArgument("one refund covers tickets of one order")
            refunded = [t for t in tickets if t.state == "refunded"]
            if refunded:
                raise Conflict(f"ticket {refunded[0].serial} is refunded already", Reason.ALREADY_REFUNDED)
        else:
            order_id = _uuid(request.order_id, Reason.UNKNOWN_ORDER)
            if await store.get_order(conn, order_id) is None:
                raise NotFound(f"no order {order_id}", Reason.UNKNOWN_ORDER)
            tickets = [t for t in await store.tickets_of_order(conn, order_id, for_update=True)
                       if t.state != "refunded"]
            if not tickets:
                raise Conflict(f"every ticket of order {order_id} is refunded already", Reason.ALREADY_REFUNDED)
        voided = [t for t in tickets if t.state == "voided"]
        if voided:
            raise Conflict(f"ticket {voided[0].serial} is voided", Reason.VOIDED)
        return tickets

    async def list_refunds(self, *, start: datetime | None, end: datetime | None, operator: str, reason_id: str,
                           limit: int = 0, after: str = "") -> list[Refund]:
        async with self.db.connection() as conn:
            return await store.list_refunds(
                conn, start=start, end=end, operator=operator, reason_id=reason_id, limit=_page_limit(limit),
                after=datetime.fromisoformat(after) if after else None,
            )

    async def shift_totals(self, operator: Principal) -> ShiftTotals:
        async with self.db.connection() as conn:
            return await store.shift_totals(conn, operator.session_id, operator.user_id)


def _replayed_refund(existing: Refund, fingerprint: bytes) -> Refund:
    if bytes(existing.request_hash) != fingerprint:
        raise Conflict(f"request id {existing.request_id!r} was used for a different refund",
                       Reason.IDEMPOTENCY_CONFLICT)
    return existing


def _uuid(text: str, reason: int) -> str:
    try:
        return str(uuid.UUID(text))
    except ValueError:
        raise NotFound(f"{text!r} is not an id this server issued", reason) from None


def _page_limit(limit: int) -> int:
    return DEFAULT_PAGE if limit <= 0 else min(limit, 1000)
