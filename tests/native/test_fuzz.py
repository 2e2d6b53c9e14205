"""A slice of loadtests/fuzz_native in the suite; the full run is >= 1,000,000 inputs."""

from __future__ import annotations

from types import ModuleType

from loadtests import fuzz_native
from parkgate.native._format import REASONS


def test_fuzz_slice(both: tuple[ModuleType, ModuleType]) -> None:
    stats = fuzz_native.run(20_000, seed=20240601)
    assert stats.failures == []
    assert stats.inputs == 20_000
    # The generator must reach every decoder step and the signature check.
    assert {
        "OK",
        "MALFORMED_CODE",
        "WRONG_SCHEME",
        "NON_CANONICAL_ENCODING",
        "WRONG_LENGTH",
        "TRAILING_BYTES",
        "UNKNOWN_CODE_VERSION",
    } <= set(stats.decoded)
    assert set(stats.verified) == {r.name for r in REASONS}  # every reason the code core gives, gate rules included
