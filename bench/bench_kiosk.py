"""Kiosk pairing and invocation on 127.0.0.1, in-process real nodes (NetHost + SQLCipher store).
Prints one JSON line.

- qr_pair: `pair(code)` from a person's node to a kiosk (fresh connection each run: the kiosk
  is reset and the person disconnected between runs, untimed); target < 500 ms.
- code_pair: the same with the short code (SPAKE2 + key confirmation); target < 1 s.
- invoke: `kiosk.invoke(status)` round trip on an open connection.

    .venv/bin/python bench/bench_kiosk.py [--runs 10]
"""

from __future__ import annotations

import contextlib
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path

import trio

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import trio.lowlevel
from common import emit, median, ms, parser

from p2pid.events import EventBus
from p2pid.home import Home
from p2pid.kiosk.service import KioskConfig
from p2pid.node import Node, NodeConfig, _Discovered
from p2pid.provision import create_home, unlock_vault_key
from p2pid.store.trio_store import TrioStore


@contextlib.asynccontextmanager
async def node(home: Path, name: str, kiosk: KioskConfig | None = None) -> AsyncIterator[Node]:
    create_home(Home(home), name, None)
    key = unlock_vault_key(Home(home))
    config = NodeConfig(listen_addrs=("/ip4/127.0.0.1/tcp/0",), mdns_enabled=False, kiosk=kiosk)
    async with (
        TrioStore.open(Home(home).database, key) as store,
        Node.running(store, key, EventBus(), config) as running,
    ):
        yield running


async def main(runs: int) -> None:
    qr, code, invoke = [], [], []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        config = KioskConfig(name="TV", max_failures=1000)
        async with node(root / "tv", "TV", config) as tv, node(root / "p", "Alice") as person:
            assert tv.kiosk is not None
            person._discovered[tv.net.peer_id] = _Discovered(
                tuple(tv.reachable_addrs()), tv.mdns_fields()
            )
            for run in range(runs + 1):
                for method, sink in (("qr", qr), ("code", code)):
                    await tv.kiosk.reset()
                    await trio.lowlevel.checkpoint()  # let the kiosk rotate its codes
                    await person.net.disconnect(tv.net.peer_id)
                    status = await tv.kiosk.status()
                    started = time.perf_counter()
                    if method == "qr":
                        await person.kiosks.pair(status.code, None)
                    else:
                        await person.kiosks.pair(None, status.short_code)
                    if run:
                        sink.append(time.perf_counter() - started)
                started = time.perf_counter()
                await person.kiosks.invoke("TV", "status", [])
                if run:
                    invoke.append(time.perf_counter() - started)
    emit(
        {
            "benchmark": "kiosk",
            "runs": runs,
            "qr_pair_ms": ms(median(qr)),
            "code_pair_ms": ms(median(code)),
            "invoke_status_ms": ms(median(invoke)),
            "targets_ms": {"qr_pair": 500, "code_pair": 1000},
            "ok": median(qr) < 0.5 and median(code) < 1.0,
        }
    )


if __name__ == "__main__":
    arguments = parser("kiosk pairing and invocation on loopback", runs=10).parse_args()
    trio.run(main, arguments.runs)
