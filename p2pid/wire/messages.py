"""One-to-one messages: the envelope and batches of `/p2pid/msg/1`, the plaintext payloads inside
the Olm ciphertext, the events and the RPC records. Sans-IO. See docs/protocol.md.

A sending device opens one long-lived stream to a receiving device and writes `Deliver` frames
(a batch of envelopes, oldest first); the receiver commits what it accepts, then answers each
batch with one `DeliveryAck` holding a result per envelope, in the same order.

Inside each envelope's Olm ciphertext is a `Payload`: the message id, sender and recipient
identities again (bound to the ciphertext, so an envelope's header cannot be re-addressed), the
sender's clock, a per-conversation Lamport counter, and a body: text, a delivery or read receipt,
fresh prekeys, and later kinds (group, file, device, profile updates) as further tagged bodies.
"""

from __future__ import annotations

from enum import IntEnum
from typing import Annotated, Final, Literal

import msgspec

from p2pid.wire.device_link import ContactSnapshot, ProfileFieldCopy
from p2pid.wire.events import Event
from p2pid.wire.files import (
    FileId,
    FileName,
    FileOffer,
    FileOfferError,
    FileSize,
    check_clean_name,
    check_offer,
)
from p2pid.wire.records import DevicePrekeys, SignedDeviceList

PROTOCOL_ID: Final = "/p2pid/msg/1"

MESSAGE_ID_BYTES: Final = 16
KEY_BYTES: Final = 32
MAX_TEXT_BYTES: Final = 32 * 1024  # UTF-8 bytes of one text message
MAX_RECEIPT_IDS: Final = 512
# Olm adds a few hundred bytes to the MessagePack payload; receipts of 512 ids are ~9 KiB.
MAX_BODY_BYTES: Final = MAX_TEXT_BYTES + 4 * 1024
MAX_BATCH: Final = 128
MAX_BATCH_BYTES: Final = 256 * 1024  # a sender starts a new batch before crossing this
MAX_FRAME_BYTES: Final = MAX_BATCH_BYTES + MAX_BODY_BYTES + 4 * 1024
MAX_LAMPORT: Final = 2**62

MessageId = Annotated[bytes, msgspec.Meta(min_length=MESSAGE_ID_BYTES, max_length=MESSAGE_ID_BYTES)]
Key = Annotated[bytes, msgspec.Meta(min_length=KEY_BYTES, max_length=KEY_BYTES)]
Lamport = Annotated[int, msgspec.Meta(ge=1, le=MAX_LAMPORT)]
Millis = Annotated[int, msgspec.Meta(ge=0, le=2**53)]
SignedOpBytes = Annotated[bytes, msgspec.Meta(min_length=1, max_length=4096)]


class OlmType(IntEnum):
    PRE_KEY = 0  # opens a session: carries the sender's keys and the one-time key it used
    NORMAL = 1
    MEGOLM = 2  # a group message: the body is a MegolmCiphertext (p2pid.crypto.megolm)


# -- the envelope and the stream's frames ------------------------------------------------------


class Envelope(msgspec.Struct, frozen=True, kw_only=True):
    message_id: MessageId
    sender_identity: Key  # Ed25519 identity public key
    sender_device: Key  # Ed25519 device key; must be the stream's authenticated remote PeerId
    recipient_device: Key  # must be the receiving device
    olm_type: OlmType
    body: Annotated[bytes, msgspec.Meta(min_length=1, max_length=MAX_BODY_BYTES)]


class Deliver(msgspec.Struct, frozen=True, kw_only=True, tag="deliver"):
    envelopes: Annotated[list[Envelope], msgspec.Meta(min_length=1, max_length=MAX_BATCH)]


class Result(IntEnum):
    STORED = 0  # committed by the receiver
    DUPLICATE = 1  # committed before (a retry whose acknowledgement was lost)
    REJECTED = 2  # never acceptable (not a contact, blocked, forged, malformed): do not retry
    NO_SESSION = 3  # the receiver cannot decrypt it: re-encrypt under a new session and retry
    RETRY = 4  # the receiver could not take it now: retry later


class DeliveryAck(msgspec.Struct, frozen=True, kw_only=True, tag="ack"):
    results: Annotated[list[Result], msgspec.Meta(min_length=1, max_length=MAX_BATCH)]


StreamMessage = Deliver | DeliveryAck

_stream_decoder: msgspec.msgpack.Decoder[StreamMessage] = msgspec.msgpack.Decoder(StreamMessage)
_envelope_decoder: msgspec.msgpack.Decoder[Envelope] = msgspec.msgpack.Decoder(Envelope)


def encode_stream_message(message: StreamMessage) -> bytes:
    return msgspec.msgpack.encode(message)


def decode_stream_message(data: bytes) -> StreamMessage:
    """Strict: msgspec.DecodeError (a ValueError) on anything malformed."""
    return _stream_decoder.decode(data)


def encode_envelope(envelope: Envelope) -> bytes:
    return msgspec.msgpack.encode(envelope)


def decode_envelope(data: bytes) -> Envelope:
    return _envelope_decoder.decode(data)


