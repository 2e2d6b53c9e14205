"""Generate etcd configuration, Patroni YAML and the servers' TOML from one :class:`ClusterSpec`.

Pure functions from the description (plus the secrets and the program paths)
to file contents: no process is started here, so the same output serves
``parkgate cluster up`` on one machine and the systemd units of ``ops/``.

Choices, and why:

* **Synchronous replication** through Patroni (``synchronous_mode: true``,
  ``synchronous_node_count: 1``): a commit is acknowledged only once a second
  node has it, and Patroni never promotes a replica that is not the registered
  synchronous standby, so a failover loses nothing acknowledged.
  ``synchronous_mode_strict`` comes from the description (default off, see
  docs/ha.md for the trade-off).
* **Timings** ``ttl``/``loop_wait``/``retry_timeout`` from the description;
  Patroni's minimums (20/2/5) by default: about 20 s from a dead primary to a
  new one.
* **pg_rewind and replication slots** on: a failed primary rejoins as a
  replica without a new base backup, and a replica's WAL is kept while it is
  away (``wal_keep_size`` caps what an absent replica costs when slots of dead
  members are dropped).
* **Authentication** ``scram-sha-256`` everywhere, generated passwords (see
  :class:`Secrets`); ``pg_hba`` admits exactly the hosts of the cluster.
* **TLS** (``[tls]`` of the description, on by default): etcd's clients and
  peers over https with certificates of the cluster's CA on both sides
  (``client-cert-auth``); PostgreSQL with ``ssl = on``, ``pg_hba`` of
  ``hostssl`` lines only (plaintext is rejected first), Patroni's replication,
  rewind and superuser connections and the servers' DSN with
  ``sslmode=verify-full``. ``tls.enabled = false`` renders the plaintext forms.
* **No Unix sockets** (``unix_socket_directories = ''``), like
  :mod:`parkgate.server.pg.instance`: TCP only, no /tmp or /run clashes.
* **Locale** as ``parkgate up``: UTF8, builtin provider, C.UTF-8 (sorting
  never depends on the OS locales of the machine a replica runs on).
"""

from __future__ import annotations

import secrets
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import orjson
import yaml

from .spec import ClusterSpec, EtcdMember, PostgresNode, ServerNode

#: PostgreSQL parameters every node gets through the DCS (Patroni keeps them equal on all nodes).
PG_PARAMETERS: dict[str, Any] = {
    "max_connections": 200,
    "max_wal_senders": 10,
    "max_replication_slots": 10,
    "wal_level": "replica",
    "hot_standby": "on",
    "wal_log_hints": "on",
    "wal_keep_size": "256MB",
    "password_encryption": "scram-sha-256",
    "log_line_prefix": "%m [%p] %q%u@%d ",
}


@dataclass(frozen=True)
class Secrets:
    """The cluster's passwords: superuser, replication, pg_rewind and the servers' role."""

    superuser: str
    replication: str
    rewind: str
    app: str

    @classmethod
    def generate(cls) -> Secrets:
        return cls(*(secrets.token_urlsafe(24) for _ in range(4)))

    def to_json(self) -> bytes:
        return orjson.dumps(asdict(self), option=orjson.OPT_INDENT_2)

    @classmethod
    def from_json(cls, raw: bytes) -> Secrets:
        return cls(**orjson.loads(raw))


def etcd_config(spec: ClusterSpec, member: EtcdMember, data_dir: Path) -> dict[str, Any]:
    """etcd's YAML configuration file (``etcd --config-file``) for one member."""
    client_url, peer_url = spec.etcd_client_url(member), spec.etcd_peer_url(member)
    return {
        "name": member.name,
        "data-dir": str(data_dir),
        "listen-client-urls": client_url,
        "advertise-client-urls": client_url,
        "listen-peer-urls": peer_url,
        "initial-advertise-peer-urls": peer_url,
        "initial-cluster": ",".join(f"{e.name}={spec.etcd_peer_url(e)}" for e in spec.etcd),
        **_etcd_tls(spec, member),
        "initial-cluster-token": f"{spec.name}-etcd",
        "initial-cluster-state": "new",
        # Patroni and the servers use the v3 API only.
        "enable-v2": False,
        "logger": "zap",
        "log-level": "warn",
        # Keep the key space small: Patroni rewrites its keys every loop_wait.
        "auto-compaction-mode": "periodic",
        "auto-compaction-retention": "1h",
    }


