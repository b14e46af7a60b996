"""File offers (issue 8), sans-IO: the record that announces a file, its consistency rules, and
the rule that turns a sender's file name into one that is safe to create on the receiver's disk.

A `FileOffer` travels inside an encrypted message. It carries the per-file key and the chunking;
the chunks themselves are sealed by `p2pid.crypto.file_chunks`.

Chunking: every chunk is `chunk_size` bytes except the last, which holds the rest (1 to
`chunk_size` bytes). An empty file has exactly one chunk, and it is empty, so every file has at
least one authenticated chunk and an empty file cannot be confused with a missing one.
"""

from __future__ import annotations

import re
import unicodedata
from typing import Annotated, Final

import msgspec

FILE_ID_BYTES: Final = 16
KEY_BYTES: Final = 32
HASH_BYTES: Final = 32  # BLAKE3-256 (derive-key mode) of the chunk digests: see file_chunks
NONCE_PREFIX_BYTES: Final = 16
MAX_FILE_SIZE: Final = 2**40
MIN_CHUNK_SIZE: Final = 64 * 1024
MAX_CHUNK_SIZE: Final = 4 * 1024 * 1024
DEFAULT_CHUNK_SIZE: Final = 1024 * 1024
# 1 TiB in 1 MiB chunks; the manifest (32 bytes a chunk) stays under 32 MiB.
MAX_CHUNK_COUNT: Final = 2**20
MAX_NAME_BYTES: Final = 255  # UTF-8 bytes: the limit of ext4, NTFS (in UTF-16 units) and APFS
MAX_MEDIA_TYPE_CHARS: Final = 127

# RFC 6838 restricted names: type "/" subtype.
_MEDIA_NAME: Final = r"[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]*"
MEDIA_TYPE_PATTERN: Final = rf"^{_MEDIA_NAME}/{_MEDIA_NAME}\Z"

FileId = Annotated[bytes, msgspec.Meta(min_length=FILE_ID_BYTES, max_length=FILE_ID_BYTES)]
Key = Annotated[bytes, msgspec.Meta(min_length=KEY_BYTES, max_length=KEY_BYTES)]
Hash = Annotated[bytes, msgspec.Meta(min_length=HASH_BYTES, max_length=HASH_BYTES)]
NoncePrefix = Annotated[
    bytes, msgspec.Meta(min_length=NONCE_PREFIX_BYTES, max_length=NONCE_PREFIX_BYTES)
]
FileName = Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_NAME_BYTES)]
FileSize = Annotated[int, msgspec.Meta(ge=0, le=MAX_FILE_SIZE)]
MediaType = Annotated[
    str, msgspec.Meta(max_length=MAX_MEDIA_TYPE_CHARS, pattern=MEDIA_TYPE_PATTERN)
]
ChunkSize = Annotated[int, msgspec.Meta(ge=MIN_CHUNK_SIZE, le=MAX_CHUNK_SIZE)]
ChunkCount = Annotated[int, msgspec.Meta(ge=1, le=MAX_CHUNK_COUNT)]


class FileOfferError(ValueError):
    """An offer whose fields do not agree with each other or with the limits."""


class UnsafeFileNameError(ValueError):
    """A file name that p2pid refuses to create: it names a path, a device, or nothing."""


class FileOffer(msgspec.Struct, frozen=True, kw_only=True, tag="file-offer"):
    """One file, announced by its sender. Check it with `check_offer` after decoding."""

    file_id: FileId
    name: FileName  # as `safe_file_name` returns it
    size: FileSize
    media_type: MediaType
    content_hash: Hash
    key: Key  # XChaCha20-Poly1305 key of this file only
    chunk_size: ChunkSize  # a power of two
    chunk_count: ChunkCount  # chunk_count_for(size, chunk_size)
    nonce_prefix: NoncePrefix


