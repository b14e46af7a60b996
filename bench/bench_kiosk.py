"""Kiosk pairing and invocation on 127.0.0.1 versus bare py-libp2p and SPAKE2 alone, measured in
the same run. In-process real nodes (NetHost + SQLCipher store). Prints one JSON line.

- qr_pair: `pair(code)` from a person's node to a kiosk, on a fresh connection (the kiosk is reset
  and the person disconnected between runs, untimed); target < 500 ms.
- code_pair: the same with the short code (SPAKE2 + key confirmation both ways); target < 1 s.
- invoke: `kiosk.invoke(status)` round trip on the open connection (a new stream per call).
- baselines, two bare py-libp2p hosts in this process (bench/bare_libp2p.py: TCP + Noise + Yamux):
  bare_connect = connect + open an echo stream + one 64-byte round trip on a fresh connection
  (what a pairing cannot do without), bare_stream = a new echo stream + one round trip on an
  open connection (what an invocation cannot do without); spake2 = both sides' SPAKE2
  (start + finish, python-spake2) alone, the computation the short code adds.

Each run measures every case once, interleaved, so load changes hit all alike; figures are
medians over the runs after `--warmup` untimed ones. Ratios: qr_pair and code_pair against
bare_connect, code_pair against bare_connect + spake2, invoke against bare_stream.

    .venv/bin/python bench/bench_kiosk.py [--runs 20] [--warmup 2]
"""

from __future__ import annotations

import contextlib
import secrets
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import multiaddr
import trio
import trio.testing

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bare_libp2p import ECHO, bare_host, echo
from common import BenchError, emit, median, ms, parser, percentile, ratio
from libp2p.io.utils import read_exactly
from libp2p.peer.peerinfo import PeerInfo
from spake2 import SPAKE2_A, SPAKE2_B

from p2pid.events import EventBus
from p2pid.home import Home
from p2pid.kiosk.service import KioskConfig
from p2pid.node import Node, NodeConfig, _Discovered
from p2pid.provision import create_home, unlock_vault_key
from p2pid.store.trio_store import TrioStore

LOOPBACK = "/ip4/127.0.0.1/tcp/0"
PAYLOAD = b"x" * 64
TARGETS_MS = {"qr_pair": 500, "code_pair": 1000}
SETTLE_TIMEOUT_SECONDS = 10.0
SETTLE_CUSHION_SECONDS = 0.005  # untimed: every task idle this long


# --- p2pid nodes ----------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def node(home: Path, name: str, kiosk: KioskConfig | None = None) -> AsyncIterator[Node]:
    create_home(Home(home), name, None)
    key = unlock_vault_key(Home(home))
    config = NodeConfig(listen_addrs=(LOOPBACK,), mdns_enabled=False, kiosk=kiosk)
    async with (
        TrioStore.open(Home(home).database, key) as store,
        Node.running(store, key, EventBus(), config) as running,
    ):
        yield running


async def fresh_kiosk(tv: Node, person: Node, used_code: str) -> tuple[str, str]:
    """Untimed: reset the kiosk (no owner), drop the connection, wait for fresh codes."""
    assert tv.kiosk is not None
    await tv.kiosk.reset()
    await person.net.disconnect(tv.net.peer_id)
    with trio.fail_after(SETTLE_TIMEOUT_SECONDS):
        # Both sides have seen the connection go, and the kiosk's task has rotated its codes.
        await trio.testing.wait_all_tasks_blocked(SETTLE_CUSHION_SECONDS)
    status = await tv.kiosk.status()
    if (
        status.code == used_code
        or status.owner is not None
        or person.net.is_connected(tv.net.peer_id)
    ):
        raise BenchError("the kiosk did not settle after a reset")
    return status.code, status.short_code


# --- baselines ------------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def bare_pair() -> AsyncIterator[
    tuple[Callable[[], Awaitable[float]], Callable[[], Awaitable[float]]]
]:
    """Yields (fresh connect + round trip, new stream + round trip on the open connection)."""
    client, server = bare_host("kiosk client"), bare_host("kiosk server")
    server.set_stream_handler(ECHO, echo)
    listen = [multiaddr.Multiaddr(LOOPBACK)]
    async with client.run(listen_addrs=listen), server.run(listen_addrs=listen):
        try:
            info = PeerInfo(server.get_id(), server.get_addrs())

            async def round_trip() -> None:
                stream = await client.new_stream(server.get_id(), [ECHO])
                await stream.write(PAYLOAD)
                if await read_exactly(stream, len(PAYLOAD)) != PAYLOAD:
                    raise BenchError("echo mismatch")
                await stream.close()

            async def connect() -> float:
                await client.disconnect(server.get_id())  # untimed
                with trio.fail_after(SETTLE_TIMEOUT_SECONDS):
                    await trio.testing.wait_all_tasks_blocked(SETTLE_CUSHION_SECONDS)
                if server.get_network().get_connections(client.get_id()):
                    raise BenchError("the bare server still holds the old connection")
                started = time.perf_counter()
                await client.connect(info)
                await round_trip()
                return time.perf_counter() - started

            async def stream() -> float:
                if not client.get_network().get_connections(server.get_id()):
                    await client.connect(info)  # untimed
                started = time.perf_counter()
                await round_trip()
                return time.perf_counter() - started

            yield connect, stream
        finally:
            with trio.CancelScope(shield=True):
                await client.close()
                await server.close()


