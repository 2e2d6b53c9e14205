"""Fixtures shared by the whole suite: real PostgreSQL, real gRPC servers on loopback."""

import pytest

from tests.native.conftest import pytest_report_header as _native_header

pytest_plugins = [
    "tests.fixtures.postgres",
    "tests.fixtures.server",
    "tests.fixtures.serial",
    "tests.fixtures.pcsc",
    "tests.fixtures.ups",
]


def pytest_report_header(config: pytest.Config) -> list[str]:
    # pytest only asks the top-level conftest at start: say which ticket-code core runs.
    return _native_header(config)
