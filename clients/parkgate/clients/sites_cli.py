"""`parkgate admin` commands for sites: tickets admitted at two sites during a partition, key revocation."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from parkgate.v1 import site_pb2, site_pb2_grpc

if TYPE_CHECKING:
    from .admin_cli import Session

Command = Callable[[str, Callable[["Session", argparse.Namespace], Any], str], argparse.ArgumentParser]


def cmd_conflicts(s: Session, a: argparse.Namespace) -> Any:
    """Every conflict (one ticket admitted at two sites or devices while they were cut off), and how many."""
    reply = site_pb2_grpc.SiteStub(s.channel).ListConflicts(
        site_pb2.ListConflictsRequest(park_id=a.park or ""), metadata=s.metadata, timeout=30)
    # the total goes beside the table, never into the JSON a script reads
    print(f"total: {reply.total}", file=sys.stderr if a.json else sys.stdout)
    return reply.conflicts


def cmd_revoke_key(s: Session, a: argparse.Namespace) -> Any:
    return site_pb2_grpc.SiteStub(s.channel).RevokeKey(site_pb2.RevokeKeyRequest(key_id=a.key_id),
                                                       metadata=s.metadata, timeout=30)


def add_commands(cmd: Command) -> None:
    cmd("conflicts", cmd_conflicts, "tickets admitted at two sites during a partition, with the total").add_argument(
        "--park")
    cmd("revoke-key", cmd_revoke_key, "revoke a ticket signing key (a site's or the cluster's): its codes are refused"
        ).add_argument("key_id", type=int)
