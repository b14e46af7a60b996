"""Invite -> verified contact on 127.0.0.1, cold and warm, versus a bare py-libp2p connect plus
one stream round trip on a fresh connection, measured in the same run. Prints one JSON line.

Three daemons run for the whole benchmark: two inviters and a "warm" joiner that keeps its
connections to them. Each run an inviter makes a fresh single-use invite (`invite.create`,
timed on its own), and a joiner joins with it:

- cold: a joiner daemon started for this run alone, whose first act is the `join` RPC: the
  time includes dialling the inviter from the invite's address hint (TCP + Noise + Yamux) and
  the new process's first pass through the join code;
- fresh_conn: the same joiner then joins the second inviter, which it has never met: a fresh
  connection, from a process that has joined before;
- warm: the warm joiner joins the first inviter over its open connection;
- baseline: two bare py-libp2p hosts in this process (built like
  /work/shared/reference/libp2p_minimal.py) connect, open an echo stream and do one round
  trip; then they disconnect (untimed).

A join is timed from the joiner's `join` call to its return, when both sides have stored each
other. After each join the pair is removed on both sides (untimed), so every join makes a new
contact. Cold joiners are started `--batch` at a time, before their runs, and stopped after.

With `--wormhole-venv` (or $P2PID_WORMHOLE_VENV: a throwaway venv, see
bench/wormhole_baseline.py) each run also does one Magic Wormhole exchange through its Python
API, and every few runs one `wormhole send`/`wormhole receive` pair, against a local mailbox
server; without it that part is reported as skipped.

    .venv/bin/python bench/bench_contact_join.py [--runs 30] [--warmup 3] [--batch 6]
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import ExitStack, asynccontextmanager
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
from wormhole_baseline import Wormhole, open_wormhole, unavailable
from wormhole_baseline import summary as wormhole_summary

from p2pid.qr import qr_summary
from p2pid.rpc.client import BlockingClient

TARGET_MS = 300
LOOPBACK = "/ip4/127.0.0.1/tcp/0"
PAYLOAD = b"x" * 64
INVITE_TTL_SECONDS = 600


# --- the bare py-libp2p baseline ----------------------------------------------------------


@asynccontextmanager
async def bare_pair() -> AsyncIterator[Callable[[], Awaitable[float]]]:
    """Yields an async function: one fresh connect + echo round trip, its seconds."""
    client, server = bare_host("client"), bare_host("server")
    server.set_stream_handler(ECHO, echo)
    listen = [multiaddr.Multiaddr(LOOPBACK)]
    async with client.run(listen_addrs=listen), server.run(listen_addrs=listen):
        try:
            info = PeerInfo(server.get_id(), server.get_addrs())

            async def connect_and_round_trip() -> float:
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
                await client.disconnect(server.get_id())
                await trio.sleep(0.05)  # let the server side see the connection go
                return elapsed

            yield connect_and_round_trip
        finally:
            with trio.CancelScope(shield=True):
                await client.close()
                await server.close()


# --- p2pid daemons over RPC ---------------------------------------------------------------


class Daemon:
    """A running daemon's RPC client and identity."""

    def __init__(self, home: Path) -> None:
        self.home = home
        self.client = BlockingClient(home / "daemon.sock", timeout=60.0)
        document = self.client.call("status")
        self.identity_id: str = document["identity_id"]
        self.peer_id: str = document["peer_id"]

    def call(self, method: str, **params: Any) -> Any:
        return self.client.call(method, **params)

    def timed_call(self, method: str, **params: Any) -> tuple[float, Any]:
        started = time.perf_counter()
        result = self.client.call(method, **params)
        return time.perf_counter() - started, result

    def connected_to(self, other: Daemon) -> bool:
        return other.peer_id in self.call("status")["connected_peers"]


def start_daemon(stack: ExitStack, name: str) -> Daemon:
    home = stack.enter_context(temp_home(name))
    stack.enter_context(running_daemon(home))
    daemon = Daemon(home)
    stack.callback(daemon.client.close)
    return daemon


def invite_and_join(inviter: Daemon, joiner: Daemon) -> tuple[float, float, str]:
    """(invite.create seconds, join seconds, the code)."""
    invite_seconds, invite = inviter.timed_call("invite.create", uses=1, ttl=INVITE_TTL_SECONDS)
    join_seconds, contact = joiner.timed_call("join", code=invite["code"])
    if contact["identity_id"] != inviter.identity_id or not contact["verified"]:
        raise BenchError(f"unexpected join result: {contact}")
    return invite_seconds, join_seconds, invite["code"]


def forget(inviter: Daemon, joiner: Daemon) -> None:
    """Remove the contact pair on both sides, checking first that both had stored it."""
    for side, other in ((inviter, joiner), (joiner, inviter)):
        if not side.call("contact.show", contact=other.identity_id)["verified"]:
            raise BenchError(f"{side.home} holds {other.identity_id} unverified")
        side.call("contact.remove", contact=other.identity_id)


# --- the benchmark ------------------------------------------------------------------------


def summary(values: list[float], digits: int = 1) -> dict[str, float]:
    return {
        "median_ms": ms(median(values), digits),
        "p90_ms": ms(percentile(values, 90), digits),
        "min_ms": ms(min(values), digits),
        "max_ms": ms(max(values), digits),
    }