def chunk_count_for(size: int, chunk_size: int) -> int:
    """ceil(size / chunk_size), and 1 for an empty file (one empty chunk)."""
    return max(1, -(-size // chunk_size))


def check_offer(offer: FileOffer) -> FileOffer:
    """The offer itself if it is consistent, else FileOfferError saying what is wrong."""
    if not MIN_CHUNK_SIZE <= offer.chunk_size <= MAX_CHUNK_SIZE or (
        offer.chunk_size & (offer.chunk_size - 1)
    ):
        raise FileOfferError(
            f"the chunk size {offer.chunk_size} is not a power of two in "
            f"{MIN_CHUNK_SIZE}..{MAX_CHUNK_SIZE}"
        )
    if not 0 <= offer.size <= MAX_FILE_SIZE:
        raise FileOfferError(f"the file size {offer.size} is not in 0..{MAX_FILE_SIZE}")
    expected = chunk_count_for(offer.size, offer.chunk_size)
    if offer.chunk_count != expected:
        raise FileOfferError(
            f"{offer.chunk_count} chunks declared, but {offer.size} bytes in chunks of "
            f"{offer.chunk_size} make {expected}"
        )
    if len(offer.media_type) > MAX_MEDIA_TYPE_CHARS or not re.match(
        MEDIA_TYPE_PATTERN, offer.media_type
    ):
        raise FileOfferError(f"{offer.media_type!r} is not a media type (type/subtype)")
    lengths = {
        "file id": (offer.file_id, FILE_ID_BYTES),
        "key": (offer.key, KEY_BYTES),
        "content hash": (offer.content_hash, HASH_BYTES),
        "nonce prefix": (offer.nonce_prefix, NONCE_PREFIX_BYTES),
    }
    for what, (value, length) in lengths.items():
        if len(value) != length:
            raise FileOfferError(f"the {what} is {len(value)} bytes, not {length}")
    check_clean_name(offer.name)
    return offer


def check_clean_name(name: str) -> str:
    """`name` if `safe_file_name` leaves it as it is, else FileOfferError: a receiver refuses
    a name the sender should have cleaned; it does not clean it itself."""
    try:
        safe = safe_file_name(name)
    except UnsafeFileNameError as error:
        raise FileOfferError(f"unsafe file name: {error}") from None
    if safe != name:
        raise FileOfferError(f"the file name {name!r} is not clean (it would be {safe!r})")
    return name


_offer_decoder: msgspec.msgpack.Decoder[FileOffer] = msgspec.msgpack.Decoder(FileOffer)


def encode_offer(offer: FileOffer) -> bytes:
    return msgspec.msgpack.encode(offer)


def decode_offer(data: bytes) -> FileOffer:
    """Strict: msgspec.DecodeError or FileOfferError (both ValueError)."""
    return check_offer(_offer_decoder.decode(data))


# -- file names --------------------------------------------------------------------------------

_DEVICE_NAMES: Final = frozenset(
    ["CON", "PRN", "AUX", "NUL", "CONIN$", "CONOUT$", "CLOCK$"]
    + [f"{port}{digit}" for port in ("COM", "LPT") for digit in "0123456789\u00b9\u00b2\u00b3"]
)
_DRIVE: Final = re.compile(r"[A-Za-z]:")
_EDGES: Final = re.compile(r"^[\s.]+|[\s.]+$")
_WINDOWS_RESERVED: Final = str.maketrans(dict.fromkeys('<>:"|?*', "_"))
# Bidirectional controls: "photo\u202egnp.exe" shows as "photoexe.png".
_BIDI_CONTROLS: Final = frozenset("\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e") | frozenset(
    "\u2066\u2067\u2068\u2069"
)
_INVISIBLE_CATEGORIES: Final = frozenset(["Cc", "Zl", "Zp"])
_MAX_EXTENSION_BYTES: Final = 16  # kept whole when a long name is cut


def safe_file_name(name: str) -> str:
    """A file name that is safe to create in the folder the receiver chose, or
    UnsafeFileNameError. Idempotent: a name it returns comes back unchanged.

    Refused (anything that names a path or a device, or hides a truncation):
    a path separator (`/` or `\\`: traversal, absolute and UNC paths), `.` and `..`, a drive
    prefix (`C:`), NUL, text that is not valid Unicode, a Windows device name (CON, PRN, AUX,
    NUL, COM0-9, LPT0-9 in any case, with or without an extension), and a name left empty.

    Neutralised: the name is NFC-normalised; control characters, line and paragraph separators
    and bidirectional controls are removed; `<>:"|?*` become `_`; leading dots (hidden files)
    and leading or trailing whitespace and dots are stripped; a name over 255 UTF-8 bytes is cut
    at a character boundary, keeping a short extension.
    """
    if not isinstance(name, str):
        raise UnsafeFileNameError("a file name is text")
    if "\0" in name:
        raise UnsafeFileNameError("the name contains NUL")
    if "/" in name or "\\" in name:
        raise UnsafeFileNameError("the name contains a path separator")
    if _DRIVE.match(name):
        raise UnsafeFileNameError("the name starts with a drive")
    if name.strip() in (".", ".."):
        raise UnsafeFileNameError("the name is a directory reference")
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        raise UnsafeFileNameError("the name is not valid Unicode") from None
    # Each step can expose work for another (cutting leaves a trailing dot, NFC of a cut name):
    # run them to a fixed point so the result is stable. Every pass except the last shortens or
    # changes the name; three passes are plenty, more means a bug.
    for _ in range(4):
        cleaned = _clean(name)
        if cleaned == name:
            return cleaned
        name = cleaned
    raise UnsafeFileNameError("the name does not settle")  # pragma: no cover


def _clean(name: str) -> str:
    name = unicodedata.normalize("NFC", name)
    name = "".join(
        char
        for char in name
        if char not in _BIDI_CONTROLS and unicodedata.category(char) not in _INVISIBLE_CATEGORIES
    )
    name = _EDGES.sub("", name.translate(_WINDOWS_RESERVED))
    name = _cut(name)
    if not name:
        raise UnsafeFileNameError("the name is empty once cleaned")
    # Windows ignores the extension and trailing spaces or dots when it looks for a device.
    stem = name.split(".", 1)[0].rstrip(" .")
    if stem.upper() in _DEVICE_NAMES:
        raise UnsafeFileNameError(f"{stem!r} is a Windows device name")
    return name


def _cut(name: str) -> str:
    data = name.encode("utf-8")
    if len(data) <= MAX_NAME_BYTES:
        return name
    stem, dot, extension = name.rpartition(".")
    suffix = (dot + extension).encode("utf-8")
    if not stem or not extension or len(suffix) > _MAX_EXTENSION_BYTES:
        stem, suffix = name, b""
    head = stem.encode("utf-8")[: MAX_NAME_BYTES - len(suffix)].decode("utf-8", "ignore")
    return _EDGES.sub("", head) + suffix.decode("utf-8")
