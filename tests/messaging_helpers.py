"""Helpers for the messaging end-to-end tests: fixed ports, kill -9, polling with a deadline,
paging through a conversation, and reading a `p2pid watch` subprocess line by line."""

from __future__ import annotations

import os
import queue
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from p2pid.home import Home
from p2pid.launcher import daemon_is_running
from p2pid.rpc.client import BlockingClient
from tests.cli_helpers import p2pid_json
from tests.daemons import status

T = TypeVar("T")

POLL_INTERVAL = 0.1


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def fixed_listen(port: int) -> tuple[str, ...]:
    """Daemon arguments for a fixed loopback address and no mDNS."""
    return ("--listen", f"/ip4/127.0.0.1/tcp/{port}", "--no-mdns")


def client(home: Path, timeout: float = 30.0) -> BlockingClient:
    return BlockingClient(home / "daemon.sock", timeout=timeout)


def call(home: Path, method: str, **params: Any) -> Any:
    with client(home) as rpc:
        return rpc.call(method, **params)


def kill_9(home: Path, timeout: float = 20.0) -> None:
    """SIGKILL the home's daemon and wait until it has released the home (its lock)."""
    os.kill(int(status(home)["pid"]), signal.SIGKILL)
    wait_until(
        lambda: not daemon_is_running(Home(home)),
        timeout,
        f"the killed daemon of {home} still holds its lock",
    )


def become_contacts(inviter: Path, joiner: Path) -> dict[str, Any]:
    """The joiner joins the inviter's invite: each is the other's contact."""
    return dict(p2pid_json(joiner, "join", p2pid_json(inviter, "invite")["code"]))


def wait_until(
    condition: Callable[[], T | None],
    timeout: float,
    what: str,
    interval: float = POLL_INTERVAL,
) -> T:
    """Poll a real condition until it returns something truthy; AssertionError at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s: {what}")
        time.sleep(interval)


def wait_for_event(
    rpc: BlockingClient, matches: Callable[[dict[str, Any]], bool], timeout: float, what: str
) -> dict[str, Any]:
    """The next event (of a subscribed client) that matches, within the timeout."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        event = rpc.next_event()
        if matches(event):
            return event
    raise AssertionError(f"no event within {timeout} s: {what}")


def conversation_history(
    home: Path, contact: str, page_size: int = 500
) -> tuple[list[dict[str, Any]], int]:
    """Every message of the conversation, oldest first, paged back with `before` cursors (not
    marking anything read); and how many pages it took."""
    pages: list[list[dict[str, Any]]] = []
    before: str | None = None
    with client(home) as rpc:
        while True:
            page = rpc.call(
                "messages", contact=contact, limit=page_size, before=before, mark_read=False
            )
            assert len(page["messages"]) <= page_size
            pages.append(page["messages"])
            before = page["before"]
            if before is None:
                break
            assert len(page["messages"]) == page_size, "a page before the first is full"
    return [message for page in reversed(pages) for message in page], len(pages)


class LineReader:
    """The stdout of a subprocess, read by a thread, so a test can wait for a line."""

    def __init__(self, process: subprocess.Popen[str]) -> None:
        assert process.stdout is not None
        self.process = process
        self.lines: list[str] = []
        self._queue: queue.Queue[str | None] = queue.Queue()
        self._thread = threading.Thread(target=self._pump, args=(process.stdout,), daemon=True)
        self._thread.start()

    def _pump(self, stream: Any) -> None:
        for line in stream:
            self._queue.put(line.rstrip("\n"))
        self._queue.put(None)

    def wait_for(self, pattern: str, timeout: float) -> re.Match[str] | None:
        """The first line from here on that `pattern` fully matches, or None at the timeout
        (lines read past are kept in `lines`)."""
        compiled = re.compile(pattern)
        deadline = time.monotonic() + timeout
        while (remaining := deadline - time.monotonic()) > 0:
            try:
                line = self._queue.get(timeout=remaining)
            except queue.Empty:
                return None
            if line is None:
                raise AssertionError(
                    f"the process exited ({self.process.poll()}); it printed: {self.lines}"
                )
            self.lines.append(line)
            match = compiled.fullmatch(line)
            if match:
                return match
        return None

    def close(self) -> None:
        """Stop the process (if still running) and the reading thread."""
        if self.process.poll() is None:
            self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self._thread.join(timeout=10)
        if self.process.stdout is not None:
            self.process.stdout.close()


def start_watch(home: Path) -> LineReader:
    """`p2pid --home HOME watch`, human output, stdout piped."""
    env = {k: v for k, v in os.environ.items() if k != "P2PID_HOME"}
    process = subprocess.Popen(
        [sys.executable, "-m", "p2pid", "--home", str(home), "watch"],
        stdout=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
        env=env,
    )
    return LineReader(process)
