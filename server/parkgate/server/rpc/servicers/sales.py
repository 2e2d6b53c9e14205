"""Sales service: orders, quick sale, ticket look-up, refunds and refund reasons; and the rest of the
catalogue: vouchers (S12, S17), groups (S16), member cards (S15), stored value (S8) and back-entry (S19).

Thin: each call converts its request, calls one use case and converts the answer.
Personal data of members (ID document, photo) goes only to callers holding
``members.personal``.
"""

from __future__ import annotations

import grpc

from parkgate.server.domain.catalogue import GroupLineIn
from parkgate.server.domain.errors import InvalidArgument
from parkgate.server.domain.sales import PaymentIn
from parkgate.server.services.groups import GroupIn, GroupService
from parkgate.server.services.members import MemberIn, MemberService
from parkgate.server.services.sales import LineIn, OrderIn, RefundIn, SalesService
from parkgate.server.services.vouchers import VoucherService
from parkgate.v1 import sales_pb2, sales_pb2_grpc

from .. import convert
from .. import convert_catalogue as cc
from ..call import principal

Ctx = grpc.aio.ServicerContext


def _payments(messages: list[sales_pb2.Payment]) -> tuple[PaymentIn, ...]:
    out = []
    for p in messages:
        method = convert.payment_method_name(p.method)
        if not method:
            raise InvalidArgument("each payment names its method (CASH, BANK_CARD, MOBILE, VOUCHER, ON_ACCOUNT, ...)")
        out.append(PaymentIn(method, p.amount.minor_units, p.reference))
    return tuple(out)


PERSONAL = cc.PERSONAL


def _member_in(m: sales_pb2.Member, photo: bytes) -> MemberIn:
    return MemberIn(name=m.name, id_document=m.id_document, phone=m.phone, card_uid=m.card_uid, photo=photo)


