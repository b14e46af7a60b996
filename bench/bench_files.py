"""File transfer between two real daemons on 127.0.0.1, end to end (hashing, sealing, writing,
fsync, the content-hash check, the move into place), against a bare py-libp2p Yamux stream and
Magic Wormhole measured in the same run; and the cost of resuming after Bob's daemon is killed
with SIGKILL halfway. Prints one JSON line: the medians, and every run's figures.

Each run (`--runs`, default 3) starts two fresh daemons (temporary homes, under
$P2PID_BENCH_TMP if set, `--no-mdns`), makes them contacts (`invite.create` + `join`), turns Bob's
auto-accept off, and sends the same random file of `--mib` MiB (default 1024, written once per
invocation; left in the page cache, which is not dropped: the sender reads from memory):

- p2pid: `send_hash_s` is Alice's `file.send` RPC (BLAKE3 of the whole file, the offer stored and
  sent). The transfer is timed from just before Bob's `file.accept` RPC until a thread reading
  Bob's subscribed RPC connection reads the `file.state` event saying `complete` (every chunk
  verified, written, fsync'ed, the whole-file BLAKE3 checked, the file moved into place).
  `p2pid_mb_s` = bytes / that time; `p2pid_incl_hash_mb_s` = bytes / (send RPC + transfer).
  The received file's BLAKE3 is checked against the source's. Daemon CPU (user + system) during
  the transfer is reported per GiB.
- yamux baseline: the same number of random bytes over one bare py-libp2p stream (TCP + Noise +
  Yamux) between two processes, receiver discards: bench/file_path_probe.py's
  `libp2p_streams_1` (clocked from after the connection is up until the receiver's 1-byte ack).
- wormhole baseline: `wormhole send FILE` / `wormhole receive --accept-file`, with a local
  mailbox server and a local transit relay (magic-wormhole-transit-relay), wall clock from
  launching both CLIs until both exited (two interpreter starts, the PAKE, SHA-256 on both sides,
  no fsync). Two variants: `wormhole` (both sides may connect directly; on loopback they do) and
  `wormhole_relay` (`--no-listen` on both sides: every byte goes through the relay). The
  received file is compared with the source. Skipped, with the reason, when no wormhole venv
  (`--wormhole-venv`, default $P2PID_WORMHOLE_VENV or /tmp/wormhole-venv) is usable.
- resume: the file is sent again between the same daemons and accepted; once Bob's
  `file.progress` events pass 50 % Bob's daemon gets SIGKILL, then is started again
  (`daemon --detach`), and resumes on its own. `refetched_mib` = size - `bytes_done` of
  `file show` right after the restart (the last durable checkpoint); `resume_restart_s` = from
  launching the daemon until the `complete` event (daemon start included), of which
  `resume_daemon_start_s` until it answers and `resume_first_progress_s` until the first
  `file.progress` past the durable bytes (the durable chunks re-checked, the source reached);
  overhead = (time from accept to the kill + that) - the same run's uninterrupted transfer time,
  measured just before (the baselines run after both).

    .venv/bin/python bench/bench_files.py [--mib 1024] [--runs 3] [--no-wormhole]
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager, suppress
from pathlib import Path
from typing import Any

import blake3
import file_path_probe
import wormhole_baseline
from bench_messaging import (
    Daemon,
    EventReader,
    cpu_seconds,
    events_of,
    make_contacts,
    start_daemon,
)
from common import BenchError, emit, median, parser, run, start_daemon_command

TARGET_MB_S = 250.0
MIB = 1 << 20
GIB = 1 << 30
EVENT_TIMEOUT_SECONDS = 300.0
WORMHOLE_TIMEOUT_SECONDS = 600.0
RESUME_AT = 0.5
ENDED = ("failed", "cancelled")


def mb_s(nbytes: int, seconds: float) -> float:
    return round(nbytes / seconds / 1e6, 1)


def file_hash(path: Path) -> bytes:
    hasher = blake3.blake3(max_threads=blake3.blake3.AUTO)
    hasher.update_mmap(path)
    return hasher.digest()


def make_source(directory: Path, mib: int) -> Path:
    path = directory / f"random-{mib}MiB.bin"
    with path.open("wb") as out:
        for _ in range(mib):
            out.write(os.urandom(MIB))
    return path


# --- Bob's events ---------------------------------------------------------------------------


def wait(
    events: EventReader, matches: Callable[[dict[str, Any]], bool], what: str
) -> tuple[float, dict[str, Any]]:
    """(read time, event) of the first event from now on that `matches`; BenchError on a
    failed transfer."""

    def matched(event: dict[str, Any]) -> bool:
        transfer = event.get("transfer") or {}
        if matches(event):
            return True
        if event.get("type") == "file.state" and transfer.get("state") in ENDED:
            raise BenchError(f"the transfer ended while waiting for {what}: {transfer}")
        return False

    return events.wait(matched, what, EVENT_TIMEOUT_SECONDS)


def is_state(transfer_id: str, state: str) -> Callable[[dict[str, Any]], bool]:
    def matches(event: dict[str, Any]) -> bool:
        transfer = event.get("transfer") or {}
        return (
            event.get("type") == "file.state"
            and transfer.get("transfer_id") == transfer_id
            and transfer.get("state") == state
        )

    return matches


def is_offer(transfer_id: str) -> Callable[[dict[str, Any]], bool]:
    def matches(event: dict[str, Any]) -> bool:
        transfer = event.get("transfer") or {}
        return event.get("type") == "file.offered" and transfer.get("transfer_id") == transfer_id

    return matches


def is_progress_past(transfer_id: str, nbytes: int) -> Callable[[dict[str, Any]], bool]:
    def matches(event: dict[str, Any]) -> bool:
        return (
            event.get("type") == "file.progress"
            and event.get("transfer_id") == transfer_id
            and int(event.get("bytes_done", 0)) >= nbytes
        )

    return matches


# --- p2pid ----------------------------------------------------------------------------------


class Pair:
    """Alice and Bob, contacts, Bob's auto-accept off and his files going to `inbox`."""

    def __init__(self, stack: ExitStack, inbox: Path) -> None:
        self.alice = start_daemon(stack, "alice")
        self.bob = start_daemon(stack, "bob")
        make_contacts(self.alice, self.bob)
        inbox.mkdir(parents=True, exist_ok=True)
        self.bob.call("file.settings.set", folder=str(inbox), auto_accept="none")

    def offer(self, source: Path, events: EventReader) -> tuple[str, float]:
        """Alice sends `source` to Bob: (transfer id, seconds of the send RPC); Bob has it."""
        started = time.perf_counter()
        sent = self.alice.call("file.send", target=self.bob.identity_id, path=str(source))
        send_seconds = time.perf_counter() - started
        transfer_id: str = sent["transfer_id"]
        wait(events, is_offer(transfer_id), "file.offered on Bob's side")
        return transfer_id, send_seconds


