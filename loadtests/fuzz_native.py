"""Fuzz the ticket-code decoder: both implementations, random and mutated inputs.

    python -m loadtests.fuzz_native [--count 1000000] [--seed 1] [--jobs 2]

For every input, ``decode`` must return a Ticket or raise CodeError (nothing
else), and the native and pure-Python implementations must agree; then every
chunk goes through ``verify_batch`` in both, which must never raise and must
agree result for result. A faulthandler watchdog turns a hang into a failure
with a traceback; a crash kills the worker, which the parent reports.
tests/native/test_fuzz.py runs a small slice of the same generator.
"""

from __future__ import annotations

import argparse
import faulthandler
import multiprocessing
import random
import sys
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from types import ModuleType

from parkgate.native import CodeError, Keyring, KeyState, SigningKey, Ticket, get_implementation, sign
from parkgate.native._format import BASE45_ALPHABET, PAYLOAD_LEN, base45_encode

NOW = 1_750_000_000
PARK = 3
CHUNK = 500
HANG_SECONDS = 120  # one chunk of CHUNK inputs takes well under a second
_LOWER = "abcdefghijklmnopqrstuvwxyz"


@dataclass
class Corpus:
    """Valid codes signed by keys in every state, and the gate's keyring."""

    keyring: Keyring
    codes: list[str]


def make_corpus(seed: int, size: int = 64) -> Corpus:
    rng = random.Random(seed)
    keys = [SigningKey(i, rng.randbytes(32)) for i in (1, 2, 3, 9)]
    ring = Keyring()
    ring.add_signing_key(keys[0])
    ring.add_signing_key(keys[1], KeyState.RETIRED)
    ring.add_signing_key(keys[2], KeyState.REVOKED)
    # keys[3] (id 9) stays out of the ring: its codes are UNKNOWN_KEY.
    codes = [sign(keys[i % len(keys)], random_ticket(rng, keys[i % len(keys)].key_id)) for i in range(size)]
    # One code per gate rule outcome, whatever the seed: mutations of these
    # reach every step after the signature.
    base = {
        "key_id": 1,
        "serial": 1,
        "product_id": 1,
        "park_id": PARK,
        "valid_from": NOW - 60,
        "valid_until": NOW + 60,
    }
    for extra in (
        {},
        {"park_id": PARK + 1},
        {"valid_from": NOW + 1},
        {"valid_until": NOW},
        {"night_window": (0, 1)},
        {"attractions": (63,)},
        {"all_attractions": True, "persons": 9},
    ):
        codes.append(sign(keys[0], Ticket.build(**{**base, **extra})))  # type: ignore[arg-type]
    return Corpus(ring.public(), codes)


def random_ticket(rng: random.Random, key_id: int) -> Ticket:
    """A canonical payload with fields spread over their whole ranges."""
    # Most codes are current at park PARK, so that mutations and the gate rules
    # after the signature (dates, night window, attractions) all get exercised.
    start = rng.choice(
        [NOW - 3600, NOW - 3600, NOW - 86_400, 0, NOW, NOW + 3600, rng.randrange(0, 2**32 - 2)]
    )
    window = None
    if rng.random() < 0.4:
        begin = rng.randrange(1440)
        window = (begin, (begin + rng.randrange(1, 1440)) % 1440)  # end != start
    all_attr = rng.random() < 0.3
    return Ticket.build(
        key_id=key_id,
        serial=rng.randrange(1, 2**48),
        product_id=rng.randrange(0, 2**32),
        park_id=rng.choice([PARK, PARK, PARK, 1, rng.randrange(1, 2**16)]),
        valid_from=start,
        valid_until=rng.randrange(start + 1, min(start + 10 * 86_400, 2**32 - 1) + 1),
        persons=rng.choice([1, 1, 2, rng.randrange(1, 256)]),
        night_window=window,
        attractions=() if all_attr else rng.sample(range(1, 65), rng.randrange(0, 5)),
        all_attractions=all_attr,
    )


def _raw(code: str) -> bytes:
    """The 100 decoded bytes of a valid code (via the reference implementation)."""
    parts = get_implementation("python")._decode(code)
    assert isinstance(parts, tuple), parts
    return parts[0] + parts[1]


# --- generators: each returns one input (str or bytes) ----------------------------
def _alphabet_text(rng: random.Random, n: int) -> str:
    return "".join(rng.choices(BASE45_ALPHABET, k=n))


def gen_random_base45(rng: random.Random, corpus: Corpus) -> str | bytes:
    n = rng.choice([rng.randrange(0, 220), 150, 149, 151, 152, 153, 147])
    return "PG:" + _alphabet_text(rng, n)


def gen_random_ascii(rng: random.Random, corpus: Corpus) -> str | bytes:
    text = "".join(chr(rng.randrange(32, 127)) for _ in range(rng.randrange(0, 200)))
    return rng.choice(["", "PG:"]) + text


def gen_random_bytes(rng: random.Random, corpus: Corpus) -> str | bytes:
    return rng.choice([b"", b"PG:"]) + rng.randbytes(rng.randrange(0, 200))


