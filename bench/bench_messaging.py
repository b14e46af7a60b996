"""Messaging on 127.0.0.1 between two real daemons: one message's latency from Alice's `send`
to Bob's `message.received` event, and sustained throughput stored on both sides, versus a bare
py-libp2p stream round trip measured in the same run. Prints one JSON line.

Each repeat starts two fresh daemons (temporary homes, `--no-mdns`), makes them contacts
(`invite.create` + `join`), sends a few untimed warm-up messages (the first opens the Olm
session and the `/p2pid/msg/1` stream), then:

- latency: `--messages` messages one at a time. Each is timed from just before Alice's `send`
  RPC to when a thread reading Bob's subscribed RPC connection reads its `message.received`
  event; the next is sent only after that. `send_ack` is the `send` RPC alone (the commit to
  Alice's outbox). Batches alternate with the baseline so load changes hit both alike.
- baseline: two bare py-libp2p hosts in this process (built like
  /work/shared/reference/libp2p_minimal.py, TCP + Noise + Yamux), one echo stream kept open,
  a 100-byte message written and read back; its round trip, as many times.
- throughput: Alice sends `--throughput-messages` messages as fast as it answers: `--clients`
  asyncio RPC connections with `--concurrency` calls in flight in all. `send_rate` is the
  messages divided by the time from the first `send` to the last acknowledgement;
  `stored_rate` divides by the time from the first `send` until Bob's `messages.stats` counts
  them all received (polled every 10 ms); `outbox_drained` is when Alice's outbox is empty
  (every envelope acknowledged by Bob).

Daemon CPU time (user + system, /proc) per message is reported for both phases: on a loaded
machine it says more than the wall-clock figures about what a message costs.

Figures are medians across the repeats (each repeat's p50, p99, ratio ... then the median of
those); the per-repeat values are listed too. `--runs` is the number of repeats.

    .venv/bin/python bench/bench_messaging.py [--runs 3] [--messages 1000]
        [--throughput-messages 5000] [--clients 4] [--concurrency 64]
"""

from __future__ import annotations

import asyncio
import itertools
import os
import queue
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import ExitStack, asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

import multiaddr
import trio
from bare_libp2p import ECHO, bare_host, echo
from common import (
    BenchError,
    emit,
    median,
    ms,
    parser,
    percentile,
    ratio,
    running_daemon,
    temp_home,
)
from libp2p.io.utils import read_exactly
from libp2p.peer.peerinfo import PeerInfo

from p2pid.rpc.aio_client import AsyncClient
from p2pid.rpc.client import BlockingClient

TARGET_P50_MS = 5.0
TARGET_P99_MS = 20.0
TARGET_RATIO = 3.0
TARGET_MESSAGES_PER_S = 2000.0

LOOPBACK = "/ip4/127.0.0.1/tcp/0"
PAYLOAD_BYTES = 100
BATCH = 50  # latency and baseline round trips alternate in batches of this many
WARMUP_MESSAGES = 20
EVENT_TIMEOUT_SECONDS = 30.0
STALL_SECONDS = 60.0  # throughput: give up when Bob's count has not moved for this long
POLL_SECONDS = 0.01
INVITE_TTL_SECONDS = 600


def text_of(index: int) -> str:
    """A ~100-character message, distinct per index."""
    head = f"message {index:07d} "
    return head + "x" * (PAYLOAD_BYTES - len(head))


# --- the bare py-libp2p baseline ----------------------------------------------------------


@asynccontextmanager
async def bare_echo() -> AsyncIterator[Callable[[], Awaitable[float]]]:
    """Yields an async function: one echo round trip of PAYLOAD_BYTES over one open stream."""
    client, server = bare_host("client"), bare_host("server")
    server.set_stream_handler(ECHO, echo)
    listen = [multiaddr.Multiaddr(LOOPBACK)]
    async with client.run(listen_addrs=listen), server.run(listen_addrs=listen):
        try:
            await client.connect(PeerInfo(server.get_id(), server.get_addrs()))
            stream = await client.new_stream(server.get_id(), [ECHO])
            payload = os.urandom(PAYLOAD_BYTES)

            async def round_trip() -> float:
                started = time.perf_counter()
                await stream.write(payload)
                answer = await read_exactly(stream, PAYLOAD_BYTES)
                elapsed = time.perf_counter() - started
                if answer != payload:
                    raise BenchError("echo mismatch")
                return elapsed

            yield round_trip
        finally:
            with trio.CancelScope(shield=True):
                await client.close()
                await server.close()


