"""Messages of the contact-request protocol (`/p2pid/contact-request/1`). See docs/protocol.md.

Two exchanges share the protocol id, each one message and one answer on its own stream:

- the requester's `ContactRequest`, answered `RequestReceived` or `RequestRefused`;
- later, the recipient's `RequestAccepted` (on a stream it opens), answered `AcceptanceStored` or
  `RequestRefused`.

Also here: the events the node publishes about requests, and the record listing them.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Literal

import msgspec

from p2pid.wire.events import Event
from p2pid.wire.records import ContactCard

PROTOCOL_ID = "/p2pid/contact-request/1"
MAX_FRAME_BYTES = 64 * 1024

MESSAGE_ID_BYTES = 16
IDENTITY_KEY_BYTES = 32
MAX_TICKET_BYTES = 64
MAX_NOTE_CHARS = 280
MAX_NAME_CHARS = 64
MAX_ADDRS = 8
MAX_ADDR_CHARS = 256

MessageId = Annotated[bytes, msgspec.Meta(min_length=MESSAGE_ID_BYTES, max_length=MESSAGE_ID_BYTES)]
IdentityKey = Annotated[
    bytes, msgspec.Meta(min_length=IDENTITY_KEY_BYTES, max_length=IDENTITY_KEY_BYTES)
]
Ticket = Annotated[bytes, msgspec.Meta(min_length=1, max_length=MAX_TICKET_BYTES)]
AddrHint = Annotated[str, msgspec.Meta(max_length=MAX_ADDR_CHARS)]


class RefusalReason(StrEnum):
    RATE_LIMITED = "rate_limited"  # too many requests from this sender, or in total: try later
    ALREADY_CONTACTS = "already_contacts"  # the recipient already holds this identity
    INVALID = "invalid"  # name or note out of bounds (length, control characters)
    BAD_CARD = "bad_card"  # the card's device list is not signed by the identity or lacks the
    # device speaking, or that device belongs to another identity
    UNKNOWN_REQUEST = "unknown_request"  # an acceptance of a request this device did not send


class ContactRequest(msgspec.Struct, frozen=True, kw_only=True, tag="request"):
    """Requester -> recipient: who I am, why, and how to answer me."""

    message_id: MessageId  # the request's id; a resend with the same id is answered, not stored
    identity_key: IdentityKey
    note: str  # at most MAX_NOTE_CHARS, no control characters (checked, refused as INVALID)
    card: ContactCard  # its display_name is the name shown with the request
    ticket: Ticket  # opaque to the recipient: returned with the acceptance
    addrs: Annotated[list[AddrHint], msgspec.Meta(max_length=MAX_ADDRS)] = []  # where to answer


class RequestReceived(msgspec.Struct, frozen=True, kw_only=True, tag="received"):
    """Recipient -> requester, once the pending request is committed."""

    message_id: MessageId


class RequestRefused(msgspec.Struct, frozen=True, kw_only=True, tag="refused"):
    """Either direction: nothing was stored."""

    reason: RefusalReason


class RequestAccepted(msgspec.Struct, frozen=True, kw_only=True, tag="accepted"):
    """Recipient -> requester (a new stream), once it has stored the requester as a contact."""

    message_id: MessageId
    identity_key: IdentityKey
    ticket: Ticket  # the request's ticket, as it came
    card: ContactCard


class AcceptanceStored(msgspec.Struct, frozen=True, kw_only=True, tag="stored"):
    """Requester -> recipient, once it has stored the recipient as a contact."""

    message_id: MessageId


RequestMessage = (
    ContactRequest | RequestReceived | RequestRefused | RequestAccepted | AcceptanceStored
)

_decoder: msgspec.msgpack.Decoder[RequestMessage] = msgspec.msgpack.Decoder(RequestMessage)


def encode_message(message: RequestMessage) -> bytes:
    return msgspec.msgpack.encode(message)


def decode_message(data: bytes) -> RequestMessage:
    """Strict: raises msgspec.DecodeError (a ValueError) on anything malformed."""
    return _decoder.decode(data)


# -- what the node returns and publishes -----------------------------------------------------

RequestStateName = Literal["pending", "accepted", "declined", "replaced"]


class ContactRequestSummary(msgspec.Struct, kw_only=True):
    """A request this node received, as `list`, `accept` and `decline` return it."""

    request_id: int
    identity_id: str
    peer_id: str
    name: str  # the name the requester gave themselves
    note: str
    state: RequestStateName
    received_at_ms: int
    decided_at_ms: int | None


class ContactRequestReceived(Event, tag="contact_request.received"):
    """Someone asked to become a contact; the request waits for accept or decline."""

    request_id: int
    identity_id: str
    peer_id: str
    name: str
    note: str


class ContactRequestAnswered(Event, tag="contact_request.answered"):
    """This node's user accepted or declined a request it received.

    `delivered`: the requester's device stored the acceptance. Always False for a decline,
    which is never sent.
    """

    request_id: int
    identity_id: str
    name: str
    state: Literal["accepted", "declined"]
    delivered: bool


class ContactRequestAccepted(Event, tag="contact_request.accepted"):
    """A person this node sent a request to accepted it: they are now an unverified contact."""

    request_id: str  # the id `send` returned (hex)
    identity_id: str
    peer_id: str
    name: str
