"""How users call the public API, checked by ``mypy --strict`` only (never executed).

When a public signature regresses, type-checking this file fails.
"""

from __future__ import annotations

from typing import assert_type

import httpx

import antifragile as af
from antifragile.errors import AttemptRecord
from antifragile.observability import RecordingObserver
from antifragile.policies import time_remaining


def sync_fetch(customer_id: int, *, verbose: bool = False) -> dict[str, int]:
    return {"id": customer_id}


async def async_fetch(customer_id: int) -> str:
    return str(customer_id)


async def usage() -> None:
    clock = af.FakeClock()
    policy = af.Policy(
        "shopify",
        timeout=10,
        total_timeout=60,
        retry=af.Retry(attempts=5, backoff=af.Exponential(0.5, cap=30)),
        breaker=af.CircuitBreaker("shopify", failure_rate=0.5, window=20),
        rate=af.TokenBucket(2, burst=40),
        bulkhead=af.Bulkhead(10, max_wait=1.0),
        clock=clock,
        observer=RecordingObserver(),
    )

    # the decorator keeps the signature of sync and async functions
    wrapped = policy(sync_fetch)
    assert_type(wrapped(1, verbose=True), dict[str, int])
    awrapped = policy(async_fetch)
    assert_type(await awrapped(1), str)

    # explicit calls
    assert_type(policy.call(sync_fetch, 1), dict[str, int])
    assert_type(await policy.acall(async_fetch, 2), str)

    # the never-raising form returns an envelope
    envelope = await policy.acall_safe(async_fetch, 3)
    if envelope.success:
        assert_type(envelope.data, str)
    else:
        assert_type(envelope.error.code, str)

    # clients
    async with af.ResilientClient("resend", base_url="https://api.resend.com", policy=policy) as c:
        response = await c.post("/emails", json={"to": "x"}, idempotency_key="welcome-42")
        assert_type(response, httpx.Response)
    with af.SyncResilientClient("slack", base_url="https://hooks.slack.com") as s:
        assert_type(s.get("/"), httpx.Response)

    # errors carry their context
    try:
        await policy.acall(async_fetch, 4)
    except af.RateLimitedError as exc:
        assert_type(exc.retry_after, float | None)
        assert_type(exc.attempts, tuple[AttemptRecord, ...])
    except af.CircuitOpenError as exc:
        assert_type(exc.until, float | None)
    except af.IntegrationError as exc:
        assert_type(exc.code, str)
        assert_type(exc.retryable, bool)

    # a policy is immutable: replace() returns a new one
    quicker = policy.replace(timeout=2, hedge=None)
    assert_type(quicker, af.Policy)
    assert_type(quicker.timeout, float | None)
    if policy.breaker is not None:
        from antifragile.stores import make_store

        shared = af.SharedCircuitBreaker.from_config(
            policy.breaker.config, make_store("memory://"), name="shopify"
        )
        assert_type(policy.replace(breaker=shared), af.Policy)

    # retry on a returned value (polling): the last value comes back when retries run out
    polling = af.Policy(
        "exports", retry=af.Retry(attempts=10, retry_on_result=lambda status: status == "pending")
    )
    assert_type(polling.call(lambda: "pending"), str)

    # retrying a block of code
    from antifragile.policies import Attempt

    for attempt in policy.attempts(operation="sync_contact"):
        with attempt as entered:
            assert_type(entered, Attempt)
            assert_type(attempt.number, int)
    async for async_attempt in policy.attempts_async(replay_safe=False):
        with async_attempt:
            await async_fetch(async_attempt.number)

    with af.request_context("req-1") as rid:
        assert_type(rid, str)
    assert_type(time_remaining(), float | None)
