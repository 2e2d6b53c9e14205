"""Keys: signing keys (server side only) and the keyring of verify keys (gates).

Signing is not the hot path (a window sells a few tickets a second), so it
uses PyNaCl in both implementations; only verification has a native twin.
"""

from __future__ import annotations

import enum
import operator
from collections.abc import Iterable, Iterator
from typing import NamedTuple

import nacl.signing

from ._format import (
    DOMAIN,
    MAX_KEY_ID,
    PUBLIC_KEY_LEN,
    SCHEME,
    SEED_LEN,
    Ticket,
    base45_encode,
    pack_payload,
)

KEYRING_MAGIC = b"PGK1"
_ENTRY_LEN = 2 + 1 + PUBLIC_KEY_LEN


class KeyState(enum.IntEnum):
    """ACTIVE signs and verifies; RETIRED only verifies; REVOKED refuses its codes."""

    ACTIVE = 0
    RETIRED = 1
    REVOKED = 2


class KeyEntry(NamedTuple):
    key_id: int
    public_key: bytes
    state: KeyState


def _check_key_id(key_id: int) -> int:
    key_id = operator.index(key_id)
    if not 1 <= key_id <= MAX_KEY_ID:
        raise ValueError(f"key id {key_id} outside 1..{MAX_KEY_ID}")
    return key_id


class SigningKey:
    """An Ed25519 private key with its key id. Never give one to a gate."""

    __slots__ = ("_nacl", "key_id")

    def __init__(self, key_id: int, seed: bytes) -> None:
        if len(seed) != SEED_LEN:
            raise ValueError(f"an Ed25519 seed is {SEED_LEN} bytes")
        self.key_id = _check_key_id(key_id)
        self._nacl = nacl.signing.SigningKey(bytes(seed))

    @classmethod
    def generate(cls, key_id: int) -> SigningKey:
        return cls(key_id, bytes(nacl.signing.SigningKey.generate()))

    @property
    def seed(self) -> bytes:
        return bytes(self._nacl)

    @property
    def public_key(self) -> bytes:
        return bytes(self._nacl.verify_key)

    def to_bytes(self) -> bytes:
        """``key_id (u16 big-endian) || seed (32)``: for the server's key store."""
        return self.key_id.to_bytes(2, "big") + self.seed

    @classmethod
    def from_bytes(cls, data: bytes) -> SigningKey:
        if len(data) != 2 + SEED_LEN:
            raise ValueError(f"a serialized signing key is {2 + SEED_LEN} bytes")
        return cls(int.from_bytes(data[:2], "big"), data[2:])

    def hex(self) -> str:
        return self.to_bytes().hex()

    @classmethod
    def from_hex(cls, text: str) -> SigningKey:
        return cls.from_bytes(bytes.fromhex(text))

    def sign_message(self, message: bytes) -> bytes:
        return self._nacl.sign(message).signature

    def __repr__(self) -> str:  # never print the seed
        return f"SigningKey(key_id={self.key_id}, public_key={self.public_key.hex()})"