class SalesServicer(sales_pb2_grpc.SalesServicer):
    def __init__(self, sales: SalesService, members: MemberService, groups: GroupService,
                 vouchers: VoucherService) -> None:
        self.sales = sales
        self.members = members
        self.groups = groups
        self.vouchers = vouchers

    async def CreateOrder(self, request: sales_pb2.CreateOrderRequest, context: Ctx) -> sales_pb2.Order:
        lines = tuple(
            LineIn(line.product_id, line.quantity, convert.date_from(line.visit_date, "visit date"),
                   tuple(line.card_uids))
            for line in request.lines
        )
        order = OrderIn(request.request_id, lines, _payments(list(request.payments)), request.customer)
        return convert.order(await self.sales.create_order(principal(), order))

    async def QuickSell(self, request: sales_pb2.QuickSellRequest, context: Ctx) -> sales_pb2.Order:
        row = await self.sales.quick_sell(principal(), request.request_id, request.product_id, request.quantity,
                                          convert.payment_method_name(request.method))
        return convert.order(row)

    async def GetOrder(self, request: sales_pb2.GetOrderRequest, context: Ctx) -> sales_pb2.Order:
        return convert.order(await self.sales.get_order(request.order_id, request.request_id))

    async def FindTickets(self, request: sales_pb2.FindTicketsRequest, context: Ctx) -> sales_pb2.FindTicketsResponse:
        rows = await self.sales.find_tickets(
            code=request.code, serial=request.serial, card_uid=request.card_uid, order_id=request.order_id,
            ticket_id=request.ticket_id, limit=request.page.limit, after=request.page.after,
        )
        return sales_pb2.FindTicketsResponse(tickets=[convert.ticket(r) for r in rows])

    async def Refund(self, request: sales_pb2.RefundRequest, context: Ctx) -> sales_pb2.RefundRecord:
        row = await self.sales.refund(principal(), RefundIn(
            request_id=request.request_id, reason_id=request.reason_id, order_id=request.order_id,
            ticket_ids=tuple(request.ticket_ids), note=request.note, refund_deposit=request.refund_deposit,
            expected_amount=request.expected_amount.minor_units,
        ))
        return convert.refund(row)

    async def ListRefunds(self, request: sales_pb2.ListRefundsRequest, context: Ctx) -> sales_pb2.ListRefundsResponse:
        r = request.range
        rows = await self.sales.list_refunds(
            start=convert.from_ts(r.start, r.HasField("start")), end=convert.from_ts(r.end, r.HasField("end")),
            operator=request.operator, reason_id=request.reason_id, limit=request.page.limit,
            after=request.page.after,
        )
        return sales_pb2.ListRefundsResponse(refunds=[convert.refund(row) for row in rows])

    async def ListRefundReasons(
        self, request: sales_pb2.ListRefundReasonsRequest, context: Ctx
    ) -> sales_pb2.ListRefundReasonsResponse:
        rows = await self.sales.list_refund_reasons()
        return sales_pb2.ListRefundReasonsResponse(reasons=[convert.refund_reason(r) for r in rows])

    async def PutRefundReason(self, request: sales_pb2.RefundReason, context: Ctx) -> sales_pb2.RefundReason:
        row = await self.sales.put_refund_reason(convert.refund_reason_value(request))
        return convert.refund_reason(row)

    async def ShiftTotals(self, request: sales_pb2.ShiftTotalsRequest, context: Ctx) -> sales_pb2.ShiftTotalsResponse:
        return convert.shift_totals(await self.sales.shift_totals(principal()))

    # --- vouchers (S12, S17) ------------------------------------------------------------

    async def _issue(self, request: sales_pb2.IssueVoucherRequest, count: int) -> list:
        v = request.voucher
        return await self.vouchers.issue(
            principal(), request.request_id, product_id=v.product_id, value=v.value.minor_units,
            currency=v.value.currency, valid_from=convert.date_from(v.valid_from, "valid from"),
            valid_until=convert.date_from(v.valid_until, "valid until"), recipient=v.recipient, series=v.series,
            count=count)

    async def IssueVoucher(self, request: sales_pb2.IssueVoucherRequest, context: Ctx) -> sales_pb2.Voucher:
        return cc.voucher((await self._issue(request, 1))[0])

    async def IssueVouchers(self, request: sales_pb2.IssueVoucherRequest, context: Ctx) -> sales_pb2.FindVouchersResponse:
        rows = await self._issue(request, request.count or 1)
        return sales_pb2.FindVouchersResponse(vouchers=[cc.voucher(r) for r in rows])

    async def FindVouchers(self, request: sales_pb2.FindVouchersRequest, context: Ctx) -> sales_pb2.FindVouchersResponse:
        rows = await self.vouchers.find(code=request.code, recipient=request.recipient, series=request.series)
        return sales_pb2.FindVouchersResponse(vouchers=[cc.voucher(r) for r in rows])

    async def ChangeVoucher(self, request: sales_pb2.ChangeVoucherRequest, context: Ctx) -> sales_pb2.Voucher:
        row = await self.vouchers.change(request.code, recipient=request.recipient,
                                         valid_until=convert.date_from(request.valid_until, "valid until"),
                                         cancel=request.cancel)
        return cc.voucher(row)

    # --- groups (S16) ---------------------------------------------------------------------

    async def ReserveGroup(self, request: sales_pb2.ReserveGroupRequest, context: Ctx) -> sales_pb2.GroupReservation:
        r = request.reservation
        row = await self.groups.reserve(principal(), GroupIn(
            request_id=request.request_id, company=r.company, visit_date=convert.date_from(r.visit_date, "visit date"),
            head_count=r.head_count, product_id=r.product_id,
            unit_price=r.unit_price.minor_units if r.HasField("unit_price") else None,
            lines=tuple(GroupLineIn(x.product_id, x.quantity,
                                    x.unit_price.minor_units if x.HasField("unit_price") else -1) for x in r.lines),
            contact=r.contact, deposit=r.deposit.minor_units, deposit_payments=_payments(list(r.deposit_payments))))
        return cc.group(row)

    async def PickUpGroup(self, request: sales_pb2.PickUpGroupRequest, context: Ctx) -> sales_pb2.Order:
        view = await self.groups.pick_up(principal(), request.request_id, request.reservation_id,
                                         _payments(list(request.payments)), one_code=request.one_code,
                                         head_count=request.head_count)
        return convert.order(view)

    async def FindGroups(self, request: sales_pb2.FindGroupsRequest, context: Ctx) -> sales_pb2.FindGroupsResponse:
        rows = await self.groups.find(visit_date=convert.date_from(request.visit_date, "visit date"),
                                      company=request.company, reservation_id=request.reservation_id)
        return sales_pb2.FindGroupsResponse(reservations=[cc.group(r) for r in rows])

    async def ChangeGroup(self, request: sales_pb2.ChangeGroupRequest, context: Ctx) -> sales_pb2.GroupReservation:
        row = await self.groups.change(request.reservation_id, head_count=request.head_count,
                                       visit_date=convert.date_from(request.visit_date, "visit date"),
                                       no_show=request.no_show, cancel=request.cancel)
        return cc.group(row)

    # --- members (S15) ------------------------------------------------------------------------

    async def RegisterMember(self, request: sales_pb2.RegisterMemberRequest, context: Ctx) -> sales_pb2.Member:
        people = [_member_in(request.member, request.photo_jpeg)]
        people += [_member_in(f.member, f.photo_jpeg) for f in request.family]
        rows = await self.members.register(principal(), request.request_id, request.member.product_id, people,
                                           _payments(list(request.payments)))
        personal = principal().may(PERSONAL)
        return cc.member(rows[0], personal=personal)

    async def FindMembers(self, request: sales_pb2.FindMembersRequest, context: Ctx) -> sales_pb2.FindMembersResponse:
        rows = await self.members.find(name=request.name, phone=request.phone, card_uid=request.card_uid)
        personal = principal().may(PERSONAL)
        return sales_pb2.FindMembersResponse(members=[cc.member(r, personal=personal) for r in rows])

    async def ReportCardLost(self, request: sales_pb2.ReportCardLostRequest, context: Ctx) -> sales_pb2.Member:
        row = await self.members.report_lost(principal(), member_id=request.member_id, card_uid=request.card_uid,
                                             note=request.note)
        return cc.member(row, personal=principal().may(PERSONAL))

    async def ReissueCard(self, request: sales_pb2.ReissueCardRequest, context: Ctx) -> sales_pb2.Member:
        row = await self.members.reissue(principal(), request.request_id, request.member_id, request.new_card_uid,
                                         _payments(list(request.payments)))
        return cc.member(row, personal=principal().may(PERSONAL))

    async def RenewMember(self, request: sales_pb2.RenewMemberRequest, context: Ctx) -> sales_pb2.Member:
        row = await self.members.renew(principal(), request.request_id, request.member_id,
                                       _payments(list(request.payments)))
        return cc.member(row, personal=principal().may(PERSONAL))

    async def GetMemberPhoto(self, request: sales_pb2.GetMemberPhotoRequest, context: Ctx) -> sales_pb2.MemberPhoto:
        return sales_pb2.MemberPhoto(member_id=request.member_id, jpeg=await self.members.photo(request.member_id))

    # --- stored value (S8) ----------------------------------------------------------------------

    async def TopUpCard(self, request: sales_pb2.TopUpCardRequest, context: Ctx) -> sales_pb2.CardBalance:
        payment = _payments([request.payment])[0]
        return cc.card_balance(await self.members.top_up(principal(), request.request_id, request.card_uid, payment))

    async def RefundBalance(self, request: sales_pb2.RefundBalanceRequest, context: Ctx) -> sales_pb2.CardBalance:
        view = await self.members.refund_balance(principal(), request.request_id, request.card_uid, request.note)
        return cc.card_balance(view)

    async def CardHistory(self, request: sales_pb2.CardHistoryRequest, context: Ctx) -> sales_pb2.CardHistoryResponse:
        view, events = await self.members.card(request.card_uid)
        return sales_pb2.CardHistoryResponse(balance=cc.card_balance(view),
                                             events=[cc.card_event(e, view.card.currency) for e in events])

    # --- back-entry (S19) -------------------------------------------------------------------------

    async def BackEnter(self, request: sales_pb2.BackEnterRequest, context: Ctx) -> sales_pb2.BackEntry:
        if not request.HasField("sold_at"):
            raise InvalidArgument("a back-entry gives the original sale time (sold_at)")
        sold_at = convert.from_ts(request.sold_at, True)
        assert sold_at is not None
        row = await self.groups.back_enter(
            principal(), request_id=request.request_id, product_id=request.product_id, sold_at=sold_at,
            quantity=request.quantity, method=convert.payment_method_name(request.method), customer=request.customer,
            note=request.note, entries=request.entries_checked_by_hand, device_id=request.device_id,
            entry_request_ids=tuple(request.entry_request_ids))
        return cc.back_entry(row)

    async def ListBackEntries(
        self, request: sales_pb2.ListBackEntriesRequest, context: Ctx
    ) -> sales_pb2.ListBackEntriesResponse:
        r = request.range
        rows = await self.groups.list_back_entries(start=convert.from_ts(r.start, r.HasField("start")),
                                                   end=convert.from_ts(r.end, r.HasField("end")))
        return sales_pb2.ListBackEntriesResponse(entries=[cc.back_entry(x) for x in rows], total=cc.total_of(rows))
