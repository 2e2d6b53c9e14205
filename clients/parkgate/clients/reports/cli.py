"""``parkgate report sales|entries|refunds``: ask the server for a report, print it, export it, chart it.

    parkgate report sales --period month --by product,payment --park waterpark --xlsx march.xlsx
    parkgate report entries --period 2027-05-01..2027-05-07 --by gate,hour --chart week.svg
    parkgate report refunds --period quarter --by reason --csv refunds.csv

Uses the session of ``parkgate admin login`` (or ``$PARKGATE_TOKEN``); the
operator needs the permission reports.read.
"""

from __future__ import annotations

import argparse
import sys
from datetime import date
from pathlib import Path
from typing import Any

import grpc
import orjson
from google.protobuf.json_format import MessageToDict

from parkgate.v1 import common_pb2, reports_pb2, reports_pb2_grpc

from .. import connection
from ..commands import command_group
from .model import DIMENSIONS, Kind, from_message

#: The breakdown each report's first chart is drawn from (charts.CHARTS; not imported here: matplotlib is
#: loaded only by a command that draws, so `parkgate --help` stays instant).
CHART_NEEDS: dict[str, str] = {"sales": "day", "entries": "hour", "refunds": "reason"}

PERIODS = {"day": reports_pb2.DAY, "week": reports_pb2.WEEK, "month": reports_pb2.MONTH,
           "quarter": reports_pb2.QUARTER, "year": reports_pb2.YEAR}
BY_DEFAULT: dict[str, str] = {"sales": "product,payment", "entries": "gate,hour", "refunds": "reason"}


def _pb_date(text: str, what: str) -> common_pb2.Date:
    try:
        d = date.fromisoformat(text)
    except ValueError:
        raise SystemExit(f"error: {what} {text!r}: expected YYYY-MM-DD") from None
    return common_pb2.Date(year=d.year, month=d.month, day=d.day)


def build_request(a: argparse.Namespace, kind: str) -> reports_pb2.ReportRequest:
    request = reports_pb2.ReportRequest(park_id=a.park or "")
    if ".." in a.period:
        first, _, last = a.period.partition("..")
        request.date.CopyFrom(_pb_date(first, "FROM"))
        request.until.CopyFrom(_pb_date(last, "UNTIL"))
    elif a.period in PERIODS:
        request.period = PERIODS[a.period]  # type: ignore[assignment]
        if a.date:
            request.date.CopyFrom(_pb_date(a.date, "--date"))
    else:
        raise SystemExit(f"error: --period {a.period!r}: day, week, month, quarter, year or FROM..UNTIL")
    names = [n.strip() for n in (a.by or BY_DEFAULT[kind]).split(",") if n.strip()]
    if a.chart:
        names += [CHART_NEEDS[kind]] if CHART_NEEDS[kind] not in names else []
    for name in names:
        if name not in DIMENSIONS:
            raise SystemExit(f"error: --by {name!r}: one of {', '.join(DIMENSIONS)}")
        request.breakdowns.append(DIMENSIONS[name])  # type: ignore[arg-type]
    return request


def run_report(args: argparse.Namespace) -> int:
    kind: Kind = args.report_command
    server = connection.server_address(args.server)
    request = build_request(args, kind)
    channel = connection.open_channel(server)
    try:
        stub = reports_pb2_grpc.ReportsStub(channel)
        call = {"sales": stub.SalesReport, "entries": stub.EntriesReport, "refunds": stub.RefundsReport}[kind]
        reply = call(request, metadata=connection.auth_metadata(connection.load_token(server)),
                     timeout=args.timeout)
    except grpc.RpcError as exc:
        print(f"error: {connection.call_error(exc)}", file=sys.stderr)
        return 2
    finally:
        channel.close()
    if args.json:
        print(orjson.dumps(MessageToDict(reply, preserving_proto_field_name=True),
                           option=orjson.OPT_INDENT_2).decode())
    from . import charts, output  # matplotlib and openpyxl: only for a command that reports

    report = from_message(kind, args.park or "", reply)
    if not args.json:
        output.print_report(report)
    if args.csv:
        output.write_csv(report, Path(args.csv))
        print(f"wrote {args.csv}", file=sys.stderr)
    if args.xlsx:
        output.write_xlsx(report, Path(args.xlsx))
        print(f"wrote {args.xlsx}", file=sys.stderr)
    for path in args.chart or ():
        titles = charts.draw(report, Path(path))
        print(f"wrote {path} ({', '.join(titles)})", file=sys.stderr)
    return 0


def add_parser(subparsers: Any) -> None:
    cmd = command_group(subparsers, "report", "sales, entries and refunds reports: tables, CSV, XLSX, charts",
                        "print the server's answer as JSON")
    for kind, text in (("sales", "tickets sold, takings, deposits, payments"),
                       ("entries", "admissions, people in and out, refusals at the gates"),
                       ("refunds", "refunds by reason, deposits returned")):
        sp = cmd(kind, run_report, text)
        sp.add_argument("--period", default="day",
                        help="day, week, month, quarter, year (around --date), or FROM..UNTIL (YYYY-MM-DD, both "
                             "days included); days are the park's own")
        sp.add_argument("--date", help="a day inside the period (default: today in the park)")
        sp.add_argument("--by", help=f"comma list of breakdowns: {', '.join(DIMENSIONS)} "
                                     f"(default {BY_DEFAULT[kind]})")
        sp.add_argument("--park", help="one park (default: every park, when they share a zone and currency)")
        sp.add_argument("--csv", metavar="FILE", help="also write the report as CSV")
        sp.add_argument("--xlsx", metavar="FILE", help="also write an Excel workbook (one sheet per breakdown)")
        sp.add_argument("--chart", metavar="FILE", action="append",
                        help="draw the report's charts to FILE.png or FILE.svg (repeatable)")
        sp.add_argument("--timeout", type=float, default=60.0, help="seconds to wait for the report")
