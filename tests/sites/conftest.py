"""Fixtures of the site tests: one real server per module on a fixed port (see edge_rig.Cluster)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from .edge_rig import Cluster


@pytest.fixture(scope="module")
async def cluster(module_dsn: str) -> AsyncIterator[Cluster]:
    c = Cluster(module_dsn)
    await c.start()
    yield c
    await c.close()
