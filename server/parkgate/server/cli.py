"""The server's subcommands of ``parkgate``: ``up``, ``server`` and ``admin init`` (entry point ``parkgate.commands``).

Heavy modules are imported inside the commands, so ``parkgate --help`` stays instant.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import Any


def _settings(args: argparse.Namespace):  # type: ignore[no-untyped-def]
    from parkgate.server.config import ConfigError, load_settings

    overrides = {}
    if getattr(args, "listen", None):
        overrides["server.listen"] = args.listen
    if getattr(args, "data_dir", None):
        overrides["embedded.data_dir"] = args.data_dir
    if getattr(args, "insecure", False):
        overrides["server.insecure"] = True
    try:
        settings = load_settings(getattr(args, "config", None), **overrides)
        if getattr(args, "dev_tls", False) and not settings.server.insecure and not settings.server.tls_cert_file:
            # `parkgate up`: a development CA and certificate in the data folder, made once
            from parkgate.common.tls import dev_pki
            from parkgate.server.embedded import data_dir

            pki = dev_pki(data_dir(settings) / "tls")
            dev = {"server.tls_cert_file": str(pki.cert_file), "server.tls_key_file": str(pki.key_file)}
            if not settings.server.device_ca_cert_file:  # devices enrol for certificates of the dev device CA
                dev |= {"server.device_ca_cert_file": str(pki.device_ca_file),
                        "server.device_ca_key_file": str(pki.device_ca_key_file)}
                if not settings.server.device_listen:
                    dev["server.device_listen"] = _next_port(settings.server.listen)
            print(f"parkgate: TLS with the development CA {pki.ca_file}; clients trust it with\n"
                  f"    export PARKGATE_TLS_CA_FILE={pki.ca_file}", file=sys.stderr)
            settings = load_settings(getattr(args, "config", None), **overrides, **dev)
        return settings
    except ConfigError as exc:
        raise SystemExit(f"parkgate: {exc}") from None




def _next_port(listen: str) -> str:
    """The development device port: the one after ``listen``'s when it is free, else any free one."""
    import socket

    host, _, port = listen.rpartition(":")
    wanted = int(port) + 1 if 0 < int(port) < 65535 else 0
    with socket.socket(socket.AF_INET6 if ":" in host.strip("[]") else socket.AF_INET) as probe:
        try:
            probe.bind((host.strip("[]"), wanted))
        except OSError:
            wanted = 0
    return f"{host}:{wanted}"


def cmd_up(args: argparse.Namespace) -> int:
    from parkgate.common import logs
    from parkgate.server.embedded import run_up

    args.dev_tls = True
    settings = _settings(args)
    logs.configure(settings.server.log_level)
    asyncio.run(run_up(settings, demo=args.demo))
    return 0


def cmd_server(args: argparse.Namespace) -> int:
    from parkgate.common import logs
    from parkgate.server.app import serve

    settings = _settings(args)
    if not settings.database.dsn:
        raise SystemExit(
            "parkgate: database.dsn: required by `parkgate server` (set it in the config file or "
            "PARKGATE_DATABASE__DSN); `parkgate up` runs with an embedded database instead"
        )
    logs.configure(settings.server.log_level)
    from parkgate.common.channels import NoCertificate
    from parkgate.common.power import EXIT_POWER_STOP

    try:
        stopped_for_power = asyncio.run(serve(settings, settings.database.dsn))
    except NoCertificate as exc:
        raise SystemExit(f"parkgate: {exc}") from None
    # S30: a stop for power says so in its exit status; its systemd unit waits for the mains before a restart
    return EXIT_POWER_STOP if stopped_for_power else 0


def cmd_admin_init(args: argparse.Namespace) -> int:
    from parkgate.server.embedded import embedded_dsn_if_running, init_first_admin

    settings = _settings(args)
    dsn = settings.database.dsn or embedded_dsn_if_running(settings)
    password = asyncio.run(init_first_admin(settings, dsn, args.username))
    if password is None:
        print("parkgate: users exist already; nothing created (use `admin user-reset-password`)", file=sys.stderr)
        return 1
    print(f"First administrator created. This password is shown once:\n  user: {args.username}   "
          f"password: {password}")
    return 0


def register(sub: Any) -> None:
    up = sub.add_parser("up", help="run everything locally: embedded PostgreSQL + server (no configuration needed)")
    up.add_argument("--config", help="TOML configuration file (default $PARKGATE_CONFIG)")
    up.add_argument("--listen", help="HOST:PORT to serve on (default 127.0.0.1:50051 or $PARKGATE_LISTEN)")
    up.add_argument("--data-dir", help="folder for the embedded database")
    up.add_argument("--demo", action="store_true", help="load the demo parks once")
    up.add_argument("--insecure", action="store_true", help="plaintext gRPC instead of TLS (development only)")
    up.set_defaults(func=cmd_up)

    server = sub.add_parser("server", help="run a gRPC server against a configured database (cluster member)")
    server.add_argument("--config", help="TOML configuration file (default $PARKGATE_CONFIG)")
    server.add_argument("--listen", help="HOST:PORT to serve on")
    server.add_argument("--insecure", action="store_true",
                        help="plaintext gRPC instead of TLS (no server.tls_cert_file needed)")
    server.set_defaults(func=cmd_server)

    admin = sub.choices.get("admin")
    if admin is not None:  # the admin CLI (clients) is installed beside the server
        init = admin.commands.add_parser("init", help="create the first admin in the database (shows the password once)")
        init.add_argument("--config", help="server configuration file (for the database address)")
        init.add_argument("--data-dir", help="data folder of `parkgate up` (embedded default)")
        init.add_argument("--username", default="admin")
        init.set_defaults(func=cmd_admin_init)
