"""Signed, versioned device lists: the identity root certifies each of its devices."""

from __future__ import annotations

from dataclasses import dataclass

import msgspec
import nacl.exceptions
import nacl.signing

from p2pid.crypto.identity import peer_id_from_public_key
from p2pid.wire.records import DeviceEntry, DeviceListBody, SignedDeviceList, encode

DEVICE_LIST_CONTEXT = b"p2pid-device-list-v1\0"
MAX_DEVICES = 32


class DeviceListError(ValueError):
    """A device list that must not be trusted; the message says why."""


@dataclass(frozen=True)
class VerifiedDeviceList:
    body: DeviceListBody
    signed: SignedDeviceList

    def peer_ids(self) -> list[str]:
        return [peer_id_from_public_key(device.device_key) for device in self.body.devices]

    def device_for_peer(self, peer_id: str) -> DeviceEntry | None:
        for device in self.body.devices:
            if peer_id_from_public_key(device.device_key) == peer_id:
                return device
        return None


def sign_device_list(
    signing_key: nacl.signing.SigningKey, version: int, issued_at: int, devices: list[DeviceEntry]
) -> SignedDeviceList:
    body = DeviceListBody(
        identity_key=bytes(signing_key.verify_key),
        version=version,
        issued_at=issued_at,
        devices=devices,
    )
    encoded = encode(body)
    return SignedDeviceList(
        body=encoded, signature=signing_key.sign(DEVICE_LIST_CONTEXT + encoded).signature
    )


def verify_device_list(signed: SignedDeviceList, identity_key: bytes) -> VerifiedDeviceList:
    """Check the signature by `identity_key` and the list's shape; raise DeviceListError."""
    try:
        nacl.signing.VerifyKey(identity_key).verify(
            DEVICE_LIST_CONTEXT + signed.body, signed.signature
        )
    except (nacl.exceptions.BadSignatureError, nacl.exceptions.ValueError, ValueError):
        raise DeviceListError("the device list is not signed by this identity") from None
    try:
        body = msgspec.msgpack.decode(signed.body, type=DeviceListBody)
    except msgspec.DecodeError as error:
        raise DeviceListError(f"malformed device list: {error}") from None
    if body.identity_key != identity_key:
        raise DeviceListError("the device list names another identity")
    if not 1 <= len(body.devices) <= MAX_DEVICES:
        raise DeviceListError(f"a device list holds 1..{MAX_DEVICES} devices")
    keys = [device.device_key for device in body.devices]
    if len(set(keys)) != len(keys) or any(len(key) != 32 for key in keys):
        raise DeviceListError("the device list repeats a device or holds a malformed key")
    return VerifiedDeviceList(body=body, signed=signed)
