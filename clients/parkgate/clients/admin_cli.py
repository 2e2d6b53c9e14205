"""``parkgate admin``: the administrators' command line, speaking only the contract.

Log in once (``parkgate admin login``); the session token is kept in
``~/.config/parkgate/`` (mode 0600) or taken from ``PARKGATE_TOKEN``.
Every command prints a table, or JSON with ``--json``; a refusal prints
``error: REASON: message`` and exits with status 2.
"""

from __future__ import annotations

import argparse
import getpass
import os
import sys
from pathlib import Path
from typing import Any

import grpc
import orjson
from google.protobuf.json_format import MessageToDict
from rich.console import Console
from rich.table import Table

from parkgate.v1 import (
    admin_pb2,
    admin_pb2_grpc,
    auth_pb2,
    auth_pb2_grpc,
    catalog_pb2,
    catalog_pb2_grpc,
    common_pb2,
    gate_pb2_grpc,
    sales_pb2_grpc,
)

from . import catalog_cli, connection, gates_cli, sites_cli
from .commands import command_group
from .money import format_money


class Session:
    """A channel to one server plus the stored token."""

    def __init__(self, server: str) -> None:
        self.server = server
        self.channel = connection.open_channel(server)
        self.auth = auth_pb2_grpc.AuthStub(self.channel)
        self.admin = admin_pb2_grpc.AdminStub(self.channel)
        self.catalog = catalog_pb2_grpc.CatalogStub(self.channel)
        self.sales = sales_pb2_grpc.SalesStub(self.channel)
        self.gates = gate_pb2_grpc.GateControlStub(self.channel)

    @property
    def metadata(self) -> Any:
        return connection.auth_metadata(connection.load_token(self.server))


def _read_password(args: argparse.Namespace, prompt: str) -> str:
    if getattr(args, "password_stdin", False):
        return sys.stdin.readline().rstrip("\n")
    return getpass.getpass(prompt)


def _device_secret(a: argparse.Namespace) -> str:
    """The terminal's secret: from a file (kept 0600 on the window PC) or $PARKGATE_DEVICE_SECRET."""
    if getattr(a, "device_secret_file", None):
        return Path(a.device_secret_file).read_text().strip()
    return os.environ.get("PARKGATE_DEVICE_SECRET", "")


# --- commands ------------------------------------------------------------------

def cmd_login(s: Session, a: argparse.Namespace) -> Any:
    username = a.user or input("user: ")
    reply = s.auth.Login(auth_pb2.LoginRequest(username=username, password=_read_password(a, "password: "),
                                               device_id=a.device or "",
                                               device_secret=_device_secret(a)), timeout=30)
    path = connection.save_token(s.server, reply.token, username)
    print(f"logged in as {username} (roles: {', '.join(reply.roles)}); session kept in {path}", file=sys.stderr)
    if reply.must_change_password:
        print("you must change your password now: parkgate admin passwd", file=sys.stderr)
    return None


def cmd_logout(s: Session, a: argparse.Namespace) -> Any:
    s.auth.Logout(auth_pb2.LogoutRequest(), metadata=s.metadata, timeout=10)
    connection.forget_token(s.server)
    return None


def cmd_whoami(s: Session, a: argparse.Namespace) -> Any:
    return s.auth.WhoAmI(auth_pb2.WhoAmIRequest(), metadata=s.metadata, timeout=10)


def cmd_passwd(s: Session, a: argparse.Namespace) -> Any:
    old = _read_password(a, "current password: ")
    new = _read_password(a, "new password: ")
    if not a.password_stdin and getpass.getpass("new password again: ") != new:
        raise SystemExit("error: the two new passwords differ")
    s.auth.ChangePassword(auth_pb2.ChangePasswordRequest(old_password=old, new_password=new),
                          metadata=s.metadata, timeout=30)
    return None


def cmd_parks(s: Session, a: argparse.Namespace) -> Any:
    return s.catalog.ListParks(catalog_pb2.ListParksRequest(include_disabled=a.all), metadata=s.metadata,
                               timeout=10).parks


def cmd_attractions(s: Session, a: argparse.Namespace) -> Any:
    return s.catalog.ListAttractions(catalog_pb2.ListAttractionsRequest(park_id=a.park or ""),
                                     metadata=s.metadata, timeout=10).attractions


def cmd_products(s: Session, a: argparse.Namespace) -> Any:
    products = s.catalog.ListProducts(catalog_pb2.ListProductsRequest(park_id=a.park or "", include_off_sale=a.all),
                                      metadata=s.metadata, timeout=10).products
    return [{**row, "admits": catalog_cli.admits(p)} for row, p in zip(_rows(products), products, strict=True)]


