"""Sagas on a real SQLite queue, with a FakeClock: completion, compensation in reverse order,
durable resumption after a worker dies, and a dead saga when a compensation fails for good.

Each step records its calls (name and idempotency key) in a shared list, so a test sees which
actions and compensations ran, in which order, and with which keys.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from antifragile import (
    ConfigurationError,
    Constant,
    FakeClock,
    InvalidRequestError,
    Retry,
    UpstreamUnavailableError,
)
from antifragile.jobs import (
    FINAL,
    Job,
    JobContext,
    Jobs,
    JobState,
    Saga,
    SagaResult,
    Step,
    StepContext,
    Worker,
)

FAST_RETRY = Retry(attempts=3, backoff=Constant(2.0))

Behaviour = Callable[[int], Awaitable[Any]]  # called with the call's number (from 1)


@pytest.fixture
def db(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'sagas.db'}"


@pytest.fixture
async def jobs(db: str, clock: FakeClock) -> AsyncIterator[Jobs]:
    async with Jobs(database_url=db, clock=clock) as opened:
        yield opened


class Recorder:
    """Step functions that log their calls and behave as each test scripts them."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []
        self.behaviours: dict[str, Behaviour] = {}
        self.seen: dict[str, StepContext] = {}

    def names(self) -> list[str]:
        return [name for name, _ in self.calls]

    def count(self, name: str) -> int:
        return self.names().count(name)

    def step(self, name: str) -> Callable[[StepContext, Any], Awaitable[Any]]:
        async def run(ctx: StepContext, data: Any) -> Any:
            self.calls.append((name, ctx.idempotency_key))
            self.seen[name] = ctx
            behaviour = self.behaviours.get(name)
            if behaviour is not None:
                return await behaviour(self.count(name))
            return f"{name}-done"

        run.__name__ = name
        return run


def checkout(jobs: Jobs, rec: Recorder) -> Saga:
    """A three-step saga; the second step is a declared job function taking ``amount``."""

    @jobs.job(name="charge")
    async def charge(ctx: JobContext, amount: int) -> dict[str, Any]:
        assert isinstance(ctx, StepContext)
        rec.calls.append(("charge", ctx.idempotency_key))
        behaviour = rec.behaviours.get("charge")
        if behaviour is not None:
            await behaviour(rec.count("charge"))
        return {"charge_id": f"ch_{amount}"}

    return jobs.saga(
        "checkout",
        steps=[
            Step(rec.step("customer"), compensate=rec.step("undo_customer")),
            Step(charge, compensate=rec.step("refund"), retry=FAST_RETRY),
            Step(rec.step("email"), compensate=rec.step("unsend")),
        ],
        step_retry=FAST_RETRY,
    )


async def settle(jobs: Jobs, worker: Worker, clock: FakeClock, job_id: str) -> Job:
    """Run the job (and its rescheduled runs) until it reaches a final state."""
    for _ in range(20):
        await worker.run_until_idle()
        job = await jobs.get(job_id)
        assert job is not None
        if job.state in FINAL:
            return job
        clock.advance(60)
    raise AssertionError(f"the saga never finished: {job}")


def fails(error: Exception, times: int | None = None) -> Behaviour:
    """Raise *error* on the first *times* calls (every call when None)."""

    async def behaviour(n: int) -> None:
        if times is None or n <= times:
            raise error

    return behaviour


async def test_a_saga_whose_steps_all_succeed_completes(jobs: Jobs, clock: FakeClock) -> None:
    """Every action runs once, in order, each with its own idempotency key
    ``saga:<job id>:<step>``; a job-function step gets the saga data's fields it declares; no
    compensation runs; the job's result is a completed SagaResult with each step's result."""
    rec = Recorder()
    saga = checkout(jobs, rec)
    started = await saga.start({"amount": 42, "customer_id": "c-7"})
    job = await settle(jobs, Worker(jobs), clock, started.id)

    assert job.state is JobState.SUCCEEDED
    assert rec.calls == [
        ("customer", f"saga:{job.id}:1"),
        ("charge", f"saga:{job.id}:2"),
        ("email", f"saga:{job.id}:3"),
    ]
    result = SagaResult.from_job(job)
    assert result is not None
    assert result.status == "completed"
    assert result.executed == ("customer", "charge", "email")
    assert result.failed is None
    assert result.compensated == ()
    assert result.results["charge"] == {"charge_id": "ch_42"}
    assert rec.seen["email"].results == {
        "customer": "customer-done",
        "charge": {"charge_id": "ch_42"},
    }
    assert rec.seen["email"].data == {"amount": 42, "customer_id": "c-7"}


