"""Waiting for steady mains before a process starts (``parkgate power wait-mains``, systemd's ExecStartPre).

A process that stopped itself on low battery exits with :data:`EXIT_POWER_STOP`.
Its systemd unit restarts it, but first runs ``parkgate power wait-mains`` on the
same ``[power]`` section: that returns only once the UPS has read on mains,
without a break, for ``settle_seconds`` -- so a process is never started again
on battery (where it would stop at once, or worse, flap), and comes back by
itself when the mains do, with no manual step. Three cases return at once or
soon: no UPS configured (``source = "none"``), and a UPS that cannot be read for
``lost_after_seconds`` (lost contact: the process would serve in full anyway,
and a missing upsd must not keep the park's servers down).
"""

from __future__ import annotations

import asyncio
import time
import tomllib
from collections.abc import Callable
from pathlib import Path

from .reading import PowerSourceError
from .settings import PowerSettings, open_source

#: Exit status of a process that stopped itself for power (low battery, the UPS's forced shutdown).
#: 75 is sysexits' EX_TEMPFAIL: "try again later" -- here, once the mains are back.
EXIT_POWER_STOP = 75


def power_settings_of(path: str | Path) -> PowerSettings:
    """The ``[power]`` table of a server's, site edge's or gate agent's TOML (keys of one process ignored)."""
    table = tomllib.loads(Path(path).read_text()).get("power", {})
    known = set(PowerSettings.model_fields)
    return PowerSettings(**{k: v for k, v in table.items() if k in known})


async def wait_for_mains(settings: PowerSettings, say: Callable[[str], None],
                         clock: Callable[[], float] = time.monotonic) -> str:
    """Return (why) once the mains have been good for ``settle_seconds``, or the UPS is not there to ask."""
    source = open_source(settings)
    if source is None:
        return "no UPS configured (source = \"none\")"
    mains_since: float | None = None
    last_ok = clock()
    said = ""
    try:
        while True:
            try:
                reading = await asyncio.to_thread(source.read)
            except PowerSourceError as exc:
                mains_since = None
                if clock() - last_ok >= settings.lost_after_seconds:
                    return f"the UPS does not answer ({exc}): starting as on lost contact"
                now_said = f"no reading ({exc})"
            else:
                last_ok = clock()
                if reading.on_battery or reading.forced_shutdown:
                    mains_since = None
                    now_said = f"on battery ({reading.describe()}): waiting for the mains"
                else:
                    mains_since = last_ok if mains_since is None else mains_since
                    steady = last_ok - mains_since
                    if steady >= settings.settle_seconds:
                        return f"mains steady for {steady:.1f}s ({reading.describe()})"
                    now_said = f"mains back ({reading.describe()}): waiting {settings.settle_seconds:g}s steady"
            if now_said != said:
                say(now_said)
                said = now_said
            await asyncio.sleep(settings.poll_seconds)
    finally:
        await asyncio.to_thread(source.close)
