"""The operation log's hash chains: what a record's hash covers, and how a chain is checked.

Each record's hash is an HMAC (key ``auth.audit_key``, kept out of the
database) over the previous record's hash and the record's own fields in a
canonical JSON form. Editing a record breaks its hash; deleting or moving one
breaks the next record's link (and its sequence number); deleting the last
ones leaves the chain shorter than its head says. Someone with the database
alone cannot recompute the chain, since the key is not there.

Chains are named ``<UTC day>/<shard>``: a writer picks a shard at random and
locks only that chain's head, so concurrent calls do not queue on one row.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson

SHARDS = 8
GENESIS = bytes(32)
_DEFAULT_KEY = b"parkgate audit chain v1"


@dataclass(frozen=True, slots=True)
class ChainedRecord:
    id: int
    chain: str
    seq: int
    at: datetime
    user_id: str
    username: str
    device_id: str
    method: str
    outcome: str
    summary: dict[str, Any]
    peer: str
    prev_hash: bytes
    hash: bytes


@dataclass(frozen=True, slots=True)
class ChainProblem:
    chain: str
    record_id: int
    problem: str


def chain_name(at: datetime, shard: int) -> str:
    return f"{at.date().isoformat()}/{shard}"


def record_hash(key: str, prev_hash: bytes, *, chain: str, seq: int, at: datetime, user_id: str, username: str,
                device_id: str, method: str, outcome: str, summary: dict[str, Any], peer: str) -> bytes:
    body = orjson.dumps([chain, seq, at.isoformat(timespec="microseconds"), user_id, username, device_id, method,
                         outcome, summary, peer], option=orjson.OPT_SORT_KEYS)
    return hmac.new(key.encode() if key else _DEFAULT_KEY, prev_hash + body, hashlib.sha256).digest()


def verify_chain(key: str, chain: str, records: Iterable[ChainedRecord], head_seq: int | None) -> list[ChainProblem]:
    """The problems of one chain (records in seq order, as stored), first problem per kind and place."""
    problems: list[ChainProblem] = []
    expected_prev, expected_seq = GENESIS, 1
    last_id = 0
    for r in records:
        if r.seq != expected_seq:
            what = (f"records {expected_seq}..{r.seq - 1} of the chain are missing (deleted)" if r.seq > expected_seq
                    else f"sequence number {r.seq} where {expected_seq} was due (moved or copied)")
            problems.append(ChainProblem(chain, r.id, what))
        elif bytes(r.prev_hash) != expected_prev:
            problems.append(ChainProblem(chain, r.id, "does not follow the record before it (reordered or "
                                                      "a record before it was deleted)"))
        computed = record_hash(key, bytes(r.prev_hash), chain=r.chain, seq=r.seq, at=r.at, user_id=r.user_id,
                               username=r.username, device_id=r.device_id, method=r.method, outcome=r.outcome,
                               summary=r.summary, peer=r.peer)
        if not hmac.compare_digest(computed, bytes(r.hash)):
            problems.append(ChainProblem(chain, r.id, "its content was edited (the hash does not match)"))
        expected_prev, expected_seq, last_id = bytes(r.hash), r.seq + 1, r.id
    if head_seq is not None and head_seq >= expected_seq:
        problems.append(ChainProblem(chain, last_id, f"records {expected_seq}..{head_seq} at the end of the chain "
                                                     "are missing (deleted)"))
    return problems
