"""Who PostgreSQL runs as, and whether that user can reach the paths it needs.

PostgreSQL refuses to run as root. When parkgate runs as root (a service, a
container, CI) every PostgreSQL process is started as the unprivileged system
user ``parkgate``:

* its own name, not ``postgres``, so that we never share a user, a home folder
  or file ownerships with a distribution's PostgreSQL packages installed on
  the same machine (Debian's ``postgresql-15`` owns ``postgres`` and
  ``/var/lib/postgresql``);
* a system account without a login shell (``/usr/sbin/nologin``) and with the
  home folder ``/var/lib/parkgate``, which is root-owned and mode 0755: the user
  can enter it but not change what root stages there (binaries, see
  :mod:`parkgate.server.pg.binaries`); the folders it writes (data folders) are
  created inside and handed to it with :func:`prepare_dir`.

When parkgate does not run as root, PostgreSQL simply runs as the current user.

Reachability is checked exactly: the kernel is asked, by running ``test`` as the
user (which takes ACLs, mount options and supplementary groups into account),
and only when that fails is the path walked folder by folder with the mode bits
to name the folder that blocks and why.
"""

from __future__ import annotations

import grp
import logging
import os
import pwd
import shutil
import stat
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from .errors import PathNotReachable, UserSetupFailed

log = logging.getLogger("parkgate.server.pg")

#: The system user that runs PostgreSQL (and Patroni) when parkgate runs as root.
DEFAULT_USER = "parkgate"
#: Its home folder; root-owned, 0755. Staged binaries and default data live below it.
DEFAULT_HOME = Path("/var/lib/parkgate")

Access = Literal["exists", "read", "write", "exec"]
_TEST_FLAG = {"exists": "-e", "read": "-r", "write": "-w", "exec": "-x"}
_MODE_BIT = {"read": 4, "write": 2, "exec": 1}


