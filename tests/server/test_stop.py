"""A server's stop always ends: one stuck part is named in the log and left behind, the rest still stops.

A stop on low battery (S30) must finish before the battery does; a task that
swallows its cancellation (a library's, or ours by mistake) would otherwise
hang it for good, as it once hung a test run's teardown.
"""

from __future__ import annotations

import asyncio
import logging

import pytest

from parkgate.server import app
from tests.fixtures.server import start_server, stop_server


async def test_a_task_that_ignores_its_cancellation_is_named_and_does_not_hang_the_stop(
        database_dsn: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setattr(app, "STOP_STEP_SECONDS", 1.0)
    caplog.set_level(logging.INFO, logger="parkgate.server.app")
    running = await start_server(database_dsn)
    release = asyncio.Event()

    async def stubborn() -> None:
        while not release.is_set():
            try:
                await release.wait()
            except asyncio.CancelledError:
                continue  # the mistake this guards against

    task = asyncio.create_task(stubborn(), name="stubborn-task")
    running.server._tasks.append(task)
    await asyncio.wait_for(stop_server(running), 60)  # without the bound: never returns
    stuck = [r.getMessage() for r in caplog.records if "did not finish" in r.getMessage()]
    assert stuck and "the server's own tasks" in stuck[0] and "stubborn-task" in stuck[0]
    assert any("stopped" in r.getMessage() for r in caplog.records if r.getMessage().startswith("parkgate server"))
    assert running.server.db.pool.closed  # the pool still closed after the stuck step
    release.set()
    await task
