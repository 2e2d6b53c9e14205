"""A gate controller's configuration: one typed object from one TOML file (``parkgate gate run --config``).

Like the server's configuration, unknown keys and wrong types stop start-up
with a message naming the key: a typo in a gate's file must never fall back
silently to a default (a missing ``[relay]`` section, for instance, turns the
gate into a handheld that opens nothing). Sections:

``[gate]``         who the gate is, which servers it talks to, deadlines and backoff
``[scanner]``      the serial barcode/QR scanner (optional)
``[card_reader]``  the PC/SC contactless reader (optional)
``[relay]``        the turnstile's relay board (optional: absent = handheld mode)
``[fast_mode]``    S24: open on a locally valid signature, and offline admissions
``[emergency]``    local fire input: the relay board's input, signals, a serial line
``[check]``        hold-for-check: how a checker lets a held person through
``[display]``      the gate's own texts (the server's texts come with each decision)

``ops/gate.sample.toml`` is a commented example; docs/gate-agent.md explains each key.
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from parkgate.common.channels import Transport, device_transport
from parkgate.common.power import PowerSettings

from ..devices import Framing, SerialSettings


class GateConfigError(Exception):
    """A configuration the gate cannot run with; the message names the key."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _hostport(value: str) -> str:
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"expected HOST:PORT, got {value!r}")
    return value


class GateSection(_Section):
    device_id: str = Field(min_length=1)
    # The device secret shown once by `parkgate admin device-register`, in a file (mode 0600).
    secret_file: Path
    # Tried in order; the next one when a server does not answer (failover).
    servers: list[str] = Field(min_length=1)
    park: str = ""
    attraction: str = ""
    direction: Literal["in", "out"] = "in"
    # Keyring cache and offline admissions; empty = no files (a gate that boots offline has no keys).
    state_dir: Path | None = None
    # How long a person waits for the server's decision before the gate falls back to its offline rules.
    request_deadline_seconds: float = Field(2.0, gt=0, le=30)
    connect_timeout_seconds: float = Field(5.0, gt=0)
    heartbeat_seconds: float = Field(10.0, gt=0)
    reconnect_min_seconds: float = Field(0.5, gt=0)
    reconnect_max_seconds: float = Field(30.0, gt=0)
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    # TLS: the CA the servers' certificates are checked against (empty: $PARKGATE_TLS_CA_FILE, else the
    # system's roots), and the gate's own client certificate and key (mTLS, docs/security.md), which
    # `parkgate gate enroll` writes. Empty: $PARKGATE_TLS_CERT_FILE / $PARKGATE_TLS_KEY_FILE, else none.
    tls_ca_file: Path | None = None
    tls_cert_file: Path | None = None
    tls_key_file: Path | None = None
    # Renew the client certificate (a new key, enrolled with the secret over the current certificate) when it
    # expires within this many days; 0 = never (`parkgate gate enroll` by hand or from a timer).
    renew_days_before: float = Field(10.0, ge=0)

    @field_validator("servers")
    @classmethod
    def _servers(cls, value: list[str]) -> list[str]:
        return [_hostport(v) for v in value]

    @model_validator(mode="after")
    def _backoff(self) -> GateSection:
        if self.reconnect_min_seconds > self.reconnect_max_seconds:
            raise ValueError("reconnect_min_seconds must not exceed reconnect_max_seconds")
        if (self.tls_cert_file is None) != (self.tls_key_file is None):
            raise ValueError("tls_cert_file and tls_key_file go together")
        return self

    def transport(self) -> Transport:
        """How the gate reaches its servers: the environment's TLS, with this file's CA and certificate."""
        return device_transport(self.tls_ca_file, self.tls_cert_file, self.tls_key_file)


class ScannerSection(_Section):
    port: str
    baud: int = Field(9600, gt=0)
    terminator: Literal["CR", "LF", "CRLF", "ANY"] = "CR"
    prefix: str = ""
    suffix: str = ""
    max_length: int = Field(512, ge=1)
    frame_timeout_seconds: float = Field(0.5, gt=0)

    def settings(self) -> SerialSettings:
        return SerialSettings(self.port, baudrate=self.baud)

    def framing(self) -> Framing:
        return Framing(terminator=self.terminator, prefix=self.prefix, suffix=self.suffix,
                       max_length=self.max_length, frame_timeout=self.frame_timeout_seconds)


class CardReaderSection(_Section):
    # A case-insensitive part of the PC/SC reader name ("ACR122", "Virtual PCD 00 00"); empty = the first.
    name: str = ""


class RelaySection(_Section):
    port: str
    baud: int = Field(9600, gt=0)
    # How long one OPEN waits for its person (the board's range is 100-60000 ms).
    open_ms: int = Field(5000, ge=100, le=60000)
    # The board reports PASSED/NOTPASSED and the server gives unpassed entries back.
    confirm_passage: bool = True
    # No report from the board this long after an OPEN reached it: counted as not passed.
    passage_timeout_seconds: float = Field(10.0, gt=0)
    # Mains lost (POWER LOST from the board): keep the gate locked, or open it and hold it open.
    on_power_loss: Literal["stay_locked", "open"] = "stay_locked"

    def settings(self) -> SerialSettings:
        return SerialSettings(self.port, baudrate=self.baud)


