"""Device linking on 127.0.0.1: from Alice's `device.approve` RPC to the new device's home
written (its `p2pid device link` process has exited 0), with an empty history and with a history
of `--messages` messages, versus bare py-libp2p measured in the same run. Prints one JSON line.

Set-up (untimed): Bob and two Alices (`empty` and `history`) are real daemons on 127.0.0.1
(`--no-mdns`); each Alice is Bob's contact (invite + join). The `history` Alice's daemon is then
stopped, `--messages` real rows (~60-character bodies, both directions, with Bob) are written into
her SQLCipher store through `p2pid.store.messages.insert_message` in one transaction, and her
daemon is started again.

Each run, for each Alice in turn: a fresh home runs `p2pid --json device link --listen
/ip4/127.0.0.1/tcp/0` as a subprocess (its interpreter start and imports happen before it prints
its code, outside the clock). The clock starts just before Alice's `device.approve` RPC and stops
when the link process has exited 0; between them Alice's `device.approve.confirm` (accept,
`history: all`). Figures: `approve` (the RPC up to the confirmation code: dial, LinkHello,
LinkReply), `confirm` (the RPC: export, grant, history, the new device's commit, LinkDone, the new
list adopted and queued to contacts), `home_written` (approve + confirm: the new device commits its
home before it sends LinkDone), `linked` (until the process printed its `linked` line, after its
libp2p host closed) and `total` (until the process exited). After each run the new device is
revoked (untimed), so every link is from a one-device identity to its second device.

Baselines, interleaved with the runs:

- connect_rtt: two bare py-libp2p hosts in this process (TCP + Noise + Yamux, bare_libp2p.py)
  connect, open a stream and do one 64-byte echo round trip; then disconnect (untimed);
- connect_copy: the same fresh connect and stream, then the bytes of the history's sync frames
  (the same frame sizes, each with its varint prefix) written to a sink that answers one byte
  once it has read them all.

`sync_bytes_*` are the encoded SyncBatch and SyncEnd frames (varint prefixes included) that
`p2pid.device_sync.export_batches` makes from each Alice's store, computed by the same code the
daemon runs. `*_new_home_bytes` is the new device's `p2pid.db` (+ WAL) after linking.

    .venv/bin/python bench/bench_device_link.py [--runs 3] [--messages 10000]
"""

from __future__ import annotations

import json
import os
import queue
import random
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import ExitStack, asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

import multiaddr
import trio
from bare_libp2p import ECHO, bare_host, echo
from bench_history import body_text, vocabulary_weights
from common import (
    P2PID,
    BenchError,
    emit,
    median,
    ms,
    parser,
    ratio,
    running_daemon,
    temp_home,
)
from libp2p.abc import INetStream
from libp2p.custom_types import TProtocol
from libp2p.io.utils import read_exactly
from libp2p.network.stream.exceptions import StreamEOF
from libp2p.peer.peerinfo import PeerInfo

from p2pid.device_sync import HistoryChoice, export_batches
from p2pid.home import Home
from p2pid.provision import unlock_vault_key
from p2pid.rpc.client import BlockingClient
from p2pid.store import contacts as contact_queries
from p2pid.store import queries
from p2pid.store.db import open_database, savepoint
from p2pid.store.messages import NewMessage, conversation_id_for, insert_message
from p2pid.wire.device_link import SyncBatch, SyncEnd, encode_link_message

LOOPBACK = "/ip4/127.0.0.1/tcp/0"
PAYLOAD = b"x" * 64
SINK = TProtocol("/bench/sink/1.0.0")
INVITE_TTL_SECONDS = 600
LINK_TIMEOUT_SECONDS = 120.0
DAY_MS = 24 * 3600 * 1000


def varint_size(value: int) -> int:
    size = 1
    while value >= 0x80:
        value >>= 7
        size += 1
    return size


def framed_size(frame: bytes) -> int:
    return varint_size(len(frame)) + len(frame)


# --- the bare py-libp2p baselines -----------------------------------------------------------