@dataclass(frozen=True)
class RunAs:
    """An OS user that child processes run as.

    ``is_current`` is true when this is the user we already are: then no
    credential switch happens (and none is possible without root).
    """

    name: str
    uid: int
    gid: int
    home: Path
    groups: tuple[int, ...] = field(default=())

    @property
    def is_current(self) -> bool:
        return self.uid == os.geteuid()

    def subprocess_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for :class:`subprocess.Popen`/``run`` that make the child run as this user.

        Uses Popen's own ``user=``/``group=``/``extra_groups=`` (Python >= 3.9),
        which switch credentials in the child between fork and exec without a
        ``preexec_fn`` (preexec_fn is unsafe in a process with threads, and the
        gRPC server has many).
        """
        if self.is_current:
            return {}
        return {"user": self.uid, "group": self.gid, "extra_groups": list(self.groups)}

    def env(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        """A small, predictable environment for the child.

        The caller's environment is deliberately not inherited: ``PGDATA``,
        ``PGPORT``, ``PGHOST``, ``LANG`` and friends would silently change what
        initdb, postgres or pg_isready do.
        """
        env = {
            "PATH": "/usr/local/bin:/usr/bin:/bin",
            "HOME": str(self.home),
            "USER": self.name,
            "LOGNAME": self.name,
            "LC_ALL": "C.UTF-8",
            "LANG": "C.UTF-8",
        }
        if "TZ" in os.environ:
            env["TZ"] = os.environ["TZ"]
        if extra:
            env.update(extra)
        return env

    def owns(self, path: str | os.PathLike[str]) -> bool:
        return os.stat(path).st_uid == self.uid


def is_root() -> bool:
    return os.geteuid() == 0


def _from_passwd(entry: pwd.struct_passwd) -> RunAs:
    groups = tuple(sorted({g.gr_gid for g in grp.getgrall() if entry.pw_name in g.gr_mem} - {entry.pw_gid}))
    return RunAs(
        name=entry.pw_name, uid=entry.pw_uid, gid=entry.pw_gid, home=Path(entry.pw_dir), groups=groups
    )


def current_user() -> RunAs:
    """The user this process runs as."""
    try:
        entry = pwd.getpwuid(os.geteuid())
    except KeyError:  # a container uid without a passwd entry
        uid = os.geteuid()
        return RunAs(name=str(uid), uid=uid, gid=os.getegid(), home=Path(os.environ.get("HOME", "/")))
    return _from_passwd(entry)


def lookup_user(name: str) -> RunAs | None:
    try:
        return _from_passwd(pwd.getpwnam(name))
    except KeyError:
        return None


def ensure_user(name: str = DEFAULT_USER, home: Path = DEFAULT_HOME) -> RunAs:
    """The user PostgreSQL should run as: create the system user ``name`` if we are root.

    Not root: returns :func:`current_user` (PostgreSQL runs as us; ``name`` is
    ignored). Root: looks ``name`` up and, if missing, creates it with
    ``useradd --system --user-group --no-create-home --shell /usr/sbin/nologin``;
    the home folder is created root-owned 0755 (see the module docstring).
    """
    if not is_root():
        return current_user()
    found = lookup_user(name)
    if found is None:
        useradd = shutil.which("useradd") or "/usr/sbin/useradd"
        if not os.path.exists(useradd):
            raise UserSetupFailed(
                f"cannot create the system user {name!r} that runs PostgreSQL: useradd is not installed "
                f"(Debian package 'passwd'); create the user by hand or install it"
            )
        cmd = [
            useradd,
            "--system",
            "--user-group",
            "--no-create-home",
            "--home-dir",
            str(home),
            "--shell",
            "/usr/sbin/nologin",
            "--comment",
            "parkgate PostgreSQL",
            name,
        ]
        res = subprocess.run(cmd, capture_output=True, text=True, check=False)
        # exit code 9: created concurrently by another process; fine.
        if res.returncode not in (0, 9):
            raise UserSetupFailed(
                f"cannot create the system user {name!r}: {' '.join(cmd)} exited with {res.returncode}: "
                f"{res.stderr.strip()}"
            )
        log.info("created system user %s (home %s)", name, home)
        found = lookup_user(name)
        if found is None:
            raise UserSetupFailed(f"useradd reported success but user {name!r} does not exist")
    if found.uid == 0:
        raise UserSetupFailed(f"user {name!r} has uid 0; PostgreSQL refuses to run as root")
    if found.home == home:
        ensure_root_dir(home)
    return found


def resolve_run_as(run_as: RunAs | str | None) -> RunAs:
    """Normalize a ``run_as`` argument: None means the default (``parkgate`` as root, else ourselves)."""
    if isinstance(run_as, RunAs):
        return run_as
    if run_as is None:
        return ensure_user()
    if not is_root():
        me = current_user()
        if run_as != me.name:
            raise UserSetupFailed(
                f"cannot run PostgreSQL as {run_as!r}: only root can switch users (we are {me.name!r})"
            )
        return me
    return ensure_user(run_as)


def ensure_root_dir(path: Path, mode: int = 0o755) -> None:
    """Create ``path`` (and missing parents) root-owned with ``mode``; leave existing folders alone."""
    missing: list[Path] = []
    p = path
    while not p.exists():
        missing.append(p)
        p = p.parent
    for d in reversed(missing):
        try:
            d.mkdir(mode=mode)
        except FileExistsError:
            continue
        os.chmod(d, mode)  # mkdir's mode is filtered by the umask


def prepare_dir(path: str | os.PathLike[str], run_as: RunAs, mode: int = 0o700) -> Path:
    """Create ``path`` if needed and hand it to ``run_as`` with ``mode`` (0700 suits a data folder).

    Missing parent folders are created 0755 (owned by us). The folder itself is
    chowned (not recursively: an existing data folder is already the user's).
    Finally checks that the user can actually write it, so a parent folder that
    only root can enter is reported here, naming that folder.
    """
    p = Path(path).absolute()
    ensure_root_dir(p.parent)
    p.mkdir(mode=mode, exist_ok=True)
    if is_root() and not run_as.is_current:
        st = p.stat()
        if st.st_uid != run_as.uid or st.st_gid != run_as.gid:
            os.chown(p, run_as.uid, run_as.gid)
    os.chmod(p, mode)
    check_reachable(p, run_as, "write")
    return p


def _bits_allow(st: os.stat_result, who: RunAs, bit: int) -> bool:
    if who.uid == 0:
        # root: read/write always, exec if any x bit (or a folder)
        return bit != 1 or stat.S_ISDIR(st.st_mode) or bool(st.st_mode & 0o111)
    if st.st_uid == who.uid:
        shift = 6
    elif st.st_gid == who.gid or st.st_gid in who.groups:
        shift = 3
    else:
        shift = 0
    return bool((st.st_mode >> shift) & bit)


def _describe(p: Path, st: os.stat_result) -> str:
    try:
        owner = pwd.getpwuid(st.st_uid).pw_name
    except KeyError:
        owner = str(st.st_uid)
    try:
        group = grp.getgrgid(st.st_gid).gr_name
    except KeyError:
        group = str(st.st_gid)
    return f"{p} (mode {stat.S_IMODE(st.st_mode):04o}, owner {owner}:{group})"


def find_blocking(
    path: str | os.PathLike[str], who: RunAs, access: Access = "exec"
) -> tuple[str, str] | None:
    """Walk from ``/`` to ``path`` with the mode bits; return ``(blocking_path, reason)`` or None.

    This is the explanation, not the verdict: ACLs, LSMs and mount options are
    not modelled here (the verdict comes from :func:`can_access`).
    """
    p = Path(path).absolute()
    parts = [*reversed(p.parents), p]
    for i, cur in enumerate(parts):
        last = i == len(parts) - 1
        try:
            st = cur.stat()
        except FileNotFoundError:
            return str(cur), f"{cur} does not exist"
        except PermissionError as exc:  # we are not root and cannot see it ourselves
            return str(cur), f"{cur}: {exc.strerror}"
        if not last:
            if not stat.S_ISDIR(st.st_mode):
                return str(cur), f"{cur} is not a folder"
            if not _bits_allow(st, who, 1):
                return str(cur), (
                    f"user {who.name} (uid {who.uid}) cannot enter {_describe(cur, st)}: "
                    f"no search (x) permission for it"
                )
            continue
        if access == "exists":
            return None
        bit = _MODE_BIT[access]
        if not _bits_allow(st, who, bit):
            word = {4: "read (r)", 2: "write (w)", 1: "execute/search (x)"}[bit]
            return str(
                cur
            ), f"user {who.name} (uid {who.uid}) has no {word} permission on {_describe(cur, st)}"
    return None


def can_access(path: str | os.PathLike[str], who: RunAs, access: Access = "exec") -> bool:
    """Exact check: ask the kernel, as ``who``, whether ``path`` is reachable with ``access``."""
    if who.is_current:
        if access == "exists":
            return os.path.exists(path)
        mode = {"read": os.R_OK, "write": os.W_OK, "exec": os.X_OK}[access]
        return os.access(path, mode)
    test = shutil.which("test") or "/usr/bin/test"
    res = subprocess.run(
        [test, _TEST_FLAG[access], str(path)],
        env=who.env(),
        cwd="/",
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        check=False,
        **who.subprocess_kwargs(),
    )
    return res.returncode == 0


def check_reachable(
    path: str | os.PathLike[str],
    who: RunAs,
    access: Access = "exec",
    *,
    error: type[PathNotReachable] = PathNotReachable,
    what: str = "",
) -> None:
    """Raise ``error`` naming the blocking folder when ``who`` cannot reach ``path`` with ``access``."""
    if can_access(path, who, access):
        return
    found = find_blocking(path, who, access)
    blocking, reason = (
        found if found else (None, "denied by the kernel (ACL, mount option such as noexec, or LSM)")
    )
    label = f"{what} " if what else ""
    raise error(
        f"user {who.name} cannot {access} {label}{path}: {reason}. "
        f"Move it to a folder every user can enter (e.g. under /var/lib or /opt), "
        f"or open up the blocking folder (chmod o+x), or run parkgate as {who.name}.",
        path=str(path),
        blocking=blocking,
        reason=reason,
    )
