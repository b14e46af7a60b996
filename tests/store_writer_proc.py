"""Crash-test helper: many producers write peers through TrioStore until killed.

Usage: STORE_WRITER_KEY=<64 hex> store_writer_proc.py DB_PATH [--producers N]
       [--writes-per-producer N]

The vault key comes in the environment, not argv: argv is world-readable in /proc.

Each id (the peer_id written) is printed on its own line only after `write()`
returned, i.e. after the transaction holding it committed. The test kills this
process with SIGKILL and checks that every printed id is in the database.
"""

from __future__ import annotations

import argparse
import os
import sys
from functools import partial
from pathlib import Path

import trio

from p2pid.store import TrioStore
from p2pid.store.queries import upsert_peer_seen

KEY_ENV = "STORE_WRITER_KEY"


def acknowledge(peer_id: str) -> None:
    sys.stdout.write(peer_id + "\n")
    sys.stdout.flush()


async def produce(store: TrioStore, producer: int, writes: int) -> None:
    for n in range(writes):
        peer_id = f"peer-{producer}-{n}"
        write = partial(
            upsert_peer_seen,
            peer_id=peer_id,
            addrs=[f"/ip4/127.0.0.1/tcp/{4000 + producer}"],
            source="manual",
            fields={"producer": str(producer)},
            now_ms=n,
        )
        await store.write(write)
        acknowledge(peer_id)


async def main(db_path: Path, key: bytes, producers: int, writes: int) -> None:
    async with TrioStore.open(db_path, key) as store, trio.open_nursery() as nursery:
        for producer in range(producers):
            nursery.start_soon(produce, store, producer, writes)


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("db_path", type=Path)
    parser.add_argument("--producers", type=int, default=32)
    parser.add_argument("--writes-per-producer", type=int, default=1_000_000)
    return parser.parse_args(argv)


if __name__ == "__main__":
    args = parse_args(sys.argv[1:])
    key = bytes.fromhex(os.environ[KEY_ENV])
    trio.run(main, args.db_path, key, args.producers, args.writes_per_producer)
