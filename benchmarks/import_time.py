"""What ``import antifragile`` costs, beside stamina, httpx and tenacity.

Each contender is a fresh interpreter running one import statement. Two measures:

- **wall**: the process's wall-clock time, minus that of an interpreter that imports nothing
  (``python -c pass``), like hyperfine's runs of a command;
- **importtime**: what ``python -X importtime`` reports for the modules the statement imported
  (the cumulative time of each top-level import that the bare interpreter does not make).

The contenders run interleaved round by round (in a new random order each round) so that the
drift of a noisy machine hits them all alike; the figure kept is the median over rounds.
Results go to ``benchmarks/results/import_time.json`` and a table to
``benchmarks/results/import_time.md``.

    python benchmarks/import_time.py            # 40 rounds, about a minute
    python benchmarks/import_time.py --quick    # a smoke run
"""

from __future__ import annotations

import os
import sys

# run as a script, this folder would come first on sys.path (benchmarks/queue.py would shadow
# the standard library's ``queue`` in the measured interpreters): drop it
if sys.path and os.path.abspath(sys.path[0]) == os.path.dirname(os.path.abspath(__file__)):
    sys.path.pop(0)

import argparse
import json
import platform
import random
import re
import statistics
import subprocess
import time
from importlib.metadata import version
from pathlib import Path

RESULTS = Path(__file__).parent / "results"

#: contender -> the statement its interpreter runs
CONTENDERS: dict[str, str] = {
    "import antifragile": "import antifragile",
    "from antifragile import Policy": "from antifragile import Policy",
    "from antifragile import ResilientClient": "from antifragile import ResilientClient",
    "import stamina": "import stamina",
    "import httpx": "import httpx",
    "import tenacity": "import tenacity",
}
BASELINE = "pass"

_LINE = re.compile(r"^import time:\s+(\d+) \|\s+(\d+) \| (\s*)(\S+)$")


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env.pop("PYTHONPROFILEIMPORTTIME", None)
    env["PYTHONDONTWRITEBYTECODE"] = "1"  # the caches are warm already; never rewrite them
    return env


def wall(statement: str) -> float:
    """Seconds one interpreter takes to start, run *statement* and exit."""
    started = time.perf_counter()
    subprocess.run([sys.executable, "-c", statement], check=True, env=_env())
    return time.perf_counter() - started


def importtime(statement: str) -> dict[str, int]:
    """Top-level module -> cumulative microseconds, as ``-X importtime`` reports them."""
    result = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", statement],
        check=True,
        capture_output=True,
        text=True,
        env=_env(),
    )
    top: dict[str, int] = {}
    for line in result.stderr.splitlines():
        match = _LINE.match(line)
        if match and not match.group(3):  # no indentation: imported by the statement itself
            top[match.group(4)] = top.get(match.group(4), 0) + int(match.group(2))
    return top


def run(rounds: int) -> dict[str, dict[str, float]]:
    names = list(CONTENDERS)
    walls: dict[str, list[float]] = {name: [] for name in [*names, BASELINE]}
    imports: dict[str, list[float]] = {name: [] for name in names}
    startup = set(importtime(BASELINE))
    for name in [*names, BASELINE]:  # one unmeasured run each: warm the page cache
        wall(CONTENDERS.get(name, BASELINE))
    for _ in range(rounds):
        order = [*names, BASELINE]
        random.shuffle(order)
        for name in order:
            walls[name].append(wall(CONTENDERS.get(name, BASELINE)))
        random.shuffle(names)
        for name in names:
            top = importtime(CONTENDERS[name])
            imports[name].append(sum(v for k, v in top.items() if k not in startup) / 1e6)
    base, base_min = statistics.median(walls[BASELINE]), min(walls[BASELINE])
    return {
        name: {
            "wall_s": statistics.median(walls[name]) - base,
            "wall_min_s": min(walls[name]) - base_min,
            "wall_stdev_s": statistics.stdev(walls[name]),
            "importtime_s": statistics.median(imports[name]),
            "importtime_min_s": min(imports[name]),
        }
        for name in CONTENDERS
    } | {
        "python -c pass": {
            "wall_s": base,
            "wall_min_s": base_min,
            "wall_stdev_s": statistics.stdev(walls[BASELINE]),
        }
    }


def report(results: dict[str, dict[str, float]], rounds: int) -> str:
    lines = [
        f"## Import time (median of {rounds} interleaved rounds, milliseconds)",
        "",
        "`wall` is the interpreter's run minus a bare `python -c pass` "
        f"({results['python -c pass']['wall_s'] * 1000:.1f} ms median, "
        f"{results['python -c pass']['wall_min_s'] * 1000:.1f} ms min); `importtime` sums what "
        "`python -X importtime` reports for the modules the statement imported. The machine "
        "was shared with other work: compare the rows, and the minimums, more than the medians.",
        "",
        "| statement | wall ms | wall min ms | importtime ms | importtime min ms |",
        "|---|---:|---:|---:|---:|",
    ]
    for name in CONTENDERS:
        row = results[name]
        lines.append(
            f"| `{name}` | {row['wall_s'] * 1000:.1f} | {row['wall_min_s'] * 1000:.1f} | "
            f"{row['importtime_s'] * 1000:.1f} | {row['importtime_min_s'] * 1000:.1f} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="a short smoke run")
    parser.add_argument("--rounds", type=int, default=None)
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args()
    rounds = args.rounds or (3 if args.quick else 40)
    results = run(rounds)
    table = report(results, rounds)
    print(table)
    args.output.mkdir(parents=True, exist_ok=True)
    payload = {
        "benchmark": "import_time",
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "python": sys.version.split()[0],
        "machine": platform.machine(),
        "versions": {
            name: version(name) for name in ("antifragile", "stamina", "httpx", "tenacity")
        },
        "rounds": rounds,
        "seconds": results,
        "bar": {"import antifragile": 0.15},
    }
    suffix = "-quick" if args.quick else ""
    (args.output / f"import_time{suffix}.json").write_text(json.dumps(payload, indent=2) + "\n")
    (args.output / f"import_time{suffix}.md").write_text(table)


if __name__ == "__main__":
    main()
