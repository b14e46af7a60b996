"""Magic Wormhole's fixed cost for one code exchange on 127.0.0.1, as a baseline for contact join.
Prints one JSON line: the figures, or {"skipped": "reason"} when no wormhole venv is given.

A mailbox server (magic-wormhole-mailbox-server) runs on 127.0.0.1 for the benchmark. Measured:

- cli: `wormhole --relay-url ws://127.0.0.1:PORT/v1 send --text hi --code N-bench-code` and
  `wormhole ... receive N-bench-code` launched together, timed until both have exited (as a user
  runs them: two interpreter starts included);
- launch: `wormhole --version`, the same interpreter start and CLI import without an exchange,
  timed after each cli run; "net" is the cli time minus that run's launch time;
- api: the same exchange in one process through the Python API (`wormhole.create`, set_code,
  one message each way, so both sides hold the PAKE key and the other's message), no process
  start: the figure to set against p2pid's `join` RPC.

Magic Wormhole goes into a throwaway venv, never the project's .venv:

    python3 -m venv /tmp/wormhole-venv
    /tmp/wormhole-venv/bin/pip install magic-wormhole magic-wormhole-mailbox-server
    .venv/bin/python bench/wormhole_baseline.py --venv /tmp/wormhole-venv [--runs 10]

`--venv` defaults to $P2PID_WORMHOLE_VENV. This script only uses the standard library; its
`--api-worker` mode runs under the wormhole venv's interpreter.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

APPID = "lothar.com/wormhole/text-or-file-xfer"  # what `wormhole send` uses for text
SERVER_START_SECONDS = 30.0
EXCHANGE_TIMEOUT_SECONDS = 60.0
CODE_WORDS = "bench-code"


def emit(record: dict[str, Any]) -> None:
    print(json.dumps(record), flush=True)


def milliseconds(seconds: float) -> float:
    return round(seconds * 1000, 1)


def p90(values: list[float]) -> float:
    return statistics.quantiles(values, n=10, method="inclusive")[-1]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@contextmanager
def mailbox_server(venv: Path) -> Iterator[str]:
    """A mailbox server on 127.0.0.1 for the block; yields its relay URL."""
    workdir = Path(tempfile.mkdtemp(prefix="p2pid-wormhole-"))
    port = free_port()
    plugin = [
        "wormhole-mailbox",
        f"--port=tcp:{port}:interface=127.0.0.1",
        f"--channel-db={workdir / 'channel.sqlite'}",
    ]
    try:
        with twist_server(venv, plugin, port, "the mailbox server", workdir):
            yield f"ws://127.0.0.1:{port}/v1"
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


@contextmanager
def transit_relay(venv: Path) -> Iterator[str]:
    """magic-wormhole-transit-relay on 127.0.0.1 for the block; yields its `tcp:host:port`."""
    workdir = Path(tempfile.mkdtemp(prefix="p2pid-transit-"))
    port = free_port()
    plugin = ["transitrelay", f"--port=tcp:{port}:interface=127.0.0.1"]
    try:
        with twist_server(venv, plugin, port, "the transit relay", workdir):
            yield f"tcp:127.0.0.1:{port}"
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


@contextmanager
def twist_server(
    venv: Path, plugin: list[str], port: int, what: str, workdir: Path
) -> Iterator[None]:
    """`twist PLUGIN...` (a Twisted server) for the block, from when it listens on 127.0.0.1
    `port`; its output goes to a log in `workdir`."""
    with (workdir / f"{plugin[0]}.log").open("wb") as log:
        server = subprocess.Popen(
            [str(venv / "bin" / "twist"), *plugin],
            cwd=workdir,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            deadline = time.monotonic() + SERVER_START_SECONDS
            while True:
                if server.poll() is not None:
                    raise RuntimeError(f"{what} exited with {server.returncode}")
                with suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
                    break
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{what} did not start listening")
                time.sleep(0.1)
            yield
        finally:
            server.terminate()
            try:
                server.wait(timeout=10)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()


class Wormhole:
    """A mailbox server and an API worker, both on 127.0.0.1; one exchange per call, each
    with a fresh code (nameplate) so none waits on the last one's release."""

    def __init__(self, venv: Path, relay_url: str, worker: subprocess.Popen[str]) -> None:
        self.wormhole = venv / "bin" / "wormhole"
        self.relay_url = relay_url
        self._worker = worker
        self._nameplate = 0

    def _code(self) -> str:
        self._nameplate += 1
        return f"{self._nameplate}-{CODE_WORDS}"

    def cli_exchange(self) -> float:
        """Seconds from launching `send` and `receive` to both having exited successfully."""
        code = self._code()
        common = [str(self.wormhole), "--relay-url", self.relay_url]
        started = time.perf_counter()
        sender = subprocess.Popen(
            [*common, "send", "--hide-progress", "--no-qr", "--text", "hi", "--code", code],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        receiver = subprocess.run(
            [*common, "receive", "--hide-progress", code],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=EXCHANGE_TIMEOUT_SECONDS,
            check=False,
        )
        sender_output, _ = sender.communicate(timeout=EXCHANGE_TIMEOUT_SECONDS)
        elapsed = time.perf_counter() - started
        if sender.returncode != 0 or receiver.returncode != 0 or receiver.stdout.strip() != b"hi":
            raise RuntimeError(
                f"wormhole exchange failed: send {sender.returncode} {sender_output[-300:]!r}, "
                f"receive {receiver.returncode} {(receiver.stdout + receiver.stderr)[-300:]!r}"
            )
        return elapsed

    def launch(self) -> float:
        """Seconds to run `wormhole --version`: interpreter start and CLI import."""
        started = time.perf_counter()
        subprocess.run(
            [str(self.wormhole), "--version"],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=EXCHANGE_TIMEOUT_SECONDS,
            check=True,
        )
        return time.perf_counter() - started

    def api_exchange(self) -> float:
        """Seconds for one in-process exchange, as the worker measured it."""
        assert self._worker.stdin is not None and self._worker.stdout is not None
        self._worker.stdin.write(self._code() + "\n")
        self._worker.stdin.flush()
        line = self._worker.stdout.readline()
        if not line:
            raise RuntimeError(f"the API worker exited with {self._worker.wait()}")
        seconds: float = json.loads(line)
        return seconds


def unavailable(venv: str | None) -> str | None:
    """Why the wormhole baseline cannot run with this venv, or None when it can."""
    if not venv:
        return "no wormhole venv given (--venv, $P2PID_WORMHOLE_VENV)"
    missing = [n for n in ("python", "wormhole", "twist") if not (Path(venv) / "bin" / n).exists()]
    if missing:
        return (
            f"{venv} lacks bin/{', bin/'.join(missing)} "
            "(pip install magic-wormhole magic-wormhole-mailbox-server into it)"
        )
    return None


@contextmanager
def open_wormhole(venv: Path) -> Iterator[Wormhole]:
    """The mailbox server and the API worker for the block, stopped afterwards."""
    with mailbox_server(venv) as relay_url, tempfile.TemporaryFile("w+") as errors:
        worker = subprocess.Popen(
            [str(venv / "bin" / "python"), __file__, "--api-worker", relay_url],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=errors,
            text=True,
        )
        try:
            yield Wormhole(venv, relay_url, worker)
        except RuntimeError:
            errors.seek(0)
            sys.stderr.write(errors.read()[-2000:])
            raise
        finally:
            assert worker.stdin is not None
            with suppress(BrokenPipeError):
                worker.stdin.close()
            try:
                worker.wait(timeout=10)
            except subprocess.TimeoutExpired:
                worker.kill()
                worker.wait()


def version(venv: Path) -> str:
    return subprocess.run(
        [str(venv / "bin" / "wormhole"), "--version"], capture_output=True, text=True, check=True
    ).stdout.strip()


def api_worker(relay_url: str) -> None:
    """Runs under the wormhole venv: for each code read from stdin, one exchange through the
    Python API; prints its seconds as a line. Ends at end of input."""
    import wormhole  # type: ignore[import-not-found]
    from twisted.internet import defer, task, threads  # type: ignore[import-not-found]

    async def exchange(reactor: Any, code: str) -> float:
        started = time.perf_counter()
        sender = wormhole.create(APPID, relay_url, reactor)
        receiver = wormhole.create(APPID, relay_url, reactor)
        sender.set_code(code)
        receiver.set_code(code)
        sender.send_message(b"hi")
        if await receiver.get_message() != b"hi":
            raise RuntimeError("wrong message")
        receiver.send_message(b"ok")
        if await sender.get_message() != b"ok":
            raise RuntimeError("wrong answer")
        elapsed = time.perf_counter() - started
        await sender.close()
        await receiver.close()
        return elapsed

    async def serve(reactor: Any) -> None:
        while code := (await threads.deferToThread(sys.stdin.readline)).strip():
            print(json.dumps(await exchange(reactor, code)), flush=True)

    task.react(lambda reactor: defer.ensureDeferred(serve(reactor)))


def bench(venv: Path, runs: int) -> dict[str, Any]:
    cli: list[float] = []
    launches: list[float] = []
    api: list[float] = []
    with open_wormhole(venv) as wormhole:
        wormhole.cli_exchange()  # warm-up
        wormhole.launch()
        wormhole.api_exchange()
        for _ in range(runs):
            cli.append(wormhole.cli_exchange())
            launches.append(wormhole.launch())
            api.append(wormhole.api_exchange())
    return summary(cli, launches, api) | {"version": version(venv), "runs": runs}


def summary(cli: list[float], launches: list[float], api: list[float]) -> dict[str, Any]:
    """The figures (milliseconds) from paired cli/launch runs and api runs."""
    net = [total - start for total, start in zip(cli, launches, strict=True)]
    return {
        "bench": "wormhole_baseline",
        "median_ms": milliseconds(statistics.median(cli)),
        "p90_ms": milliseconds(p90(cli)),
        "launch_median_ms": milliseconds(statistics.median(launches)),
        "net_median_ms": milliseconds(statistics.median(net)),
        "api_median_ms": milliseconds(statistics.median(api)),
        "api_p90_ms": milliseconds(p90(api)),
    }


def main() -> None:
    arguments = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    arguments.add_argument("--runs", type=int, default=10, help="timed exchanges (default 10)")
    arguments.add_argument(
        "--venv",
        default=os.environ.get("P2PID_WORMHOLE_VENV"),
        help="venv with magic-wormhole and magic-wormhole-mailbox-server "
        "(default $P2PID_WORMHOLE_VENV)",
    )
    arguments.add_argument("--api-worker", metavar="RELAY_URL", help=argparse.SUPPRESS)
    args = arguments.parse_args()
    if args.api_worker:
        api_worker(args.api_worker)
        return
    reason = unavailable(args.venv)
    if reason is not None:
        emit({"bench": "wormhole_baseline", "skipped": reason})
        return
    emit(bench(Path(args.venv), args.runs))


if __name__ == "__main__":
    main()
