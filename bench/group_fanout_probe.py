"""Design probe for issue 7 (group delivery): direct fan-out versus GossipSub, bare py-libp2p.

A DESIGN PROBE, not a benchmark of p2pid: it measures what the transport allows before groups are
wired into the node, so that the delivery design and the group size cap rest on figures. It is
not named ``bench_*.py``, so ``run_all.py`` does not pick it up.

One sender gets one ~300-byte message to the N-1 other hosts, for each group size N, two ways:

- ``direct``: the sender holds a connection and one long-lived stream to every member and writes
  one length-prefixed frame per member, concurrently in a trio nursery; each receiver notes the
  time it has read the frame and writes a 1-byte ack.
- ``gossip``: py-libp2p's GossipSub (``/meshsub/1.1.0``, D=6, D_lo=4, D_hi=12, 1 s heartbeat,
  defaults otherwise), every host subscribed to one topic, hosts in a sparse random graph (a ring
  plus random chords, ~6 connections each, as a deployment would be, not a full mesh); each
  subscriber notes the time the message comes out of its subscription.

Figures per (N, way), over ``--messages`` messages after a warm-up: ``all_*`` is the time from the
send until the LAST member has the message (p50, p90), ``member_p50_ms`` the median over every
(member, message) of the time until that member has it (for gossip also per hop distance from the
sender), ``cpu_*`` the process CPU time per message, i.e. the work of all hosts together; for
direct also the time until every write returned (``sent_*``, the sender's own cost) and until
every ack came back (``acked_*``). For context: setup time (hosts, connections, meshes), RSS delta
per host and CPU per second with nothing in flight (``idle_cpu_ms_per_s``: heartbeats). The
same-run baseline: one bare round trip (300-byte frame out, 1-byte ack back) between two bare
hosts, measured in each child before its hosts start; ``all_p50_in_rtts`` divides by it.

All hosts of one configuration run in one process, on 127.0.0.1 (TCP, Noise, Yamux,
max_connections_per_peer=1, built as bench/bare_libp2p.py builds them); each configuration runs in
its own child process, so its RSS delta and its background tasks do not leak into the next one.
One process means one core and the GIL for all N hosts: every receiver's decryption and
demultiplexing is serialised behind the sender's, which real devices do in parallel. The figures
are upper bounds on the per-host work and say nothing about real network latency. Messages are
paced (``--gap``) below GossipSub's default 10 messages/s per peer and topic spam limit.

    .venv/bin/python bench/group_fanout_probe.py [--sizes 10 50] [--messages 20] [--gap 0.15]
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import random
import secrets
import struct
import subprocess
import sys
import time
from collections import deque
from collections.abc import AsyncIterator, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

import multiaddr
import trio
from bare_libp2p import bare_host
from common import emit, ms, percentile, rss_kib
from libp2p.abc import IHost, INetStream
from libp2p.custom_types import TProtocol
from libp2p.io.utils import read_exactly
from libp2p.peer.peerinfo import PeerInfo
from libp2p.pubsub.gossipsub import PROTOCOL_ID_V11, GossipSub
from libp2p.pubsub.pubsub import Pubsub
from libp2p.tools.anyio_service import background_trio_service

FANOUT = TProtocol("/probe/fanout/1.0.0")
LOOPBACK = "/ip4/127.0.0.1/tcp/0"
TOPIC = "probe-group"
PAYLOAD_BYTES = 300
HEADER = struct.Struct(">II")  # frame: length, message index; then the rest of the payload
DEGREE = 6
WARMUP = 3
DELIVERY_TIMEOUT = 5.0
CHILD_TIMEOUT = 150.0
SETUP_CONCURRENCY = 8


# --- hosts ----------------------------------------------------------------------------------


@asynccontextmanager
async def running(hosts: Sequence[IHost]) -> AsyncIterator[None]:
    """Every host listening on 127.0.0.1 for the block, closed (shielded) on the way out."""
    async with AsyncExitStack() as stack:
        for host in hosts:
            await stack.enter_async_context(host.run(listen_addrs=[multiaddr.Multiaddr(LOOPBACK)]))
        try:
            yield
        finally:
            with trio.CancelScope(shield=True), trio.move_on_after(20):
                async with trio.open_nursery() as nursery:
                    for host in hosts:
                        nursery.start_soon(host.close)


async def connect_all(hosts: Sequence[IHost], edges: Sequence[tuple[int, int]]) -> None:
    limiter = trio.CapacityLimiter(SETUP_CONCURRENCY)

    async def connect(a: int, b: int) -> None:
        async with limiter:
            await hosts[a].connect(PeerInfo(hosts[b].get_id(), hosts[b].get_addrs()))

    async with trio.open_nursery() as nursery:
        for a, b in edges:
            nursery.start_soon(connect, a, b)


def payload(index: int) -> bytes:
    return struct.pack(">I", index) + secrets.token_bytes(PAYLOAD_BYTES - 4)


class Deliveries:
    """Reception times per message index and member; an event once all members have one."""

    def __init__(self, members: int) -> None:
        self.members = members
        self.times: dict[int, dict[int, float]] = {}
        self.complete: dict[int, trio.Event] = {}

    def expect(self, index: int) -> trio.Event:
        self.times[index] = {}
        self.complete[index] = trio.Event()
        return self.complete[index]

    def record(self, index: int, member: int) -> None:
        now = time.perf_counter()
        received = self.times.get(index)
        if received is None or member in received:
            return
        received[member] = now
        if len(received) == self.members:
            self.complete[index].set()


class Figures:
    """Per-message figures of one configuration."""

    def __init__(self) -> None:
        self.all: list[float] = []
        self.member: list[float] = []
        self.sent: list[float] = []
        self.acked: list[float] = []
        self.cpu: list[float] = []
        self.by_hop: dict[int, list[float]] = {}
        self.missed = 0

    def add(
        self,
        started: float,
        cpu: float,
        received: dict[int, float],
        members: int,
        hops: dict[int, int] | None = None,
    ) -> None:
        if len(received) < members:
            self.missed += members - len(received)
            return
        self.all.append(max(received.values()) - started)
        self.cpu.append(cpu)
        self.member.extend(t - started for t in received.values())
        for member, at in received.items():
            if hops is not None:
                self.by_hop.setdefault(hops[member], []).append(at - started)

    def record(self) -> dict[str, Any]:
        result: dict[str, Any] = {
            "all_ms": [ms(v) for v in self.all],
            "member_ms": [ms(v) for v in self.member],
            "cpu_ms": [ms(v) for v in self.cpu],
            "missed": self.missed,
        }
        if self.by_hop:
            result["member_p50_by_hop_ms"] = {
                str(hop): round(ms(percentile(values, 50)), 2)
                for hop, values in sorted(self.by_hop.items())
            }
        if self.sent:
            result["sent_ms"] = [ms(v) for v in self.sent]
            result["acked_ms"] = [ms(v) for v in self.acked]
        return result


# --- (a) direct fan-out ---------------------------------------------------------------------


def fanout_handler(deliveries: Deliveries, member: int) -> Any:
    async def handler(stream: INetStream) -> None:
        try:
            while True:
                length, index = HEADER.unpack(await read_exactly(stream, HEADER.size))
                await read_exactly(stream, length - 4)
                deliveries.record(index, member)
                await stream.write(b"\x01")
        except Exception:  # EOF at shutdown; an escaping exception would kill the host
            pass
        finally:
            with trio.CancelScope(shield=True), trio.move_on_after(1):
                await stream.close()

    return handler


async def send_one(stream: INetStream, data: bytes, write_returned: list[float]) -> None:
    """One member's copy: write the frame, note when the write returned, wait for the ack."""
    await stream.write(data)
    write_returned.append(time.perf_counter())
    if await read_exactly(stream, 1) != b"\x01":
        raise RuntimeError("bad ack")


