"""``parkgate monitor --listen HOST:PORT --server HOST:PORT --park PARK``: serve the wall screen.

The monitor logs in as an operator whose role grants ``reports.live`` (the
built-in ``manager`` role does). The user name comes from ``--user`` or
``PARKGATE_MONITOR_USER``; the password from ``--password-file`` or
``PARKGATE_MONITOR_PASSWORD`` (never from the command line, where ``ps``
would show it).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import sys
from pathlib import Path
from typing import Any


def add_parser(sub: Any) -> None:
    p = sub.add_parser("monitor", help="the control room's live flow wall screen (a web page)")
    p.add_argument("--listen", default="127.0.0.1:8470", help="HOST:PORT the web page is served on")
    p.add_argument("--server", help="parkgate server HOST:PORT, or several separated by commas "
                                    "(default $PARKGATE_SERVER or 127.0.0.1:50051)")
    p.add_argument("--park", action="append", required=True, help="a park to show (repeat for several)")
    p.add_argument("--user", help="operator with reports.live (default $PARKGATE_MONITOR_USER)")
    p.add_argument("--password-file", type=Path, help="file holding the password (default $PARKGATE_MONITOR_PASSWORD)")
    p.add_argument("--interval", type=int, default=0, help="seconds between snapshots at the latest "
                                                           "(0: the server's parameter reports.live_interval_seconds)")
    p.add_argument("--minutes", type=int, default=30, help="minutes the charts cover (at most 240)")
    p.add_argument("--tui", action="store_true", help="show the (first) park in this terminal instead of serving a page")
    p.set_defaults(func=cmd_monitor)


def _credentials(args: argparse.Namespace):  # type: ignore[no-untyped-def]
    from .feed import Credentials

    user = args.user or os.environ.get("PARKGATE_MONITOR_USER", "")
    if args.password_file is not None:
        try:
            password = args.password_file.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise SystemExit(f"parkgate monitor: --password-file: {exc}") from None
    else:
        password = os.environ.get("PARKGATE_MONITOR_PASSWORD", "")
    if not user or not password:
        raise SystemExit("parkgate monitor: give an operator with reports.live: --user (or PARKGATE_MONITOR_USER) "
                         "and --password-file (or PARKGATE_MONITOR_PASSWORD)")
    return Credentials(user, password)


def cmd_monitor(args: argparse.Namespace) -> int:
    from parkgate.common import logs

    from ..connection import server_address

    host, sep, port = args.listen.rpartition(":")
    if not sep or not port.isdigit():
        raise SystemExit(f"parkgate monitor: --listen: expected HOST:PORT, got {args.listen!r}")
    if args.interval < 0 or not 0 < args.minutes <= 240:
        raise SystemExit("parkgate monitor: --interval must be >= 0 and --minutes between 1 and 240")
    if args.tui:
        from .tui import FlowApp

        FlowApp(server_address(args.server), _credentials(args), args.park[0], interval=args.interval,
                minutes=args.minutes).run()
        return 0
    logs.configure("info")
    asyncio.run(serve(server_address(args.server), _credentials(args), args.park, host.strip("[]"), int(port),
                      interval=args.interval, minutes=args.minutes))
    return 0


async def serve(server: str, credentials: Any, parks: list[str], host: str, port: int, *, interval: int = 0,
                minutes: int = 30, started: asyncio.Event | None = None) -> None:
    """Follow ``parks`` on ``server`` and serve the page on ``host:port`` until cancelled or signalled."""
    import uvicorn

    from .feed import MonitorFeed
    from .web import create_app

    _Server = _server_class()

    feed = MonitorFeed(server, credentials, parks, interval_seconds=interval, minutes=minutes)
    await feed.start()
    config = uvicorn.Config(create_app(feed), host=host, port=port, log_level="warning", lifespan="off",
                            timeout_graceful_shutdown=2)
    listening = asyncio.Event()
    web = _Server(config, listening)
    task = asyncio.create_task(web.serve())
    try:
        waiter = asyncio.create_task(listening.wait())
        await asyncio.wait({task, waiter}, return_when=asyncio.FIRST_COMPLETED)
        waiter.cancel()
        if not listening.is_set():  # uvicorn gave up (a taken port) and said why in its log
            raise SystemExit(f"parkgate monitor: cannot serve on {host}:{port}")
        print(f"parkgate monitor: http://{host}:{port}/ (parks {', '.join(parks)}, server {server})",
              file=sys.stderr)
        if started is not None:
            started.set()
        await task
    finally:
        web.should_exit = True
        with contextlib.suppress(BaseException):
            await asyncio.wait_for(asyncio.shield(task), 5)
        await feed.stop()


def _server_class():  # type: ignore[no-untyped-def]
    import uvicorn

    class Server(uvicorn.Server):
        """uvicorn's server, saying when it listens (no polling of ``started``)."""

        def __init__(self, config: uvicorn.Config, listening: asyncio.Event) -> None:
            super().__init__(config)
            self.listening = listening

        async def startup(self, sockets: list | None = None) -> None:  # type: ignore[type-arg]
            await super().startup(sockets)
            if not self.should_exit:
                self.listening.set()

    return Server
