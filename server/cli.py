"""The one console command, ``parkgate``, and its subcommands.

Each subcommand lives with the code it runs (server, clients, ha); this
module only parses arguments and dispatches, importing the heavy parts lazily
so ``parkgate --help`` is instant.
"""

from __future__ import annotations

import argparse
import asyncio
import sys

from parkgate import __version__


def _settings(args: argparse.Namespace):  # type: ignore[no-untyped-def]
    from parkgate.config import ConfigError, load_settings

    overrides = {}
    if getattr(args, "listen", None):
        overrides["server.listen"] = args.listen
    if getattr(args, "data_dir", None):
        overrides["embedded.data_dir"] = args.data_dir
    try:
        return load_settings(getattr(args, "config", None), **overrides)
    except ConfigError as exc:
        raise SystemExit(f"parkgate: {exc}") from None


def cmd_up(args: argparse.Namespace) -> int:
    from parkgate import logs
    from parkgate.embedded import run_up

    settings = _settings(args)
    logs.configure(settings.server.log_level)
    asyncio.run(run_up(settings, demo=args.demo))
    return 0


def cmd_server(args: argparse.Namespace) -> int:
    from parkgate import logs
    from parkgate.app import serve

    settings = _settings(args)
    if not settings.database.dsn:
        raise SystemExit(
            "parkgate: database.dsn: required by `parkgate server` (set it in the config file or "
            "PARKGATE_DATABASE__DSN); `parkgate up` runs with an embedded database instead"
        )
    logs.configure(settings.server.log_level)
    asyncio.run(serve(settings, settings.database.dsn))
    return 0


def cmd_admin(args: argparse.Namespace) -> int:
    if getattr(args, "server_side", None) == "init":
        from parkgate.embedded import embedded_dsn_if_running, init_first_admin

        settings = _settings(args)
        dsn = settings.database.dsn or embedded_dsn_if_running(settings)
        password = asyncio.run(init_first_admin(settings, dsn, args.username))
        if password is None:
            print("parkgate: users exist already; nothing created (use `admin user-reset-password`)", file=sys.stderr)
            return 1
        print(f"First administrator created. This password is shown once:\n  user: {args.username}   "
              f"password: {password}")
        return 0
    from parkgate.clients.admin_cli import run

    return run(args)


def cmd_pos(args: argparse.Namespace) -> int:
    from parkgate.clients.pos.cli import run

    return run(args)


def build_parser() -> argparse.ArgumentParser:
    from parkgate.clients import admin_cli
    from parkgate.clients.pos import cli as pos_cli

    parser = argparse.ArgumentParser(prog="parkgate", description="Ticketing and gate access control for parks.")
    parser.add_argument("--version", action="version", version=f"parkgate {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    up = sub.add_parser("up", help="run everything locally: embedded PostgreSQL + server (no configuration needed)")
    up.add_argument("--config", help="TOML configuration file (default $PARKGATE_CONFIG)")
    up.add_argument("--listen", help="HOST:PORT to serve on (default 127.0.0.1:50051 or $PARKGATE_LISTEN)")
    up.add_argument("--data-dir", help="folder for the embedded database")
    up.add_argument("--demo", action="store_true", help="load the demo parks once")
    up.set_defaults(func=cmd_up)

    server = sub.add_parser("server", help="run a gRPC server against a configured database (cluster member)")
    server.add_argument("--config", help="TOML configuration file (default $PARKGATE_CONFIG)")
    server.add_argument("--listen", help="HOST:PORT to serve on")
    server.set_defaults(func=cmd_server)

    admin_cli.add_parser(sub)
    sub.choices["admin"].set_defaults(func=cmd_admin)
    pos_cli.add_parser(sub)
    sub.choices["pos"].set_defaults(func=cmd_pos)

    from parkgate.clients.gate import cli as gate_cli

    gate_cli.add_parser(sub)

    from parkgate.ha import cli as cluster_cli

    cluster_cli.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
