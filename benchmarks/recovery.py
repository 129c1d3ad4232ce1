"""Recovery after an outage: how fast a backlog drains once the provider is back.

For HubSpot (a rolling window of 100 requests per 10 s, told by ``X-HubSpot-RateLimit-*``
headers) and Shopify (a leaky bucket of 40 that leaks 2 per second, told by
``X-Shopify-Shop-Api-Call-Limit``), the provider's simulator in a
:class:`~antifragile.sandbox.ProviderSandbox` (real HTTP on loopback) goes down for
``--outage`` seconds (60): every request to it is answered 503 by the sandbox's fault script.
During the outage ``--jobs`` operations (500) arrive, evenly spread -- create a contact, create a
customer -- and then the provider is back. Two contenders run on the same script:

* ``antifragile`` -- durable jobs on a real SQLite queue worked by a
  :class:`~antifragile.jobs.Worker` (20 at a time), each job one call through the provider's
  connector with its **default policy** (its limiter fed by the provider's headers, its
  breaker in ``jobs.breakers``);
* ``naive`` -- a tenacity loop per operation (5 attempts, exponential back-off from 0.5 s up to
  10 s, no breaker, no limiter), 20 at a time, straight to the provider with httpx.

Measured, from the sandbox's own record of requests and effects:

* ``drain`` -- seconds from the provider's return to the last operation's effect, beside the
  theoretical minimum ``jobs / allowed rate`` (10/s for HubSpot, 2/s for Shopify) and the
  minimum that also spends the provider's burst at once (100 at once then 100 per 10 s: 40 s
  for 500; 40 at once then 2/s: 230 s);
* ``first success`` -- seconds from the provider's return to its first 2xx answer;
* ``lost`` -- operations with no effect when the run ends; ``duplicates`` -- effects beyond
  the first of an operation;
* ``429 share`` -- requests answered 429, of all requests the provider saw;
* ``outage requests`` -- requests the provider saw while it was down, and of those the probes
  (``antifragile``: requests after its breaker first opened -- the only requests a dead
  provider should see);
* ``retried jobs`` -- jobs that used more than one attempt (a token wait or an open breaker
  costs none).

Contenders run in interleaved rounds (``--rounds``, 2), the medians are reported. Results go to
``benchmarks/results/recovery.json`` and ``recovery.md`` (``recovery-quick.*`` with
``--quick``: a 10 s outage, 100 operations, one round)::

    python benchmarks/recovery.py                 # 60 s outage, 500 operations, 2 rounds
    python benchmarks/recovery.py --quick
    python benchmarks/recovery.py --only hubspot --rounds 1
"""

from __future__ import annotations

import os
import sys

# Run as a script, this folder leads sys.path, and its ``queue.py`` would shadow the standard
# library's ``queue`` (which the thread pools below import): drop the folder first.
if sys.path and os.path.abspath(sys.path[0]) == os.path.dirname(os.path.abspath(__file__)):
    sys.path.pop(0)

import argparse
import asyncio
import contextlib
import json
import logging
import math
import platform
import re
import statistics
import tempfile
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import httpx
import tenacity

from antifragile.connectors import HubSpotConnector, ShopifyConnector
from antifragile.jobs import JobContext, JobFilter, Jobs, JobState, Worker
from antifragile.policies import CircuitState
from antifragile.sandbox import (
    HubSpotSimulator,
    ProviderFault,
    ProviderSandbox,
    ShopifySimulator,
    Simulator,
)

RESULTS = Path(__file__).parent / "results"

Contender = Literal["antifragile", "naive"]
PROVIDERS: tuple[str, ...] = ("hubspot", "shopify")
CONTENDERS: tuple[Contender, ...] = ("antifragile", "naive")

_HUBSPOT_TOKEN = "pat-na1-test-token"
_SHOPIFY_TOKEN = "shpat_test_token"
_SHOPIFY_VERSION = "2024-01"
_OP = re.compile(r"op-(\d+)@")


