"""``parkgate power watch`` and ``parkgate power drill``: a database machine's UPS, and the drill that proves it.

Added to the ``power`` group of the clients (``status``, ``cluster``) when they
are installed, else a ``power`` group of its own. Lines for people on stderr as
things happen; the report on stdout (JSON with ``--json``).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson

from .spec import default_cluster_dir


def _say(text: str) -> None:
    print(f"parkgate power: {text}", file=sys.stderr, flush=True)


def _data_dir(args: argparse.Namespace) -> Path:
    return Path(args.data_dir).absolute() if args.data_dir else default_cluster_dir()


def cmd_watch(args: argparse.Namespace) -> int:
    from .power import NodePower, settings_from

    _quiet_watcher()
    settings = settings_from(args.nut, args.q1, poll_seconds=args.poll, settle_seconds=args.settle,
                             low_charge_percent=args.low_charge)
    node = NodePower(_data_dir(args), args.node, settings, say=_say, timeout=args.timeout)
    try:
        asyncio.run(node.run())
    except KeyboardInterrupt:
        pass
    return 0


def cmd_drill(args: argparse.Namespace) -> int:
    from .power_drill import PowerDrill, ok, render

    _quiet_watcher()
    drill = PowerDrill(_data_dir(args), clients=args.clients, gates=args.gates, settle=args.settle,
                       timeout=args.timeout, behind_edge=args.behind_edge, say=_say)
    rep = asyncio.run(drill.run())
    as_json = getattr(args, "json", False) or args.drill_json
    print(orjson.dumps(rep, option=orjson.OPT_INDENT_2).decode() if as_json else render(rep))
    return 0 if ok(rep) else 1


def _quiet_watcher() -> None:
    """The watcher's steps are said once, by ``say``; the loggers under it keep only what went wrong."""
    import logging

    logging.getLogger("parkgate.power").setLevel(logging.ERROR)
    logging.getLogger("parkgate.server.discovery").setLevel(logging.WARNING)  # each lease refresh


def add_commands(sub: Any, guarded: Callable[[Callable[[argparse.Namespace], int]], Any]) -> None:
    """Add ``watch`` and ``drill`` to ``parkgate power`` (made here if the clients did not make it).

    ``guarded`` wraps a command like the cluster commands: logging set up, known errors as one line.
    """
    group = sub.choices.get("power")
    if group is None:
        group = sub.add_parser("power", help="UPS power of the database machines (S30)")
        group.add_argument("--json", action="store_true", help="print JSON")
        group.commands = group.add_subparsers(dest="power_command", required=True, metavar="COMMAND")
        group.set_defaults(func=lambda a: a.handler(a))
    commands = group.commands

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("--data-dir", help=f"the cluster's folder (default {default_cluster_dir()})")
        p.add_argument("--timeout", type=float, default=120.0, help="seconds to wait for each step (default 120)")
        p.add_argument("--settle", type=float, default=3.0,
                       help="seconds the mains must stay good before the node starts again (default 3)")

    watch = commands.add_parser("watch", help="watch this machine's UPS: on low battery hand over and stop the "
                                "Patroni node cleanly; start it again when the mains are back")
    common(watch)
    watch.add_argument("--node", required=True, help="the Patroni node on this machine (e.g. pg1)")
    watch.add_argument("--nut", help="UPS@HOST:PORT in upsd (Network UPS Tools)")
    watch.add_argument("--q1", help="serial device of a Megatec/Q1 UPS")
    watch.add_argument("--poll", type=float, default=2.0, help="seconds between readings (default 2)")
    watch.add_argument("--low-charge", type=int, default=-1, help="treat this charge (%%) as low battery")
    watch.set_defaults(handler=guarded(cmd_watch))

    drill = commands.add_parser("drill", help="the leader's machine goes OL -> OB -> OB LB -> OL under gate and "
                                "sales load; report switchover, stop time, losses, gate waits, rejoin")
    common(drill)
    drill.add_argument("--clients", type=int, default=4, help="selling windows (default 4)")
    drill.add_argument("--gates", type=int, default=4, help="turnstiles (default 4)")
    drill.add_argument("--behind-edge", action="store_true",
                       help="the turnstiles stand behind a real site edge (parkgate site run), not at the servers")
    drill.add_argument("--json", dest="drill_json", action="store_true", help="print the report as JSON")
    drill.set_defaults(handler=guarded(cmd_drill))
