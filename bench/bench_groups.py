"""Groups between real in-process p2pid nodes on 127.0.0.1 (NetHost + SQLCipher store, mDNS off)
versus bare py-libp2p, measured in the same run. Prints one JSON line (flat keys per measure).

- create_N: from `groups.create` until the first message reached every member, until the
  process is idle again (the group forming: every member introduces itself to every other, an
  Olm session per pair), and the CPU it took; capped at 240 s. Default N = 10 only: at 30 members
  the forming takes minutes of CPU in one process and at 50 it did not converge in 240 s (see
  docs/benchmarks.md), so larger sizes are opt-in (`--sizes 10 30`), outside run_all's budget.
- fanout_N (N members, one node each): from `groups.send` until the message is committed
  on every other member's node (each node's `group.message_received` event); p50/p90 over
  `--runs` messages after `--warmup` untimed ones (the first opens the Olm sessions and shares the
  Megolm key). `send_*` is the `send` call alone (the sender's transaction). Baseline: bare
  direct fan-out of a frame the size of one Megolm envelope to N-1 bare hosts
  (bench/group_fanout_probe.py's direct mode, in this process after the nodes stopped).
- rotation_50: `remove` a member, then the first `send` (a new Megolm session and one Olm key
  share per member device) against the normal sends that follow it at the same size; `--rotations`
  rounds.
- catchup: a 3-member group (sender, absent member, third member); the absent member's node is
  stopped while `--backlog` messages are sent; then (a) it starts again with the sender online:
  time from the start until it holds them all (the sender's outbox, plus whatever automatic
  catch-up runs on connecting); (b) the same with the sender stopped first, the member calling
  `groups.sync(group)` right after starting (the third member serves the history). Baseline: the
  same envelopes' bytes over one fresh bare connection and stream (connect, write, 1-byte ack).

    .venv/bin/python bench/bench_groups.py [--runs 20] [--warmup 2] [--sizes 10] [--backlog 500]
"""

from __future__ import annotations

import gc
import os
import secrets
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec
import trio
import trio.testing

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import group_fanout_probe as probe
from bare_libp2p import bare_host
from common import BenchError, emit, median, ms, parser, percentile, ratio, rss_kib
from libp2p.abc import INetStream
from libp2p.custom_types import TProtocol
from libp2p.io.utils import read_exactly
from libp2p.peer.peerinfo import PeerInfo

from p2pid.events import EventBus
from p2pid.home import Home
from p2pid.node import Node, NodeConfig
from p2pid.provision import create_home, unlock_vault_key
from p2pid.store.trio_store import TrioStore
from p2pid.wire.events import ContactAdded, Event
from p2pid.wire.group_views import GroupMessageReceived
from p2pid.wire.messages import Envelope, OlmType

LOOPBACK = "/ip4/127.0.0.1/tcp/0"
TEXT_BYTES = 200
TARGET_MS = 250
DELIVERY_TIMEOUT = 60.0
CATCHUP_TIMEOUT = 120.0
SETUP_TIMEOUT = 120.0
SETTLE_SECONDS = 3.0
QUIESCE_LIMIT = 240.0
BULK = TProtocol("/bench/bulk/1.0.0")


def text(tag: str) -> str:
    return (tag + " " + "x" * TEXT_BYTES)[:TEXT_BYTES]


# --- nodes and what they receive -----------------------------------------------------------


@dataclass
class Member:
    name: str
    home: Path
    node: Node | None = None
    stop: trio.Event = field(default_factory=trio.Event)
    stopped: trio.Event = field(default_factory=trio.Event)

    @property
    def running(self) -> Node:
        if self.node is None:
            raise BenchError(f"{self.name} is not running")
        return self.node


