"""The file data paths (issue 8): the direct TCP bulk path (p2pid.files.transport) over real
sockets on 127.0.0.1, and `/p2pid/file/1` over two real NetHosts (p2pid.protocols.file_transfer),
with a real file source and sink (pread + seal, open + pwrite). Bad senders are small hostile
servers written here: fakes standing in for a misbehaving peer."""

from __future__ import annotations

import errno
import os
import secrets
import threading
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager, suppress
from pathlib import Path

import pytest
import trio

from p2pid.crypto.file_chunks import (
    ChunkError,
    ContentHashError,
    chunk_length,
    chunk_offset,
    hash_file,
    new_offer,
    open_chunk,
    seal_chunk,
)
from p2pid.files.transport import (
    PIPELINE_DEPTH,
    BulkConnectError,
    BulkServer,
    SourceError,
    TransferBroken,
    fetch_direct,
)
from p2pid.net.host import NetHost, Stream
from p2pid.protocols.file_transfer import (
    SourceRefused,
    fetch_manifest,
    fetch_over_stream,
    open_source,
    serve_file_stream,
)
from p2pid.wire.file_transfer import (
    BULK_MAGIC,
    CHUNK_HEADER,
    END_HEADER,
    HELLO_BYTES,
    MAX_FRAME_BYTES,
    PROTOCOL_ID,
    REQUEST_LENGTH,
    Chunk,
    ChunkRange,
    Endpoint,
    Fetch,
    FileFrameError,
    Opened,
    Refused,
    bulk_request,
    decode_frame,
    encode_frame,
)
from p2pid.wire.files import MIN_CHUNK_SIZE, FileOffer
from p2pid.wire.framing import FrameDecoder
from p2pid.wire.framing import encode_frame as length_prefixed

CHUNK = MIN_CHUNK_SIZE  # 64 KiB
SIZE = 3 * 1024 * 1024 + 12345  # 49 chunks, the last one short
TIMEOUT = 10
LOOPBACK = ["/ip4/127.0.0.1/tcp/0"]


# -- a real source and sink --------------------------------------------------------------------


class FileSource:
    """pread + seal, as the service's source does."""

    def __init__(self, path: Path, offer: FileOffer, have: bytes = b"") -> None:
        self.offer = offer
        self._have = have
        self._manifest = hash_file(path, offer.chunk_size)[1]
        self._fd = os.open(path, os.O_RDONLY)
        self.reads: list[int] = []

    def have(self) -> bytes:
        return self._have

    def manifest(self) -> bytes:
        return self._manifest

    def read_sealed(self, index: int) -> bytes:
        self.reads.append(index)
        plaintext = os.pread(
            self._fd, chunk_length(self.offer, index), chunk_offset(self.offer, index)
        )
        return seal_chunk(self.offer, index, plaintext)

    def close(self) -> None:
        os.close(self._fd)


class FileSink:
    """open + pwrite into a partial file; remembers the chunks it has."""

    def __init__(self, path: Path, offer: FileOffer, had: set[int] | None = None) -> None:
        self.offer = offer
        self.path = path
        self.had = set() if had is None else set(had)
        self.written: list[int] = []
        self._fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)

    def open_chunk(self, index: int, sealed: bytes | bytearray) -> bytes | None:
        if index in self.had:
            return None
        plaintext = open_chunk(self.offer, index, bytes(sealed))
        self.had.add(index)
        return plaintext

    def write_chunk(self, index: int, plaintext: bytes) -> None:
        os.pwrite(self._fd, plaintext, chunk_offset(self.offer, index))
        self.written.append(index)

    def close(self) -> None:
        os.close(self._fd)


class Progress:
    def __init__(self) -> None:
        self.chunks: list[int] = []
        self.bytes = 0

    def __call__(self, index: int, size: int) -> None:
        self.chunks.append(index)
        self.bytes += size


class Sent:
    def __init__(self) -> None:
        self.bytes = 0
        self.done: list[bool] = []
        self.ended = trio.Event()

    def on_sent(self, size: int) -> None:
        self.bytes += size

    def on_done(self, complete: bool) -> None:
        self.done.append(complete)
        self.ended.set()


def make_file(tmp_path: Path, size: int = SIZE) -> tuple[Path, bytes, FileOffer]:
    data = os.urandom(size)
    path = tmp_path / "original.bin"
    path.write_bytes(data)
    content_hash = hash_file(path, CHUNK)[0]
    offer = new_offer("original.bin", size, "application/octet-stream", content_hash, CHUNK)
    return path, data, offer


