"""Messages of the group catch-up protocol (`/p2pid/group-sync/1`). Sans-IO, strict MessagePack
(msgspec). The machines and drivers are in p2pid.protocols.group_sync.

A member who was offline asks any member device for the membership ops it lacks, and hands back
in the same exchange the ops the other side lacks:

    requester                                                   responder
      | -- request(group_id, heads, known, want) -----------------> |  member device? group?
      | <- refused(reason) ---------------------------------------- |  rate? (then the end)
      | <- heads(heads, known) ------------------------------------ |
      | <- ops(ops, more=True) ... ops(ops, more=False) ----------- |  ops_after(heads + known),
      |  adds them one by one                                       |  the wanted ones first
      | -- ops(ops, more=True) ... ops(ops, more=False) ----------> |  what the responder lacks,
      | -- end of stream ------------------------------------------ |  from its heads + known
      |                                                             |  adds them; closes

`heads` are the sender's current heads (at most 16: the latest ones; any others go to `known`),
`known` up to 256 more op ids it holds (the most recent, then exponentially sparser back to the
genesis) so that a peer that does not know the heads (the sender wrote ops of its own) still
finds a recent common ancestor, and `want` up to 256 ids the requester knows it lacks (parents of
its pending ops). Ops travel as `SignedGroupOp` records (at most 512 per frame, at most 10,000
per direction of one exchange) in an order the receiver can apply as is.

Decoding is strict (unknown tag, wrong type, a bound exceeded -> msgspec.DecodeError); unknown
fields are ignored so a minor version can add optional ones.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated

import msgspec

from p2pid.wire.groups import MAX_OP_BODY_BYTES, SIGNATURE_BYTES, OpId, SignedGroupOp

PROTOCOL_ID = "/p2pid/group-sync/1"

MAX_HEADS = 16
MAX_KNOWN = 256
MAX_WANT = 256
MAX_OPS_PER_FRAME = 512
MAX_OPS_PER_EXCHANGE = 10_000  # per direction
# The MessagePack size of a SignedGroupOp with the largest body: a 2-entry map, the keys "body"
# and "signature", a bin16 and a bin8 header.
MAX_SIGNED_OP_BYTES = 1 + 5 + 3 + MAX_OP_BODY_BYTES + 10 + 2 + SIGNATURE_BYTES
# A frame of MAX_OPS_PER_FRAME of the largest ops fits, with room for the envelope.
MAX_FRAME_BYTES = MAX_OPS_PER_FRAME * MAX_SIGNED_OP_BYTES + 1024


class RefusalReason(StrEnum):
    NOT_A_MEMBER = "not_a_member"  # the requesting device is no member's device
    UNKNOWN_GROUP = "unknown_group"
    TOO_MANY_REQUESTS = "too_many_requests"


class SyncRequest(msgspec.Struct, frozen=True, kw_only=True, tag="request"):
    group_id: OpId
    heads: Annotated[list[OpId], msgspec.Meta(max_length=MAX_HEADS)]
    known: Annotated[list[OpId], msgspec.Meta(max_length=MAX_KNOWN)] = []
    want: Annotated[list[OpId], msgspec.Meta(max_length=MAX_WANT)] = []


class SyncHeads(msgspec.Struct, frozen=True, kw_only=True, tag="heads"):
    """Responder -> requester, before its ops: what it holds, so it can be sent what it lacks."""

    heads: Annotated[list[OpId], msgspec.Meta(max_length=MAX_HEADS)]
    known: Annotated[list[OpId], msgspec.Meta(max_length=MAX_KNOWN)] = []


class SyncOps(msgspec.Struct, frozen=True, kw_only=True, tag="ops"):
    ops: Annotated[list[SignedGroupOp], msgspec.Meta(max_length=MAX_OPS_PER_FRAME)]
    more: bool  # False on the last frame of this direction


class SyncRefused(msgspec.Struct, frozen=True, kw_only=True, tag="refused"):
    reason: RefusalReason


SyncMessage = SyncRequest | SyncHeads | SyncOps | SyncRefused

_decoder: msgspec.msgpack.Decoder[SyncMessage] = msgspec.msgpack.Decoder(SyncMessage)


def encode_message(message: SyncMessage) -> bytes:
    return msgspec.msgpack.encode(message)


def decode_message(data: bytes) -> SyncMessage:
    """Strict: raises msgspec.DecodeError (a ValueError) on anything malformed."""
    try:
        return _decoder.decode(data)
    except UnicodeDecodeError as error:  # msgspec lets this one through for non-UTF-8 strings
        raise msgspec.DecodeError(f"invalid UTF-8: {error}") from None
