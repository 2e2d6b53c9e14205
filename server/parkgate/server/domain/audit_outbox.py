"""The operation-log record of the mutating call in progress, for the store to stage in the call's own transaction.

The audit interceptor writes the chained record after the call, in a
transaction of its own: a change could commit and its record still be lost
(the chain write fails, the server dies in between). So while a mutating call
runs, :data:`current_call_record` names it; every transaction the call opens
stages an outbox row in the same transaction (``store/database.py``), the
interceptor's write removes that row together with writing the chained record,
and what is left behind is moved into the chains by the server's drainer.
"""

from __future__ import annotations

from collections.abc import Callable
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any


@dataclass
class CallRecord:
    """One mutating call: its id, and who/what it is (read when a transaction stages it, after authentication)."""

    call_id: str
    describe: Callable[[], dict[str, Any]]
    # Set once a transaction of the call staged the outbox row: the row may then
    # be moved by the drainer, and the call must not write the record twice.
    staged: bool = field(default=False)


current_call_record: ContextVar[CallRecord | None] = ContextVar("current_call_record", default=None)

#: The outcome written by the drainer: the call's change committed, its final outcome is unknown.
COMMITTED = "COMMITTED"
