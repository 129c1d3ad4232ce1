"""The ``store`` fixture: every contract test runs once per backend; ``job_queue``: every job
queue contract test runs once per job-queue backend (memory, SQLite and PostgreSQL) -- except
a test that asks for ``job_backend`` or ``caller`` itself: it reaches the database another way
(its URL, another connection or process, the caller's transaction) and runs on SQLite and
PostgreSQL only.

Each backend starts empty for each test: memory is new, SQLite is a new file, PostgreSQL gets a
schema of its own, Redis a key prefix of its own; all share one FakeClock.
"""

from __future__ import annotations

import importlib.util
import inspect
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from antifragile import FakeClock
from antifragile.jobs import JobQueue
from antifragile.jobs._open import open_job_queue
from antifragile.stores import Store, open_store
from tests.conftest import IN_CI, POSTGRES_URL, REDIS_URL, require_service

BACKENDS = ["memory", "sqlite", "postgres", "redis"]
JOB_BACKENDS = ["memory", "sqlite", "postgres"]
SQL_JOB_BACKENDS = ["sqlite", "postgres"]
#: fixtures that reach a job queue's database itself: tests asking for them need SQL backends
_NEEDS_DATABASE = frozenset({"job_backend", "caller"})


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "job_backend" not in metafunc.fixturenames:
        return
    asked = set(inspect.signature(metafunc.function).parameters)
    names = SQL_JOB_BACKENDS if asked & _NEEDS_DATABASE else JOB_BACKENDS
    metafunc.parametrize("job_backend", names, indirect=True)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@dataclass(frozen=True)
class StoreTarget:
    """Where a contract test's backend is: enough to open more stores on it (other
    connections, standing for other processes) besides the fixture's own."""

    name: str
    url: str
    options: dict[str, Any] = field(default_factory=dict)
    cleanup: dict[str, Any] = field(default_factory=dict)


@pytest.fixture(params=BACKENDS)
def store_target(request: pytest.FixtureRequest, tmp_path: Path) -> StoreTarget:
    backend: str = request.param
    isolation = f"t{uuid.uuid4().hex[:12]}"
    if backend == "memory":
        return StoreTarget(backend, "memory://")
    if backend == "sqlite":
        return StoreTarget(backend, f"sqlite:///{tmp_path / 'state.db'}")
    if backend == "postgres":
        require_service("postgres", POSTGRES_URL)
        return StoreTarget(
            backend, POSTGRES_URL, {"schema": isolation}, {"drop_schema_on_close": True}
        )
    require_service("redis", REDIS_URL)
    return StoreTarget(
        backend, REDIS_URL, {"prefix": f"{isolation}:"}, {"flush_prefix_on_close": True}
    )


@pytest.fixture
async def store(store_target: StoreTarget, clock: FakeClock) -> AsyncIterator[Store]:
    opened = await open_store(
        store_target.url, clock=clock, **store_target.options, **store_target.cleanup
    )
    try:
        yield opened
    finally:
        await opened.close()


@pytest.fixture
async def peer_store(
    store: Store, store_target: StoreTarget, clock: FakeClock
) -> AsyncIterator[Store]:
    """A second store on the same data, as another process opens it: its own connections
    (the same object for memory://, which lives in one process only)."""
    if store_target.name == "memory":
        yield store
        return
    opened = await open_store(store_target.url, clock=clock, **store_target.options)
    try:
        yield opened
    finally:
        await opened.close()


# -- job queues --------------------------------------------------------------------------------


@dataclass(frozen=True)
class JobBackend:
    """Where a job-queue test's database is: enough to open more stores on it (other
    connections, other processes) besides the fixture's own."""

    name: str
    url: str
    options: dict[str, Any] = field(default_factory=dict)


def _require_module(module: str, what: str) -> None:
    """Skip (or, in CI, fail) when *module* is not there yet."""
    if importlib.util.find_spec(module) is not None:
        return
    message = f"{what} ({module}) is not available"
    if IN_CI:
        pytest.fail(f"{message}; CI requires it", pytrace=False)
    pytest.skip(message)


@pytest.fixture
def job_backend(request: pytest.FixtureRequest, tmp_path: Path) -> JobBackend:
    backend: str = request.param
    if backend == "memory":
        return JobBackend("memory", "memory://")
    if backend == "sqlite":
        return JobBackend("sqlite", f"sqlite:///{tmp_path / 'jobs.db'}")
    require_service("postgres", POSTGRES_URL)
    _require_module("antifragile.jobs._postgres", "the PostgreSQL job queue")
    return JobBackend("postgres", POSTGRES_URL, {"schema": f"t{uuid.uuid4().hex[:12]}"})


@pytest.fixture
async def job_store(job_backend: JobBackend, clock: FakeClock) -> AsyncIterator[Store]:
    """The store the job queue lives in; a PostgreSQL schema is dropped afterwards."""
    options = dict(job_backend.options)
    if job_backend.name == "postgres":
        options["drop_schema_on_close"] = True
    opened = await open_store(job_backend.url, clock=clock, **options)
    try:
        yield opened
    finally:
        await opened.close()


@pytest.fixture
async def job_queue(job_store: Store) -> JobQueue:
    return await open_job_queue(job_store)