def spake2_exchange() -> float:
    """Both sides of one SPAKE2 run over a random 6-digit code, as the pairing does them."""
    code = f"{secrets.randbelow(10**6):06d}".encode()
    started = time.perf_counter()
    person = SPAKE2_A(code, idA=b"person peer id", idB=b"kiosk peer id")
    kiosk = SPAKE2_B(code, idA=b"person peer id", idB=b"kiosk peer id")
    person_message, kiosk_message = person.start(), kiosk.start()
    if person.finish(kiosk_message) != kiosk.finish(person_message):
        raise BenchError("SPAKE2 keys differ")
    return time.perf_counter() - started


# --- the benchmark --------------------------------------------------------------------------


def summary(name: str, values: list[float]) -> dict[str, float]:
    return {
        f"{name}_ms": ms(median(values)),
        f"{name}_p90_ms": ms(percentile(values, 90)),
    }


async def bench(runs: int, warmup: int) -> dict[str, Any]:
    figures: dict[str, list[float]] = {
        name: [] for name in ("qr_pair", "code_pair", "invoke", "bare_connect", "bare_stream")
    }
    figures["spake2"] = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        config = KioskConfig(name="TV", max_failures=1000)
        async with (
            node(root / "tv", "TV", config) as tv,
            node(root / "p", "Alice") as person,
            bare_pair() as (bare_connect, bare_stream),
        ):
            assert tv.kiosk is not None
            # Stand in for mDNS discovery (the short code names no address).
            person._discovered[tv.net.peer_id] = _Discovered(
                tuple(tv.reachable_addrs()), tv.mdns_fields()
            )
            code = ""
            for run in range(warmup + runs):
                timed: dict[str, float] = {}
                for method in ("qr_pair", "code_pair"):
                    code, short_code = await fresh_kiosk(tv, person, code)
                    started = time.perf_counter()
                    if method == "qr_pair":
                        paired = await person.kiosks.pair(code, None)
                    else:
                        paired = await person.kiosks.pair(None, short_code)
                    timed[method] = time.perf_counter() - started
                    if paired["role"] != "owner":
                        raise BenchError(f"unexpected pairing: {paired}")
                started = time.perf_counter()
                result = await person.kiosks.invoke("TV", "status", [])
                timed["invoke"] = time.perf_counter() - started
                if not result["ok"]:
                    raise BenchError(f"status failed: {result}")
                timed["bare_connect"] = await bare_connect()
                timed["bare_stream"] = await bare_stream()
                timed["spake2"] = spake2_exchange()
                if run >= warmup:
                    for name, seconds in timed.items():
                        figures[name].append(seconds)
    qr, code_pair = median(figures["qr_pair"]), median(figures["code_pair"])
    invoke, spake2 = median(figures["invoke"]), median(figures["spake2"])
    connect, stream = median(figures["bare_connect"]), median(figures["bare_stream"])
    record: dict[str, Any] = {"bench": "kiosk"}
    for name, values in figures.items():
        record |= summary(name, values)
    return record | {
        "code_minus_qr_ms": ms(code_pair - qr),
        "baseline": "bare py-libp2p (TCP+Noise+Yamux) in this process; SPAKE2 both sides alone",
        "ratio_qr_pair": ratio(qr, connect),
        "ratio_code_pair": ratio(code_pair, connect),
        "ratio_code_pair_vs_bare_plus_spake2": ratio(code_pair, connect + spake2),
        "ratio_invoke": ratio(invoke, stream),
        "targets_ms": TARGETS_MS,
        "ok": qr * 1000 < TARGETS_MS["qr_pair"] and code_pair * 1000 < TARGETS_MS["code_pair"],
        "runs": runs,
        "warmup": warmup,
    }


def main() -> None:
    arguments = parser(__doc__.splitlines()[0], runs=20, runs_help="timed runs of each case")
    arguments.add_argument("--warmup", type=int, default=2, help="untimed runs first")
    args = arguments.parse_args()
    if args.runs < 1 or args.warmup < 0:
        arguments.error("--runs is at least 1, --warmup at least 0")
    emit(trio.run(bench, args.runs, args.warmup))


if __name__ == "__main__":
    main()
