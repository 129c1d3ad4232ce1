"""How users declare periodic jobs and sagas, checked by ``mypy --strict`` only (never run).

When a signature of ``Jobs.every``, ``Scheduler``, ``Jobs.saga`` or ``Saga.start`` regresses,
type-checking this file fails.
"""

from __future__ import annotations

from typing import Any, assert_type

from antifragile import FakeClock, Retry
from antifragile.jobs import (
    Enqueued,
    Fired,
    JobContext,
    Jobs,
    Saga,
    SagaResult,
    Schedule,
    Scheduler,
    Step,
    StepContext,
)


async def usage() -> None:
    jobs = Jobs(database_url="sqlite:///antifragile.db", clock=FakeClock())

    @jobs.every("*/5 * * * *", catch_up="all", timezone="Europe/Paris", max_catch_up=10)
    async def nudge_inactive(ctx: JobContext) -> None: ...

    assert_type(nudge_inactive, Schedule)
    assert_type(nudge_inactive.next_tick(0.0), int)

    scheduler = Scheduler(jobs, tick_interval=1.0, grace=30.0)
    assert_type(await scheduler.run_once(), list[Fired])
    assert_type(await scheduler.run_once(1_700_000_000.0), list[Fired])
    scheduler.stop()

    @jobs.job(retry=Retry(attempts=4))
    async def charge(ctx: JobContext, amount: int) -> str:
        return ctx.idempotency_key

    async def refund(ctx: StepContext, data: Any) -> None:
        assert_type(ctx.results, dict[str, Any])

    async def email(ctx: StepContext, data: Any) -> str:
        return ctx.idempotency_key

    checkout = jobs.saga("checkout", steps=[Step(charge, compensate=refund), Step(email)])
    assert_type(checkout, Saga)
    started = await checkout.start({"amount": 3}, idempotency_key="order:1", delay=5)
    assert_type(started, Enqueued)
    job = await jobs.get(started.id)
    if job is not None:
        assert_type(SagaResult.from_job(job), SagaResult | None)
