"""`parkgate admin` commands for the gates of a park: emergency (S25), capacity (S27), occupancy, gate list."""

from __future__ import annotations

import argparse
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
