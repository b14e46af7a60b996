"""Records the daemon returns and pushes about my own devices (linking, revoking)."""

from __future__ import annotations

import msgspec

from p2pid.wire.events import Event


class OwnDeviceView(msgspec.Struct, kw_only=True):
    peer_id: str
    name: str
    this_device: bool
    connected: bool
    last_seen_ms: int | None
    linked_at_ms: int
    revoked: bool


class LinkConfirmation(msgspec.Struct, kw_only=True):
    """The approver's half-way point: both screens show `confirmation` now."""

    link_id: str
    confirmation: str  # "123 456"
    device_name: str
    device_peer_id: str


class LinkResult(msgspec.Struct, kw_only=True):
    device_peer_id: str
    device_name: str
    contacts: int
    messages: int


class RevokeResult(msgspec.Struct, kw_only=True):
    peer_id: str
    version: int


class DeviceLinked(Event, tag="device.linked"):
    peer_id: str
    name: str


class DeviceRevoked(Event, tag="device.revoked"):
    """A device of mine was revoked (by this device or another); this_device if it was me."""

    peer_id: str
    name: str
    this_device: bool = False


class OwnDevicesChanged(Event, tag="device.list_changed"):
    version: int


class ContactDevicesChanged(Event, tag="contact.devices_changed"):
    """A contact's signed device list changed: devices linked or revoked."""

    identity_id: str
    name: str
    version: int
    added: list[str]
    removed: list[str]
