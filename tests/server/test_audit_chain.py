"""The operation log is tamper-evident: edits, deletions and reordering made with SQL are found and named.

``parkgate admin audit verify`` (the console command) checks every chain and
names the record where each breaks; the tampering here is what a database
administrator could do with psql.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys

import psycopg

from parkgate.v1 import admin_pb2
from tests.fixtures.server import Client, RunningServer


def _sql(dsn: str, query: str, *params: object) -> list[tuple]:
    with psycopg.connect(dsn, autocommit=True) as conn:
        cur = conn.execute(query, params)
        return cur.fetchall() if cur.description else []


async def _verify(server: RunningServer, admin: Client) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PARKGATE_TOKEN": admin.token}
    return await asyncio.to_thread(
        subprocess.run, [sys.executable, "-m", "parkgate.common.cli", "admin", "--server", server.address,
                         "audit", "verify"], capture_output=True, text=True, env=env, timeout=60)


def _chain_with(dsn: str, records: int, but_not: set[str]) -> tuple[str, list[int]]:
    """A chain holding at least ``records`` records (not one of ``but_not``), and its record ids in order."""
    for (chain,) in _sql(dsn, "SELECT chain FROM audit_log WHERE chain IS NOT NULL GROUP BY chain "
                              "HAVING count(*) >= %s ORDER BY chain", records):
        if chain not in but_not:
            return chain, [i for (i,) in _sql(dsn, "SELECT id FROM audit_log WHERE chain = %s ORDER BY seq", chain)]
    raise AssertionError(f"no chain with {records} records")


async def test_tampering_with_sql_is_found_and_named(parkgate_server: RunningServer, module_dsn: str) -> None:
    admin = await parkgate_server.admin()
    for n in range(60):  # enough records that several of today's shards hold a few
        await admin.admin.PutDictionaryEntry(admin_pb2.PutDictionaryEntryRequest(entry=admin_pb2.DictionaryEntry(
            key=f"label.chain{n}", language="en", text=f"text {n}")), metadata=admin.metadata)
    clean = await admin.admin.VerifyAuditLog(admin_pb2.VerifyAuditLogRequest(), metadata=admin.metadata)
    assert clean.records_checked >= 60 and clean.chains_checked >= 2 and list(clean.problems) == []
    ok = await _verify(parkgate_server, admin)
    assert ok.returncode == 0, ok.stderr
    assert "no problem" in ok.stderr

    edited_chain, ids = _chain_with(module_dsn, 3, set())
    edited = ids[1]
    _sql(module_dsn, "UPDATE audit_log SET outcome = 'PERMISSION_DENIED' WHERE id = %s", edited)
    deleted_chain, ids = _chain_with(module_dsn, 3, {edited_chain})
    after_deleted = ids[2]
    _sql(module_dsn, "DELETE FROM audit_log WHERE id = %s", ids[1])
    moved_chain, ids = _chain_with(module_dsn, 4, {edited_chain, deleted_chain})
    first, second = ids[1], ids[2]  # swap two records' places in the chain
    _sql(module_dsn, "UPDATE audit_log SET seq = -seq WHERE id IN (%s, %s)", first, second)
    _sql(module_dsn, "UPDATE audit_log SET seq = CASE WHEN id = %s THEN -seq + 1 ELSE -seq - 1 END "
                     "WHERE id IN (%s, %s)", first, first, second)
    tail_chain, ids = _chain_with(module_dsn, 2, {edited_chain, deleted_chain, moved_chain})
    _sql(module_dsn, "DELETE FROM audit_log WHERE id = %s", ids[-1])

    reply = await admin.admin.VerifyAuditLog(admin_pb2.VerifyAuditLogRequest(), metadata=admin.metadata)
    found = {(p.chain, p.record_id): p.problem for p in reply.problems}
    assert "edited" in found[(edited_chain, edited)]
    assert "does not follow" in found[(deleted_chain, after_deleted)] or "missing" in found[
        (deleted_chain, after_deleted)]
    assert (moved_chain, second) in found and (moved_chain, first) in found
    assert any(chain == tail_chain and "end of the chain" in problem for (chain, _), problem in found.items())
    assert {chain for chain, _ in found} == {edited_chain, deleted_chain, moved_chain, tail_chain}

    shown = await _verify(parkgate_server, admin)
    assert shown.returncode == 3
    assert f"record {edited}: its content was edited" in shown.stderr
    assert f"TAMPERED chain {deleted_chain}: record {after_deleted}" in shown.stderr