class Tracker:
    """What each node's event bus announced: group messages by text, contacts added."""

    def __init__(self) -> None:
        self.received: dict[str, dict[str, float]] = {}  # text -> member -> time
        self.contacts_added: dict[str, int] = {}
        self._waits: list[tuple[Callable[[], bool], trio.Event]] = []

    def note(self, member: str, event: Event) -> None:
        if isinstance(event, GroupMessageReceived):
            self.received.setdefault(event.message.text, {}).setdefault(member, time.perf_counter())
        elif isinstance(event, ContactAdded):
            self.contacts_added[member] = self.contacts_added.get(member, 0) + 1
        else:
            return
        for condition, done in list(self._waits):
            if condition():
                done.set()
                self._waits.remove((condition, done))

    async def until(self, condition: Callable[[], bool], seconds: float, what: str) -> None:
        if condition():
            return
        done = trio.Event()
        self._waits.append((condition, done))
        with trio.move_on_after(seconds):
            await done.wait()
            return
        self._waits.remove((condition, done))
        raise BenchError(f"timed out after {seconds:.0f} s waiting for {what}")

    def has_all(self, message: str, members: list[str]) -> bool:
        got = self.received.get(message, {})
        return all(m in got for m in members)

    def count(self, member: str, messages: list[str]) -> int:
        return sum(1 for m in messages if member in self.received.get(m, {}))


