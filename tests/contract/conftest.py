"""The ``store`` fixture: every contract test runs once per backend.

Each backend starts empty for each test: memory is new, SQLite is a new file, PostgreSQL gets a
schema of its own, Redis a key prefix of its own; all share one FakeClock.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from antifragile import FakeClock
from antifragile.stores import Store, open_store
from tests.conftest import POSTGRES_URL, REDIS_URL, require_service

BACKENDS = ["memory", "sqlite", "postgres", "redis"]


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture(params=BACKENDS)
async def store(
    request: pytest.FixtureRequest, tmp_path: Path, clock: FakeClock
) -> AsyncIterator[Store]:
    backend: str = request.param
    isolation = f"t{uuid.uuid4().hex[:12]}"
    options: dict[str, Any]
    if backend == "memory":
        url, options = "memory://", {}
    elif backend == "sqlite":
        url, options = f"sqlite:///{tmp_path / 'state.db'}", {}
    elif backend == "postgres":
        require_service("postgres", POSTGRES_URL)
        url, options = POSTGRES_URL, {"schema": isolation, "drop_schema_on_close": True}
    else:
        require_service("redis", REDIS_URL)
        url, options = REDIS_URL, {"prefix": f"{isolation}:", "flush_prefix_on_close": True}
    opened = await open_store(url, clock=clock, **options)
    try:
        yield opened
    finally:
        await opened.close()
