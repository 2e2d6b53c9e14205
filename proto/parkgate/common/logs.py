"""Logging as JSON lines (orjson): one object per line, easy to ship and to grep."""

from __future__ import annotations

import logging
import sys
import time

import orjson


class JsonLines(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        if record.name == "parkgate.requests":
            return message  # already a JSON object (see rpc.interceptors.RequestLog)
        line = {"ts": round(time.time(), 3), "level": record.levelname.lower(), "logger": record.name, "msg": message}
        if record.exc_info:
            line["exc"] = self.formatException(record.exc_info)
        return orjson.dumps(line).decode()


def configure(level: str = "info") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonLines())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # psycopg_pool logs every failed reconnect attempt at WARNING while the
    # database is down; our health loop already says so once per transition.
    logging.getLogger("psycopg.pool").setLevel(logging.ERROR)
