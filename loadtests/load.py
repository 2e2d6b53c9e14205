"""``make load``: the "peak morning" scenario (S32) with Locust against ``parkgate up --demo``, then bench_gates.

    python -m loadtests.load [--users 40] [--spawn-rate 40] [--seconds 40] [--bench-gates 32] [--no-bench]

1. ``parkgate up --demo`` in the background, in a fresh folder, on free ports
   (the first admin's password is read from what it prints);
2. the load state (loadtests/load_setup.py: gates, windows, operators, ticket pools);
3. Locust headless (loadtests/locustfile.py): ``--users`` users with the
   locustfile's weights (16 gates : 3 windows : 1 manager), spawned at
   ``--spawn-rate`` per second, for ``--seconds``; Locust prints its statistics;
4. ``parkgate up`` stopped; then ``python -m loadtests.bench_gates`` at
   ``--bench-gates`` gates (its own PostgreSQL and servers) for comparison;
5. one summary: validations per second and latency by Locust and by bench_gates.

docs/load.md explains why the two differ.
"""

from __future__ import annotations

import argparse
import csv
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from parkgate.server.config import load_settings
from parkgate.server.embedded import DATABASE, embedded_instance
from parkgate.server.pg import ensure_user, free_port, is_root

from .load_setup import prepare

REPO = Path(__file__).resolve().parents[1]
PASSWORD = re.compile(r"user: admin\s+password: (\S+)")


def start_up(base: Path) -> tuple[subprocess.Popen[bytes], str, str, int]:
    """``parkgate up --demo`` in ``base``; returns (process, server address, admin password, PostgreSQL port)."""
    port, pg_port = free_port(), free_port()
    log = base / "parkgate-up.log"
    env = {**os.environ, "PARKGATE_EMBEDDED__POSTGRES_PORT": str(pg_port)}
    process = subprocess.Popen(
        [sys.executable, "-m", "parkgate.common.cli", "up", "--demo", "--data-dir", str(base / "data"),
         "--listen", f"127.0.0.1:{port}"],
        stdout=log.open("wb"), stderr=subprocess.STDOUT, env=env, start_new_session=True)
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        text = log.read_text(errors="replace")
        if "press Ctrl-C to stop" in text:
            found = PASSWORD.search(text)
            if not found:
                raise SystemExit(f"parkgate up did not print the admin password:\n{text[-2000:]}")
            return process, f"127.0.0.1:{port}", found[1], pg_port
        if process.poll() is not None:
            raise SystemExit(f"parkgate up ended ({process.returncode}):\n{text[-3000:]}")
        time.sleep(0.5)
    process.terminate()
    raise SystemExit(f"parkgate up was not serving within 180 s:\n{log.read_text(errors='replace')[-3000:]}")


