"""Records of a group's membership log: signed operations that form a DAG. Sans-IO, strict
MessagePack (msgspec).

A membership operation travels as a `SignedGroupOp`: the exact MessagePack bytes of a
`GroupOpBody` and the Ed25519 signature of its author's identity key over
`GROUP_OP_CONTEXT + body` (see p2pid.groups.membership for signing, the op id and the rules).

    GroupOpBody
      group_id    32 B    the genesis op's id; absent (None) in the genesis itself
      parents     0..16   ids of the ops the author knew as heads; empty only in the genesis
      author      32 B    the author's identity key (Ed25519 public key)
      created_at  ms      the author's clock; informative only (never used for ordering)
      op          one of  create | add | remove | leave | promote | demote | rename

Decoding is strict (unknown op tag, wrong type, a bound exceeded -> msgspec.DecodeError);
unknown fields are ignored so a minor version can add optional ones (the signature covers the
exact bytes, so nothing is lost in transit). Names and avatars hold no control characters.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, TypeVar

import msgspec

_T = TypeVar("_T")

GROUP_OP_CONTEXT = b"p2pid-group-op-v1\0"
OP_ID_PERSON = b"p2pid-group-op"  # BLAKE2b personalisation of op ids (padded to 16 bytes)
MAX_OP_BODY_BYTES = 2048
MAX_PARENTS = 16
MAX_MEMBERS = 500
MAX_NAME_CHARS = 64
MAX_AVATAR_CHARS = 8
SIGNATURE_BYTES = 64
NONCE_BYTES = 16

# No control characters, no bidirectional overrides (a name must not rewrite a terminal line).
_PRINTABLE = r"^[^\x00-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]*$"

Key = Annotated[bytes, msgspec.Meta(min_length=32, max_length=32)]
OpId = Annotated[bytes, msgspec.Meta(min_length=32, max_length=32)]
Nonce = Annotated[bytes, msgspec.Meta(min_length=NONCE_BYTES, max_length=NONCE_BYTES)]
Name = Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_NAME_CHARS, pattern=_PRINTABLE)]
Avatar = Annotated[str, msgspec.Meta(max_length=MAX_AVATAR_CHARS, pattern=_PRINTABLE)]
Millis = Annotated[int, msgspec.Meta(ge=0, le=2**53)]
Body = Annotated[bytes, msgspec.Meta(max_length=MAX_OP_BODY_BYTES)]
Signature = Annotated[bytes, msgspec.Meta(min_length=SIGNATURE_BYTES, max_length=SIGNATURE_BYTES)]


class Role(StrEnum):
    ADMIN = "admin"
    MEMBER = "member"


class Create(msgspec.Struct, frozen=True, kw_only=True, tag="create"):
    """The genesis: its author is the first member and the first admin."""

    name: Name
    avatar: Avatar = ""  # an emoji or initials
    display_name: Name  # the creator's name in the group (Add carries it for everyone else)
    nonce: Nonce  # random: two groups created alike in the same millisecond still differ


class Add(msgspec.Struct, frozen=True, kw_only=True, tag="add"):
    member: Key  # an identity key
    role: Role = Role.MEMBER
    display_name: Name


class Remove(msgspec.Struct, frozen=True, kw_only=True, tag="remove"):
    member: Key


class Leave(msgspec.Struct, frozen=True, kw_only=True, tag="leave"):
    """The author leaves the group."""


class Promote(msgspec.Struct, frozen=True, kw_only=True, tag="promote"):
    member: Key


class Demote(msgspec.Struct, frozen=True, kw_only=True, tag="demote"):
    member: Key


class Rename(msgspec.Struct, frozen=True, kw_only=True, tag="rename"):
    name: Name
    avatar: Avatar = ""


GroupOp = Create | Add | Remove | Leave | Promote | Demote | Rename


class GroupOpBody(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    group_id: OpId | None = None
    parents: Annotated[list[OpId], msgspec.Meta(max_length=MAX_PARENTS)] = []
    author: Key
    created_at: Millis
    op: GroupOp


class SignedGroupOp(msgspec.Struct, frozen=True, kw_only=True):
    body: Body  # the MessagePack encoding of a GroupOpBody, exactly as signed
    signature: Signature  # Ed25519 by body.author over GROUP_OP_CONTEXT + body


_body_decoder: msgspec.msgpack.Decoder[GroupOpBody] = msgspec.msgpack.Decoder(GroupOpBody)
_signed_decoder: msgspec.msgpack.Decoder[SignedGroupOp] = msgspec.msgpack.Decoder(SignedGroupOp)
_signed_list_decoder: msgspec.msgpack.Decoder[list[SignedGroupOp]] = msgspec.msgpack.Decoder(
    list[SignedGroupOp]
)


def encode_op_body(body: GroupOpBody) -> bytes:
    return msgspec.msgpack.encode(body)


def decode_op_body(data: bytes) -> GroupOpBody:
    """Strict: raises msgspec.DecodeError (a ValueError) for anything malformed or too big."""
    if len(data) > MAX_OP_BODY_BYTES:
        raise msgspec.DecodeError(f"an operation body is at most {MAX_OP_BODY_BYTES} bytes")
    return _strict(_body_decoder, data)


def encode_signed_op(signed: SignedGroupOp) -> bytes:
    return msgspec.msgpack.encode(signed)


def decode_signed_op(data: bytes) -> SignedGroupOp:
    """Strict: raises msgspec.DecodeError (a ValueError) for anything malformed."""
    return _strict(_signed_decoder, data)


def encode_signed_ops(ops: list[SignedGroupOp]) -> bytes:
    return msgspec.msgpack.encode(ops)


def decode_signed_ops(data: bytes) -> list[SignedGroupOp]:
    """A list of signed ops (catch-up); the caller bounds `data` by its frame limit."""
    return _strict(_signed_list_decoder, data)


def _strict(decoder: msgspec.msgpack.Decoder[_T], data: bytes) -> _T:
    # msgspec raises UnicodeDecodeError, not DecodeError, for a string that is not UTF-8.
    try:
        return decoder.decode(data)
    except UnicodeDecodeError as error:
        raise msgspec.DecodeError(f"invalid UTF-8: {error}") from None
