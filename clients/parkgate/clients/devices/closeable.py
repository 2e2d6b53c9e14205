"""The one context-manager base of every device object: ``with Device(...) as d:`` closes it."""

from __future__ import annotations

from abc import ABC, abstractmethod
from types import TracebackType
from typing import Self


class Closeable(ABC):
    @abstractmethod
    def close(self) -> None:
        """Release the device; idempotent; safe to call from another thread."""

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