async def sink(stream: INetStream) -> None:
    """Read an 8-byte total, then that many bytes; answer one byte."""
    try:
        total = int.from_bytes(await read_exactly(stream, 8), "big")
        while total > 0:
            chunk = await stream.read(min(total, 65536))
            if not chunk:
                return
            total -= len(chunk)
        await stream.write(b"k")
    except StreamEOF:
        pass
    except Exception:  # an exception escaping a handler tears down the whole host
        pass
    finally:
        await stream.close()


@asynccontextmanager
async def bare_pair() -> AsyncIterator[
    tuple[Callable[[], Awaitable[float]], Callable[[list[int]], Awaitable[float]]]
]:
    """(fresh connect + echo round trip, fresh connect + copy of frames of these sizes)."""
    client, server = bare_host("client"), bare_host("server")
    server.set_stream_handler(ECHO, echo)
    server.set_stream_handler(SINK, sink)
    listen = [multiaddr.Multiaddr(LOOPBACK)]
    async with client.run(listen_addrs=listen), server.run(listen_addrs=listen):
        try:
            info = PeerInfo(server.get_id(), server.get_addrs())

            async def disconnect() -> None:
                await client.disconnect(server.get_id())
                await trio.sleep(0.05)  # let the server side see the connection go

            async def connect_rtt() -> float:
                if client.get_network().get_connections(server.get_id()):
                    raise BenchError("the bare client is still connected before a run")
                started = time.perf_counter()
                await client.connect(info)
                stream = await client.new_stream(server.get_id(), [ECHO])
                await stream.write(PAYLOAD)
                if await read_exactly(stream, len(PAYLOAD)) != PAYLOAD:
                    raise BenchError("echo mismatch")
                elapsed = time.perf_counter() - started
                await stream.close()
                await disconnect()
                return elapsed

            async def connect_copy(frame_sizes: list[int]) -> float:
                frames = [os.urandom(size) for size in frame_sizes]
                total = sum(frame_sizes)
                started = time.perf_counter()
                await client.connect(info)
                stream = await client.new_stream(server.get_id(), [SINK])
                await stream.write(total.to_bytes(8, "big"))
                for frame in frames:
                    await stream.write(frame)
                if await read_exactly(stream, 1) != b"k":
                    raise BenchError("sink mismatch")
                elapsed = time.perf_counter() - started
                await stream.close()
                await disconnect()
                return elapsed

            yield connect_rtt, connect_copy
        finally:
            with trio.CancelScope(shield=True):
                await client.close()
                await server.close()


# --- p2pid daemons and homes ------------------------------------------------------------------


class Daemon:
    def __init__(self, home: Path) -> None:
        self.home = home
        self.client = BlockingClient(home / "daemon.sock", timeout=LINK_TIMEOUT_SECONDS)
        document = self.client.call("status")
        self.identity_id: str = document["identity_id"]
        self.peer_id: str = document["peer_id"]

    def call(self, method: str, **params: Any) -> Any:
        return self.client.call(method, **params)

    def close(self) -> None:
        self.client.close()


@contextmanager
def daemon(home: Path) -> Iterator[Daemon]:
    with running_daemon(home):
        client = Daemon(home)
        try:
            yield client
        finally:
            client.close()


def make_contacts(inviter: Daemon, joiner: Daemon) -> None:
    code = inviter.call("invite.create", uses=1, ttl=INVITE_TTL_SECONDS)["code"]
    contact = joiner.call("join", code=code)
    if contact["identity_id"] != inviter.identity_id:
        raise BenchError(f"unexpected join result: {contact}")
    deadline = time.monotonic() + 30
    while not any(c["identity_id"] == joiner.identity_id for c in inviter.call("contacts")):
        if time.monotonic() > deadline:
            raise BenchError("the inviter never stored the joiner")
        time.sleep(0.02)


