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


class DeviceSummary(msgspec.Struct, kw_only=True):
    peer_id: str
    name: str
    connected: bool


class ContactSummary(msgspec.Struct, kw_only=True):
    identity_id: str
    fingerprint: str
    name: str  # my nickname for them, else their display name
    display_name: str
    nickname: str | None
    verified: bool
    verified_by: str | None
    blocked: bool
    identity_changed: bool
    devices: list[DeviceSummary]
    fields: dict[str, str]  # what they share with me
    added_at_ms: int


class InviteCreated(msgspec.Struct, kw_only=True):
    invite_id: str
    code: str
    expires_at: int  # unix seconds
    uses: int


class InviteSummary(msgspec.Struct, kw_only=True):
    invite_id: str
    state: str  # live | spent | cancelled | expired
    uses_left: int
    max_uses: int
    expires_at: int
    created_at_ms: int
    code: str | None  # None once burnt