def stop_up(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def run_locust(address: str, state: Path, csv_prefix: Path, users: int, spawn_rate: float, seconds: int,
               extra: list[str] | None = None) -> int:
    command = [sys.executable, "-m", "locust", "-f", str(REPO / "loadtests" / "locustfile.py"), "--headless",
               "--host", address, "--users", str(users), "--spawn-rate", str(spawn_rate),
               "--run-time", f"{seconds}s", "--load-state", str(state), "--csv", str(csv_prefix),
               "--csv-full-history", "--only-summary", "--stop-timeout", "10", "--loglevel", "WARNING",
               *(extra or [])]
    print("$ " + " ".join(command[2:]), flush=True)
    return subprocess.run(command, cwd=REPO, check=False).returncode


def steady_rate(csv_prefix: Path, settle: int = 5) -> tuple[float, int]:
    """Validations per second once every gate is connected: from Locust's per-second history, the gate scans
    counted from ``settle`` seconds after the first answer to the end (the hellos, which check each gate's
    secret with argon2, are not the gates' throughput). Returns (rate, seconds measured)."""
    totals: dict[int, int] = {}
    for r in csv.DictReader(Path(f"{csv_prefix}_stats_history.csv").open()):
        if r["Type"] == "gate":
            totals[int(r["Timestamp"])] = totals.get(int(r["Timestamp"]), 0) + int(r["Total Request Count"])
    moments = sorted(t for t, n in totals.items() if n > 0)
    if len(moments) < 2:
        return 0.0, 0
    start = next((t for t in moments if t >= moments[0] + settle and t < moments[-1]), moments[0])
    return (totals[moments[-1]] - totals[start]) / max(1, moments[-1] - start), moments[-1] - start


def locust_figures(csv_prefix: Path) -> dict[str, float]:
    """Validations per second and latency over every gate scan, from Locust's own statistics files."""
    rows = list(csv.DictReader(Path(f"{csv_prefix}_stats.csv").open()))
    gates = [r for r in rows if r["Type"] == "gate" and r["Name"] != "Aggregated"]
    count = sum(int(r["Request Count"]) for r in gates)
    rate, seconds = steady_rate(csv_prefix)
    return {
        "validations": count,
        "failures": sum(int(r["Failure Count"]) for r in gates),
        "rate": rate,
        "steady_seconds": seconds,
        # Locust keeps no percentile over a subset of names: the count-weighted median and the worst p99
        "p50": sum(float(r["50%"]) * int(r["Request Count"]) for r in gates) / max(count, 1),
        "p99": max((float(r["99%"]) for r in gates), default=0.0),
        "other_failures": sum(int(r["Failure Count"]) for r in rows if r["Type"] == "grpc"
                              and r["Name"] != "Gate.Connect hello"),
        "hellos_refused": sum(int(r["Failure Count"]) for r in rows if r["Name"] == "Gate.Connect hello"),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--users", type=int, default=40)
    parser.add_argument("--spawn-rate", type=float, default=40)
    parser.add_argument("--seconds", type=int, default=60)
    parser.add_argument("--bench-gates", type=int, default=32)
    parser.add_argument("--bench-seconds", type=float, default=8)
    parser.add_argument("--no-bench", action="store_true")
    a = parser.parse_args(argv)

    base = Path(tempfile.mkdtemp(prefix="parkgate-load-"))
    if is_root():  # PostgreSQL runs as the unprivileged user: it must own its folder
        who = ensure_user()
        os.chown(base, who.uid, who.gid)
        base.chmod(0o755)
    process, address, password, pg_port = start_up(base)
    try:
        pg = embedded_instance(load_settings(None, **{"embedded.data_dir": base / "data",
                                                      "embedded.postgres_port": pg_port}))
        state = base / "load-state.json"
        print(f"parkgate up --demo serving on {address} (PostgreSQL on 127.0.0.1:{pg_port}); preparing the load "
              "state ...", flush=True)
        started = time.monotonic()
        prepare(address, password, dsn=pg.conninfo(DATABASE)).save(state)
        print(f"prepared in {time.monotonic() - started:.0f} s; peak morning: {a.users} users "
              f"(16 gates : 3 windows : 1 manager), {a.seconds} s", flush=True)
        code = run_locust(address, state, base / "locust", a.users, a.spawn_rate, a.seconds)
        figures = locust_figures(base / "locust")
    finally:
        stop_up(process)
        shutil.rmtree(base, ignore_errors=True)
    bench_rate = ""
    if not a.no_bench:
        print(f"\n$ python -m loadtests.bench_gates --gates {a.bench_gates} --seconds {a.bench_seconds:g}",
              flush=True)
        bench = subprocess.run([sys.executable, "-m", "loadtests.bench_gates", "--gates", str(a.bench_gates),
                                "--seconds", str(a.bench_seconds)], cwd=REPO, capture_output=True, text=True,
                               check=False)
        print(bench.stdout + bench.stderr[-2000:], flush=True)
        found = re.search(rf"^\s*{a.bench_gates}\s+batched\s+([\d,]+)\s+([\d.]+)\s+([\d.]+)", bench.stdout, re.M)
        if found:
            bench_rate = f"{found[1]}/s, p50 {found[2]} ms, p99 {found[3]} ms"
    print("\n=== peak morning, same run ===")
    print(f"Locust (gates on Connect streams, mixed scans, windows and reports alongside): "
          f"{figures['validations']:,.0f} validations, {figures['rate']:,.1f}/s over the last "
          f"{figures['steady_seconds']:.0f} s (all gates connected), p50 {figures['p50']:.0f} ms, "
          f"p99 (worst kind) {figures['p99']:.0f} ms, {figures['failures']:.0f} unexpected decisions, "
          f"{figures['other_failures']:.0f} failed calls, {figures['hellos_refused']:.0f} gate hellos refused and "
          "tried again")
    if bench_rate:
        print(f"bench_gates batched at {a.bench_gates} gates (asyncio load generator, valid scans only): "
              f"{bench_rate}")
    if code > 1:  # Locust itself failed (1 only says some request failed: the figures above tell which)
        return code
    # the run's verdict is correctness: a wrong decision fails `make load`; a slow or refused call is a figure
    return 1 if figures["failures"] else 0


if __name__ == "__main__":
    raise SystemExit(main())
