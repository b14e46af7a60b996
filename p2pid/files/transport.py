"""The direct TCP bulk path of `/p2pid/file/1` (issue 8): a listener that serves sealed chunks to
token holders, and the fetcher that reads them into a sink. trio and sockets only; the byte
layout is in p2pid.wire.file_transfer.

Why a bare bearer token is enough: every chunk is sealed end to end under the file key, which
travels only inside the encrypted offer, and is bound to its index and its file. The connection
adds no secrecy or integrity and needs none: a forged, reordered, cut or padded stream fails the
fetcher's checks or the AEAD. The token is handed out over the authenticated libp2p stream and
only limits who can make the serving device do work (read, seal, upload): 32 random bytes, one
connection, a short life, one file, only the chunks that device can serve.

Pipelines (docs/design/files.md): on the direct connection the data phase runs in plain threads
on the blocking socket: the server reads, seals and sends in one; the fetcher reads, checks and
opens in one and writes in another, with a queue of `PIPELINE_DEPTH` chunks between them. The
stream path (p2pid.protocols.file_transfer) shares `send_chunks` and `receive_chunks`, whose
stages are trio channels of `PIPELINE_DEPTH` chunks. Either way: back-pressure without holding
the file in memory.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import logging
import math
import queue
import secrets
import socket
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final, Protocol

import trio
import trio.lowlevel

from p2pid.crypto.file_chunks import chunk_length, sealed_length
from p2pid.wire.file_transfer import (
    BULK_MAGIC,
    CHUNK_HEADER,
    END_HEADER,
    END_OF_CHUNKS,
    HELLO_BYTES,
    MAX_CONTROL_FRAME_BYTES,
    MAX_RANGES,
    REQUEST_LENGTH,
    TOKEN_BYTES,
    ChunkRange,
    Endpoint,
    FileFrameError,
    bitmap_has_ranges,
    bulk_request,
    check_ranges,
    decode_fetch,
    range_indexes,
)
from p2pid.wire.files import FileOffer

if TYPE_CHECKING:
    from trio_typing import TaskStatus

logger = logging.getLogger(__name__)

PIPELINE_DEPTH: Final = 4
HANDSHAKE_TIMEOUT: Final = 5.0
IDLE_TIMEOUT: Final = 30.0  # no progress on a connection for this long: it is broken
CONNECT_STAGGER: Final = 0.25  # happy-eyeballs delay between endpoint attempts
MAX_CONNECTIONS: Final = 64
_MSG_MORE: Final = getattr(socket, "MSG_MORE", 0)  # the header rides with its chunk


class SourceError(Exception):
    """The source file changed or vanished since it was offered: it cannot be served."""


class BulkConnectError(Exception):
    """No endpoint accepted a connection: use the stream (fallback) path."""


class TransferBroken(Exception):
    """The connection broke, or the other side broke the protocol; the chunks already written
    stay written."""


class ChunkSource(Protocol):
    """The serving side's view of one file."""

    @property
    def offer(self) -> FileOffer: ...

    def have(self) -> bytes:
        """The chunks this device can serve: a bitmap, b"" for all (wire semantics)."""
        ...

    def read_sealed(self, index: int) -> bytes:
        """Blocking (pread + seal), run in a worker thread; SourceError if the file changed."""
        ...

    def manifest(self) -> bytes:
        """The file's chunk digests (p2pid.crypto.file_chunks), for fetchers that lack them."""
        ...


class ChunkSink(Protocol):
    """The fetching side's view of one partial file."""

    @property
    def offer(self) -> FileOffer: ...

    def open_chunk(self, index: int, sealed: bytes | bytearray | memoryview) -> bytes | None:
        """Blocking (decrypt + verify + hash): the plaintext, None if already had, or
        ChunkError. `sealed` may be a reused buffer: do not keep it."""
        ...

    def write_chunk(self, index: int, plaintext: bytes) -> None:
        """Blocking (pwrite); an OSError stops the fetch with that error."""
        ...


# -- the pipelines, shared with the stream path (p2pid.protocols.file_transfer) ----------------


@dataclass(frozen=True, slots=True)
class SealedChunk:
    index: int
    data: bytes | bytearray