# -- the plaintext inside the Olm ciphertext ----------------------------------------------------


class Text(msgspec.Struct, frozen=True, kw_only=True, tag="text"):
    text: str


class DeliveryReceipt(msgspec.Struct, frozen=True, kw_only=True, tag="delivered"):
    """These messages of mine reached (were committed by) one of the receiver's devices."""

    message_ids: Annotated[list[MessageId], msgspec.Meta(min_length=1, max_length=MAX_RECEIPT_IDS)]


class ReadReceipt(msgspec.Struct, frozen=True, kw_only=True, tag="read"):
    """The reader has read my messages in this conversation up to and including this one."""

    up_to: MessageId


class PrekeyRefill(msgspec.Struct, frozen=True, kw_only=True, tag="prekeys"):
    """Fresh Olm one-time keys of the sending device, replacing those the recipient held."""

    prekeys: DevicePrekeys


class SentCopy(msgspec.Struct, frozen=True, kw_only=True, tag="sent-copy"):
    """To my other devices: a text I sent (same message id, clock and time as the original)."""

    conversation_with: Key
    text: str


class DeviceListUpdate(msgspec.Struct, frozen=True, kw_only=True, tag="device-list"):
    """The sender's identity has a new signed device list (a device was linked or revoked),
    with the fallback keys of its devices (one-time keys cannot be shared out to everyone: the
    first session each contact opens asks for a refill)."""

    device_list: SignedDeviceList
    prekeys: Annotated[list[DevicePrekeys], msgspec.Meta(max_length=32)] = []
    # Where a newly linked device listens (PeerId -> multiaddrs), a hint, not part of the list.
    addrs: dict[
        Annotated[str, msgspec.Meta(max_length=128)],
        Annotated[list[Annotated[str, msgspec.Meta(max_length=256)]], msgspec.Meta(max_length=8)],
    ] = {}


class ContactRemoval(msgspec.Struct, frozen=True, kw_only=True, tag="contact-removed"):
    """To my other devices: I removed this contact."""

    identity_key: Key


class ProfileCopy(msgspec.Struct, frozen=True, kw_only=True, tag="profile-copy"):
    """To my other devices: my profile fields as they are now (all of them)."""

    fields: Annotated[list[ProfileFieldCopy], msgspec.Meta(max_length=256)]


class ReadCopy(msgspec.Struct, frozen=True, kw_only=True, tag="read-copy"):
    """To my other devices: I read this conversation (up to and including `up_to`)."""

    conversation_with: Key
    up_to: MessageId


class ContactCopy(msgspec.Struct, frozen=True, kw_only=True, tag="contact-copy"):
    """To my other devices: a contact I added or changed."""

    contact: ContactSnapshot


class MemberCard(msgspec.Struct, frozen=True, kw_only=True):
    """A group member's signed device list and Olm fallback keys, relayed to members who are not
    their contacts (the list's signature, by the member's identity, is what makes it trusted)."""

    display_name: Annotated[str, msgspec.Meta(max_length=64)]
    device_list: SignedDeviceList
    prekeys: Annotated[list[DevicePrekeys], msgspec.Meta(max_length=32)] = []
    addrs: dict[
        Annotated[str, msgspec.Meta(max_length=128)],
        Annotated[list[Annotated[str, msgspec.Meta(max_length=256)]], msgspec.Meta(max_length=8)],
    ] = {}


class GroupOps(msgspec.Struct, frozen=True, kw_only=True, tag="group-ops"):
    """Membership ops of a group (encoded SignedGroupOps, any order), and the cards of members the
    recipient may not know. A welcome to a new member carries the whole log from the genesis."""

    group_id: Key
    ops: Annotated[list[SignedOpBytes], msgspec.Meta(max_length=64)]
    cards: Annotated[list[MemberCard], msgspec.Meta(max_length=16)] = []


class GroupKey(msgspec.Struct, frozen=True, kw_only=True, tag="group-key"):
    """The sender device's Megolm session key for a group: an encoded GroupSessionShare."""

    share: Annotated[bytes, msgspec.Meta(max_length=1024)]


class GroupReceipt(msgspec.Struct, frozen=True, kw_only=True, tag="group-receipt"):
    """To a group message's sender: these of their messages reached me (`read` False) or I read
    the group up to and including them (`read` True)."""

    group_id: Key
    message_ids: Annotated[list[MessageId], msgspec.Meta(min_length=1, max_length=MAX_RECEIPT_IDS)]
    read: bool = False


class GroupReadCopy(msgspec.Struct, frozen=True, kw_only=True, tag="group-read-copy"):
    """To my other devices: I read the group up to and including `up_to`."""

    group_id: Key
    up_to: MessageId


class FileShare(msgspec.Struct, frozen=True, kw_only=True, tag="file-share"):
    """A file offered to the recipient (one to one), or to a group's members (`group_id`): the
    offer holds the file's key; the data is fetched over `/p2pid/file/1`."""

    offer: FileOffer
    group_id: Key | None = None
    # For a group: the offer's place in the group conversation's order (a one-to-one offer's is
    # the payload's `lamport`).
    group_lamport: Lamport | None = None


