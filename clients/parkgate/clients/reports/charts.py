"""Charts a manager would rather look at than read (S28): matplotlib, PNG or SVG by the file's suffix.

Sales: revenue per day (bars) and the product mix (pie); entries: entries per
hour (line) and per day; refunds: refunds by reason (pie). Each chart is drawn
from the breakdown it needs, which the command asks the server for. SVG keeps
its text as text (``svg.fonttype = none``), so titles stay searchable.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, never a window

import matplotlib.pyplot as plt
from matplotlib.axes import Axes

from .model import Report, Table

#: report -> (breakdown, chart title, the column drawn, style) in drawing order
CHARTS: dict[str, list[tuple[str, str, int, str]]] = {
    "sales": [("day", "Revenue per day", 2, "bar"), ("product", "Product mix", 2, "pie"),
              ("hour", "Sales per hour", 0, "bar")],
    "entries": [("hour", "Entries per hour", 1, "line"), ("day", "Entries per day", 1, "bar"),
                ("gate", "Entries per gate", 0, "bar")],
    "refunds": [("reason", "Refunds by reason", 2, "pie"), ("day", "Refunds per day", 2, "bar")],
}


def _draw(ax: Axes, table: Table, title: str, column: int, style: str, unit: str) -> None:
    keys = [label or key or "(none)" for key, label, _ in table.rows]
    values = [float(v[column]) for _, _, v in table.rows]
    ax.set_title(title)
    if style == "pie":
        shown = [(k, v) for k, v in zip(keys, values, strict=True) if v > 0]
        if shown:
            ax.pie([v for _, v in shown], labels=[k for k, _ in shown], autopct="%1.0f%%", startangle=90)
        else:
            ax.text(0.5, 0.5, "nothing in this period", ha="center", va="center")
        ax.axis("equal")
        return
    if style == "line":
        ax.plot(keys, values, marker="o")
    else:
        ax.bar(keys, values)
    ax.set_ylabel(unit)
    ax.tick_params(axis="x", labelrotation=60 if len(keys) > 8 else 0, labelsize=8)
    ax.grid(axis="y", alpha=0.3)


def draw(report: Report, path: Path) -> list[str]:
    """Draw every chart the report's breakdowns allow into one figure; returns the chart titles drawn."""
    plt.rcParams["svg.fonttype"] = "none"
    charts = [(report.table(dim), title, col, style) for dim, title, col, style in CHARTS[report.kind]
              if report.table(dim) is not None]
    if not charts:
        raise ValueError(f"no breakdown to draw a {report.kind} chart from (--by {CHARTS[report.kind][0][0]})")
    fig, axes = plt.subplots(len(charts), 1, figsize=(10, 4.2 * len(charts)), squeeze=False)
    titles = []
    for ax, (table, title, column, style) in zip(axes[:, 0], charts, strict=True):
        assert table is not None
        unit = table.columns[column] + (f" ({report.currency})" if table.money[column] else "")
        _draw(ax, table, title, column, style, unit)
        titles.append(title)
    fig.suptitle(f"{report.kind.capitalize()}: {report.park}, {report.period} ({report.time_zone})")
    fig.tight_layout()
    fig.savefig(path, format=path.suffix.lstrip(".").lower() or "png", dpi=110)
    plt.close(fig)
    return titles
