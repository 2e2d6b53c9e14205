"""Talking to a parkgate server: channels, the session token, and readable errors.

Every client (admin CLI, window, gate) goes through here, so they all find
the server the same way and all show a refusal as ``REASON: message``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import grpc
import orjson

from parkgate.common import channels
from parkgate.common.channels import Transport

DEFAULT_SERVER = "127.0.0.1:50051"
REASON_METADATA = "parkgate-reason"


@dataclass(frozen=True, slots=True)
class CallError(Exception):
    """A call the server refused or could not answer, with the contract's reason name."""

    reason: str
    code: str
    message: str

    def __str__(self) -> str:
        return f"{self.reason}: {self.message}"


def call_error(error: grpc.RpcError) -> CallError:
    reason = ""
    trailing = error.trailing_metadata() if hasattr(error, "trailing_metadata") else None
    for key, value in trailing or ():
        if key == REASON_METADATA:
            reason = value
    code = error.code().name if hasattr(error, "code") else "UNKNOWN"
    if not reason:
        reason = {"UNAVAILABLE": "SERVER_UNREACHABLE", "DEADLINE_EXCEEDED": "DEADLINE_EXCEEDED"}.get(code, code)
    return CallError(reason=reason, code=code, message=error.details() if hasattr(error, "details") else str(error))


def server_address(explicit: str | None = None) -> str:
    return explicit or os.environ.get("PARKGATE_SERVER") or DEFAULT_SERVER


def session_file(server: str) -> Path:
    base = Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config") / "parkgate"
    return base / f"session-{server.replace(':', '_').replace('/', '_')}.json"


def save_token(server: str, token: str, username: str) -> Path:
    path = session_file(server)
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(orjson.dumps({"token": token, "username": username}))
    return path


def load_token(server: str) -> str:
    if os.environ.get("PARKGATE_TOKEN"):
        return os.environ["PARKGATE_TOKEN"]
    try:
        return str(orjson.loads(session_file(server).read_bytes())["token"])
    except (FileNotFoundError, KeyError, orjson.JSONDecodeError):
        return ""


def forget_token(server: str) -> None:
    session_file(server).unlink(missing_ok=True)


def auth_metadata(token: str) -> Sequence[tuple[str, str]]:
    return (("authorization", f"Bearer {token}"),) if token else ()


def open_channel(server: str, transport: Transport | None = None) -> grpc.Channel:
    """A channel to ``server`` (``HOST:PORT`` or a comma list of them, with failover); TLS unless told."""
    return channels.open_channel(server, transport)
