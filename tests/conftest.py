"""Fixtures shared by the whole suite: real PostgreSQL, real gRPC servers on loopback."""

import asyncio
import random
import sys
import threading
import traceback
from collections.abc import AsyncIterator, Iterator

import pytest

from tests.native.conftest import pytest_report_header as _native_header

pytest_plugins = [
    "tests.fixtures.postgres",
    "tests.fixtures.server",
    "tests.fixtures.serial",
    "tests.fixtures.pcsc",
    "tests.fixtures.ups",
]


def pytest_configure(config: pytest.Config) -> None:
    # TLS for the whole suite: one test CA, trusted by every client of this process and of the
    # processes it starts (parkgate up, clusters, agents); the servers they start take its certificate.
    from tests.fixtures.server import use_test_pki

    use_test_pki()


def pytest_report_header(config: pytest.Config) -> list[str]:
    # pytest only asks the top-level conftest at start: say which ticket-code core runs.
    return _native_header(config)


@pytest.fixture(autouse=True)
def seeded_jitter(request: pytest.FixtureRequest) -> Iterator[None]:
    """Backoff and reconnect jitter (``random``) runs the same way on every run of a test."""
    state = random.getstate()
    random.seed(request.node.nodeid)
    yield
    random.setstate(state)


@pytest.fixture(scope="session", autouse=True)
async def tasks_left_at_the_end_are_named() -> AsyncIterator[None]:
    """At the end of the run, the tasks still alive are cancelled with a bound, and any that ignore their
    cancellation, and any worker thread still busy, are written out with where they wait: the event loop's
    own close would otherwise hang on them until pytest-timeout, whose dump shows threads but not tasks."""
    yield
    here = asyncio.current_task()
    left = [t for t in asyncio.all_tasks() if t is not here and not t.done()]
    for task in left:
        task.cancel()
    pending: set[asyncio.Task[object]] = set()
    if left:
        _, pending = await asyncio.wait(left, timeout=20)
    frames = sys._current_frames()
    busy = [t for t in threading.enumerate() if t.name.startswith("asyncio_") and t.ident in frames
            and not any("work_queue.get" in (line.line or "") for line in traceback.extract_stack(frames[t.ident]))]
    if pending or busy:
        out = sys.__stderr__
        assert out is not None
        for task in pending:
            # frame by frame: Task.print_stack fails on grpc's Cython frames (no line number)
            where = " <- ".join(f"{f.f_code.co_filename}:{f.f_lineno} ({f.f_code.co_name})"
                                for f in reversed(task.get_stack()))
            out.write(f"\ntask ignoring its cancellation: {task.get_name()} at {where or '?'}\n")
        for thread in busy:
            out.write(f"\nworker thread at the end: {thread.name}\n")
            out.write("".join(traceback.format_stack(frames[thread.ident])))  # type: ignore[index]
        out.flush()