def gen_random_unicode(rng: random.Random, corpus: Corpus) -> str | bytes:
    # Whole range, lone surrogates included: a gate may get anything from a decoder library.
    text = "".join(chr(rng.randrange(0, 0x110000)) for _ in range(rng.randrange(0, 40)))
    body = _alphabet_text(rng, 150)
    pos = rng.randrange(151)
    return rng.choice([text, "PG:" + text, "PG:" + body[:pos] + text + body[pos:]])


def gen_random_payload(rng: random.Random, corpus: Corpus) -> str | bytes:
    """Correct Base45 of random bytes: reaches version, length and payload checks."""
    n = rng.choice([100, 100, 100, 99, 101, 98, 102, rng.randrange(0, 120)])
    data = bytearray(rng.randbytes(n))
    if data and rng.random() < 0.8:
        data[0] = 1
    return "PG:" + base45_encode(bytes(data))


def gen_valid(rng: random.Random, corpus: Corpus) -> str | bytes:
    code = rng.choice(corpus.codes)
    return code.encode() if rng.random() < 0.3 else code


def gen_mutated_text(rng: random.Random, corpus: Corpus) -> str | bytes:
    code = list(rng.choice(corpus.codes))
    for _ in range(rng.choice([1, 1, 1, 2, 3])):
        kind = rng.randrange(8)
        pos = rng.randrange(len(code))
        if kind == 0:
            code[pos] = rng.choice(BASE45_ALPHABET)
        elif kind == 1:
            code[pos] = chr(ord(code[pos]) ^ (1 << rng.randrange(8)))  # one bit of one character
        elif kind == 2:
            code.insert(pos, rng.choice(BASE45_ALPHABET + _LOWER + "\r\n#"))
        elif kind == 3 and len(code) > 1:
            del code[pos]
        elif kind == 4:
            code = code[: rng.randrange(len(code) + 1)]
        elif kind == 5:
            code += rng.choices(BASE45_ALPHABET, k=rng.randrange(1, 6))
        elif kind == 6:
            code[pos] = code[pos].lower()
        else:
            code = code[: rng.randrange(len(code))] + list(rng.choice(corpus.codes))[3:]
        if not code:
            break
    text = "".join(code)
    return text.encode("utf-8", "surrogatepass") if rng.random() < 0.2 else text


def gen_mutated_bytes(rng: random.Random, corpus: Corpus) -> str | bytes:
    """Change the decoded bytes and re-encode canonically: reaches payload and signature checks."""
    raw = bytearray(_raw(rng.choice(corpus.codes)))
    kind = rng.randrange(4)
    if kind == 0:
        pos = rng.randrange(len(raw))
        raw[pos] ^= 1 << rng.randrange(8)
    elif kind == 1:
        raw[rng.randrange(PAYLOAD_LEN)] = rng.randrange(256)
    elif kind == 2:
        raw[1:3] = rng.choice([0, 1, 2, 3, 4, 9, 0xFFFF]).to_bytes(2, "big")  # another key id
    else:
        raw[0] = rng.randrange(256)  # another version
    return "PG:" + base45_encode(bytes(raw))


