"""``parkgate power status|cluster``: the power of every machine and the database cluster, over gRPC (S30, S31).

Asks one server (``--server``, with the session of ``parkgate admin login``)
its Ops.PowerStatus / Ops.ClusterStatus: what that server reads from its UPS,
what every other machine published in etcd and every site edge reported
(Site.ReportPower), which gates run on battery (behind the edges too), the
Patroni members with roles and lag, the servers and their health. So an admin
needs no shell on the database machines. Lines for people; JSON with ``--json``.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

import grpc
import orjson
from google.protobuf.json_format import MessageToDict

from parkgate.v1 import ops_pb2, ops_pb2_grpc

from . import connection
from .commands import command_group

_STATE = {"ON_MAINS": "online", "ON_BATTERY": "ON BATTERY", "LOW_BATTERY": "LOW BATTERY",
          "SHUTTING_DOWN": "SHUTTING DOWN", "POWER_CONTACT_LOST": "UPS not answering",
          "POWER_STATE_UNSPECIFIED": "-"}


def _battery(m: dict[str, Any]) -> str:
    parts = []
    if m.get("battery_percent", -1) >= 0:
        parts.append(f"{m['battery_percent']}%")
    if m.get("runtime_seconds", -1) >= 0:
        parts.append(f"{m['runtime_seconds']}s left")
    return ", ".join(parts)


def render_power(reply: dict[str, Any]) -> str:
    lines = [f"this server: {_STATE.get(reply.get('state', ''), reply.get('state'))}  source {reply.get('source')}"
             f"  {_battery(reply)}".rstrip()]
    if reply.get("detail"):
        lines.append(f"  {reply['detail']}")
    for m in reply.get("machines", []):
        lines.append(f"  {m.get('machine', ''):<16} {m.get('role', ''):<9} "
                     f"{_STATE.get(m.get('state', ''), m.get('state')):<18} {_battery(m):<16} {m.get('source', '')}")
    gates = reply.get("gates_on_battery", [])
    lines.append(f"gates on battery: {', '.join(gates) if gates else 'none'}")
    return "\n".join(lines)


def render_cluster(reply: dict[str, Any]) -> str:
    if not reply.get("managed"):
        lines = ["not a cluster: a single server on its own database"]
    else:
        sync = ", ".join(reply.get("sync_standby", [])) or "NONE"
        lines = [f"leader: {reply.get('leader') or 'NONE'}   synchronous standby: {sync}"]
        for m in reply.get("members", []):
            lag = m.get("lag_bytes", "0")
            lines.append(f"  {m.get('name', ''):<8} {m.get('role', ''):<13} {m.get('state', ''):<10} "
                         f"{m.get('host', ''):<22} tl {m.get('timeline', 0)} lag {lag} B  power "
                         f"{_STATE.get(m.get('power', ''), '-')}")
    for s in reply.get("servers", []):
        lines.append(f"  server {s.get('address') or s.get('server_id', ''):<22} {s.get('health', '')}")
    for p in reply.get("power", []):
        lines.append(f"  power {p.get('machine', ''):<16} {p.get('role', ''):<9} "
                     f"{_STATE.get(p.get('state', ''), p.get('state'))} {_battery(p)}")
    for e in reply.get("edges", []):
        contact = e.get("last_contact") or "never"
        lines.append(f"  edge {e.get('device_id', ''):<16} site {e.get('site', ''):<12} "
                     f"{'online' if e.get('online') else 'OFFLINE'}  last contact {contact}  power "
                     f"{_STATE.get(e.get('power', ''), '-')}")
    if reply.get("error"):
        lines.append(f"  note: {reply['error']}")
    return "\n".join(lines)


def _ask(args: argparse.Namespace, method: str, request: Any) -> dict[str, Any]:
    server = connection.server_address(args.server)
    with connection.open_channel(server) as channel:
        reply = getattr(ops_pb2_grpc.OpsStub(channel), method)(
            request, metadata=connection.auth_metadata(connection.load_token(server)), timeout=15)
    return MessageToDict(reply, preserving_proto_field_name=True, always_print_fields_with_no_presence=True)


def _run(method: str, request: Any, render: Any) -> Any:
    def run(args: argparse.Namespace) -> int:
        try:
            reply = _ask(args, method, request)
        except grpc.RpcError as exc:
            print(f"error: {connection.call_error(exc)}", file=sys.stderr)
            return 2
        print(orjson.dumps(reply, option=orjson.OPT_INDENT_2).decode() if args.json else render(reply))
        return 0

    return run


def cmd_wait_mains(args: argparse.Namespace) -> int:
    """Block until the UPS in the file's ``[power]`` reads steady mains (systemd ExecStartPre, docs/power.md)."""
    import asyncio

    from parkgate.common.power import power_settings_of, wait_for_mains

    def say(text: str) -> None:
        print(f"parkgate power wait-mains: {text}", file=sys.stderr, flush=True)

    try:
        settings = power_settings_of(args.config)
    except (OSError, ValueError) as exc:  # tomllib's and pydantic's errors are ValueErrors
        say(f"{args.config}: {exc}")
        return 2
    say(asyncio.run(wait_for_mains(settings, say)))
    return 0


def add_parser(subparsers: Any) -> None:
    cmd = command_group(subparsers, "power", "UPS power of every machine; the database cluster (S30, S31)")
    cmd("status", _run("PowerStatus", ops_pb2.PowerStatusRequest(), render_power),
        "this server's UPS, every machine's published power state, gates on battery")
    cmd("cluster", _run("ClusterStatus", ops_pb2.ClusterStatusRequest(), render_cluster),
        "Patroni members, roles, lag, synchronous standby, servers and health, power per machine")
    wait = cmd("wait-mains", cmd_wait_mains, "wait until this machine's UPS reads steady mains (before a start "
               "after a power stop; systemd ExecStartPre)")
    wait.add_argument("--config", required=True,
                      help="the TOML whose [power] names the UPS (server.toml, site.toml or the gate's file)")
    subparsers.choices["power"].set_defaults(func=lambda a: a.handler(a))
