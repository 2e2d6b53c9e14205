"""The systemd units of ops/systemd never start a process that stopped for power while still on battery (S30).

Runbook: each unit that runs a process with a power watcher restarts it
(Restart=always); those whose process stops itself on low battery (the server,
the site edge: exit status 75, EXIT_POWER_STOP, counted as success) first run
``parkgate power wait-mains`` on the same configuration, without a start time
limit; the gate agent never stops for power and must start at once, on battery
too. systemd itself checks the files (``systemd-analyze verify``, with the
install paths pointed at this checkout), and the very ExecStartPre command is
run against a real upsd + dummy-ups: it waits while the UPS says on battery and
returns once the mains are steady.
"""

from __future__ import annotations

import asyncio
import configparser
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

from parkgate.common.power import EXIT_POWER_STOP, PowerSettings, wait_for_mains
from parkgate.ha.dummy_ups import DummyUps
from parkgate.server.pg import free_port

from .test_sources import until

ROOT = Path(__file__).resolve().parents[2]
UNITS = ROOT / "ops" / "systemd"
INSTALLED = "/opt/parkgate/.venv/bin/parkgate"
#: The units whose process watches a UPS, and whether that process stops itself for power.
POWER_UNITS = {"parkgate-server@.service": True, "parkgate-site@.service": True, "parkgate-gate@.service": False}


def unit(name: str) -> dict[str, str]:
    parser = configparser.ConfigParser(interpolation=None, strict=True, delimiters=("=",))
    parser.optionxform = str  # type: ignore[assignment,method-assign]  # systemd keys are case-sensitive
    parser.read_string((UNITS / name).read_text())
    return dict(parser["Service"])


def config_of(command: str) -> str:
    words = shlex.split(command)
    return words[words.index("--config") + 1]


def test_every_power_watching_unit_waits_for_the_mains_after_a_power_stop() -> None:
    runs = {name: unit(name)["ExecStart"] for name in os.listdir(UNITS) if name.endswith(".service")}
    watching = sorted(n for n, start in runs.items()
                      if any(f"{INSTALLED} {c}" in start for c in ("server ", "site run ", "gate run ")))
    assert watching == sorted(POWER_UNITS), "a unit runs a process with a power watcher: add it to POWER_UNITS"
    for name, stops_for_power in POWER_UNITS.items():
        service = unit(name)
        assert service["Restart"] == "always", name
        pre = service.get("ExecStartPre", "")
        if stops_for_power:
            assert shlex.split(pre)[:3] == [INSTALLED, "power", "wait-mains"], name
            assert config_of(pre) == config_of(service["ExecStart"]), name  # the same UPS as the process reads
            assert service["TimeoutStartSec"] == "infinity", name
            assert str(EXIT_POWER_STOP) in service["SuccessExitStatus"].split(), name
        else:
            assert "wait-mains" not in pre, f"{name}: its process must start on battery too"


def test_systemd_accepts_the_units(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    assert analyze is not None, "systemd-analyze (package systemd) is needed to check the units"
    parkgate = Path(sys.executable).with_name("parkgate")
    names = []
    for name in sorted(os.listdir(UNITS)):
        text = (UNITS / name).read_text().replace(INSTALLED, str(parkgate))
        text = text.replace("/opt/parkgate/.venv/bin/python", sys.executable).replace("/usr/local/bin/etcd", "/bin/true")
        instance = name.replace("@.", "@check.")  # verify wants an instance of a template
        (tmp_path / instance).write_text(text)
        names.append(str(tmp_path / instance))
    done = subprocess.run([analyze, "verify", *names], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and not done.stderr.strip() and not done.stdout.strip(), done.stderr + done.stdout


async def test_wait_mains_waits_on_battery_and_returns_on_steady_mains(dummy_ups: DummyUps, tmp_path: Path) -> None:
    config = tmp_path / "site.toml"
    config.write_text(f'[site]\ndevice_id = "x"\n\n[power]\nsource = "nut"\nport = {dummy_ups.port}\n'
                      'poll_seconds = 0.2\nsettle_seconds = 1.0\ndecide_locally_on_battery = true\n')
    dummy_ups.set_status("OB", charge=40)
    pre = shlex.split(unit("parkgate-site@.service")["ExecStartPre"])
    command = [str(Path(sys.executable).with_name("parkgate")), *pre[1:-1], str(config)]
    errors = tmp_path / "stderr"
    with errors.open("w") as err:
        process = await asyncio.create_subprocess_exec(*command, stderr=err, stdout=subprocess.DEVNULL)
    try:
        await until(lambda: "on battery (OB" in errors.read_text(), "wait-mains reading the battery")
        assert process.returncode is None  # on battery: the edge is not started
        dummy_ups.set_status("OL")
        assert await asyncio.wait_for(process.wait(), 30) == 0, errors.read_text()
        assert "mains steady for" in errors.read_text(), errors.read_text()
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


async def test_wait_mains_does_not_keep_a_process_down_without_a_ups_to_ask() -> None:
    """No UPS configured: at once. A upsd that does not answer (lost contact): after lost_after_seconds."""
    said: list[str] = []
    assert "no UPS configured" in await wait_for_mains(PowerSettings(), said.append)
    silent = PowerSettings(source="nut", port=free_port(), poll_seconds=0.1, timeout_seconds=0.5,
                           lost_after_seconds=0.5)
    why = await asyncio.wait_for(wait_for_mains(silent, said.append), 30)
    assert why.startswith("the UPS does not answer"), why
    assert said and said[0].startswith("no reading"), said
