"""A mutating call whose change commits always has its operation-log record, even when chaining it fails.

The call's transaction stages the record in ``audit_outbox``; the chained
record written after the call removes it. Here the chain write is made to
fail with a trigger on ``audit_log`` (what a full disk, a lost connection or a
broken chain table would do): the change is still there, its record waits in
the outbox, and once the chain accepts writes again the server's drainer
chains it, and the chains still verify.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator

import grpc
import psycopg
import pytest

from parkgate.v1 import admin_pb2
from tests.fixtures.server import RunningServer, start_server, stop_server

CHAINED_PUT = "/parkgate.v1.Admin/PutDictionaryEntry"


def _sql(dsn: str, query: str, *params: object) -> list[tuple]:
    with psycopg.connect(dsn, autocommit=True) as conn:
        cur = conn.execute(query, params)
        return cur.fetchall() if cur.description else []


async def _until(what: str, check, limit: float = 60.0):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + limit
    while True:
        found = check()
        if found:
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {limit:.0f}s: {what}")
        await asyncio.sleep(0.2)


@pytest.fixture(scope="module")
async def server(module_dsn: str) -> AsyncIterator[RunningServer]:
    running = await start_server(module_dsn, **{"auth.audit_outbox_seconds": 1.0})
    yield running
    await stop_server(running)


def _records(dsn: str, key: str) -> list[tuple]:
    return _sql(dsn, "SELECT outcome, chain, summary FROM audit_log WHERE method = %s AND summary::text LIKE %s",
                CHAINED_PUT, f"%{key}%")


async def test_normal_call_chains_its_record_and_leaves_no_outbox_row(server: RunningServer, module_dsn: str) -> None:
    admin = await server.admin()
    await admin.admin.PutDictionaryEntry(admin_pb2.PutDictionaryEntryRequest(entry=admin_pb2.DictionaryEntry(
        key="label.outbox.normal", language="en", text="fine")), metadata=admin.metadata)
    records = _records(module_dsn, "label.outbox.normal")
    assert [r[0] for r in records] == ["OK"] and records[0][1] is not None
    assert _sql(module_dsn, "SELECT count(*) FROM audit_outbox")[0][0] == 0


async def test_committed_change_keeps_its_record_when_the_chain_write_fails(
        server: RunningServer, module_dsn: str, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="parkgate.server.app")
    admin = await server.admin()
    _sql(module_dsn, """CREATE FUNCTION refuse_audit() RETURNS trigger LANGUAGE plpgsql AS $$
                        BEGIN RAISE EXCEPTION 'audit_log refuses writes (test)'; END $$""")
    _sql(module_dsn, "CREATE TRIGGER refuse_audit BEFORE INSERT ON audit_log "
                     "FOR EACH ROW EXECUTE FUNCTION refuse_audit()")
    try:
        # The call succeeds: its change committed; only the chained record after it failed.
        await admin.admin.PutDictionaryEntry(admin_pb2.PutDictionaryEntryRequest(entry=admin_pb2.DictionaryEntry(
            key="label.outbox.lost", language="en", text="kept")), metadata=admin.metadata)
        assert _sql(module_dsn, "SELECT text FROM dictionary WHERE key = 'label.outbox.lost'") == [("kept",)]
        assert _records(module_dsn, "label.outbox.lost") == []
        staged = _sql(module_dsn, "SELECT method, username, summary::text FROM audit_outbox")
        assert len(staged) == 1 and staged[0][0] == CHAINED_PUT and staged[0][1] == "admin"
        assert "label.outbox.lost" in staged[0][2]
        # While the chain refuses writes the drainer cannot move it either, and does not lose it.
        await _until("the drainer tried and failed", lambda: any(
            "outbox not drained" in r.getMessage() and "refuses writes" in r.getMessage() for r in caplog.records))
        assert len(_sql(module_dsn, "SELECT 1 FROM audit_outbox")) == 1
    finally:
        _sql(module_dsn, "DROP TRIGGER refuse_audit ON audit_log")
        _sql(module_dsn, "DROP FUNCTION refuse_audit()")
    records = await _until("the drainer chains the staged record",
                           lambda: _records(module_dsn, "label.outbox.lost"))
    assert [r[0] for r in records] == ["COMMITTED"] and records[0][1] is not None
    assert _sql(module_dsn, "SELECT count(*) FROM audit_outbox")[0][0] == 0
    verified = await admin.admin.VerifyAuditLog(admin_pb2.VerifyAuditLogRequest(), metadata=admin.metadata)
    assert list(verified.problems) == []


async def test_refused_call_stages_nothing(server: RunningServer, module_dsn: str) -> None:
    admin = await server.admin()
    with pytest.raises(grpc.aio.AioRpcError):
        await admin.admin.PutDictionaryEntry(admin_pb2.PutDictionaryEntryRequest(entry=admin_pb2.DictionaryEntry(
            key="", language="en", text="no key")), metadata=admin.metadata)
    assert _sql(module_dsn, "SELECT count(*) FROM audit_outbox")[0][0] == 0
    assert _sql(module_dsn, "SELECT outcome FROM audit_log WHERE method = %s ORDER BY id DESC LIMIT 1",
                CHAINED_PUT) == [("INVALID_ARGUMENT",)]
