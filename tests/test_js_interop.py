"""js-libp2p interoperability: identify and ping between js-libp2p and a p2pid node, both ways.

The JS side is tests/interop/js/ping.mjs (js-libp2p 2.x over TCP with Noise and Yamux), run as a
subprocess (from a worker thread when it dials, so the trio host keeps serving). Its npm
dependencies are installed from the committed lockfile on first use. Skips only when node/npm
are missing.
"""

from __future__ import annotations

import functools
import hashlib
from pathlib import Path
from typing import Any, Literal

import pytest
import trio

from p2pid.net.host import NetHost
from tests.interop.js_peer import (
    ensure_node_modules,
    js_listener,
    js_ping,
    node_unavailable_reason,
)

LOOPBACK = ["/ip4/127.0.0.1/tcp/0"]
SEED = hashlib.sha256(b"p2pid js-libp2p interop test").digest()


@pytest.fixture(scope="module")
def js_dir() -> Path:
    reason = node_unavailable_reason()
    if reason is not None:
        pytest.skip(reason)
    path = ensure_node_modules()
    assert path is not None
    return path


async def run_js_ping(
    target: str,
    count: int = 3,
    js_timeout: float = 30,
    security: Literal["noise", "plaintext"] = "noise",
) -> dict[str, Any]:
    """js_ping() in a worker thread; the JS script enforces ``js_timeout`` itself."""
    call = functools.partial(js_ping, target, count, js_timeout, security=security)
    return await trio.to_thread.run_sync(call)


def dial_target(host: NetHost) -> str:
    addrs = host.listen_addrs()
    assert addrs, "the p2pid host listens nowhere"
    return f"{addrs[0]}/p2p/{host.peer_id}"


async def test_js_libp2p_identifies_and_pings_p2pid(js_dir: Path) -> None:
    async with NetHost.open(SEED, LOOPBACK) as host:
        result = await run_js_ping(dial_target(host), count=3)
        peer_id = host.peer_id

    assert result["ok"] is True, result
    assert result["exit_code"] == 0, result
    assert result["peer"] == peer_id
    assert result["security"] == "/noise"
    assert result["muxer"] == "/yamux/1.0.0"
    rtts = result["rtts_ms"]
    assert len(rtts) == 3, result
    assert all(type(rtt) in (int, float) and rtt > 0 for rtt in rtts), rtts
    assert isinstance(result["agent"], str) and result["agent"], result
    assert "/ipfs/ping/1.0.0" in result["protocols"], result["protocols"]
    assert "/ipfs/id/1.0.0" in result["protocols"], result["protocols"]


async def test_p2pid_pings_js_libp2p(js_dir: Path) -> None:
    async with NetHost.open(SEED, LOOPBACK) as host, js_listener() as js:
        js_peer_id = js["peer"]
        host.add_addrs(js_peer_id, js["listening"])
        with trio.fail_after(20):
            await host.connect(js_peer_id)
            # NetHost keeps one ping stream per peer: these ride the same JS ping stream
            rtts = [await host.ping(js_peer_id) for _ in range(3)]

    assert all(rtt > 0 for rtt in rtts), rtts


async def test_p2pid_identifies_js_libp2p(js_dir: Path) -> None:
    async with NetHost.open(SEED, LOOPBACK) as host, js_listener() as js:
        js_peer_id = js["peer"]
        host.add_addrs(js_peer_id, js["listening"])
        with trio.fail_after(20):
            await host.connect(js_peer_id)
            info = await host.identify(js_peer_id)

    assert info.peer_id == js_peer_id
    assert info.agent_version.startswith("js-libp2p/"), info
    assert "/ipfs/ping/1.0.0" in info.protocols, info
    assert "/ipfs/id/1.0.0" in info.protocols, info


async def test_js_plaintext_only_node_cannot_connect(js_dir: Path) -> None:
    async with NetHost.open(SEED, LOOPBACK) as host:
        target = dial_target(host)
        refused = await run_js_ping(target, count=1, js_timeout=15, security="plaintext")
        # the refusal leaves the host serving: a Noise peer still gets through afterwards
        accepted = await run_js_ping(target, count=1)

    assert refused["ok"] is False, refused
    assert refused["exit_code"] != 0, refused
    # refused at security negotiation, not for some unrelated reason
    assert "EncryptionFailedError" in refused["error"], refused
    assert accepted["ok"] is True, accepted


async def test_js_plaintext_peer_connects_to_a_default_py_libp2p_host(js_dir: Path) -> None:
    """Control for the test above: py-libp2p's default host accepts /plaintext/2.0.0, and
    the JS plaintext peer does connect to it, so the refusal comes from p2pid's Noise-only
    configuration and not from a broken JS plaintext setup."""
    import multiaddr
    from libp2p import new_host
    from libp2p.crypto.ed25519 import create_new_key_pair
    from libp2p.network.config import ConnectionConfig

    host = new_host(
        key_pair=create_new_key_pair(SEED),
        connection_config=ConnectionConfig(max_connections_per_peer=1),
    )
    async with host.run(listen_addrs=[multiaddr.Multiaddr(LOOPBACK[0])]):
        try:
            target = f"{host.get_addrs()[0]}"  # get_addrs() includes /p2p/<PeerId>
            result = await run_js_ping(target, count=1, js_timeout=15, security="plaintext")
        finally:
            with trio.CancelScope(shield=True):
                await host.close()

    assert result["ok"] is True, result
    assert result["security"] == "/plaintext/2.0.0", result
