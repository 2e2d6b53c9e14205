"""Run `parkgate server` (same command line, same environment settings) with cProfile switched by signals.

    LOADTEST_PROFILE_OUT=/tmp/x.prof python -m loadtests.profiled_server

SIGUSR1 starts profiling the main thread (the asyncio loop, where all the
Python work of the server happens); SIGUSR2 stops it and writes the stats to
``$LOADTEST_PROFILE_OUT``. So only the measured window of a benchmark phase is
profiled, not start-up or migrations. (Not a ``PARKGATE_`` variable: the server
rejects environment variables with its prefix that name no setting.) Used by ``loadtests.bench_gates --profile``.
"""

from __future__ import annotations

import cProfile
import os
import runpy
import signal
import sys


def main() -> None:
    out = os.environ["LOADTEST_PROFILE_OUT"]
    profiler = cProfile.Profile()

    def start(signum: int, frame: object) -> None:
        profiler.enable()

    def stop(signum: int, frame: object) -> None:
        profiler.disable()
        profiler.dump_stats(out + ".part")
        os.replace(out + ".part", out)  # appears complete or not at all

    signal.signal(signal.SIGUSR1, start)
    signal.signal(signal.SIGUSR2, stop)
    sys.argv = ["parkgate", "server"]
    runpy.run_module("parkgate.common.cli", run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
