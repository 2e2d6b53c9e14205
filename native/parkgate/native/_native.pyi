"""Type stub for the Cython module _native.pyx (same API as _pure.py, plus the ceiling loop)."""

from collections.abc import Sequence

from ._format import Result, Ticket
from ._keys import Keyring

IMPLEMENTATION: str
SODIUM_VERSION: str

def decode(code: str | bytes) -> Ticket: ...
def authenticate(code: str | bytes, keyring: Keyring) -> Ticket: ...
def authenticate_batch(codes: Sequence[str | bytes], keyring: Keyring) -> list[Result]: ...
def verify(
    code: str | bytes, keyring: Keyring, *, now: int, utc_offset: int, park_id: int, attraction_id: int = 0
) -> Result: ...
def verify_batch(
    codes: Sequence[str | bytes],
    keyring: Keyring,
    *,
    now: int,
    utc_offset: int,
    park_id: int,
    attraction_id: int = 0,
) -> list[Result]: ...

class BareVerifier:
    """crypto_sign_verify_detached over pre-split triples, nothing else (the benchmark's ceiling)."""

    def __init__(
        self, messages: Sequence[bytes], signatures: Sequence[bytes], public_keys: Sequence[bytes]
    ) -> None: ...
    def __len__(self) -> int: ...
    def run(self) -> int: ...
