"""Steps 11-18: keys, signature and the gate rules that need no database."""

from __future__ import annotations

import threading
from types import ModuleType

import pytest

from parkgate.native import CodeError, Keyring, Reason, Result, SigningKey, Ticket

from .helpers import NOW, SHANGHAI, code_for, ticket

R = Reason


def gate(impl: ModuleType, code: str | bytes, ring: Keyring, **kw: int) -> Result:
    args = {"now": NOW, "utc_offset": SHANGHAI, "park_id": 3, "attraction_id": 0}
    args.update(kw)
    return impl.verify(code, ring, **args)  # type: ignore[no-any-return]


def reason(impl: ModuleType, code: str | bytes, ring: Keyring, **kw: int) -> Reason:
    return gate(impl, code, ring, **kw).reason


def test_ok(impl: ModuleType, key: SigningKey, ring: Keyring) -> None:
    result = gate(impl, code_for(key, persons=5), ring)
    assert result == Result(True, R.OK, ticket(key.key_id, persons=5))
    assert type(result) is Result and type(result.ticket) is Ticket
    assert result.ticket.persons == 5


def test_keys(
    impl: ModuleType,
    ring: Keyring,
    key: SigningKey,
    retired_key: SigningKey,
    revoked_key: SigningKey,
    stranger_key: SigningKey,
) -> None:
    assert reason(impl, code_for(retired_key), ring) is R.OK  # rotation: old codes stay valid
    assert reason(impl, code_for(revoked_key), ring) is R.REVOKED_KEY
    assert reason(impl, code_for(stranger_key), ring) is R.UNKNOWN_KEY
    assert reason(impl, code_for(key), Keyring()) is R.UNKNOWN_KEY


def test_forged(impl: ModuleType, key: SigningKey, ring: Keyring) -> None:
    impostor = SigningKey(key.key_id, bytes(32))  # right id, wrong key
    assert reason(impl, code_for(impostor), ring) is R.FORGED_CODE


def test_unverified_codes_carry_no_payload(
    impl: ModuleType, key: SigningKey, ring: Keyring, revoked_key: SigningKey
) -> None:
    for code in (code_for(SigningKey(1, bytes(32))), code_for(revoked_key), "PG:", "junk"):
        result = gate(impl, code, ring)
        assert not result.ok and result.ticket is None
    expired = gate(impl, code_for(key, valid_until=NOW), ring)
    assert expired.reason is R.EXPIRED and expired.ticket == ticket(valid_until=NOW)


def test_park(impl: ModuleType, key: SigningKey, ring: Keyring) -> None:
    assert reason(impl, code_for(key), ring, park_id=4) is R.NOT_VALID_FOR_PARK
    # The park is checked first: a code for another park that is also expired.
    assert reason(impl, code_for(key, valid_until=NOW - 1), ring, park_id=4) is R.NOT_VALID_FOR_PARK


def test_validity_bounds(impl: ModuleType, key: SigningKey, ring: Keyring) -> None:
    code = code_for(key, valid_from=NOW, valid_until=NOW + 10)
    assert reason(impl, code, ring, now=NOW - 1) is R.NOT_YET_VALID
    assert reason(impl, code, ring, now=NOW) is R.OK  # from: inclusive
    assert reason(impl, code, ring, now=NOW + 9) is R.OK
    assert reason(impl, code, ring, now=NOW + 10) is R.EXPIRED  # until: exclusive
    assert reason(impl, code, ring, now=2**40) is R.EXPIRED


def minute_now(minute: int, offset: int = SHANGHAI) -> int:
    """A ``now`` whose park-local time is ``minute`` past midnight on 2025-06-15."""
    local_midnight = (NOW + offset) // 86_400 * 86_400
    return local_midnight + minute * 60 - offset


