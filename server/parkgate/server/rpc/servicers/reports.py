"""Reports service: sales, entries and refunds reports (S28); the LiveFlow stream (S26) comes from
:class:`~.live_flow.LiveFlowServicer`, since gRPC takes one servicer per service."""

from __future__ import annotations

from datetime import date

import grpc

from parkgate.server.domain.errors import InvalidArgument
from parkgate.server.domain.reports import Line, PeriodKind, Report, ReportKind
from parkgate.server.services.flow import LiveFlowService
from parkgate.server.services.reports import ReportService
from parkgate.v1 import common_pb2, reports_pb2

from .. import convert
from .live_flow import LiveFlowServicer

Ctx = grpc.aio.ServicerContext

_PERIODS: dict[int, PeriodKind] = {reports_pb2.DAY: "day", reports_pb2.WEEK: "week", reports_pb2.MONTH: "month",
                                   reports_pb2.QUARTER: "quarter", reports_pb2.YEAR: "year"}
GROUP_BY: dict[int, str] = {
    reports_pb2.BY_PRODUCT: "product", reports_pb2.BY_WINDOW: "window", reports_pb2.BY_GATE: "gate",
    reports_pb2.BY_PAYMENT_METHOD: "payment", reports_pb2.BY_OPERATOR: "operator", reports_pb2.BY_HOUR: "hour",
    reports_pb2.BY_PARK: "park", reports_pb2.BY_SITE: "site", reports_pb2.BY_DAY: "day",
    reports_pb2.BY_REASON: "reason", reports_pb2.BY_DIRECTION: "direction",
}
_GROUP_BY_NUMBER = {name: number for number, name in GROUP_BY.items()}


def _money(amount: int, currency: str) -> common_pb2.Money:
    return common_pb2.Money(minor_units=amount, currency=currency)


def _row(line: Line, currency: str) -> reports_pb2.ReportRow:
    return reports_pb2.ReportRow(
        key=line.key, count=line.count, amount=_money(line.amount, currency), label=line.label or "",
        orders=line.orders, deposits=_money(line.deposits, currency), persons=line.persons, exits=line.exits,
        refused=line.refused, refunded=_money(line.refunded, currency),
        deposits_returned=_money(line.deposits_returned, currency), tickets=line.tickets,
    )


def _pb_date(d: date) -> common_pb2.Date:
    return common_pb2.Date(year=d.year, month=d.month, day=d.day)


def report_message(report: Report, legacy: str) -> reports_pb2.ReportResponse:
    c = report.currency
    out = reports_pb2.ReportResponse(
        range=common_pb2.TimeRange(start=convert.ts(report.period.start), end=convert.ts(report.period.end)),
        total_count=report.total.count, total_amount=_money(report.total.amount, c), total=_row(report.total, c),
        time_zone=report.period.zone, first_day=_pb_date(report.period.first_day),
        last_day=_pb_date(report.period.last_day), source=report.source,
    )
    for dimension, lines in report.breakdowns:
        rows = [_row(line, c) for line in lines]
        out.breakdowns.append(reports_pb2.Breakdown(by=_GROUP_BY_NUMBER[dimension], rows=rows))  # type: ignore[arg-type]
        if dimension == legacy:
            out.rows.extend(rows)
    return out


class ReportsServicer(LiveFlowServicer):
    def __init__(self, reports: ReportService, live_flow: LiveFlowService) -> None:
        super().__init__(live_flow)
        self.reports = reports

    async def _answer(self, kind: ReportKind, request: reports_pb2.ReportRequest) -> reports_pb2.ReportResponse:
        until = convert.date_from(request.until, "until")
        period = _PERIODS.get(request.period)
        if request.period and period is None:
            raise InvalidArgument(f"unknown period {request.period}")
        wanted = [GROUP_BY.get(b, str(b)) for b in request.breakdowns]
        legacy = GROUP_BY.get(request.group_by, "") if request.group_by else ""
        if legacy and legacy not in wanted:
            wanted.append(legacy)
        report = await self.reports.report(kind, park_id=request.park_id, period=period,
                                           day=convert.date_from(request.date, "date"), until=until, by=wanted)
        return report_message(report, legacy)

    async def SalesReport(self, request: reports_pb2.ReportRequest, context: Ctx) -> reports_pb2.ReportResponse:
        return await self._answer("sales", request)

    async def EntriesReport(self, request: reports_pb2.ReportRequest, context: Ctx) -> reports_pb2.ReportResponse:
        return await self._answer("entries", request)

    async def RefundsReport(self, request: reports_pb2.ReportRequest, context: Ctx) -> reports_pb2.ReportResponse:
        return await self._answer("refunds", request)
