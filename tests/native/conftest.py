"""One suite, two implementations: every test taking ``impl`` runs against both.

A missing native build FAILS the native half (never a silent skip): a gate
shipped without the extension would be 5x slower at peak, and that must show.
"""

from __future__ import annotations

import random
from collections import Counter
from types import ModuleType

import pytest

import parkgate.native
from parkgate.native import Keyring, SigningKey, get_implementation

IMPLS = ("native", "python")
_ran: Counter[str] = Counter()


def load(name: str) -> ModuleType:
    try:
        return get_implementation(name)  # type: ignore[arg-type]
    except ImportError as exc:
        pytest.fail(f"implementation {name!r} unavailable: {exc}", pytrace=False)


@pytest.fixture(params=IMPLS)
def impl(request: pytest.FixtureRequest) -> ModuleType:
    _ran[request.param] += 1
    return load(request.param)


@pytest.fixture(scope="session")
def both() -> tuple[ModuleType, ModuleType]:
    """(native, python), for tests that compare them."""
    _ran["native"] += 1
    _ran["python"] += 1
    return load("native"), load("python")


def _key(key_id: int) -> SigningKey:
    return SigningKey(key_id, random.Random(key_id).randbytes(32))


@pytest.fixture(scope="session")
def key() -> SigningKey:
    """Key 1: active."""
    return _key(1)


@pytest.fixture(scope="session")
def retired_key() -> SigningKey:
    return _key(2)


@pytest.fixture(scope="session")
def revoked_key() -> SigningKey:
    return _key(3)


@pytest.fixture(scope="session")
def stranger_key() -> SigningKey:
    """Key 9: in no keyring."""
    return _key(9)


@pytest.fixture(scope="session")
def ring(key: SigningKey, retired_key: SigningKey, revoked_key: SigningKey) -> Keyring:
    """A gate's keyring: public keys only, one per state."""
    server = Keyring()
    server.add_signing_key(key)
    server.add_signing_key(retired_key)
    server.add_signing_key(revoked_key)
    server.retire(retired_key.key_id)
    server.revoke(revoked_key.key_id)
    return server.public()


def pytest_report_header(config: pytest.Config) -> list[str]:
    try:
        native = get_implementation("native")
        status = f"built ({native.__file__})"
    except ImportError:
        status = "NOT BUILT: every native test will fail"
    return [
        f"parkgate.native: testing implementations {', '.join(IMPLS)}; native {status}; "
        f"package default: {parkgate.native.IMPLEMENTATION}"
    ]


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if _ran:
        ran = ", ".join(f"{name}: {n} tests" for name, n in sorted(_ran.items()))
        terminalreporter.write_line(f"parkgate.native implementations exercised: {ran}")
