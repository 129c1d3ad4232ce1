"""The jobs the crash test's worker processes run (imported by ``antifragile worker --app``).

Each job posts one "effect" to the test's local HTTP server with ``Idempotency-Key`` set to
``ctx.idempotency_key``, the way a connector calls a provider: the server counts effects by
distinct key, as a provider that deduplicates would. ``CRASH_SERVER_URL`` names the server.
"""

from __future__ import annotations

import asyncio
import os
import random

import httpx

from antifragile import Constant, Retry
from antifragile.errors import classify_response
from antifragile.jobs import JobContext, Jobs

jobs = Jobs()

_client: httpx.AsyncClient | None = None


def _http() -> httpx.AsyncClient:
    global _client
    if _client is None:
        _client = httpx.AsyncClient(base_url=os.environ["CRASH_SERVER_URL"], timeout=10.0)
    return _client


@jobs.job(queue="effects", retry=Retry(attempts=4, backoff=Constant(0.05)), timeout=20)
async def effect(ctx: JobContext, n: int, kind: str) -> int:
    """POST /effects/<kind>/<n>; a 4xx dead-letters the job, a 5xx retries it."""
    await asyncio.sleep(random.uniform(0, 0.005))
    response = await _http().post(
        f"/effects/{kind}/{n}",
        json={"n": n, "pid": os.getpid()},
        headers={"Idempotency-Key": ctx.idempotency_key},
    )
    error = classify_response(response, provider="sandbox", operation="effect")
    if error is not None:
        raise error
    await asyncio.sleep(random.uniform(0, 0.005))
    return n