async def send_chunks(
    source: ChunkSource,
    ranges: Sequence[ChunkRange],
    send_one: Callable[[int, bytes], Awaitable[None]],
    on_sent: Callable[[int], None],
) -> None:
    """Read and seal the chunks in order in a worker thread, PIPELINE_DEPTH ahead, and hand each
    to `send_one`; `on_sent(plaintext bytes)` after each. SourceError if the source changed, once
    the chunks read before the change are sent."""
    offer = source.offer
    ready, sealed_chunks = trio.open_memory_channel[tuple[int, bytes]](PIPELINE_DEPTH)

    source_error: SourceError | None = None

    async def read_ahead() -> None:
        nonlocal source_error
        async with ready:
            for index in range_indexes(ranges):
                try:
                    # Abandoned on cancel: close_file must not wait for a slow disk. (The
                    # trio_typing stubs predate the argument's name.)
                    sealed = await trio.to_thread.run_sync(  # type: ignore[call-arg]
                        source.read_sealed, index, abandon_on_cancel=True
                    )
                    if len(sealed) != sealed_length(offer, index):
                        raise SourceError(f"chunk {index} came out {len(sealed)} bytes long")
                except SourceError as error:  # the chunks read before it still go out
                    source_error = error
                    return
                await ready.send((index, sealed))

    with _one_error():
        async with trio.open_nursery() as nursery:
            nursery.start_soon(read_ahead)
            async with sealed_chunks:
                async for index, sealed in sealed_chunks:
                    await send_one(index, sealed)
                    on_sent(chunk_length(offer, index))
    if source_error is not None:
        raise source_error


async def receive_chunks(
    sink: ChunkSink,
    read: Callable[[trio.MemorySendChannel[SealedChunk]], Awaitable[None]],
    on_chunk: Callable[[int, int], None],
) -> None:
    """Run `read` (it sends the checked sealed chunks into the channel, then returns); open each
    in one worker thread and write it in another. `on_chunk(index, plaintext bytes)` after each
    write; a chunk the sink already had is neither written nor reported. When `read` fails, the
    chunks it already passed on are still opened and written, then its error is raised."""
    to_open, opening = trio.open_memory_channel[SealedChunk](PIPELINE_DEPTH)
    to_write, writing = trio.open_memory_channel[tuple[int, bytes]](PIPELINE_DEPTH)

    async def opener() -> None:
        async with opening, to_write:
            async for chunk in opening:
                plaintext = await trio.to_thread.run_sync(sink.open_chunk, chunk.index, chunk.data)
                if plaintext is not None:
                    await to_write.send((chunk.index, plaintext))

    async def writer() -> None:
        async with writing:
            async for index, plaintext in writing:
                await trio.to_thread.run_sync(sink.write_chunk, index, plaintext)
                on_chunk(index, len(plaintext))

    read_error: Exception | None = None
    with _one_error():
        async with trio.open_nursery() as nursery:
            nursery.start_soon(opener)
            nursery.start_soon(writer)
            async with to_open:
                try:
                    await read(to_open)
                except Exception as error:  # the chunks already read are still opened and written
                    read_error = error
    if read_error is not None:
        raise read_error


def check_fetch_ranges(offer: FileOffer, ranges: Sequence[ChunkRange]) -> list[ChunkRange]:
    """The ranges as a list if a fetch may ask for them, else FileFrameError."""
    asked = list(ranges)
    if not 1 <= len(asked) <= MAX_RANGES:
        raise FileFrameError(f"a fetch asks for 1 to {MAX_RANGES} ranges, not {len(asked)}")
    check_ranges(asked, offer.chunk_count)
    return asked


@contextlib.contextmanager
def _one_error() -> Iterator[None]:
    """Raise a nursery's only real error as itself, not wrapped in an exception group."""
    try:
        yield
    except BaseExceptionGroup as group:
        errors = [leaf for leaf in _leaves(group) if not isinstance(leaf, trio.Cancelled)]
        if len(errors) == 1:
            raise errors[0] from None
        raise


def _leaves(error: BaseException) -> list[BaseException]:
    if isinstance(error, BaseExceptionGroup):
        return [leaf for inner in error.exceptions for leaf in _leaves(inner)]
    return [error]


# -- sockets -----------------------------------------------------------------------------------


