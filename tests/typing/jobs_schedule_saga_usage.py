"""How users declare periodic jobs and sagas, checked by ``mypy --strict`` only (never run).

When a signature of ``Jobs.every``, ``Jobs.worker``, ``Scheduler``, ``Jobs.saga`` or
``Saga.start`` regresses, type-checking this file fails.
"""

from __future__ import annotations

from typing import Any, assert_type, cast

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
    Worker,
)


async def usage() -> None:
    jobs = Jobs(database_url="sqlite:///antifragile.db", clock=FakeClock())

    @jobs.every("*/5 * * * *", catch_up="all", timezone="Europe/Paris", max_catch_up=10)
    async def nudge_inactive(ctx: JobContext) -> None: ...

    assert_type(nudge_inactive, Schedule[None])
    assert_type(nudge_inactive.next_tick(0.0), int)

    @jobs.every("0 3 * * *", name="nightly.purge", queue="maintenance")
    async def purge(ctx: JobContext) -> dict[str, int]:
        return {"purged": 0}

    assert_type(purge, Schedule[dict[str, int]])  # calling it runs the function, typed
    assert_type(await purge(cast(JobContext, None)), dict[str, int])
    every_schedule: list[Schedule] = [nudge_inactive, purge]  # bare: any result
    assert_type(every_schedule[0], Schedule[Any])

    @jobs.every("* * * * *")  # type: ignore[arg-type]
    async def with_a_payload(ctx: JobContext, customer: str) -> None: ...

    jobs.every("* * * * *", catch_up="sometimes")  # type: ignore[arg-type]

    scheduler = Scheduler(jobs, tick_interval=1.0, grace=30.0)
    assert_type(await scheduler.run_once(), list[Fired])
    assert_type(await scheduler.run_once(1_700_000_000.0), list[Fired])
    scheduler.stop()
    Scheduler(jobs, tick_interval="1s")  # type: ignore[arg-type]

    assert_type(jobs.worker(concurrency=4, queues=["email"], max_lost_leases=3), Worker)
    jobs.worker(concurency=4)  # type: ignore[call-arg]
    jobs.worker(lease="30s")  # type: ignore[arg-type]

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
