"""Files end to end through real daemons (subprocesses on 127.0.0.1, driven by the CLI with
--json, events read with the RPC client): the receiver or the sender killed with SIGKILL partway
through (the download resumes, from its durable checkpoint, once both run again), a cancel from
either side, and nothing reported complete before the whole file, with the right hash, is there.

Loopback moves a file faster than a test can act on it, so while a test needs a transfer in
flight the receiving daemon is slowed down: paused (SIGSTOP) 95 % of the time, as on a machine
far busier than this one.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from p2pid.crypto.file_chunks import hash_file
from p2pid.home import Home
from p2pid.launcher import daemon_is_running
from p2pid.rpc.client import BlockingClient
from p2pid.store import files as file_queries
from p2pid.store.db import open_database
from tests.cli_helpers import p2pid, p2pid_json
from tests.daemons import force_kill, init_home, start_daemon, status
from tests.messaging_helpers import (
    become_contacts,
    call,
    client,
    fixed_listen,
    free_port,
    wait_until,
)

MIB = 1024 * 1024
SIZE = 48 * MIB + 12345  # 49 chunks of 1 MiB, the last one short
# A file the kill and cancel tests cut partway: more than what the kernel holds for a connection on
# loopback (an autotuned receive buffer grows to 32 MiB here, plus 4 MiB of send buffer), so
# that what the sender wrote before it stopped can never be the whole file.
CUT_SIZE = 112 * MIB + 12345
TIMEOUT = 30.0
EXIT_FAILED = 1
CONFLICT = 1005


# -- two daemons that are each other's contacts, shared by the tests ---------------------------


@dataclass
class Daemon:
    home: Path
    name: str
    port: int  # fixed: the other daemon finds a restarted one where it was
    peer_id: str = ""
    pid: int = 0

    def start(self) -> None:
        start_daemon(self.home, *fixed_listen(self.port))
        self.pid = int(status(self.home)["pid"])

    def kill_9(self) -> None:
        """SIGKILL (a paused process too), then wait until the home's lock is free."""
        os.kill(self.pid, signal.SIGKILL)
        wait_until(lambda: not daemon_is_running(Home(self.home)), TIMEOUT, f"{self.name} exits")


@dataclass
class Pair:
    alice: Daemon
    bob: Daemon
    root: Path


@pytest.fixture(scope="module")
def daemons(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pair]:
    root = tmp_path_factory.mktemp("files-e2e")
    alice = Daemon(root / "alice", "Alice", free_port())
    bob = Daemon(root / "bob", "Bob", free_port())

    def launch(daemon: Daemon) -> None:
        daemon.peer_id = init_home(daemon.home, daemon.name)["peer_id"]
        daemon.start()

    try:
        with ThreadPoolExecutor(2) as pool:  # a daemon takes seconds to start: both at once
            list(pool.map(launch, (alice, bob)))
        become_contacts(alice.home, bob.home)
        settings = p2pid_json(bob.home, "file", "settings", "--auto-accept", "none")
        assert settings["auto_accept"] == "none"
        yield Pair(alice, bob, root)
    finally:
        for daemon in (alice, bob):
            if p2pid(daemon.home, "stop", check=False).returncode not in (0, 3):
                force_kill(daemon.home)


@pytest.fixture
def pair(daemons: Pair) -> Iterator[Pair]:
    """Both daemons running (a failed test may have left one killed or paused)."""
    for daemon in (daemons.alice, daemons.bob):
        if not daemon_is_running(Home(daemon.home)):
            daemon.start()
    yield daemons
    for daemon in (daemons.alice, daemons.bob):
        with contextlib.suppress(ProcessLookupError):
            os.kill(daemon.pid, signal.SIGCONT)


# -- slowing a daemon down ---------------------------------------------------------------------


