"""Typed records shared by p2pid's protocols, encoded with MessagePack (msgspec).

Decoding is strict (wrong type or missing field -> DecodeError); unknown fields are ignored so a
minor version can add optional ones. Signed records travel as the exact bytes that were signed.
"""

from __future__ import annotations

import msgspec


class DeviceEntry(msgspec.Struct, frozen=True, kw_only=True):
    """One device of an identity, as its signed device list certifies it."""

    device_key: bytes  # Ed25519 public key; the device's libp2p PeerId derives from it
    olm_curve25519: str  # base64, the device's vodozemac Olm identity keys
    olm_ed25519: str
    name: str
    created_at: int  # ms since the epoch
    capabilities: list[str] = []


class DeviceListBody(msgspec.Struct, frozen=True, kw_only=True):
    identity_key: bytes
    version: int  # strictly increasing: a contact keeps only the newest list it has seen
    issued_at: int  # ms since the epoch
    devices: list[DeviceEntry]


class SignedDeviceList(msgspec.Struct, frozen=True, kw_only=True):
    body: bytes  # the MessagePack encoding of a DeviceListBody, exactly as signed
    signature: bytes  # Ed25519 by body.identity_key over DEVICE_LIST_CONTEXT + body


class DevicePrekeys(msgspec.Struct, frozen=True, kw_only=True):
    """Olm keys a contact uses to open sessions with one device."""

    device_key: bytes
    one_time_keys: list[str] = []  # base64 Curve25519
    fallback_key: str | None = None


class ContactCard(msgspec.Struct, frozen=True, kw_only=True):
    """What one person hands another when they become contacts."""

    display_name: str
    device_list: SignedDeviceList
    prekeys: list[DevicePrekeys] = []
    fields: dict[str, str] = {}  # profile fields shared with this recipient


def encode(record: msgspec.Struct) -> bytes:
    return msgspec.msgpack.encode(record)
