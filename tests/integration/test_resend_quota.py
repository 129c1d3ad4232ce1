"""Resend's sending quota against the sandbox's simulator over real HTTP: a
``daily_quota_exceeded`` 429 is not retried as a burst; sends pause until the quota resets and
durable jobs wait for it without losing an attempt.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from antifragile import FakeClock, RateLimitedError
from antifragile.connectors import ResendConnector
from antifragile.connectors._quota import until_daily_reset, until_monthly_reset
from antifragile.jobs import JobContext, Jobs, JobState
from antifragile.sandbox import ProviderSandbox, ResendSimulator

KEY = "re_test_key_12345"


async def test_a_spent_daily_quota_pauses_sends_until_midnight(tmp_path: Path) -> None:
    """The second email of a 1-a-day quota gets one 429 (not five); its ``retry_after`` is the
    time to midnight UTC; later sends are refused locally (Resend is not asked) and a job
    waiting for the reset keeps its attempts; after the reset sends go out again."""
    clock = FakeClock()
    simulator = ResendSimulator(api_keys=[KEY], rate_limit=100, daily_quota=1)
    with ProviderSandbox([simulator]) as sandbox:
        resend = ResendConnector(KEY, base_url=sandbox.base_url("resend"), clock=clock)
        jobs = Jobs(database_url=f"sqlite:///{tmp_path / 'jobs.db'}", clock=clock)

        @jobs.job(queue="email", provider="resend")
        async def send(ctx: JobContext, n: int) -> str:
            sent = await resend.send_email(
                sender="shop@acme.example",
                to="ada@example.com",
                subject=f"Order {n}",
                text="Thanks!",
                idempotency_key=f"order/{n}",
            )
            return sent.id

        async with jobs, resend:
            await send.enqueue(n=1)
            await jobs.worker(concurrency=1).run_until_idle()
            with pytest.raises(RateLimitedError) as spent:
                await resend.send_email(
                    sender="shop@acme.example",
                    to="ada@example.com",
                    subject="Order 2",
                    text="Thanks!",
                    idempotency_key="order/2",
                )
            assert [r.status for r in sandbox.requests] == [200, 429]
            assert "daily_quota_exceeded" in str(spent.value)
            assert spent.value.retry_after == pytest.approx(until_daily_reset(clock.time()))
            assert resend.quota_paused_until is not None

            job = await send.enqueue(n=3)
            await jobs.worker(concurrency=1).run_until_idle()
            assert len(sandbox.requests) == 2  # paused: Resend was not asked
            waiting = await jobs.get(job.id)
            assert waiting is not None
            assert waiting.state in (JobState.SCHEDULED, JobState.QUEUED, JobState.RETRYING)
            assert waiting.attempts == 0
            assert waiting.run_at >= resend.quota_paused_until - 1

            simulator.reset()  # midnight at Resend
            clock.advance(until_daily_reset(clock.time()) + 1)
            await jobs.worker(concurrency=1).run_until_idle()
            done = await jobs.get(job.id)
            assert done is not None
            assert done.state is JobState.SUCCEEDED
        assert len(sandbox.effects("resend")) == 2


def test_monthly_reset_is_the_first_of_next_month() -> None:
    from datetime import UTC, datetime

    dec = datetime(2026, 12, 31, 23, 0, tzinfo=UTC).timestamp()
    assert until_monthly_reset(dec) == 3600
    mid = datetime(2026, 5, 15, tzinfo=UTC).timestamp()
    assert until_monthly_reset(mid) == 17 * 86400