async def bench(
    runs: int, warmup: int, batch: int, wormhole: Wormhole | None, wormhole_every: int
) -> dict[str, Any]:
    invites: list[float] = []
    cold: list[float] = []
    fresh: list[float] = []
    warm: list[float] = []
    bare: list[float] = []
    codes: list[str] = []
    warm_kept: list[bool] = []
    wormhole_cli: list[float] = []
    wormhole_launches: list[float] = []
    wormhole_api: list[float] = []
    thread = trio.to_thread.run_sync

    async def wormhole_once(index: int) -> None:
        if wormhole is None:
            return
        wormhole_api.append(await thread(wormhole.api_exchange))
        if index % wormhole_every == 0:
            wormhole_cli.append(await thread(wormhole.cli_exchange))
            wormhole_launches.append(await thread(wormhole.launch))

    async def join_once(inviter: Daemon, joiner: Daemon, into: list[float]) -> None:
        invite_s, join_s, code = await thread(invite_and_join, inviter, joiner)
        invites.append(invite_s)
        into.append(join_s)
        if inviter is main_inviter:  # the code's length depends on the inviter's port
            codes.append(code)

    main_inviter: Daemon | None = None
    with ExitStack() as stack:
        inviter = main_inviter = await thread(start_daemon, stack, "inviter")
        other_inviter = await thread(start_daemon, stack, "inviter2")
        warm_joiner = await thread(start_daemon, stack, "warm")
        async with bare_pair() as bare_once:
            for _ in range(warmup):
                for side in (inviter, other_inviter):
                    await thread(invite_and_join, side, warm_joiner)
                    await thread(forget, side, warm_joiner)
                await bare_once()
            if wormhole is not None:
                for warm_up in (wormhole.api_exchange, wormhole.cli_exchange, wormhole.launch):
                    await thread(warm_up)
            done = 0
            while done < runs:
                with ExitStack() as batch_stack:
                    size = min(batch, runs - done)
                    joiners = [
                        await thread(start_daemon, batch_stack, f"cold{done + i}")
                        for i in range(size)
                    ]
                    await trio.sleep(0.5)  # let the fresh daemons settle after "ready"
                    for joiner in joiners:
                        # Cold: the new daemon's first act; then a second inviter it has
                        # never met: a fresh connection from a process that has joined before.
                        await join_once(inviter, joiner, cold)
                        await join_once(other_inviter, joiner, fresh)
                        await thread(forget, inviter, joiner)
                        await thread(forget, other_inviter, joiner)
                        await join_once(inviter, warm_joiner, warm)
                        warm_kept.append(await thread(warm_joiner.connected_to, inviter))
                        await thread(forget, inviter, warm_joiner)
                        bare.append(await bare_once())
                        await wormhole_once(len(bare) - 1)
                    done += size
    lengths = sorted({len(code) for code in codes})
    version, modules = qr_summary(codes[0])
    record = {
        "bench": "contact_join",
        **{f"cold_{key}": value for key, value in summary(cold).items()},
        **{f"fresh_conn_{key}": value for key, value in summary(fresh).items()},
        **{f"warm_{key}": value for key, value in summary(warm).items()},
        **{f"invite_{key}": value for key, value in summary(invites, 2).items()},
        "baseline": "bare py-libp2p connect + echo round trip, fresh connection",
        **{f"baseline_{key}": value for key, value in summary(bare, 2).items()},
        "ratio_cold": ratio(median(cold), median(bare)),
        "ratio_fresh_conn": ratio(median(fresh), median(bare)),
        "ratio_warm": ratio(median(warm), median(bare)),
        "warm_connection_kept": all(warm_kept),
        "code_chars": lengths[0] if len(lengths) == 1 else lengths,
        "qr_version": version,
        "qr_modules": modules,
        "target_ms": TARGET_MS,
        "runs": runs,
        "warmup": warmup,
    }
    if wormhole is not None:
        figures = wormhole_summary(wormhole_cli, wormhole_launches, wormhole_api)
        for key in ("median_ms", "p90_ms", "launch_median_ms", "net_median_ms"):
            record[f"wormhole_cli_{key}"] = figures[key]
        record["wormhole_api_median_ms"] = figures["api_median_ms"]
        record["wormhole_api_p90_ms"] = figures["api_p90_ms"]
        # Against the in-process API exchange (no interpreter start, like the join RPC) and
        # against the CLI pair as a user runs it.
        record["ratio_cold_wormhole_api"] = ratio(median(cold), median(wormhole_api))
        record["ratio_cold_wormhole_cli"] = ratio(median(cold), median(wormhole_cli))
        record["wormhole_cli_runs"] = len(wormhole_cli)
    return record


def main() -> None:
    arguments = parser(__doc__.splitlines()[0], runs=30, runs_help="timed runs of each case")
    arguments.add_argument("--warmup", type=int, default=3, help="untimed warm joins first")
    arguments.add_argument("--batch", type=int, default=6, help="cold joiner daemons at a time")
    arguments.add_argument(
        "--wormhole-venv",
        default=os.environ.get("P2PID_WORMHOLE_VENV"),
        help="a venv with magic-wormhole + its mailbox server (default $P2PID_WORMHOLE_VENV)",
    )
    arguments.add_argument(
        "--wormhole-runs", type=int, default=10, help="CLI wormhole exchanges (API: one per run)"
    )
    args = arguments.parse_args()
    reason = unavailable(args.wormhole_venv)
    every = max(1, math.ceil(args.runs / max(1, args.wormhole_runs)))
    with ExitStack() as stack:
        wormhole = None if reason else stack.enter_context(open_wormhole(Path(args.wormhole_venv)))
        record = trio.run(bench, args.runs, args.warmup, max(1, args.batch), wormhole, every)
    if reason is not None:
        record["wormhole_skipped"] = reason
    emit(record)


if __name__ == "__main__":
    main()