# --- two p2pid daemons ----------------------------------------------------------------------


class Daemon:
    """A running daemon's blocking RPC client and identity."""

    def __init__(self, home: Path) -> None:
        self.home = home
        self.socket = home / "daemon.sock"
        self.client = BlockingClient(self.socket, timeout=60.0)
        document = self.client.call("status")
        self.identity_id: str = document["identity_id"]
        self.peer_id: str = document["peer_id"]
        self.pid: int = int(document["pid"])

    def call(self, method: str, **params: Any) -> Any:
        return self.client.call(method, **params)


def start_daemon(stack: ExitStack, name: str) -> Daemon:
    home = stack.enter_context(temp_home(name))
    stack.enter_context(running_daemon(home))
    daemon = Daemon(home)
    stack.callback(daemon.client.close)
    return daemon


def make_contacts(alice: Daemon, bob: Daemon) -> None:
    invite = alice.call("invite.create", uses=1, ttl=INVITE_TTL_SECONDS)
    contact = bob.call("join", code=invite["code"])
    if contact["identity_id"] != alice.identity_id:
        raise BenchError(f"unexpected join result: {contact}")
    deadline = time.monotonic() + 10
    while not any(c["identity_id"] == bob.identity_id for c in alice.call("contacts")):
        if time.monotonic() > deadline:
            raise BenchError("Alice never stored Bob as a contact")
        time.sleep(0.05)


