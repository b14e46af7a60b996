"""Checking a contact card against the identity it claims and the device that sent it."""

from __future__ import annotations

from dataclasses import dataclass

from p2pid.crypto.device_list import DeviceListError, VerifiedDeviceList, verify_device_list
from p2pid.wire.records import ContactCard


class CardError(ValueError):
    """A card that must not be trusted; the message says why."""


@dataclass(frozen=True)
class JoinedContact:
    """A person whose card checked out: signed by their identity, listing the device speaking."""

    identity_key: bytes
    peer_id: str
    card: ContactCard
    devices: VerifiedDeviceList

    @property
    def display_name(self) -> str:
        return self.card.display_name


def verify_card(card: ContactCard, identity_key: bytes, peer_id: str) -> JoinedContact:
    """The card's holder, if its device list is signed by `identity_key` and lists `peer_id`
    (the device at the other end of the stream); raises CardError otherwise."""
    try:
        devices = verify_device_list(card.device_list, identity_key)
    except DeviceListError as error:
        raise CardError(str(error)) from None
    if devices.device_for_peer(peer_id) is None:
        raise CardError("the card's device list does not include the device speaking")
    return JoinedContact(identity_key=identity_key, peer_id=peer_id, card=card, devices=devices)
