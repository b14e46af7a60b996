"""The file data protocols (issue 8), sans-IO: the frames of `/p2pid/file/1` and of the direct
TCP bulk connection it negotiates. See docs/protocol.md, "Files".

`/p2pid/file/1` runs on an authenticated libp2p stream. The fetching device sends `Open`; the
serving device answers `Opened` (which chunks it can serve, and a direct TCP endpoint with a
one-time token) or `Refused`. The fetching device then either connects to the endpoint (the
bulk path) or, when that fails, sends `Fetch` on the same stream and reads `Chunk` frames
followed by `FetchDone` (the fallback path, for relayed routes). Before any chunk, a fetching
device without the file's manifest (the chunk digests) asks for it with `GetManifest`, page by
page (`ManifestPart`), from any serving device: it checks it against the offer's content hash.
Chunk frames are in the order
asked; more `Fetch`es may follow on the same stream. A serving device whose file changed sends
the chunks it had read, then `Refused` ("changed"); one whose transfer was cancelled resets the
stream. Frames from the serving device go up to `MAX_FRAME_BYTES`, frames to it up to
`MAX_CONTROL_FRAME_BYTES`.

The bulk TCP connection: the fetching device writes `BULK_MAGIC ‖ token(32)` and then one
`Fetch` prefixed by its length (`REQUEST_LENGTH`, at most `MAX_CONTROL_FRAME_BYTES`); see
`bulk_request`. The serving device answers with one chunk frame per asked chunk, in the order
asked, `index(u64 BE) ‖ length(u32 BE) ‖ sealed chunk`, then the header `END_OF_CHUNKS ‖ 0`, and
closes. Anything else (a bad magic, an unknown, expired or used token, a range it cannot serve) and
it closes without a byte. One token, one connection, one `Fetch`.
Each sealed chunk is XChaCha20-Poly1305 under the file key, bound to its index and the file
(p2pid.crypto.file_chunks): the connection itself adds no protection and needs none.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Iterator
from typing import Annotated, Final

import msgspec

from p2pid.wire.files import FILE_ID_BYTES, MAX_CHUNK_COUNT, MAX_CHUNK_SIZE, FileId

PROTOCOL_ID: Final = "/p2pid/file/1"
MAX_CONTROL_FRAME_BYTES: Final = 64 * 1024
MAX_FRAME_BYTES: Final = MAX_CHUNK_SIZE + 1024  # a Chunk frame of the fallback path
TOKEN_BYTES: Final = 32
MAX_RANGES: Final = 1024
MAX_ENDPOINTS: Final = 8
DIGEST_BYTES: Final = 32
MANIFEST_PAGE: Final = 32 * 1024  # digests per ManifestPart: 1 MiB, a Chunk frame's size
MANIFEST_PAGE_BYTES: Final = MANIFEST_PAGE * DIGEST_BYTES
BULK_MAGIC: Final = b"p2pidF1\n"
CHUNK_HEADER: Final = struct.Struct(">QI")
END_OF_CHUNKS: Final = 2**64 - 1
REQUEST_LENGTH: Final = struct.Struct(">I")
HELLO_BYTES: Final = len(BULK_MAGIC) + TOKEN_BYTES
END_HEADER: Final = CHUNK_HEADER.pack(END_OF_CHUNKS, 0)

Token = Annotated[bytes, msgspec.Meta(min_length=TOKEN_BYTES, max_length=TOKEN_BYTES)]
ChunkIndex = Annotated[int, msgspec.Meta(ge=0, lt=MAX_CHUNK_COUNT)]
Bitmap = Annotated[bytes, msgspec.Meta(max_length=MAX_CHUNK_COUNT // 8)]


class Endpoint(msgspec.Struct, frozen=True, array_like=True):
    host: Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
    port: Annotated[int, msgspec.Meta(ge=1, le=65535)]


class ChunkRange(msgspec.Struct, frozen=True, array_like=True):
    start: ChunkIndex
    stop: Annotated[int, msgspec.Meta(ge=1, le=MAX_CHUNK_COUNT)]  # exclusive


class Open(msgspec.Struct, frozen=True, kw_only=True, tag="open"):
    file_id: FileId
    direct: bool = True  # False: the fetching device will use the fallback only


class Opened(msgspec.Struct, frozen=True, kw_only=True, tag="opened"):
    # Chunks this device can serve: a bitmap (bit i of byte i // 8, least significant first),
    # or empty for "all of them".
    have: Bitmap = b""
    endpoints: Annotated[list[Endpoint], msgspec.Meta(max_length=MAX_ENDPOINTS)] = []
    token: Token | None = None  # for the endpoints; one connection, expires in ~60 s


class Refused(msgspec.Struct, frozen=True, kw_only=True, tag="refused"):
    # "unknown" | "not_allowed" | "cancelled" | "changed" (the source file changed) | "busy"
    reason: Annotated[str, msgspec.Meta(max_length=32)]
    message: Annotated[str, msgspec.Meta(max_length=512)] = ""


class Fetch(msgspec.Struct, frozen=True, kw_only=True, tag="fetch"):
    ranges: Annotated[list[ChunkRange], msgspec.Meta(min_length=1, max_length=MAX_RANGES)]


class Chunk(msgspec.Struct, frozen=True, kw_only=True, tag="chunk"):
    index: ChunkIndex
    sealed: Annotated[bytes, msgspec.Meta(max_length=MAX_CHUNK_SIZE + 64)]


class FetchDone(msgspec.Struct, frozen=True, kw_only=True, tag="fetch-done"):
    pass


class GetManifest(msgspec.Struct, frozen=True, kw_only=True, tag="get-manifest"):
    """The chunk digests from `start` on (at most MANIFEST_PAGE of them per answer)."""

    start: ChunkIndex = 0


class ManifestPart(msgspec.Struct, frozen=True, kw_only=True, tag="manifest"):
    start: ChunkIndex
    digests: Annotated[bytes, msgspec.Meta(min_length=DIGEST_BYTES, max_length=MANIFEST_PAGE_BYTES)]


FileFrame = Open | Opened | Refused | Fetch | Chunk | FetchDone | GetManifest | ManifestPart

_frame_decoder: msgspec.msgpack.Decoder[FileFrame] = msgspec.msgpack.Decoder(FileFrame)
_fetch_decoder: msgspec.msgpack.Decoder[Fetch] = msgspec.msgpack.Decoder(Fetch)


class FileFrameError(ValueError):
    """A frame of the file protocols that p2pid refuses."""


def encode_frame(frame: FileFrame) -> bytes:
    return msgspec.msgpack.encode(frame)


def decode_frame(data: bytes) -> FileFrame:
    """Strict: FileFrameError on anything malformed or inconsistent."""
    try:
        frame = _frame_decoder.decode(data)
    except msgspec.DecodeError as error:
        raise FileFrameError(f"malformed file frame: {error}") from None
    if isinstance(frame, Fetch):
        check_ranges(frame.ranges)
    return frame


def decode_fetch(data: bytes) -> Fetch:
    try:
        fetch = _fetch_decoder.decode(data)
    except msgspec.DecodeError as error:
        raise FileFrameError(f"malformed fetch request: {error}") from None
    check_ranges(fetch.ranges)
    return fetch


def check_ranges(ranges: list[ChunkRange], chunk_count: int | None = None) -> None:
    """Non-empty, ascending, non-overlapping; within the file when its chunk count is known."""
    previous_stop = 0
    for chunk_range in ranges:
        if chunk_range.start >= chunk_range.stop:
            raise FileFrameError(f"empty chunk range {chunk_range.start}..{chunk_range.stop}")
        if chunk_range.start < previous_stop:
            raise FileFrameError("chunk ranges must be ascending and must not overlap")
        if chunk_count is not None and chunk_range.stop > chunk_count:
            raise FileFrameError(f"chunk range ends at {chunk_range.stop}, past {chunk_count}")
        previous_stop = chunk_range.stop


def bulk_request(token: bytes, ranges: list[ChunkRange]) -> bytes:
    """What the fetching device writes first on a bulk connection."""
    if len(token) != TOKEN_BYTES:
        raise FileFrameError(f"a token is {TOKEN_BYTES} bytes")
    if not 1 <= len(ranges) <= MAX_RANGES:
        raise FileFrameError(f"a fetch asks for 1 to {MAX_RANGES} ranges, not {len(ranges)}")
    check_ranges(ranges)
    fetch = encode_frame(Fetch(ranges=ranges))
    return BULK_MAGIC + token + REQUEST_LENGTH.pack(len(fetch)) + fetch


def range_indexes(ranges: Iterable[ChunkRange]) -> Iterator[int]:
    """Every chunk index the ranges name, in order."""
    for chunk_range in ranges:
        yield from range(chunk_range.start, chunk_range.stop)


def bitmap_has_ranges(bitmap: bytes, ranges: Iterable[ChunkRange]) -> bool:
    """Every chunk the ranges name is in the bitmap (empty bitmap: everything)."""
    return not bitmap or all(bitmap_has(bitmap, index) for index in range_indexes(ranges))


def bitmap_has(bitmap: bytes, index: int) -> bool:
    """Empty bitmap: everything."""
    if not bitmap:
        return True
    byte = index >> 3
    return byte < len(bitmap) and bool(bitmap[byte] >> (index & 7) & 1)


__all__ = ["FILE_ID_BYTES", "Bitmap"]
