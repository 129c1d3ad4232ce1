"""Email failover: Resend down in the middle of a run of summary emails, SendGrid takes over.

``--emails`` summary emails (200 by default) arrive at ``--rate`` per second (2, Resend's own
limit) and go through an :class:`~antifragile.connectors.EmailChain` ``resend,sendgrid`` built
by :class:`~antifragile.connectors.Connectors` with each connector's **default policy** (its
retries, limiter and circuit breaker), against the sandbox's simulators over real HTTP on
loopback. From ``--outage-start`` seconds after the first arrival, for ``--outage`` seconds (60),
every request to Resend's ``POST /emails`` is answered 503 in Resend's error format (the
sandbox's fault script); then Resend is back.

Measured, from the sandbox's effect records (the ground truth) and the chain's serving provider
(read every 50 ms):

* ``sent``, ``duplicates``, ``lost`` -- emails that went out, beyond once, not at all;
* per-provider counts;
* ``detect`` -- from the outage's start to the chain serving from SendGrid (Resend's breaker
  open: it is no longer asked);
* ``first_failover_send`` -- from the outage's start to SendGrid's first accepted email;
* ``return`` -- from the outage's end to Resend serving again and to its first accepted email
  (its breaker's open time, then one probe);
* the latency of each email (arrival to accepted), p50 / p95 / max, by phase.

Results go to ``benchmarks/results/email_failover.json`` and ``email_failover.md``
(``email_failover-quick.*`` with ``--quick``: 80 emails, a 10 s outage).

    .venv/bin/python benchmarks/email_failover.py            # about 2 minutes
    .venv/bin/python benchmarks/email_failover.py --quick
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import time
from collections import Counter
from pathlib import Path
from typing import Any

from antifragile.connectors import Connectors
from antifragile.connectors._failover import CHAIN_ENV
from antifragile.sandbox import ProviderFault, ProviderSandbox, ResendSimulator, SendGridSimulator

RESULTS = Path(__file__).parent / "results"
RESEND_KEY = "re_bench_key"
SENDGRID_KEY = "SG.bench-key"


def _quantiles(values: list[float]) -> dict[str, float | None]:
    if not values:
        return {"p50": None, "p95": None, "max": None}
    ordered = sorted(values)
    p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
    return {
        "p50": round(statistics.median(ordered), 3),
        "p95": round(p95, 3),
        "max": round(ordered[-1], 3),
    }


async def run(emails: int, rate: float, outage_start: float, outage: float) -> dict[str, Any]:
    os.environ[CHAIN_ENV] = "resend,sendgrid"
    simulators = [
        ResendSimulator(api_keys=[RESEND_KEY], rate_limit=100_000),
        SendGridSimulator(api_keys=[SENDGRID_KEY], rate_limit=100_000),
    ]
    with ProviderSandbox(simulators) as sandbox:
        registry = Connectors(
            base_urls={p: sandbox.base_url(p) for p in ("resend", "sendgrid")},
            options={"resend": {"api_key": RESEND_KEY}, "sendgrid": {"api_key": SENDGRID_KEY}},
        )
        chain = registry.email_chain()
        begin = time.time()
        sandbox.faults(
            "resend",
            "POST /emails",
            chaos=[(1.0, ProviderFault.error(503))],
            start=outage_start,
            end=outage_start + outage,
        )
        serving: list[tuple[float, str | None]] = []
        done = asyncio.Event()

        async def watch() -> None:
            last: str | None = "?"
            while not done.is_set():
                now = chain.serving()
                if now != last:
                    serving.append((time.time() - begin, now))
                    last = now
                await asyncio.sleep(0.05)

        latencies: list[tuple[float, float, str]] = []
        failures: list[str] = []

        async def one(i: int) -> None:
            await asyncio.sleep(max(0.0, begin + i / rate - time.time()))
            arrived = time.time() - begin
            for _ in range(50):  # an unsettled send is tried again, as a durable job would
                try:
                    sent = await chain.send_email(
                        sender="shop@example.com",
                        to="owner@example.com",
                        subject="New intake",
                        text=f"Summary of intake {i}",
                        idempotency_key=f"summary/{i}",
                    )
                except Exception as exc:  # recorded, then tried again
                    failures.append(type(exc).__name__)
                    await asyncio.sleep(min(5.0, getattr(exc, "retry_after", None) or 1.0))
                    continue
                latencies.append((arrived, time.time() - begin - arrived, sent.provider))
                return

        watcher = asyncio.create_task(watch())
        await asyncio.gather(*(one(i) for i in range(emails)))
        done.set()
        await watcher
        await registry.aclose()
        counts: Counter[str] = Counter()
        by_provider: Counter[str] = Counter()
        first: dict[str, list[float]] = {"resend": [], "sendgrid": []}
        for effect in sandbox.effects("resend"):
            counts[str(effect.idempotency_key)] += 1
            by_provider["resend"] += 1
            first["resend"].append(effect.at - begin)
        for effect in sandbox.effects("sendgrid"):
            counts[effect.data["custom_args"]["antifragile_key"]] += 1
            by_provider["sendgrid"] += 1
            first["sendgrid"].append(effect.at - begin)
    end = outage_start + outage
    to_sendgrid = next((t for t, p in serving if p == "sendgrid" and t >= outage_start), None)
    back = next((t for t, p in serving if p == "resend" and t >= end), None)
    resend_after = [t for t in first["resend"] if t >= end]
    sendgrid_sends = [t for t in first["sendgrid"] if t >= outage_start]
    phases: dict[str, list[float]] = {"before": [], "outage": [], "after": []}
    for arrived, latency, _ in latencies:
        phase = "before" if arrived < outage_start else "outage" if arrived < end else "after"
        phases[phase].append(latency)
    return {
        "emails": emails,
        "rate": rate,
        "outage_start": outage_start,
        "outage": outage,
        "sent": len(counts),
        "duplicates": sum(n - 1 for n in counts.values()),
        "lost": emails - len(counts),
        "by_provider": dict(by_provider),
        "detect": None if to_sendgrid is None else round(to_sendgrid - outage_start, 3),
        "first_failover_send": (
            round(min(sendgrid_sends) - outage_start, 3) if sendgrid_sends else None
        ),
        "return_serving": None if back is None else round(back - end, 3),
        "return_first_send": round(min(resend_after) - end, 3) if resend_after else None,
        "serving_changes": [(round(t, 3), p) for t, p in serving],
        "latency": {k: _quantiles(v) for k, v in phases.items()},
        "tries_refused": dict(Counter(failures)),
    }


def _markdown(result: dict[str, Any]) -> str:
    lat = result["latency"]
    rows = "\n".join(
        f"| {phase} | {lat[phase]['p50']} s | {lat[phase]['p95']} s | {lat[phase]['max']} s |"
        for phase in ("before", "outage", "after")
    )
    return f"""## Email failover

