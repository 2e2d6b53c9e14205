"""Steps 1-10 of docs/ticket-code.md: one spelling per code, one reason per refusal."""

from __future__ import annotations

import pickle
from types import ModuleType

import pytest

from parkgate.native import CodeError, Reason, SigningKey, Ticket
from parkgate.native._format import BASE45_ALPHABET, PAYLOAD_STRUCT, base45_encode

from .helpers import code_for, ticket

R = Reason


def b45(data: bytes) -> str:
    return "PG:" + base45_encode(data)


def reason_of(impl: ModuleType, code: str | bytes | bytearray) -> Reason:
    with pytest.raises(CodeError) as info:
        impl.decode(code)
    assert isinstance(info.value.reason, Reason)
    return info.value.reason


@pytest.fixture(scope="module")
def code(key: SigningKey) -> str:
    return code_for(key, persons=3, night_window=(1080, 120), attractions=[1, 64])


def test_round_trip(impl: ModuleType, key: SigningKey, code: str) -> None:
    want = ticket(key.key_id, persons=3, night_window=(1080, 120), attractions=[1, 64])
    assert impl.decode(code) == want
    assert impl.decode(code.encode()) == want
    assert impl.decode(bytearray(code.encode())) == want
    got = impl.decode(code)
    assert type(got) is Ticket
    assert got.multi_person and got.night_tour and not got.all_attractions
    assert got.night_window == (1080, 120)
    assert got.attraction_slots == {1, 64}


@pytest.mark.parametrize(
    "text",
    ["", "P", "PG", "pg:", "PG;", " PG:", "HC1:", "\u00e9PG:", "PG\u00e9", b"", b"pg:", b"\xffPG:"],
)
def test_wrong_scheme(impl: ModuleType, text: str | bytes) -> None:
    assert reason_of(impl, text) is R.WRONG_SCHEME


def test_wrong_scheme_keeps_body(impl: ModuleType, code: str) -> None:
    assert reason_of(impl, "pg:" + code[3:]) is R.WRONG_SCHEME
    assert reason_of(impl, code[3:]) is R.WRONG_SCHEME


@pytest.mark.parametrize("stray", ["#", "\r", "\n", "\u00e9", "\ud800", "\x00", "_", "a#"])
def test_stray_character_is_malformed(impl: ModuleType, code: str, stray: str) -> None:
    assert reason_of(impl, code[:50] + stray + code[50 + len(stray) :]) is R.MALFORMED_CODE
    assert reason_of(impl, code + stray) is R.MALFORMED_CODE  # e.g. a scanner's CR left in


def test_stray_bytes_are_malformed(impl: ModuleType, code: str) -> None:
    raw = code.encode()
    for stray in (b"\x80", b"\xff", b"\r\n", b"a\x00"):
        assert reason_of(impl, raw[:40] + stray + raw[40 + len(stray) :]) is R.MALFORMED_CODE


def test_stray_outranks_lower_case(impl: ModuleType, code: str) -> None:
    assert reason_of(impl, "PG:" + code[3:-1].lower() + "#") is R.MALFORMED_CODE
    assert reason_of(impl, "PG:" + code[3:].lower() + "\u00e9") is R.MALFORMED_CODE


def test_lower_case_is_non_canonical(impl: ModuleType, code: str) -> None:
    letters = [i for i, c in enumerate(code) if i >= 3 and c.isalpha()]
    i = letters[0]
    assert reason_of(impl, code[:i] + code[i].lower() + code[i + 1 :]) is R.NON_CANONICAL_ENCODING
    assert reason_of(impl, "PG:" + code[3:].lower()) is R.NON_CANONICAL_ENCODING
    assert reason_of(impl, ("PG:" + code[3:].lower()).encode()) is R.NON_CANONICAL_ENCODING


def test_length_one_mod_three_is_malformed(impl: ModuleType, code: str) -> None:
    assert reason_of(impl, code + "0") is R.MALFORMED_CODE
    assert reason_of(impl, code[:-2]) is R.MALFORMED_CODE
    assert reason_of(impl, "PG:0") is R.MALFORMED_CODE


def test_group_overflow_is_non_canonical(impl: ModuleType, code: str) -> None:
    # ":::" = 44 + 44*45 + 44*2025 = 91124 > 65535: a lax decoder would wrap it around.
    assert reason_of(impl, code[:6] + ":::" + code[9:]) is R.NON_CANONICAL_ENCODING
    # "GGW" = 65536 is the smallest overflowing group (see test_smallest_overflowing_group).
    assert reason_of(impl, code[:-3] + "GGW") is R.NON_CANONICAL_ENCODING
    # Final pair above 255: "Z5" = 35 + 5*45 = 260.
    assert reason_of(impl, code + "Z5") is R.NON_CANONICAL_ENCODING
    # Overflow outranks the length checks (step 5 before 6-9).
    assert reason_of(impl, "PG:" + ":::") is R.NON_CANONICAL_ENCODING


