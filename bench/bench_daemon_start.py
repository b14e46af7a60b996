"""Time from launching `p2pid daemon --detach` to its return (it returns once the daemon is
ready), versus `python -c "import libp2p"` (the import alone), plus the idle daemon's RSS.

Each run starts the daemon afresh on the same home (127.0.0.1, mDNS off), reads its RSS right
after ready and again after a few status calls and a short idle, then stops it (timing the stop
too). The baseline import runs between starts, so load changes hit both alike. One untimed
warm-up start comes first. Prints one JSON line.

    .venv/bin/python bench/bench_daemon_start.py [--runs 5] [--warmup 1]
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from common import (
    emit,
    median,
    ms,
    parser,
    ratio,
    rss_kib,
    start_daemon_command,
    status,
    stop_daemon,
    temp_home,
    timed,
)

from p2pid.rpc.client import BlockingClient

TARGET_MS = 2500
STATUS_CALLS = 5
IDLE_SECONDS = 2.0


class Run:
    def __init__(self, start: float, stop: float, rss_ready_kib: int, rss_idle_kib: int) -> None:
        self.start = start
        self.stop = stop
        self.rss_ready_kib = rss_ready_kib
        self.rss_idle_kib = rss_idle_kib


def one_start(home: Path) -> Run:
    pid: int | None = None
    stopped = False
    try:
        start = timed(start_daemon_command(home))
        pid = int(status(home)["pid"])
        rss_ready = rss_kib(pid)
        with BlockingClient(home / "daemon.sock") as client:
            for _ in range(STATUS_CALLS):
                client.call("status")
        time.sleep(IDLE_SECONDS)
        rss_idle = rss_kib(pid)
        started = time.perf_counter()
        stop_daemon(home, pid)
        stopped = True
        return Run(start, time.perf_counter() - started, rss_ready, rss_idle)
    finally:
        if not stopped:
            stop_daemon(home, pid)


def mib(kib: float) -> float:
    return round(kib / 1024, 1)


def main() -> None:
    arguments = parser(__doc__.splitlines()[0], runs=5, runs_help="timed starts")
    arguments.add_argument("--warmup", type=int, default=1, help="untimed starts first")
    args = arguments.parse_args()
    baseline = [sys.executable, "-c", "import libp2p"]
    with temp_home("start") as home:
        for _ in range(args.warmup):
            one_start(home)
            timed(baseline)
        runs: list[Run] = []
        imports: list[float] = []
        for _ in range(args.runs):
            runs.append(one_start(home))
            imports.append(timed(baseline))
    starts = [run.start for run in runs]
    emit(
        {
            "bench": "daemon_start",
            "median_ms": ms(median(starts), 1),
            "max_ms": ms(max(starts), 1),
            "baseline": "python -c 'import libp2p'",
            "baseline_median_ms": ms(median(imports), 1),
            "ratio": ratio(median(starts), median(imports)),
            "target_ms": TARGET_MS,
            "stop_median_ms": ms(median([run.stop for run in runs]), 1),
            "rss_ready_mib": mib(median([run.rss_ready_kib for run in runs])),
            "rss_idle_mib": mib(median([run.rss_idle_kib for run in runs])),
            "runs": args.runs,
        }
    )


if __name__ == "__main__":
    main()
