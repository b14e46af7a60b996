"""The plaintext inside a group message's Megolm ciphertext. See docs/protocol.md.

A Megolm message names neither its group nor its sender device, and one ciphertext goes to every
member device: the plaintext binds both, with the message id the envelope carries, so a
ciphertext replayed into another group, under another message id or by another device is refused.
"""

from __future__ import annotations

from typing import Annotated, Final

import msgspec

from p2pid.wire.messages import MAX_LAMPORT, MAX_TEXT_BYTES, PayloadError, check_text

KEY_BYTES: Final = 32
MESSAGE_ID_BYTES: Final = 16

Key = Annotated[bytes, msgspec.Meta(min_length=KEY_BYTES, max_length=KEY_BYTES)]
MessageId = Annotated[bytes, msgspec.Meta(min_length=MESSAGE_ID_BYTES, max_length=MESSAGE_ID_BYTES)]
Lamport = Annotated[int, msgspec.Meta(ge=1, le=MAX_LAMPORT)]
Millis = Annotated[int, msgspec.Meta(ge=0, le=2**53)]


class GroupText(msgspec.Struct, frozen=True, kw_only=True, tag="text"):
    text: Annotated[str, msgspec.Meta(max_length=MAX_TEXT_BYTES)]


GroupBody = GroupText


class GroupPayload(msgspec.Struct, frozen=True, kw_only=True):
    message_id: MessageId  # equals the envelope's
    group_id: Key  # the group the session is bound to
    sender_identity: Key  # equals the envelope's
    sender_device: Key  # equals the envelope's and the session's owner
    sent_at_ms: Millis
    lamport: Lamport  # per group: max(seen) + 1
    body: GroupBody


_decoder: msgspec.msgpack.Decoder[GroupPayload] = msgspec.msgpack.Decoder(GroupPayload)


def encode_group_payload(payload: GroupPayload) -> bytes:
    return msgspec.msgpack.encode(payload)


def decode_group_payload(data: bytes) -> GroupPayload:
    """Strict: msgspec.DecodeError or PayloadError (both ValueError)."""
    payload = _decoder.decode(data)
    check_text(payload.body.text)
    return payload


__all__ = [
    "GroupBody",
    "GroupPayload",
    "GroupText",
    "PayloadError",
    "decode_group_payload",
    "encode_group_payload",
]