def seed_history(home: Path, count: int) -> None:
    """`count` real message rows with Alice's one contact, in one transaction."""
    rng = random.Random(6)
    weights = vocabulary_weights()
    conn = open_database(Home(home).database, unlock_vault_key(Home(home)))
    try:
        identity = queries.load_local_identity(conn)
        contacts = contact_queries.list_contacts(conn)
        assert identity is not None and len(contacts) == 1
        me = contacts[0]
        mine = contact_queries.get_self(conn)
        assert mine is not None
        my_device = next(d.peer_id for d in mine.devices)
        their_device = me.devices[0].peer_id
        now = int(time.time() * 1000)
        clock = now - 30 * DAY_MS
        step = (30 * DAY_MS) // max(1, count)
        with savepoint(conn):
            conversation = conversation_id_for(conn, me.identity_key, now)
            for n in range(count):
                outgoing = rng.random() < 0.5
                clock += step
                insert_message(
                    conn,
                    conversation,
                    NewMessage(
                        message_id=rng.randbytes(16),
                        sender_identity=mine.identity_key if outgoing else me.identity_key,
                        sender_device=my_device if outgoing else their_device,
                        outgoing=outgoing,
                        kind="text",
                        body=body_text(rng, weights),
                        lamport=n + 1,
                        sent_at=clock,
                        received_at=clock + (0 if outgoing else rng.randint(0, 2_000)),
                        state="read" if outgoing or rng.random() < 0.9 else "unread",
                    ),
                )
    finally:
        conn.close()


def sync_frame_sizes(home: Path) -> list[int]:
    """The sizes (varint prefix included) of the SyncBatch and SyncEnd frames a link of `all`
    history from this store sends: the daemon's own export code, read while it runs (WAL)."""
    conn = open_database(Home(home).database, unlock_vault_key(Home(home)))
    try:
        batches, end = export_batches(conn, HistoryChoice("all"), int(time.time() * 1000))
    finally:
        conn.close()
    frames: list[SyncBatch | SyncEnd] = [*batches, end]
    return [framed_size(encode_link_message(frame)) for frame in frames]


def home_bytes(home: Path) -> int:
    database = Home(home).database
    return sum(
        path.stat().st_size
        for path in (database, database.with_name(database.name + "-wal"))
        if path.exists()
    )


# --- one link ---------------------------------------------------------------------------------