def check_received(path: str, expected: bytes) -> None:
    try:
        if file_hash(Path(path)) != expected:
            raise BenchError(f"{path}: the received bytes differ from the source")
    finally:
        with suppress(FileNotFoundError):
            os.unlink(path)


def cpu_idle_share(seconds: float) -> float:
    """The share of all CPUs' time that was idle over the next `seconds` (/proc/stat)."""

    def sample() -> tuple[int, int]:
        fields = [int(x) for x in Path("/proc/stat").read_text().split("\n")[0].split()[1:]]
        return fields[3] + fields[4], sum(fields)  # idle + iowait, total

    idle0, total0 = sample()
    time.sleep(seconds)
    idle1, total1 = sample()
    return (idle1 - idle0) / max(1, total1 - total0)


def settle(limit: float = 20.0) -> None:
    """Before each measured transfer: dirty pages written back, and the CPUs quiet (at least
    90 % idle over half a second, or `limit` seconds passed), so that one measurement does not
    pay for the previous one's daemons starting or its writeback. The same for every contender."""
    os.sync()
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline and cpu_idle_share(0.5) < 0.9:
        pass


def p2pid_transfer(pair: Pair, source: Path, source_hash: bytes) -> dict[str, Any]:
    size = source.stat().st_size
    settle()
    with events_of(pair.bob) as events:
        transfer_id, send_seconds = pair.offer(source, events)
        cpu_before = cpu_seconds(pair.alice.pid), cpu_seconds(pair.bob.pid)
        started = time.perf_counter()
        pair.bob.call("file.accept", transfer=transfer_id)
        accepted = time.perf_counter()
        done_at, event = wait(events, is_state(transfer_id, "complete"), "the complete state")
        cpu_after = cpu_seconds(pair.alice.pid), cpu_seconds(pair.bob.pid)
    seconds = done_at - started
    check_received(event["transfer"]["path"], source_hash)
    return {
        "p2pid_s": seconds,
        "send_hash_s": send_seconds,
        "accept_rpc_s": accepted - started,
        "alice_cpu_s_per_gib": (cpu_after[0] - cpu_before[0]) * GIB / size,
        "bob_cpu_s_per_gib": (cpu_after[1] - cpu_before[1]) * GIB / size,
    }