def _etcd_tls(spec: ClusterSpec, member: EtcdMember) -> dict[str, Any]:
    """Clients and peers over TLS, each side showing a certificate from the cluster's CA.

    ``client-cert-auth``: a client without a certificate of the CA (a stray process on the LAN) is
    refused at the handshake, since etcd holds the leader key that decides which node takes writes.
    """
    files = spec.tls_files(member.name)
    if files is None:
        return {}
    return {
        "client-transport-security": {"cert-file": str(files.cert), "key-file": str(files.key),
                                      "trusted-ca-file": str(files.ca), "client-cert-auth": True},
        "peer-transport-security": {"cert-file": str(files.cert), "key-file": str(files.key),
                                    "trusted-ca-file": str(files.ca), "client-cert-auth": True},
    }


def _hba(spec: ClusterSpec) -> list[str]:
    """Exactly the cluster's hosts; with TLS only ``hostssl`` lines, so a plaintext connection matches none."""
    hosts = sorted({p.host for p in spec.postgres} | {s.host for s in spec.servers} | {"127.0.0.1"})
    kind = "hostssl" if spec.tls.enabled else "host"
    lines = ["hostnossl all all all reject", "hostnossl replication all all reject"] if spec.tls.enabled else []
    for h in hosts:
        cidr = f"{h}/128" if ":" in h else f"{h}/32"
        lines.append(f"{kind} replication replicator {cidr} scram-sha-256")
        lines.append(f"{kind} all all {cidr} scram-sha-256")
    return lines


def _etcd3(spec: ClusterSpec, node: PostgresNode) -> dict[str, Any]:
    """Patroni's etcd3 section: its v3 client over https with the node's certificate."""
    files = spec.tls_files(node.name)
    if files is None:
        return {"hosts": spec.etcd_hosts}
    return {"hosts": spec.etcd_hosts, "protocol": "https", "cacert": str(files.ca), "cert": str(files.cert),
            "key": str(files.key)}


def _pg_tls(spec: ClusterSpec, node: PostgresNode) -> tuple[dict[str, Any], dict[str, Any]]:
    """The node's PostgreSQL TLS parameters, and what Patroni's own connections add (replication, rewind).

    ``verify-full`` with the CA: a replica streams only from a primary whose certificate the CA signed
    for the host it dialled, so neither the WAL nor the replication password goes to an impostor.
    """
    files = spec.tls_files(node.name)
    if files is None:
        return {}, {}
    parameters = {"ssl": "on", "ssl_cert_file": str(files.cert), "ssl_key_file": str(files.key),
                  "ssl_ca_file": str(files.ca), "ssl_min_protocol_version": "TLSv1.2"}
    return parameters, {"sslmode": "verify-full", "sslrootcert": str(files.ca)}