@contextlib.contextmanager
def throttled(
    daemon: Daemon, run: float = 0.005, pause: float = 0.095, *, end_stopped: bool = False
) -> Iterator[None]:
    """Let the daemon run `run` seconds out of every `run + pause`; stopped at the end if
    `end_stopped` (the caller continues it).

    A test that must act before a transfer ends throttles the sender, not the receiver: a
    stopped receiver's kernel still takes in tens of MiB, which it reads once it runs, even
    after the sender is gone. Under load this thread can oversleep `run`, so the throttle only
    slows things down; what bounds a transfer is stopping or killing the sender."""
    done = threading.Event()

    def cycle() -> None:
        with contextlib.suppress(ProcessLookupError):
            while not done.is_set():
                os.kill(daemon.pid, signal.SIGSTOP)
                done.wait(pause)
                os.kill(daemon.pid, signal.SIGCONT)
                done.wait(run)

    thread = threading.Thread(target=cycle, daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join(10)
        with contextlib.suppress(ProcessLookupError):
            os.kill(daemon.pid, signal.SIGSTOP if end_stopped else signal.SIGCONT)


@contextlib.contextmanager
def paused(daemon: Daemon) -> Iterator[None]:
    os.kill(daemon.pid, signal.SIGSTOP)
    try:
        yield
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(daemon.pid, signal.SIGCONT)


# -- events ------------------------------------------------------------------------------------


@contextlib.contextmanager
def subscribed(home: Path) -> Iterator[BlockingClient]:
    with client(home, timeout=TIMEOUT) as rpc:
        rpc.call("subscribe")
        yield rpc


def next_event(
    rpc: BlockingClient, matches: Callable[[dict[str, Any]], bool], what: str
) -> dict[str, Any]:
    deadline = time.monotonic() + TIMEOUT
    while time.monotonic() < deadline:
        event = rpc.next_event()
        if matches(event):
            return event
    raise AssertionError(f"no event within {TIMEOUT} s: {what}")


def progress_past(rpc: BlockingClient, transfer_id: str, at_least: int) -> int:
    """The bytes done of the first progress event of the transfer at `at_least` or beyond."""
    event = next_event(
        rpc,
        lambda e: (
            e.get("type") == "file.progress"
            and e["transfer_id"] == transfer_id
            and e["bytes_done"] >= at_least
        ),
        f"{transfer_id[:8]} past {at_least} bytes",
    )
    return int(event["bytes_done"])


def state_change(rpc: BlockingClient, transfer_id: str, *states: str) -> dict[str, Any]:
    """The transfer's next state change (to one of `states`, if given)."""
    event = next_event(
        rpc,
        lambda e: (
            e.get("type") == "file.state"
            and e["transfer"]["transfer_id"] == transfer_id
            and (not states or e["transfer"]["state"] in states)
        ),
        f"{transfer_id[:8]} in state {states}",
    )
    return dict(event["transfer"])


def follow(rpc: BlockingClient, transfer_id: str) -> tuple[list[int], dict[str, Any]]:
    """The bytes done of every progress event, until the transfer ends; and its final view."""
    progress: list[int] = []
    while True:
        event = next_event(
            rpc,
            lambda e: (
                (e.get("type") == "file.progress" and e["transfer_id"] == transfer_id)
                or (e.get("type") == "file.state" and e["transfer"]["transfer_id"] == transfer_id)
            ),
            f"{transfer_id[:8]} ends",
        )
        if event["type"] == "file.progress":
            progress.append(event["bytes_done"])
        elif event["transfer"]["state"] in ("complete", "failed", "cancelled"):
            return progress, dict(event["transfer"])


# -- files and transfers -----------------------------------------------------------------------


def make_file(pair: Pair, name: str, size: int = SIZE) -> Path:
    path = pair.root / "outbox" / name
    path.parent.mkdir(exist_ok=True)
    path.write_bytes(os.urandom(size))
    return path


def make_inbox(pair: Pair, name: str) -> Path:
    inbox = pair.root / "inboxes" / name
    inbox.mkdir(parents=True)
    return inbox


def digest(path: Path) -> str:
    """The content hash p2pid computes (1 MiB chunks, the daemon's)."""
    return hash_file(path)[0].hex()


def part_files(inbox: Path) -> list[str]:
    return sorted(path.name for path in inbox.glob(".*.p2pid-part"))


def offer_to_bob(pair: Pair, source: Path) -> str:
    """Alice offers `source` to Bob; the transfer id, once Bob has the offer."""
    sent = p2pid_json(pair.alice.home, "file", "send", "Bob", str(source))
    size = source.stat().st_size
    assert (sent["direction"], sent["state"], sent["size"]) == ("out", "sending", size)
    transfer_id = str(sent["transfer_id"])

    def offered() -> dict[str, Any] | None:
        listing = call(pair.bob.home, "files")
        return next((t for t in listing if t["transfer_id"] == transfer_id), None)

    assert wait_until(offered, TIMEOUT, "Bob gets the offer")["state"] == "offered"
    return transfer_id


def accept(pair: Pair, transfer_id: str, inbox: Path) -> None:
    view = p2pid_json(pair.bob.home, "file", "accept", transfer_id, "--to", str(inbox), "--no-wait")
    assert (view["state"], view["folder"]) == ("downloading", str(inbox))


def cli_json(home: Path, *args: str) -> tuple[int, Any]:
    """`p2pid --json ARGS`: the exit code and the document printed."""
    result = p2pid(home, "--json", *args, check=False)
    return result.returncode, json.loads(result.stdout)


def durable_bytes(home: Path, transfer_id: str) -> int:
    """The bytes of the transfer that the store records as durable (the last checkpoint)."""
    conn = open_database(Home(home).database, Home(home).key_file.read_bytes())
    try:
        row = file_queries.get_transfer(conn, bytes.fromhex(transfer_id))
        assert row is not None
        return row.bytes_done
    finally:
        conn.close()


# -- kill -9 and restart -----------------------------------------------------------------------


def test_receiver_killed_partway_resumes_from_its_checkpoint(pair: Pair) -> None:
    source = make_file(pair, "receiver killed.bin", CUT_SIZE)
    inbox = make_inbox(pair, "receiver-killed")
    destination = inbox / source.name
    transfer_id = offer_to_bob(pair, source)

    with subscribed(pair.bob.home) as events:
        with throttled(pair.alice, end_stopped=True):
            accept(pair, transfer_id, inbox)
            progress_past(events, transfer_id, 1)
        # Alice is stopped: Bob takes in what she wrote, no more. He checkpoints (fdatasync,
        # then the store) every second.
        with paused(pair.alice):
            wait_until(
                lambda: durable_bytes(pair.bob.home, transfer_id) > 0, TIMEOUT, "a checkpoint"
            )
            pair.bob.kill_9()
    assert not destination.exists()
    assert part_files(inbox) == [f".{source.name}.{transfer_id[:12]}.p2pid-part"]
    checkpoint = durable_bytes(pair.bob.home, transfer_id)
    assert 0 < checkpoint < CUT_SIZE

    with paused(pair.alice):  # Bob may resume but not move on yet: see where he starts from
        pair.bob.start()
        restarted = call(pair.bob.home, "file.show", transfer=transfer_id)
        assert restarted["bytes_done"] == checkpoint  # from the checkpoint, not from 0
        assert restarted["state"] in ("downloading", "waiting")  # Alice does not answer yet
        events = client(pair.bob.home, timeout=TIMEOUT)
        events.call("subscribe")
    with events:
        progress, final = follow(events, transfer_id)  # resumed by itself: no `file accept`

    assert final["state"] == "complete", final
    assert progress and progress == sorted(progress) and progress[0] > checkpoint, progress
    assert final["path"] == str(destination)
    assert destination.stat().st_size == CUT_SIZE
    assert digest(destination) == digest(source) == final["content_hash"]
    assert part_files(inbox) == []
    shown = p2pid_json(pair.bob.home, "file", "show", transfer_id)
    assert (shown["state"], shown["bytes_done"], shown["error"]) == ("complete", CUT_SIZE, "")


def test_sender_killed_partway_bob_waits_then_resumes(pair: Pair) -> None:
    source = make_file(pair, "sender killed.bin", CUT_SIZE)
    inbox = make_inbox(pair, "sender-killed")
    destination = inbox / source.name
    transfer_id = offer_to_bob(pair, source)

    with subscribed(pair.bob.home) as events:
        with throttled(pair.alice):
            accept(pair, transfer_id, inbox)
            killed_at = progress_past(events, transfer_id, 1)
            pair.alice.kill_9()
        waiting = state_change(events, transfer_id, "waiting", "complete", "failed")
        assert waiting["state"] == "waiting", waiting
        assert pair.alice.peer_id[:12] in waiting["error"]  # why: Alice went away
        shown = p2pid_json(pair.bob.home, "file", "show", transfer_id)
        assert (shown["state"], shown["error"]) == ("waiting", waiting["error"])
        held = shown["bytes_done"]
        assert killed_at <= held < CUT_SIZE
        assert not destination.exists()
        assert len(part_files(inbox)) == 1

        # Alice greets her contacts when she starts: that connection resumes the download
        # (long before the 30 s retry).
        pair.alice.start()
        progress, final = follow(events, transfer_id)

    assert final["state"] == "complete", final
    assert progress and min(progress) >= held, progress
    assert digest(destination) == digest(source) == final["content_hash"]
    assert part_files(inbox) == []

    def delivered() -> dict[str, Any] | None:
        view = call(pair.alice.home, "file.show", transfer=transfer_id)
        return view if view["state"] == "complete" else None

    assert wait_until(delivered, TIMEOUT, "Alice learns Bob has it")["delivered"] == 1


# -- cancelling --------------------------------------------------------------------------------


def test_receiver_cancels_mid_transfer(pair: Pair) -> None:
    source = make_file(pair, "receiver cancels.bin", CUT_SIZE)
    inbox = make_inbox(pair, "receiver-cancels")
    transfer_id = offer_to_bob(pair, source)

    with subscribed(pair.alice.home) as alice_events, subscribed(pair.bob.home) as bob_events:
        with throttled(pair.alice):
            accept(pair, transfer_id, inbox)
            progress_past(bob_events, transfer_id, 1)
            assert len(part_files(inbox)) == 1
            code, cancelled = cli_json(pair.bob.home, "file", "cancel", transfer_id[:8])
        assert code == 0
        assert (cancelled["state"], cancelled["error"]) == ("cancelled", "cancelled here")
        assert list(inbox.iterdir()) == []  # the partial file is gone when the command returns
        notice = state_change(alice_events, transfer_id)
        assert (notice["direction"], notice["state"], notice["error"]) == (
            "out",
            "cancelled",
            "cancelled by the recipient",
        )
        assert notice["delivered"] == 0

    for home, message in ((pair.bob.home, "already cancelled"), (pair.alice.home, "cancelled")):
        code, refused = cli_json(home, "file", "cancel", transfer_id)
        assert code == EXIT_FAILED and refused["error"]["code"] == CONFLICT
        assert message in refused["error"]["message"]
    code, refused = cli_json(pair.bob.home, "file", "accept", transfer_id, "--to", str(inbox))
    assert (code, refused["error"]["code"]) == (EXIT_FAILED, CONFLICT)
    shown = p2pid_json(pair.bob.home, "file", "show", transfer_id)
    assert (shown["state"], shown["bytes_done"]) == ("cancelled", 0)
    assert list(inbox.iterdir()) == []


def test_sender_cancels_mid_transfer(pair: Pair) -> None:
    source = make_file(pair, "sender cancels.bin", CUT_SIZE)
    inbox = make_inbox(pair, "sender-cancels")
    transfer_id = offer_to_bob(pair, source)

    with subscribed(pair.bob.home) as events:
        with throttled(pair.alice):
            accept(pair, transfer_id, inbox)
            progress_past(events, transfer_id, 1)
            code, cancelled = cli_json(pair.alice.home, "file", "cancel", transfer_id[:8])
        assert code == 0
        assert (cancelled["direction"], cancelled["state"]) == ("out", "cancelled")
        stopped = state_change(events, transfer_id, "cancelled", "complete", "failed")
        assert (stopped["state"], stopped["error"]) == ("cancelled", "cancelled by the sender")
    wait_until(lambda: list(inbox.iterdir()) == [], TIMEOUT, "Bob deletes the partial file")

    for home in (pair.alice.home, pair.bob.home):
        code, refused = cli_json(home, "file", "cancel", transfer_id)
        assert (code, refused["error"]["code"]) == (EXIT_FAILED, CONFLICT)
    shown = p2pid_json(pair.bob.home, "file", "show", transfer_id)
    assert (shown["state"], shown["bytes_done"]) == ("cancelled", 0)
    assert list(inbox.iterdir()) == []


# -- nothing complete early --------------------------------------------------------------------


def test_nothing_is_reported_complete_before_the_file_is_in_place(pair: Pair) -> None:
    source = make_file(pair, "watched closely.bin")
    inbox = make_inbox(pair, "watched")
    destination = inbox / source.name
    expected = digest(source)
    transfer_id = offer_to_bob(pair, source)
    verified: list[bool] = []

    def check(state: str) -> None:
        """`state` was read before the disk is looked at: the file is moved into place (whole)
        before the transfer is marked complete, never after."""
        if state == "complete":
            assert destination.stat().st_size == SIZE
            if not verified:
                assert digest(destination) == expected
                verified.append(True)
        elif destination.exists():
            assert destination.stat().st_size == SIZE

    def listed(views: list[dict[str, Any]]) -> dict[str, Any]:
        return next(v for v in views if v["transfer_id"] == transfer_id)

    def poll_cli() -> list[tuple[str, int]]:
        """`p2pid files --json` on Bob until it says complete."""
        seen: list[tuple[str, int]] = []
        deadline = time.monotonic() + TIMEOUT
        while time.monotonic() < deadline:
            view = listed(p2pid_json(pair.bob.home, "files"))
            check(view["state"])
            seen.append((view["state"], view["bytes_done"]))
            if view["state"] == "complete":
                return seen
        raise AssertionError(f"not complete within {TIMEOUT} s: {seen}")

    rpc_seen: list[tuple[str, int]] = []
    with (
        ThreadPoolExecutor(1) as pool,
        client(pair.bob.home) as bob,
        client(pair.alice.home) as alice,
        throttled(pair.bob),
    ):
        accept(pair, transfer_id, inbox)
        cli_poller = pool.submit(poll_cli)
        deadline = time.monotonic() + TIMEOUT
        while time.monotonic() < deadline:  # the RPC method behind `files --json`, faster
            view = listed(bob.call("files"))
            check(view["state"])
            rpc_seen.append((view["state"], view["bytes_done"]))
            sent = alice.call("file.show", transfer=transfer_id)
            check("complete" if sent["state"] == "complete" else "sending")
            if view["state"] == sent["state"] == "complete":
                break
        cli_seen = cli_poller.result(TIMEOUT)

    for seen in (rpc_seen, cli_seen):
        states = [state for state, _ in seen]
        assert states[-1] == "complete" and set(states) <= {"downloading", "complete"}, seen
        assert states.index("complete") > 0  # it was watched while downloading
        assert all(done == SIZE for state, done in seen if state == "complete"), seen
    downloading = [done for state, done in rpc_seen if state == "downloading"]
    assert len(downloading) >= 5 and downloading == sorted(downloading), rpc_seen
    assert any(0 < done < SIZE for done in downloading), rpc_seen
    assert verified and part_files(inbox) == []