def resume_transfer(
    pair: Pair, source: Path, source_hash: bytes, uninterrupted: float
) -> dict[str, Any]:
    """Kill Bob's daemon at 50 %, start it again, time until the file is complete."""
    size = source.stat().st_size
    bob = pair.bob
    with events_of(bob) as events:
        transfer_id, _ = pair.offer(source, events)
        settle()
        started = time.perf_counter()
        bob.call("file.accept", transfer=transfer_id)
        _, progress = wait(events, is_progress_past(transfer_id, int(size * RESUME_AT)), "50 %")
        os.kill(bob.pid, signal.SIGKILL)
        killed = time.perf_counter()
    bob.client.close()
    wait_gone(bob.pid)
    restart = time.perf_counter()
    run(start_daemon_command(bob.home))
    pair.bob = bob = Daemon(bob.home)
    with events_of(bob) as events:
        shown = bob.call("file.show", transfer=transfer_id)
        ready = time.perf_counter()
        durable = int(shown["bytes_done"])
        if shown["state"] == "complete":  # finished before we listened: the slowest case
            moving_at = done_at = ready
            transfer = shown
        else:
            moving_at, _ = wait(events, is_progress_past(transfer_id, durable + 1), "progress")
            done_at, event = wait(events, is_state(transfer_id, "complete"), "the resumed file")
            transfer = event["transfer"]
    check_received(transfer["path"], source_hash)
    before_kill, after_restart = killed - started, done_at - restart
    overhead = before_kill + after_restart - uninterrupted
    return {
        "resume_before_kill_s": before_kill,
        "resume_restart_s": after_restart,
        "resume_daemon_start_s": ready - restart,
        "resume_first_progress_s": moving_at - restart,
        "resume_overhead_s": overhead,
        "resume_overhead_ratio": overhead / uninterrupted,
        "refetched_mib": (size - durable) / MIB,
        "progress_at_kill_mib": int(progress["bytes_done"]) / MIB,
        "lost_at_kill_mib": (int(progress["bytes_done"]) - durable) / MIB,
    }


def wait_gone(pid: int) -> None:
    deadline = time.monotonic() + 10
    while Path(f"/proc/{pid}").exists():
        status = Path(f"/proc/{pid}/status")
        with suppress(OSError):
            if "\nState:\tZ" in status.read_text():
                return
        if time.monotonic() > deadline:
            raise BenchError(f"pid {pid} survived SIGKILL")
        time.sleep(0.01)


# --- the baselines ----------------------------------------------------------------------------


def yamux_seconds(size: int) -> float:
    return file_path_probe.one_run("libp2p_streams_1", size)


