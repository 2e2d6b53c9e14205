"""Log-in throttling per source address, on top of the per-account lock-out.

The account lock-out stops guessing one user's password; it does nothing
against one address trying one password on many accounts (password spraying)
or probing which user names exist. After ``limit`` failed log-ins from one
address within ``window`` seconds, that address is refused LOGIN_THROTTLED
until its oldest failure ages out, before any password is checked. Each
server counts on its own (in memory): a cluster of N servers lets an address
try at most N x limit in a window.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable


def source_address(peer: str) -> str:
    """``ipv4:10.0.0.7:51234`` -> ``10.0.0.7``; ``ipv6:[::1]:5000`` -> ``::1`` (the port changes per connection)."""
    _, _, rest = peer.partition(":")
    host, sep, _port = (rest or peer).rpartition(":")
    return (host if sep else rest or peer).strip("[]")


class AddressThrottle:
    def __init__(self, limit: int, window: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.limit = limit
        self.window = window
        self.clock = clock
        self._failures: dict[str, deque[float]] = {}

    def _recent(self, address: str) -> deque[float]:
        failures = self._failures.get(address)
        if failures is None:
            return deque()
        cutoff = self.clock() - self.window
        while failures and failures[0] <= cutoff:
            failures.popleft()
        if not failures:
            del self._failures[address]
        return failures

    def blocked_for(self, address: str) -> float:
        """Seconds until ``address`` may try again; 0 when it may now."""
        failures = self._recent(address)
        if len(failures) < self.limit:
            return 0.0
        return max(0.0, failures[0] + self.window - self.clock())

    def failed(self, address: str) -> None:
        self._failures.setdefault(address, deque()).append(self.clock())
        if len(self._failures) > 100_000:  # a flood of distinct addresses must not grow memory without end
            for stale in list(self._failures)[:50_000]:
                del self._failures[stale]
