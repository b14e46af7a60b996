"""Messages of the group history protocol (`/p2pid/group-history/1`). Sans-IO, strict MessagePack
(msgspec). The machines and drivers are in p2pid.protocols.group_history.

A member device that was offline fetches the group messages it missed from any member device, by
message id, in one exchange per stream:

    requester                                                     responder
      | -- ids_request(group_id, since_ms, after=None, limit) ------> |  member? group? rate?
      | <- refused(reason) ------------------------------------------ |  (then the end)
      | <- ids_page(ids, next) -------------------------------------- |  ids in (after, next],
      |  asks its store which ids it lacks                            |  sent at >= since_ms
      | -- fetch(ids) -----------------------------------------------> |  1..128 ids of that page
      | <- items(items, keys) | refused(reason) --------------------- |
      |  ... more fetches of that page ...                            |
      | -- ids_request(..., after=next) ----------------------------> |  the next page
      |  ... at most MAX_ITEMS_PER_EXCHANGE items in all ...          |
      | -- done, end of stream -------------------------------------> |  closes

Ids are ordered by (sent_at_ms, message_id), the `Cursor` order. A page names at most `limit`
ids, ascending, after the request's `after` cursor; `next` (None on the last page) is the cursor to
ask from next: at or after the page's last id, after `after`. An item is a message as its sender
sent it (the encoded Megolm ciphertext); `keys` are forwarded Megolm key shares (encoded, opaque
here) the requester may need to decrypt them.

Decoding is strict (unknown tag, wrong type, a bound exceeded -> msgspec.DecodeError); unknown
fields are ignored so a minor version can add optional ones.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Final

import msgspec

PROTOCOL_ID: Final = "/p2pid/group-history/1"

GROUP_ID_BYTES: Final = 32
MESSAGE_ID_BYTES: Final = 16
KEY_BYTES: Final = 32
MAX_PAGE_IDS: Final = 512  # ids per page (the request's limit)
MAX_FETCH_IDS: Final = 128  # ids per fetch, so items per Items frame
MAX_CIPHERTEXT_BYTES: Final = 40 * 1024
MAX_KEY_SHARE_BYTES: Final = 1024
MAX_KEYS_PER_ITEMS: Final = 64
MAX_ITEMS_PER_EXCHANGE: Final = 10_000
MAX_PAGES_PER_EXCHANGE: Final = 200
MAX_MILLIS: Final = 2**53

# MessagePack sizes of the largest values: a fixmap, each field name as a fixstr (1 + its length)
# and each bytes value with its bin header (bin8: 2 bytes, bin16: 3 bytes).
MAX_ITEM_BYTES: Final = (
    1
    + (1 + len("message_id") + 2 + MESSAGE_ID_BYTES)
    + (1 + len("sender_identity") + 2 + KEY_BYTES)
    + (1 + len("sender_device_key") + 2 + KEY_BYTES)
    + (1 + len("ciphertext") + 3 + MAX_CIPHERTEXT_BYTES)
)
MAX_KEY_SHARE_ENCODED_BYTES: Final = 3 + MAX_KEY_SHARE_BYTES
# An Items frame of MAX_FETCH_IDS of the largest items and MAX_KEYS_PER_ITEMS of the largest
# key shares is the largest frame (~5.1 MiB); 1 KiB more covers its envelope.
MAX_FRAME_BYTES: Final = (
    MAX_FETCH_IDS * MAX_ITEM_BYTES + MAX_KEYS_PER_ITEMS * MAX_KEY_SHARE_ENCODED_BYTES + 1024
)

GroupId = Annotated[bytes, msgspec.Meta(min_length=GROUP_ID_BYTES, max_length=GROUP_ID_BYTES)]
MessageId = Annotated[bytes, msgspec.Meta(min_length=MESSAGE_ID_BYTES, max_length=MESSAGE_ID_BYTES)]
Key = Annotated[bytes, msgspec.Meta(min_length=KEY_BYTES, max_length=KEY_BYTES)]
Millis = Annotated[int, msgspec.Meta(ge=0, le=MAX_MILLIS)]
Ciphertext = Annotated[bytes, msgspec.Meta(min_length=1, max_length=MAX_CIPHERTEXT_BYTES)]
KeyShare = Annotated[bytes, msgspec.Meta(min_length=1, max_length=MAX_KEY_SHARE_BYTES)]


class RefusalReason(StrEnum):
    NOT_MEMBER = "not_member"  # the requesting device is no current member's device
    UNKNOWN_GROUP = "unknown_group"
    TOO_MANY_REQUESTS = "too_many_requests"


class Cursor(msgspec.Struct, frozen=True, kw_only=True, order=True):
    """A position in the (sent_at_ms, message_id) order: field order is the comparison order."""

    sent_at_ms: Millis
    message_id: MessageId


class IdEntry(msgspec.Struct, frozen=True, kw_only=True):
    message_id: MessageId
    sent_at_ms: Millis

    @property
    def cursor(self) -> Cursor:
        return Cursor(sent_at_ms=self.sent_at_ms, message_id=self.message_id)


class HistoryItem(msgspec.Struct, frozen=True, kw_only=True):
    message_id: MessageId
    sender_identity: Key
    sender_device_key: Key
    ciphertext: Ciphertext  # an encoded MegolmCiphertext


class IdsRequest(msgspec.Struct, frozen=True, kw_only=True, tag="ids_request"):
    group_id: GroupId
    since_ms: Millis
    after: Cursor | None = None
    limit: Annotated[int, msgspec.Meta(ge=1, le=MAX_PAGE_IDS)] = MAX_PAGE_IDS


class IdsPage(msgspec.Struct, frozen=True, kw_only=True, tag="ids_page"):
    ids: Annotated[list[IdEntry], msgspec.Meta(max_length=MAX_PAGE_IDS)]
    next: Cursor | None = None  # None: the last page


class Fetch(msgspec.Struct, frozen=True, kw_only=True, tag="fetch"):
    ids: Annotated[list[MessageId], msgspec.Meta(min_length=1, max_length=MAX_FETCH_IDS)]


class Items(msgspec.Struct, frozen=True, kw_only=True, tag="items"):
    items: Annotated[list[HistoryItem], msgspec.Meta(max_length=MAX_FETCH_IDS)]
    keys: Annotated[list[KeyShare], msgspec.Meta(max_length=MAX_KEYS_PER_ITEMS)] = []


class Done(msgspec.Struct, frozen=True, kw_only=True, tag="done"):
    pass


class Refused(msgspec.Struct, frozen=True, kw_only=True, tag="refused"):
    reason: RefusalReason


HistoryMessage = IdsRequest | IdsPage | Fetch | Items | Done | Refused

_decoder: msgspec.msgpack.Decoder[HistoryMessage] = msgspec.msgpack.Decoder(HistoryMessage)


def encode_message(message: HistoryMessage) -> bytes:
    return msgspec.msgpack.encode(message)


def decode_message(data: bytes) -> HistoryMessage:
    """Strict: raises msgspec.DecodeError (a ValueError) on anything malformed."""
    try:
        return _decoder.decode(data)
    except UnicodeDecodeError as error:  # msgspec lets this one through for non-UTF-8 strings
        raise msgspec.DecodeError(f"invalid UTF-8: {error}") from None