def patroni_config(
    spec: ClusterSpec, node: PostgresNode, *, node_dir: Path, bin_dir: Path, secrets_: Secrets
) -> dict[str, Any]:
    """Patroni's YAML configuration for one PostgreSQL node."""
    ssl_parameters, ssl_conn = _pg_tls(spec, node)
    return {
        "scope": spec.name,
        "namespace": "/service/",
        "name": node.name,
        "log": {"level": "INFO", "format": "%(asctime)s %(levelname)s: %(message)s"},
        "restapi": {"listen": f"{node.host}:{node.rest_port}", "connect_address": f"{node.host}:{node.rest_port}"},
        "etcd3": _etcd3(spec, node),
        "bootstrap": {
            "dcs": {
                "ttl": spec.ttl,
                "loop_wait": spec.loop_wait,
                "retry_timeout": spec.retry_timeout,
                "maximum_lag_on_failover": spec.maximum_lag_on_failover,
                "synchronous_mode": True,
                "synchronous_mode_strict": spec.synchronous_mode_strict,
                "synchronous_node_count": 1,
                "postgresql": {"use_pg_rewind": True, "use_slots": True, "parameters": dict(PG_PARAMETERS)},
            },
            "initdb": [
                {"encoding": "UTF8"},
                {"locale": "C"},
                {"locale-provider": "builtin"},
                {"builtin-locale": "C.UTF-8"},
                "data-checksums",
            ],
        },
        "postgresql": {
            "listen": f"{node.host}:{node.port}",
            "connect_address": f"{node.host}:{node.port}",
            "data_dir": str(node_dir / "data"),
            "bin_dir": str(bin_dir),
            "pgpass": str(node_dir / "pgpass"),
            # A new replica's base backup asks for an immediate checkpoint: a spread one made the second
            # replica of a fresh cluster wait 90 s for it.
            "basebackup": [{"checkpoint": "fast"}],
            "authentication": {
                "superuser": {"username": "postgres", "password": secrets_.superuser, **ssl_conn},
                "replication": {"username": "replicator", "password": secrets_.replication, **ssl_conn},
                "rewind": {"username": "rewinder", "password": secrets_.rewind, **ssl_conn},
            },
            "parameters": {"unix_socket_directories": "", **ssl_parameters},
            "pg_hba": _hba(spec),
        },
        "watchdog": {"mode": "off"},
        "tags": {"nofailover": False, "noloadbalance": False, "clonefrom": False, "nosync": False},
    }


def server_config(spec: ClusterSpec, server: ServerNode, secrets_: Secrets) -> str:
    """The TOML file of one parkgate server (``parkgate server --config``).

    TLS: the certificate and key are read from the server's own folder
    (``server.pem``, ``server.key``), and with a device port the device CA's pair
    (``device-ca.pem``, ``device-ca.key``): `parkgate cluster up` puts the
    development CA's there; on a park's machines the operator does (docs/security.md).
    """
    endpoints = ", ".join(f'"{u}"' for u in spec.etcd_endpoints)
    folder = spec.node_dir(server.name)
    # the device port and the device CA that signs devices' certificates at enrolment (the same pair on
    # every server, so a device enrols on one and connects to any)
    devices = "" if server.device_port is None else (
        f'device_listen = "{server.host}:{server.device_port}"\n'
        f'device_ca_cert_file = "{folder / "device-ca.pem"}"\n'
        f'device_ca_key_file = "{folder / "device-ca.key"}"\n')
    files = spec.tls_files(server.name)
    etcd_tls = "" if files is None else (
        f'etcd_ca_file = "{files.ca}"\netcd_cert_file = "{files.cert}"\netcd_key_file = "{files.key}"\n')
    return (
        "# Generated by parkgate cluster from the cluster description; do not edit.\n"
        "[server]\n"
        f'listen = "{server.address}"\n'
        f'server_id = "{server.name}"\n'
        f'tls_cert_file = "{folder / "server.pem"}"\n'
        f'tls_key_file = "{folder / "server.key"}"\n'
        f"{devices}"
        "health_interval_seconds = 0.5\n"
        "shutdown_grace_seconds = 5\n"
        "[database]\n"
        f'dsn = "{spec.server_dsn(secrets_.app, server.name)}"\n'
        "connect_timeout_seconds = 2\n"
        "acquire_timeout_seconds = 5\n"
        "[cluster]\n"
        f'name = "{spec.name}"\n'
        f"etcd_endpoints = [{endpoints}]\n"
        f"{etcd_tls}"
    )


def dump_yaml(data: dict[str, Any]) -> str:
    return "# Generated by parkgate cluster from the cluster description; do not edit.\n" + yaml.safe_dump(
        data, sort_keys=False, default_flow_style=False
    )
