"""`parkgate site run --config site.toml` and `parkgate site check-config site.toml` (entry point parkgate.commands)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from typing import Any


def register(sub: Any) -> None:
    p = sub.add_parser("site", help="the site edge: serves a site's gates and windows, alone when the cluster is away")
    cmds = p.add_subparsers(dest="site_command", required=True, metavar="COMMAND")
    run = cmds.add_parser("run", help="run the site edge until SIGTERM/SIGINT")
    run.add_argument("--config", required=True, help="the site's TOML file (docs/sites.md)")
    run.set_defaults(func=cmd_run)
    check = cmds.add_parser("check-config", help="validate a site's TOML file and print what it configures")
    check.add_argument("config")
    check.set_defaults(func=cmd_check)


def _load(path: str):  # type: ignore[no-untyped-def]
    from .config import SiteConfigError, load_config

    try:
        config = load_config(path)
        config.site.secret()
    except SiteConfigError as exc:
        print(f"parkgate site: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    return config


def cmd_check(args: argparse.Namespace) -> int:
    config = _load(args.config)
    print(config.model_dump_json(indent=2))
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from .app import SiteEdge

    config = _load(args.config)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)-7s %(name)s %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(config.site.log_level.upper())
    from parkgate.common.power import EXIT_POWER_STOP

    edge = SiteEdge(config)
    asyncio.run(edge.run(install_signals=True))
    # S30: a stop for power says so in its exit status; its systemd unit waits for the mains before a restart
    return EXIT_POWER_STOP if edge.stopping_for_power else 0
