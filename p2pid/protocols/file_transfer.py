"""`/p2pid/file/1` over a libp2p stream (issue 8): the serving device's handler, and the fetching
device's two steps, `open_source` (which chunks, and a direct endpoint with a token) and
`fetch_over_stream` (the fallback path: the same sealed chunks as `Chunk` frames). The frames are
in p2pid.wire.file_transfer; the chunk pipelines are shared with the direct path
(p2pid.files.transport).
"""

from __future__ import annotations

import contextlib
import logging
import weakref
from collections.abc import Awaitable, Callable, Sequence
from contextlib import nullcontext
from functools import partial
from typing import Final

import trio

from p2pid.crypto.file_chunks import ContentHashError, check_manifest
from p2pid.files.transport import (
    IDLE_TIMEOUT,
    BulkServer,
    ChunkSink,
    ChunkSource,
    SealedChunk,
    SourceError,
    TransferBroken,
    check_chunk_frame,
    check_fetch_ranges,
    receive_chunks,
    send_chunks,
)
from p2pid.net.host import Stream, StreamError, close_quietly, remote_peer_id
from p2pid.protocols.framed import FramedStream
from p2pid.wire.file_transfer import (
    DIGEST_BYTES,
    MANIFEST_PAGE_BYTES,
    MAX_CONTROL_FRAME_BYTES,
    MAX_ENDPOINTS,
    MAX_FRAME_BYTES,
    Chunk,
    ChunkRange,
    Endpoint,
    Fetch,
    FetchDone,
    FileFrame,
    FileFrameError,
    GetManifest,
    ManifestPart,
    Open,
    Opened,
    Refused,
    bitmap_has_ranges,
    decode_frame,
    encode_frame,
    range_indexes,
)
from p2pid.wire.files import FileOffer
from p2pid.wire.framing import FrameError
from p2pid.wire.framing import encode_frame as length_prefixed

logger = logging.getLogger(__name__)

OPEN_TIMEOUT: Final = 10.0  # for the first frame of a stream, and for the answer to Open

Lookup = Callable[[bytes, str], Awaitable[ChunkSource | Refused]]


class SourceRefused(Exception):
    """The serving device refused the file (Refused): `reason` is one of the wire's reasons."""

    def __init__(self, reason: str, message: str = "") -> None:
        super().__init__(f"{reason}: {message}" if message else reason)
        self.reason = reason
        self.message = message


# -- the serving device ------------------------------------------------------------------------


async def serve_file_stream(
    stream: Stream,
    lookup: Lookup,
    bulk: BulkServer | None,
    endpoints: Callable[[], list[Endpoint]],
    on_sent: Callable[[bytes, int], None],
    on_bulk_done: Callable[[bytes, bool], None] | None = None,
) -> None:
    """Answer one `/p2pid/file/1` stream: Open -> Opened (a token for `bulk` when the fetcher
    wants the direct path and there are endpoints) or Refused; then each Fetch -> Chunk frames +
    FetchDone, and each further Open -> a fresh Opened, until the fetcher ends the stream. Never
    raises (but Cancelled): anything wrong is logged and the stream reset. `bulk.close_file`
    also stops the sends on this stream. `on_sent(file_id, plaintext bytes)` after each chunk
    sent on either path; `on_bulk_done(file_id, complete)` when the direct connection for the
    token ends."""
    peer_id = remote_peer_id(stream)
    try:
        await _serve(stream, peer_id, lookup, bulk, endpoints, on_sent, on_bulk_done)
    except (FileFrameError, FrameError, StreamError, TransferBroken, trio.TooSlowError) as error:
        logger.info("file stream from %s ended: %s", peer_id, error)
        await _reset(stream)
    except Exception:
        logger.exception("file stream from %s failed", peer_id)
        await _reset(stream)
    else:
        await close_quietly(stream)


