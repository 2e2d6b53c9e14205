"""`parkgate admin` commands for the gates of a park: emergency (S25), capacity (S27), occupancy, gate list,
and held checks (S15): which admissions wait for somebody to look at the member, and confirming one."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from parkgate.v1 import gate_pb2

if TYPE_CHECKING:
    from .admin_cli import Session

Command = Callable[[str, Callable[["Session", argparse.Namespace], Any], str], argparse.ArgumentParser]


def cmd_emergency(s: Session, a: argparse.Namespace) -> Any:
    """Open every gate of the park and keep it open (or release); waits for each connected gate's ack."""
    request = gate_pb2.EmergencyRequest(park_id=a.park, note=a.note or "")
    call = s.gates.EmergencyOpen if a.action == "open" else s.gates.EmergencyRelease
    return call(request, metadata=s.metadata, timeout=30)


def cmd_capacity(s: Session, a: argparse.Namespace) -> Any:
    return s.gates.SetCapacity(gate_pb2.SetCapacityRequest(park_id=a.park, capacity=a.cap, resume_margin=a.margin),
                               metadata=s.metadata, timeout=10)


def cmd_occupancy(s: Session, a: argparse.Namespace) -> Any:
    return s.gates.GetOccupancy(gate_pb2.GetOccupancyRequest(park_id=a.park), metadata=s.metadata, timeout=10)


def cmd_gates(s: Session, a: argparse.Namespace) -> Any:
    return s.gates.ListGates(gate_pb2.ListGatesRequest(park_id=a.park or ""), metadata=s.metadata, timeout=10).gates


def cmd_held_checks(s: Session, a: argparse.Namespace) -> Any:
    """Held checks waiting at the park's gates, newest first; who is held only with members.personal."""
    reply = s.gates.ListHeldChecks(gate_pb2.ListHeldChecksRequest(park_id=a.park, within_seconds=a.within),
                                   metadata=s.metadata, timeout=10)
    return reply.checks


def cmd_confirm_check(s: Session, a: argparse.Namespace) -> Any:
    """Confirm a held check from the console; exit status 3 when the gate did not acknowledge in time."""
    reply = s.gates.ConfirmCheck(gate_pb2.ConfirmCheckRequest(device_id=a.device, request_id=a.request_id,
                                                              note=a.note or ""), metadata=s.metadata, timeout=30)
    if not reply.delivered:
        print(f"not acknowledged: gate {a.device} did not confirm {a.request_id} in time (offline, or nobody "
              f"waiting there); command {reply.command_id}", file=sys.stderr)
        raise SystemExit(3)
    return reply


def add_commands(cmd: Command) -> None:
    sp = cmd("emergency", cmd_emergency, "fire emergency: open every gate of a park (and keep it open), or release")
    sp.add_argument("action", choices=["open", "release"])
    sp.add_argument("--park", required=True)
    sp.add_argument("--note", help="why (kept in the operation log)")
    sp = cmd("capacity", cmd_capacity, "set a park's capacity cap live (0: no cap)")
    sp.add_argument("--park", required=True)
    sp.add_argument("--cap", type=int, required=True)
    sp.add_argument("--margin", type=int, default=0, help="entry resumes once this many below the cap")
    cmd("occupancy", cmd_occupancy, "people inside a park now").add_argument("--park", required=True)
    cmd("gates", cmd_gates, "gates and whether they are connected").add_argument("--park")
    sp = cmd("held-checks", cmd_held_checks, "admissions held for a check at the gates, waiting (S15)")
    sp.add_argument("--park", required=True)
    sp.add_argument("--within", type=int, default=0,
                    help="seconds back (0: the server's live_flow.held_check_seconds)")
    sp = cmd("confirm-check", cmd_confirm_check, "confirm a held check: the gate opens as if its checker confirmed")
    sp.add_argument("device", help="the gate holding the check")
    sp.add_argument("request_id", help="the held admission's request id (see: parkgate admin held-checks)")
    sp.add_argument("--note", help="why, for the operation log")
