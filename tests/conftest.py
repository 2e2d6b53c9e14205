"""Fixtures shared by the whole suite: real PostgreSQL, real gRPC servers on loopback."""

import random
from collections.abc import Iterator

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