async def _serve(
    stream: Stream,
    peer_id: str,
    lookup: Lookup,
    bulk: BulkServer | None,
    endpoints: Callable[[], list[Endpoint]],
    on_sent: Callable[[bytes, int], None],
    on_bulk_done: Callable[[bytes, bool], None] | None,
) -> None:
    # Frames in are small (Open, Fetch); frames out go up to a Chunk (an Opened bitmap of a huge
    # file is bigger than MAX_CONTROL_FRAME_BYTES too).
    framed = FramedStream(stream, MAX_CONTROL_FRAME_BYTES)

    async def send(frame: FileFrame) -> None:
        await stream.write(length_prefixed(encode_frame(frame), MAX_FRAME_BYTES))

    async def send_one(index: int, sealed: bytes) -> None:
        with trio.fail_after(IDLE_TIMEOUT):
            await send(Chunk(index=index, sealed=sealed))

    with trio.fail_after(OPEN_TIMEOUT):
        data: bytes | None = await framed.receive()
    source: ChunkSource | None = None
    while data is not None:
        frame = decode_frame(data)
        if isinstance(frame, Open):  # first, or again for a fresh token and bitmap
            found = await lookup(frame.file_id, peer_id)
            if isinstance(found, Refused):
                await send(found)
                await framed.finish()
                return
            source = found
            await send(
                _opened(source, frame.direct, peer_id, bulk, endpoints, on_sent, on_bulk_done)
            )
        elif isinstance(frame, GetManifest) and source is not None:
            manifest = source.manifest()
            start = frame.start * DIGEST_BYTES
            if not start < len(manifest):
                raise FileFrameError(f"no chunk digest {frame.start}")
            page = manifest[start : start + MANIFEST_PAGE_BYTES]
            await send(ManifestPart(start=frame.start, digests=page))
        elif isinstance(frame, Fetch) and source is not None:
            file_id = source.offer.file_id
            ranges = check_fetch_ranges(source.offer, frame.ranges)
            if not bitmap_has_ranges(source.have(), ranges):
                raise FileFrameError("fetch of chunks this device does not have")
            try:
                with bulk.sending(file_id) if bulk is not None else nullcontext() as scope:
                    await send_chunks(source, ranges, send_one, partial(on_sent, file_id))
            except SourceError as error:
                await send(Refused(reason="changed", message=str(error)[:512]))
                await framed.finish()
                return
            if scope is not None and scope.cancelled_caught:
                raise TransferBroken("the file was closed while it was being sent")
            await send(FetchDone())
        else:
            expected = "open or fetch" if source is not None else "open"
            raise FileFrameError(f"expected {expected}, got {type(frame).__name__}")
        data = await framed.receive_or_end()
    await framed.finish()


def _opened(
    source: ChunkSource,
    direct: bool,
    peer_id: str,
    bulk: BulkServer | None,
    endpoints: Callable[[], list[Endpoint]],
    on_sent: Callable[[bytes, int], None],
    on_bulk_done: Callable[[bytes, bool], None] | None,
) -> Opened:
    file_id = source.offer.file_id
    offered = endpoints()[:MAX_ENDPOINTS] if direct and bulk is not None else []
    if not offered or bulk is None:
        return Opened(have=source.have())
    token = bulk.issue(
        source,
        peer_id,
        lambda sent: on_sent(file_id, sent),
        None if on_bulk_done is None else lambda complete: on_bulk_done(file_id, complete),
    )
    return Opened(have=source.have(), endpoints=offered, token=token)


async def _reset(stream: Stream) -> None:
    # A stream already gone is reset enough.
    with trio.CancelScope(shield=True), trio.move_on_after(5), contextlib.suppress(Exception):
        await stream.reset()


# -- the fetching device -----------------------------------------------------------------------

# The fetcher's framing state per stream, so that `open_source` and `fetch_over_stream` read one
# byte stream with one decoder.
_framed_streams: weakref.WeakKeyDictionary[Stream, FramedStream] = weakref.WeakKeyDictionary()


def _framed(stream: Stream) -> FramedStream:
    framed = _framed_streams.get(stream)
    if framed is None:
        framed = _framed_streams[stream] = FramedStream(stream, MAX_FRAME_BYTES)
    return framed


