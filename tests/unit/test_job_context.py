"""A job carries the context of the request that caused it: captured when it is prepared (the
current request id, plus what registered injectors add), stored with the job, and activated
around its run (the request id current again, registered activators entered).

Jobs are enqueued into a real SQLite file; time is a FakeClock.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Iterator, Mapping
from contextlib import contextmanager

import pytest

from antifragile import ConfigurationError, FakeClock
from antifragile.jobs import JobContext, JobFilter, Jobs, Scheduler, Step, StepContext
from antifragile.observability import (
    activate,
    capture_context,
    current_request_id,
    register_activator,
    register_injector,
    request_context,
)

TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


@pytest.fixture
async def jobs() -> AsyncIterator[Jobs]:
    """Jobs on the in-memory queue (the same contract as the database queues)."""
    app = Jobs(database_url="memory://", clock=FakeClock())
    async with app:
        yield app


# -- capturing --------------------------------------------------------------------------------


async def test_enqueue_inside_a_request_context_stores_its_request_id(jobs: Jobs) -> None:
    """A job enqueued while request "abc" is current is stored with context
    ``{"request_id": "abc"}``; one enqueued outside any request has an empty context."""

    @jobs.job(name="notify")
    async def notify(ctx: JobContext, who: str) -> str:
        return who

    with request_context("abc"):
        inside = await notify.enqueue("owner")
    outside = await notify.enqueue("owner")
    stored = await jobs.get(inside.id)
    assert stored is not None
    assert stored.context == {"request_id": "abc"}
    other = await jobs.get(outside.id)
    assert other is not None
    assert other.context == {}


async def test_prepare_captures_the_context_and_an_explicit_one_wins(jobs: Jobs) -> None:
    """``prepare`` captures the current request id; ``configure(context=...)`` replaces the
    captured context with the caller's, as given."""

    @jobs.job(name="notify")
    async def notify(ctx: JobContext, who: str) -> str:
        return who

    with request_context("abc"):
        captured = notify.prepare("owner")
        given = notify.configure(context={"request_id": "mine", "tenant": "acme"}).prepare("x")
    assert captured.context == {"request_id": "abc"}
    assert given.context == {"request_id": "mine", "tenant": "acme"}
    assert notify.prepare("owner").context is None  # nothing to carry
    await jobs.enqueue_many([given])
    stored = await jobs.get(given.id)
    assert stored is not None
    assert stored.context == {"request_id": "mine", "tenant": "acme"}


@pytest.mark.parametrize("bad", [{"request_id": 1}, {"": "x"}, {1: "x"}])
def test_a_context_that_is_not_a_map_of_strings_is_refused(bad: Mapping[object, object]) -> None:
    """configure(context=...) refuses keys or values that are not strings (and empty keys)."""
    jobs = Jobs(database_url="sqlite:///unused.db")

    @jobs.job(name="notify")
    async def notify(ctx: JobContext) -> None:
        return None

    with pytest.raises(ConfigurationError, match="context"):
        notify.configure(context=bad)  # type: ignore[arg-type]


async def test_a_saga_start_and_a_scheduler_pass_capture_the_request_id(jobs: Jobs) -> None:
    """``Saga.start`` inside a request carries its id; a scheduler pass enqueues its ticks
    with the current request id (or one of its own when none is current)."""

    async def reserve(ctx: StepContext, data: object) -> None:
        return None

    saga = jobs.saga("order", [Step(reserve)])
    with request_context("rid-saga"):
        started = await saga.start({"n": 1})
    run = await jobs.get(started.id)
    assert run is not None
    assert run.context == {"request_id": "rid-saga"}

    @jobs.every("* * * * *", name="report")
    async def report(ctx: JobContext) -> None:
        return None

    scheduler = Scheduler(jobs)
    now = jobs.clock.time()
    with request_context("rid-tick"):
        await scheduler.run_once(now)
    await scheduler.run_once(now + 60)
    ticks = await jobs.find(JobFilter(name="report"))
    ids = sorted(job.context["request_id"] for job in ticks)
    assert len(ids) == 2
    assert "rid-tick" in ids
    assert all(ids)  # the pass outside any request drew one of its own


async def test_injectors_add_keys_and_a_failing_one_never_stops_an_enqueue(
    jobs: Jobs, caplog: pytest.LogCaptureFixture
) -> None:
    """A registered injector adds its keys to every job prepared while it is registered; one
    that raises is logged and skipped; unregistered, it adds nothing."""

    @jobs.job(name="notify")
    async def notify(ctx: JobContext, who: str) -> str:
        return who

    def traceparent(context: dict[str, str]) -> None:
        context["traceparent"] = TRACEPARENT

    def broken(context: dict[str, str]) -> None:
        raise RuntimeError("no tracer")

    remove = register_injector(traceparent)
    remove_broken = register_injector(broken)
    try:
        with request_context("abc"), caplog.at_level(logging.ERROR):
            enqueued = await notify.enqueue("owner")
    finally:
        remove()
        remove_broken()
    stored = await jobs.get(enqueued.id)
    assert stored is not None
    assert stored.context == {"request_id": "abc", "traceparent": TRACEPARENT}
    assert "context injector" in caplog.text
    assert capture_context() == {}


# -- activating -------------------------------------------------------------------------------


def test_activate_makes_the_request_id_current_and_restores_the_previous_one() -> None:
    """Inside ``activate(context)`` the context's request id is current (a new one when it has
    none); afterwards the previous one is back."""
    with request_context("outer"):
        with activate({"request_id": "job-rid"}) as rid:
            assert rid == "job-rid"
            assert current_request_id() == "job-rid"
        assert current_request_id() == "outer"
        with activate({}) as fresh:
            assert fresh not in ("outer", "")
            assert current_request_id() == fresh
        assert current_request_id() == "outer"


def test_activators_wrap_the_block_in_order_and_a_failing_one_is_skipped(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Registered activators are entered (in order, after the request id is current) with the
    job's context and left afterwards; one that fails to enter is logged and skipped."""
    calls: list[str] = []

    @contextmanager
    def tracer(context: Mapping[str, str]) -> Iterator[None]:
        calls.append(f"enter {context.get('traceparent')} {current_request_id()}")
        yield
        calls.append("exit")

    def broken(context: Mapping[str, str]) -> Iterator[None]:
        raise RuntimeError("no tracer")

    remove = register_activator(tracer)
    remove_broken = register_activator(broken)  # type: ignore[arg-type]
    try:
        with caplog.at_level(logging.ERROR), activate({"request_id": "r", "traceparent": "t"}):
            calls.append("body")
    finally:
        remove()
        remove_broken()
    assert calls == ["enter t r", "body", "exit"]
    assert "context activator" in caplog.text
    with activate({"request_id": "r"}):
        pass
    assert calls == ["enter t r", "body", "exit"]  # unregistered


async def test_run_inline_runs_in_the_captured_context(jobs: Jobs) -> None:
    """``run_inline`` inside a request runs the job with that request id current, and
    ``JobContext.request_id`` names it."""
    seen: list[tuple[str | None, str | None]] = []

    @jobs.job(name="probe")
    async def probe(ctx: JobContext) -> None:
        seen.append((ctx.request_id, current_request_id()))

    with request_context("abc"):
        await probe.run_inline()
    assert seen == [("abc", "abc")]