def _tune(sock: trio.socket.SocketType) -> None:
    """TCP_NODELAY only. Fixed 4 MiB SO_SNDBUF/SO_RCVBUF gained nothing measurable on loopback,
    and a fixed size turns off the kernel's buffer autotuning (up to tcp_rmem's 32 MiB here) and
    is cut to rmem_max (often 208 KiB): a cap on long fat links."""
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


async def _receive_exactly(sock: trio.socket.SocketType, buffer: bytearray) -> None:
    """Fill `buffer`; TransferBroken if the connection ends or fails first."""
    view = memoryview(buffer)
    got = 0
    try:
        while got < len(buffer):
            received = await sock.recv_into(view[got:])
            if not received:
                raise TransferBroken(
                    f"the connection ended {got} bytes into a {len(buffer)}-byte read"
                )
            got += received
    except OSError as error:
        raise TransferBroken(f"the connection failed: {error}") from error


async def _send_all(sock: trio.socket.SocketType, data: bytes | bytearray, flags: int = 0) -> None:
    view = memoryview(data)
    try:
        while view:
            sent = await sock.send(view, flags)
            view = view[sent:]
    except OSError as error:
        raise TransferBroken(f"the connection failed: {error}") from error


async def _socket_for(host: str, port: int) -> tuple[trio.socket.SocketType, tuple[str, int]]:
    family, kind, proto, _name, address = (
        await trio.socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    )[0]
    sock = trio.socket.socket(family, kind, proto)
    _tune(sock)
    return sock, (str(address[0]), int(address[1]))


# -- the serving side --------------------------------------------------------------------------


@dataclass(slots=True)
class _Ticket:
    token: bytes
    source: ChunkSource
    fetcher_peer_id: str
    on_sent: Callable[[int], None]
    on_done: Callable[[bool], None] | None
    expires_at: float


