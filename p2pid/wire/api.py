"""Records the daemon's JSON-RPC methods return. Clients decode results into these."""

from __future__ import annotations

import msgspec


class NodeStatus(msgspec.Struct, kw_only=True):
    name: str
    identity_id: str
    peer_id: str
    listen_addrs: list[str]
    connected_peers: list[str]
    discovered_peers: list[str]
    mdns: bool
    pid: int
    version: str
    started_at_ms: int


class PeerSummary(msgspec.Struct, kw_only=True):
    peer_id: str
    addrs: list[str]
    connected: bool
    discovered: bool
    last_seen_ms: int | None
    fields: dict[str, str] = {}


class PingResult(msgspec.Struct, kw_only=True):
    peer_id: str
    rtts_ms: list[float]


class ConnectResult(msgspec.Struct, kw_only=True):
    peer_id: str
    addr: str