def frame(data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + data


async def direct(size: int, messages: int, gap: float) -> dict[str, Any]:
    members = size - 1
    deliveries = Deliveries(members)
    gc.collect()
    rss_before, started = rss_kib(os.getpid()), time.perf_counter()
    hosts = [bare_host(f"fanout {size} {i}") for i in range(size)]
    for member in range(1, size):
        hosts[member].set_stream_handler(FANOUT, fanout_handler(deliveries, member))
    async with running(hosts):
        sender = hosts[0]
        await connect_all(hosts, [(0, b) for b in range(1, size)])
        streams = [await sender.new_stream(hosts[b].get_id(), [FANOUT]) for b in range(1, size)]
        setup = time.perf_counter() - started
        rss_per_host = (rss_kib(os.getpid()) - rss_before) / size
        idle = await idle_cpu()

        figures = Figures()
        for index in range(WARMUP + messages):
            data = frame(payload(index))
            done = deliveries.expect(index)
            write_returned: list[float] = []
            t0, cpu0 = time.perf_counter(), time.process_time()
            with trio.move_on_after(DELIVERY_TIMEOUT):
                async with trio.open_nursery() as nursery:
                    for stream in streams:
                        nursery.start_soon(send_one, stream, data, write_returned)
                await done.wait()
            acked, cpu = time.perf_counter(), time.process_time() - cpu0
            if index >= WARMUP:
                figures.add(t0, cpu, deliveries.times[index], members)
                if len(write_returned) == members:
                    figures.sent.append(max(write_returned) - t0)
                    figures.acked.append(acked - t0)
            await trio.sleep(gap)
        for stream in streams:
            await stream.close()
    return {
        "setup_s": round(setup, 3),
        "rss_per_host_kib": round(rss_per_host),
        "idle_cpu_ms_per_s": idle,
        **figures.record(),
    }


# --- (b) GossipSub --------------------------------------------------------------------------


def sparse_graph(size: int, degree: int, rng: random.Random) -> list[tuple[int, int]]:
    """A ring (so it is connected) plus random chords until hosts have ~``degree`` neighbours."""
    edges = {
        (i, (i + 1) % size) if i < (i + 1) % size else ((i + 1) % size, i) for i in range(size)
    }
    neighbours = [0] * size
    for a, b in edges:
        neighbours[a] += 1
        neighbours[b] += 1
    for i in rng.sample(range(size), size):
        candidates = [
            j
            for j in range(size)
            if j != i and neighbours[j] < degree and (min(i, j), max(i, j)) not in edges
        ]
        rng.shuffle(candidates)
        while neighbours[i] < degree and candidates:
            j = candidates.pop()
            edges.add((min(i, j), max(i, j)))
            neighbours[i] += 1
            neighbours[j] += 1
    return sorted(edges)


def hops_from(origin: int, size: int, edges: Sequence[tuple[int, int]]) -> dict[int, int]:
    """Each host's distance in hops from ``origin``: the fewest hops a message can take."""
    adjacent: dict[int, list[int]] = {i: [] for i in range(size)}
    for a, b in edges:
        adjacent[a].append(b)
        adjacent[b].append(a)
    distance = {origin: 0}
    queue = deque([origin])
    while queue:
        node = queue.popleft()
        for other in adjacent[node]:
            if other not in distance:
                distance[other] = distance[node] + 1
                queue.append(other)
    return distance


def new_router() -> GossipSub:
    return GossipSub(
        protocols=[PROTOCOL_ID_V11],
        degree=DEGREE,
        degree_low=4,
        degree_high=12,
        heartbeat_initial_delay=0.1,
        heartbeat_interval=1,
    )


async def wait_for_meshes(pubsubs: Sequence[Pubsub], edges: Sequence[tuple[int, int]]) -> None:
    """Until every host has every neighbour as a subscriber and in its topic mesh (<= 6 each)."""
    for a, b in edges:
        for near, far in ((a, b), (b, a)):
            await pubsubs[near].wait_for_subscription(pubsubs[far].my_id, TOPIC, timeout=20)
            await pubsubs[near].wait_for_mesh(pubsubs[far].my_id, TOPIC, timeout=20)


async def gossip(size: int, messages: int, gap: float) -> dict[str, Any]:
    members = size - 1
    edges = sparse_graph(size, DEGREE, random.Random(size))
    hops = hops_from(0, size, edges)
    deliveries = Deliveries(members)
    gc.collect()
    rss_before, started = rss_kib(os.getpid()), time.perf_counter()
    hosts = [bare_host(f"gossip {size} {i}") for i in range(size)]
    routers = [new_router() for _ in hosts]
    pubsubs = [Pubsub(host, router) for host, router in zip(hosts, routers, strict=True)]

    async def receive(member: int, subscription: Any) -> None:
        while True:
            message = await subscription.get()
            deliveries.record(struct.unpack(">I", message.data[:4])[0], member)

    async with running(hosts), AsyncExitStack() as services:
        for pubsub, router in zip(pubsubs, routers, strict=True):
            await services.enter_async_context(background_trio_service(pubsub))
            await services.enter_async_context(background_trio_service(router))
            await pubsub.wait_until_ready()
        # The receivers' nursery opens only once every service runs: nurseries must nest.
        async with trio.open_nursery() as nursery:
            for member, pubsub in enumerate(pubsubs):
                subscription = await pubsub.subscribe(TOPIC)
                if member:
                    nursery.start_soon(receive, member, subscription)
            await connect_all(hosts, edges)
            await wait_for_meshes(pubsubs, edges)
            setup = time.perf_counter() - started
            rss_per_host = (rss_kib(os.getpid()) - rss_before) / size
            idle = await idle_cpu()

            figures = Figures()
            for index in range(WARMUP + messages):
                done = deliveries.expect(index)
                t0, cpu0 = time.perf_counter(), time.process_time()
                await pubsubs[0].publish(TOPIC, payload(index))
                with trio.move_on_after(DELIVERY_TIMEOUT):
                    await done.wait()
                cpu = time.process_time() - cpu0
                if index >= WARMUP:
                    figures.add(t0, cpu, deliveries.times[index], members, hops)
                await trio.sleep(gap)
            nursery.cancel_scope.cancel()
    return {
        "setup_s": round(setup, 3),
        "rss_per_host_kib": round(rss_per_host),
        "idle_cpu_ms_per_s": idle,
        "connections_per_host": round(2 * len(edges) / size, 1),
        "sender_hops_max": max(hops.values()),
        "sender_mesh": len(routers[0].mesh.get(TOPIC, ())),
        **figures.record(),
    }


# --- baseline -------------------------------------------------------------------------------


async def baseline(rounds: int = 100, warmup: int = 20) -> list[float]:
    """One bare round trip: a 300-byte frame out, a 1-byte ack back, two bare hosts."""
    deliveries = Deliveries(1)
    client, server = bare_host("fanout baseline client"), bare_host("fanout baseline server")
    server.set_stream_handler(FANOUT, fanout_handler(deliveries, 1))
    round_trips = []
    async with running([client, server]):
        await client.connect(PeerInfo(server.get_id(), server.get_addrs()))
        stream = await client.new_stream(server.get_id(), [FANOUT])
        for index in range(warmup + rounds):
            deliveries.expect(index)
            t0 = time.perf_counter()
            await stream.write(frame(payload(index)))
            await read_exactly(stream, 1)
            if index >= warmup:
                round_trips.append(time.perf_counter() - t0)
        await stream.close()
    return round_trips


async def idle_cpu(seconds: float = 1.0) -> float:
    """CPU milliseconds per second all hosts spend with no message in flight (heartbeats)."""
    cpu0 = time.process_time()
    await trio.sleep(seconds)
    return round((time.process_time() - cpu0) * 1000 / seconds, 1)


# --- driver ---------------------------------------------------------------------------------


def child(way: str, size: int, messages: int, gap: float) -> dict[str, Any]:
    """One configuration, in this process, after its own bare round-trip baseline."""
    round_trips = trio.run(baseline)
    measure = direct if way == "direct" else gossip
    record = trio.run(measure, size, messages, gap)
    record["rtt_p50_ms"] = ms(percentile(round_trips, 50))
    record["rtt_p90_ms"] = ms(percentile(round_trips, 90))
    return record


def run_child(way: str, size: int, messages: int, gap: float) -> dict[str, Any]:
    command = [sys.executable, __file__, "--child", way, "--sizes", str(size)]
    command += ["--messages", str(messages), "--gap", str(gap)]
    try:
        completed = subprocess.run(
            command,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=CHILD_TIMEOUT,
            check=False,
        )
        stdout, stderr, status = completed.stdout, completed.stderr, completed.returncode
    except subprocess.TimeoutExpired as expired:
        stdout = expired.stdout.decode() if isinstance(expired.stdout, bytes) else ""
        stderr, status = f"timed out after {CHILD_TIMEOUT:.0f} s", -1
    lines = [line for line in (stdout or "").splitlines() if line.startswith("{")]
    if not lines:
        return {"error": f"exit status {status}", "output": (stderr or "").strip()[-600:]}
    record: dict[str, Any] = json.loads(lines[-1])
    return record


def summary(raw: dict[str, Any]) -> dict[str, Any]:
    if "error" in raw:
        return raw
    result = {k: v for k, v in raw.items() if not isinstance(v, list)}
    for key in ("all", "sent", "acked", "cpu"):
        values = raw.get(f"{key}_ms")
        if values:
            result[f"{key}_p50_ms"] = round(percentile(values, 50), 2)
            result[f"{key}_p90_ms"] = round(percentile(values, 90), 2)
    if raw.get("all_ms") and raw.get("rtt_p50_ms"):
        result["all_p50_in_rtts"] = round(percentile(raw["all_ms"], 50) / raw["rtt_p50_ms"], 1)
    if raw.get("member_ms"):
        result["member_p50_ms"] = round(percentile(raw["member_ms"], 50), 2)
    result["messages"] = len(raw.get("all_ms", []))
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10, 50])
    parser.add_argument("--messages", type=int, default=20)
    parser.add_argument("--gap", type=float, default=0.15, help="seconds between messages")
    parser.add_argument("--child", choices=["direct", "gossip"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.sizes[0], args.messages, args.gap)), flush=True)
        return
    record: dict[str, Any] = {"bench": "group_fanout_probe", "payload_bytes": PAYLOAD_BYTES}
    baselines = []
    for size in args.sizes:
        for way in ("direct", "gossip"):
            result = summary(run_child(way, size, args.messages, args.gap))
            record[f"{way}_{size}"] = result
            if "rtt_p50_ms" in result:
                baselines.append(result["rtt_p50_ms"])
    # the same-run baseline: each child measured one bare round trip before its hosts started
    if baselines:
        record["baseline_rtt_p50_ms"] = round(percentile(baselines, 50), 3)
    emit(record)


if __name__ == "__main__":
    main()
