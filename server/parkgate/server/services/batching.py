"""Calls that arrive while a batch is being processed wait for the next batch, processed as one.

Used where many calls at the same moment each need one small database round
trip of the same kind: a reconnect storm's device lookups and connection
records (hundreds of gates within a second after a server restart). A call
on a quiet server is processed alone at once; under a storm, the calls
queued behind one round trip share the next. Each caller gets its own
result, or the exception the batch raised. A batch serves several calls, so
it runs outside all of them: its database waits take the default budgets
(``database.acquire_timeout_seconds``), not one call's deadline.
"""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")


def _retrieved(future: asyncio.Future[object]) -> None:
    if not future.cancelled():
        future.exception()  # a caller that gave up leaves no "exception never retrieved" behind


class Batched(Generic[T, R]):
    def __init__(self, process: Callable[[list[T]], Awaitable[list[R]]], name: str) -> None:
        """``process`` gets the items of one batch in the order they came and returns one result per item."""
        self._process = process
        self._name = name
        self._waiting: list[tuple[T, asyncio.Future[R]]] = []
        self._task: asyncio.Task[None] | None = None

    async def __call__(self, item: T) -> R:
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        future.add_done_callback(_retrieved)
        self._waiting.append((item, future))
        if self._task is None or self._task.done():
            # a context of its own: the batch serves many calls and belongs to none of them (it must not, for
            # instance, stage one call's operation-log record, domain/audit_outbox.py, in its transactions)
            self._task = asyncio.create_task(self._drain(), name=self._name, context=contextvars.Context())
        # shielded: a caller that gives up (its stream cancelled) does not cancel the batch of the others
        return await asyncio.shield(future)

    async def _drain(self) -> None:
        while self._waiting:
            batch, self._waiting = self._waiting, []
            try:
                results = await self._process([item for item, _ in batch])
            except Exception as exc:
                for _, future in batch:
                    if not future.done():
                        future.set_exception(exc)
                continue
            for (_, future), result in zip(batch, results, strict=True):
                if not future.done():
                    future.set_result(result)