async def test_step_3_failing_for_good_compensates_2_then_1(jobs: Jobs, clock: FakeClock) -> None:
    """When step 3 fails permanently, the compensations of steps 2 and 1 run in that order,
    each with its own key; a compensation sees its action's result. The job succeeds with a
    ``compensated`` result naming the executed actions, the failed one and the compensations."""
    rec = Recorder()
    rec.behaviours["email"] = fails(InvalidRequestError("mailbox does not exist", status=422))
    saga = checkout(jobs, rec)
    started = await saga.start({"amount": 7})
    job = await settle(jobs, Worker(jobs), clock, started.id)

    assert job.state is JobState.SUCCEEDED
    assert rec.names() == ["customer", "charge", "email", "refund", "undo_customer"]
    assert rec.calls[3:] == [
        ("refund", f"saga:{job.id}:2:compensate"),
        ("undo_customer", f"saga:{job.id}:1:compensate"),
    ]
    assert rec.seen["refund"].compensating
    assert rec.seen["refund"].results["charge"] == {"charge_id": "ch_7"}
    result = SagaResult.from_job(job)
    assert result is not None
    assert result.status == "compensated"
    assert result.executed == ("customer", "charge")
    assert result.failed is not None
    assert (result.failed.step, result.failed.name, result.failed.code) == (
        3,
        "email",
        "VALIDATION",
    )
    assert result.compensated == ("charge", "customer")


async def test_a_step_is_retried_per_its_policy_without_holding_the_worker(
    jobs: Jobs, clock: FakeClock
) -> None:
    """A transient failure of step 2 is retried under the step's policy: the progress is
    checkpointed and the saga job is rescheduled after the back-off (the worker is free
    meanwhile); the retry resumes at step 2, so step 1 ran once."""
    rec = Recorder()
    rec.behaviours["charge"] = fails(UpstreamUnavailableError("503", status=503), times=2)
    saga = checkout(jobs, rec)
    started = await saga.start({"amount": 5})
    worker = Worker(jobs)

    await worker.run_until_idle()
    job = await jobs.get(started.id)
    assert job is not None
    assert job.state is JobState.RETRYING
    assert job.run_at == pytest.approx(clock.time() + 2.0)  # the step's Constant(2.0)
    assert job.state_data["next"] == 1  # step 1 is done
    assert job.last_error_code == "UPSTREAM_UNAVAILABLE"

    job = await settle(jobs, worker, clock, started.id)
    assert job.state is JobState.SUCCEEDED
    assert rec.names() == ["customer", "charge", "charge", "charge", "email"]
    assert len(job.history) == 3  # two failed attempts of step 2, then the success


async def test_a_step_that_exhausts_its_attempts_fails_for_good(
    jobs: Jobs, clock: FakeClock
) -> None:
    """A step failing transiently on every attempt fails for good after its policy's attempts
    (3), and the saga compensates; compensations are retried too (one transient failure)."""
    rec = Recorder()
    rec.behaviours["email"] = fails(UpstreamUnavailableError("503", status=503))
    rec.behaviours["refund"] = fails(UpstreamUnavailableError("503", status=503), times=1)
    saga = checkout(jobs, rec)
    started = await saga.start({"amount": 5})
    job = await settle(jobs, Worker(jobs), clock, started.id)

    assert job.state is JobState.SUCCEEDED
    assert rec.names() == [
        "customer", "charge", "email", "email", "email", "refund", "refund", "undo_customer"
    ]  # fmt: skip
    result = SagaResult.from_job(job)
    assert result is not None
    assert result.status == "compensated"
    assert result.compensated == ("charge", "customer")


