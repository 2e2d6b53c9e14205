"""Fixtures shared by the whole suite: real PostgreSQL, real gRPC servers on loopback."""

pytest_plugins = ["tests.fixtures.postgres", "tests.fixtures.server"]
