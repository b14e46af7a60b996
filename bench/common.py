"""Shared helpers for the benchmarks: temporary homes, starting and stopping a daemon on
127.0.0.1 with mDNS off, percentiles, and the one JSON line each benchmark prints.

The benchmarks run as scripts (``.venv/bin/python bench/bench_x.py``), so this module is imported
as ``common`` from the script's own directory.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

LOOPBACK_LISTEN = "/ip4/127.0.0.1/tcp/0"
COMMAND_TIMEOUT_SECONDS = 120.0

# The console script next to the interpreter, as a user of the venv would run it.
P2PID = Path(sys.executable).parent / "p2pid"


class BenchError(Exception):
    pass


# --- statistics -----------------------------------------------------------------------------


def median(values: Sequence[float]) -> float:
    return percentile(values, 50)


def percentile(values: Sequence[float], p: float) -> float:
    """The p-th percentile (0..100), linear between the closest ranks (numpy's default)."""
    if not values:
        raise ValueError("percentile of no values")
    ordered = sorted(values)
    rank = (len(ordered) - 1) * p / 100
    low, high = math.floor(rank), math.ceil(rank)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def ms(seconds: float, digits: int = 3) -> float:
    return round(seconds * 1000, digits)


def ratio(measured: float, baseline: float) -> float:
    return round(measured / baseline, 2)


def emit(record: dict[str, Any]) -> None:
    """The benchmark's result: exactly one JSON line on stdout."""
    print(json.dumps(record), flush=True)


def parser(description: str, runs: int, runs_help: str = "timed runs") -> argparse.ArgumentParser:
    result = argparse.ArgumentParser(description=description)
    result.add_argument("--runs", type=int, default=runs, help=f"{runs_help} (default {runs})")
    return result


# --- processes ------------------------------------------------------------------------------


def run(command: Sequence[str | Path], timeout: float = COMMAND_TIMEOUT_SECONDS) -> str:
    """Run a command to completion; its stdout, or BenchError with its output when it fails."""
    completed = subprocess.run(
        [str(part) for part in command],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if completed.returncode != 0:
        raise BenchError(
            f"{' '.join(map(str, command))} exited with {completed.returncode}:\n"
            f"{completed.stdout}{completed.stderr}"
        )
    return completed.stdout


def timed(command: Sequence[str | Path]) -> float:
    """Wall-clock seconds from launching the command to its exit (stdout captured, discarded)."""
    started = time.perf_counter()
    run(command)
    return time.perf_counter() - started


def p2pid(home: Path, *arguments: str) -> list[str | Path]:
    return [P2PID, "--home", home, *arguments]


def start_daemon_command(home: Path) -> list[str | Path]:
    return p2pid(home, "daemon", "--detach", "--listen", LOOPBACK_LISTEN, "--no-mdns")


def status(home: Path) -> dict[str, Any]:
    document: dict[str, Any] = json.loads(run(p2pid(home, "--json", "status")))
    return document


def stop_daemon(home: Path, pid: int | None = None) -> None:
    """Stop the home's daemon if one runs; if it does not stop, terminate the pid we started."""
    completed = subprocess.run(
        [str(part) for part in p2pid(home, "stop")],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        timeout=COMMAND_TIMEOUT_SECONDS,
        check=False,
    )
    if completed.returncode in (0, 3):  # 3: no daemon was running
        return
    if pid is not None:
        with suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    raise BenchError(f"`p2pid stop` exited with {completed.returncode}: {completed.stderr!r}")


@contextmanager
def temp_home(name: str = "bench") -> Iterator[Path]:
    """An initialised home (key-file vault) in a temporary directory, deleted afterwards."""
    root = Path(tempfile.mkdtemp(prefix=f"p2pid-{name}-"))
    try:
        home = root / "home"
        run(p2pid(home, "init", "--name", name))
        yield home
    finally:
        shutil.rmtree(root, ignore_errors=True)


@contextmanager
def running_daemon(home: Path) -> Iterator[dict[str, Any]]:
    """A detached daemon on 127.0.0.1 (mDNS off) for the block; yields its status."""
    pid: int | None = None
    try:
        run(start_daemon_command(home))
        document = status(home)
        pid = int(document["pid"])
        yield document
    finally:
        stop_daemon(home, pid)


def rss_kib(pid: int) -> int:
    """Resident set size of a process, from /proc/PID/status (Linux)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise BenchError(f"no VmRSS for pid {pid}")
