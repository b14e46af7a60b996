"""Events the daemon pushes to its clients (JSON-RPC notifications `event`). Typed records."""

from __future__ import annotations

from typing import cast

import msgspec


class Event(msgspec.Struct, tag_field="type", kw_only=True, forbid_unknown_fields=False):
    at_ms: int


class PeerDiscovered(Event, tag="peer.discovered"):
    peer_id: str
    addrs: list[str]
    fields: dict[str, str] = {}


class PeerLost(Event, tag="peer.lost"):
    peer_id: str


class PeerConnected(Event, tag="peer.connected"):
    peer_id: str


class PeerDisconnected(Event, tag="peer.disconnected"):
    peer_id: str


class ContactAdded(Event, tag="contact.added"):
    identity_id: str
    name: str
    verified: bool


class ContactIdentityChanged(Event, tag="contact.identity_changed"):
    """A device of a contact presented another identity key: not accepted, the user must act."""

    identity_id: str
    peer_id: str
    new_identity_id: str


class DaemonStopping(Event, tag="daemon.stopping"):
    reason: str


AnyEvent = (
    PeerDiscovered
    | PeerLost
    | PeerConnected
    | PeerDisconnected
    | ContactAdded
    | ContactIdentityChanged
    | DaemonStopping
)


def decode_event(data: bytes | str | dict[str, object]) -> AnyEvent:
    if isinstance(data, dict):
        return cast(AnyEvent, msgspec.convert(data, AnyEvent))
    return cast(AnyEvent, msgspec.json.decode(data, type=AnyEvent))