class LinkProcess:
    """`p2pid --json device link` on a fresh home; its stdout lines, timestamped by a thread."""

    def __init__(self, home: Path, name: str) -> None:
        env = {k: v for k, v in os.environ.items() if k != "P2PID_HOME"}
        self.process = subprocess.Popen(
            [
                *(P2PID, "--home", str(home), "--json", "device", "link", "--name", name),
                *("--listen", LOOPBACK, "--timeout", str(LINK_TIMEOUT_SECONDS)),
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        self.lines: queue.Queue[tuple[float, dict[str, Any] | None]] = queue.Queue()
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.put((time.perf_counter(), json.loads(line)))
        self.process.wait()
        self.lines.put((time.perf_counter(), None))  # exited

    def next_event(self, event: str) -> tuple[float, dict[str, Any]]:
        while True:
            at, document = self.lines.get(timeout=LINK_TIMEOUT_SECONDS)
            if document is None:
                stderr = self.process.stderr.read() if self.process.stderr else ""
                raise BenchError(f"link exited {self.process.returncode} before {event}: {stderr}")
            if document.get("event") == event:
                return at, document
            if document.get("event") not in ("code", "confirm"):
                raise BenchError(f"unexpected link output: {document}")

    def exited(self) -> float:
        at, document = self.lines.get(timeout=LINK_TIMEOUT_SECONDS)
        if document is not None:
            raise BenchError(f"unexpected link output after linked: {document}")
        if self.process.returncode != 0:
            raise BenchError(f"link exited {self.process.returncode}")
        return at

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=10)


def link_once(alice: Daemon, root: Path, name: str, expected_messages: int) -> dict[str, float]:
    home = root / name
    link = LinkProcess(home, name)
    try:
        _, code = link.next_event("code")
        started = time.perf_counter()
        pending = alice.call("device.approve", code=code["code"])
        approved = time.perf_counter()
        result = alice.call(
            "device.approve.confirm", link_id=pending["link_id"], accept=True, history="all"
        )
        confirmed = time.perf_counter()
        linked_at, linked = link.next_event("linked")
        exited = link.exited()
    finally:
        link.stop()
    if linked["messages"] != expected_messages or result["messages"] != expected_messages:
        raise BenchError(f"expected {expected_messages} messages: {linked} / {result}")
    if linked["identity_id"] != alice.identity_id or linked["contacts"] != 1:
        raise BenchError(f"unexpected link result: {linked}")
    figures = {
        "approve": approved - started,
        "confirm": confirmed - approved,
        # The new device commits its home before it answers LinkDone, which `confirm` awaits.
        "home_written": confirmed - started,
        "linked": linked_at - started,
        "total": exited - started,
        "new_home_bytes": float(home_bytes(home)),
    }
    alice.call("device.revoke", device=pending["device_peer_id"])
    shutil.rmtree(home, ignore_errors=True)
    return figures


# --- the benchmark ----------------------------------------------------------------------------


def summary(values: list[float]) -> dict[str, float]:
    return {"median_ms": ms(median(values), 1), "min_ms": ms(min(values), 1)}


async def bench(runs: int, messages: int) -> dict[str, Any]:
    thread = trio.to_thread.run_sync
    cases = ("empty", "history")
    figures: dict[str, dict[str, list[float]]] = {c: {} for c in cases}
    connect_rtt: list[float] = []
    connect_copy: list[float] = []
    with ExitStack() as stack:
        bob = stack.enter_context(daemon(stack.enter_context(temp_home("bob"))))
        alices: dict[str, Daemon] = {}
        for case in cases:
            home = stack.enter_context(temp_home(f"alice-{case}"))
            with daemon(home) as alice:
                await thread(make_contacts, bob, alice)
            if case == "history":
                await thread(seed_history, home, messages)
            alices[case] = stack.enter_context(daemon(home))
        sizes = {case: await thread(sync_frame_sizes, alices[case].home) for case in cases}
        root = Path(tempfile.mkdtemp(prefix="p2pid-linked-"))
        stack.callback(shutil.rmtree, root, True)
        async with bare_pair() as (bare_rtt, bare_copy):
            await bare_rtt()  # warm-up
            await bare_copy(sizes["history"])
            for run in range(runs):
                for case in cases:
                    expected = messages if case == "history" else 0
                    once = await thread(link_once, alices[case], root, f"{case}{run}", expected)
                    for key, value in once.items():
                        figures[case].setdefault(key, []).append(value)
                connect_rtt.append(await bare_rtt())
                connect_copy.append(await bare_copy(sizes["history"]))
    record: dict[str, Any] = {"bench": "device_link", "messages": messages}
    for case in cases:
        for key in ("total", "approve", "confirm", "home_written", "linked"):
            record.update({f"{case}_{key}_{k}": v for k, v in summary(figures[case][key]).items()})
        record[f"{case}_sync_bytes"] = sum(sizes[case])
        record[f"{case}_sync_frames"] = len(sizes[case])
        record[f"{case}_new_home_bytes"] = int(median(figures[case]["new_home_bytes"]))
    record.update(
        {
            "baseline": "bare py-libp2p fresh connect + stream: 64-byte echo round trip / "
            "copy of the history's sync bytes to a sink",
            "baseline_connect_rtt_median_ms": ms(median(connect_rtt), 2),
            "baseline_connect_copy_median_ms": ms(median(connect_copy), 2),
            "ratio_empty": ratio(median(figures["empty"]["total"]), median(connect_rtt)),
            "ratio_history": ratio(median(figures["history"]["total"]), median(connect_copy)),
            "history_ms_per_message": round(
                (median(figures["history"]["total"]) - median(figures["empty"]["total"]))
                * 1000
                / max(1, messages),
                4,
            ),
            "runs": runs,
        }
    )
    return record


def main() -> None:
    arguments = parser(__doc__.splitlines()[0], runs=3, runs_help="timed links of each case")
    arguments.add_argument("--messages", type=int, default=10_000, help="history size")
    args = arguments.parse_args()
    emit(trio.run(bench, args.runs, args.messages))


if __name__ == "__main__":
    main()
