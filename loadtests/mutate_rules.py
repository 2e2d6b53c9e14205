"""Mutation check of the gate decisions: flip each rule of the decision engine in turn, the tests must go red.

``python -m loadtests.mutate_rules`` (``make mutation``) reads
``native/parkgate/rules/engine.py`` and ``terms.py``, makes one mutant per
rule site (a comparison negated or moved across its boundary, ``and``/``or``
swapped, a ``not`` dropped, a rule's ``if`` never taken, a conditional's
branches swapped, ``+``/``-`` swapped, a field left out of the ticket the
rule returns, a kind's default count changed), writes it over the source,
and runs the tests in stages: the fast engine and offline table first, then
(only for a mutant that survived them) the central table on PostgreSQL, the
gate streams, the gate agent, the catalogue's cards and the site edge. A
mutant survives when every stage passes; the script prints each survivor and
exits 1 if there is any.

Why a script and not mutmut or cosmic-ray: both copy or import the code
under test their own way, which does not fit five editable namespace
distributions whose tests start real servers in subprocesses; the rules are
two small files, so an ``ast`` walk names every rule precisely and a mutant
is just the file rewritten. The original bytes are written back after every
mutant and on any exit (an exception, Ctrl-C, SIGTERM), and checked.
"""

from __future__ import annotations

import argparse
import ast
import copy
import hashlib
import os
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

ROOT = Path(__file__).resolve().parent.parent
RULES = ROOT / "native" / "parkgate" / "rules"
TARGETS = (RULES / "engine.py", RULES / "terms.py")

#: The stages, fastest first; a mutant is killed by the first stage that fails.
STAGES: tuple[tuple[str, ...], ...] = (
    ("tests/rules/test_engine_rules.py", "tests/rules/test_decision_table.py", "-k", "not central"),
    # the catalogue (stored-value fares, count cards, blocked cards at the gates) and the site edge
    # (which decides alone with the same engine) exercise the rules too; only stage-1 survivors pay for them
    ("tests/rules", "tests/gates", "tests/gate_agent", "tests/catalogue", "tests/sites"),
)

NEGATE: dict[type[ast.cmpop], type[ast.cmpop]] = {
    ast.Lt: ast.GtE, ast.GtE: ast.Lt, ast.Gt: ast.LtE, ast.LtE: ast.Gt, ast.Eq: ast.NotEq, ast.NotEq: ast.Eq,
    ast.In: ast.NotIn, ast.NotIn: ast.In, ast.Is: ast.IsNot, ast.IsNot: ast.Is,
}
BOUNDARY: dict[type[ast.cmpop], type[ast.cmpop]] = {ast.Lt: ast.LtE, ast.LtE: ast.Lt, ast.Gt: ast.GtE, ast.GtE: ast.Gt}


@dataclass(frozen=True)
class Mutant:
    path: Path
    line: int
    what: str
    source: str