class FastModeSection(_Section):
    # S24: open on a locally valid signature at once; the server's decision follows (a denial is an ALERT).
    enabled: bool = False
    # With no server answering in time: admit on a valid signature (recorded, forwarded later) or refuse.
    offline_admit: bool = True
    # The park's IANA time zone, for night-tour windows checked locally.
    time_zone: str = "UTC"


class EmergencySection(_Section):
    # Follow the relay board's EMERGENCY ON/OFF input (the board holds the gate open by itself anyway).
    relay_input: bool = True
    # SIGUSR1 = emergency on, SIGUSR2 = off (a fire panel's contact through a small script, or a technician).
    signals: bool = True
    # A separate serial line from the fire panel sending lines "ON"/"OFF" (or "EMERGENCY ON"/"EMERGENCY OFF").
    serial_port: str = ""
    serial_baud: int = Field(9600, gt=0)


class CheckSection(_Section):
    # Codes a checker scans at the gate to let a held person (hold_for_check) through.
    confirm_codes: list[str] = []
    # Nobody confirmed within this time: the gate stays closed and the entry is given back. Keep it below
    # the server's sweep (2 x parameter gate.passage_timeout_seconds, 20 s by default), which annuls
    # admissions whose passage was never reported.
    timeout_seconds: float = Field(15.0, gt=0)


class DisplaySection(_Section):
    idle: str = "Please scan your ticket"
    paused: str = "Park full - please wait"
    offline: str = "Gate offline - please see staff"
    emergency: str = "Emergency - gate open"
    check: str = "Please see the checker"
    check_timeout: str = "Not confirmed - see staff"
    offline_welcome: str = "Welcome"


class MetricsSection(_Section):
    # HOST:PORT of the gate's Prometheus /metrics endpoint (docs/monitor.md); empty = off.
    listen: str = ""

    @field_validator("listen")
    @classmethod
    def _listen(cls, value: str) -> str:
        host, sep, port = value.rpartition(":")
        if value and (not sep or not host or not port.isdigit() or int(port) > 65535):
            raise ValueError(f"expected HOST:PORT (port 0: any free one), got {value!r}")
        return value
class GatePowerSection(PowerSettings):
    """The gate's UPS (docs/power.md): the shared ``[power]`` keys, plus what the gate does on battery."""

    # On battery (the UPS's word, or the relay board's POWER LOST): decide every person locally with the
    # decision engine, each admission in the durable journal, forwarded when the mains are back (S30).
    decide_locally_on_battery: bool = True


class GateConfig(_Section):
    gate: GateSection
    scanner: ScannerSection | None = None
    card_reader: CardReaderSection | None = None
    relay: RelaySection | None = None
    fast_mode: FastModeSection = FastModeSection()
    emergency: EmergencySection = EmergencySection()
    check: CheckSection = CheckSection()
    display: DisplaySection = DisplaySection()
    metrics: MetricsSection = MetricsSection()
    power: GatePowerSection = GatePowerSection()

    @model_validator(mode="after")
    def _inputs(self) -> GateConfig:
        if self.scanner is None and self.card_reader is None:
            raise ValueError("a gate needs a [scanner] or a [card_reader] section (or both)")
        return self

    @property
    def handheld(self) -> bool:
        """No relay: decisions are shown, nothing opens."""
        return self.relay is None

    @property
    def confirms_passage(self) -> bool:
        return self.relay is not None and self.relay.confirm_passage

    def secret(self) -> str:
        """The device secret, read when needed so a rotated secret file is picked up at the next connect."""
        path = self.gate.secret_file
        try:
            secret = path.read_text().strip()
        except OSError as exc:
            raise GateConfigError(f"gate.secret_file: cannot read {path}: {exc.strerror or exc}") from None
        if not secret:
            raise GateConfigError(f"gate.secret_file: {path} is empty")
        return secret


def read_toml(path: str | os.PathLike[str], error: type[Exception]) -> dict[str, Any]:
    """A box's TOML file as a dict; a missing or broken file is ``error`` saying which (gate and site edge)."""
    try:
        with open(path, "rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        raise error(f"config file {path}: not found") from None
    except tomllib.TOMLDecodeError as exc:
        raise error(f"config file {path}: not valid TOML: {exc}") from None


def load_config(path: str | os.PathLike[str]) -> GateConfig:
    """Read and validate the gate's TOML file; GateConfigError names the bad key."""
    data = read_toml(path, GateConfigError)
    try:
        config = GateConfig.model_validate(data)
    except ValidationError as exc:
        lines = []
        for err in exc.errors():
            key = ".".join(str(p) for p in err["loc"]) or "(top level)"
            what = "unknown key" if err["type"] == "extra_forbidden" else err["msg"]
            lines.append(f"{key}: {what}")
        raise GateConfigError(f"bad gate configuration in {path}:\n  " + "\n  ".join(lines)) from None
    try:
        from zoneinfo import ZoneInfo

        ZoneInfo(config.fast_mode.time_zone)
    except (KeyError, ValueError):
        raise GateConfigError(f"fast_mode.time_zone: unknown time zone {config.fast_mode.time_zone!r}") from None
    if config.scanner is not None:
        try:
            config.scanner.framing()
        except ValueError as exc:
            raise GateConfigError(f"scanner: {exc}") from None
    return config
