"""Real `p2pid daemon` processes with temporary homes, for end-to-end tests."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from tests.cli_helpers import p2pid, p2pid_json

LOOPBACK = "/ip4/127.0.0.1/tcp/0"


def init_home(home: Path, name: str) -> dict[str, Any]:
    return dict(p2pid_json(home, "init", "--name", name))


def start_daemon(home: Path, *extra: str, prefix: Sequence[str] = ()) -> dict[str, Any]:
    """Start a detached daemon (optionally through a prefix such as `ip netns exec NS`)."""
    args = ["--json", "daemon", "--detach", *extra]
    if not prefix:
        return dict(p2pid_json(home, *args))
    result = subprocess.run(
        [*prefix, sys.executable, "-m", "p2pid", "--home", str(home), *args],
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return dict(json.loads(result.stdout))


def status(home: Path) -> dict[str, Any]:
    return dict(p2pid_json(home, "status"))


def force_kill(home: Path) -> None:
    with contextlib.suppress(Exception):
        os.kill(int(status(home)["pid"]), signal.SIGKILL)


@contextlib.contextmanager
def running_daemon(
    home: Path, name: str, *extra: str, prefix: Sequence[str] = ()
) -> Iterator[dict[str, Any]]:
    """An initialised home with a daemon on 127.0.0.1; stopped (or killed) afterwards."""
    if not (home / "p2pid.db").exists():
        init_home(home, name)
    start_daemon(home, *(extra or ("--listen", LOOPBACK, "--no-mdns")), prefix=prefix)
    try:
        yield status(home)
    finally:
        if p2pid(home, "stop", check=False).returncode not in (0, 3):
            force_kill(home)


def peer_multiaddr(node_status: dict[str, Any]) -> str:
    return f"{node_status['listen_addrs'][0]}/p2p/{node_status['peer_id']}"