@pytest.mark.parametrize("offset", [SHANGHAI, 0, -5 * 3600, -9 * 3600 - 1800, 14 * 3600])
def test_night_window(impl: ModuleType, key: SigningKey, ring: Keyring, offset: int) -> None:
    code = code_for(key, valid_from=NOW - 86_400, valid_until=NOW + 86_400, night_window=(18 * 60, 22 * 60))
    for minute, want in [
        (17 * 60 + 59, R.OUTSIDE_TIME_WINDOW),
        (18 * 60, R.OK),
        (21 * 60 + 59, R.OK),
        (22 * 60, R.OUTSIDE_TIME_WINDOW),
        (0, R.OUTSIDE_TIME_WINDOW),
    ]:
        assert reason(impl, code, ring, now=minute_now(minute, offset), utc_offset=offset) is want, minute


def test_night_window_over_midnight(impl: ModuleType, key: SigningKey, ring: Keyring) -> None:
    code = code_for(key, valid_from=NOW - 86_400, valid_until=NOW + 86_400, night_window=(20 * 60, 2 * 60))
    for minute, want in [
        (19 * 60 + 59, R.OUTSIDE_TIME_WINDOW),
        (20 * 60, R.OK),
        (23 * 60 + 59, R.OK),
        (0, R.OK),
        (119, R.OK),
        (120, R.OUTSIDE_TIME_WINDOW),
        (12 * 60, R.OUTSIDE_TIME_WINDOW),
    ]:
        assert reason(impl, code, ring, now=minute_now(minute)) is want, minute


def test_night_window_near_the_epoch(impl: ModuleType, key: SigningKey, ring: Keyring) -> None:
    """now + offset < 0: the local minute must still be a floor, as in Python."""
    code = code_for(key, valid_from=0, valid_until=10**6, night_window=(23 * 60, 60))
    assert reason(impl, code, ring, now=0, utc_offset=-30) is R.OK  # 23:59:30 on 1969-12-31
    assert reason(impl, code, ring, now=0, utc_offset=-3601) is R.OUTSIDE_TIME_WINDOW  # 22:59:59
    assert reason(impl, code, ring, now=60, utc_offset=-3600 - 59) is R.OK  # 23:00:01


def test_attractions(impl: ModuleType, key: SigningKey, ring: Keyring) -> None:
    code = code_for(key, attractions=[1, 7, 64])
    for attraction, want in [
        (0, R.OK),
        (1, R.OK),
        (7, R.OK),
        (64, R.OK),
        (2, R.NOT_VALID_FOR_ATTRACTION),
        (65, R.NOT_VALID_FOR_ATTRACTION),
        (65535, R.NOT_VALID_FOR_ATTRACTION),
    ]:
        assert reason(impl, code, ring, attraction_id=attraction) is want, attraction
    park_only = code_for(key)
    assert reason(impl, park_only, ring, attraction_id=0) is R.OK
    assert reason(impl, park_only, ring, attraction_id=1) is R.NOT_VALID_FOR_ATTRACTION
    everything = code_for(key, all_attractions=True)
    for attraction in (0, 1, 64, 65, 65535):
        assert reason(impl, everything, ring, attraction_id=attraction) is R.OK


def test_rule_order(impl: ModuleType, key: SigningKey, ring: Keyring) -> None:
    """Dates before the night window, the window before the attraction."""
    code = code_for(key, valid_from=NOW + 1, night_window=(60, 120), attractions=[2])
    assert reason(impl, code, ring, attraction_id=1) is R.NOT_YET_VALID
    code = code_for(key, night_window=(60, 120), attractions=[2])
    assert reason(impl, code, ring, attraction_id=1) is R.OUTSIDE_TIME_WINDOW


def test_authenticate(impl: ModuleType, key: SigningKey, ring: Keyring, revoked_key: SigningKey) -> None:
    expired = code_for(key, valid_from=1, valid_until=2)
    assert impl.authenticate(expired, ring) == ticket(valid_from=1, valid_until=2)  # no gate rules
    for code, want in [
        (code_for(revoked_key), R.REVOKED_KEY),
        (code_for(SigningKey(1, bytes(32))), R.FORGED_CODE),
        ("PG:", R.WRONG_LENGTH),
        (code_for(key), None),
    ]:
        if want is None:
            impl.authenticate(code.encode(), ring)
            continue
        with pytest.raises(CodeError) as info:
            impl.authenticate(code, ring)
        assert info.value.reason is want


