"""Profile fields: the rules for a field, the messages of `/p2pid/profile/1`, the events and the
RPC record. Sans-IO. See docs/protocol.md.

A sender pushes to one device of a contact the COMPLETE set of fields that contact may see now
(a snapshot); the receiver replaces what it held, so a field missing from a snapshot was revoked.
Snapshots carry a version that only grows per sending device (milliseconds since the epoch, bumped
past the last one used): a receiver applies a snapshot only if it is newer than the last it
applied from that contact, so a late or replayed older snapshot cannot bring a revoked field back.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Mapping
from enum import StrEnum
from typing import Annotated, Final

import msgspec

from p2pid.wire.events import Event

PROTOCOL_ID: Final = "/p2pid/profile/1"

MAX_FIELDS: Final = 64
MAX_NAME_CHARS: Final = 32
MAX_VALUE_CHARS: Final = 1000
MESSAGE_ID_BYTES: Final = 16
MAX_VERSION: Final = 2**63 - 1
# 64 fields of a 32-byte name and 1,000 four-byte characters, with MessagePack headers, fit.
MAX_FRAME_BYTES: Final = 256 * 1024

AUDIENCES: Final = ("public", "contacts", "chosen", "groups")
RESERVED_NAMES: Final = frozenset({"name"})
MULTILINE_FIELDS: Final = frozenset({"address"})  # newlines allowed in their values

_NAME_PATTERN = re.compile(r"[a-z0-9_-]{1,32}")


class ProfileFieldError(ValueError):
    """A field name, value or audience that p2pid refuses; the message says why."""


def check_field_name(name: str) -> str:
    if not isinstance(name, str) or not name:
        raise ProfileFieldError("a profile field needs a name")
    if name in RESERVED_NAMES:
        raise ProfileFieldError(
            f"{name!r} is not a profile field: the display name travels as the card's name"
        )
    if _NAME_PATTERN.fullmatch(name) is None:
        if len(name) > MAX_NAME_CHARS:
            raise ProfileFieldError(
                f"field name {name[:40]!r} is longer than {MAX_NAME_CHARS} characters"
            )
        hint = ""
        if _NAME_PATTERN.fullmatch(name.lower()) is not None:
            hint = f" (did you mean {name.lower()!r}?)"
        raise ProfileFieldError(
            f"field name {name!r} may only hold lower-case letters a-z, digits, '_' and '-'{hint}"
        )
    return name


def check_field_value(name: str, value: str) -> str:
    if not isinstance(value, str):
        raise ProfileFieldError(f"the value of {name!r} is not text")
    if not value:
        raise ProfileFieldError(f"the value of {name!r} is empty (remove the field instead)")
    if len(value) > MAX_VALUE_CHARS:
        raise ProfileFieldError(
            f"the value of {name!r} is {len(value)} characters, over the maximum {MAX_VALUE_CHARS}"
        )
    newline_ok = name in MULTILINE_FIELDS
    for position, character in enumerate(value):
        if character == "\n" and newline_ok:
            continue
        category = unicodedata.category(character)
        if category == "Cc":
            allowed = " (only 'address' may hold newlines)" if character == "\n" else ""
            raise ProfileFieldError(
                f"the value of {name!r} holds a control character {character!r} "
                f"at position {position}{allowed}"
            )
        if category == "Cs":
            raise ProfileFieldError(f"the value of {name!r} is not valid Unicode text")
    return value


def check_audience(audience: str) -> str:
    if audience not in AUDIENCES:
        raise ProfileFieldError(
            f"unknown audience {audience!r}; expected one of {', '.join(AUDIENCES)}"
        )
    return audience


def check_fields(fields: Mapping[str, str]) -> None:
    """A whole set of fields, as a snapshot carries it."""
    if len(fields) > MAX_FIELDS:
        raise ProfileFieldError(f"{len(fields)} fields, over the maximum {MAX_FIELDS}")
    for name, value in fields.items():
        check_field_name(name)
        check_field_value(name, value)


# -- messages ----------------------------------------------------------------------------------

MessageId = Annotated[bytes, msgspec.Meta(min_length=MESSAGE_ID_BYTES, max_length=MESSAGE_ID_BYTES)]
Version = Annotated[int, msgspec.Meta(ge=1, le=MAX_VERSION)]
LatestVersion = Annotated[int, msgspec.Meta(ge=0, le=MAX_VERSION)]


class ProfileSnapshot(msgspec.Struct, frozen=True, kw_only=True, tag="snapshot"):
    """Sender -> one device of a contact: every field that contact may see now."""

    message_id: MessageId
    version: Version  # strictly increasing per sending device (ms since the epoch, bumped)
    fields: Annotated[dict[str, str], msgspec.Meta(max_length=MAX_FIELDS)]


class AckStatus(StrEnum):
    APPLIED = "applied"  # stored and committed
    DUPLICATE = "duplicate"  # this very snapshot was applied before
    STALE = "stale"  # older than what the receiver holds: ignored; see `latest`


class ProfileAck(msgspec.Struct, frozen=True, kw_only=True, tag="ack"):
    """Receiver -> sender, after the snapshot was committed (or found stale or a duplicate)."""

    message_id: MessageId
    status: AckStatus
    latest: LatestVersion  # the version the receiver holds for this sender now


ProfileMessage = ProfileSnapshot | ProfileAck

_decoder: msgspec.msgpack.Decoder[ProfileMessage] = msgspec.msgpack.Decoder(ProfileMessage)


def encode_message(message: ProfileMessage) -> bytes:
    return msgspec.msgpack.encode(message)


def decode_message(data: bytes) -> ProfileMessage:
    """Strict: raises msgspec.DecodeError (a ValueError) on anything malformed, and
    ProfileFieldError (a ValueError) on a snapshot holding a field p2pid refuses."""
    message = _decoder.decode(data)
    if isinstance(message, ProfileSnapshot):
        check_fields(message.fields)
    return message


# -- events ------------------------------------------------------------------------------------


class ContactProfileUpdated(Event, tag="contact.profile_updated"):
    """A contact's fields changed here: `fields` is all they share with me now; `removed` names
    the fields they stopped sharing."""

    identity_id: str
    fields: dict[str, str]
    removed: list[str] = []


class ProfileDelivered(Event, tag="profile.delivered"):
    """A device of a contact acknowledged my snapshot: it holds what that contact may see."""

    identity_id: str
    peer_id: str
    version: int


# -- RPC records -------------------------------------------------------------------------------


class ProfileFieldSummary(msgspec.Struct, kw_only=True):
    """One of my fields, as `profile show` lists it."""

    name: str
    value: str
    audience: str  # public | contacts | chosen | groups
    granted_to: list[str]  # identity ids of the contacts it is shared with while 'chosen'
    updated_at_ms: int
