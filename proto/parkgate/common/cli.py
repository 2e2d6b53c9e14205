"""The one console command, ``parkgate``: a dispatcher whose subcommands come from the installed packages.

Each distribution registers its subcommands under the entry-point group
``parkgate.commands`` (clients: ``admin``, ``pos``, ``gate``; server: ``up``,
``server``, ``admin init``; ha: ``cluster``). A gate box with only the
clients installed therefore has ``parkgate gate`` and no server commands,
and nothing here imports a package that may be absent. Entry points load in
name order, so a later package may extend an earlier one's group.
"""

from __future__ import annotations

import argparse
import os
import sys
from importlib.metadata import entry_points

from .version import __version__

ENTRY_POINT_GROUP = "parkgate.commands"


def _quiet_grpc() -> None:
    """No grpc fork-handler lines around a command's own output.

    Commands that start daemons (cluster up, drills) fork while grpc threads run; grpc's fork
    support then logs a line per fork. Our children exec at once and need no fork handlers.
    Set before any subcommand imports grpc; an explicit setting in the environment wins.
    """
    os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")
    os.environ.setdefault("GRPC_VERBOSITY", "ERROR")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="parkgate", description="Ticketing and gate access control for parks.")
    parser.add_argument("--version", action="version", version=f"parkgate {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for entry in sorted(entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name):
        entry.load()(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    _quiet_grpc()
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
