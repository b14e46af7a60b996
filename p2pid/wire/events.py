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


class KioskPaired(Event, tag="kiosk.paired"):
    """Person side: this node paired with a kiosk."""

    peer_id: str
    name: str
    role: str


class KioskRevoked(Event, tag="kiosk.revoked"):
    """Person side: this node's grant on a kiosk is gone (revoked, removed or reset)."""

    peer_id: str


class KioskApprovalRequested(Event, tag="kiosk.approval_requested"):
    """Owner side: a kiosk asks whether a new person may pair as a guest (`kiosk.approve`)."""

    request_id: str
    kiosk_peer_id: str
    kiosk_name: str
    person_name: str
    person_identity_id: str


class KioskCode(Event, tag="kiosk.code"):
    """Kiosk side: the pairing QR code and short code on screen now (rotated)."""

    code: str
    short_code: str
    expires_at: int  # unix seconds


class KioskPersonPaired(Event, tag="kiosk.person_paired"):
    """Kiosk side: someone paired with this kiosk."""

    identity_id: str
    name: str
    role: str


class KioskMessage(Event, tag="kiosk.message"):
    """Kiosk side: the show-message routine; the kiosk front end shows it."""

    text: str
    from_name: str


AnyEvent = (
    PeerDiscovered
    | PeerLost
    | PeerConnected
    | PeerDisconnected
    | ContactAdded
    | ContactIdentityChanged
    | DaemonStopping
    | KioskPaired
    | KioskRevoked
    | KioskApprovalRequested
    | KioskCode
    | KioskPersonPaired
    | KioskMessage
)


def decode_event(data: bytes | str | dict[str, object]) -> AnyEvent:
    if isinstance(data, dict):
        return cast(AnyEvent, msgspec.convert(data, AnyEvent))
    return cast(AnyEvent, msgspec.json.decode(data, type=AnyEvent))