class Wormhole:
    """A local mailbox server and transit relay; one `send`/`receive` of a file per call."""

    def __init__(self, venv: Path, relay_url: str, transit: str, inbox: Path) -> None:
        self.common = [
            str(venv / "bin" / "wormhole"),
            "--relay-url",
            relay_url,
            "--transit-helper",
            transit,
        ]
        self.inbox = inbox
        self._nameplate = 0

    def transfer(self, source: Path, source_hash: bytes, relay_only: bool) -> tuple[float, str]:
        """(seconds from launching both CLIs until both exited, the path Transit used)."""
        self._nameplate += 1
        code = f"{self._nameplate}-bench-code"
        target = self.inbox / f"wormhole-{self._nameplate}.bin"
        listen = ["--no-listen"] if relay_only else []
        started = time.perf_counter()
        sender = subprocess.Popen(
            [*self.common, "send", "--hide-progress", "--no-qr", *listen, "--code", code, source],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        try:
            receiver = subprocess.run(
                [
                    *self.common,
                    "receive",
                    "--hide-progress",
                    "--accept-file",
                    *listen,
                    "-o",
                    str(target),
                    code,
                ],
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                timeout=WORMHOLE_TIMEOUT_SECONDS,
                check=False,
            )
            sender_output, _ = sender.communicate(timeout=WORMHOLE_TIMEOUT_SECONDS)
        finally:
            if sender.poll() is None:
                sender.kill()
                sender.wait()
        elapsed = time.perf_counter() - started
        output = receiver.stdout + receiver.stderr
        if sender.returncode != 0 or receiver.returncode != 0:
            raise BenchError(
                f"wormhole transfer failed: send {sender.returncode} {sender_output[-300:]!r}, "
                f"receive {receiver.returncode} {output[-300:]!r}"
            )
        check_received(str(target), source_hash)
        return elapsed, "relay" if "relay:" in output else "direct"


@contextmanager
def open_wormhole(venv: Path, inbox: Path) -> Iterator[Wormhole]:
    with (
        wormhole_baseline.mailbox_server(venv) as relay_url,
        wormhole_baseline.transit_relay(venv) as transit,
    ):
        inbox.mkdir(parents=True, exist_ok=True)
        yield Wormhole(venv, relay_url, transit, inbox)


def wormhole_unavailable(venv: str | None) -> str | None:
    reason = wormhole_baseline.unavailable(venv)
    relay = "lib/python*/site-packages/wormhole_transit_relay"
    if reason is None and not any(Path(venv or "").glob(relay)):
        return f"{venv} lacks magic-wormhole-transit-relay (pip install it into that venv)"
    return reason


# --- one run, and the record ----------------------------------------------------------------


def one_run(
    args: Any, source: Path, source_hash: bytes, wormhole: Wormhole | None, work: Path
) -> dict[str, Any]:
    size = source.stat().st_size
    record: dict[str, Any] = {"load_1min": os.getloadavg()[0]}
    with ExitStack() as stack:
        pair = Pair(stack, work / "bob-inbox")
        record |= p2pid_transfer(pair, source, source_hash)
        if not args.no_resume:  # next to the transfer it is compared with
            record |= resume_transfer(pair, source, source_hash, record["p2pid_s"])
        settle()
        record["yamux_s"] = yamux_seconds(size)
        if wormhole is not None:
            settle()
            record["wormhole_s"], record["wormhole_path"] = wormhole.transfer(
                source, source_hash, relay_only=False
            )
            settle()
            record["wormhole_relay_s"], record["wormhole_relay_path"] = wormhole.transfer(
                source, source_hash, relay_only=True
            )
    record["p2pid_mb_s"] = mb_s(size, record["p2pid_s"])
    record["p2pid_incl_hash_mb_s"] = mb_s(size, record["p2pid_s"] + record["send_hash_s"])
    record["yamux_mb_s"] = mb_s(size, record["yamux_s"])
    record["vs_yamux"] = record["p2pid_mb_s"] / record["yamux_mb_s"]
    if wormhole is not None:
        record["wormhole_mb_s"] = mb_s(size, record["wormhole_s"])
        record["wormhole_relay_mb_s"] = mb_s(size, record["wormhole_relay_s"])
        record["vs_wormhole"] = record["p2pid_mb_s"] / record["wormhole_mb_s"]
        record["vs_wormhole_incl_hash"] = record["p2pid_incl_hash_mb_s"] / record["wormhole_mb_s"]
        record["vs_wormhole_relay"] = record["p2pid_mb_s"] / record["wormhole_relay_mb_s"]
    return record


def rounded(value: Any, digits: int = 3) -> Any:
    return round(value, digits) if isinstance(value, float) else value


def rounded_record(record: dict[str, Any]) -> dict[str, Any]:
    return {key: rounded(value) for key, value in record.items()}


def main() -> None:
    arguments = parser(__doc__.splitlines()[0], runs=3, runs_help="runs, fresh daemons each")
    arguments.add_argument("--mib", type=int, default=1024, help="file size in MiB")
    arguments.add_argument("--no-wormhole", action="store_true", help="skip Magic Wormhole")
    arguments.add_argument("--no-resume", action="store_true", help="skip the kill -9 resume")
    arguments.add_argument(
        "--wormhole-venv",
        default=os.environ.get("P2PID_WORMHOLE_VENV", "/tmp/wormhole-venv"),
        help="venv with magic-wormhole, its mailbox server and transit relay",
    )
    args = arguments.parse_args()
    if root := os.environ.get("P2PID_BENCH_TMP"):  # the homes, inboxes, servers' work dirs
        Path(root).mkdir(parents=True, exist_ok=True)
        tempfile.tempdir = root
    load_before = os.getloadavg()
    started = time.perf_counter()
    skipped = "--no-wormhole" if args.no_wormhole else wormhole_unavailable(args.wormhole_venv)
    work = Path(tempfile.mkdtemp(prefix="run-"))
    runs: list[dict[str, Any]] = []
    try:
        source = make_source(work, args.mib)
        source_hash = file_hash(source)
        with ExitStack() as stack:
            wormhole = None
            if skipped is None:
                venv = Path(args.wormhole_venv)
                wormhole = stack.enter_context(open_wormhole(venv, work / "wormhole-inbox"))
            for _ in range(max(1, args.runs)):
                run_record = one_run(args, source, source_hash, wormhole, work)
                print(json.dumps(rounded_record(run_record)), file=sys.stderr)
                runs.append(run_record)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    emit(summarise(args, runs, skipped, load_before, time.perf_counter() - started))


def summarise(
    args: Any,
    runs: list[dict[str, Any]],
    skipped: str | None,
    load_before: tuple[float, float, float],
    seconds: float,
) -> dict[str, Any]:
    """Medians of the runs' figures (a ratio: the median of the per-run ratios), and each run's."""

    def mid(key: str, digits: int = 2) -> float | None:
        values = [r[key] for r in runs if key in r]
        return round(median(values), digits) if values else None

    def each(key: str, digits: int = 1) -> list[Any]:
        return [rounded(r.get(key), digits) for r in runs]

    p2pid_mb_s = mid("p2pid_mb_s", 1)
    return {
        "bench": "files",
        "mib": args.mib,
        "p2pid_mb_s": p2pid_mb_s,
        "p2pid_s": mid("p2pid_s", 3),
        "send_hash_s": mid("send_hash_s", 3),
        "p2pid_incl_hash_mb_s": mid("p2pid_incl_hash_mb_s", 1),
        "alice_cpu_s_per_gib": mid("alice_cpu_s_per_gib"),
        "bob_cpu_s_per_gib": mid("bob_cpu_s_per_gib"),
        "yamux_mb_s": mid("yamux_mb_s", 1),
        "vs_yamux": mid("vs_yamux"),
        "wormhole_mb_s": mid("wormhole_mb_s", 1),
        "vs_wormhole": mid("vs_wormhole"),
        "vs_wormhole_incl_hash": mid("vs_wormhole_incl_hash"),
        "wormhole_path": each("wormhole_path"),
        "wormhole_relay_mb_s": mid("wormhole_relay_mb_s", 1),
        "vs_wormhole_relay": mid("vs_wormhole_relay"),
        "wormhole_skipped": skipped,
        "resume_overhead_s": mid("resume_overhead_s", 3),
        "resume_overhead_ratio": mid("resume_overhead_ratio", 3),
        "resume_restart_s": mid("resume_restart_s", 3),
        "resume_daemon_start_s": mid("resume_daemon_start_s", 3),
        "resume_first_progress_s": mid("resume_first_progress_s", 3),
        "refetched_mib": mid("refetched_mib", 1),
        "lost_at_kill_mib": mid("lost_at_kill_mib", 1),
        "target_mb_s": TARGET_MB_S,
        "met": p2pid_mb_s is not None and p2pid_mb_s >= TARGET_MB_S,
        "runs": len(runs),
        "repeat_p2pid_mb_s": each("p2pid_mb_s"),
        "repeat_send_hash_s": each("send_hash_s", 3),
        "repeat_yamux_mb_s": each("yamux_mb_s"),
        "repeat_wormhole_mb_s": each("wormhole_mb_s"),
        "repeat_wormhole_relay_mb_s": each("wormhole_relay_mb_s"),
        "repeat_resume_overhead_s": each("resume_overhead_s", 3),
        "repeat_refetched_mib": each("refetched_mib"),
        "repeat_loadavg_1min": each("load_1min", 2),
        "page_cache": "not dropped: the source is read from memory",
        "cpus": os.cpu_count(),
        "loadavg_before": [round(value, 2) for value in load_before],
        "loadavg_after": [round(value, 2) for value in os.getloadavg()],
        "seconds": round(seconds, 1),
    }


if __name__ == "__main__":
    main()
