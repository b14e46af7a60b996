"""Messages of the group-join protocol (`/p2pid/group-join/1`). Sans-IO, strict MessagePack
(msgspec). The machines and drivers are in p2pid.protocols.group_join.

    joiner                                                      admin device (inviter)
      | -- hello(invite_id, identity_key, proof, card) -------------> |  proof, card, invite
      | <- welcome(proof, card, group_id, ops, cards)                 |  admitted: the whole log
      |    | waiting(proof, card, group_id)                           |  an admin must approve
      |    | refused(reason) ---------------------------------------- |
      | -- done ----------------------------------------------------> |

Bounds: a frame from the joiner (hello, done) is at most MAX_HELLO_FRAME_BYTES, one from the
inviter at most MAX_FRAME_BYTES, which holds the largest welcome these bounds allow: MAX_OPS
encoded SignedGroupOps of at most MAX_OP_BYTES each, MAX_CARDS member cards of at most
MAX_MEMBER_CARD_BYTES each (encoded) and a contact card of at most MAX_CARD_BYTES.
`encode_message` and `decode_message` both enforce every bound, so an inviter learns before it
sends that a welcome would not be read.

Decoding is strict (unknown tag, wrong type, a bound exceeded -> msgspec.DecodeError, a
ValueError); unknown fields are ignored so a minor version can add optional ones.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Final

import msgspec

from p2pid.wire.invite import INVITE_ID_BYTES
from p2pid.wire.messages import MemberCard
from p2pid.wire.records import ContactCard

PROTOCOL_ID: Final = "/p2pid/group-join/1"

KEY_BYTES: Final = 32
PROOF_BYTES: Final = 32  # p2pid.crypto.join_proof.PROOF_BYTES
MAX_OPS: Final = 2000
MAX_OP_BYTES: Final = 4096
MAX_CARDS: Final = 250
MAX_CARD_BYTES: Final = 60 * 1024  # a ContactCard, encoded
MAX_MEMBER_CARD_BYTES: Final = 16 * 1024  # a MemberCard, encoded
MAX_HELLO_FRAME_BYTES: Final = 64 * 1024
# Each op carries a 3-byte bin16 header; 1 KiB covers the tags, keys and list headers.
MAX_FRAME_BYTES: Final = (
    MAX_OPS * (MAX_OP_BYTES + 3) + MAX_CARDS * MAX_MEMBER_CARD_BYTES + MAX_CARD_BYTES + 1024
)

InviteId = Annotated[bytes, msgspec.Meta(min_length=INVITE_ID_BYTES, max_length=INVITE_ID_BYTES)]
Key = Annotated[bytes, msgspec.Meta(min_length=KEY_BYTES, max_length=KEY_BYTES)]
Proof = Annotated[bytes, msgspec.Meta(min_length=PROOF_BYTES, max_length=PROOF_BYTES)]
OpBytes = Annotated[bytes, msgspec.Meta(min_length=1, max_length=MAX_OP_BYTES)]


class RefusalReason(StrEnum):
    UNKNOWN_INVITE = "unknown_invite"
    EXPIRED = "expired"
    USED_UP = "used_up"
    BAD_PROOF = "bad_proof"
    BAD_CARD = "bad_card"
    REFUSED = "refused"
    GROUP_FULL = "group_full"
    BUSY = "busy"


class GroupJoinHello(msgspec.Struct, frozen=True, kw_only=True, tag="hello"):
    """Joiner -> inviter: which invite, proof of its secret, and the joiner's card."""

    invite_id: InviteId
    identity_key: Key
    proof: Proof
    card: ContactCard


class GroupJoinWelcome(msgspec.Struct, frozen=True, kw_only=True, tag="welcome"):
    """Inviter -> joiner: admitted. The group's whole log (encoded SignedGroupOps) and the cards
    of every other member."""

    proof: Proof
    card: ContactCard  # the admin's
    group_id: Key
    ops: Annotated[list[OpBytes], msgspec.Meta(min_length=1, max_length=MAX_OPS)]
    cards: Annotated[list[MemberCard], msgspec.Meta(max_length=MAX_CARDS)] = []


class GroupJoinWaiting(msgspec.Struct, frozen=True, kw_only=True, tag="waiting"):
    """Inviter -> joiner: an admin must approve; the group comes later over `/p2pid/msg/1`."""

    proof: Proof
    card: ContactCard
    group_id: Key


class GroupJoinRefused(msgspec.Struct, frozen=True, kw_only=True, tag="refused"):
    reason: RefusalReason


class GroupJoinDone(msgspec.Struct, frozen=True, kw_only=True, tag="done"):
    """Joiner -> inviter, after it checked the reply."""


GroupJoinMessage = (
    GroupJoinHello | GroupJoinWelcome | GroupJoinWaiting | GroupJoinRefused | GroupJoinDone
)

_decoder: msgspec.msgpack.Decoder[GroupJoinMessage] = msgspec.msgpack.Decoder(GroupJoinMessage)


def _check_sizes(message: GroupJoinMessage) -> None:
    """The bounds msgspec cannot express: the encoded size of each card."""
    card = getattr(message, "card", None)
    if card is not None and len(msgspec.msgpack.encode(card)) > MAX_CARD_BYTES:
        raise msgspec.ValidationError(f"a contact card is at most {MAX_CARD_BYTES} bytes")
    if isinstance(message, GroupJoinWelcome):
        for index, member in enumerate(message.cards):
            if len(msgspec.msgpack.encode(member)) > MAX_MEMBER_CARD_BYTES:
                raise msgspec.ValidationError(
                    f"member card {index + 1} is over {MAX_MEMBER_CARD_BYTES} bytes"
                )


def max_frame_bytes(message: GroupJoinMessage) -> int:
    """The largest frame its sender may send: a joiner's or an inviter's."""
    if isinstance(message, GroupJoinHello | GroupJoinDone):
        return MAX_HELLO_FRAME_BYTES
    return MAX_FRAME_BYTES


def encode_message(message: GroupJoinMessage) -> bytes:
    """Raises msgspec.ValidationError (a ValueError) if a bound is exceeded: the peer would
    refuse the frame."""
    _check_sizes(message)
    # Round trip through the decoder: the Annotated bounds are only checked when decoding.
    data = msgspec.msgpack.encode(message)
    limit = max_frame_bytes(message)
    if len(data) > limit:
        raise msgspec.ValidationError(f"a {type(message).__name__} is at most {limit} bytes")
    _decoder.decode(data)
    return data


def decode_message(data: bytes) -> GroupJoinMessage:
    """Strict: raises msgspec.DecodeError (a ValueError) on anything malformed or too big."""
    try:
        message = _decoder.decode(data)
        _check_sizes(message)
    except UnicodeDecodeError as error:  # msgspec lets this one through for non-UTF-8 strings
        raise msgspec.DecodeError(f"invalid UTF-8: {error}") from None
    if len(data) > max_frame_bytes(message):
        raise msgspec.DecodeError(
            f"a {type(message).__name__} is at most {max_frame_bytes(message)} bytes"
        )
    return message
