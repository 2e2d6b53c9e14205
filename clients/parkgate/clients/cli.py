"""The client subcommands of ``parkgate``: ``admin``, ``pos`` and ``gate`` (entry point ``parkgate.commands``)."""

from __future__ import annotations

import argparse
from typing import Any


def _admin(args: argparse.Namespace) -> int:
    from . import admin_cli

    return admin_cli.run(args)


def _pos(args: argparse.Namespace) -> int:
    from .pos import cli as pos_cli

    return pos_cli.run(args)


def register(sub: Any) -> None:
    from . import admin_cli, power_cli
    from .gate import cli as gate_cli
    from .pos import cli as pos_cli

    admin_cli.add_parser(sub)
    sub.choices["admin"].set_defaults(func=_admin)
    pos_cli.add_parser(sub)
    sub.choices["pos"].set_defaults(func=_pos)
    gate_cli.add_parser(sub)
    power_cli.add_parser(sub)
