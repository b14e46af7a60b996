"""Whole-process latency of `p2pid --json status` against a running daemon, versus a bare
interpreter start (`python -c pass`, same interpreter). Both are launched the same way, one after
the other, so load changes on the machine hit both alike. Prints one JSON line.

    .venv/bin/python bench/bench_cli.py [--runs 40] [--warmup 3]
"""

from __future__ import annotations

import json
import sys

from common import (
    emit,
    median,
    ms,
    p2pid,
    parser,
    percentile,
    ratio,
    run,
    running_daemon,
    temp_home,
    timed,
)

TARGET_MS = 150


def main() -> None:
    arguments = parser(__doc__.splitlines()[0], runs=40, runs_help="timed runs of each command")
    arguments.add_argument("--warmup", type=int, default=3, help="untimed runs of each first")
    args = arguments.parse_args()
    baseline = [sys.executable, "-c", "pass"]
    with temp_home("cli") as home, running_daemon(home):
        command = p2pid(home, "--json", "status")
        if "peer_id" not in json.loads(run(command)):
            raise SystemExit(f"unexpected output from {command}")
        for _ in range(args.warmup):
            timed(command)
            timed(baseline)
        measured: list[float] = []
        bare: list[float] = []
        for _ in range(args.runs):
            measured.append(timed(command))
            bare.append(timed(baseline))
    emit(
        {
            "bench": "cli_status",
            "median_ms": ms(median(measured), 1),
            "p90_ms": ms(percentile(measured, 90), 1),
            "baseline": "python -c pass",
            "baseline_median_ms": ms(median(bare), 1),
            "baseline_p90_ms": ms(percentile(bare, 90), 1),
            "ratio": ratio(median(measured), median(bare)),
            "overhead_ms": ms(median(measured) - median(bare), 1),
            "target_ms": TARGET_MS,
            "runs": args.runs,
        }
    )


if __name__ == "__main__":
    main()
