"""Loads the PostgreSQL fixtures for this folder.

Once ``tests/conftest.py`` has ``pytest_plugins = ["tests.fixtures.postgres"]``
these imports are redundant (and harmless) and can go: ``pytest_plugins`` is
only allowed in the top-level conftest, so it cannot live here.
"""

from tests.fixtures.postgres import database_dsn, fresh_database, module_dsn, postgres_instance

__all__ = ["database_dsn", "fresh_database", "module_dsn", "postgres_instance"]
