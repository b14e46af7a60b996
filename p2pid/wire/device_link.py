"""Records of `/p2pid/device-link/1` (linking a new device to an identity) and of the history
that moves to it: contacts, profile fields and messages. Sans-IO, strict MessagePack (msgspec).

The approver (a device already linked) dials the new device named by a device-link code and
speaks first. Frames, in order:

    approver -> new device   LinkHello     proof of the code's secret, approver's ephemeral key
    new device -> approver   LinkReply     proof of the secret, the new device's Olm keys
        (both screens now show the same confirmation code; the person compares them)
    approver -> new device   LinkGrant     the identity seed and the new signed device list,
                                           sealed under a key from both ephemeral keys + secret
    approver -> new device   SyncBatch*    contacts, blocked identities, profile, messages
    approver -> new device   SyncEnd       how many of each were sent
    new device -> approver   LinkDone      committed: the approver now publishes the list
    either side              LinkAbort     a reason; nothing is kept
"""

from __future__ import annotations

from typing import Annotated

import msgspec

from p2pid.wire.records import DevicePrekeys, SignedDeviceList

LINK_PROTOCOL = "/p2pid/device-link/1"
MAX_LINK_FRAME = 4 * 1024 * 1024
MAX_SYNC_CONTACTS = 256
MAX_SYNC_MESSAGES = 2000
MAX_SYNC_BATCH_BYTES = 1024 * 1024
MAX_ONE_TIME_KEYS = 50

Key = Annotated[bytes, msgspec.Meta(min_length=32, max_length=32)]
Proof = Annotated[bytes, msgspec.Meta(min_length=32, max_length=32)]
MessageId = Annotated[bytes, msgspec.Meta(min_length=16, max_length=16)]
Name = Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
Millis = Annotated[int, msgspec.Meta(ge=0, le=2**53)]
Lamport = Annotated[int, msgspec.Meta(ge=1, le=2**62)]
Short = Annotated[str, msgspec.Meta(max_length=256)]


class LinkHello(msgspec.Struct, frozen=True, kw_only=True, tag="hello"):
    invite_id: MessageId  # the code's invite id (16 bytes)
    approver_identity_key: Key
    approver_name: Name
    ephemeral_key: Key  # X25519, fresh for this link
    proof: Proof


class LinkReply(msgspec.Struct, frozen=True, kw_only=True, tag="reply"):
    device_name: Name
    olm_curve25519: Short
    olm_ed25519: Short
    prekeys: DevicePrekeys
    proof: Proof


class LinkGrant(msgspec.Struct, frozen=True, kw_only=True, tag="grant"):
    sealed: Annotated[bytes, msgspec.Meta(max_length=16384)]  # SecretBox(LinkSecrets)


class LinkSecrets(msgspec.Struct, frozen=True, kw_only=True):
    """What only a device of the identity may hold; travels sealed inside LinkGrant."""

    identity_seed: Key
    identity_name: Name
    device_list: SignedDeviceList  # the new version, listing the new device
    # Prekeys of my other devices (the approver's fresh one-time keys, the others' fallback
    # keys) and where they listen, so the new device can write to them at once.
    sibling_prekeys: Annotated[list[DevicePrekeys], msgspec.Meta(max_length=32)] = []
    sibling_addrs: dict[Short, Annotated[list[Short], msgspec.Meta(max_length=16)]] = {}


class ContactSnapshot(msgspec.Struct, frozen=True, kw_only=True):
    """One contact as a device of mine knows them, for another device of mine."""

    identity_key: Key
    display_name: Name
    nickname: Annotated[str, msgspec.Meta(max_length=64)] | None = None
    verified_by: Annotated[str, msgspec.Meta(max_length=16)] | None = None
    verified_at: Millis | None = None
    blocked: bool = False
    device_list: SignedDeviceList
    prekeys: Annotated[list[DevicePrekeys], msgspec.Meta(max_length=32)] = []
    fields: dict[Short, Annotated[str, msgspec.Meta(max_length=4096)]] = {}
    addrs: dict[Short, Annotated[list[Short], msgspec.Meta(max_length=16)]] = {}
    added_at: Millis


class ProfileFieldCopy(msgspec.Struct, frozen=True, kw_only=True):
    name: Short
    value: Annotated[str, msgspec.Meta(max_length=4096)]
    audience: Annotated[str, msgspec.Meta(max_length=16)]
    granted_to: Annotated[list[Key], msgspec.Meta(max_length=10_000)] = []


class MessageCopy(msgspec.Struct, frozen=True, kw_only=True):
    conversation_with: Key  # the contact's identity key
    message_id: MessageId
    sender_identity: Key
    sender_device: Short
    outgoing: bool
    body: Annotated[str, msgspec.Meta(max_length=65536)]
    lamport: Lamport
    sent_at: Millis
    received_at: Millis
    state: Annotated[str, msgspec.Meta(max_length=16)]


class SyncBatch(msgspec.Struct, frozen=True, kw_only=True, tag="sync"):
    contacts: Annotated[list[ContactSnapshot], msgspec.Meta(max_length=MAX_SYNC_CONTACTS)] = []
    blocked: Annotated[list[Key], msgspec.Meta(max_length=10_000)] = []
    profile: Annotated[list[ProfileFieldCopy], msgspec.Meta(max_length=256)] = []
    messages: Annotated[list[MessageCopy], msgspec.Meta(max_length=MAX_SYNC_MESSAGES)] = []


class SyncEnd(msgspec.Struct, frozen=True, kw_only=True, tag="end"):
    contacts: Annotated[int, msgspec.Meta(ge=0)]
    messages: Annotated[int, msgspec.Meta(ge=0)]


class LinkDone(msgspec.Struct, frozen=True, kw_only=True, tag="done"):
    pass


class LinkAbort(msgspec.Struct, frozen=True, kw_only=True, tag="abort"):
    reason: Short


LinkMessage = LinkHello | LinkReply | LinkGrant | SyncBatch | SyncEnd | LinkDone | LinkAbort

_decoder: msgspec.msgpack.Decoder[LinkMessage] = msgspec.msgpack.Decoder(LinkMessage)
_secrets_decoder: msgspec.msgpack.Decoder[LinkSecrets] = msgspec.msgpack.Decoder(LinkSecrets)


def encode_link_message(message: LinkMessage) -> bytes:
    return msgspec.msgpack.encode(message)


def decode_link_message(data: bytes) -> LinkMessage:
    """Strict: raises msgspec.DecodeError (a ValueError) for anything malformed."""
    return _decoder.decode(data)


def encode_secrets(secrets: LinkSecrets) -> bytes:
    return msgspec.msgpack.encode(secrets)


def decode_secrets(data: bytes) -> LinkSecrets:
    return _secrets_decoder.decode(data)
