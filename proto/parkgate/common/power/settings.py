"""The ``[power]`` section every process's configuration embeds (server, site edge, gate agent, cluster node).

``source = "none"`` (the default) reads no UPS: the process behaves as on mains.
``"nut"`` asks upsd (``ups``, ``host``, ``port``, optional ``login``/``password``);
``"q1"`` asks a Megatec/Q1 UPS on a serial ``device``. The thresholds add to
the UPS's own low-battery flag (``-1``: off).
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from .machine import PowerMachine
from .reading import PowerSource


class PowerSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    source: Literal["none", "nut", "q1"] = "none"
    # NUT: the UPS's name in upsd's ups.conf, and where upsd listens.
    ups: str = "ups"
    host: str = "127.0.0.1"
    port: int = Field(3493, gt=0, lt=65536)
    login: str = ""
    password: str = ""
    # Q1: the serial line and its speed (Megatec UPSes talk 2400 baud).
    device: str = ""
    baud: int = Field(2400, gt=0)
    # Q1 gives a battery voltage, no charge: both set = charge estimated on a line between them.
    battery_low_volts: float = Field(0.0, ge=0)
    battery_full_volts: float = Field(0.0, ge=0)
    poll_seconds: float = Field(2.0, gt=0)
    timeout_seconds: float = Field(3.0, gt=0)
    # Mains must stay good this long before the process leaves its degraded mode (flapping mains).
    settle_seconds: float = Field(30.0, ge=0)
    # No answer from the UPS this long: state UNKNOWN (lost contact).
    lost_after_seconds: float = Field(10.0, gt=0)
    # LOW_BATTERY before the UPS says so: at this charge (%) or runtime (s); -1 = only the UPS's flag.
    low_charge_percent: int = Field(-1, ge=-1, le=100)
    low_runtime_seconds: int = Field(-1, ge=-1)

    @model_validator(mode="after")
    def _complete(self) -> PowerSettings:
        if self.source == "q1" and not self.device:
            raise ValueError("source = \"q1\" needs device (the UPS's serial port, e.g. /dev/ttyS0)")
        if self.source == "nut" and not self.ups:
            raise ValueError("source = \"nut\" needs ups (the UPS's name in upsd)")
        return self

    def machine(self) -> PowerMachine:
        return PowerMachine(settle_seconds=self.settle_seconds, lost_after_seconds=self.lost_after_seconds,
                            low_charge_percent=self.low_charge_percent, low_runtime_seconds=self.low_runtime_seconds)


def open_source(settings: PowerSettings) -> PowerSource | None:
    """The configured UPS (not yet contacted), or None for ``source = "none"``."""
    if settings.source == "nut":
        from .nut import NutSource

        return NutSource(settings.ups, settings.host, settings.port, login=settings.login or None,
                         password=settings.password or None, timeout=settings.timeout_seconds)
    if settings.source == "q1":
        from .q1 import Q1Source

        return Q1Source(settings.device, settings.baud, timeout=settings.timeout_seconds,
                        battery_low_volts=settings.battery_low_volts, battery_full_volts=settings.battery_full_volts)
    return None
