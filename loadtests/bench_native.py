"""Benchmark the ticket-code hot path: native vs pure Python vs the crypto ceiling.

    python -m loadtests.bench_native [--codes 4096] [--repeat 3]

Everything is measured in one run on the same valid codes (the slowest path:
every code is verified and gets its payload back):

* native vs pure-Python ``verify_batch`` throughput, one thread, per batch size;
* native with 2 threads vs 1 thread;
* native per-code throughput as a fraction of a bare libsodium
  ``crypto_sign_verify_detached`` loop (``_native.BareVerifier``: nogil, on the
  same pre-split messages and signatures) -- how close we are to the ceiling.

Each figure is the best of ``--repeat`` rounds, the rounds interleaved so a
change of CPU clock hits every row alike.
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import threading
import time
from collections.abc import Callable
from types import ModuleType

import nacl

from parkgate.native import Keyring, SigningKey, Ticket, get_implementation, sign
from parkgate.native._format import DOMAIN, PAYLOAD_LEN

NOW = 1_750_000_000
BATCH_SIZES = (1, 16, 64, 256, 1024)
THREAD_BATCH = 256
TARGET_CEILING = 0.90
TARGET_THREADS = 1.8


def make_codes(count: int) -> tuple[Keyring, list[str]]:
    """Valid codes from two active keys (a rotation in progress), varied payloads."""
    rng = random.Random(7)
    keys = [SigningKey(1, rng.randbytes(32)), SigningKey(2, rng.randbytes(32))]
    ring = Keyring()
    for key in keys:
        ring.add_signing_key(key)
    codes = []
    for i in range(count):
        key = keys[i % 2]
        t = Ticket.build(
            key_id=key.key_id,
            serial=i + 1,
            product_id=rng.randrange(100),
            park_id=3,
            valid_from=NOW - 3600,
            valid_until=NOW + 3600,
            persons=rng.choice([1, 1, 2, 4]),
            attractions=rng.sample(range(1, 65), 3),
        )
        codes.append(sign(key, t))
    return ring.public(), codes


def bare_verifier(native: ModuleType, codes: list[str], ring: Keyring) -> object:
    """Pre-split (DOMAIN || payload, signature, public key) for the ceiling loop."""
    pure = get_implementation("python")
    msgs, sigs, pks = [], [], []
    for code in codes:
        payload, signature = pure._decode(code)
        msgs.append(DOMAIN + payload)
        sigs.append(signature)
        pks.append(ring.public_key(int.from_bytes(payload[1:3], "big")))
    assert len(payload) == PAYLOAD_LEN
    return native.BareVerifier(msgs, sigs, pks)


def timed(fn: Callable[[], object]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def batches(impl: ModuleType, codes: list[str], ring: Keyring, size: int) -> Callable[[], None]:
    chunks = [codes[i : i + size] for i in range(0, len(codes), size)]
    verify_batch = impl.verify_batch

    def run() -> None:
        for chunk in chunks:
            results = verify_batch(chunk, ring, now=NOW, utc_offset=28_800, park_id=3)
            if not results[-1].ok:
                raise AssertionError(results[-1])

    return run


def one_by_one(impl: ModuleType, codes: list[str], ring: Keyring) -> Callable[[], None]:
    verify = impl.verify

    def run() -> None:
        for code in codes:
            verify(code, ring, now=NOW, utc_offset=28_800, park_id=3)

    return run


def threads(work: Callable[[], object], n: int) -> Callable[[], None]:
    """Run ``work`` in n threads at once (started together)."""

    def run() -> None:
        barrier = threading.Barrier(n)

        def worker() -> None:
            barrier.wait()
            work()

        pool = [threading.Thread(target=worker) for _ in range(n)]
        for t in pool:
            t.start()
        for t in pool:
            t.join()

    return run


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--codes", type=int, default=4096)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args(argv)
    native, pure = get_implementation("native"), get_implementation("python")
    ring, codes = make_codes(args.codes)
    n = len(codes)
    bare = bare_verifier(native, codes, ring)

    # name -> (runner, verifications per run)
    rows: dict[str, tuple[Callable[[], object], int]] = {"ceiling": (bare.run, n)}  # type: ignore[attr-defined]
    for size in BATCH_SIZES:
        rows[f"native/{size}"] = (batches(native, codes, ring, size), n)
        rows[f"python/{size}"] = (batches(pure, codes, ring, size), n)
    rows["native/verify"] = (one_by_one(native, codes, ring), n)
    rows["python/verify"] = (one_by_one(pure, codes, ring), n)
    rows["threads/1"] = (threads(batches(native, codes, ring, THREAD_BATCH), 1), n)
    rows["threads/2"] = (threads(batches(native, codes, ring, THREAD_BATCH), 2), 2 * n)
    # The same in the bare loop: what this machine allows right now (another
    # busy process on a 2-core box shows here, not as a fault of ours).
    rows["ceiling/2"] = (threads(bare.run, 2), 2 * n)  # type: ignore[attr-defined]
    load_before = os.getloadavg()[0]

    best: dict[str, float] = {}
    for _ in range(args.repeat):
        for name, (fn, work) in rows.items():
            rate = work / timed(fn)
            best[name] = max(best.get(name, 0.0), rate)

    ceiling = best["ceiling"]
    print(
        f"parkgate.native benchmark: {n:,} valid codes (2 keys), best of {args.repeat} interleaved rounds; "
        f"native: libsodium {native.SODIUM_VERSION} via Cython; python: PyNaCl {nacl.__version__}"
    )
    print(
        f"crypto ceiling, bare crypto_sign_verify_detached loop (nogil, pre-split): "
        f"{ceiling:,.0f} codes/s ({1e6 / ceiling:.1f} us/code)"
    )
    print()
    header = f"{'batch size':>22} | {'native codes/s':>14} | {'python codes/s':>14} | {'native/python':>13} | {'native/ceiling':>14}"
    print(header)
    print("-" * len(header))
    faster_everywhere = True
    for label, key in [(str(s), str(s)) for s in BATCH_SIZES] + [("verify() one by one", "verify")]:
        nat, py = best[f"native/{key}"], best[f"python/{key}"]
        faster_everywhere &= nat > py
        print(f"{label:>22} | {nat:>14,.0f} | {py:>14,.0f} | {nat / py:>12.2f}x | {nat / ceiling:>13.1%}")
    print()
    one, two = best["threads/1"], best["threads/2"]
    print(
        f"native threads (batches of {THREAD_BATCH}): 1 thread {one:,.0f} codes/s, "
        f"2 threads {two:,.0f} codes/s: {two / one:.2f}x"
    )
    print(
        f"bare ceiling in 2 threads: {best['ceiling/2']:,.0f} codes/s: {best['ceiling/2'] / ceiling:.2f}x "
        f"(the machine's own 2-core scaling; {os.cpu_count()} CPUs, load average {load_before:.2f} at start)"
    )
    top = max(best[f"native/{s}"] for s in BATCH_SIZES)
    checks = [
        (f"native >= {TARGET_CEILING:.0%} of the bare-verify ceiling", top / ceiling >= TARGET_CEILING,
         f"{top / ceiling:.1%} at its best batch size, {best['native/256'] / ceiling:.1%} at 256"),
        (f"2 threads >= {TARGET_THREADS}x 1 thread", two / one >= TARGET_THREADS, f"{two / one:.2f}x"),
        ("native faster than python at every batch size", faster_everywhere,
         f"min {min(best[f'native/{s}'] / best[f'python/{s}'] for s in BATCH_SIZES):.2f}x"),
    ]  # fmt: skip
    print()
    for text, ok, figure in checks:
        print(f"  [{'PASS' if ok else 'FAIL'}] {text}: {figure}")
    return 0 if all(ok for _, ok, _ in checks) else 1


if __name__ == "__main__":
    sys.exit(main())
