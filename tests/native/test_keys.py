"""Keys: ids, rotation (retire), revocation, serialization; private keys stay private."""

from __future__ import annotations

import pytest

from parkgate.native import KeyEntry, Keyring, KeyState, SigningKey, decode, issue, sign

from .helpers import NOW, ticket


def test_signing_key_serialization() -> None:
    key = SigningKey.generate(7)
    assert SigningKey.from_bytes(key.to_bytes()).seed == key.seed
    assert SigningKey.from_hex(key.hex()).public_key == key.public_key
    assert len(key.to_bytes()) == 34 and key.to_bytes()[:2] == b"\x00\x07"
    assert key.seed.hex() not in repr(key)


@pytest.mark.parametrize("key_id", [0, 65536, -1])
def test_key_id_range(key_id: int) -> None:
    with pytest.raises(ValueError):
        SigningKey(key_id, bytes(32))
    with pytest.raises(ValueError):
        Keyring().add(key_id, bytes(32))


def test_bad_key_material() -> None:
    with pytest.raises(ValueError):
        SigningKey(1, bytes(31))
    with pytest.raises(ValueError):
        SigningKey.from_bytes(bytes(33))
    with pytest.raises(ValueError):
        Keyring().add(1, bytes(33))
    with pytest.raises(ValueError):
        Keyring().add(1, bytes(32), 7)  # type: ignore[arg-type]


def test_states_and_rotation() -> None:
    old, new = SigningKey.generate(1), SigningKey.generate(2)
    ring = Keyring()
    ring.add_signing_key(old)
    assert ring.signing_key() is old
    ring.add_signing_key(new)
    assert ring.signing_key() is new  # the newest active key signs
    ring.retire(2)
    assert ring.state(2) is KeyState.RETIRED
    assert ring.signing_key() is old  # a retired key signs nothing new
    ring.revoke(1)
    assert ring.state(1) is KeyState.REVOKED
    with pytest.raises(LookupError):
        ring.signing_key()
    with pytest.raises(ValueError):
        ring.retire(1)  # revoked stays revoked
    with pytest.raises(ValueError):
        ring.add(1, old.public_key, KeyState.ACTIVE)
    ring.revoke(2)  # retired -> revoked is allowed
    ring.remove(2)
    assert 2 not in ring and len(ring) == 1 and ring.state(2) is None
    with pytest.raises(KeyError):
        ring.revoke(5)


def test_one_key_per_id() -> None:
    ring = Keyring()
    ring.add(1, SigningKey.generate(1).public_key)
    with pytest.raises(ValueError):
        ring.add(1, SigningKey.generate(1).public_key)


def test_public_ring_has_no_private_keys() -> None:
    key = SigningKey.generate(3)
    ring = Keyring()
    ring.add_signing_key(key)
    public = ring.public()
    assert public == ring and public.entries() == [KeyEntry(3, key.public_key, KeyState.ACTIVE)]
    with pytest.raises(LookupError):
        public.signing_key()
    assert key.seed not in ring.to_bytes()


def test_keyring_serialization() -> None:
    ring = Keyring()
    for key_id, state in ((1, KeyState.ACTIVE), (300, KeyState.RETIRED), (65535, KeyState.REVOKED)):
        ring.add(key_id, SigningKey.generate(key_id).public_key, state)
    data = ring.to_bytes()
    assert data[:4] == b"PGK1" and len(data) == 4 + 3 * 35
    assert Keyring.from_bytes(data) == ring
    assert Keyring.from_hex(ring.hex()) == ring
    assert Keyring.from_bytes(b"PGK1") == Keyring()
    for bad in (b"", b"PGK2", data[:-1], data + data[4:39]):
        with pytest.raises(ValueError):
            Keyring.from_bytes(bad)


def test_issue_builds_canonical_flags() -> None:
    key = SigningKey.generate(4)
    code = issue(
        key,
        serial=9,
        product_id=1,
        park_id=2,
        valid_from=NOW,
        valid_until=NOW + 1,
        persons=2,
        night_window=(1200, 60),
        attractions=[3],
    )
    got = decode(code)
    assert (got.key_id, got.multi_person, got.night_tour, got.attraction_slots) == (4, True, True, {3})


@pytest.mark.parametrize(
    "fields",
    [
        {"serial": 0},
        {"serial": 2**48},
        {"park_id": 0},
        {"product_id": -1},
        {"valid_until": 2**32},
        {"valid_from": 10, "valid_until": 10},
        {"persons": 0},
        {"persons": 256},
        {"night_window": (60, 60)},
        {"night_window": (0, 1440)},
    ],
)
def test_signer_refuses_what_the_decoder_refuses(fields: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        sign(SigningKey(1, bytes(32)), ticket(**fields))


def test_signer_checks_scope_and_key() -> None:
    with pytest.raises(ValueError):
        ticket(attractions=[65])
    with pytest.raises(ValueError):
        ticket(attractions=[1], all_attractions=True)
    with pytest.raises(ValueError):
        sign(SigningKey(2, bytes(32)), ticket(key_id=1))