@dataclass(frozen=True, slots=True)
class Limits:
    """A provider's limit: ``burst`` at once, then ``rate`` per second; the endpoint created on."""

    rate: float
    burst: int
    endpoint: str
    path: str

    def minimum(self, jobs: int) -> float:
        """Seconds to send *jobs* at the allowed rate (``jobs / rate``)."""
        return jobs / self.rate

    def minimum_with_burst(self, jobs: int, provider: str) -> float:
        """Seconds to send *jobs* spending the burst at once, then at the allowed rate."""
        if jobs <= self.burst:
            return 0.0
        if provider == "hubspot":  # a rolling window: a full window, then the next one
            return (math.ceil(jobs / self.burst) - 1) * self.burst / self.rate
        return (jobs - self.burst) / self.rate


LIMITS: dict[str, Limits] = {
    "hubspot": Limits(10.0, 100, "POST /crm/v3/objects/contacts", "/crm/v3/objects/contacts"),
    "shopify": Limits(
        2.0,
        40,
        "POST /admin/api/{version}/customers.json",
        f"/admin/api/{_SHOPIFY_VERSION}/customers.json",
    ),
}


@dataclass(frozen=True, slots=True)
class Run:
    """What one contender did with one provider in one round (see the module docs)."""

    provider: str
    contender: str
    round: int
    jobs: int
    outage: float
    drain: float | None
    minimum: float
    minimum_with_burst: float
    first_success: float | None
    lost: int
    duplicates: int
    requests: int
    answered_429: int
    outage_requests: int
    probes: int | None
    retried_jobs: int | None
    seconds: float
    #: effects per second after the provider's return (second -> count)
    timeline: dict[int, int] | None = None

    @property
    def share_429(self) -> float:
        return self.answered_429 / self.requests if self.requests else 0.0

    @property
    def ratio(self) -> float | None:
        return None if self.drain is None else self.drain / self.minimum

    def to_dict(self) -> dict[str, Any]:
        ratio = self.ratio
        return {
            **asdict(self),
            "share_429": round(self.share_429, 4),
            "ratio": None if ratio is None else round(ratio, 3),
        }


def _simulator(provider: str) -> Simulator:
    if provider == "hubspot":
        return HubSpotSimulator(tokens=[_HUBSPOT_TOKEN], burst=100, interval=10.0)
    return ShopifySimulator(access_tokens=[_SHOPIFY_TOKEN], bucket_size=40, leak_rate=2.0)


def _operation_of(data: Any) -> int | None:
    found = _OP.search(json.dumps(data, default=str))
    return None if found is None else int(found.group(1))


async def _arrivals(
    jobs: int, outage: float, start: float, submit: Callable[[int], Awaitable[None]]
) -> None:
    """Submit operation *n* at ``start + n * outage / jobs`` (monotonic seconds)."""
    for n in range(jobs):
        delay = start + n * outage / jobs - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        await submit(n)


