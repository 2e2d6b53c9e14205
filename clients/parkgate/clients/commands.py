"""The shape every client command group shares: ``parkgate <group> [--server] [--json] COMMAND ...``."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

SERVER_HELP = ("HOST:PORT of a parkgate server, or a comma list to fail over between "
               "(default $PARKGATE_SERVER or 127.0.0.1:50051)")

Handler = Callable[..., Any]
AddCommand = Callable[[str, Handler, str], argparse.ArgumentParser]


def command_group(subparsers: Any, name: str, help: str, json_help: str = "print JSON") -> AddCommand:
    """Add ``parkgate NAME`` with the common options; returns ``cmd(name, handler, help)`` for its commands."""
    group = subparsers.add_parser(name, help=help)
    group.add_argument("--server", help=SERVER_HELP)
    group.add_argument("--json", action="store_true", help=json_help)
    sub = group.add_subparsers(dest=f"{name}_command", required=True, metavar="COMMAND")
    group.commands = sub  # type: ignore[attr-defined]  # another package may add to the group (`admin init`)

    def cmd(command: str, handler: Handler, help: str) -> argparse.ArgumentParser:
        parser = sub.add_parser(command, help=help)
        parser.set_defaults(handler=handler)
        return parser

    return cmd
