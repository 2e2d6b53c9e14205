"""A simulated UPS: Network UPS Tools' ``dummy-ups`` driver behind a private ``upsd``, on 127.0.0.1.

For the power drill and the tests: everything NUT needs lives in one folder
(``ups.conf``, ``upsd.conf``, ``upsd.users``, the ``.dev`` file with the
starting values), given to the environment variables NUT reads
(``NUT_CONFPATH``, ``NUT_STATEPATH``, ``NUT_ALTPIDPATH``), so nothing in
``/etc/nut`` is touched and several can run side by side on free ports. As
root, both programs drop to the ``nut`` user Debian's nut-server creates
(``-u nut``); otherwise they run as the caller.

The state is changed the way an operator would, through upsd: ``SET VAR``
with NUT's own client (what ``upsrw`` does); dummy-ups accepts it for every
variable. :meth:`DummyUps.set_status` is ``OL`` -> ``OB`` -> ``OB LB``.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

from PyNUTClient.PyNUT import PyNUTClient, PyNUTError

from .supervisor import ClusterError

DRIVER_DIRS = (Path("/lib/nut"), Path("/usr/lib/nut"), Path("/usr/libexec/nut"))
USER, PASSWORD = "drill", "drill-secret"


class DummyUpsError(ClusterError):
    """NUT is missing or did not start; the message says which program and why."""


def _program(name: str) -> Path:
    for d in DRIVER_DIRS:
        if (d / name).is_file():
            return d / name
    raise DummyUpsError(f"{name} not found in {', '.join(map(str, DRIVER_DIRS))}: install Debian's nut-server "
                        f"(ops/bootstrap.sh does)")


class DummyUps:
    """One UPS named ``name`` served by its own upsd on ``127.0.0.1:port``."""

    def __init__(self, port: int, *, name: str = "ups", folder: Path | None = None,
                 charge: int = 100, runtime: int = 1200) -> None:
        self.port, self.name = port, name
        self.folder = folder or Path(tempfile.mkdtemp(prefix="parkgate-ups-"))
        self.values = {"ups.status": "OL", "battery.charge": str(charge), "battery.runtime": str(runtime),
                       "ups.mfr": "parkgate", "ups.model": "power drill"}
        self._procs: list[subprocess.Popen[bytes]] = []

    @property
    def address(self) -> str:
        return f"{self.name}@127.0.0.1:{self.port}"

    def _env(self) -> dict[str, str]:
        d = str(self.folder)
        return {**os.environ, "NUT_CONFPATH": d, "NUT_STATEPATH": d, "NUT_ALTPIDPATH": d}

    def start(self, timeout: float = 15.0) -> DummyUps:
        driver, upsd = _program("dummy-ups"), _program("upsd")
        f = self.folder
        f.mkdir(parents=True, exist_ok=True)
        (f / "ups.conf").write_text(f"[{self.name}]\n  driver = dummy-ups\n  port = {f / (self.name + '.dev')}\n"
                                    f"  desc = \"parkgate simulated UPS\"\n")
        (f / f"{self.name}.dev").write_text("".join(f"{k}: {v}\n" for k, v in self.values.items()))
        (f / "upsd.conf").write_text(f"LISTEN 127.0.0.1 {self.port}\n")
        (f / "upsd.users").write_text(f"[{USER}]\n  password = {PASSWORD}\n  actions = SET\n  instcmds = ALL\n")
        (f / "nut.conf").write_text("MODE=standalone\n")
        as_user: list[str] = []
        if os.geteuid() == 0:
            nut = pwd.getpwnam("nut")
            for p in [f, *f.iterdir()]:
                os.chown(p, nut.pw_uid, nut.pw_gid)
            as_user = ["-u", "nut"]
        os.chmod(f, 0o750)
        os.chmod(f / "upsd.users", 0o600)
        logs = open(f / "nut.log", "ab")
        for argv in ([str(driver), "-a", self.name, *as_user, "-F"], [str(upsd), "-F", *as_user]):
            self._procs.append(subprocess.Popen(argv, env=self._env(), stdin=subprocess.DEVNULL, stdout=logs,
                                                stderr=logs, start_new_session=True))
            if argv[0] == str(driver):
                self._wait(lambda: any(p.name.startswith("dummy-ups-") for p in f.iterdir()), timeout, "dummy-ups")
        logs.close()
        self._wait(self._answers, timeout, "upsd")
        return self

    def _wait(self, check: object, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while not check():  # type: ignore[operator]
            dead = [p for p in self._procs if p.poll() is not None]
            if dead or time.monotonic() > deadline:
                log = (self.folder / "nut.log").read_text(errors="replace")[-1500:]
                self.stop()
                raise DummyUpsError(f"{what} did not start{' (exited)' if dead else ''}; its log:\n{log}")
            time.sleep(0.1)

    def _answers(self) -> bool:
        try:
            found = PyNUTClient(host="127.0.0.1", port=self.port, timeout=1).GetUPSVars(self.name)
            return found.get(b"ups.status", b"WAIT") != b"WAIT"  # the driver has read its values
        except (PyNUTError, OSError):
            return False

    def set(self, **values: str | int) -> None:
        """SET VAR each ``battery_charge=15`` (underscores for dots) through upsd, as upsrw does."""
        client = PyNUTClient(host="127.0.0.1", port=self.port, login=USER, password=PASSWORD, timeout=3)
        for key, value in values.items():
            var = key.replace("_", ".")
            # The client sends the value as it is; upsd splits on spaces unless it is quoted ("OB LB").
            quoted = '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'
            client.SetRWVar(self.name, var, quoted)
            self.values[var] = str(value)

    def set_status(self, status: str, charge: int | None = None) -> None:
        if charge is not None:
            self.set(battery_charge=charge)
        self.set(ups_status=status)

    def pause(self) -> None:
        """SIGSTOP upsd: it stops answering (a UPS host that hangs) until :meth:`resume`."""
        os.kill(self._procs[-1].pid, signal.SIGSTOP)

    def resume(self) -> None:
        os.kill(self._procs[-1].pid, signal.SIGCONT)

    def stop(self) -> None:
        for p in reversed(self._procs):
            if p.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(p.pid, signal.SIGCONT)
                p.terminate()
                try:
                    p.wait(5)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait(5)
        self._procs.clear()

    def remove(self) -> None:
        self.stop()
        shutil.rmtree(self.folder, ignore_errors=True)
