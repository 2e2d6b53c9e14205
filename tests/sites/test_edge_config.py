"""site.toml: typed, strict (a typo names the key), overridable by PARKGATE_SITE__* variables."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from parkgate.clients.site.config import SiteConfigError, load_config


def write(folder: Path, body: str) -> Path:
    (folder / "edge.secret").write_text("s3cret\n")
    path = folder / "site.toml"
    path.write_text(f'[site]\ndevice_id = "e"\nsecret_file = "{folder / "edge.secret"}"\n'
                    f'state_dir = "{folder / "state"}"\nservers = ["127.0.0.1:50051"]\n{body}')
    return path


def test_defaults_and_the_secret(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, ""), env={})
    assert config.site.decision_deadline_ms == 300
    assert config.site.secret() == "s3cret"
    assert config.database == tmp_path / "state" / "site.db"


def test_a_typo_names_the_key(tmp_path: Path) -> None:
    with pytest.raises(SiteConfigError, match=r"site\.decision_deadline: unknown key"):
        load_config(write(tmp_path, "decision_deadline = 200\n"), env={})


def test_bad_values_name_the_key(tmp_path: Path) -> None:
    with pytest.raises(SiteConfigError, match=r"site\.listen"):
        load_config(write(tmp_path, 'listen = "nowhere"\n'), env={})
    with pytest.raises(SiteConfigError, match=r"site\.decision_deadline_ms"):
        load_config(write(tmp_path, "decision_deadline_ms = 0\n"), env={})


def test_the_environment_overrides_the_file(tmp_path: Path) -> None:
    env = {"PARKGATE_SITE__SERVERS": "10.0.0.5:50051, 10.0.0.6:50051", "PARKGATE_SITE__DECISION_DEADLINE_MS": "150"}
    config = load_config(write(tmp_path, ""), env=env)
    assert config.site.servers == ["10.0.0.5:50051", "10.0.0.6:50051"]
    assert config.site.decision_deadline_ms == 150


def test_an_empty_secret_file_is_refused(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, ""), env={})
    (tmp_path / "edge.secret").write_text("\n")
    with pytest.raises(SiteConfigError, match="is empty"):
        config.site.secret()


def test_check_config_prints_the_configuration_or_names_the_bad_key(tmp_path: Path) -> None:
    good = subprocess.run([sys.executable, "-m", "parkgate.common.cli", "site", "check-config",
                           str(write(tmp_path, ""))], capture_output=True, text=True, timeout=60)
    assert good.returncode == 0, good.stderr
    assert '"decision_deadline_ms": 300' in good.stdout
    bad = subprocess.run([sys.executable, "-m", "parkgate.common.cli", "site", "check-config",
                          str(write(tmp_path, "batch_max = 0\n"))], capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2
    assert "site.batch_max" in bad.stderr


def test_power_and_metrics_are_off_by_default_and_strict(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, ""), env={})
    assert config.power.source == "none" and config.power.decide_locally_on_battery
    assert config.metrics.listen == ""
    on = load_config(write(tmp_path, '[power]\nsource = "nut"\nport = 3493\n[metrics]\nlisten = "127.0.0.1:9466"\n'),
                     env={})
    assert on.power.source == "nut" and on.metrics.listen == "127.0.0.1:9466"
    with pytest.raises(SiteConfigError, match=r"power\.sorce: unknown key"):
        load_config(write(tmp_path, '[power]\nsorce = "nut"\n'), env={})
    with pytest.raises(SiteConfigError, match=r"metrics\.listen"):
        load_config(write(tmp_path, '[metrics]\nlisten = "nowhere"\n'), env={})
