"""Messages of the contact-join protocol (`/p2pid/contact-join/1`). See docs/protocol.md."""

from __future__ import annotations

from enum import StrEnum

import msgspec

from p2pid.wire.records import ContactCard

PROTOCOL_ID = "/p2pid/contact-join/1"
MAX_FRAME_BYTES = 64 * 1024


class RefusalReason(StrEnum):
    UNKNOWN_INVITE = "unknown_invite"
    EXPIRED = "expired"
    SPENT = "spent"
    CANCELLED = "cancelled"
    BAD_PROOF = "bad_proof"
    BAD_CARD = "bad_card"
    BLOCKED = "blocked"


class JoinHello(msgspec.Struct, frozen=True, kw_only=True, tag="hello"):
    """Joiner -> inviter: which invite, proof of its secret, and the joiner's card."""

    invite_id: bytes
    joiner_identity_key: bytes
    proof: bytes
    card: ContactCard


class JoinWelcome(msgspec.Struct, frozen=True, kw_only=True, tag="welcome"):
    """Inviter -> joiner, after it has stored the joiner as a verified contact."""

    proof: bytes
    card: ContactCard


class JoinRefused(msgspec.Struct, frozen=True, kw_only=True, tag="refused"):
    reason: RefusalReason


class JoinDone(msgspec.Struct, frozen=True, kw_only=True, tag="done"):
    """Joiner -> inviter, after it has stored the inviter as a verified contact."""


JoinMessage = JoinHello | JoinWelcome | JoinRefused | JoinDone

_decoder: msgspec.msgpack.Decoder[JoinMessage] = msgspec.msgpack.Decoder(JoinMessage)


def encode_message(message: JoinMessage) -> bytes:
    return msgspec.msgpack.encode(message)


def decode_message(data: bytes) -> JoinMessage:
    """Strict: raises msgspec.DecodeError (a ValueError) on anything malformed."""
    return _decoder.decode(data)
