"""How long an intent takes when the model answers, and when the keywords answer instead.

An ``LLMIntentClassifier`` (attempt timeout 300 ms, total timeout 600 ms) classifies one message
against the sandbox's OpenAI-compatible simulator over real HTTP, once per round, for each case:
a good answer; 5xx twice (retried once); 429 with a 30 s ``retry-after`` (not retried);
``insufficient_quota`` (not retried, the model paused) and a message during that pause; a hang
(two attempts time out); a malformed body; a garbage answer (an intent nobody allowed); an open
breaker. The table shows the median, the 95th percentile and the maximum, and which classifier
answered. Results go to ``benchmarks/results/llm_intents.json`` and ``llm_intents.md``.

    python benchmarks/llm_intents.py            # about half a minute
    python benchmarks/llm_intents.py --quick    # a smoke run
"""

from __future__ import annotations

import os
import sys

# benchmarks/queue.py would shadow the standard library's ``queue`` (see failure_latency.py)
if sys.path and os.path.abspath(sys.path[0]) == os.path.dirname(os.path.abspath(__file__)):
    sys.path.pop(0)

import argparse
import asyncio
import json
import platform
import statistics
import time
from pathlib import Path
from typing import Any

from antifragile.inbound import LLMIntentClassifier, LLMIntentConfig
from antifragile.sandbox import (
    DEFAULT_CHAT_RULES,
    ChatRule,
    OpenAISimulator,
    ProviderFault,
    ProviderSandbox,
)

RESULTS = Path(__file__).resolve().parent / "results"
TEXT = "What is the price of a cake?"
GARBAGE = "shouting about the price"

#: case -> (faults before each call, the text)
CASES: dict[str, tuple[list[ProviderFault], str]] = {
    "good answer": ([], TEXT),
    "5xx twice": ([ProviderFault.error(503)] * 2, TEXT),
    "429 retry-after 30 s": ([ProviderFault.rate_limited(30)], TEXT),
    "insufficient_quota": ([ProviderFault.error(429, code=1)], TEXT),
    "hang": ([ProviderFault.hang()] * 2, TEXT),
    "malformed body": ([ProviderFault.malformed()], TEXT),
    "garbage answer": ([], GARBAGE),
}


def _config(sandbox: ProviderSandbox) -> LLMIntentConfig:
    return LLMIntentConfig(
        base_url=f"{sandbox.base_url('openai')}/v1",
        model="bench",
        api_key="sk-bench",
        timeout=0.3,
        total_timeout=0.6,
    )


def _summary(samples: list[float], sources: set[str]) -> dict[str, Any]:
    ordered = sorted(samples)
    p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
    return {
        "rounds": len(samples),
        "median_ms": round(statistics.median(samples) * 1000, 2),
        "p95_ms": round(p95 * 1000, 2),
        "max_ms": round(max(samples) * 1000, 2),
        "answered_by": sorted(sources),
    }


async def _case(
    sandbox: ProviderSandbox, faults: list[ProviderFault], text: str, rounds: int
) -> dict[str, Any]:
    samples: list[float] = []
    sources: set[str] = set()
    for _ in range(rounds):
        classifier = LLMIntentClassifier(_config(sandbox))  # a fresh breaker each round
        try:
            sandbox.faults("openai", script=faults)
            started = time.perf_counter()
            result = await classifier.classify(text)
            samples.append(time.perf_counter() - started)
            sources.add(result.source)
        finally:
            await classifier.aclose()
    sandbox.clear_faults()
    return _summary(samples, sources)


async def _paused_and_open(sandbox: ProviderSandbox, rounds: int) -> dict[str, dict[str, Any]]:
    """Messages while the model is paused after insufficient_quota, and behind an open breaker."""
    out: dict[str, dict[str, Any]] = {}
    paused = LLMIntentClassifier(_config(sandbox))
    broken = LLMIntentClassifier(_config(sandbox))
    try:
        sandbox.faults("openai", script=[ProviderFault.error(429, code=1)])
        await paused.classify(TEXT)
        sandbox.faults("openai", script=[ProviderFault.error(500)] * 20)
        for _ in range(6):
            await broken.classify(TEXT)
        for name, classifier in (("quota pause", paused), ("breaker open", broken)):
            samples: list[float] = []
            sources: set[str] = set()
            for _ in range(rounds):
                started = time.perf_counter()
                result = await classifier.classify(TEXT)
                samples.append(time.perf_counter() - started)
                sources.add(result.source)
            out[name] = _summary(samples, sources)
    finally:
        await paused.aclose()
        await broken.aclose()
        sandbox.clear_faults()
    return out


async def run(rounds: int) -> dict[str, Any]:
    rules = [ChatRule("shouting", "SHOUTING", 0.9), *DEFAULT_CHAT_RULES]
    async with ProviderSandbox([OpenAISimulator(rules=rules)]) as sandbox:
        cases = {name: await _case(sandbox, f, t, rounds) for name, (f, t) in CASES.items()}
        cases.update(await _paused_and_open(sandbox, rounds))
    return {
        "python": platform.python_version(),
        "machine": platform.machine(),
        "timeout_s": 0.3,
        "total_timeout_s": 0.6,
        "cases": cases,
    }


def _table(result: dict[str, Any]) -> str:
    lines = [
        "| case | answered by | median | p95 | max |",
        "|---|---|---|---|---|",
    ]
    for name, row in result["cases"].items():
        lines.append(
            f"| {name} | {', '.join(row['answered_by'])} | {row['median_ms']} ms "
            f"| {row['p95_ms']} ms | {row['max_ms']} ms |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="3 rounds per case")
    args = parser.parse_args()
    rounds = 3 if args.quick else 20
    result = asyncio.run(run(rounds))
    suffix = "-quick" if args.quick else ""
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"llm_intents{suffix}.json").write_text(json.dumps(result, indent=2) + "\n")
    table = _table(result)
    (RESULTS / f"llm_intents{suffix}.md").write_text(table)
    print(table)


if __name__ == "__main__":
    main()