def cmd_users(s: Session, a: argparse.Namespace) -> Any:
    return s.admin.ListUsers(admin_pb2.ListUsersRequest(include_disabled=a.all), metadata=s.metadata,
                             timeout=10).users


def cmd_user_add(s: Session, a: argparse.Namespace) -> Any:
    password = _read_password(a, f"password for {a.username}: ")
    return s.admin.CreateUser(admin_pb2.CreateUserRequest(username=a.username, display_name=a.display_name or "",
                                                          password=password, roles=a.role),
                              metadata=s.metadata, timeout=30)


def cmd_user_set(s: Session, a: argparse.Namespace) -> Any:
    req = admin_pb2.UpdateUserRequest(username=a.username)
    if a.role is not None:
        req.set_roles = True
        req.roles.extend(a.role)
    if a.disable or a.enable:
        req.disabled = bool(a.disable)
    if a.display_name is not None:
        req.display_name = a.display_name
    return s.admin.UpdateUser(req, metadata=s.metadata, timeout=10)


def cmd_user_reset(s: Session, a: argparse.Namespace) -> Any:
    password = _read_password(a, f"new password for {a.username}: ")
    s.admin.ResetPassword(admin_pb2.ResetPasswordRequest(username=a.username, new_password=password),
                          metadata=s.metadata, timeout=30)
    return None


def cmd_roles(s: Session, a: argparse.Namespace) -> Any:
    return s.admin.ListRoles(admin_pb2.ListRolesRequest(), metadata=s.metadata, timeout=10).roles


def cmd_role_set(s: Session, a: argparse.Namespace) -> Any:
    role = admin_pb2.Role(name=a.name, description=a.description or "", permissions=a.permission)
    return s.admin.PutRole(admin_pb2.PutRoleRequest(role=role), metadata=s.metadata, timeout=10)


def cmd_permissions(s: Session, a: argparse.Namespace) -> Any:
    return s.admin.ListPermissions(admin_pb2.ListPermissionsRequest(), metadata=s.metadata, timeout=10).permissions


def cmd_devices(s: Session, a: argparse.Namespace) -> Any:
    return s.admin.ListDevices(admin_pb2.ListDevicesRequest(), metadata=s.metadata, timeout=10).devices


def cmd_device_register(s: Session, a: argparse.Namespace) -> Any:
    device = admin_pb2.Device(
        id=a.id, kind=admin_pb2.DeviceKind.Value(a.kind.upper()), site=a.site or "", park_id=a.park or "",
        attraction_id=a.attraction or "", description=a.description or "", language=a.language or "",
        direction=common_pb2.Direction.Value(a.direction.upper()) if a.direction else 0,
    )
    return s.admin.RegisterDevice(admin_pb2.RegisterDeviceRequest(device=device), metadata=s.metadata, timeout=30)


def cmd_params(s: Session, a: argparse.Namespace) -> Any:
    return s.admin.ListParameters(admin_pb2.ListParametersRequest(prefix=a.prefix or ""), metadata=s.metadata,
                                  timeout=10).parameters


def cmd_param_set(s: Session, a: argparse.Namespace) -> Any:
    return s.admin.SetParameter(admin_pb2.SetParameterRequest(key=a.key, value=a.value), metadata=s.metadata,
                                timeout=10)


def cmd_device_set(s: Session, a: argparse.Namespace) -> Any:
    req = admin_pb2.UpdateDeviceRequest(id=a.id, rotate_secret=a.rotate_secret)
    if a.disable or a.enable:
        req.disabled = bool(a.disable)
    if a.description is not None:
        req.description = a.description
    if a.language is not None:
        req.language = a.language
    return s.admin.UpdateDevice(req, metadata=s.metadata, timeout=30)


def cmd_dictionary(s: Session, a: argparse.Namespace) -> Any:
    return s.admin.ListDictionary(admin_pb2.ListDictionaryRequest(language=a.language or "", prefix=a.prefix or ""),
                                  metadata=s.metadata, timeout=10).entries


def cmd_dictionary_set(s: Session, a: argparse.Namespace) -> Any:
    entry = admin_pb2.DictionaryEntry(key=a.key, language=a.language, text=a.text)
    return s.admin.PutDictionaryEntry(admin_pb2.PutDictionaryEntryRequest(entry=entry), metadata=s.metadata,
                                      timeout=10)