async def _antifragile(
    provider: str, sandbox: ProviderSandbox, jobs_count: int, outage: float, start: float
) -> tuple[int, float | None]:
    """Run the durable-jobs contender; (jobs that used more than one attempt, the moment its
    breaker first opened, wall-clock)."""
    base = sandbox.base_url(provider)
    opened: list[float] = []
    with tempfile.TemporaryDirectory() as directory:
        jobs = Jobs(database_url=f"sqlite:///{Path(directory) / 'recovery.db'}")
        async with contextlib.AsyncExitStack() as stack:
            await stack.enter_async_context(jobs)
            operate: Callable[[int], Awaitable[object]]
            if provider == "hubspot":
                hubspot = await stack.enter_async_context(
                    HubSpotConnector(_HUBSPOT_TOKEN, base_url=base)
                )
                breaker = hubspot.policy.breaker

                async def operate(n: int) -> object:
                    return await hubspot.create_contact(f"op-{n}@example.com", {"firstname": "Ada"})

            else:
                shopify = await stack.enter_async_context(
                    ShopifyConnector(  # REST: the leaky bucket of requests measured here
                        _SHOPIFY_TOKEN, base_url=base, api_version=_SHOPIFY_VERSION, api="rest"
                    )
                )
                breaker = shopify.policy.breaker

                async def operate(n: int) -> object:
                    return await shopify.create_customer(email=f"op-{n}@example.com")

            assert breaker is not None
            jobs.breakers = {provider: breaker}

            def on_transition(before: CircuitState, after: CircuitState, reason: str) -> None:
                if after is CircuitState.OPEN and not opened:
                    opened.append(time.time())

            breaker.add_listener(on_transition)

            @jobs.job(f"recovery.{provider}", provider=provider)
            async def create(ctx: JobContext, n: int) -> None:
                await operate(n)

            async def submit(n: int) -> None:
                await create.configure(idempotency_key=f"{provider}/op-{n}").enqueue(n)

            worker = Worker(jobs, concurrency=20)
            running = asyncio.create_task(worker.run())
            try:
                await _arrivals(jobs_count, outage, start, submit)
                limit = start + outage + 3 * LIMITS[provider].minimum(jobs_count) + 60
                waiting = (JobState.QUEUED, JobState.RETRYING, JobState.SCHEDULED, JobState.RUNNING)
                while time.monotonic() < limit:
                    if not await jobs.find(JobFilter(states=waiting), limit=1):
                        break
                    await asyncio.sleep(0.25)
            finally:
                worker.stop(release=True)
                await running
            done = await jobs.find(JobFilter(), limit=jobs_count + 1)
            retried = sum(1 for job in done if job.attempts > 1)
    return retried, opened[0] if opened else None


def _naive_request(provider: str, base: str, n: int) -> tuple[str, dict[str, str], Any]:
    if provider == "hubspot":
        return (
            f"{base}{LIMITS[provider].path}",
            {"authorization": f"Bearer {_HUBSPOT_TOKEN}"},
            {"properties": {"email": f"op-{n}@example.com", "firstname": "Ada"}},
        )
    return (
        f"{base}{LIMITS[provider].path}",
        {"x-shopify-access-token": _SHOPIFY_TOKEN},
        {"customer": {"email": f"op-{n}@example.com"}},
    )


async def _naive(
    provider: str, sandbox: ProviderSandbox, jobs_count: int, outage: float, start: float
) -> None:
    """Run the tenacity contender: each operation retried 5 times, no breaker, no limiter."""
    base = sandbox.base_url(provider)
    slots = asyncio.Semaphore(20)
    tasks: list[asyncio.Task[None]] = []
    async with httpx.AsyncClient(timeout=10.0) as client:

        async def once(n: int) -> None:
            url, headers, body = _naive_request(provider, base, n)
            response = await client.post(url, headers=headers, json=body)
            response.raise_for_status()

        async def operation(n: int) -> None:
            async with slots:
                with contextlib.suppress(tenacity.RetryError, httpx.HTTPError):
                    async for attempt in tenacity.AsyncRetrying(
                        stop=tenacity.stop_after_attempt(5),
                        wait=tenacity.wait_exponential(multiplier=0.5, max=10),
                        retry=tenacity.retry_if_exception_type(httpx.HTTPError),
                    ):
                        with attempt:
                            await once(n)

        async def submit(n: int) -> None:
            tasks.append(asyncio.create_task(operation(n)))

        await _arrivals(jobs_count, outage, start, submit)
        await asyncio.gather(*tasks)


