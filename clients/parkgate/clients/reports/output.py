"""A report as rich tables on the console, as CSV, and as an XLSX workbook (openpyxl)."""

from __future__ import annotations

import csv
from pathlib import Path

from openpyxl import Workbook
from openpyxl.styles import Font
from rich.console import Console
from rich.table import Table as RichTable

from .model import Report, Table


def _cell(value: float | int, money: bool) -> str:
    return f"{value:,.2f}" if money else f"{value:,}"


def print_report(report: Report, console: Console | None = None) -> None:
    console = console or Console()
    console.print(f"[bold]{report.kind.capitalize()} report[/bold], {report.park}, {report.period} "
                  f"({report.time_zone}; amounts in {report.currency or '-'}; read on the {report.source})")
    for table in (report.total, *report.tables):
        out = RichTable(title=table.title, title_justify="left")
        if table is not report.total:
            out.add_column(table.dimension)
            out.add_column("name")
        for title in table.columns:
            out.add_column(title, justify="right")
        for key, label, values in table.rows:
            cells = [_cell(v, m) for v, m in zip(values, table.money, strict=True)]
            out.add_row(*(cells if table is report.total else [key or "(none)", label, *cells]))
        console.print(out)


def write_csv(report: Report, path: Path) -> None:
    """One file, one line per row of every table: table, key, label, then the measures by name."""
    columns = list(dict.fromkeys(c for t in (report.total, *report.tables) for c in t.columns))
    with path.open("w", newline="", encoding="utf-8") as fh:
        out = csv.writer(fh)
        out.writerow(["report", "period", "table", "key", "label", *columns])
        for table in (report.total, *report.tables):
            for key, label, values in table.rows:
                by_name = dict(zip(table.columns, values, strict=True))
                out.writerow([report.kind, report.period, table.dimension, key, label,
                              *(by_name.get(c, "") for c in columns)])


def _sheet(book: Workbook, table: Table, first: bool) -> None:
    sheet = book.active if first else book.create_sheet()
    assert sheet is not None
    sheet.title = table.dimension[:31]
    sheet.append([table.dimension, "name", *table.columns])
    for cell in sheet[1]:
        cell.font = Font(bold=True)
    for key, label, values in table.rows:
        sheet.append([key, label, *values])
    for col, money in enumerate(table.money, start=3):  # numbers stay numbers: a manager sums them in Excel
        for row in range(2, len(table.rows) + 2):
            sheet.cell(row=row, column=col).number_format = "#,##0.00" if money else "#,##0"
    sheet.freeze_panes = "A2"


def write_xlsx(report: Report, path: Path) -> None:
    """A workbook: a "total" sheet (the period, the zone, every measure) and one sheet per breakdown."""
    book = Workbook()
    _sheet(book, report.total, first=True)
    summary = book.active
    assert summary is not None
    summary.append([])
    for name, value in (("report", report.kind), ("park", report.park), ("period", report.period),
                        ("time zone", report.time_zone), ("currency", report.currency), ("read on", report.source)):
        summary.append([name, value])
    for table in report.tables:
        _sheet(book, table, first=False)
    book.save(path)