{result["emails"]} summary emails arriving at {result["rate"]}/s through the chain
`resend,sendgrid` (each connector's default policy), sandbox simulators over real HTTP; Resend
answers 503 to every send from {result["outage_start"]} s for {result["outage"]} s.
Python {platform.python_version()}, {platform.machine()}.

| sent | duplicates | lost | resend | sendgrid |
|---:|---:|---:|---:|---:|
| {result["sent"]} | {result["duplicates"]} | {result["lost"]} | \
{result["by_provider"].get("resend", 0)} | {result["by_provider"].get("sendgrid", 0)} |

| fail-over: serving SendGrid | first SendGrid send | return: serving Resend | first Resend send |
|---:|---:|---:|---:|
| {result["detect"]} s | {result["first_failover_send"]} s | {result["return_serving"]} s | \
{result["return_first_send"]} s |

Fail-over times from the outage's start, return times from its end (Resend's breaker: its open
time, then a probe).

| arrived | latency p50 | p95 | max |
|---|---:|---:|---:|
{rows}

Serving provider changes (s from the first arrival): {result["serving_changes"]}
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--emails", type=int, default=200)
    parser.add_argument("--rate", type=float, default=2.0)
    parser.add_argument("--outage-start", type=float, default=20.0)
    parser.add_argument("--outage", type=float, default=60.0)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    if args.quick:
        args.emails, args.outage_start, args.outage = 80, 5.0, 10.0
    result = asyncio.run(run(args.emails, args.rate, args.outage_start, args.outage))
    name = "email_failover-quick" if args.quick else "email_failover"
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{name}.json").write_text(json.dumps(result, indent=2) + "\n")
    (RESULTS / f"{name}.md").write_text(_markdown(result))
    print(_markdown(result))


if __name__ == "__main__":
    main()