async def measure(
    provider: str, contender: Contender, *, jobs: int, outage: float, round_: int = 1
) -> Run:
    """One contender's run on one provider (see the module docs)."""
    began = time.perf_counter()
    limits = LIMITS[provider]
    retried: int | None = None
    opened_at: float | None = None
    with ProviderSandbox([_simulator(provider)]) as sandbox:
        # the outage: every request to the provider answered 503, from now for *outage* seconds
        sandbox.faults(provider, chaos=[(1.0, ProviderFault.error(503))], end=outage)
        start = time.monotonic()
        back_at = time.time() + outage  # wall clock, as the sandbox records requests
        if contender == "antifragile":
            retried, opened_at = await _antifragile(provider, sandbox, jobs, outage, start)
        else:
            await _naive(provider, sandbox, jobs, outage, start)
        requests = [r for r in sandbox.requests if r.path.startswith(f"/{provider}/")]
        effects = sandbox.effects(provider, limits.endpoint)
    copies = Counter(_operation_of(e.data) for e in effects)
    copies.pop(None, None)
    successes = [
        r.at for r in requests if r.status is not None and 200 <= r.status < 300 and r.at >= back_at
    ]
    created = [
        r.at
        for r in requests
        if r.method == "POST" and r.status is not None and 200 <= r.status < 300
    ]
    during = [r for r in requests if r.at < back_at]
    probes = None
    if contender == "antifragile":
        probes = sum(1 for r in during if opened_at is not None and r.at > opened_at)
    return Run(
        provider=provider,
        contender=contender,
        round=round_,
        jobs=jobs,
        outage=outage,
        drain=round(max(created) - back_at, 2) if created else None,
        minimum=round(limits.minimum(jobs), 2),
        minimum_with_burst=round(limits.minimum_with_burst(jobs, provider), 2),
        first_success=round(min(successes) - back_at, 3) if successes else None,
        lost=sum(1 for n in range(jobs) if n not in copies),
        duplicates=sum(c - 1 for c in copies.values()),
        requests=len(requests),
        answered_429=sum(1 for r in requests if r.status == 429),
        outage_requests=len(during),
        probes=probes,
        retried_jobs=retried,
        seconds=round(time.perf_counter() - began, 1),
        timeline=dict(
            sorted(Counter(int(at - back_at) for at in created if at >= back_at).items())
        ),
    )


# -- the report -----------------------------------------------------------------------------------


def _median(values: Sequence[float | int | None]) -> float | None:
    known = [v for v in values if v is not None]
    return statistics.median(known) if known else None


def summarize(runs: Sequence[Run]) -> list[dict[str, Any]]:
    """Medians per provider and contender."""
    rows: list[dict[str, Any]] = []
    for provider in PROVIDERS:
        for contender in CONTENDERS:
            mine = [r for r in runs if r.provider == provider and r.contender == contender]
            if not mine:
                continue
            drain = _median([r.drain for r in mine])
            rows.append(
                {
                    "provider": provider,
                    "contender": contender,
                    "rounds": len(mine),
                    "jobs": mine[0].jobs,
                    "drain": drain,
                    "minimum": mine[0].minimum,
                    "minimum_with_burst": mine[0].minimum_with_burst,
                    "ratio": None if drain is None else round(drain / mine[0].minimum, 3),
                    "first_success": _median([r.first_success for r in mine]),
                    "lost": max(r.lost for r in mine),
                    "duplicates": max(r.duplicates for r in mine),
                    "share_429": _median([r.share_429 for r in mine]),
                    "outage_requests": _median([r.outage_requests for r in mine]),
                    "probes": _median([r.probes for r in mine]),
                    "retried_jobs": _median([r.retried_jobs for r in mine]),
                }
            )
    return rows


def _cell(value: Any, fmt: str = "{}") -> str:
    return "-" if value is None else fmt.format(value)