def test_smallest_overflowing_group() -> None:
    value = {c: i for i, c in enumerate(BASE45_ALPHABET)}
    assert value["G"] + value["G"] * 45 + value["W"] * 2025 == 65536
    assert value["F"] + value["G"] * 45 + value["W"] * 2025 == 65535


def test_wrong_length(impl: ModuleType, code: str) -> None:
    assert reason_of(impl, "PG:") is R.WRONG_LENGTH
    assert reason_of(impl, code[:-3]) is R.WRONG_LENGTH  # 98 bytes
    assert reason_of(impl, code[:-3] + "00") is R.WRONG_LENGTH  # 99 bytes
    assert reason_of(impl, b45(b"\x01")) is R.WRONG_LENGTH


def test_trailing_bytes(impl: ModuleType, code: str) -> None:
    assert reason_of(impl, code + "00") is R.TRAILING_BYTES  # 101 bytes
    assert reason_of(impl, code + "000") is R.TRAILING_BYTES  # 102 bytes
    assert reason_of(impl, code + code[3:]) is R.TRAILING_BYTES
    assert reason_of(impl, code + "0" * 300_000) is R.TRAILING_BYTES  # long input: no buffer issue


def test_unknown_version(impl: ModuleType, code: str) -> None:
    raw = bytearray(_raw(code))
    for version in (0, 2, 255):
        raw[0] = version
        assert reason_of(impl, b45(bytes(raw))) is R.UNKNOWN_CODE_VERSION
    # The version is checked before the length: an unknown version has unknown length.
    assert reason_of(impl, b45(b"\x02")) is R.UNKNOWN_CODE_VERSION
    assert reason_of(impl, b45(b"\x02" * 300)) is R.UNKNOWN_CODE_VERSION


def _raw(code: str) -> bytes:
    from parkgate.native import _pure

    parts = _pure._decode(code)
    assert isinstance(parts, tuple)
    return parts[0] + parts[1]


def _payload(**fields: int) -> bytes:
    """Pack a payload WITHOUT the signer's checks, to reach step 10."""
    f = {
        "version": 1,
        "key_id": 1,
        "serial": 5,
        "product_id": 7,
        "park_id": 3,
        "valid_from": 100,
        "valid_until": 200,
        "flags": 0,
        "persons": 1,
        "window_start": 0,
        "window_end": 0,
        "attractions": 0,
    }
    f.update(fields)
    window = f["window_start"] << 12 | f["window_end"]
    return PAYLOAD_STRUCT.pack(
        f["version"],
        f["key_id"],
        f["serial"] >> 32,
        f["serial"] & 0xFFFFFFFF,
        f["product_id"],
        f["park_id"],
        f["valid_from"],
        f["valid_until"],
        f["flags"],
        f["persons"],
        window >> 16,
        window & 0xFFFF,
        f["attractions"],
    )


def test_canonical_payload_decodes(impl: ModuleType) -> None:
    assert impl.decode(b45(_payload() + bytes(64))) == Ticket(1, 1, 5, 7, 3, 100, 200, 0, 1, 0, 0, 0)


@pytest.mark.parametrize(
    "fields",
    [
        {"flags": 0x08},  # reserved bits
        {"flags": 0x80},
        {"persons": 0},
        {"persons": 2},  # MULTI_PERSON missing
        {"flags": 0x02, "persons": 1},  # MULTI_PERSON without persons
        {"window_start": 5},  # a window without NIGHT_TOUR
        {"window_end": 5},
        {"flags": 0x01, "window_start": 60, "window_end": 60},  # empty window
        {"flags": 0x01, "window_start": 1440, "window_end": 60},
        {"flags": 0x01, "window_start": 60, "window_end": 4095},
        {"flags": 0x04, "attractions": 1},  # a mask beside ALL_ATTRACTIONS
        {"valid_from": 200, "valid_until": 200},
        {"valid_from": 201, "valid_until": 200},
    ],
)
def test_non_canonical_payload_is_malformed(impl: ModuleType, fields: dict[str, int]) -> None:
    assert reason_of(impl, b45(_payload(**fields) + bytes(64))) is R.MALFORMED_CODE


@pytest.mark.parametrize("bad", [None, 5, 1.5, memoryview(b"PG:"), ["PG:"]])
def test_not_a_string_is_a_type_error(impl: ModuleType, bad: object) -> None:
    with pytest.raises(TypeError):
        impl.decode(bad)


def test_code_error() -> None:
    err = CodeError(Reason.FORGED_CODE)
    assert isinstance(err, ValueError)
    assert err.reason is Reason.FORGED_CODE
    assert str(err) == "FORGED_CODE"
    again = pickle.loads(pickle.dumps(err))
    assert again.reason is Reason.FORGED_CODE