def test_batch(impl: ModuleType, key: SigningKey, ring: Keyring, revoked_key: SigningKey) -> None:
    codes: list[str | bytes] = [
        code_for(key, serial=1),
        "PG:",
        code_for(revoked_key),
        code_for(key, serial=2).encode(),
        code_for(key, park_id=9),
        bytearray(code_for(key, serial=3).encode()),  # type: ignore[list-item]
    ]
    got = impl.verify_batch(codes, ring, now=NOW, utc_offset=SHANGHAI, park_id=3)
    assert [r.reason for r in got] == [R.OK, R.WRONG_LENGTH, R.REVOKED_KEY, R.OK, R.NOT_VALID_FOR_PARK, R.OK]
    assert [r.ticket.serial for r in got if r.ok] == [1, 2, 3]  # type: ignore[union-attr]
    assert [gate(impl, c, ring) for c in codes] == got
    assert impl.verify_batch([], ring, now=NOW, utc_offset=0, park_id=3) == []
    assert impl.verify_batch(tuple(codes), ring, now=NOW, utc_offset=SHANGHAI, park_id=3) == got
    assert impl.verify_batch(iter(codes), ring, now=NOW, utc_offset=SHANGHAI, park_id=3) == got


def test_large_batch_crosses_chunks(
    both: tuple[ModuleType, ModuleType], key: SigningKey, ring: Keyring
) -> None:
    """More codes than the native module's nogil chunk (256), mixed good and bad."""
    native, pure = both
    codes = [code_for(key, serial=i + 1) if i % 3 else f"PG:{i}" for i in range(700)]
    args = {"now": NOW, "utc_offset": SHANGHAI, "park_id": 3}
    assert native.verify_batch(codes, ring, **args) == pure.verify_batch(codes, ring, **args)


@pytest.mark.parametrize(
    ("kw", "exc"),
    [
        ({"now": 1.5}, TypeError),
        ({"now": -1}, ValueError),
        ({"now": 2**62}, ValueError),
        ({"utc_offset": 86_400}, ValueError),
        ({"utc_offset": "8"}, TypeError),
        ({"park_id": 65536}, ValueError),
        ({"attraction_id": -1}, ValueError),
    ],
)
def test_bad_arguments(
    impl: ModuleType, key: SigningKey, ring: Keyring, kw: dict[str, object], exc: type[Exception]
) -> None:
    args: dict[str, object] = {"now": NOW, "utc_offset": SHANGHAI, "park_id": 3}
    args.update(kw)
    with pytest.raises(exc):
        impl.verify_batch([code_for(key)], ring, **args)
    with pytest.raises(exc):
        impl.verify(code_for(key), ring, **args)


def test_bad_inputs_are_type_errors(impl: ModuleType, key: SigningKey, ring: Keyring) -> None:
    with pytest.raises(TypeError):
        impl.verify_batch([code_for(key), None], ring, now=NOW, utc_offset=0, park_id=3)
    with pytest.raises(TypeError):
        impl.verify_batch([code_for(key)], ring.to_bytes(), now=NOW, utc_offset=0, park_id=3)
    with pytest.raises(TypeError):
        impl.verify_batch([], {}, now=NOW, utc_offset=0, park_id=3)
    with pytest.raises(TypeError):
        impl.authenticate(code_for(key), None)


def test_threads(impl: ModuleType, key: SigningKey, ring: Keyring) -> None:
    """Batches from several threads at once give the right answers (the native one without the GIL)."""
    codes = [code_for(key, serial=i + 1) for i in range(150)]
    out: list[list[Result]] = [[] for _ in range(4)]

    def work(i: int) -> None:
        out[i] = impl.verify_batch(codes, ring, now=NOW, utc_offset=SHANGHAI, park_id=3)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for results in out:
        assert [r.ticket.serial for r in results if r.ok] == list(range(1, 151))  # type: ignore[union-attr]
