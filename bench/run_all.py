"""Run every bench/bench_*.py as a subprocess, several times each, and summarise.

Each benchmark prints one JSON line per run; those lines are printed as they come. Then, per
benchmark, one summary line: every numeric figure is the median across the repeats (ratios
included: the median of the per-repeat ratios), other fields are kept when all repeats agree.
Exits 1 if any benchmark failed (its error is reported as a JSON line too).

    .venv/bin/python bench/run_all.py [--repeat 3] [--only cli] [--runs N]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path
from typing import Any, TypeGuard

from common import median

BENCH_DIR = Path(__file__).resolve().parent
TIMEOUT_SECONDS = 1800.0


def run_once(script: Path, extra: list[str]) -> dict[str, Any]:
    """One run of a benchmark: its JSON line, or {"bench", "error"} when it failed."""
    name = script.stem.removeprefix("bench_")
    try:
        completed = subprocess.run(
            [sys.executable, str(script), *extra],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=TIMEOUT_SECONDS,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return {"bench": name, "error": f"timed out after {TIMEOUT_SECONDS:.0f} s"}
    lines = [line for line in completed.stdout.splitlines() if line.strip()]
    if completed.returncode != 0 or len(lines) != 1:
        tail = (completed.stderr or completed.stdout).strip().splitlines()[-5:]
        return {
            "bench": name,
            "error": f"exit status {completed.returncode}, {len(lines)} stdout lines",
            "output": tail,
        }
    try:
        record: dict[str, Any] = json.loads(lines[0])
    except json.JSONDecodeError:
        return {"bench": name, "error": "stdout is not JSON", "output": lines}
    return record


def is_number(value: object) -> TypeGuard[int | float]:
    return isinstance(value, int | float) and not isinstance(value, bool)


def summarise(records: list[dict[str, Any]]) -> dict[str, Any]:
    """Median of every numeric figure across repeats; other fields if all repeats agree.

    A ratio's summary is the median of the per-repeat ratios (each measured against its own
    interleaved baseline), which need not equal the ratio of the summarised medians.
    """
    summary: dict[str, Any] = {}
    for key in records[0]:
        values = [record.get(key) for record in records]
        numbers = [value for value in values if is_number(value)]
        if all(value == values[0] for value in values):
            summary[key] = values[0]
        elif len(numbers) == len(values):
            summary[key] = round(median(numbers), 4)
    summary["repeats"] = len(records)
    summary["summary"] = "median across repeats"
    return summary


def main() -> None:
    arguments = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    arguments.add_argument("--repeat", type=int, default=3, help="runs of each benchmark")
    arguments.add_argument(
        "--only", action="append", default=[], help="run benchmarks whose name contains this"
    )
    arguments.add_argument(
        "--runs",
        type=int,
        help="passed on to every benchmark as --runs, to make them quick (what one run is "
        "differs: a process launch, a daemon start, an RPC call, a batch of pings)",
    )
    args = arguments.parse_args()
    extra = [] if args.runs is None else ["--runs", str(args.runs)]
    scripts = sorted(BENCH_DIR.glob("bench_*.py"))
    if args.only:
        scripts = [script for script in scripts if any(part in script.stem for part in args.only)]
    summaries: list[dict[str, Any]] = []
    failed = False
    for script in scripts:
        records: list[dict[str, Any]] = []
        for _ in range(args.repeat):
            record = run_once(script, extra)
            print(json.dumps(record), flush=True)
            if "error" in record:
                failed = True
            else:
                records.append(record)
        if records:
            summaries.append(summarise(records))
    for summary in summaries:
        print(json.dumps(summary), flush=True)
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