class EventReader:
    """A thread reading a daemon's subscribed RPC connection: every event with the time it was
    read (so what waits for it is not timed)."""

    def __init__(self, socket: Path) -> None:
        self._client = BlockingClient(socket, timeout=None)
        self._client.call("subscribe")
        self._queue: queue.Queue[tuple[float, dict[str, Any]]] = queue.Queue()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        try:
            while True:
                event = self._client.next_event()
                self._queue.put((time.perf_counter(), event))
        except Exception:  # the connection closed (the benchmark is over, or a daemon killed)
            return

    def wait(
        self,
        matches: Callable[[dict[str, Any]], bool],
        what: str,
        timeout: float = EVENT_TIMEOUT_SECONDS,
    ) -> tuple[float, dict[str, Any]]:
        """(read time, event) of the first event from now on that `matches`."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                read_at, event = self._queue.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise BenchError(f"no {what} within {timeout} s") from None
            if matches(event):
                return read_at, event

    def close(self) -> None:
        self._client.close()  # wakes the reading thread with end of file
        self._thread.join(timeout=5)


@contextmanager
def events_of(daemon: Daemon) -> Iterator[EventReader]:
    events = EventReader(daemon.socket)
    try:
        yield events
    finally:
        events.close()


# --- latency ----------------------------------------------------------------------------------


def send_and_wait(
    alice: Daemon, bob: Daemon, events: EventReader, index: int
) -> tuple[float, float]:
    """One message: (seconds until Bob's event was read, seconds of Alice's send RPC)."""
    started = time.perf_counter()
    sent = alice.call("send", contact=bob.identity_id, text=text_of(index))
    acknowledged = time.perf_counter()
    arrived, _ = events.wait(
        lambda e: (
            e.get("type") == "message.received" and e["message"]["message_id"] == sent["message_id"]
        ),
        "message.received",
    )
    return arrived - started, acknowledged - started


def latency_batch(
    alice: Daemon, bob: Daemon, events: EventReader, indices: range
) -> list[tuple[float, float]]:
    return [send_and_wait(alice, bob, events, index) for index in indices]


async def latency_and_baseline(
    alice: Daemon, bob: Daemon, messages: int
) -> tuple[list[float], list[float], list[float]]:
    """(send -> received seconds, send RPC seconds, bare echo round trips), interleaved."""
    latencies: list[float] = []
    acks: list[float] = []
    bare: list[float] = []
    with events_of(bob) as events:
        async with bare_echo() as bare_round_trip:
            for index in range(WARMUP_MESSAGES):
                await trio.to_thread.run_sync(send_and_wait, alice, bob, events, -1 - index)
                await bare_round_trip()
            for start in range(0, messages, BATCH):
                indices = range(start, min(messages, start + BATCH))
                # The thread takes its own timestamps: the hop into it is not timed.
                timed = await trio.to_thread.run_sync(latency_batch, alice, bob, events, indices)
                latencies += [latency for latency, _ in timed]
                acks += [ack for _, ack in timed]
                for _ in indices:
                    bare.append(await bare_round_trip())
    return latencies, acks, bare


# --- throughput -------------------------------------------------------------------------------


async def poll_until(
    client: AsyncClient, done: Callable[[dict[str, Any]], bool], progress: str
) -> float:
    """Poll `messages.stats` until `done`; the perf_counter time it first was."""
    last_value: Any = None
    last_change = time.perf_counter()
    while True:
        stats = await client.call("messages.stats")
        now = time.perf_counter()
        if done(stats):
            return now
        if stats[progress] != last_value:
            last_value, last_change = stats[progress], now
        elif now - last_change > STALL_SECONDS:
            raise BenchError(f"throughput stalled: messages.stats {stats}")
        await asyncio.sleep(POLL_SECONDS)


async def throughput(
    alice: Daemon, bob: Daemon, count: int, clients: int, concurrency: int
) -> dict[str, float]:
    senders = [await AsyncClient.connect(alice.socket) for _ in range(clients)]
    alice_stats = await AsyncClient.connect(alice.socket)
    bob_stats = await AsyncClient.connect(bob.socket)
    try:
        received_before = (await bob_stats.call("messages.stats"))["received"]
        indices = iter(range(count))
        last_ack = 0.0

        async def send_some(client: AsyncClient) -> None:
            nonlocal last_ack
            for index in indices:  # shared: each index is taken once
                await client.call("send", contact=bob.identity_id, text=text_of(index))
                last_ack = time.perf_counter()

        target = received_before + count
        started = time.perf_counter()
        callers = itertools.islice(itertools.cycle(senders), concurrency)
        sending = asyncio.gather(*(send_some(client) for client in callers))
        stored = asyncio.create_task(
            poll_until(bob_stats, lambda stats: stats["received"] >= target, "received")
        )
        await sending
        stored_at = await stored
        drained_at = await poll_until(
            alice_stats, lambda stats: stats["pending_outbox"] == 0, "pending_outbox"
        )
        received = (await bob_stats.call("messages.stats"))["received"] - received_before
        if received != count:
            raise BenchError(f"Bob received {received} messages, {count} were sent")
    finally:
        for client in [*senders, alice_stats, bob_stats]:
            await client.close()
    return {
        "send_seconds": last_ack - started,
        "stored_seconds": stored_at - started,
        "drained_seconds": drained_at - started,
    }


# --- one repeat, and the record -----------------------------------------------------------


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far, from /proc/PID/stat (Linux)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def one_repeat(args: Any) -> dict[str, Any]:
    n = args.throughput_messages
    with ExitStack() as stack:
        alice = start_daemon(stack, "alice")
        bob = start_daemon(stack, "bob")
        make_contacts(alice, bob)
        load = os.getloadavg()[0]
        cpu_before = cpu_seconds(alice.pid), cpu_seconds(bob.pid)
        latencies, acks, bare = trio.run(latency_and_baseline, alice, bob, args.messages)
        cpu_between = cpu_seconds(alice.pid), cpu_seconds(bob.pid)
        flow = asyncio.run(throughput(alice, bob, n, args.clients, args.concurrency))
        cpu_after = cpu_seconds(alice.pid), cpu_seconds(bob.pid)
    one_by_one = args.messages + WARMUP_MESSAGES
    return {
        "load": load,
        "alice_cpu_latency": (cpu_between[0] - cpu_before[0]) / one_by_one,
        "bob_cpu_latency": (cpu_between[1] - cpu_before[1]) / one_by_one,
        "alice_cpu_throughput": (cpu_after[0] - cpu_between[0]) / n,
        "bob_cpu_throughput": (cpu_after[1] - cpu_between[1]) / n,
        "p50": percentile(latencies, 50),
        "p90": percentile(latencies, 90),
        "p99": percentile(latencies, 99),
        "max": max(latencies),
        "ack_p50": percentile(acks, 50),
        "ack_p99": percentile(acks, 99),
        "bare_p50": percentile(bare, 50),
        "bare_p99": percentile(bare, 99),
        "ratio": median(latencies) / median(bare),
        "send_rate": n / flow["send_seconds"],
        "stored_rate": n / flow["stored_seconds"],
        "drained_rate": n / flow["drained_seconds"],
    }


def main() -> None:
    arguments = parser(__doc__.splitlines()[0], runs=3, runs_help="repeats, fresh daemons each")
    arguments.add_argument("--messages", type=int, default=1000, help="latency messages")
    arguments.add_argument("--throughput-messages", type=int, default=5000)
    arguments.add_argument("--clients", type=int, default=4, help="Alice's RPC connections")
    arguments.add_argument("--concurrency", type=int, default=64, help="send calls in flight")
    args = arguments.parse_args()
    load_before = os.getloadavg()
    started = time.perf_counter()
    repeats = [one_repeat(args) for _ in range(max(1, args.runs))]
    elapsed = time.perf_counter() - started

    def mid(key: str) -> float:
        return median([repeat[key] for repeat in repeats])

    def each_ms(key: str) -> list[float]:
        return [ms(repeat[key], 2) for repeat in repeats]

    def each_rate(key: str) -> list[float]:
        return [round(repeat[key]) for repeat in repeats]

    p50, p99, the_ratio = mid("p50"), mid("p99"), mid("ratio")
    emit(
        {
            "bench": "messaging",
            "latency_p50_ms": ms(p50, 2),
            "latency_p90_ms": ms(mid("p90"), 2),
            "latency_p99_ms": ms(p99, 2),
            "latency_max_ms": ms(mid("max"), 2),
            "send_ack_p50_ms": ms(mid("ack_p50"), 2),
            "send_ack_p99_ms": ms(mid("ack_p99"), 2),
            "baseline": "bare py-libp2p echo round trip, 100 B, one open stream, same process",
            "baseline_p50_ms": ms(mid("bare_p50"), 3),
            "baseline_p99_ms": ms(mid("bare_p99"), 3),
            "ratio": round(the_ratio, 2),
            "send_rate_msgs_per_s": round(mid("send_rate")),
            "stored_rate_msgs_per_s": round(mid("stored_rate")),
            "outbox_drained_rate_msgs_per_s": round(mid("drained_rate")),
            # Daemon CPU time (user + system) per message: one at a time (the latency phase,
            # its warm-up included), and pipelined (the throughput phase).
            "alice_cpu_ms_per_msg_one_by_one": ms(mid("alice_cpu_latency"), 2),
            "bob_cpu_ms_per_msg_one_by_one": ms(mid("bob_cpu_latency"), 2),
            "alice_cpu_ms_per_msg_pipelined": ms(mid("alice_cpu_throughput"), 2),
            "bob_cpu_ms_per_msg_pipelined": ms(mid("bob_cpu_throughput"), 2),
            "targets": {
                "latency_p50_ms": TARGET_P50_MS,
                "latency_p99_ms": TARGET_P99_MS,
                "ratio": TARGET_RATIO,
                "stored_rate_msgs_per_s": TARGET_MESSAGES_PER_S,
            },
            "met": {
                "latency_p50": ms(p50) < TARGET_P50_MS,
                "latency_p99": ms(p99) < TARGET_P99_MS,
                "ratio": the_ratio <= TARGET_RATIO,
                "stored_rate": mid("stored_rate") >= TARGET_MESSAGES_PER_S,
            },
            "repeat_latency_p50_ms": each_ms("p50"),
            "repeat_latency_p99_ms": each_ms("p99"),
            "repeat_baseline_p50_ms": [ms(repeat["bare_p50"], 3) for repeat in repeats],
            "repeat_ratio": [ratio(repeat["p50"], repeat["bare_p50"]) for repeat in repeats],
            "repeat_send_rate": each_rate("send_rate"),
            "repeat_stored_rate": each_rate("stored_rate"),
            "messages": args.messages,
            "throughput_messages": args.throughput_messages,
            "clients": args.clients,
            "concurrency": args.concurrency,
            "runs": len(repeats),
            "cpus": os.cpu_count(),
            "repeat_loadavg_1min": [round(repeat["load"], 2) for repeat in repeats],
            "loadavg_before": [round(value, 2) for value in load_before],
            "loadavg_after": [round(value, 2) for value in os.getloadavg()],
            "seconds": round(elapsed, 1),
        }
    )


if __name__ == "__main__":
    main()
