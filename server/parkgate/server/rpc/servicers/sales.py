"""Sales service: orders, quick sale, ticket look-up, refunds and refund reasons.

Vouchers (S17), group reservations (S16), member cards (S15), top-ups (S8)
and back-entry (S19) are declared in the contract and not built yet: the
generated base class answers them UNIMPLEMENTED (reason NOT_IMPLEMENTED).
"""

from __future__ import annotations

import grpc

from parkgate.server.domain.errors import InvalidArgument
from parkgate.server.domain.sales import PaymentIn
from parkgate.server.services.sales import LineIn, OrderIn, RefundIn, SalesService
from parkgate.v1 import sales_pb2, sales_pb2_grpc

from .. import convert
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


class SalesServicer(sales_pb2_grpc.SalesServicer):
    def __init__(self, sales: SalesService) -> None:
        self.sales = sales

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
