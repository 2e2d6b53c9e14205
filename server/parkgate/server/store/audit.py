"""SQL for the operation log (S5)."""

from __future__ import annotations

import random
from datetime import UTC, datetime
from typing import Any

from psycopg.types.json import Jsonb

from parkgate.server.domain.audit_chain import GENESIS, SHARDS, ChainedRecord, chain_name, record_hash
from parkgate.server.domain.audit_outbox import COMMITTED

from .database import Connection
from .fetch import fetch_all
from .rows.admin import AuditRecord


async def record(
    conn: Connection,
    *,
    user_id: str | None,
    username: str,
    device_id: str,
    method: str,
    outcome: str,
    summary: dict[str, Any],
    peer: str,
    key: str = "",
    at: datetime | None = None,
) -> None:
    """Append a record to one of today's chains (a random shard), linked to that chain's last record."""
    at = at or datetime.now(UTC)
    chain = chain_name(at, random.randrange(SHARDS))
    await conn.execute("INSERT INTO audit_chain_heads (chain, seq, hash) VALUES (%s, 0, %s) ON CONFLICT DO NOTHING",
                       (chain, GENESIS))
    head = await (await conn.execute("SELECT seq, hash FROM audit_chain_heads WHERE chain = %s FOR UPDATE",
                                     (chain,))).fetchone()
    assert head is not None
    seq, prev = int(head["seq"]) + 1, bytes(head["hash"])
    digest = record_hash(key, prev, chain=chain, seq=seq, at=at, user_id=user_id or "", username=username,
                         device_id=device_id, method=method, outcome=outcome, summary=summary, peer=peer)
    await conn.execute(
        """INSERT INTO audit_log (at, user_id, username, device_id, method, outcome, summary, peer,
                                  chain, seq, prev_hash, hash)
           VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)""",
        (at, user_id, username, device_id, method, outcome, Jsonb(summary), peer, chain, seq, prev, digest),
    )
    await conn.execute("UPDATE audit_chain_heads SET seq = %s, hash = %s WHERE chain = %s", (seq, digest, chain))


async def unstage(conn: Connection, call_id: str) -> bool:
    """Remove the call's staged record; False when there was none (never staged, or the drainer moved it)."""
    cur = await conn.execute("DELETE FROM audit_outbox WHERE call_id = %s RETURNING call_id", (call_id,))
    return await cur.fetchone() is not None


async def drain(conn: Connection, *, older_than_seconds: float, key: str, limit: int = 500) -> int:
    """Move staged records older than ``older_than_seconds`` into the chains; how many were moved.

    SKIP LOCKED: a call removing its own row, or another server draining, is
    not waited for; each row is moved by exactly one of them.
    """
    cur = await conn.execute(
        """DELETE FROM audit_outbox WHERE call_id IN (
               SELECT call_id FROM audit_outbox WHERE at < now() - make_interval(secs => %s)
               ORDER BY at LIMIT %s FOR UPDATE SKIP LOCKED)
           RETURNING call_id, at, user_id::text AS user_id, username, device_id, method, summary, peer""",
        (older_than_seconds, limit),
    )
    rows = await cur.fetchall()
    for row in rows:
        await record(conn, user_id=row["user_id"], username=row["username"], device_id=row["device_id"],
                     method=row["method"], outcome=COMMITTED,
                     summary={**row["summary"], "staged_at": row["at"].isoformat(), "call_id": str(row["call_id"])},
                     peer=row["peer"], key=key)
    return len(rows)


async def chain_heads(conn: Connection, start: datetime | None, end: datetime | None) -> dict[str, int]:
    """Each chain's last sequence number, for the chains of the days in [start, end)."""
    cur = await conn.execute(
        """SELECT chain, seq FROM audit_chain_heads
           WHERE (%(start)s::date IS NULL OR split_part(chain, '/', 1)::date >= %(start)s::date)
             AND (%(end)s::date IS NULL OR split_part(chain, '/', 1)::date <= %(end)s::date)""",
        {"start": start, "end": end},
    )
    return {row["chain"]: int(row["seq"]) for row in await cur.fetchall()}


async def chained_records(conn: Connection, chains: list[str]) -> list[ChainedRecord]:
    """Every record of ``chains`` in chain and sequence order, as stored."""
    return await fetch_all(
        conn, ChainedRecord,
        """SELECT id, chain, seq, at, coalesce(user_id::text, '') AS user_id, username, device_id, method, outcome,
                  summary, peer, prev_hash, hash
           FROM audit_log WHERE chain = ANY(%s) ORDER BY chain, seq, id""",
        (chains,),
    )


async def list_records(
    conn: Connection,
    *,
    start: datetime | None,
    end: datetime | None,
    username: str,
    method_contains: str,
    after_id: int | None,
    limit: int,
) -> list[AuditRecord]:
    return await fetch_all(
        conn, AuditRecord,
        """SELECT id, at, coalesce(user_id::text, '') AS user_id, username, device_id, method, outcome,
                  summary, peer
           FROM audit_log
           WHERE (%(start)s::timestamptz IS NULL OR at >= %(start)s)
             AND (%(end)s::timestamptz IS NULL OR at < %(end)s)
             AND (%(username)s = '' OR username = %(username)s)
             AND (%(method)s = '' OR strpos(method, %(method)s) > 0)
             AND (%(after)s::bigint IS NULL OR id < %(after)s)
           ORDER BY id DESC LIMIT %(limit)s""",
        {"start": start, "end": end, "username": username, "method": method_contains,
         "after": after_id, "limit": limit},
    )