class Cluster:
    def __init__(self, root: Path, nursery: trio.Nursery, tracker: Tracker) -> None:
        self.root, self.nursery, self.tracker = root, nursery, tracker
        self.members: dict[str, Member] = {}

    async def start(self, name: str) -> Member:
        member = self.members.get(name)
        if member is None:
            member = self.members[name] = Member(name, self.root / name.lower())
        else:
            member.stop, member.stopped = trio.Event(), trio.Event()
        await self.nursery.start(self._run, member)
        return member

    async def stop(self, member: Member) -> None:
        member.stop.set()
        await member.stopped.wait()

    async def _run(self, member: Member, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        home = Home(member.home)
        if not home.database.exists():
            create_home(home, member.name, None)
        key = unlock_vault_key(home)
        bus = EventBus()
        events = bus.subscribe()
        config = NodeConfig(listen_addrs=(LOOPBACK,), mdns_enabled=False)
        try:
            async with (
                TrioStore.open(home.database, key) as store,
                Node.running(store, key, bus, config) as node,
                trio.open_nursery() as inner,
            ):
                inner.start_soon(self._drain, member.name, events)
                member.node = node
                task_status.started()
                await member.stop.wait()
                member.node = None
                inner.cancel_scope.cancel()
        finally:
            member.node = None
            member.stopped.set()

    async def _drain(self, name: str, events: trio.MemoryReceiveChannel[Event]) -> None:
        async for event in events:
            self.tracker.note(name, event)


async def quiesce(limit: float = QUIESCE_LIMIT) -> float:
    """Untimed: wait until this process uses under 10 % of a core over half a second (every
    node idle); the seconds it took (at most `limit`)."""
    started = time.perf_counter()
    while time.perf_counter() - started < limit:
        cpu = time.process_time()
        await trio.sleep(0.5)
        if time.process_time() - cpu < 0.05:
            break
    return time.perf_counter() - started


async def settle() -> None:
    """Untimed: let receipts and other tails of the last message die down (bounded)."""
    with trio.move_on_after(SETTLE_SECONDS):
        await trio.testing.wait_all_tasks_blocked(0.02)


async def befriend_all(cluster: Cluster, creator: Member, others: list[Member]) -> None:
    """Every other member joins the creator through one multi-use invite."""
    invite = await creator.running.create_invite(len(others), 3600)
    before = cluster.tracker.contacts_added.get(creator.name, 0)
    limiter = trio.CapacityLimiter(8)

    async def join(member: Member) -> None:
        async with limiter:
            await member.running.join(invite.code)

    async with trio.open_nursery() as nursery:
        for member in others:
            nursery.start_soon(join, member)
    await cluster.tracker.until(
        lambda: cluster.tracker.contacts_added.get(creator.name, 0) - before >= len(others),
        SETUP_TIMEOUT,
        "the creator to add every contact",
    )


async def timed_send(
    tracker: Tracker,
    sender: Member,
    group: str,
    message: str,
    receivers: list[str],
    seconds: float = DELIVERY_TIMEOUT,
) -> tuple[float, float]:
    """(seconds in the send call, seconds until every receiver committed the message)."""
    started = time.perf_counter()
    await sender.running.groups.send(group, message)
    sent = time.perf_counter() - started
    try:
        await tracker.until(
            lambda: tracker.has_all(message, receivers), seconds, f"{message[:12]!r}"
        )
    except BenchError as error:
        got = tracker.received.get(message, {})
        missing = [m for m in receivers if m not in got]
        raise BenchError(f"{error}; {len(missing)} members lack it: {missing}") from None
    last = max(tracker.received[message][m] for m in receivers)
    return sent, last - started


def figures(prefix: str, values: list[float]) -> dict[str, float]:
    return {
        f"{prefix}_p50_ms": ms(median(values), 2),
        f"{prefix}_p90_ms": ms(percentile(values, 90), 2),
    }


# --- the measures ---------------------------------------------------------------------------


async def fanout(
    tracker: Tracker, creator: Member, group: str, receivers: list[str], runs: int, warmup: int
) -> tuple[list[float], list[float]]:
    sends: list[float] = []
    alls: list[float] = []
    for index in range(warmup + runs):
        sent, everyone = await timed_send(
            tracker, creator, group, text(f"{group[:8]} {index} {secrets.token_hex(4)}"), receivers
        )
        if index >= warmup:
            sends.append(sent)
            alls.append(everyone)
        await settle()
    return sends, alls


async def envelope_bytes(creator: Member, group: str) -> int:
    """The wire size of one Megolm envelope of the last message the creator sent to `group`."""
    group_id = bytes.fromhex(group)

    def read(conn: Any) -> bytes:
        row = conn.execute(
            "SELECT ciphertext FROM group_envelopes WHERE group_id = ? ORDER BY rowid DESC LIMIT 1",
            (group_id,),
        ).fetchone()
        return bytes(row[0])

    body = await creator.running.store.read(read)
    envelope = Envelope(
        message_id=b"\0" * 16,
        sender_identity=b"\0" * 32,
        sender_device=b"\0" * 32,
        recipient_device=b"\0" * 32,
        olm_type=OlmType.MEGOLM,
        body=body,
    )
    return len(msgspec.msgpack.encode(envelope))


async def rotation(
    tracker: Tracker, creator: Member, group: str, receivers: list[str], rounds: int
) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {"rot_send": [], "rot_all": [], "norm_send": [], "norm_all": []}
    receivers = list(receivers)
    for round_ in range(rounds):
        removed = receivers.pop()
        await creator.running.groups.remove(group, removed)
        sent, everyone = await timed_send(
            tracker, creator, group, text(f"rot {round_} {secrets.token_hex(4)}"), receivers
        )
        out["rot_send"].append(sent)
        out["rot_all"].append(everyone)
        await settle()
        for index in range(3):
            sent, everyone = await timed_send(
                tracker,
                creator,
                group,
                text(f"norm {round_} {index} {secrets.token_hex(4)}"),
                receivers,
            )
            out["norm_send"].append(sent)
            out["norm_all"].append(everyone)
            await settle()
    return out


async def catchup(
    cluster: Cluster, sender: Member, absent: Member, third: Member, backlog: int
) -> dict[str, Any]:
    tracker = cluster.tracker
    view = await sender.running.groups.create("Catchup", "", [absent.name, third.name])
    group = view.group_id
    receivers = [absent.name, third.name]
    await timed_send(tracker, sender, group, text("catchup warm"), receivers)
    await settle()
    result: dict[str, Any] = {}
    total_bytes = 0

    async def send_backlog(tag: str) -> list[str]:
        nonlocal total_bytes
        messages = [text(f"{tag} {i} {secrets.token_hex(4)}") for i in range(backlog)]
        started = time.perf_counter()
        for message in messages:
            await sender.running.groups.send(group, message)
        result[f"catchup_{tag}_send_each_ms"] = ms((time.perf_counter() - started) / backlog, 2)
        await tracker.until(
            lambda: tracker.count(third.name, messages) == backlog,
            CATCHUP_TIMEOUT,
            "the third member to receive the backlog",
        )
        total_bytes = backlog * await envelope_bytes(sender, group)
        return messages

    # (a) through the sender's outbox (and automatic catch-up on connecting)
    await cluster.stop(absent)
    messages = await send_backlog("outbox")
    started = time.perf_counter()
    await cluster.start(absent.name)
    result["catchup_restart_ms"] = ms(time.perf_counter() - started, 1)
    await tracker.until(
        lambda: tracker.count(absent.name, messages) == backlog,
        CATCHUP_TIMEOUT,
        "the absent member to receive the backlog (outbox)",
    )
    result["catchup_outbox_ms"] = ms(
        max(tracker.received[m][absent.name] for m in messages) - started, 1
    )
    await settle()

    # (b) the sender stopped; the member calls groups.sync as soon as it runs ("sync": as a user
    # would, it may dial the offline sender first), or once connected to the third member
    # ("sync_connected": the catch-up alone)
    for tag in ("sync", "sync_connected"):
        if sender.node is None:
            await cluster.start(sender.name)
        await cluster.stop(absent)
        messages = await send_backlog(tag)
        await cluster.stop(sender)
        started = time.perf_counter()
        await cluster.start(absent.name)
        if tag == "sync_connected":
            await absent.running.net.connect(third.running.net.peer_id)
        synced = await absent.running.groups.sync(group)
        result[f"catchup_{tag}_call_ms"] = ms(time.perf_counter() - started, 1)
        await tracker.until(
            lambda wanted=messages: tracker.count(absent.name, wanted) == backlog,  # type: ignore[misc]
            CATCHUP_TIMEOUT,
            f"the absent member to receive the backlog ({tag})",
        )
        last = max(tracker.received[m][absent.name] for m in messages)
        result[f"catchup_{tag}_ms"] = ms(last - started, 1)
        result[f"catchup_{tag}_reported_messages"] = synced.messages
        await settle()
    result["catchup_bytes"] = total_bytes
    return result


# --- baselines ------------------------------------------------------------------------------


async def bulk_baseline(total: int, runs: int = 3) -> float:
    """Fresh bare connection + one stream carrying `total` bytes + a 1-byte ack; median s."""

    async def sink(stream: INetStream) -> None:
        try:
            await read_exactly(stream, total)
            await stream.write(b"\x01")
        finally:
            await stream.close()

    data = os.urandom(total)
    times = []
    for index in range(runs):
        client, server = bare_host(f"bulk client {index}"), bare_host(f"bulk server {index}")
        server.set_stream_handler(BULK, sink)
        async with probe.running([client, server]):
            started = time.perf_counter()
            await client.connect(PeerInfo(server.get_id(), server.get_addrs()))
            stream = await client.new_stream(server.get_id(), [BULK])
            await stream.write(data)
            if await read_exactly(stream, 1) != b"\x01":
                raise BenchError("bad ack")
            times.append(time.perf_counter() - started)
            await stream.close()
    return median(times)


# --- the benchmark --------------------------------------------------------------------------


async def bench(args: Any) -> dict[str, Any]:
    record: dict[str, Any] = {"bench": "groups"}
    sizes: list[int] = sorted(args.sizes)
    tracker = Tracker()
    envelope_size = 0
    catchup_bytes = 0
    with tempfile.TemporaryDirectory() as tmp:
        async with trio.open_nursery() as nursery:
            cluster = Cluster(Path(tmp), nursery, tracker)
            gc.collect()
            rss_before = rss_kib(os.getpid())
            started = time.perf_counter()
            creator = await cluster.start("Admin")
            names = [f"M{i:02d}" for i in range(1, max(sizes))]
            others = []
            for name in names:
                others.append(await cluster.start(name))
            record["nodes"] = len(others) + 1
            record["rss_per_node_kib"] = round(
                (rss_kib(os.getpid()) - rss_before) / (len(others) + 1)
            )
            await befriend_all(cluster, creator, others)
            record["setup_s"] = round(time.perf_counter() - started, 1)

            for size in sizes:
                receivers = names[: size - 1]
                started, cpu = time.perf_counter(), time.process_time()
                view = await creator.running.groups.create(f"G{size}", "", receivers)
                # Untimed as fan-out: the group forming (ops, every member introducing itself
                # to every other, Olm sessions) and the first message (the Megolm key shares).
                _, first = await timed_send(
                    tracker, creator, view.group_id, text("first"), receivers, QUIESCE_LIMIT
                )
                record[f"create_{size}_first_message_s"] = round(first, 2)
                await quiesce()
                record[f"create_{size}_settled_s"] = round(time.perf_counter() - started, 1)
                record[f"create_{size}_cpu_s"] = round(time.process_time() - cpu, 1)
                sends, alls = await fanout(
                    tracker, creator, view.group_id, receivers, args.runs, args.warmup
                )
                record |= figures(f"fanout_{size}_all", alls) | figures(
                    f"fanout_{size}_send", sends
                )
                envelope_size = await envelope_bytes(creator, view.group_id)
                if size == max(sizes) and args.rotations:
                    rot = await rotation(tracker, creator, view.group_id, receivers, args.rotations)
                    record |= figures(f"rotation_{size}_first_send", rot["rot_send"])
                    record |= figures(f"rotation_{size}_first_all", rot["rot_all"])
                    record |= figures(f"rotation_{size}_normal_send", rot["norm_send"])
                    record |= figures(f"rotation_{size}_normal_all", rot["norm_all"])
                    record[f"ratio_rotation_{size}_send"] = ratio(
                        median(rot["rot_send"]), median(rot["norm_send"])
                    )
                    record[f"ratio_rotation_{size}_all"] = ratio(
                        median(rot["rot_all"]), median(rot["norm_all"])
                    )
            record["rss_after_fanout_per_node_kib"] = round(
                (rss_kib(os.getpid()) - rss_before) / (len(others) + 1)
            )
            if args.backlog:
                caught = await catchup(cluster, creator, others[0], others[1], args.backlog)
                catchup_bytes = caught.pop("catchup_bytes")
                record |= caught
            for member in list(cluster.members.values()):
                if member.node is not None:
                    member.stop.set()
    gc.collect()
    record["envelope_bytes"] = envelope_size
    for size in sizes:
        probe.PAYLOAD_BYTES = envelope_size
        probe.WARMUP = args.warmup
        bare = await probe.direct(size, args.runs, 0.05)
        bare_all = [v / 1000 for v in bare["all_ms"]]
        record |= figures(f"bare_fanout_{size}_all", bare_all)
        record[f"ratio_fanout_{size}"] = ratio(
            record[f"fanout_{size}_all_p50_ms"], record[f"bare_fanout_{size}_all_p50_ms"]
        )
    if catchup_bytes:
        bulk = await bulk_baseline(catchup_bytes)
        record["catchup_bare_bulk_ms"] = ms(bulk, 2)
        record["catchup_backlog_bytes"] = catchup_bytes
        record["ratio_catchup_outbox"] = ratio(record["catchup_outbox_ms"] / 1000, bulk)
        for tag in ("sync", "sync_connected"):
            record[f"ratio_catchup_{tag}"] = ratio(record[f"catchup_{tag}_ms"] / 1000, bulk)
    top = max(sizes)
    record["target_ms"] = TARGET_MS
    record["ok"] = record[f"fanout_{top}_all_p50_ms"] < TARGET_MS
    record["runs"] = args.runs
    record["warmup"] = args.warmup
    record["backlog"] = args.backlog
    return record


def main() -> None:
    arguments = parser(__doc__.splitlines()[0], runs=20, runs_help="timed messages per size")
    arguments.add_argument("--warmup", type=int, default=2, help="untimed messages first")
    arguments.add_argument("--sizes", type=int, nargs="+", default=[10])
    arguments.add_argument("--rotations", type=int, default=3, help="removals at the top size")
    arguments.add_argument("--backlog", type=int, default=500, help="messages missed (0: skip)")
    args = arguments.parse_args()
    if args.runs < 1 or args.warmup < 1 or min(args.sizes) < 3:
        arguments.error("--runs and --warmup are at least 1, sizes at least 3")
    emit(trio.run(bench, args))


if __name__ == "__main__":
    main()
