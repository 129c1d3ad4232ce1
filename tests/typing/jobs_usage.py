"""How users declare and enqueue jobs, checked by ``mypy --strict`` only (never executed).

The decorator keeps the job function's payload signature: enqueueing with a wrong argument, or
reading the result of ``run_inline`` as the wrong type, fails type-checking.
"""

from __future__ import annotations

from typing import assert_type

import antifragile as af
from antifragile.jobs import DEFAULT_JOB_RETRY, DeadLetterFilter, Enqueued, NewJob, StatusFlag

jobs = af.Jobs(database_url="sqlite:///antifragile.db")


@jobs.job(queue="email", retry=af.Retry(attempts=8), provider="resend")
async def send_summary(ctx: af.JobContext, session_id: str, *, urgent: bool = False) -> int:
    ctx.logger.info("sending %s", ctx.idempotency_key)
    await ctx.save_progress({"step": 1})
    return ctx.attempt


@jobs.job
async def ping(ctx: af.JobContext) -> None:
    pass


async def usage() -> None:
    assert_type(await send_summary.enqueue("s-1"), Enqueued)
    assert_type(await send_summary.enqueue("s-1", urgent=True), Enqueued)
    configured = send_summary.configure(idempotency_key="summary:s-1", delay=60)
    assert_type(await configured.enqueue("s-1"), Enqueued)
    assert_type(send_summary.prepare("s-1"), NewJob)
    assert_type(await send_summary.run_inline("s-1"), int)
    assert_type(await ping.run_inline(), None)
    await jobs.enqueue_many([send_summary.prepare("a"), ping.prepare()])

    await send_summary.enqueue(42)  # type: ignore[arg-type]
    await send_summary.enqueue("s-1", missing=True)  # type: ignore[call-arg]
    await ping.enqueue("extra")  # type: ignore[call-arg]

    worker = af.Worker(jobs, queues=["email"], concurrency=20, queue_concurrency={"email": 5})
    assert_type(await worker.run_until_idle(), int)
    worker.stop()

    dead = await jobs.dlq.list(DeadLetterFilter(provider="resend", older_than=3600))
    await jobs.dlq.retry([job.id for job in dead])
    await jobs.dlq.resolve(DeadLetterFilter(queue="email"), reason="sent by hand")
    await jobs.dlq.purge(7 * 86400)
    flag = StatusFlag("session:s-1", "summary_email")
    await send_summary.configure(status=flag).enqueue("s-1")
    assert_type(DEFAULT_JOB_RETRY, af.Retry)
