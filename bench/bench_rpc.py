"""JSON-RPC round trip of `version` through BlockingClient on one connection to a running
daemon, versus a raw Unix-socket echo round trip of the same request line (an echo server
thread in this process, read the same way: sendall, then readline). The difference is the
JSON-RPC encoding and decoding plus the daemon's trio server. Calls alternate between the two in
batches so load changes hit both alike. Prints one JSON line.

    .venv/bin/python bench/bench_rpc.py [--runs 4000] [--warmup 500]
"""

from __future__ import annotations

import socket
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from common import emit, median, ms, parser, percentile, ratio, running_daemon, temp_home

from p2pid.rpc.client import BlockingClient
from p2pid.rpc.protocol import request

TARGET_MS = 1
BATCH = 100

Call = Callable[[], object]


def serve_echo(listener: socket.socket) -> None:
    connection, _ = listener.accept()
    with connection, connection.makefile("rb") as reader:
        while line := reader.readline():
            connection.sendall(line)


@contextmanager
def echo_round_trip(payload: bytes) -> Iterator[Call]:
    """A blocking client of an echo server thread: one call sends ``payload`` and reads it back."""
    with tempfile.TemporaryDirectory(prefix="p2pid-echo-") as directory:
        path = str(Path(directory) / "echo.sock")
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        listener.bind(path)
        listener.listen(1)
        server = threading.Thread(target=serve_echo, args=(listener,), daemon=True)
        server.start()
        client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        client.connect(path)
        reader = client.makefile("rb")

        def call() -> bytes:
            client.sendall(payload)
            return reader.readline()

        try:
            yield call
        finally:
            reader.close()
            client.close()  # the echo thread sees end of file and returns
            server.join(timeout=5)
            listener.close()


def timed_calls(call: Call, count: int, into: list[int]) -> None:
    for _ in range(count):
        started = time.perf_counter_ns()
        call()
        into.append(time.perf_counter_ns() - started)


def alternate(rpc: Call, echo: Call, count: int) -> tuple[list[int], list[int]]:
    rpc_times: list[int] = []
    echo_times: list[int] = []
    for done in range(0, count, BATCH):
        timed_calls(rpc, min(BATCH, count - done), rpc_times)
        timed_calls(echo, min(BATCH, count - done), echo_times)
    return rpc_times, echo_times


def main() -> None:
    arguments = parser(__doc__.splitlines()[0], runs=4000, runs_help="timed calls of each")
    arguments.add_argument("--warmup", type=int, default=500, help="untimed calls of each first")
    args = arguments.parse_args()
    with (
        temp_home("rpc") as home,
        running_daemon(home),
        BlockingClient(home / "daemon.sock") as client,
        echo_round_trip(request(1, "version", None)) as echo,
    ):

        def rpc() -> object:
            return client.call("version")

        alternate(rpc, echo, args.warmup)
        rpc_ns, echo_ns = alternate(rpc, echo, args.runs)
    rpc_s = [value / 1e9 for value in rpc_ns]
    echo_s = [value / 1e9 for value in echo_ns]
    emit(
        {
            "bench": "rpc_version",
            "median_ms": ms(median(rpc_s), 4),
            "p99_ms": ms(percentile(rpc_s, 99), 4),
            "baseline": "raw Unix-socket echo (thread)",
            "baseline_median_ms": ms(median(echo_s), 4),
            "baseline_p99_ms": ms(percentile(echo_s, 99), 4),
            "ratio": ratio(median(rpc_s), median(echo_s)),
            "target_ms": TARGET_MS,
            "runs": args.runs,
        }
    )


if __name__ == "__main__":
    main()
