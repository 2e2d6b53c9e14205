"""The store: every SQL statement parkgate runs, and nothing else.

Services call the functions here with a connection from :class:`Database`;
the functions return plain dataclasses from :mod:`parkgate.server.domain` or
builtins. psycopg errors are turned into domain errors at this edge (see
:mod:`.database`), so no layer above ever catches a psycopg exception.
"""

from .database import Database, connection_errors_to_domain
from .migrations import apply_migrations, pending_migrations

__all__ = ["Database", "apply_migrations", "connection_errors_to_domain", "pending_migrations"]