ALL = [ChunkRange(0, SIZE // CHUNK + 1)]


@asynccontextmanager
async def bulk_server(
    *, ticket_ttl_seconds: float = 60.0, handshake_timeout: float = 5.0
) -> AsyncIterator[tuple[BulkServer, list[Endpoint]]]:
    server = BulkServer(ticket_ttl_seconds=ticket_ttl_seconds, handshake_timeout=handshake_timeout)
    async with trio.open_nursery() as nursery:
        port = await nursery.start(server.run)
        yield server, [Endpoint("127.0.0.1", port)]
        nursery.cancel_scope.cancel()


@asynccontextmanager
async def file_pair(tmp_path: Path) -> AsyncIterator[tuple[FileSource, FileSink, bytes]]:
    path, data, offer = make_file(tmp_path)
    source = FileSource(path, offer)
    sink = FileSink(tmp_path / "received.part", offer)
    try:
        yield source, sink, data
    finally:
        source.close()
        sink.close()


# -- the direct path ---------------------------------------------------------------------------


async def test_a_file_comes_through_the_direct_path_byte_identical(tmp_path: Path) -> None:
    async with file_pair(tmp_path) as (source, sink, data), bulk_server() as (server, endpoints):
        sent = Sent()
        token = server.issue(source, "fetcher", sent.on_sent, sent.on_done)
        progress = Progress()
        with trio.fail_after(TIMEOUT):
            await fetch_direct(endpoints, token, sink, ALL, on_chunk=progress)
            await sent.ended.wait()
    assert sink.path.read_bytes() == data
    assert progress.chunks == list(range(source.offer.chunk_count)) == source.reads
    assert progress.bytes == sent.bytes == SIZE
    assert sent.done == [True]


async def test_resume_fetches_only_the_missing_ranges(tmp_path: Path) -> None:
    async with file_pair(tmp_path) as (source, sink, data), bulk_server() as (server, endpoints):
        count = source.offer.chunk_count
        had = set(range(0, 10)) | set(range(20, 30)) | {count - 1}
        with sink.path.open("r+b") as partial:  # what an earlier, interrupted fetch wrote
            for index in had:
                partial.seek(chunk_offset(sink.offer, index))
                partial.write(data[index * CHUNK : (index + 1) * CHUNK])
        sink.had = set(had)
        missing = [ChunkRange(10, 20), ChunkRange(30, count - 1)]
        token = server.issue(source, "fetcher", lambda _: None)
        progress = Progress()
        with trio.fail_after(TIMEOUT):
            await fetch_direct(endpoints, token, sink, missing, on_chunk=progress)
    expected = [*range(10, 20), *range(30, count - 1)]
    assert source.reads == progress.chunks == sink.written == expected
    assert sink.path.read_bytes() == data


async def test_a_chunk_the_sink_already_has_is_not_written_again(tmp_path: Path) -> None:
    async with file_pair(tmp_path) as (source, sink, _data), bulk_server() as (server, endpoints):
        sink.had = {1, 2}
        token = server.issue(source, "fetcher", lambda _: None)
        progress = Progress()
        with trio.fail_after(TIMEOUT):
            await fetch_direct(endpoints, token, sink, [ChunkRange(0, 4)], on_chunk=progress)
    assert source.reads == [0, 1, 2, 3]
    assert sink.written == progress.chunks == [0, 3]


class TamperingSource(FileSource):
    def read_sealed(self, index: int) -> bytes:
        sealed = bytearray(super().read_sealed(index))
        if index == 5:
            sealed[100] ^= 1
        return bytes(sealed)


async def test_a_tampered_chunk_raises_chunk_error(tmp_path: Path) -> None:
    path, data, offer = make_file(tmp_path)
    source = TamperingSource(path, offer)
    sink = FileSink(tmp_path / "received.part", offer)
    async with bulk_server() as (server, endpoints):
        token = server.issue(source, "fetcher", lambda _: None)
        progress = Progress()
        with trio.fail_after(TIMEOUT), pytest.raises(ChunkError, match="chunk 5"):
            await fetch_direct(endpoints, token, sink, ALL, on_chunk=progress)
    assert progress.chunks == sink.written == [0, 1, 2, 3, 4]
    assert sink.path.read_bytes()[: 5 * CHUNK] == data[: 5 * CHUNK]


class FullDisk(FileSink):
    def write_chunk(self, index: int, plaintext: bytes) -> None:
        if index == 6:
            raise OSError(errno.ENOSPC, "No space left on device")
        super().write_chunk(index, plaintext)


async def test_a_full_disk_stops_the_fetch_and_keeps_what_was_written(tmp_path: Path) -> None:
    path, data, offer = make_file(tmp_path)
    source = FileSource(path, offer)
    sink = FullDisk(tmp_path / "received.part", offer)
    async with bulk_server() as (server, endpoints):
        sent = Sent()
        token = server.issue(source, "fetcher", sent.on_sent, sent.on_done)
        progress = Progress()
        with trio.fail_after(TIMEOUT):
            with pytest.raises(OSError) as raised:
                await fetch_direct(endpoints, token, sink, ALL, on_chunk=progress)
            await sent.ended.wait()
    assert raised.value.errno == errno.ENOSPC
    assert progress.chunks == sink.written == [0, 1, 2, 3, 4, 5]
    assert sink.path.read_bytes() == data[: 6 * CHUNK]
    # The server may have sent everything into the socket buffers before the fetcher stopped.
    assert len(sent.done) == 1


async def test_no_endpoint_that_answers_is_a_connect_error(tmp_path: Path) -> None:
    closed = trio.socket.socket()
    await closed.bind(("127.0.0.1", 0))
    port = closed.getsockname()[1]
    closed.close()
    async with file_pair(tmp_path) as (_source, sink, _data):
        with trio.fail_after(TIMEOUT), pytest.raises(BulkConnectError):
            await fetch_direct(
                [Endpoint("127.0.0.1", port)],
                secrets.token_bytes(32),
                sink,
                ALL,
                on_chunk=Progress(),
            )
        with trio.fail_after(TIMEOUT), pytest.raises(BulkConnectError):
            await fetch_direct([], secrets.token_bytes(32), sink, ALL, on_chunk=Progress())


async def test_the_second_endpoint_is_used_when_the_first_is_dead(tmp_path: Path) -> None:
    async with file_pair(tmp_path) as (source, sink, data), bulk_server() as (server, endpoints):
        token = server.issue(source, "fetcher", lambda _: None)
        dead = trio.socket.socket()
        await dead.bind(("127.0.0.1", 0))
        dead_port = dead.getsockname()[1]
        dead.close()
        with trio.fail_after(TIMEOUT):
            await fetch_direct(
                [Endpoint("127.0.0.1", dead_port), *endpoints],
                token,
                sink,
                ALL,
                on_chunk=Progress(),
            )
    assert sink.path.read_bytes() == data


# -- tokens ------------------------------------------------------------------------------------


async def closed_by_server(stream: trio.SocketStream) -> None:
    """The server closed without sending a byte (a reset if our bytes were left unread)."""
    with suppress(trio.BrokenResourceError):
        assert await stream.receive_some(1) == b""


async def test_a_wrong_token_is_closed_without_work(tmp_path: Path) -> None:
    async with file_pair(tmp_path) as (source, sink, _data), bulk_server() as (server, endpoints):
        server.issue(source, "fetcher", lambda _: None)
        with trio.fail_after(TIMEOUT), pytest.raises(TransferBroken):
            await fetch_direct(endpoints, secrets.token_bytes(32), sink, ALL, on_chunk=Progress())
    assert source.reads == [] and sink.written == []


async def test_a_token_works_once(tmp_path: Path) -> None:
    async with file_pair(tmp_path) as (source, sink, data), bulk_server() as (server, endpoints):
        token = server.issue(source, "fetcher", lambda _: None)
        with trio.fail_after(TIMEOUT):
            await fetch_direct(endpoints, token, sink, ALL, on_chunk=Progress())
        reads = len(source.reads)
        with trio.fail_after(TIMEOUT), pytest.raises(TransferBroken):
            await fetch_direct(endpoints, token, sink, ALL, on_chunk=Progress())
    assert sink.path.read_bytes() == data
    assert len(source.reads) == reads


async def test_a_token_is_used_up_by_a_connection_that_then_fails(tmp_path: Path) -> None:
    async with file_pair(tmp_path) as (source, sink, _data), bulk_server() as (server, endpoints):
        sent = Sent()
        token = server.issue(source, "fetcher", sent.on_sent, sent.on_done)
        with trio.fail_after(TIMEOUT):
            stream = await trio.open_tcp_stream("127.0.0.1", endpoints[0].port)
            await stream.send_all(BULK_MAGIC + token)  # then gives up before the request
            await stream.aclose()
            await sent.ended.wait()
        with trio.fail_after(TIMEOUT), pytest.raises(TransferBroken):
            await fetch_direct(endpoints, token, sink, ALL, on_chunk=Progress())
    assert sent.done == [False] and source.reads == []


async def test_an_expired_token_is_refused(tmp_path: Path) -> None:
    async with (
        file_pair(tmp_path) as (source, sink, _data),
        bulk_server(ticket_ttl_seconds=0) as (server, endpoints),
    ):
        token = server.issue(source, "fetcher", lambda _: None)
        with trio.fail_after(TIMEOUT), pytest.raises(TransferBroken):
            await fetch_direct(endpoints, token, sink, ALL, on_chunk=Progress())
    assert source.reads == []


async def test_a_connection_without_a_token_is_closed_after_the_handshake_timeout() -> None:
    async with bulk_server(handshake_timeout=0.2) as (_server, endpoints):
        stream = await trio.open_tcp_stream("127.0.0.1", endpoints[0].port)
        with trio.fail_after(TIMEOUT):
            await stream.send_all(BULK_MAGIC[:3])
            await closed_by_server(stream)
        await stream.aclose()


async def test_a_bad_magic_is_closed_and_leaves_the_token_unused(tmp_path: Path) -> None:
    async with file_pair(tmp_path) as (source, sink, data), bulk_server() as (server, endpoints):
        token = server.issue(source, "fetcher", lambda _: None)
        stream = await trio.open_tcp_stream("127.0.0.1", endpoints[0].port)
        with trio.fail_after(TIMEOUT):
            await stream.send_all(b"GET / HTTP/1.1\r\n" + token)
            await closed_by_server(stream)
            await fetch_direct(endpoints, token, sink, ALL, on_chunk=Progress())
        await stream.aclose()
    assert sink.path.read_bytes() == data


async def test_a_range_past_the_end_is_refused_on_both_sides(tmp_path: Path) -> None:
    async with file_pair(tmp_path) as (source, sink, _data), bulk_server() as (server, endpoints):
        count = source.offer.chunk_count
        past = [ChunkRange(count - 2, count + 1)]
        with pytest.raises(FileFrameError, match="past"):
            await fetch_direct(endpoints, secrets.token_bytes(32), sink, past, on_chunk=Progress())
        # A fetcher that asks anyway (the serving side cannot trust the fetcher's checks).
        sent = Sent()
        token = server.issue(source, "fetcher", sent.on_sent, sent.on_done)
        stream = await trio.open_tcp_stream("127.0.0.1", endpoints[0].port)
        with trio.fail_after(TIMEOUT):
            await stream.send_all(bulk_request(token, past))
            await closed_by_server(stream)
            await sent.ended.wait()
        await stream.aclose()
    assert source.reads == [] and sent.done == [False]


async def test_chunks_the_source_does_not_have_are_not_served(tmp_path: Path) -> None:
    path, _data, offer = make_file(tmp_path)
    source = FileSource(path, offer, have=bytes([0b0000_0101]))  # chunks 0 and 2 only
    sink = FileSink(tmp_path / "received.part", offer)
    async with bulk_server() as (server, endpoints):
        token = server.issue(source, "fetcher", lambda _: None)
        with trio.fail_after(TIMEOUT), pytest.raises(TransferBroken):
            await fetch_direct(endpoints, token, sink, [ChunkRange(0, 3)], on_chunk=Progress())
        token = server.issue(source, "fetcher", lambda _: None)
        with trio.fail_after(TIMEOUT):
            await fetch_direct(
                endpoints, token, sink, [ChunkRange(0, 1), ChunkRange(2, 3)], on_chunk=Progress()
            )
    assert source.reads == [0, 2] and sink.written == [0, 2]


# -- cancelling --------------------------------------------------------------------------------


class GatedSource(FileSource):
    """Chunks from `gate_at` on wait until the test opens the gate (a slow disk)."""

    def __init__(self, path: Path, offer: FileOffer, gate_at: int) -> None:
        super().__init__(path, offer)
        self.gate_at = gate_at
        self.gate = threading.Event()

    def read_sealed(self, index: int) -> bytes:
        if index >= self.gate_at:
            self.gate.wait(TIMEOUT)
        return super().read_sealed(index)


async def test_close_file_stops_a_transfer_at_once(tmp_path: Path) -> None:
    path, _data, offer = make_file(tmp_path)
    source = GatedSource(path, offer, gate_at=8)
    sink = FileSink(tmp_path / "received.part", offer)
    async with bulk_server() as (server, endpoints):
        sent = Sent()
        token = server.issue(source, "fetcher", sent.on_sent, sent.on_done)
        progress = Progress()

        def on_chunk(index: int, size: int) -> None:
            progress(index, size)
            if index == 7:  # the server is stuck reading chunk 8
                server.close_file(offer.file_id)

        try:
            with trio.fail_after(TIMEOUT), pytest.raises(TransferBroken, match="ended"):
                await fetch_direct(endpoints, token, sink, ALL, on_chunk=on_chunk)
            with trio.fail_after(TIMEOUT):
                await sent.ended.wait()
        finally:
            source.gate.set()
    assert progress.chunks == list(range(8))
    assert sent.done == [False]


async def test_close_file_drops_the_unused_tokens_of_that_file(tmp_path: Path) -> None:
    async with file_pair(tmp_path) as (source, sink, _data), bulk_server() as (server, endpoints):
        token = server.issue(source, "fetcher", lambda _: None)
        server.close_file(source.offer.file_id)
        with trio.fail_after(TIMEOUT), pytest.raises(TransferBroken):
            await fetch_direct(endpoints, token, sink, ALL, on_chunk=Progress())
    assert source.reads == []


async def test_cancelling_the_fetch_ends_the_send(tmp_path: Path) -> None:
    path, _data, offer = make_file(tmp_path)
    source = GatedSource(path, offer, gate_at=PIPELINE_DEPTH * 2 + 4)
    sink = FileSink(tmp_path / "received.part", offer)
    async with bulk_server() as (server, endpoints):
        sent = Sent()
        token = server.issue(source, "fetcher", sent.on_sent, sent.on_done)
        progress = Progress()
        with trio.CancelScope() as fetching:

            def on_chunk(index: int, size: int) -> None:
                progress(index, size)
                if index == 3:
                    fetching.cancel()

            with trio.fail_after(TIMEOUT):
                await fetch_direct(endpoints, token, sink, ALL, on_chunk=on_chunk)
        assert fetching.cancelled_caught
        source.gate.set()
        with trio.fail_after(TIMEOUT):
            await sent.ended.wait()
    assert progress.chunks == [0, 1, 2, 3]
    assert sent.done == [False]


# -- a hostile bulk server (a fake standing in for a misbehaving peer) --------------------------


Script = Callable[[trio.SocketStream, list[ChunkRange]], Awaitable[None]]


async def read_exactly(stream: trio.SocketStream, size: int) -> bytes:
    data = b""
    while len(data) < size:
        more = await stream.receive_some(size - len(data))
        assert more, "the fetcher closed early"
        data += more
    return data


@asynccontextmanager
async def hostile_server(script: Script) -> AsyncIterator[list[Endpoint]]:
    """Reads the hello and the request like a real server, then lets `script` answer; keeps the
    connection open until the fetcher closes it, so the fetcher's error comes from the bytes."""

    async def handle(stream: trio.SocketStream) -> None:
        async with stream:
            await read_exactly(stream, HELLO_BYTES)
            (length,) = REQUEST_LENGTH.unpack(await read_exactly(stream, REQUEST_LENGTH.size))
            fetch = decode_frame(await read_exactly(stream, length))
            assert isinstance(fetch, Fetch)
            await script(stream, fetch.ranges)
            with suppress(trio.BrokenResourceError, trio.ClosedResourceError):
                while await stream.receive_some():
                    pass

    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(trio.serve_tcp, handle, 0)
        port = listeners[0].socket.getsockname()[1]
        yield [Endpoint("127.0.0.1", port)]
        nursery.cancel_scope.cancel()


def chunk_frame(offer: FileOffer, data: bytes, index: int, extra: bytes = b"") -> bytes:
    sealed = seal_chunk(
        offer, index, data[index * CHUNK : index * CHUNK + chunk_length(offer, index)]
    )
    return CHUNK_HEADER.pack(index, len(sealed) + len(extra)) + sealed + extra


async def run_against(
    tmp_path: Path,
    frames: Callable[[FileOffer, bytes], bytes],
    ranges: list[ChunkRange],
    *,
    then_close: bool = False,
) -> tuple[Exception | None, Progress]:
    """The fetch's error (None if it succeeded) against a fake that sends `frames`."""
    _path, data, offer = make_file(tmp_path)
    sink = FileSink(tmp_path / "received.part", offer)

    async def script(stream: trio.SocketStream, _asked: list[ChunkRange]) -> None:
        await stream.send_all(frames(offer, data))
        if then_close:
            await stream.aclose()

    progress = Progress()
    error: Exception | None = None
    async with hostile_server(script) as endpoints:
        try:
            with trio.fail_after(TIMEOUT):
                await fetch_direct(
                    endpoints, secrets.token_bytes(32), sink, ranges, on_chunk=progress
                )
        except Exception as raised:
            error = raised
    return error, progress


def assert_broken(error: Exception | None, message: str) -> None:
    assert isinstance(error, TransferBroken), error
    assert message in str(error)


FIRST_FOUR = [ChunkRange(0, 4)]


async def test_a_reordered_chunk_breaks_the_transfer(tmp_path: Path) -> None:
    def frames(offer: FileOffer, data: bytes) -> bytes:
        return b"".join(chunk_frame(offer, data, i) for i in (0, 2, 1, 3)) + END_HEADER

    error, progress = await run_against(tmp_path, frames, FIRST_FOUR)
    assert_broken(error, "chunk 2 arrived where chunk 1 was due")
    assert progress.chunks == [0]  # what arrived right is kept


async def test_a_duplicated_chunk_breaks_the_transfer(tmp_path: Path) -> None:
    def frames(offer: FileOffer, data: bytes) -> bytes:
        return b"".join(chunk_frame(offer, data, i) for i in (0, 0, 1, 2, 3)) + END_HEADER

    error, _progress = await run_against(tmp_path, frames, FIRST_FOUR)
    assert_broken(error, "chunk 0 arrived where chunk 1 was due")


async def test_a_chunk_not_asked_for_breaks_the_transfer(tmp_path: Path) -> None:
    def frames(offer: FileOffer, data: bytes) -> bytes:
        return chunk_frame(offer, data, 9) + END_HEADER

    error, progress = await run_against(tmp_path, frames, [ChunkRange(2, 4)])
    assert_broken(error, "chunk 9 arrived where chunk 2 was due")
    assert progress.chunks == []


async def test_a_missing_chunk_breaks_the_transfer(tmp_path: Path) -> None:
    def frames(offer: FileOffer, data: bytes) -> bytes:
        return b"".join(chunk_frame(offer, data, i) for i in (0, 1, 3)) + END_HEADER

    error, progress = await run_against(tmp_path, frames, FIRST_FOUR)
    assert_broken(error, "chunk 3 arrived where chunk 2 was due")
    assert progress.chunks == [0, 1]


async def test_an_early_end_is_a_truncated_transfer(tmp_path: Path) -> None:
    def frames(offer: FileOffer, data: bytes) -> bytes:
        return chunk_frame(offer, data, 0) + chunk_frame(offer, data, 1) + END_HEADER

    error, progress = await run_against(tmp_path, frames, FIRST_FOUR)
    assert_broken(error, "ended early: chunk 2")
    assert progress.chunks == [0, 1]


async def test_a_connection_cut_mid_chunk_breaks_the_transfer(tmp_path: Path) -> None:
    def frames(offer: FileOffer, data: bytes) -> bytes:
        return chunk_frame(offer, data, 0) + chunk_frame(offer, data, 1)[:5000]

    error, _progress = await run_against(tmp_path, frames, FIRST_FOUR, then_close=True)
    assert_broken(error, "the connection ended 4988 bytes into a 65552-byte read")


async def test_a_chunk_bigger_than_declared_breaks_the_transfer(tmp_path: Path) -> None:
    def frames(offer: FileOffer, data: bytes) -> bytes:
        return chunk_frame(offer, data, 0) + chunk_frame(offer, data, 1, extra=b"\0") + END_HEADER

    error, _progress = await run_against(tmp_path, frames, FIRST_FOUR)
    assert_broken(error, "chunk 1 is 65553 bytes, bigger than declared")


async def test_a_chunk_after_the_last_asked_breaks_the_transfer(tmp_path: Path) -> None:
    def frames(offer: FileOffer, data: bytes) -> bytes:
        return b"".join(chunk_frame(offer, data, i) for i in range(5)) + END_HEADER

    error, _progress = await run_against(tmp_path, frames, FIRST_FOUR)
    assert_broken(error, "chunk 4 sent after every chunk asked for")


async def test_a_well_behaved_fake_passes(tmp_path: Path) -> None:
    """The hostile server's framing is right: only the faults above make it fail."""

    def frames(offer: FileOffer, data: bytes) -> bytes:
        return b"".join(chunk_frame(offer, data, i) for i in range(4)) + END_HEADER

    error, progress = await run_against(tmp_path, frames, FIRST_FOUR)
    assert error is None and progress.chunks == [0, 1, 2, 3]


# -- the libp2p stream: open, and the fallback path ---------------------------------------------


@asynccontextmanager
async def two_hosts() -> AsyncIterator[tuple[NetHost, NetHost]]:
    async with (
        NetHost.open(secrets.token_bytes(32), LOOPBACK) as fetcher,
        NetHost.open(secrets.token_bytes(32), LOOPBACK) as holder,
    ):
        fetcher.add_addrs(holder.peer_id, holder.listen_addrs())
        holder.add_addrs(fetcher.peer_id, fetcher.listen_addrs())
        yield fetcher, holder


class Serving:
    """The serving device's side: lookup, bulk server, handler; counts what it sent."""

    def __init__(self, source: FileSource | None, bulk: BulkServer | None) -> None:
        self.source = source
        self.bulk = bulk
        self.sent = 0
        self.asked: list[tuple[bytes, str]] = []
        self.handled = trio.Event()
        self.refusal: Refused | None = None

    async def lookup(self, file_id: bytes, peer_id: str) -> FileSource | Refused:
        self.asked.append((file_id, peer_id))
        if self.refusal is not None:
            return self.refusal
        if self.source is None or file_id != self.source.offer.file_id:
            return Refused(reason="unknown")
        return self.source

    def endpoints(self) -> list[Endpoint]:
        return [Endpoint("127.0.0.1", self.bulk.port)] if self.bulk is not None else []

    def on_sent(self, file_id: bytes, size: int) -> None:
        assert self.source is not None and file_id == self.source.offer.file_id
        self.sent += size

    async def handle(self, stream: Stream) -> None:
        try:
            await serve_file_stream(stream, self.lookup, self.bulk, self.endpoints, self.on_sent)
        finally:
            self.handled.set()


async def test_a_file_comes_through_the_stream_path_byte_identical(tmp_path: Path) -> None:
    async with file_pair(tmp_path) as (source, sink, data), two_hosts() as (fetcher, holder):
        serving = Serving(source, None)
        holder.set_stream_handler(PROTOCOL_ID, serving.handle)
        progress = Progress()
        count = source.offer.chunk_count
        with trio.fail_after(TIMEOUT):
            stream = await fetcher.new_stream(holder.peer_id, [PROTOCOL_ID])
            opened = await open_source(stream, source.offer.file_id, direct=False)
            assert opened == Opened(have=b"", endpoints=[], token=None)
            # Two fetches on one stream: the second is a resume of what the first left.
            await fetch_over_stream(stream, sink, [ChunkRange(0, 10)], on_chunk=progress)
            await fetch_over_stream(stream, sink, [ChunkRange(10, count)], on_chunk=progress)
            await stream.close()
            await serving.handled.wait()
    assert sink.path.read_bytes() == data
    assert progress.chunks == list(range(count))
    assert serving.sent == SIZE
    assert serving.asked == [(source.offer.file_id, fetcher.peer_id)]


@pytest.mark.parametrize("page_digests", [1, 7, 32 * 1024])
async def test_the_manifest_comes_in_pages_and_is_checked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, page_digests: int
) -> None:
    import p2pid.protocols.file_transfer as protocol

    monkeypatch.setattr(protocol, "MANIFEST_PAGE_BYTES", page_digests * 32)
    async with file_pair(tmp_path) as (source, _sink, _data), two_hosts() as (fetcher, holder):
        serving = Serving(source, None)
        holder.set_stream_handler(PROTOCOL_ID, serving.handle)
        with trio.fail_after(TIMEOUT):
            stream = await fetcher.new_stream(holder.peer_id, [PROTOCOL_ID])
            await open_source(stream, source.offer.file_id, direct=False)
            manifest = await fetch_manifest(stream, source.offer)
            await stream.close()
    assert manifest == source.manifest()
    assert len(manifest) == 32 * source.offer.chunk_count


async def test_a_forged_manifest_is_refused(tmp_path: Path) -> None:
    """A holder (say, a group member) that serves digests of other content: the offer's content
    hash refuses them before any chunk is fetched."""
    async with file_pair(tmp_path) as (source, _sink, _data), two_hosts() as (fetcher, holder):
        forged = bytearray(source.manifest())
        forged[40] ^= 1
        source._manifest = bytes(forged)
        serving = Serving(source, None)
        holder.set_stream_handler(PROTOCOL_ID, serving.handle)
        with trio.fail_after(TIMEOUT):
            stream = await fetcher.new_stream(holder.peer_id, [PROTOCOL_ID])
            await open_source(stream, source.offer.file_id, direct=False)
            with pytest.raises(ContentHashError):
                await fetch_manifest(stream, source.offer)
            await stream.close()
    assert source.reads == []


async def test_open_over_libp2p_then_fetch_direct(tmp_path: Path) -> None:
    async with (
        file_pair(tmp_path) as (source, sink, data),
        two_hosts() as (fetcher, holder),
        bulk_server() as (bulk, _endpoints),
    ):
        serving = Serving(source, bulk)
        holder.set_stream_handler(PROTOCOL_ID, serving.handle)
        count = source.offer.chunk_count
        with trio.fail_after(TIMEOUT):
            stream = await fetcher.new_stream(holder.peer_id, [PROTOCOL_ID])
            opened = await open_source(stream, source.offer.file_id)
            assert opened.token is not None
            assert opened.endpoints == [Endpoint("127.0.0.1", bulk.port)]
            first = [ChunkRange(0, 10)]
            await fetch_direct(opened.endpoints, opened.token, sink, first, on_chunk=Progress())
            # The token is spent: Open again on the same stream for a fresh one.
            again = await open_source(stream, source.offer.file_id)
            assert again.token is not None and again.token != opened.token
            rest = [ChunkRange(10, count)]
            await fetch_direct(again.endpoints, again.token, sink, rest, on_chunk=Progress())
            await stream.close()
            await serving.handled.wait()
    assert sink.path.read_bytes() == data
    assert serving.sent == SIZE


async def test_a_refused_source_raises_source_refused(tmp_path: Path) -> None:
    async with file_pair(tmp_path) as (source, _sink, _data), two_hosts() as (fetcher, holder):
        serving = Serving(source, None)
        serving.refusal = Refused(reason="not_allowed", message="not shared with you")
        holder.set_stream_handler(PROTOCOL_ID, serving.handle)
        with trio.fail_after(TIMEOUT):
            stream = await fetcher.new_stream(holder.peer_id, [PROTOCOL_ID])
            with pytest.raises(SourceRefused) as refused:
                await open_source(stream, source.offer.file_id)
            await stream.close()
            unknown = await fetcher.new_stream(holder.peer_id, [PROTOCOL_ID])
            serving.refusal = None
            with pytest.raises(SourceRefused, match="unknown"):
                await open_source(unknown, secrets.token_bytes(16))
            await unknown.close()
    assert (refused.value.reason, refused.value.message) == ("not_allowed", "not shared with you")
    assert source.reads == []


async def test_malformed_frames_from_the_fetcher_reset_the_stream(tmp_path: Path) -> None:
    async with file_pair(tmp_path) as (source, sink, data), two_hosts() as (fetcher, holder):
        serving = Serving(source, None)
        holder.set_stream_handler(PROTOCOL_ID, serving.handle)
        with trio.fail_after(TIMEOUT):
            stream = await fetcher.new_stream(holder.peer_id, [PROTOCOL_ID])
            await stream.write(length_prefixed(b"\x93not msgpack of a frame", 1024))
            await serving.handled.wait()
            with pytest.raises(Exception):  # noqa: B017 - any stream error: it was reset
                await stream.read(1)
            # After a valid open, a frame that is not a fetch.
            serving.handled = trio.Event()
            stream = await fetcher.new_stream(holder.peer_id, [PROTOCOL_ID])
            await open_source(stream, source.offer.file_id, direct=False)
            await stream.write(length_prefixed(encode_frame(Opened()), 1024))
            await serving.handled.wait()
            # The host still serves.
            stream = await fetcher.new_stream(holder.peer_id, [PROTOCOL_ID])
            await open_source(stream, source.offer.file_id, direct=False)
            await fetch_over_stream(stream, sink, ALL, on_chunk=Progress())
            await stream.close()
    assert sink.path.read_bytes() == data


async def hostile_stream_fetch(
    tmp_path: Path, answer: Callable[[FileOffer, bytes, Stream], Awaitable[None]]
) -> None:
    """Fetch chunks 0..3 from a fake serving device (standing in for a misbehaving peer) that
    answers Open with `Opened`, then lets `answer` respond to the Fetch."""
    _path, data, offer = make_file(tmp_path)
    sink = FileSink(tmp_path / "received.part", offer)
    async with two_hosts() as (fetcher, holder):

        async def handle(stream: Stream) -> None:
            decoder = FrameDecoder(MAX_FRAME_BYTES)
            frames: list[bytes] = []
            while len(frames) < 2:  # Open, then Fetch
                frames += decoder.feed(await stream.read(65536))
                if len(frames) == 1:
                    await stream.write(length_prefixed(encode_frame(Opened()), 1024))
            await answer(offer, data, stream)
            await trio.sleep_forever()

        holder.set_stream_handler(PROTOCOL_ID, handle)
        with trio.fail_after(TIMEOUT):
            stream = await fetcher.new_stream(holder.peer_id, [PROTOCOL_ID])
            await open_source(stream, offer.file_id)
            await fetch_over_stream(stream, sink, FIRST_FOUR, on_chunk=Progress())


def stream_chunk(offer: FileOffer, data: bytes, index: int) -> bytes:
    plaintext = data[index * CHUNK : index * CHUNK + chunk_length(offer, index)]
    frame = encode_frame(Chunk(index=index, sealed=seal_chunk(offer, index, plaintext)))
    return length_prefixed(frame, MAX_FRAME_BYTES)


async def test_a_malformed_frame_from_the_server_breaks_the_stream_fetch(tmp_path: Path) -> None:
    async def answer(offer: FileOffer, data: bytes, stream: Stream) -> None:
        await stream.write(stream_chunk(offer, data, 0) + length_prefixed(b"\xc1garbage", 1024))

    with pytest.raises(TransferBroken, match="malformed"):
        await hostile_stream_fetch(tmp_path, answer)


async def test_a_reordered_chunk_frame_breaks_the_stream_fetch(tmp_path: Path) -> None:
    async def answer(offer: FileOffer, data: bytes, stream: Stream) -> None:
        await stream.write(stream_chunk(offer, data, 1))

    with pytest.raises(TransferBroken, match="chunk 1 arrived where chunk 0 was due"):
        await hostile_stream_fetch(tmp_path, answer)


async def test_a_frame_over_the_maximum_breaks_the_stream_fetch(tmp_path: Path) -> None:
    async def answer(offer: FileOffer, data: bytes, stream: Stream) -> None:
        await stream.write(b"\xff\xff\xff\x7f")  # a length prefix of 256 MiB

    with pytest.raises(TransferBroken, match="maximum"):
        await hostile_stream_fetch(tmp_path, answer)


async def test_a_malformed_answer_to_open_is_a_frame_error(tmp_path: Path) -> None:
    async with two_hosts() as (fetcher, holder):

        async def handle(stream: Stream) -> None:
            await stream.read(65536)
            await stream.write(length_prefixed(encode_frame(Fetch(ranges=FIRST_FOUR)), 1024))
            await trio.sleep_forever()

        holder.set_stream_handler(PROTOCOL_ID, handle)
        with trio.fail_after(TIMEOUT):
            stream = await fetcher.new_stream(holder.peer_id, [PROTOCOL_ID])
            with pytest.raises(FileFrameError, match="expected opened or refused, got Fetch"):
                await open_source(stream, secrets.token_bytes(16))


class VanishingSource(FileSource):
    def read_sealed(self, index: int) -> bytes:
        if index == 4:
            raise SourceError("the file was modified after it was offered")
        return super().read_sealed(index)


async def test_a_source_that_changed_refuses_mid_stream(tmp_path: Path) -> None:
    path, _data, offer = make_file(tmp_path)
    source = VanishingSource(path, offer)
    sink = FileSink(tmp_path / "received.part", offer)
    async with two_hosts() as (fetcher, holder):
        holder.set_stream_handler(PROTOCOL_ID, Serving(source, None).handle)
        progress = Progress()
        with trio.fail_after(TIMEOUT):
            stream = await fetcher.new_stream(holder.peer_id, [PROTOCOL_ID])
            await open_source(stream, offer.file_id, direct=False)
            with pytest.raises(SourceRefused, match="changed: the file was modified") as refused:
                await fetch_over_stream(stream, sink, ALL, on_chunk=progress)
    assert refused.value.reason == "changed"
    assert progress.chunks == [0, 1, 2, 3]


async def test_close_file_stops_a_stream_fetch(tmp_path: Path) -> None:
    path, _data, offer = make_file(tmp_path)
    source = GatedSource(path, offer, gate_at=8)
    sink = FileSink(tmp_path / "received.part", offer)
    async with two_hosts() as (fetcher, holder), bulk_server() as (bulk, _endpoints):
        serving = Serving(source, bulk)
        holder.set_stream_handler(PROTOCOL_ID, serving.handle)
        progress = Progress()

        def on_chunk(index: int, size: int) -> None:
            progress(index, size)
            if index == 7:
                bulk.close_file(offer.file_id)

        try:
            with trio.fail_after(TIMEOUT):
                stream = await fetcher.new_stream(holder.peer_id, [PROTOCOL_ID])
                await open_source(stream, offer.file_id, direct=False)
                with pytest.raises(TransferBroken):
                    await fetch_over_stream(stream, sink, ALL, on_chunk=on_chunk)
                await serving.handled.wait()
        finally:
            source.gate.set()
    assert progress.chunks == list(range(8))


async def test_cancelling_a_stream_fetch_stops_the_serving_side(tmp_path: Path) -> None:
    async with file_pair(tmp_path) as (source, sink, _data), two_hosts() as (fetcher, holder):
        serving = Serving(source, None)
        holder.set_stream_handler(PROTOCOL_ID, serving.handle)
        progress = Progress()
        with trio.fail_after(TIMEOUT):
            stream = await fetcher.new_stream(holder.peer_id, [PROTOCOL_ID])
            await open_source(stream, source.offer.file_id, direct=False)
            with trio.CancelScope() as fetching:

                def on_chunk(index: int, size: int) -> None:
                    progress(index, size)
                    if index == 3:
                        fetching.cancel()

                await fetch_over_stream(stream, sink, ALL, on_chunk=on_chunk)
            assert fetching.cancelled_caught
            await serving.handled.wait()
    assert progress.chunks == [0, 1, 2, 3]
    assert len(source.reads) < source.offer.chunk_count