def report(runs: Sequence[Run], *, jobs: int, outage: float, rounds: int) -> str:
    """The Markdown report of a run."""
    lines = [
        "| provider | contender | drain after recovery | minimum (jobs ÷ rate) | ratio "
        "| minimum with burst | first success | lost | duplicates | 429 share "
        "| requests during outage (probes) | jobs retried |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in summarize(runs):
        probes = "" if row["probes"] is None else f" ({row['probes']:g})"
        lines.append(
            f"| {row['provider']} | {row['contender']} | {_cell(row['drain'], '{:.1f} s')} "
            f"| {row['minimum']:.0f} s | {_cell(row['ratio'], '{:.2f}x')} "
            f"| {row['minimum_with_burst']:.0f} s | {_cell(row['first_success'], '{:.2f} s')} "
            f"| {row['lost']} | {row['duplicates']} | {_cell(row['share_429'], '{:.1%}')} "
            f"| {_cell(row['outage_requests'], '{:g}')}{probes} "
            f"| {_cell(row['retried_jobs'], '{:g}')} |"
        )
    return (
        "## Recovery after an outage\n\n"
        f"{jobs} operations arrive during a {outage:g} s outage (every request answered 503 by "
        "the sandbox's fault script, over real HTTP), then the provider is back. HubSpot: a "
        "rolling window of 100 requests per 10 s; Shopify: a leaky bucket of 40 leaking 2/s. "
        "*antifragile*: durable jobs on a SQLite queue, one worker, 20 at a time, each one "
        "call through the provider's connector with its default policy. *naive*: a tenacity "
        "loop per operation (5 attempts, exponential back-off 0.5 to 10 s, no breaker, no "
        f"limiter), 20 at a time. Interleaved rounds: {rounds}; medians (lost and duplicates: "
        "the worst round).  \n"
        f"Python {platform.python_version()}, {platform.machine()}.\n\n"
        + "\n".join(lines)
        + "\n\n*drain*: from the provider's return to the last operation's effect; *minimum*: "
        "the operations at the provider's allowed rate (10/s, 2/s); *with burst*: spending the "
        "provider's burst at once first (100 then 100 per 10 s; 40 then 2/s); *first success*: "
        "the provider's first 2xx after its return; *429 share*: of every request the provider "
        "saw; *probes*: requests after the breaker first opened, the only ones a dead provider "
        "should see; *jobs retried*: jobs that used more than one attempt.\n"
    )


async def run(
    providers: Sequence[str],
    contenders: Sequence[Contender],
    *,
    jobs: int,
    outage: float,
    rounds: int,
) -> list[Run]:
    runs: list[Run] = []
    for round_ in range(1, rounds + 1):
        for provider in providers:
            order = contenders if round_ % 2 else tuple(reversed(contenders))
            for contender in order:
                result = await measure(provider, contender, jobs=jobs, outage=outage, round_=round_)
                print(
                    f"round {round_} {provider:8} {contender:11} drain {_cell(result.drain)} s "
                    f"(min {result.minimum:g} s) first {_cell(result.first_success)} s "
                    f"lost {result.lost} dup {result.duplicates} 429 {result.answered_429}/"
                    f"{result.requests} outage {result.outage_requests} probes "
                    f"{_cell(result.probes)} retried {_cell(result.retried_jobs)} "
                    f"[{result.seconds:.0f} s]",
                    flush=True,
                )
                runs.append(result)
    return runs


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--jobs", type=int, default=500)
    parser.add_argument("--outage", type=float, default=60.0)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--only", action="append", choices=PROVIDERS, default=None)
    parser.add_argument(
        "--contender", action="append", choices=CONTENDERS, default=None, dest="contenders"
    )
    parser.add_argument("--quick", action="store_true", help="10 s outage, 100 jobs, 1 round")
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    # deferred and retried jobs are the point of the measurement
    logging.getLogger("antifragile").setLevel(logging.ERROR)
    jobs, outage, rounds = (100, 10.0, 1) if args.quick else (args.jobs, args.outage, args.rounds)
    providers = tuple(args.only or PROVIDERS)
    contenders = tuple(args.contenders or CONTENDERS)
    runs = asyncio.run(run(providers, contenders, jobs=jobs, outage=outage, rounds=rounds))
    name = "recovery-quick" if args.quick else "recovery"
    args.output.mkdir(parents=True, exist_ok=True)
    document = {
        "benchmark": "recovery",
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "python": platform.python_version(),
        "machine": platform.machine(),
        "jobs": jobs,
        "outage": outage,
        "rounds": rounds,
        "summary": summarize(runs),
        "runs": [r.to_dict() for r in runs],
    }
    (args.output / f"{name}.json").write_text(json.dumps(document, indent=2) + "\n")
    (args.output / f"{name}.md").write_text(report(runs, jobs=jobs, outage=outage, rounds=rounds))
    print(f"wrote {args.output / name}.json and .md", file=sys.stderr)


if __name__ == "__main__":
    main()
