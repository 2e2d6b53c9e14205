"""`parkgate gate run|enroll --config gate.toml` and `parkgate gate check-config gate.toml`.

``run`` starts the agent (:mod:`.agent`) until SIGTERM/SIGINT and leaves the
gate locked (unless an emergency holds it open). Its log is one readable line
per decision on stderr (``--log-format json`` for the JSON lines the servers
write). ``check-config`` validates the file and the secret file and prints
what the gate would do, without touching any device or server: for a
technician before a restart, and for configuration management. ``enroll``
gets the gate its client certificate (:mod:`parkgate.clients.enroll`).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from typing import Any


def add_parser(subparsers: Any) -> None:
    p = subparsers.add_parser("gate", help="the gate controller agent: scanner, card reader, relay board")
    sub = p.add_subparsers(dest="gate_command", required=True, metavar="COMMAND")
    run = sub.add_parser("run", help="run the gate agent until SIGTERM/SIGINT")
    run.add_argument("--config", required=True, help="the gate's TOML file (see ops/gate.sample.toml)")
    run.add_argument("--log-format", choices=("text", "json"), default="text")
    run.set_defaults(func=cmd_run)
    check = sub.add_parser("check-config", help="validate a gate's TOML file and print what it configures")
    check.add_argument("config", help="the gate's TOML file")
    check.set_defaults(func=cmd_check_config)
    enroll = sub.add_parser("enroll", help="get (or renew) the gate's client certificate: a new key made here, "
                                           "a CSR signed by the server's device CA (gate.tls_cert_file/tls_key_file)")
    enroll.add_argument("--config", required=True, help="the gate's TOML file")
    enroll.add_argument("--server", help="HOST:PORT to enrol at (default: the gate's servers); a first enrolment "
                                         "goes to a port that does not require a certificate yet")
    enroll.set_defaults(func=cmd_enroll)


def _load(path: str):  # type: ignore[no-untyped-def]
    from .config import GateConfigError, load_config

    try:
        config = load_config(path)
        config.secret()
    except GateConfigError as exc:
        print(f"parkgate gate: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    return config


def _configure_logging(level: str, fmt: str) -> None:
    if fmt == "json":
        from parkgate.common import logs

        logs.configure(level)
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)-7s %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())


def cmd_run(args: argparse.Namespace) -> int:
    from .agent import GateAgent

    config = _load(args.config)
    _configure_logging(config.gate.log_level, args.log_format)
    asyncio.run(GateAgent(config).run(install_signals=True))
    return 0


def cmd_check_config(args: argparse.Namespace) -> int:
    config = _load(args.config)
    g = config.gate
    lines = [
        f"gate {g.device_id}: direction {g.direction}, park {g.park or '(as registered)'}"
        f"{', attraction ' + g.attraction if g.attraction else ''}",
        f"servers: {', '.join(g.servers)} (deadline {g.request_deadline_seconds}s, reconnect "
        f"{g.reconnect_min_seconds}-{g.reconnect_max_seconds}s)",
        f"scanner: {config.scanner.port} {config.scanner.baud} baud, {config.scanner.terminator}"
        if config.scanner else "scanner: none",
        f"card reader: {config.card_reader.name or '(first PC/SC reader)'}" if config.card_reader else "card reader: none",
        (f"relay: {config.relay.port} {config.relay.baud} baud, open {config.relay.open_ms} ms, passage "
         f"{'confirmed' if config.relay.confirm_passage else 'not confirmed'}, on power loss "
         f"{config.relay.on_power_loss}") if config.relay else "relay: none (handheld mode)",
        f"fast mode: {'on' if config.fast_mode.enabled else 'off'}"
        f"{', offline admissions' if config.fast_mode.enabled and config.fast_mode.offline_admit else ''}",
        f"state folder: {g.state_dir or 'none (keys and offline admissions in memory only)'}",
        f"client certificate: {g.tls_cert_file} (key {g.tls_key_file}; parkgate gate enroll writes them)"
        if g.tls_cert_file else "client certificate: none",
    ]
    print("\n".join(lines))
    return 0


def cmd_enroll(args: argparse.Namespace) -> int:
    from ..enroll import CallError, enroll

    config = _load(args.config)
    g = config.gate
    if g.tls_cert_file is None or g.tls_key_file is None:
        print("parkgate gate: enroll writes gate.tls_cert_file and gate.tls_key_file: name them in "
              f"{args.config}", file=sys.stderr)
        return 2
    server = args.server or ",".join(g.servers)
    try:
        done = enroll(server, g.device_id, config.secret(), g.tls_cert_file, g.tls_key_file, transport=g.transport())
    except CallError as exc:
        print(f"parkgate gate: enrolment refused: {exc}", file=sys.stderr)
        return 1
    print(f"gate {g.device_id}: certificate {done.cert_file} (serial {done.serial}, valid until "
          f"{done.not_after:%Y-%m-%d %H:%M} UTC), key {done.key_file}")
    return 0