def _sites(tree: ast.Module) -> Iterator[tuple[ast.AST, str, Callable[[ast.AST], None]]]:
    """Every (node, description, mutate-in-place) of a rule in ``tree`` (docstrings and __all__ left alone)."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Compare) and len(node.ops) == 1:
            op = type(node.ops[0])
            if op in NEGATE:
                yield node, f"{op.__name__} -> {NEGATE[op].__name__}", \
                    lambda n, t=NEGATE[op]: n.ops.__setitem__(0, t())  # type: ignore[attr-defined]
            if op in BOUNDARY:
                yield node, f"{op.__name__} -> {BOUNDARY[op].__name__}", \
                    lambda n, t=BOUNDARY[op]: n.ops.__setitem__(0, t())  # type: ignore[attr-defined]
        elif isinstance(node, ast.BoolOp):
            swap = ast.Or if isinstance(node.op, ast.And) else ast.And
            yield node, f"{type(node.op).__name__} -> {swap.__name__}", lambda n, s=swap: setattr(n, "op", s())
        elif isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not):
            yield node, "not dropped", lambda n: setattr(n, "op", ast.UAdd())  # +bool(x) is x's truth as an int
        elif isinstance(node, ast.If):
            yield node, "rule never taken (if False)", lambda n: setattr(n, "test", ast.Constant(False))
        elif isinstance(node, ast.IfExp):
            yield node, "branches swapped", _swap  # type: ignore[misc]
        elif isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add | ast.Sub):
            swap_op = ast.Sub if isinstance(node.op, ast.Add) else ast.Add
            yield node, f"{type(node.op).__name__} -> {swap_op.__name__}", lambda n, s=swap_op: setattr(n, "op", s())
        elif isinstance(node, ast.Call) and getattr(node.func, "id", "") == "replace":
            for i, kw in enumerate(node.keywords):
                yield node, f"replace(...) without {kw.arg}=", lambda n, i=i: n.keywords.pop(i)  # type: ignore[attr-defined]
        elif isinstance(node, ast.Dict):
            for i, value in enumerate(node.values):
                if isinstance(value, ast.Constant) and type(value.value) is int:
                    key = getattr(node.keys[i], "value", "?")
                    yield value, f"default {key}: {value.value} -> {1 - value.value if value.value <= 1 else 1}", \
                        lambda n: setattr(n, "value", 1 - n.value if n.value <= 1 else 1)  # type: ignore[attr-defined]


def _swap(node: ast.IfExp) -> None:
    node.body, node.orelse = node.orelse, node.body


def mutants(path: Path) -> Iterator[Mutant]:
    original = ast.parse(path.read_text())
    count = sum(1 for _ in _sites(original))
    for k in range(count):
        tree = copy.deepcopy(original)
        node, what, mutate = list(_sites(tree))[k]
        mutate(node)
        yield Mutant(path, getattr(node, "lineno", 0), what, ast.unparse(ast.fix_missing_locations(tree)) + "\n")


class Sources:
    """The rule files as they were; written back after each mutant and on any exit."""

    def __init__(self, paths: tuple[Path, ...]) -> None:
        self.saved = {p: p.read_bytes() for p in paths}

    def restore(self) -> None:
        for path, data in self.saved.items():
            if path.read_bytes() != data:
                path.write_bytes(data)
            _drop_bytecode(path)
        assert all(hashlib.sha256(p.read_bytes()).digest() == hashlib.sha256(d).digest()
                   for p, d in self.saved.items())


def _drop_bytecode(path: Path) -> None:
    """A mutant can have the same size and second as the source: never let Python reuse a stale .pyc."""
    for pyc in (path.parent / "__pycache__").glob(f"{path.stem}.*.pyc"):
        pyc.unlink(missing_ok=True)


def run_stage(args: tuple[str, ...], timeout: float) -> tuple[bool, str]:
    """(passed, the failing test's id or why) for one pytest run of ``args``."""
    cmd = [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", "-o", "addopts=--strict-markers",
           "--no-header", "-rfE", *args]
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
    try:
        done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout, env=env)
    except subprocess.TimeoutExpired:
        return False, f"timed out after {timeout:.0f}s (a loop that never ends counts as killed)"
    if done.returncode == 0:
        return True, ""
    failed = [line for line in done.stdout.splitlines() if line.startswith(("FAILED", "ERROR"))]
    lines = done.stdout.strip().splitlines()
    return False, (failed[0] if failed else (lines[-1] if lines else f"pytest exit {done.returncode}"))[:160]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--only", default="", help="only mutants whose file:line or description contains this")
    parser.add_argument("--fast", action="store_true", help="the first stage only (a quick look, not the check)")
    parser.add_argument("--tests", default="", help="pytest arguments of the first stage instead of the default "
                        "(to measure what an older test set let survive)")
    parser.add_argument("--timeout", type=float, default=1200.0, help="seconds per stage run")
    options = parser.parse_args(argv)
    stages = STAGES[:1] if options.fast else STAGES
    if options.tests:
        stages = (tuple(shlex.split(options.tests)), *stages[1:])
    sources = Sources(TARGETS)

    def interrupted(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, interrupted)
    survivors: list[Mutant] = []
    total = killed = 0
    started = time.monotonic()
    try:
        for path in TARGETS:
            for mutant in mutants(path):
                name = f"{path.relative_to(ROOT)}:{mutant.line} {mutant.what}"
                if options.only and options.only not in name:
                    continue
                total += 1
                path.write_text(mutant.source)
                _drop_bytecode(path)
                try:
                    for stage in stages:
                        passed, why = run_stage(stage, options.timeout)
                        if not passed:
                            killed += 1
                            print(f"killed   {name}\n         by {why}", flush=True)
                            break
                    else:
                        survivors.append(mutant)
                        print(f"SURVIVED {name}", flush=True)
                finally:
                    sources.restore()
    finally:
        sources.restore()
    print(f"\n{total} mutants of the decision engine, {killed} killed, {len(survivors)} survived "
          f"({time.monotonic() - started:.0f}s); stages: {' | '.join(' '.join(s) for s in stages)}")
    for mutant in survivors:
        print(f"  survivor: {mutant.path.relative_to(ROOT)}:{mutant.line} {mutant.what}")
    return 1 if survivors else 0


if __name__ == "__main__":
    sys.exit(main())
