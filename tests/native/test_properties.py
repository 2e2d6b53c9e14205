"""Property tests: round trips, native == python on anything, every bit flip refused."""

from __future__ import annotations

from types import ModuleType

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from parkgate.native import CodeError, Keyring, Reason, Result, SigningKey, Ticket, sign
from parkgate.native._format import BASE45_ALPHABET, base45_encode

from .helpers import NOW

SETTINGS = settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
GATE = {"now": NOW, "utc_offset": 8 * 3600, "park_id": 3, "attraction_id": 0}


@st.composite
def tickets(draw: st.DrawFn, key_id: int = 1) -> Ticket:
    start = draw(st.integers(0, 2**32 - 2))
    night = draw(
        st.none() | st.tuples(st.integers(0, 1439), st.integers(0, 1439)).filter(lambda w: w[0] != w[1])
    )
    everything = draw(st.booleans())
    return Ticket.build(
        key_id=key_id,
        serial=draw(st.integers(1, 2**48 - 1)),
        product_id=draw(st.integers(0, 2**32 - 1)),
        park_id=draw(st.integers(1, 2**16 - 1)),
        valid_from=start,
        valid_until=draw(st.integers(start + 1, 2**32 - 1)),
        persons=draw(st.integers(1, 255)),
        night_window=night,
        attractions=() if everything else draw(st.frozensets(st.integers(1, 64), max_size=64)),
        all_attractions=everything,
    )


def outcome(impl: ModuleType, code: object) -> object:
    try:
        return impl.decode(code)
    except CodeError as exc:
        return exc.reason


@SETTINGS
@given(
    t=tickets(),
    now=st.integers(0, 2**33),
    offset=st.integers(-86_399, 86_399),
    attraction=st.integers(0, 70),
    as_bytes=st.booleans(),
)
def test_round_trip(
    impl: ModuleType,
    key: SigningKey,
    ring: Keyring,
    t: Ticket,
    now: int,
    offset: int,
    attraction: int,
    as_bytes: bool,
) -> None:
    code = sign(key, t)
    assert len(code) == 153
    text: str | bytes = code.encode() if as_bytes else code
    assert impl.decode(text) == t
    assert impl.authenticate(text, ring) == t
    result = impl.verify(text, ring, now=now, utc_offset=offset, park_id=t.park_id, attraction_id=attraction)
    assert result.ticket == t
    assert result.ok == (result.reason is Reason.OK)
    if t.valid_from <= now < t.valid_until and not t.night_tour and (attraction == 0 or t.all_attractions):
        assert result.reason is Reason.OK


@SETTINGS
@given(text=st.text(alphabet=BASE45_ALPHABET + "abcz#\u00e9", max_size=200))
def test_agree_on_base45_like_text(both: tuple[ModuleType, ModuleType], ring: Keyring, text: str) -> None:
    native, pure = both
    for candidate in ("PG:" + text, text):
        assert outcome(native, candidate) == outcome(pure, candidate)
    assert native.verify_batch(["PG:" + text], ring, **GATE) == pure.verify_batch(
        ["PG:" + text], ring, **GATE
    )


@SETTINGS
@given(data=st.binary(max_size=130))
def test_agree_on_any_payload(both: tuple[ModuleType, ModuleType], ring: Keyring, data: bytes) -> None:
    native, pure = both
    code = "PG:" + base45_encode(data)
    assert outcome(native, code) == outcome(pure, code)
    assert outcome(native, data) == outcome(pure, data)
    assert native.verify_batch([code, data], ring, **GATE) == pure.verify_batch([code, data], ring, **GATE)


@SETTINGS
@given(t=tickets(), data=st.data())
def test_agree_on_mutated_codes(
    both: tuple[ModuleType, ModuleType], key: SigningKey, ring: Keyring, t: Ticket, data: st.DataObject
) -> None:
    native, pure = both
    code = sign(key, t)
    pos = data.draw(st.integers(0, len(code)))
    cut = data.draw(st.integers(0, 3))
    insert = data.draw(st.text(alphabet=BASE45_ALPHABET + "a\r", max_size=3))
    mutated = code[:pos] + insert + code[pos + cut :]
    assert outcome(native, mutated) == outcome(pure, mutated)
    gate = {**GATE, "park_id": t.park_id, "now": data.draw(st.integers(0, 2**32))}
    assert native.verify_batch([mutated], ring, **gate) == pure.verify_batch([mutated], ring, **gate)


def _flips(code: str, raw: bytes) -> list[str | bytes]:
    """Every single-bit flip: of each decoded byte (re-encoded), and of each character."""
    out: list[str | bytes] = []
    for i in range(len(raw)):
        for bit in range(8):
            flipped = bytearray(raw)
            flipped[i] ^= 1 << bit
            out.append("PG:" + base45_encode(bytes(flipped)))
    text = code.encode()
    for i in range(len(text)):
        for bit in range(8):
            flipped = bytearray(text)
            flipped[i] ^= 1 << bit
            out.append(bytes(flipped))
            out.append(code[:i] + chr(ord(code[i]) ^ (1 << bit)) + code[i + 1 :])
    return out


def test_every_single_bit_flip_is_refused(
    both: tuple[ModuleType, ModuleType], key: SigningKey, ring: Keyring
) -> None:
    native, pure = both
    from parkgate.native import _pure

    samples = [
        Ticket.build(
            key_id=1,
            serial=1,
            product_id=0,
            park_id=3,
            valid_from=0,
            valid_until=2**32 - 1,
            all_attractions=True,
        ),
        Ticket.build(
            key_id=1,
            serial=2**48 - 1,
            product_id=2**32 - 1,
            park_id=3,
            valid_from=NOW - 10,
            valid_until=NOW + 10,
            persons=255,
            night_window=(1439, 1438),
            attractions=range(1, 65),
        ),
    ]
    for t in samples:
        code = sign(key, t)
        payload, signature = _pure._decode(code)  # type: ignore[misc]
        gate = {**GATE, "attraction_id": 5}
        assert native.verify(code, ring, **gate).ok
        flips = _flips(code, payload + signature)
        assert len(flips) == 100 * 8 + 153 * 8 * 2
        want = pure.verify_batch(flips, ring, **gate)
        got = native.verify_batch(flips, ring, **gate)
        assert got == want
        accepted = [f for f, r in zip(flips, got, strict=True) if r.ok or r.ticket is not None]
        assert accepted == [], accepted[:3]
        assert {r.reason for r in got} >= {
            Reason.FORGED_CODE,
            Reason.MALFORMED_CODE,
            Reason.NON_CANONICAL_ENCODING,
        }


def test_results_compare_across_implementations(
    both: tuple[ModuleType, ModuleType], key: SigningKey, ring: Keyring
) -> None:
    native, pure = both
    code = sign(key, Ticket.build(key_id=1, serial=5, product_id=1, park_id=3, valid_from=0, valid_until=NOW))
    a, b = native.verify(code, ring, **GATE), pure.verify(code, ring, **GATE)
    assert a == b and type(a) is type(b) is Result and a.reason is Reason.EXPIRED