def cmd_session_end(s: Session, a: argparse.Namespace) -> Any:
    s.admin.EndSession(admin_pb2.EndSessionRequest(session_id=a.session_id), metadata=s.metadata, timeout=10)
    return None


def cmd_keys(s: Session, a: argparse.Namespace) -> Any:
    if a.action == "list":
        return s.admin.ListSigningKeys(admin_pb2.ListSigningKeysRequest(), metadata=s.metadata, timeout=10).keys
    if a.action == "rotate":
        return s.admin.RotateSigningKey(admin_pb2.RotateSigningKeyRequest(), metadata=s.metadata, timeout=30)
    if a.key_id is None:
        raise SystemExit(f"error: keys {a.action} needs the key id (see: parkgate admin keys list)")
    call = s.admin.RetireSigningKey if a.action == "retire" else s.admin.RevokeSigningKey
    return call(admin_pb2.SigningKeyRequest(key_id=a.key_id), metadata=s.metadata, timeout=30)


def cmd_ticket_reissue(s: Session, a: argparse.Namespace) -> Any:
    """A leaked code: the ticket (a serial, or the code itself) gets a new serial and code; the old is refused."""
    ticket = a.ticket.strip()
    request = (admin_pb2.ReissueTicketRequest(serial=int(ticket), note=a.note or "") if ticket.isdigit()
               else admin_pb2.ReissueTicketRequest(ticket_code=ticket, note=a.note or ""))
    return s.admin.ReissueTicket(request, metadata=s.metadata, timeout=30)


def cmd_audit(s: Session, a: argparse.Namespace) -> Any:
    if a.action == "verify":
        reply = s.admin.VerifyAuditLog(admin_pb2.VerifyAuditLogRequest(), metadata=s.metadata, timeout=120)
        for p in reply.problems:
            print(f"TAMPERED chain {p.chain}: record {p.record_id}: {p.problem}", file=sys.stderr)
        print(f"{reply.records_checked} records in {reply.chains_checked} chains checked: "
              f"{len(reply.problems) or 'no'} problem(s)", file=sys.stderr)
        if reply.problems:
            raise SystemExit(3)
        return reply
    req = admin_pb2.ListAuditLogRequest(username=a.user or "", method_contains=a.method or "",
                                        page=common_pb2.Page(limit=a.limit))
    return s.admin.ListAuditLog(req, metadata=s.metadata, timeout=10).records


def cmd_sessions(s: Session, a: argparse.Namespace) -> Any:
    return s.admin.ListSessions(admin_pb2.ListSessionsRequest(), metadata=s.metadata, timeout=10).sessions


# --- output ----------------------------------------------------------------------

def _rows(result: Any) -> list[dict[str, Any]]:
    if isinstance(result, list) and all(isinstance(r, dict) for r in result):
        return result
    items = list(result) if not hasattr(result, "DESCRIPTOR") else [result]
    return [MessageToDict(m, preserving_proto_field_name=True) for m in items]


def _show(result: Any, as_json: bool) -> None:
    if result is None:
        if as_json:
            print("{}")
        return
    rows = _rows(result)
    if as_json:
        print(orjson.dumps(rows if not hasattr(result, "DESCRIPTOR") else rows[0], option=orjson.OPT_INDENT_2).decode())
        return
    console = Console()
    if not rows:
        console.print("(none)")
        return
    columns = list(dict.fromkeys(k for row in rows for k in row if k != "rules"))
    table = Table(*columns)
    for row in rows:
        table.add_row(*(_cell(row.get(c, "")) for c in columns))
    console.print(table)


def _cell(value: Any) -> str:
    if isinstance(value, list):
        return ", ".join(str(v) for v in value)
    if isinstance(value, dict) and set(value) <= {"minor_units", "currency"} and "currency" in value:
        return format_money(int(value.get("minor_units", 0)), value["currency"])  # a Money: read as money
    if isinstance(value, dict):
        return orjson.dumps(value).decode()
    return str(value)


# --- argument parsing ---------------------------------------------------------------