class FileNotice(msgspec.Struct, frozen=True, kw_only=True, tag="file-notice"):
    """About a file offer: the recipient has it complete, or either side cancelled it."""

    file_id: FileId
    state: Literal["complete", "cancelled"]


class FileLineCopy(msgspec.Struct, frozen=True, kw_only=True, tag="file-line-copy"):
    """To my other devices: the line of a file I offered in a conversation (same message id,
    which is the file id, clock and time as the line). Only the line: the transfer stays on the
    device that sent the file."""

    conversation_with: Key  # the contact's identity key, or the group id
    group: bool = False
    name: FileName  # the offer's (clean) name
    size: FileSize


Body = (
    Text
    | DeliveryReceipt
    | ReadReceipt
    | PrekeyRefill
    | SentCopy
    | DeviceListUpdate
    | ContactCopy
    | ReadCopy
    | ContactRemoval
    | ProfileCopy
    | GroupOps
    | GroupKey
    | GroupReceipt
    | GroupReadCopy
    | FileShare
    | FileNotice
    | FileLineCopy
)


class Payload(msgspec.Struct, frozen=True, kw_only=True):
    message_id: MessageId  # equals the envelope's
    sender_identity: Key  # equals the envelope's
    recipient_identity: Key  # the person written to
    sent_at_ms: Millis  # the sender's clock: shown, never trusted for order
    lamport: Lamport  # per conversation: max(seen) + 1; orders the conversation
    body: Body


_payload_decoder: msgspec.msgpack.Decoder[Payload] = msgspec.msgpack.Decoder(Payload)


class PayloadError(ValueError):
    """A decrypted payload that p2pid refuses."""


def encode_payload(payload: Payload) -> bytes:
    return msgspec.msgpack.encode(payload)


def decode_payload(data: bytes) -> Payload:
    """Strict: msgspec.DecodeError or PayloadError (both ValueError)."""
    payload = _payload_decoder.decode(data)
    body = payload.body
    if isinstance(body, Text | SentCopy):
        check_text(body.text)
    elif isinstance(body, PrekeyRefill) and len(body.prekeys.one_time_keys) > 100:
        raise PayloadError("a prekey refill holds more than 100 one-time keys")
    elif isinstance(body, FileShare | FileLineCopy):
        try:
            if isinstance(body, FileShare):
                check_offer(body.offer)
            else:
                check_clean_name(body.name)
        except FileOfferError as error:
            raise PayloadError(str(error)) from None
    return payload


def check_text(text: str) -> str:
    if not isinstance(text, str) or not text.strip():
        raise PayloadError("a message needs some text")
    try:
        size = len(text.encode("utf-8"))
    except UnicodeEncodeError:
        raise PayloadError("the message is not valid Unicode text") from None
    if size > MAX_TEXT_BYTES:
        raise PayloadError(f"the message is {size} bytes, over the maximum {MAX_TEXT_BYTES}")
    return text


# -- records ----------------------------------------------------------------------------------


class MessageView(msgspec.Struct, kw_only=True):
    message_id: str  # hex
    conversation_id: str  # the contact's identity id
    sender_id: str  # identity id of the author
    sender_device: str  # PeerId of the device that wrote it
    outgoing: bool
    text: str
    sent_at_ms: int  # the author's clock
    received_at_ms: int  # this node's clock when stored
    lamport: int
    state: str  # outgoing: pending | delivered | read | failed; incoming: unread | read
    # "text", or "file": a file offered in the conversation (the text names it; the message id
    # is the transfer id, for `file show`).
    kind: str = "text"


# -- events ------------------------------------------------------------------------------------


class MessageReceived(Event, tag="message.received"):
    """A message from a contact was committed here."""

    conversation_id: str  # the contact's identity id
    name: str  # what I call the contact
    message: MessageView


class MessageSent(Event, tag="message.sent"):
    """A message was committed to the outbox of every recipient device."""

    conversation_id: str
    name: str
    message: MessageView


class MessageStateChanged(Event, tag="message.state"):
    """Messages of mine reached a new state: `delivered` or `read`."""

    conversation_id: str
    message_ids: list[str]
    state: str


class MessagesDropped(Event, tag="message.dropped"):
    """Envelopes refused by this node (counted); `reason` says why."""

    peer_id: str
    reason: str
    count: int


# -- RPC records -------------------------------------------------------------------------------


class MessagePage(msgspec.Struct, kw_only=True):
    conversation_id: str
    name: str
    messages: list[MessageView]  # oldest first
    unread: int
    before: str | None  # cursor for the previous page, None at the start of history


class ConversationSummary(msgspec.Struct, kw_only=True):
    conversation_id: str
    name: str
    unread: int
    last_message: MessageView | None
    updated_at_ms: int


class MessagingStats(msgspec.Struct, kw_only=True):
    pending_outbox: int  # envelopes waiting for a device
    received: int
    duplicates: int
    dropped: dict[str, int]  # reason -> envelopes refused since the daemon started