def gen_non_canonical(rng: random.Random, corpus: Corpus) -> str | bytes:
    """Second spellings: group overflow, lower case, other schemes."""
    code = rng.choice(corpus.codes)
    body = code[3:]
    kind = rng.randrange(4)
    if kind == 0:  # a 3-character group above 65535 (e >= 33 always overflows)
        i = rng.randrange(len(body) // 3) * 3
        group = rng.choice(BASE45_ALPHABET) + rng.choice(BASE45_ALPHABET) + rng.choice(BASE45_ALPHABET[33:])
        return "PG:" + body[:i] + group + body[i + 3 :]
    if kind == 1:  # a final pair above 255
        return "PG:" + body[: rng.randrange(0, len(body) // 3 + 1) * 3] + rng.choice(BASE45_ALPHABET) + "Z"
    if kind == 2:
        return "PG:" + "".join(c.lower() if rng.random() < 0.5 else c for c in body)
    return rng.choice(["pg:", "PG", "PG::", " PG:", "PG;", "HC1:", "PG:PG:", ""]) + body


GENERATORS = (
    gen_random_base45,
    gen_random_ascii,
    gen_random_bytes,
    gen_random_unicode,
    gen_random_payload,
    gen_valid,
    gen_mutated_text,
    gen_mutated_bytes,
    gen_mutated_bytes,  # twice: the inputs that reach the signature check matter most
    gen_non_canonical,
)


def inputs(rng: random.Random, corpus: Corpus, count: int) -> Iterator[tuple[str, str | bytes]]:
    for _ in range(count):
        gen = rng.choice(GENERATORS)
        yield gen.__name__, gen(rng, corpus)


# --- checking -----------------------------------------------------------------------
@dataclass
class Stats:
    inputs: int = 0
    generators: Counter[str] = field(default_factory=Counter)
    decoded: Counter[str] = field(default_factory=Counter)
    verified: Counter[str] = field(default_factory=Counter)
    failures: list[str] = field(default_factory=list)
    slowest_chunk: float = 0.0

    def merge(self, other: Stats) -> None:
        self.inputs += other.inputs
        self.generators.update(other.generators)
        self.decoded.update(other.decoded)
        self.verified.update(other.verified)
        self.failures += other.failures
        self.slowest_chunk = max(self.slowest_chunk, other.slowest_chunk)


def _decode_outcome(impl: ModuleType, x: str | bytes, stats: Stats) -> object:
    try:
        return impl.decode(x)
    except CodeError as exc:
        return exc.reason
    except BaseException as exc:  # the point of a fuzz run: anything else is a bug
        stats.failures.append(f"{impl.IMPLEMENTATION}.decode({x!r}) raised {exc!r}")
        return exc


def check_chunk(
    impls: list[ModuleType], corpus: Corpus, chunk: list[str | bytes], stats: Stats, attraction: int
) -> None:
    for x in chunk:
        outcomes = [_decode_outcome(impl, x, stats) for impl in impls]
        if any(o != outcomes[0] for o in outcomes[1:]):
            stats.failures.append(f"decode({x!r}) differs: {outcomes!r}")
        first = outcomes[0]
        stats.decoded["OK" if isinstance(first, Ticket) else getattr(first, "name", "EXCEPTION")] += 1
    batches = []
    for impl in impls:
        try:
            batches.append(
                impl.verify_batch(
                    chunk, corpus.keyring, now=NOW, utc_offset=28_800, park_id=PARK, attraction_id=attraction
                )
            )
        except BaseException as exc:
            stats.failures.append(f"{impl.IMPLEMENTATION}.verify_batch raised {exc!r} on a chunk")
            return
    for i, x in enumerate(chunk):
        if any(b[i] != batches[0][i] for b in batches[1:]):
            stats.failures.append(f"verify({x!r}) differs: {[b[i] for b in batches]!r}")
        stats.verified[batches[0][i].reason.name] += 1


def run(count: int, seed: int, impl_names: tuple[str, ...] = ("native", "python")) -> Stats:
    """Fuzz ``count`` inputs in this process (used by the tests and by each worker)."""
    faulthandler.enable()
    impls = [get_implementation(name) for name in impl_names]  # type: ignore[arg-type]
    rng = random.Random(seed)
    corpus = make_corpus(seed)
    stats = Stats()
    chunk: list[str | bytes] = []
    gen = inputs(rng, corpus, count)
    try:
        while True:
            chunk.clear()
            for name, x in gen:
                stats.generators[name] += 1
                chunk.append(x)
                if len(chunk) == CHUNK:
                    break
            if not chunk:
                break
            faulthandler.dump_traceback_later(HANG_SECONDS, exit=True)  # a hang kills the worker loudly
            t0 = time.perf_counter()
            check_chunk(impls, corpus, chunk, stats, attraction=rng.choice([0, 0, 1, 5, 64, 65]))
            stats.slowest_chunk = max(stats.slowest_chunk, time.perf_counter() - t0)
            stats.inputs += len(chunk)
    finally:
        faulthandler.cancel_dump_traceback_later()
    return stats


def _worker(args: tuple[int, int]) -> Stats:
    return run(*args)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--jobs", type=int, default=2, help="worker processes (one per core)")
    args = parser.parse_args(argv)
    get_implementation("native")  # fail now, loudly, if it is not built
    shares = [args.count // args.jobs + (i < args.count % args.jobs) for i in range(args.jobs)]
    total = Stats()
    t0 = time.perf_counter()
    import concurrent.futures as cf

    ctx = multiprocessing.get_context("spawn")
    with cf.ProcessPoolExecutor(args.jobs, mp_context=ctx) as pool:
        futures = [pool.submit(_worker, (n, args.seed * 1000 + i)) for i, n in enumerate(shares)]
        for fut in futures:
            try:
                total.merge(fut.result())
            except cf.process.BrokenProcessPool as exc:
                total.failures.append(f"a worker died (crash or hang watchdog): {exc!r}")
    elapsed = time.perf_counter() - t0
    print(f"fuzz_native: {total.inputs:,} inputs, seed {args.seed}, {args.jobs} processes, {elapsed:.1f} s")
    print("implementations compared: native vs python (decode and verify_batch, every input)")
    print("inputs by generator:")
    for name, n in sorted(total.generators.items()):
        print(f"  {name:<22} {n:>9,}")
    for title, counter in (("decode outcomes:", total.decoded), ("verify_batch outcomes:", total.verified)):
        print(title)
        for name, n in counter.most_common():
            print(f"  {name:<26} {n:>9,}")
    print(f"slowest chunk of {CHUNK}: {total.slowest_chunk * 1000:.0f} ms (hang watchdog: {HANG_SECONDS} s)")
    print(f"failures: {len(total.failures)}")
    for line in total.failures[:20]:
        print("  " + line[:400])
    return 1 if total.failures else 0


if __name__ == "__main__":
    sys.exit(main())
