"""Ops service: what this server sees of itself, the database and the power."""

from __future__ import annotations

from datetime import datetime

import grpc

from parkgate.common import __version__
from parkgate.server.store import Database
from parkgate.server.store.migrations import schema_version
from parkgate.v1 import ops_pb2, ops_pb2_grpc

from ..convert import ts

Ctx = grpc.aio.ServicerContext


class OpsServicer(ops_pb2_grpc.OpsServicer):
    def __init__(self, db: Database, server_id: str, started_at: datetime, native_impl: str) -> None:
        self.db = db
        self.server_id = server_id
        self.started_at = started_at
        self.native_impl = native_impl

    async def ServerStatus(self, request: ops_pb2.ServerStatusRequest, context: Ctx) -> ops_pb2.ServerStatusResponse:
        reachable = await self.db.probe()
        version = 0
        host = ""
        if reachable:
            async with self.db.connection() as conn:
                version = await schema_version(conn)
                host = conn.info.host
        return ops_pb2.ServerStatusResponse(
            server_id=self.server_id, version=__version__, database_reachable=reachable, database_host=host,
            schema_version=version, started_at=ts(self.started_at), native_impl=self.native_impl,
        )