def add_parser(subparsers: Any) -> None:
    cmd = command_group(subparsers, "admin", "administer users, roles, devices, parameters, the catalog",
                        "print JSON instead of tables")
    sp = cmd("login", cmd_login, "log in and keep the session")
    sp.add_argument("--user", "-u")
    sp.add_argument("--device", help="the registered terminal you sit at")
    sp.add_argument("--device-secret-file",
                    help="file holding that terminal's secret (default $PARKGATE_DEVICE_SECRET)")
    sp.add_argument("--password-stdin", action="store_true")
    cmd("logout", cmd_logout, "end the session")
    cmd("whoami", cmd_whoami, "show the logged-in operator")
    cmd("passwd", cmd_passwd, "change your own password").add_argument("--password-stdin", action="store_true")
    cmd("parks", cmd_parks, "list parks").add_argument("--all", action="store_true")
    cmd("attractions", cmd_attractions, "list attractions").add_argument("--park")
    sp = cmd("products", cmd_products, "list products")
    sp.add_argument("--park")
    sp.add_argument("--all", action="store_true", help="include products not on sale")
    cmd("users", cmd_users, "list operators").add_argument("--all", action="store_true")
    sp = cmd("user-add", cmd_user_add, "create an operator (password from the prompt or stdin)")
    sp.add_argument("username")
    sp.add_argument("--role", action="append", default=[], required=True)
    sp.add_argument("--display-name")
    sp.add_argument("--password-stdin", action="store_true")
    sp = cmd("user-set", cmd_user_set, "change an operator's roles, name, or disable/enable")
    sp.add_argument("username")
    sp.add_argument("--role", action="append")
    sp.add_argument("--display-name")
    sp.add_argument("--disable", action="store_true")
    sp.add_argument("--enable", action="store_true")
    sp = cmd("user-reset-password", cmd_user_reset, "set a new password (must be changed at next log-in)")
    sp.add_argument("username")
    sp.add_argument("--password-stdin", action="store_true")
    cmd("roles", cmd_roles, "list roles and their permissions")
    sp = cmd("role-set", cmd_role_set, "create or replace a role (effective at once)")
    sp.add_argument("name")
    sp.add_argument("--permission", action="append", default=[])
    sp.add_argument("--description")
    cmd("permissions", cmd_permissions, "list every permission")
    cmd("devices", cmd_devices, "list registered devices")
    sp = cmd("device-register", cmd_device_register, "register a gate, handheld or window (secret shown once)")
    sp.add_argument("id")
    sp.add_argument("--kind", required=True, choices=["gate", "handheld", "sales_window", "kiosk", "site_edge"])
    sp.add_argument("--park")
    sp.add_argument("--attraction")
    sp.add_argument("--direction", choices=["in", "out"])
    sp.add_argument("--site")
    sp.add_argument("--description")
    sp.add_argument("--language")
    cmd("params", cmd_params, "list parameters").add_argument("--prefix")
    sp = cmd("param-set", cmd_param_set, "set a parameter (value is JSON)")
    sp.add_argument("key")
    sp.add_argument("value")
    sp = cmd("device-set", cmd_device_set, "disable/enable a device, change it, or give it a new secret")
    sp.add_argument("id")
    sp.add_argument("--disable", action="store_true")
    sp.add_argument("--enable", action="store_true")
    sp.add_argument("--description")
    sp.add_argument("--language")
    sp.add_argument("--rotate-secret", action="store_true", help="a new secret, shown once")
    sp = cmd("dictionary", cmd_dictionary, "list display texts")
    sp.add_argument("--language")
    sp.add_argument("--prefix")
    sp = cmd("dictionary-set", cmd_dictionary_set, "set a display text")
    sp.add_argument("key")
    sp.add_argument("language")
    sp.add_argument("text")
    cmd("session-end", cmd_session_end, "end an operator's session").add_argument("session_id")
    sp = cmd("keys", cmd_keys, "ticket signing keys: list, rotate, retire ID, revoke ID")
    sp.add_argument("action", choices=["list", "rotate", "retire", "revoke"])
    sp.add_argument("key_id", nargs="?", type=int)
    sp = cmd("ticket-reissue", cmd_ticket_reissue,
             "a leaked code: reissue the ticket (serial or code) with a new serial; the old code is refused")
    sp.add_argument("ticket")
    sp.add_argument("--note", help="why, for the operation log")
    sp = cmd("audit", cmd_audit, "read the operation log, newest first; 'audit verify' checks its hash chains")
    sp.add_argument("action", nargs="?", choices=["list", "verify"], default="list")
    sp.add_argument("--user")
    sp.add_argument("--method")
    sp.add_argument("--limit", type=int, default=50)
    cmd("sessions", cmd_sessions, "who is online")
    catalog_cli.add_commands(cmd)
    gates_cli.add_commands(cmd)
    sites_cli.add_commands(cmd)


def run(args: argparse.Namespace) -> int:
    session = Session(connection.server_address(args.server))
    try:
        result = args.handler(session, args)
    except grpc.RpcError as exc:
        print(f"error: {connection.call_error(exc)}", file=sys.stderr)
        return 2
    finally:
        session.channel.close()
    _show(result, args.json)
    return 0
