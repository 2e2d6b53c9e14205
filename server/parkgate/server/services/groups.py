"""Groups (S16) and back-entry (S19): sales that are not one window's walk-up sale.

A group is reserved ahead (date, product mix, head count, agreed unit
prices, a deposit paid as an order of its own), changed, marked a no-show or
cancelled, and picked up at a window: as one ticket per person printed in
one go, or as one group code admitting the head count at the gate (a
ticket for N persons: the decision engine opens N times). What is left to
pay after the deposit is paid at pick-up, on the agency's account unless
the window names other payments.

A back-entry is a sale (and the entries) made by hand during an outage,
entered afterwards with its original time: an order of kind back_entry,
dated when it was sold, its tickets marked back-entered; hand-checked
entries become the gate's own decisions under (device, request id), so an
entry the gate forwards from its offline journal under the same key is one
entry, never two.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import asdict, dataclass
from datetime import UTC, date, datetime
from zoneinfo import ZoneInfo

from parkgate.server.domain import catalogue as rules
from parkgate.server.domain.errors import InvalidArgument, NotFound, Reason
from parkgate.server.domain.operators import Principal
from parkgate.server.domain.sales import PaymentIn, check_visit_date, fingerprint, local_today
from parkgate.server.store import Database
from parkgate.server.store import catalog as catalog_store
from parkgate.server.store import groups as store
from parkgate.server.store import sales as sales_store
from parkgate.server.store.database import Connection
from parkgate.server.store.rows.catalogue import BackEntryRow, GroupRow

from .catalog import price_on, product_or_refuse
from .sales import LineIn, OrderIn, OrderView, SalesService

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class GroupIn:
    request_id: str
    company: str
    visit_date: date | None
    head_count: int
    product_id: str = ""
    unit_price: int | None = None          # agreed price for product_id; None = the catalogue's on the day
    lines: tuple[rules.GroupLineIn, ...] = ()
    contact: str = ""
    deposit: int = 0
    deposit_payments: tuple[PaymentIn, ...] = ()


def _lines(row: GroupRow) -> list[rules.GroupLineIn]:
    return [rules.GroupLineIn(x["product_id"], int(x["quantity"]), int(x["unit_price"])) for x in row.lines]


class GroupService:
    def __init__(self, db: Database, sales: SalesService) -> None:
        self.db = db
        self.sales = sales

    async def reserve(self, operator: Principal, group: GroupIn) -> GroupRow:
        if not group.company.strip():
            raise InvalidArgument("a group reservation names the company or travel agency")
        if group.deposit < 0:
            raise InvalidArgument("a deposit cannot be negative", Reason.INVALID_AMOUNT)
        digest = fingerprint({k: v for k, v in asdict(group).items() if k != "request_id"} | {"visit_date": str(
            group.visit_date)})

        async def work(conn: Connection) -> GroupRow:
            existing = await store.group_by_request(conn, group.request_id)
            if existing is not None:
                return existing
            wanted = group.lines or ((rules.GroupLineIn(group.product_id, group.head_count, -1),)
                                     if group.product_id else ())
            if not wanted:
                raise InvalidArgument("a reservation names its product (or a product mix)", Reason.UNKNOWN_PRODUCT)
            priced: list[rules.GroupLineIn] = []
            park = None
            for line in wanted:
                product = await product_or_refuse(conn, line.product_id)
                park = park or await catalog_store.get_park(conn, product.park_id)
                assert park is not None
                if product.park_id != park.id:
                    raise InvalidArgument("one reservation is for one park")
                today = local_today(ZoneInfo(park.time_zone), datetime.now(UTC))
                visit = group.visit_date or today
                check_visit_date(visit, today)
                price = line.unit_price if line.unit_price >= 0 else (
                    group.unit_price if group.unit_price is not None and len(wanted) == 1
                    else (await price_on(conn, product, visit)).unit_price)
                priced.append(rules.GroupLineIn(line.product_id, line.quantity, price))
            assert park is not None
            lines = rules.group_lines(priced, group.head_count)
            deposit_order = None
            if group.deposit:
                deposit_order, _ = await self.sales.money_order(
                    conn, operator, request_id=f"{group.request_id}:deposit", kind="group_deposit",
                    currency=park.currency, total=group.deposit, payments=group.deposit_payments, fingerprint=digest,
                    customer=group.company.strip())
            await store.insert_group(
                conn, request_id=group.request_id, company=group.company.strip(), contact=group.contact,
                park_id=park.id, visit_date=group.visit_date or today, head_count=group.head_count,
                lines=[asdict(x) for x in lines], deposit=group.deposit, deposit_order=deposit_order,
                operator=operator.username)
            row = await store.group_by_request(conn, group.request_id)
            assert row is not None
            return row

        row = await self.db.run(work, what="group reservation")
        log.info("group %s of %s reserved for %s: %d people", row.id, row.company, row.visit_date, row.head_count)
        return row

    async def find(self, *, visit_date: date | None, company: str, reservation_id: str) -> list[GroupRow]:
        async with self.db.connection() as conn:
            if reservation_id:
                row = await store.get_group(conn, _uuid(reservation_id))
                return [row] if row else []
            return await store.find_groups(conn, visit_date=visit_date, company=company.strip(), limit=500)

    async def change(self, reservation_id: str, *, head_count: int, visit_date: date | None, no_show: bool,
                     cancel: bool) -> GroupRow:
        async with self.db.transaction() as conn:
            row = await self._locked(conn, reservation_id)
            rules.check_pickup(row.state)
            lines = _lines(row)
            if head_count and head_count != row.head_count:
                if head_count < row.head_count:
                    lines = rules.arrived_lines(lines, head_count)
                else:  # more people: the last line of the mix grows
                    last = lines[-1]
                    lines[-1] = rules.GroupLineIn(last.product_id, last.quantity + head_count - row.head_count,
                                                  last.unit_price)
            if visit_date is not None:
                park = await catalog_store.get_park(conn, row.park_id)
                assert park is not None
                check_visit_date(visit_date, local_today(ZoneInfo(park.time_zone), datetime.now(UTC)))
            state = "cancelled" if cancel else "no_show" if no_show else row.state
            await store.update_group(conn, row.id, head_count=head_count or row.head_count,
                                     visit_date=visit_date or row.visit_date, lines=[asdict(x) for x in lines],
                                     state=state)
            after = await store.get_group(conn, row.id)
        assert after is not None
        return after

    async def pick_up(self, seller: Principal, request_id: str, reservation_id: str, payments: tuple[PaymentIn, ...],
                      *, one_code: bool, head_count: int) -> OrderView:
        """The group's tickets (or its one code), its remaining amount paid, in one transaction."""
        async def work(conn: Connection) -> OrderView:
            existing = await sales_store.order_by_request(conn, request_id)
            row = await self._locked(conn, reservation_id)
            if existing is None:
                rules.check_pickup(row.state)
            arrived = head_count or row.head_count
            lines = rules.arrived_lines(_lines(row), arrived)
            if one_code:
                if len(lines) > 1:
                    raise InvalidArgument("one group code covers one product: pick a mix up as tickets")
                order_lines = (LineIn(lines[0].product_id, 1, row.visit_date, unit_price=lines[0].unit_price * arrived,
                                      persons=arrived),)
            else:
                order_lines = tuple(LineIn(x.product_id, x.quantity, row.visit_date, unit_price=x.unit_price)
                                    for x in lines)
            view = await self.sales.sell_in(conn, seller, OrderIn(
                request_id=request_id, lines=order_lines, payments=payments, customer=row.company,
                kind="group_pickup", credit=row.deposit, pay_default=True))
            if existing is None:
                await store.update_group(conn, row.id, head_count=row.head_count, visit_date=row.visit_date,
                                         lines=row.lines, state="picked_up", order_id=view.order.id, arrived=arrived)
            return view

        view = await self.db.run(work, what="group pick-up")
        log.info("group %s picked up: %d ticket(s), order %s", reservation_id, len(view.tickets), view.order.id)
        return view

    async def _locked(self, conn: Connection, reservation_id: str) -> GroupRow:
        row = await store.get_group(conn, _uuid(reservation_id), for_update=True)
        if row is None:
            raise NotFound(f"no group reservation {reservation_id}", Reason.UNKNOWN_GROUP)
        return row

    # --- back-entry (S19) ------------------------------------------------------------------------

    async def back_enter(self, operator: Principal, *, request_id: str, product_id: str, sold_at: datetime,
                         quantity: int, method: str, customer: str, note: str, entries: int, device_id: str,
                         entry_request_ids: tuple[str, ...]) -> BackEntryRow:
        now = datetime.now(UTC)
        named = rules.check_back_entry(sold_at=sold_at, now=now, quantity=quantity, note=note, entries=entries,
                                       request_ids=entry_request_ids)

        async def work(conn: Connection) -> BackEntryRow:
            existing = await sales_store.order_by_request(conn, request_id)
            product = await product_or_refuse(conn, product_id)
            park = await catalog_store.get_park(conn, product.park_id)
            assert park is not None
            visit = sold_at.astimezone(ZoneInfo(park.time_zone)).date()
            view = await self.sales.sell_in(conn, operator, OrderIn(
                request_id=request_id, kind="back_entry", customer=customer, pay_default=True,
                default_method=method, lines=(LineIn(product_id, quantity, visit, past=True),)))
            if existing is None:
                await store.backdate_order(conn, view.order.id, sold_at)
                gate = device_id or view.order.window_device_id
                keys = named or [f"{request_id}#{i + 1}" for i in range(entries)]
                tickets = [t.ticket.id for t in view.tickets]
                recorded = await store.record_hand_entries(
                    conn, device_id=gate, request_ids=keys, at=sold_at, park_id=park.id,
                    ticket_ids=[tickets[i] if i < len(tickets) else None for i in range(len(keys))])
                await store.insert_back_entry(
                    conn, order_id=view.order.id, product_id=product_id, sold_at=sold_at, quantity=quantity,
                    method=method or "cash", customer=customer, note=note.strip(), entries_by_hand=entries,
                    entries_recorded=recorded, device_id=gate, operator=operator.username)
            row = await store.back_entry_of_order(conn, view.order.id)
            assert row is not None
            return row

        row = await self.db.run(work, what="back-entry")
        log.info("back-entry %s by %s: %d x %s sold %s, %d of %d hand-checked entries new (%s)", row.id,
                 operator.username, quantity, product_id, sold_at.isoformat(), row.entries_recorded, entries, note)
        return row

    async def list_back_entries(self, *, start: datetime | None, end: datetime | None) -> list[BackEntryRow]:
        async with self.db.connection() as conn:
            return await store.list_back_entries(conn, start=start, end=end, limit=1000)


def _uuid(text: str) -> str:
    try:
        return str(uuid.UUID(text))
    except ValueError:
        raise NotFound(f"{text!r} is not a reservation id this server issued", Reason.UNKNOWN_GROUP) from None
