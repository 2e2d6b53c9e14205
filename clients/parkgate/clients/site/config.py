"""A site edge's configuration: one typed object from ``site.toml`` plus ``PARKGATE_SITE__*`` variables.

Unknown keys and wrong types stop start-up with a message naming the key (a
typo must never fall back silently to a default). Every key of ``[site]`` can
be overridden by an environment variable ``PARKGATE_SITE__<KEY>`` (upper case, the server's ``SECTION__KEY`` form;
lists comma-separated), so a box's secrets and addresses can come from its
service manager. docs/sites.md has the reference.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from parkgate.common.channels import Transport, device_transport
from parkgate.common.power import PowerSettings

from ..gate.config import (  # one HOST:PORT rule for every client's configuration
    MetricsSection,
    _hostport,
    read_toml,
)

ENV_PREFIX = "PARKGATE_SITE__"


class SiteConfigError(Exception):
    """A configuration the edge cannot run with; the message names the key."""


class SiteSection(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    # The edge's own registration (kind site_edge) and the file holding its secret (mode 0600).
    device_id: str = Field(min_length=1)
    secret_file: Path
    # The cluster's servers, tried in order (the next one when a server does not answer).
    servers: list[str] = Field(min_length=1)
    # Where the site's gates and windows connect, over TLS with this certificate and key (docs/security.md);
    # plaintext only with insecure = true. The cluster's CA is trusted through PARKGATE_TLS_CA_FILE.
    listen: str = "127.0.0.1:50070"
    tls_cert_file: str = ""
    tls_key_file: str = ""
    insecure: bool = False
    # The cluster's device CA (its server.device_ca_cert_file): when set, every gate and window connecting
    # here must present a device certificate of it (mTLS, `parkgate gate enroll` / `parkgate device enroll`)
    # naming the device it claims, on top of its secret. Empty: the secret alone.
    device_ca_file: Path | None = None
    # Toward the cluster (docs/security.md): the CA its servers' certificates are checked against (empty:
    # PARKGATE_TLS_CA_FILE) and the edge's own client certificate and key (mTLS; written by `parkgate device
    # enroll`, then `servers` are the cluster's device ports). Empty: PARKGATE_TLS_CERT_FILE/_KEY_FILE, else none.
    cluster_ca_file: Path | None = None
    cluster_cert_file: Path | None = None
    cluster_key_file: Path | None = None
    # The local store (site.db) and the site's signing key live here.
    state_dir: Path
    # How long a gate's validation waits for the cluster before the edge decides alone.
    decision_deadline_ms: int = Field(300, ge=10, le=10_000)
    # Validations collected into one Site.Validate call (the first waits at most batch_wait_ms for others).
    batch_max: int = Field(64, ge=1, le=1024)
    batch_wait_ms: float = Field(1.0, ge=0, le=100)
    # After the cluster failed to answer, decide alone for this long before asking it again.
    offline_hold_seconds: float = Field(2.0, ge=0, le=300)
    # Store and forward: records per Site.Forward call, and how long one call may take.
    forward_batch: int = Field(256, ge=1, le=5000)
    forward_timeout_seconds: float = Field(10.0, gt=0)
    # Offline sales: serials asked for per Provision, and when to ask for more (fraction left).
    serials_wanted: int = Field(10_000, ge=10, le=1_000_000)
    serials_refill_fraction: float = Field(0.1, gt=0, lt=1)
    reconnect_min_seconds: float = Field(0.2, gt=0)
    reconnect_max_seconds: float = Field(5.0, gt=0)
    # Sessions a window opened at the edge while the cluster was away last this long.
    offline_session_hours: float = Field(12.0, gt=0)
    # Stored value offline (S8): what the edge may charge one card, in minor units, while deciding alone,
    # counted from the card's last balance the feed reported (0 = stored-value cards are refused offline).
    offline_stored_value_limit: int = Field(1000, ge=0, le=10_000_000)
    log_level: Literal["debug", "info", "warning", "error"] = "info"

    @field_validator("servers")
    @classmethod
    def _servers(cls, value: list[str]) -> list[str]:
        return [_hostport(v) for v in value]

    @field_validator("listen")
    @classmethod
    def _listen(cls, value: str) -> str:
        return _hostport(value)

    @model_validator(mode="after")
    def _client_certificate(self) -> SiteSection:
        if (self.cluster_cert_file is None) != (self.cluster_key_file is None):
            raise ValueError("cluster_cert_file and cluster_key_file go together")
        if self.device_ca_file is not None and self.insecure:
            raise ValueError("device_ca_file needs TLS: device certificates cannot be checked with insecure = true")
        return self

    def cluster_transport(self) -> Transport:
        """How the edge reaches the cluster: the environment's TLS, with this file's CA and certificate."""
        return device_transport(self.cluster_ca_file, self.cluster_cert_file, self.cluster_key_file)

    def secret(self) -> str:
        """The edge's device secret, read when needed (a rotated file is picked up at the next call)."""
        try:
            secret = self.secret_file.read_text().strip()
        except OSError as exc:
            raise SiteConfigError(f"site.secret_file: cannot read {self.secret_file}: {exc.strerror or exc}") from None
        if not secret:
            raise SiteConfigError(f"site.secret_file: {self.secret_file} is empty")
        return secret


class SitePowerSection(PowerSettings):
    """The edge's UPS (docs/power.md): the shared ``[power]`` keys, plus what the edge does on battery."""

    # On battery: decide every validation here at once (no wait for the cluster's deadline), each
    # admission durable in site.db before the gate hears it; back on steady mains the cluster is asked again.
    decide_locally_on_battery: bool = True


class SiteConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    site: SiteSection
    # The edge's Prometheus /metrics (docs/monitor.md): ``listen = "HOST:PORT"``; empty (the default) = off.
    metrics: MetricsSection = MetricsSection()
    power: SitePowerSection = SitePowerSection()

    @property
    def database(self) -> Path:
        return self.site.state_dir / "site.db"


def _from_env(env: Mapping[str, str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, field in SiteSection.model_fields.items():
        value = env.get(ENV_PREFIX + name.upper())
        if value is None:
            continue
        out[name] = [v.strip() for v in value.split(",") if v.strip()] if field.annotation == list[str] else value
    return out


def load_config(path: str | os.PathLike[str], env: Mapping[str, str] | None = None) -> SiteConfig:
    """Read and validate ``site.toml`` with the environment's overrides; SiteConfigError names the bad key."""
    data = read_toml(path, SiteConfigError)
    section = dict(data.get("site", {})) if isinstance(data.get("site"), dict) else data.get("site")
    if isinstance(section, dict):
        section.update(_from_env(os.environ if env is None else env))
        data = {**data, "site": section}
    try:
        return SiteConfig.model_validate(data)
    except ValidationError as exc:
        lines = []
        for err in exc.errors():
            key = ".".join(str(p) for p in err["loc"]) or "(top level)"
            what = "unknown key" if err["type"] == "extra_forbidden" else err["msg"]
            lines.append(f"{key}: {what}")
        raise SiteConfigError(f"bad site configuration in {path}:\n  " + "\n  ".join(lines)) from None
