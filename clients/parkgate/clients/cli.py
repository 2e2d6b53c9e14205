"""The client subcommands of ``parkgate``: ``admin``, ``pos``, ``gate``, ``device`` and ``report`` (entry point
``parkgate.commands``)."""

from __future__ import annotations

import argparse
from typing import Any


def _admin(args: argparse.Namespace) -> int:
    from . import admin_cli

    return admin_cli.run(args)


def _pos(args: argparse.Namespace) -> int:
    from .pos import cli as pos_cli

    return pos_cli.run(args)


def _report(args: argparse.Namespace) -> int:
    from .reports import cli as report_cli

    return report_cli.run_report(args)


def register(sub: Any) -> None:
    from . import admin_cli, power_cli
    from .gate import cli as gate_cli
    from .pos import cli as pos_cli
    from .reports import cli as report_cli

    admin_cli.add_parser(sub)
    sub.choices["admin"].set_defaults(func=_admin)
    pos_cli.add_parser(sub)
    sub.choices["pos"].set_defaults(func=_pos)
    gate_cli.add_parser(sub)
    from . import enroll

    enroll.add_parser(sub)
    from .monitor import cli as monitor_cli

    monitor_cli.add_parser(sub)
    report_cli.add_parser(sub)
    sub.choices["report"].set_defaults(func=_report)
    power_cli.add_parser(sub)