async def open_source(stream: Stream, file_id: bytes, *, direct: bool = True) -> Opened:
    """Ask the serving device for `file_id`. SourceRefused if it refuses; FileFrameError on a
    malformed answer; stream errors as they come (FrameError, StreamError, trio.TooSlowError)."""
    framed = _framed(stream)
    await framed.send(encode_frame(Open(file_id=file_id, direct=direct)))
    with trio.fail_after(OPEN_TIMEOUT):
        answer = decode_frame(await framed.receive())
    if isinstance(answer, Refused):
        raise SourceRefused(answer.reason, answer.message)
    if not isinstance(answer, Opened):
        raise FileFrameError(f"expected opened or refused, got {type(answer).__name__}")
    if answer.endpoints and answer.token is None:
        raise FileFrameError("endpoints without a token")
    return answer


async def fetch_manifest(stream: Stream, offer: FileOffer) -> bytes:
    """The file's chunk digests from the serving device, after `open_source` on the same stream,
    checked against the offer's content hash (ContentHashError if they are not the sender's)."""
    framed = _framed(stream)
    manifest = bytearray()
    wanted = offer.chunk_count * DIGEST_BYTES
    while len(manifest) < wanted:
        start = len(manifest) // DIGEST_BYTES
        await framed.send(encode_frame(GetManifest(start=start)))
        with trio.fail_after(OPEN_TIMEOUT):
            answer = decode_frame(await framed.receive())
        if isinstance(answer, Refused):
            raise SourceRefused(answer.reason, answer.message)
        if not isinstance(answer, ManifestPart) or answer.start != start:
            raise FileFrameError(f"expected the manifest from {start}, got {answer!r:.80}")
        if len(answer.digests) % DIGEST_BYTES or len(manifest) + len(answer.digests) > wanted:
            raise ContentHashError("the manifest does not fit the offer")
        manifest += answer.digests
    return check_manifest(offer, manifest)


async def fetch_over_stream(
    stream: Stream,
    sink: ChunkSink,
    ranges: Sequence[ChunkRange],
    *,
    on_chunk: Callable[[int, int], None],
) -> None:
    """The fallback path, after `open_source` on the same stream: fetch `ranges` as Chunk frames
    into `sink`. The same checks and errors as `fetch_direct` (TransferBroken for a broken stream
    or any frame out of place), plus SourceRefused when the serving device stops serving. After
    an error or a cancel the stream is reset (the serving device stops); after success it can
    carry another fetch."""
    offer = sink.offer
    asked = check_fetch_ranges(offer, ranges)
    framed = _framed(stream)

    async def next_frame() -> FileFrame:
        try:
            with trio.fail_after(IDLE_TIMEOUT):
                frame = decode_frame(await framed.receive())
        except (FileFrameError, FrameError, StreamError, trio.TooSlowError) as error:
            raise TransferBroken(f"the file stream broke: {error}") from error
        if isinstance(frame, Refused):
            raise SourceRefused(frame.reason, frame.message)
        return frame

    async def read(chunks: trio.MemorySendChannel[SealedChunk]) -> None:
        for expected in range_indexes(asked):
            frame = await next_frame()
            if isinstance(frame, FetchDone):
                raise TransferBroken(f"the transfer ended early: chunk {expected} and after")
            if not isinstance(frame, Chunk):
                raise TransferBroken(f"expected a chunk, got {type(frame).__name__}")
            check_chunk_frame(offer, expected, frame.index, len(frame.sealed))
            await chunks.send(SealedChunk(frame.index, frame.sealed))
        frame = await next_frame()
        if not isinstance(frame, FetchDone):
            raise TransferBroken(f"expected the end of the fetch, got {type(frame).__name__}")

    try:
        try:
            await framed.send(encode_frame(Fetch(ranges=asked)))
        except StreamError as error:
            raise TransferBroken(f"the file stream broke: {error}") from error
        await receive_chunks(sink, read, on_chunk)
    except BaseException:
        await _reset(stream)
        raise