async def test_a_crash_after_step_2_resumes_at_step_3(db: str, clock: FakeClock) -> None:
    """Worker A runs steps 1 and 2, then dies while step 3 runs (it hangs and stops renewing
    its lease). Once the lease has expired worker B -- another Jobs over the same database,
    as another process would be -- takes the job over and resumes at step 3: steps 1 and 2 do
    not run again. A's late outcome is ignored."""
    rec = Recorder()
    hung = asyncio.Event()

    async def hang_first_time(n: int) -> str:
        if n == 1:
            hung.set()
            await asyncio.Event().wait()  # never returns: the worker is as good as dead
        return "email-done"

    rec.behaviours["email"] = hang_first_time
    async with Jobs(database_url=db, clock=clock) as a, Jobs(database_url=db, clock=clock) as b:
        started = await checkout(a, rec).start({"amount": 9})
        checkout(b, rec)
        worker_a = Worker(a, lease=30.0, heartbeat=20.0, poll_interval=0.01, name="A")
        running = asyncio.create_task(worker_a.run())
        try:
            await asyncio.wait_for(hung.wait(), 10)
            job = await b.get(started.id)
            assert job is not None
            assert (job.state, job.lease_owner) == (JobState.RUNNING, "A")
            assert job.state_data["executed"] == ["customer", "charge"]

            worker_b = Worker(b, name="B")
            assert await worker_b.run_until_idle() == 0  # A's lease still holds
            clock.advance(31)  # ... and now it has expired
            job = await settle(b, worker_b, clock, started.id)
        finally:
            worker_a.stop(release=True)
            await asyncio.wait_for(running, 10)

        assert job.state is JobState.SUCCEEDED
        assert rec.names() == ["customer", "charge", "email", "email"]
        result = SagaResult.from_job(job)
        assert result is not None
        assert result.executed == ("customer", "charge", "email")
        final = await b.get(started.id)
        assert final is not None
        assert final.state is JobState.SUCCEEDED  # A's release came too late to count


async def test_a_failed_compensation_leaves_the_saga_dead_with_a_reason(
    jobs: Jobs, clock: FakeClock
) -> None:
    """Step 3 fails for good, then the compensation of step 2 fails for good: step 1's
    compensation does not run, and the saga job is dead in the dead-letter queue with code
    SAGA_COMPENSATION_FAILED and a message naming what failed, what was compensated and what
    was not. Redriven once the cause is fixed, it resumes at that compensation (no action runs
    again) and ends compensated."""
    rec = Recorder()
    rec.behaviours["email"] = fails(InvalidRequestError("bad address", status=422))
    rec.behaviours["refund"] = fails(InvalidRequestError("charge already settled", status=409))
    saga = checkout(jobs, rec)
    started = await saga.start({"amount": 3})
    worker = Worker(jobs)
    job = await settle(jobs, worker, clock, started.id)

    assert job.state is JobState.DEAD
    assert rec.names() == ["customer", "charge", "email", "refund"]
    assert job.last_error_code == "SAGA_COMPENSATION_FAILED"
    assert job.last_error is not None
    for part in (
        "compensation of step 2 ('charge') failed for good",
        "charge already settled",
        "action 3 ('email') failed",
        "compensated: none",
        "not compensated: charge, customer",
    ):
        assert part in job.last_error
    assert [dead.id for dead in await jobs.dlq.list()] == [job.id]

    del rec.behaviours["refund"]  # the operator fixes the cause...
    assert await jobs.dlq.retry([job.id]) == 1  # ... and redrives the saga
    job = await settle(jobs, worker, clock, started.id)
    assert job.state is JobState.SUCCEEDED
    assert rec.names() == ["customer", "charge", "email", "refund", "refund", "undo_customer"]
    result = SagaResult.from_job(job)
    assert result is not None
    assert result.status == "compensated"
    assert result.compensated == ("charge", "customer")


async def test_starting_with_an_idempotency_key_runs_the_saga_once(
    jobs: Jobs, clock: FakeClock
) -> None:
    """Two starts with one idempotency key make one job, and the steps run once."""
    rec = Recorder()
    saga = checkout(jobs, rec)
    first = await saga.start({"amount": 1}, idempotency_key="order:1")
    second = await saga.start({"amount": 1}, idempotency_key="order:1")
    assert (second.id, second.created) == (first.id, False)
    await settle(jobs, Worker(jobs), clock, first.id)
    assert rec.names() == ["customer", "charge", "email"]


def test_a_badly_declared_saga_is_refused() -> None:
    """No steps, a step that is not async, or two steps with one name: ConfigurationError at
    declaration."""
    jobs = Jobs(database_url="sqlite:///unused.db")
    rec = Recorder()
    with pytest.raises(ConfigurationError, match="at least one step"):
        jobs.saga("empty", steps=[])
    with pytest.raises(ConfigurationError, match="async def"):
        jobs.saga("sync", steps=[Step(lambda ctx, data: None)])  # type: ignore[arg-type, return-value]
    with pytest.raises(ConfigurationError, match="unique"):
        jobs.saga("twice", steps=[Step(rec.step("a")), Step(rec.step("a"))])
    assert "twice" not in jobs.registry
