"""The format as documented: constants, Base45, reason names, size, selection."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

import parkgate.native
from parkgate.native import CODE_LEN, Reason, SigningKey, Ticket
from parkgate.native._format import BASE45_ALPHABET, base45_encode

from .helpers import code_for

ROOT = Path(__file__).resolve().parents[2]

# QR data codewords (ISO/IEC 18004 table 7) for the versions the doc discusses.
QR_DATA_CODEWORDS = {(5, "L"): 108, (6, "M"): 108, (7, "Q"): 88, (8, "Q"): 110}


def test_one_reason_type_for_every_package() -> None:
    """The native core uses the contract's generated Reason itself, with the contract's wire numbers."""
    from parkgate.common.reason import Reason as ContractReason
    from parkgate.native._format import REASONS
    from parkgate.v1 import reason_pb2

    assert Reason is ContractReason
    assert {r.value: r.number for r in ContractReason} == dict(reason_pb2.Reason.items())
    assert all(r.value == r.name for r in ContractReason)
    assert REASONS[:3] == (Reason.OK, Reason.MALFORMED_CODE, Reason.WRONG_SCHEME)


def test_rfc9285_vectors() -> None:
    assert base45_encode(b"AB") == "BB8"
    assert base45_encode(b"Hello!!") == "%69 VD92EX0"
    assert base45_encode(b"base-45") == "UJCLQE7W581"
    assert base45_encode(b"ietf!") == "QED8WEX0"


def test_rfc9285_decoding(impl: ModuleType) -> None:
    from parkgate.native import CodeError

    # "QED8WEX0" is "ietf!": valid Base45 whose first byte is no known version.
    with pytest.raises(CodeError) as info:
        impl.decode("PG:QED8WEX0")
    assert info.value.reason is Reason.UNKNOWN_CODE_VERSION


def test_alphabet_is_qr_alphanumeric() -> None:
    assert sorted(BASE45_ALPHABET) == sorted("0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ $%*+-./:")
    assert set("PG:") <= set(BASE45_ALPHABET)


def test_code_size_and_qr_version(key: SigningKey) -> None:
    code = code_for(key, persons=255, night_window=(1439, 0), attractions=range(1, 65))
    assert len(code) == CODE_LEN == 153
    bits = 4 + 9 + 11 * (len(code) // 2) + 6 * (len(code) % 2)  # alphanumeric mode, versions 1-9
    assert bits == 855
    fits = {v: bits <= n * 8 for v, n in QR_DATA_CODEWORDS.items()}
    assert fits == {(5, "L"): True, (6, "M"): True, (7, "Q"): False, (8, "Q"): True}
    doc = (ROOT / "docs/ticket-code.md").read_text()
    assert "153 characters" in doc and "855 data" in doc


def test_ticket_helpers() -> None:
    t = Ticket(1, 1, 1, 1, 1, 0, 1, 0b101, 1, 60, 120, 0)
    assert t.night_window == (60, 120) and t.all_attractions and not t.multi_person
    assert Ticket(1, 1, 1, 1, 1, 0, 1, 0, 1, 0, 0, 0).night_window is None


def test_public_api() -> None:
    assert parkgate.native.IMPLEMENTATION in ("native", "python")
    for name in parkgate.native.__all__:
        assert hasattr(parkgate.native, name), name
    with pytest.raises(ValueError):
        parkgate.native.get_implementation("rust")  # type: ignore[arg-type]


def test_implementations_share_the_types(both: tuple[ModuleType, ModuleType]) -> None:
    native, pure = both
    assert native.IMPLEMENTATION == "native" and pure.IMPLEMENTATION == "python"
    assert native.CodeError is pure.CodeError is parkgate.native.CodeError


# --- selection at import (subprocesses: the choice is made once per process) ---------
_BLOCK_NATIVE = """
import sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name == "parkgate.native._native":
            raise ImportError("pretend it is not built")
sys.meta_path.insert(0, Block())
"""


def _import(env_value: str | None, block_native: bool = False) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "PARKGATE_NATIVE_IMPL"}
    if env_value is not None:
        env["PARKGATE_NATIVE_IMPL"] = env_value
    code = (_BLOCK_NATIVE if block_native else "") + "import parkgate.native as n; print(n.IMPLEMENTATION)"
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize(
    ("env_value", "block", "want"),
    [
        (None, False, "native"),
        ("native", False, "native"),
        ("python", False, "python"),
        (" Python ", False, "python"),
        (None, True, "python"),  # not built: the twin, silently
        ("python", True, "python"),
    ],
)
def test_selection(env_value: str | None, block: bool, want: str) -> None:
    proc = _import(env_value, block)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == want


def test_forcing_native_when_not_built_fails_loudly() -> None:
    proc = _import("native", block_native=True)
    assert proc.returncode != 0
    assert "ImportError" in proc.stderr and "not built" in proc.stderr


def test_unknown_choice_fails() -> None:
    proc = _import("fast")
    assert proc.returncode != 0 and "PARKGATE_NATIVE_IMPL" in proc.stderr