class Keyring:
    """Verify keys by key id, each ACTIVE, RETIRED or REVOKED; optionally private halves.

    The server holds one with its signing keys; gates get ``public()``. The
    implementations read ``_table`` (pure Python: dict lookups) and
    ``_snapshot`` (native: a flat tuple copied into a C array per call); both
    are rebuilt on every change and are immutable, so a batch running in
    another thread sees a consistent keyring.
    """

    def __init__(self, entries: Iterable[KeyEntry | tuple[int, bytes, KeyState]] = ()) -> None:
        self._entries: dict[int, KeyEntry] = {}
        self._signing: dict[int, SigningKey] = {}
        self._table: dict[int, tuple[KeyState, bytes]] = {}
        self._snapshot: tuple[tuple[int, int, bytes], ...] = ()
        for key_id, public_key, state in entries:
            self.add(key_id, public_key, state)

    # -- changes ---------------------------------------------------------------
    def add(self, key_id: int, public_key: bytes, state: KeyState = KeyState.ACTIVE) -> None:
        """Add a verify key. Re-adding the same key is allowed; another key under its id is not."""
        key_id = _check_key_id(key_id)
        public_key = bytes(public_key)
        state = KeyState(state)
        if len(public_key) != PUBLIC_KEY_LEN:
            raise ValueError(f"an Ed25519 public key is {PUBLIC_KEY_LEN} bytes")
        old = self._entries.get(key_id)
        if old is not None:
            if old.public_key != public_key:
                raise ValueError(f"key id {key_id} already holds another key")
            if old.state == KeyState.REVOKED and state != KeyState.REVOKED:
                raise ValueError(f"key {key_id} is revoked; a revoked key never comes back")
        self._entries[key_id] = KeyEntry(key_id, public_key, state)
        self._rebuild()

    def add_signing_key(self, key: SigningKey, state: KeyState = KeyState.ACTIVE) -> None:
        self.add(key.key_id, key.public_key, state)
        self._signing[key.key_id] = key

    def retire(self, key_id: int) -> None:
        """Stop signing with the key; codes it signed stay valid until they expire."""
        entry = self._get(key_id)
        if entry.state == KeyState.REVOKED:
            raise ValueError(f"key {key_id} is revoked")
        self._entries[entry.key_id] = entry._replace(state=KeyState.RETIRED)
        self._rebuild()

    def revoke(self, key_id: int) -> None:
        """Refuse every code the key signed (compromise). Irreversible."""
        entry = self._get(key_id)
        self._entries[entry.key_id] = entry._replace(state=KeyState.REVOKED)
        self._signing.pop(entry.key_id, None)
        self._rebuild()

    def remove(self, key_id: int) -> None:
        """Forget a key (its codes become UNKNOWN_KEY): once all its codes expired."""
        entry = self._get(key_id)
        del self._entries[entry.key_id]
        self._signing.pop(entry.key_id, None)
        self._rebuild()

    # -- queries ---------------------------------------------------------------
    def state(self, key_id: int) -> KeyState | None:
        entry = self._entries.get(key_id)
        return None if entry is None else entry.state

    def public_key(self, key_id: int) -> bytes:
        return self._get(key_id).public_key

    def signing_key(self) -> SigningKey:
        """The key to sign new codes with: the newest ACTIVE key whose private half we hold."""
        for key_id in sorted(self._signing, reverse=True):
            if self._entries[key_id].state == KeyState.ACTIVE:
                return self._signing[key_id]
        raise LookupError("no active signing key in this keyring")

    def public(self) -> Keyring:
        """A copy with the verify keys only: what is sent to gates."""
        return Keyring(self._entries.values())

    def entries(self) -> list[KeyEntry]:
        return sorted(self._entries.values())

    def __iter__(self) -> Iterator[KeyEntry]:
        return iter(self.entries())

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key_id: object) -> bool:
        return key_id in self._entries

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Keyring) and self.entries() == other.entries()

    __hash__ = None  # type: ignore[assignment]  # mutable

    def __repr__(self) -> str:
        keys = ", ".join(f"{e.key_id}:{e.state.name}" for e in self.entries())
        return f"Keyring({keys})"

    # -- serialization (public keys only) ---------------------------------------
    def to_bytes(self) -> bytes:
        parts = [KEYRING_MAGIC]
        for e in self.entries():
            parts.append(e.key_id.to_bytes(2, "big") + bytes([e.state]) + e.public_key)
        return b"".join(parts)

    @classmethod
    def from_bytes(cls, data: bytes) -> Keyring:
        data = bytes(data)
        if not data.startswith(KEYRING_MAGIC) or (len(data) - len(KEYRING_MAGIC)) % _ENTRY_LEN:
            raise ValueError("not a serialized parkgate keyring")
        ring = cls()
        for off in range(len(KEYRING_MAGIC), len(data), _ENTRY_LEN):
            key_id = int.from_bytes(data[off : off + 2], "big")
            if key_id in ring:
                raise ValueError(f"key id {key_id} twice in a serialized keyring")
            ring.add(key_id, data[off + 3 : off + _ENTRY_LEN], KeyState(data[off + 2]))
        return ring

    def hex(self) -> str:
        return self.to_bytes().hex()

    @classmethod
    def from_hex(cls, text: str) -> Keyring:
        return cls.from_bytes(bytes.fromhex(text))

    # -- internals ---------------------------------------------------------------
    def _get(self, key_id: int) -> KeyEntry:
        try:
            return self._entries[key_id]
        except KeyError:
            raise KeyError(f"no key {key_id} in this keyring") from None

    def _rebuild(self) -> None:
        self._table = {e.key_id: (e.state, e.public_key) for e in self._entries.values()}
        self._snapshot = tuple((e.key_id, int(e.state), e.public_key) for e in self.entries())


def sign(key: SigningKey, ticket: Ticket) -> str:
    """Sign exactly this payload and return the code text (``PG:`` + Base45).

    ``ticket.key_id`` must be the signing key's id. Use :func:`issue` to sell
    tickets; this is for tools and tests that need a precise payload.
    """
    if ticket.key_id != key.key_id:
        raise ValueError(f"ticket names key {ticket.key_id}, signing with key {key.key_id}")
    payload = pack_payload(ticket)
    return SCHEME + base45_encode(payload + key.sign_message(DOMAIN + payload))


def issue(
    key: SigningKey,
    *,
    serial: int,
    product_id: int,
    park_id: int,
    valid_from: int,
    valid_until: int,
    persons: int = 1,
    night_window: tuple[int, int] | None = None,
    attractions: Iterable[int] = (),
    all_attractions: bool = False,
) -> str:
    """Issue a ticket code: the server's one call at sale time.

    ``valid_from``/``valid_until`` are UTC epoch seconds (until exclusive),
    computed from the park's local dates with zoneinfo; ``night_window`` is
    (start, end) minutes since the park's local midnight; ``attractions`` are
    slots 1-64 (attraction 0, the park gate, is always admitted).
    """
    ticket = Ticket.build(
        key_id=key.key_id,
        serial=serial,
        product_id=product_id,
        park_id=park_id,
        valid_from=valid_from,
        valid_until=valid_until,
        persons=persons,
        night_window=night_window,
        attractions=tuple(attractions),
        all_attractions=all_attractions,
    )
    return sign(key, ticket)
