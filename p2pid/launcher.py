"""Starting a detached daemon and stopping one, from a client process (no trio, no libp2p)."""

from __future__ import annotations

import fcntl
import os
import select
import subprocess
import sys
import time
from collections.abc import Sequence

from p2pid.home import Home
from p2pid.rpc.client import BlockingClient
from p2pid.rpc.protocol import ErrorCode, RpcError

START_TIMEOUT_SECONDS = 60.0
STOP_TIMEOUT_SECONDS = 20.0


class LaunchError(Exception):
    pass


def daemon_command(
    home: Home, listen: Sequence[str], interfaces: Sequence[str], no_mdns: bool, ready_fd: int
) -> list[str]:
    command = [
        sys.executable,
        "-m",
        "p2pid.daemon",
        "--home",
        str(home.root),
        "--ready-fd",
        str(ready_fd),
    ]
    for addr in listen:
        command += ["--listen", addr]
    for interface in interfaces:
        command += ["--mdns-interface", interface]
    if no_mdns:
        command.append("--no-mdns")
    return command


def _passphrase_to_hand_over(home: Home) -> str | None:
    """Ask in this terminal when the child could not: it has no terminal and no passphrase."""
    if home.key_file.exists() or os.environ.get("P2PID_PASSPHRASE") or not sys.stdin.isatty():
        return None
    from getpass import getpass

    return getpass("p2pid passphrase: ")


def start_detached(
    home: Home,
    listen: Sequence[str] = (),
    interfaces: Sequence[str] = (),
    no_mdns: bool = False,
    passphrase: str | None = None,
) -> str:
    """Start `python -m p2pid.daemon` in its own session; return its PeerId once it is ready.
    A `passphrase` given (the TUI asks for it itself) is handed to the daemon on its stdin."""
    if not home.is_initialised():
        raise LaunchError(f"{home.root} holds no identity: run `p2pid init --name NAME` first")
    if passphrase is None:
        passphrase = _passphrase_to_hand_over(home)
    ready_read, ready_write = os.pipe()
    command = daemon_command(home, listen, interfaces, no_mdns, ready_write)
    if passphrase is not None:
        command.append("--passphrase-stdin")
    with open(home.log, "ab") as log:
        process = subprocess.Popen(
            command,
            stdin=subprocess.PIPE if passphrase is not None else subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            pass_fds=(ready_write,),
            start_new_session=True,
        )
    os.close(ready_write)
    if passphrase is not None and process.stdin is not None:
        process.stdin.write(passphrase.encode() + b"\n")
        process.stdin.close()
    with os.fdopen(ready_read, "r") as ready:
        readable, _, _ = select.select([ready], [], [], START_TIMEOUT_SECONDS)
        report = ready.readline().strip() if readable else ""
    if report.startswith("ready "):
        return report.removeprefix("ready ")
    if not readable:
        process.kill()
        raise LaunchError(
            f"the daemon did not start within {START_TIMEOUT_SECONDS:.0f} s (see {home.log})"
        )
    process.wait()
    reason = report.removeprefix("error ") or f"it exited with status {process.returncode}"
    raise LaunchError(f"the daemon did not start: {reason} (see {home.log})")


def daemon_is_running(home: Home) -> bool:
    """True while some process holds the home's lock."""
    try:
        with open(home.lock) as lock_file:
            try:
                fcntl.flock(lock_file, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:
                return True
            return False
    except FileNotFoundError:
        return False


def stop_daemon(home: Home) -> None:
    """Ask the daemon to stop and wait until it has released the home."""
    try:
        with BlockingClient(home.socket) as client:
            client.call("stop")
    except RpcError as error:
        if error.code != ErrorCode.CONNECTION_LOST:
            raise
    deadline = time.monotonic() + STOP_TIMEOUT_SECONDS
    while daemon_is_running(home):
        if time.monotonic() > deadline:
            raise LaunchError(f"the daemon did not stop within {STOP_TIMEOUT_SECONDS:.0f} s")
        time.sleep(0.02)
