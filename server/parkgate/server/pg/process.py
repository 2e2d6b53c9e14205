"""Starting and stopping daemon child processes (postgres; later etcd and Patroni).

How a daemon child is started (:func:`spawn_daemon`), and why:

* **Own session** (``start_new_session=True``). A Ctrl-C on the terminal sends
  SIGINT to the whole foreground process group. If postgres were in it, it
  would begin its own fast shutdown while our process is still using it, and a
  shell or CI runner killing our process group would kill it behind our back.
  In its own session only *we* signal it: our SIGINT/SIGTERM handler calls
  :meth:`PostgresInstance.stop`, which shuts it down cleanly.
* **Not orphaned if we die.** Being in its own session, the child would outlive
  a crashed or SIGKILLed parent and keep the port and data folder locked. So
  the child gets a *parent-death signal* (Linux ``PR_SET_PDEATHSIG``): when our
  process dies, for whatever reason, the kernel sends it SIGINT, which
  postgres takes as a *fast* shutdown (roll back open transactions, checkpoint,
  exit). It is set with util-linux ``setpriv --pdeathsig INT`` which then
  ``exec``s the real program (same pid; the setting survives exec because
  postgres is not set-uid). Only if ``setpriv`` is missing do we fall back to a
  ``preexec_fn`` calling ``prctl`` (preexec_fn is unsafe with threads).
* **From a thread that never exits.** The kernel sends the parent-death
  signal when the *thread* that forked the child exits, not the process. If
  ``start()`` ran in a worker thread (``asyncio.to_thread``, a thread pool),
  postgres would be shut down the moment that worker retired. So every spawn
  is done by one dedicated daemon thread that lives as long as the process.
* **As the unprivileged user**, via Popen's ``user=``/``group=``, with a small
  clean environment, stdin from /dev/null, stdout+stderr to a log file.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import queue
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from typing import IO, Any

from .users import RunAs

_PR_SET_PDEATHSIG = 1


class _Spawner:
    """Runs Popen on one long-lived daemon thread (see the module docstring)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._queue: queue.SimpleQueue[tuple[Callable[[], subprocess.Popen[bytes]], Future[Any]]] = (
            queue.SimpleQueue()
        )
        self._thread: threading.Thread | None = None

    def _run(self) -> None:
        while True:
            fn, fut = self._queue.get()
            if not fut.set_running_or_notify_cancel():
                continue
            try:
                fut.set_result(fn())
            except BaseException as exc:
                fut.set_exception(exc)

    def submit(self, fn: Callable[[], subprocess.Popen[bytes]]) -> subprocess.Popen[bytes]:
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="parkgate-pg-spawner", daemon=True)
                self._thread.start()
        fut: Future[subprocess.Popen[bytes]] = Future()
        self._queue.put((fn, fut))
        return fut.result()


_spawner = _Spawner()


def _pdeathsig_preexec(sig: int) -> Callable[[], None]:
    libc = ctypes.CDLL(None, use_errno=True)
    prctl = libc.prctl  # resolved in the parent: nothing to look up after fork

    def preexec() -> None:
        prctl(_PR_SET_PDEATHSIG, sig, 0, 0, 0)

    return preexec


def spawn_daemon(
    argv: Sequence[str],
    *,
    run_as: RunAs,
    log_file: IO[bytes] | int | None,
    cwd: str | os.PathLike[str] = "/",
    env: dict[str, str] | None = None,
    parent_death_signal: int | None = signal.SIGINT,
) -> subprocess.Popen[bytes]:
    """Start ``argv`` as a daemon child of this process (own session, dies with us, runs as ``run_as``).

    ``parent_death_signal`` is the signal the child receives when this process
    dies (None: none; the child then survives us). ``log_file`` receives both
    stdout and stderr (None: /dev/null).
    """
    args = [str(a) for a in argv]
    preexec: Callable[[], None] | None = None
    if parent_death_signal is not None:
        setpriv = shutil.which("setpriv") or (
            "/usr/bin/setpriv" if os.path.exists("/usr/bin/setpriv") else None
        )
        if setpriv:
            args = [
                setpriv,
                "--pdeathsig",
                signal.Signals(parent_death_signal).name.removeprefix("SIG"),
                "--",
                *args,
            ]
        else:
            preexec = _pdeathsig_preexec(int(parent_death_signal))
    out: IO[bytes] | int = subprocess.DEVNULL if log_file is None else log_file

    def popen() -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            args,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=str(cwd),
            env=env if env is not None else run_as.env(),
            start_new_session=True,
            close_fds=True,
            preexec_fn=preexec,  # only when setpriv is missing, see the module docstring
            **run_as.subprocess_kwargs(),
        )

    return _spawner.submit(popen)


def pid_alive(pid: int) -> bool:
    """True if a process with ``pid`` exists (a zombie counts as gone)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # exists, owned by someone else
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            state = f.read().rsplit(b")", 1)[1].split()[0]
        return state not in (b"Z", b"X")
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False


def pids_with_cwd(folder: str | os.PathLike[str]) -> list[int]:
    """Processes whose working folder is ``folder``.

    Every postgres process (postmaster and all its children) runs with the data
    folder as its working folder, so this finds leftovers of a killed postmaster
    (backends that have not noticed yet) and verifies that a stop left nothing
    behind. Needs root or the same user to read other processes' ``cwd``.
    """
    target = os.path.realpath(folder)
    found: list[int] = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            if os.readlink(f"/proc/{entry.name}/cwd") == target and pid_alive(int(entry.name)):
                found.append(int(entry.name))
    return found


def wait_pid_gone(pid: int, timeout: float, proc: subprocess.Popen[bytes] | None = None) -> bool:
    """Wait until ``pid`` has exited (reaping it if it is our child ``proc``); False on timeout."""
    deadline = time.monotonic() + timeout
    while True:
        if proc is not None:
            if proc.poll() is not None:
                return True
        elif not pid_alive(pid):
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.02)


def read_tail(path: str | os.PathLike[str], max_bytes: int = 4000) -> str:
    """The last ``max_bytes`` of a log file, decoded leniently ("" if missing)."""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - max_bytes))
            return f.read().decode("utf-8", "replace")
    except FileNotFoundError:
        return ""


__all__ = ["pid_alive", "pids_with_cwd", "read_tail", "spawn_daemon", "wait_pid_gone"]
