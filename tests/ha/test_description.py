"""Cluster descriptions: what is refused, with a message naming the field, and what is generated."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from parkgate.ha.programs import ProgramError, cluster_postgres, has_ssl
from parkgate.ha.render import Secrets, dump_yaml, etcd_config, patroni_config, server_config
from parkgate.ha.spec import SpecError, build_spec, check_host, load_spec
from parkgate.server.pg import embedded_bin_dir, is_root


@pytest.mark.parametrize(
    ("description", "field", "words"),
    [
        ({"etcd_members": 2}, "etcd:", "odd number"),
        ({"etcd_members": 0}, "etcd:", "odd number"),
        ({"etcd_members": 4}, "etcd:", "odd number"),
        ({"postgres_nodes": 0}, "postgres:", "at least one"),
        ({"ttl": 10}, "ttl:", "greater than or equal to 20"),
        ({"ttl": 20, "loop_wait": 10, "retry_timeout": 6}, "ttl:", "loop_wait + 2 * retry_timeout"),
        ({"base_port": 80}, "base_port:", "1024"),
        ({"data_dir": "relative/path"}, "data_dir:", "absolute"),
        ({"etcd_members": "three"}, "etcd_members:", "integer"),
        ({"colour": "blue"}, "colour:", "unknown key"),
        ({"postgres": [{"name": "pg1", "port": 25000, "rest_port": 25100}]}, "postgres[0].port:",
         "also used by etcd[0].client_port"),
        ({"postgres": [{"name": "a", "port": 5432, "rest_port": 8008}, {"name": "a", "port": 5433, "rest_port": 8009}]},
         "postgres[1].name:", "used twice"),
        ({"server": [{"name": "Srv 1", "port": 50051}]}, "server[0].name:", "not a usable name"),
        ({"server": [{"name": "s1", "port": 70000}]}, "server[0].port:", "less than 65536"),
        ({"server": [{"name": "s1", "port": 50051, "device_port": 50051}]}, "server[0].device_port:",
         "also used by server[0].port"),
        ({"tls": {"cert_file": "/etc/pg/node.pem"}}, "tls:", "ca_file, key_file missing"),
        ({"tls": {"ca_file": "ca.pem", "cert_file": "/n.pem", "key_file": "/n.key"}}, "tls.ca_file:", "absolute"),
        ({"tls": {"enabled": False, "ca_file": "/ca.pem", "cert_file": "/n.pem", "key_file": "/n.key"}}, "tls:",
         "enabled is false"),
        ({"tls": {"enabled": True, "colour": "blue"}}, "tls.colour:", "unknown key"),
    ],
)
def test_bad_descriptions_are_refused_naming_the_field(description: dict, field: str, words: str) -> None:
    with pytest.raises(SpecError) as info:
        build_spec(description, data_dir=description.get("data_dir", "/var/lib/parkgate/x"))
    message = str(info.value)
    assert field in message and words in message, message


def test_the_short_form_lays_out_ports_from_the_base() -> None:
    spec = build_spec({"base_port": 30000, "etcd_members": 3, "postgres_nodes": 3, "servers": 2,
                       "data_dir": "/srv/c"})
    assert [e.client_port for e in spec.etcd] == [30000, 30001, 30002]
    assert [p.port for p in spec.postgres] == [30020, 30021, 30022]
    assert [p.rest_port for p in spec.postgres] == [30030, 30031, 30032]
    assert [s.address for s in spec.servers] == ["127.0.0.1:30040", "127.0.0.1:30041"]
    assert [s.device_port for s in spec.servers] == [30050, 30051]
    assert "host=127.0.0.1,127.0.0.1,127.0.0.1 port=30020,30021,30022" in spec.server_dsn("pw")
    assert "target_session_attrs=read-write" in spec.server_dsn("pw")


def test_the_sample_three_machine_description_is_valid() -> None:
    spec = load_spec(Path(__file__).parents[2] / "ops" / "ha" / "cluster.toml")
    assert len({p.host for p in spec.postgres}) == 3 and len(spec.etcd) == 3


def test_a_toml_file_with_a_mistake_is_refused_with_its_name(tmp_path: Path) -> None:
    bad = tmp_path / "cluster.toml"
    bad.write_text('data_dir = "/srv/c"\netcd_members = 2\n')
    with pytest.raises(SpecError, match=r"cluster.toml: bad cluster description:\n  etcd: 2 members"):
        load_spec(bad)
    bad.write_text("data_dir = \n")
    with pytest.raises(SpecError, match="not valid TOML"):
        load_spec(bad)


def test_a_data_folder_the_unprivileged_user_cannot_reach_is_refused(tmp_path: Path) -> None:
    # As root: pytest's tmp_path lives under /tmp/pytest-of-root (0700), which the parkgate user
    # cannot enter. Not root: a folder of ours with no permissions at all.
    blocked = tmp_path / "blocked"
    blocked.mkdir(mode=0o700)
    if not is_root():
        blocked.chmod(0)
    try:
        spec = build_spec({}, data_dir=str(blocked / "cluster"))
        with pytest.raises(SpecError, match=r"data_dir: .* is unreachable: user \S+ cannot"):
            check_host(spec)
        res = subprocess.run([sys.executable, "-m", "parkgate.common.cli", "cluster", "up", "--data-dir",
                              str(blocked / "cluster")], capture_output=True, text=True, check=False, timeout=60)
        assert res.returncode == 2 and "is unreachable" in res.stderr, res.stderr
    finally:
        blocked.chmod(0o700)


def test_the_command_line_refuses_an_even_etcd_cluster(tmp_path: Path) -> None:
    res = subprocess.run([sys.executable, "-m", "parkgate.common.cli", "cluster", "up", "--etcd", "2", "--data-dir",
                          str(tmp_path / "c")], capture_output=True, text=True, check=False, timeout=60)
    assert res.returncode == 2 and "etcd: 2 members" in res.stderr, res.stderr


def test_generated_configuration_is_synchronous_and_agrees_on_ports() -> None:
    spec = build_spec({"base_port": 30000, "synchronous_mode_strict": True}, data_dir="/srv/c")
    secrets = Secrets.generate()
    node = spec.postgres[1]
    cfg = yaml.safe_load(dump_yaml(patroni_config(spec, node, node_dir=Path("/srv/c/pg2"),
                                                  bin_dir=Path("/pg/bin"), secrets_=secrets)))
    dcs = cfg["bootstrap"]["dcs"]
    assert dcs["synchronous_mode"] is True and dcs["synchronous_mode_strict"] is True
    assert (dcs["ttl"], dcs["loop_wait"], dcs["retry_timeout"]) == (20, 2, 5)
    assert cfg["etcd3"]["hosts"] == ["127.0.0.1:30000", "127.0.0.1:30001", "127.0.0.1:30002"]
    assert cfg["postgresql"]["listen"] == "127.0.0.1:30021" and cfg["restapi"]["listen"] == "127.0.0.1:30031"
    assert cfg["postgresql"]["authentication"]["superuser"]["password"] == secrets.superuser
    etcd = etcd_config(spec, spec.etcd[2], Path("/srv/c/etcd3/data"))
    assert etcd["initial-cluster"].count("=https://127.0.0.1:3001") == 3
    assert etcd["listen-client-urls"] == "https://127.0.0.1:30002"
    toml = server_config(spec, spec.servers[0], secrets)
    assert 'listen = "127.0.0.1:30040"' in toml and "port=30020,30021,30022" in toml
    # devices with certificates connect to a port of their own; every server signs with the same device CA
    assert 'device_listen = "127.0.0.1:30050"' in toml
    assert 'device_ca_cert_file = "/srv/c/srv1/device-ca.pem"' in toml
    assert 'device_ca_key_file = "/srv/c/srv1/device-ca.key"' in toml
    assert "device_listen" not in server_config(spec, spec.servers[0].model_copy(update={"device_port": None}),
                                                secrets)
    assert 'etcd_endpoints = ["https://127.0.0.1:30000", "https://127.0.0.1:30001", "https://127.0.0.1:30002"]' in toml


def test_tls_is_on_by_default_for_etcd_and_postgresql_with_each_members_own_files() -> None:
    spec = build_spec({"base_port": 30000}, data_dir="/srv/c")
    secrets = Secrets.generate()
    etcd = etcd_config(spec, spec.etcd[0], Path("/srv/c/etcd1/data"))
    own = {"cert-file": "/srv/c/etcd1/certs/node.pem", "key-file": "/srv/c/etcd1/certs/node.key",
           "trusted-ca-file": "/srv/c/etcd1/certs/ca.pem", "client-cert-auth": True}
    assert etcd["client-transport-security"] == own and etcd["peer-transport-security"] == own
    assert etcd["listen-peer-urls"] == "https://127.0.0.1:30010"
    cfg = patroni_config(spec, spec.postgres[0], node_dir=Path("/srv/c/pg1"), bin_dir=Path("/pg/bin"),
                         secrets_=secrets)
    assert cfg["etcd3"] == {"hosts": spec.etcd_hosts, "protocol": "https", "cacert": "/srv/c/pg1/certs/ca.pem",
                            "cert": "/srv/c/pg1/certs/node.pem", "key": "/srv/c/pg1/certs/node.key"}
    pg = cfg["postgresql"]
    assert pg["parameters"]["ssl"] == "on" and pg["parameters"]["ssl_key_file"] == "/srv/c/pg1/certs/node.key"
    for role in ("superuser", "replication", "rewind"):
        assert pg["authentication"][role]["sslmode"] == "verify-full"
        assert pg["authentication"][role]["sslrootcert"] == "/srv/c/pg1/certs/ca.pem"
    # Plaintext is rejected before any line could admit it; every admitting line needs TLS.
    assert pg["pg_hba"][:2] == ["hostnossl all all all reject", "hostnossl replication all all reject"]
    assert all(line.startswith("hostssl ") for line in pg["pg_hba"][2:])
    assert "hostssl replication replicator 127.0.0.1/32 scram-sha-256" in pg["pg_hba"]
    toml = server_config(spec, spec.servers[1], secrets)
    assert "sslmode=verify-full sslrootcert=/srv/c/srv2/certs/ca.pem" in toml
    assert 'etcd_cert_file = "/srv/c/srv2/certs/node.pem"' in toml and 'etcd_ca_file = "/srv/c/srv2/certs/ca.pem"' in toml
    assert "sslmode=verify-full sslrootcert=/srv/c/certs/ca.pem" in spec.server_dsn("pw")  # the operator's tools


def test_named_certificate_files_are_used_as_they_are_and_tls_off_is_plaintext() -> None:
    named = {"ca_file": "/etc/parkgate/tls/ca.pem", "cert_file": "/etc/parkgate/tls/node.pem",
             "key_file": "/etc/parkgate/tls/node.key"}
    spec = build_spec({"base_port": 30000, "tls": named}, data_dir="/srv/c")
    etcd = etcd_config(spec, spec.etcd[1], Path("/srv/c/etcd2/data"))
    assert etcd["client-transport-security"]["cert-file"] == "/etc/parkgate/tls/node.pem"
    assert "sslrootcert=/etc/parkgate/tls/ca.pem" in spec.server_dsn("pw", "srv1")
    off = build_spec({"base_port": 30000, "tls": {"enabled": False}}, data_dir="/srv/c")
    etcd = etcd_config(off, off.etcd[0], Path("/srv/c/etcd1/data"))
    assert etcd["listen-client-urls"] == "http://127.0.0.1:30000" and "client-transport-security" not in etcd
    cfg = patroni_config(off, off.postgres[0], node_dir=Path("/srv/c/pg1"), bin_dir=Path("/pg/bin"),
                         secrets_=Secrets.generate())
    assert cfg["etcd3"] == {"hosts": off.etcd_hosts} and "ssl" not in cfg["postgresql"]["parameters"]
    assert all(line.startswith("host ") for line in cfg["postgresql"]["pg_hba"])
    assert "sslmode" not in off.server_dsn("pw") and "etcd_ca_file" not in server_config(off, off.servers[0],
                                                                                         Secrets.generate())


def test_config_for_several_machines_wants_their_certificate_files_named(tmp_path: Path) -> None:
    sample = Path(__file__).parents[2] / "ops" / "ha" / "cluster.toml"
    res = subprocess.run([sys.executable, "-m", "parkgate.common.cli", "cluster", "config", "--description",
                          str(sample), "--out", str(tmp_path / "out")], capture_output=True, text=True, check=False,
                         timeout=60)
    assert res.returncode == 0, res.stderr
    cfg = yaml.safe_load((tmp_path / "out" / "pg2" / "patroni.yml").read_text())
    assert cfg["postgresql"]["parameters"]["ssl_cert_file"] == "/etc/parkgate/tls/node.pem"
    assert cfg["postgresql"]["authentication"]["replication"]["sslmode"] == "verify-full"
    bare = tmp_path / "bare.toml"
    bare.write_text("\n".join(line for line in sample.read_text().splitlines()
                              if not line.startswith(("[tls]", "ca_file", "cert_file", "key_file"))))
    res = subprocess.run([sys.executable, "-m", "parkgate.common.cli", "cluster", "config", "--description",
                          str(bare), "--out", str(tmp_path / "bare")], capture_output=True, text=True, check=False,
                         timeout=60)
    assert res.returncode == 2 and "tls: name each machine's certificate files" in res.stderr, res.stderr


def test_with_tls_the_cluster_runs_a_postgresql_built_with_ssl_and_refuses_one_without() -> None:
    chosen = cluster_postgres(None, tls=True)
    assert chosen is not None and has_ssl(chosen) is True
    embedded = embedded_bin_dir()
    assert embedded is not None and has_ssl(embedded) is False  # why the embedded wheel is not used with TLS
    with pytest.raises(ProgramError, match="built without SSL and tls is on"):
        cluster_postgres(embedded, tls=True)
    assert cluster_postgres(None, tls=False) is None  # plaintext: the embedded wheel, as before
