"""Ping round trip through NetHost versus a bare py-libp2p host, same process, 127.0.0.1.

Both sides do the same thing per ping (32 random bytes out and back over an open
/ipfs/ping/1.0.0 stream over TCP + Noise + Yamux); NetHost adds its wrapper around it. Pings
alternate between the two in batches of 20 so load changes hit both alike. Prints one JSON line.

    .venv/bin/python bench/bench_ping.py [--runs 5] [--pings 400] [--warmup 100]
"""

from __future__ import annotations

import argparse
import json
import secrets
import statistics
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import multiaddr
import trio
from bare_libp2p import bare_host, seed
from libp2p.abc import INetStream
from libp2p.host.ping import ID as PING_PROTOCOL_ID
from libp2p.host.ping import PING_LENGTH
from libp2p.io.utils import read_exactly
from libp2p.peer.peerinfo import PeerInfo

from p2pid.net.host import NetHost

LOOPBACK = "/ip4/127.0.0.1/tcp/0"
BATCH = 20

Ping = Callable[[], Awaitable[None]]


@asynccontextmanager
async def bare_ping() -> AsyncIterator[Ping]:
    client, server = bare_host("bare client"), bare_host("bare server")
    listen = [multiaddr.Multiaddr(LOOPBACK)]
    async with client.run(listen_addrs=listen), server.run(listen_addrs=listen):
        try:
            await client.connect(PeerInfo(server.get_id(), server.get_addrs()))
            stream = await client.new_stream(server.get_id(), [PING_PROTOCOL_ID])
            yield lambda: bare_round_trip(stream)
        finally:
            with trio.CancelScope(shield=True):
                await client.close()
                await server.close()


async def bare_round_trip(stream: INetStream) -> None:
    payload = secrets.token_bytes(PING_LENGTH)
    await stream.write(payload)
    if await read_exactly(stream, PING_LENGTH) != payload:
        raise RuntimeError("pong mismatch")


@asynccontextmanager
async def wrapped_ping() -> AsyncIterator[Ping]:
    async with (
        NetHost.open(seed("wrapped client"), [LOOPBACK]) as client,
        NetHost.open(seed("wrapped server"), [LOOPBACK]) as server,
    ):
        client.add_addrs(server.peer_id, server.listen_addrs())

        async def ping() -> None:
            await client.ping(server.peer_id)

        yield ping


async def timed_pings(ping: Ping, count: int) -> list[float]:
    round_trips = []
    for _ in range(count):
        started = time.perf_counter()
        await ping()
        round_trips.append(time.perf_counter() - started)
    return round_trips


def milliseconds(seconds: float) -> float:
    return round(seconds * 1000, 4)


async def one_run(wrapped: Ping, bare: Ping, pings: int) -> tuple[list[float], list[float]]:
    """``pings`` of each, alternating in small batches so load changes hit both alike."""
    wrapped_round_trips: list[float] = []
    bare_round_trips: list[float] = []
    for _ in range(pings // BATCH):
        wrapped_round_trips += await timed_pings(wrapped, BATCH)
        bare_round_trips += await timed_pings(bare, BATCH)
    return wrapped_round_trips, bare_round_trips


async def bench(runs: int, pings: int, warmup: int) -> dict[str, object]:
    wrapped: list[float] = []
    bare: list[float] = []
    run_ratios: list[float] = []
    async with wrapped_ping() as wrapped_ping_once, bare_ping() as bare_ping_once:
        await one_run(wrapped_ping_once, bare_ping_once, warmup)
        for _ in range(runs):
            run_wrapped, run_bare = await one_run(wrapped_ping_once, bare_ping_once, pings)
            run_ratios.append(
                round(statistics.median(run_wrapped) / statistics.median(run_bare), 3)
            )
            wrapped += run_wrapped
            bare += run_bare
    wrapped_p50, bare_p50 = statistics.median(wrapped), statistics.median(bare)
    return {
        "bench": "ping",
        "wrapped_p50_ms": milliseconds(wrapped_p50),
        "bare_p50_ms": milliseconds(bare_p50),
        "ratio": round(wrapped_p50 / bare_p50, 3),
        "wrapped_p90_ms": milliseconds(statistics.quantiles(wrapped, n=10)[-1]),
        "bare_p90_ms": milliseconds(statistics.quantiles(bare, n=10)[-1]),
        "run_ratios": run_ratios,
        "runs": runs,
        "pings_per_run": pings,
        "warmup": warmup,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--pings", type=int, default=400)
    parser.add_argument("--warmup", type=int, default=100)
    args = parser.parse_args()
    print(json.dumps(trio.run(bench, args.runs, args.pings, args.warmup)))


if __name__ == "__main__":
    main()
