"""How users extend the assistant, checked by ``mypy --strict`` only (never executed).

Each of the assistant's decorators hands back the function typed as written (a job keeps its
payload signature, a schedule its result), and the options of ``worker()`` and ``scheduler()``
are checked by name and type: a misspelt option or a handler with the wrong signature fails
type-checking here, where the user wrote it, instead of when the service runs.
"""

from __future__ import annotations

from typing import assert_type

from antifragile.inbound import (
    ActionContext,
    CommerceContext,
    DeliveryMatch,
    DeliveryStatus,
    HandlerResult,
    MessageContext,
)
from antifragile.jobs import (
    Enqueued,
    Fired,
    JobContext,
    Schedule,
    Scheduler,
    SchedulerOptions,
    Worker,
    WorkerOptions,
)
from antifragile.policies import Retry
from antifragile.service import Assistant

assistant = Assistant()


@assistant.on_message("ORDER_REQUEST", min_confidence=0.7, actions=["notify_sales"])
async def order(ctx: MessageContext) -> HandlerResult:
    return HandlerResult(reply="Thanks!")


@assistant.action("create_lead", provider="hubspot", on_unknown="reconcile")
async def create_lead(ctx: ActionContext) -> dict[str, str]:
    return {"key": ctx.idempotency_key}


@assistant.on_event("orders/create")
async def on_order(ctx: CommerceContext) -> None:
    pass


@assistant.on_delivery_status
async def on_status(status: DeliveryStatus, match: DeliveryMatch) -> None:
    pass


@assistant.job(queue="email", retry=Retry(attempts=8), provider="resend")
async def send_summary(ctx: JobContext, session_id: str, *, urgent: bool = False) -> int:
    return ctx.attempt


@assistant.job
async def ping(ctx: JobContext) -> None:
    pass


@assistant.every("*/5 * * * *", name="report", catch_up="none", queue="maintenance")
async def report(ctx: JobContext) -> dict[str, int]:
    return {"sent": 1}


async def usage(message: MessageContext, action: ActionContext, job: JobContext) -> None:
    # the decorated functions are the user's own, typed as written
    assert_type(await order(message), HandlerResult)
    assert_type(await create_lead(action), dict[str, str])
    assert_type(await send_summary.run_inline("s-1"), int)
    assert_type(await send_summary.enqueue("s-1", urgent=True), Enqueued)
    assert_type(await ping.run_inline(), None)
    assert_type(report, Schedule[dict[str, int]])
    assert_type(await report(job), dict[str, int])

    worker = assistant.worker(concurrency=8, queues=["inbound", "email"], shutdown_grace=5.0)
    assert_type(worker, Worker)
    options: WorkerOptions = {"lease": 60.0, "heartbeat": 20.0}
    assert_type(assistant.worker(**options), Worker)
    assert_type(assistant.jobs.worker(batch=10, prefetch=0), Worker)

    def fired(event: Fired) -> None:
        pass

    scheduler_options: SchedulerOptions = {"tick_interval": 0.5, "on_fired": fired}
    assert_type(assistant.scheduler(**scheduler_options), Scheduler)

    # misuse, caught by the type checker
    await send_summary.enqueue(42)  # type: ignore[arg-type]
    await ping.enqueue("extra")  # type: ignore[call-arg]
    assistant.worker(concurency=8)  # type: ignore[call-arg]
    assistant.worker(concurrency="8")  # type: ignore[arg-type]
    assistant.jobs.worker(queue_concurrency={"email": "5"})  # type: ignore[dict-item]
    assistant.scheduler(tick_interval="1s")  # type: ignore[arg-type]
    assistant.every("* * * * *", catch_up="sometimes")  # type: ignore[arg-type]
    assistant.job(queue="email", retries=3)  # type: ignore[call-overload]
    assistant.action("create_lead", on_unknown="ignore")  # type: ignore[arg-type]


# a handler, an action, a topic handler or a job with the wrong signature is refused


@assistant.on_message("ORDER_REQUEST")  # type: ignore[type-var]
async def wrong_handler(ctx: ActionContext) -> None:
    pass


@assistant.action("wrong")  # type: ignore[type-var]
async def wrong_action(ctx: MessageContext, extra: int) -> None:
    pass


@assistant.on_event("orders/create")  # type: ignore[type-var]
def not_async(ctx: CommerceContext) -> None:
    pass


@assistant.on_delivery_status  # type: ignore[type-var]
async def wrong_hook(status: DeliveryStatus) -> None:
    pass


@assistant.job  # type: ignore[arg-type]
async def no_context(session_id: str) -> None:
    pass


@assistant.every("* * * * *")  # type: ignore[arg-type]
async def takes_a_payload(ctx: JobContext, session_id: str) -> None:
    pass