class BulkServer:
    """One TCP listener per daemon. `issue` a token over the libp2p stream; the fetcher presents
    it on a connection here and gets the chunks it asks for."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        *,
        ticket_ttl_seconds: float = 60.0,
        handshake_timeout: float = HANDSHAKE_TIMEOUT,
    ) -> None:
        self.host = host
        self.ticket_ttl_seconds = ticket_ttl_seconds
        self.handshake_timeout = handshake_timeout
        self._port: int | None = None
        self._tickets: dict[bytes, _Ticket] = {}  # by the token's hash: no timing on the token
        self._sends: dict[bytes, set[trio.CancelScope]] = {}
        self._connections = 0

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError("the bulk server is not listening")
        return self._port

    async def run(self, *, task_status: TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
        """Listen on host:0 until cancelled; `task_status.started(port)`."""
        listener, address = await _socket_for(self.host, 0)
        with listener:
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            await listener.bind(address)
            listener.listen(128)
            self._port = int(listener.getsockname()[1])
            try:
                async with trio.open_nursery() as nursery:
                    task_status.started(self._port)
                    while True:
                        sock, _remote = await listener.accept()
                        if self._connections >= MAX_CONNECTIONS:
                            sock.close()
                            continue
                        nursery.start_soon(self._serve_connection, sock)
            finally:
                self._port = None
                self._tickets.clear()

    def issue(
        self,
        source: ChunkSource,
        fetcher_peer_id: str,
        on_sent: Callable[[int], None],
        on_done: Callable[[bool], None] | None = None,
    ) -> bytes:
        """A one-time 32-byte token for one connection fetching from `source`. `on_sent(n)` after
        each chunk sent (n plaintext bytes); `on_done(complete)` when that connection ends."""
        now = trio.current_time()
        self._tickets = {key: t for key, t in self._tickets.items() if t.expires_at > now}
        token = secrets.token_bytes(TOKEN_BYTES)
        self._tickets[_token_key(token)] = _Ticket(
            token, source, fetcher_peer_id, on_sent, on_done, now + self.ticket_ttl_seconds
        )
        return token

    def close_file(self, file_id: bytes) -> None:
        """Stop every send of that file now (bulk, and the stream sends in `sending`) and drop
        its unused tokens."""
        self._tickets = {
            key: t for key, t in self._tickets.items() if t.source.offer.file_id != file_id
        }
        for scope in self._sends.pop(file_id, set()):
            scope.cancel()

    @contextlib.contextmanager
    def sending(self, file_id: bytes) -> Iterator[trio.CancelScope]:
        """A cancel scope that `close_file(file_id)` cancels: wrap a send of that file in it."""
        scope = trio.CancelScope()
        scopes = self._sends.setdefault(file_id, set())
        scopes.add(scope)
        try:
            with scope:
                yield scope
        finally:
            scopes.discard(scope)
            if not scopes and self._sends.get(file_id) is scopes:
                del self._sends[file_id]

    def _take_ticket(self, token: bytes) -> _Ticket | None:
        ticket = self._tickets.pop(_token_key(token), None)
        if ticket is None or not hmac.compare_digest(ticket.token, token):
            return None
        if ticket.expires_at <= trio.current_time():
            return None
        return ticket

    async def _serve_connection(self, sock: trio.socket.SocketType) -> None:
        self._connections += 1
        try:
            with sock:
                await self._serve(sock)
        except TransferBroken as error:
            logger.info("bulk connection ended: %s", error)
        except Exception:
            logger.exception("bulk connection failed")
        finally:
            self._connections -= 1

    async def _serve(self, sock: trio.socket.SocketType) -> None:
        deadline = trio.current_time() + self.handshake_timeout
        ticket: _Ticket | None = None
        with trio.move_on_at(deadline):
            ticket = await self._handshake(sock)
        if ticket is None:
            logger.info("bulk connection without a valid token: closed")
            return
        complete = False
        try:
            with self.sending(ticket.source.offer.file_id):
                request = None
                with trio.move_on_at(deadline):
                    request = await self._read_request(sock, ticket)
                if request is None:
                    return
                raw = socket.socket(fileno=sock.detach())
                with raw:
                    await _send_in_threads(raw, ticket.source, request, ticket.on_sent)
                complete = True
        except SourceError as error:
            logger.warning("file %s cannot be served: %s", ticket.source.offer.file_id.hex(), error)
        finally:
            if ticket.on_done is not None:
                ticket.on_done(complete)

    async def _handshake(self, sock: trio.socket.SocketType) -> _Ticket | None:
        hello = bytearray(HELLO_BYTES)
        await _receive_exactly(sock, hello)
        if hello[: len(BULK_MAGIC)] != BULK_MAGIC:
            return None
        # Consumed here, whatever comes next: one token, one connection.
        return self._take_ticket(bytes(hello[len(BULK_MAGIC) :]))

    async def _read_request(
        self, sock: trio.socket.SocketType, ticket: _Ticket
    ) -> list[ChunkRange] | None:
        length_bytes = bytearray(REQUEST_LENGTH.size)
        await _receive_exactly(sock, length_bytes)
        (length,) = REQUEST_LENGTH.unpack(length_bytes)
        if length > MAX_CONTROL_FRAME_BYTES:
            logger.info("bulk request of %d bytes: closed", length)
            return None
        data = bytearray(length)
        await _receive_exactly(sock, data)
        source = ticket.source
        try:
            ranges = check_fetch_ranges(source.offer, decode_fetch(bytes(data)).ranges)
        except FileFrameError as error:
            logger.info("bulk request refused: %s", error)
            return None
        if not bitmap_has_ranges(source.have(), ranges):
            logger.info("bulk request for chunks this device does not have: closed")
            return None
        return ranges


async def _send_in_threads(
    raw: socket.socket,
    source: ChunkSource,
    ranges: Sequence[ChunkRange],
    on_sent: Callable[[int], None],
) -> None:
    """Read, seal and send the chunks in one thread on the plain blocking socket (no trio
    hand-off per chunk), then the end header. SourceError once the chunks read before a change
    are sent; TransferBroken if the fetcher goes away or stops reading; a cancel (`close_file`)
    shuts the socket."""
    offer = source.offer
    token = trio.lowlevel.current_trio_token()
    raw.settimeout(IDLE_TIMEOUT)

    def pump() -> None:
        try:
            for index in range_indexes(ranges):
                sealed = source.read_sealed(index)
                if len(sealed) != sealed_length(offer, index):
                    raise SourceError(f"chunk {index} came out {len(sealed)} bytes long")
                raw.sendall(CHUNK_HEADER.pack(index, len(sealed)), _MSG_MORE)
                raw.sendall(sealed)
                with contextlib.suppress(trio.RunFinishedError):
                    trio.from_thread.run_sync(on_sent, chunk_length(offer, index), trio_token=token)
            raw.sendall(END_HEADER)
        except TimeoutError:
            raise TransferBroken(f"the fetcher read nothing for {IDLE_TIMEOUT} s") from None
        except OSError as error:
            raise TransferBroken(f"the connection failed: {error}") from error

    async def stop_on_cancel() -> None:
        try:
            await trio.sleep_forever()
        finally:
            with contextlib.suppress(OSError):
                raw.shutdown(socket.SHUT_RDWR)  # wakes a blocked send

    failure: Exception | None = None
    async with trio.open_nursery() as nursery:
        nursery.start_soon(stop_on_cancel)
        try:
            # Abandoned on cancel: `close_file` must not wait for a slow disk. The thread then
            # fails at its next send (the socket is shut) and its result is dropped.
            await trio.to_thread.run_sync(pump, abandon_on_cancel=True)  # type: ignore[call-arg]
        except Exception as error:
            failure = error
        nursery.cancel_scope.cancel()
    if failure is not None:
        raise failure


def _token_key(token: bytes) -> bytes:
    return hashlib.blake2b(token, digest_size=16).digest()


# -- the fetching side -------------------------------------------------------------------------


async def fetch_direct(
    endpoints: Sequence[Endpoint],
    token: bytes,
    sink: ChunkSink,
    ranges: Sequence[ChunkRange],
    *,
    on_chunk: Callable[[int, int], None],
    connect_timeout: float = 3.0,
) -> None:
    """Fetch the chunks in `ranges` over a direct connection to one of `endpoints`, write them
    into `sink`, `on_chunk(index, plaintext bytes)` after each write.

    Raises BulkConnectError (nothing connected: use the stream path), TransferBroken (the
    connection broke, or the server sent anything but the asked chunks in order, each at its
    exact sealed length, then the end), FileFrameError (ranges outside the file), ChunkError
    from the sink (a chunk that does not authenticate), OSError from `write_chunk`.
    """
    offer = sink.offer
    asked = check_fetch_ranges(offer, ranges)
    request = bulk_request(token, asked)
    sock = await _connect(endpoints, connect_timeout)
    with sock:
        await _send_all(sock, request)
        # The data phase runs in two threads on the plain blocking socket: one reads and opens
        # each chunk, one writes them. No trio hand-off per chunk: on loopback that was a
        # fifth of the receiving daemon's CPU.
        raw = socket.socket(fileno=sock.detach())
    with raw:
        raw.settimeout(IDLE_TIMEOUT)
        await _receive_in_threads(raw, sink, asked, on_chunk)


async def _receive_in_threads(
    raw: socket.socket,
    sink: ChunkSink,
    asked: Sequence[ChunkRange],
    on_chunk: Callable[[int, int], None],
) -> None:
    """Read, check and open the asked chunks in one thread, write them in another; the write's
    error first (it stops the reader), then the reader's. A cancel shuts the socket: the reader
    stops, and the chunks it opened are still written."""
    offer = sink.offer
    opened: queue.Queue[tuple[int, bytes] | None] = queue.Queue(PIPELINE_DEPTH)  # None: the end
    token = trio.lowlevel.current_trio_token()

    def shut() -> None:
        with contextlib.suppress(OSError):
            raw.shutdown(socket.SHUT_RDWR)  # wakes a blocked recv

    def read_and_open() -> None:
        header = bytearray(CHUNK_HEADER.size)
        buffer = bytearray(sealed_length(offer, 0))
        try:
            for expected in range_indexes(asked):
                _recv_exactly(raw, header)
                index, length = CHUNK_HEADER.unpack(header)
                check_chunk_frame(offer, expected, index, length)
                sealed = memoryview(buffer)[:length]  # opened before the next read reuses it
                _recv_exactly(raw, sealed)
                plaintext = sink.open_chunk(index, sealed)
                if plaintext is not None:
                    opened.put((index, plaintext))
            _recv_exactly(raw, header)
            if bytes(header) != END_HEADER:
                index, _length = CHUNK_HEADER.unpack(header)
                raise TransferBroken(f"chunk {index} sent after every chunk asked for")
        finally:
            opened.put(None)

    # Reported by a trio task, so that nothing is reported once the fetch is cancelled.
    written, reports = trio.open_memory_channel[tuple[int, int]](math.inf)

    def write() -> None:
        failure: BaseException | None = None
        while (item := opened.get()) is not None:
            if failure is not None:
                continue  # drain, so that the reader never blocks on a full queue
            index, plaintext = item
            try:
                sink.write_chunk(index, plaintext)
            except BaseException as error:
                failure = error
                shut()
                continue
            with contextlib.suppress(trio.BrokenResourceError, trio.RunFinishedError):
                trio.from_thread.run_sync(
                    written.send_nowait, (index, len(plaintext)), trio_token=token
                )
        if failure is not None:
            raise failure

    async def report() -> None:
        async with reports:
            async for index, count in reports:
                on_chunk(index, count)

    errors: dict[str, Exception] = {}

    async def run(name: str, work: Callable[[], None]) -> None:
        try:
            await trio.to_thread.run_sync(work)
        except Exception as error:
            errors[name] = error

    async def stop_on_cancel() -> None:
        try:
            await trio.sleep_forever()
        finally:
            shut()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(stop_on_cancel)
        async with trio.open_nursery() as reporting:
            reporting.start_soon(report)  # until `written` is closed and drained
            async with written, trio.open_nursery() as workers:
                workers.start_soon(run, "write", write)
                workers.start_soon(run, "read", read_and_open)
        nursery.cancel_scope.cancel()
    if "write" in errors:
        raise errors["write"]
    if "read" in errors:
        raise errors["read"]


def _recv_exactly(raw: socket.socket, buffer: bytearray | memoryview) -> None:
    """Blocking: fill `buffer`; TransferBroken if the connection ends, fails or stalls first."""
    view = memoryview(buffer)
    got = 0
    try:
        while got < len(view):
            received = raw.recv_into(view[got:])
            if not received:
                raise TransferBroken(
                    f"the connection ended {got} bytes into a {len(view)}-byte read"
                )
            got += received
    except TimeoutError:
        raise TransferBroken(f"nothing arrived for {IDLE_TIMEOUT} s") from None
    except OSError as error:
        raise TransferBroken(f"the connection failed: {error}") from error


def check_chunk_frame(offer: FileOffer, expected: int, index: int, length: int) -> None:
    """TransferBroken unless the next frame is chunk `expected` at its sealed length."""
    if index == END_OF_CHUNKS:
        raise TransferBroken(f"the transfer ended early: chunk {expected} and after never came")
    if index != expected:
        raise TransferBroken(f"chunk {index} arrived where chunk {expected} was due")
    declared = sealed_length(offer, index)
    if length != declared:
        size = "bigger" if length > declared else "smaller"
        raise TransferBroken(f"chunk {index} is {length} bytes, {size} than declared ({declared})")


async def _connect(endpoints: Sequence[Endpoint], connect_timeout: float) -> trio.socket.SocketType:
    """The first endpoint to accept (attempts staggered by CONNECT_STAGGER), or
    BulkConnectError once `connect_timeout` has passed or every attempt failed."""
    failures: list[str] = []
    connected: list[trio.socket.SocketType] = []

    async def attempt(delay: float, endpoint: Endpoint, nursery: trio.Nursery) -> None:
        await trio.sleep(delay)
        try:
            sock, address = await _socket_for(endpoint.host, endpoint.port)
        except OSError as error:
            failures.append(f"{endpoint.host}:{endpoint.port}: {error}")
            return
        try:
            await sock.connect(address)
        except OSError as error:
            failures.append(f"{endpoint.host}:{endpoint.port}: {error}")
            sock.close()
            return
        except BaseException:
            sock.close()
            raise
        if connected:
            sock.close()
            return
        connected.append(sock)
        nursery.cancel_scope.cancel()

    with trio.move_on_after(connect_timeout):
        async with trio.open_nursery() as nursery:
            for position, endpoint in enumerate(endpoints):
                nursery.start_soon(attempt, position * CONNECT_STAGGER, endpoint, nursery)
    if connected:
        return connected[0]
    reason = "; ".join(failures) if failures else f"no answer within {connect_timeout} s"
    raise BulkConnectError(f"no direct connection: {reason or 'no endpoint'}")
