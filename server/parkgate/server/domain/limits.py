"""One device's share of a server: how many validations in flight, how many messages a second.

A gate stream may send its next validation before the last was answered, and
all gates of a server feed one pipeline: without a limit, one broken or
hostile device that pushes without waiting is served at the server's full
rate while every other gate queues behind it. The limits here are checked
when a message arrives; what exceeds them is answered at once with
DEVICE_FLOODING (or SERVER_OVERLOADED when the whole server is saturated),
which costs the server nothing and lets the gate fall back to its offline rules.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class DeviceLimits:
    max_in_flight: int = 64
    messages_per_second: float = 50.0
    burst: int = 200
    max_message_bytes: int = 16384
    max_pending: int = 20000


@dataclass(slots=True)
class TokenBucket:
    """``rate`` tokens a second, at most ``burst`` saved up; each message takes one."""

    rate: float
    burst: float
    clock: Callable[[], float] = time.monotonic
    tokens: float = field(default=-1.0)
    updated: float = 0.0

    def take(self) -> bool:
        now = self.clock()
        if self.tokens < 0:  # a new bucket starts full
            self.tokens, self.updated = self.burst, now
        self.tokens = min(self.burst, self.tokens + (now - self.updated) * self.rate)
        self.updated = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False
