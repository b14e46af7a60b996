"""Fetching incoming files (issue 8): one task per accepted transfer that asks the sender's
device, then (for a group) other members' devices, for the chunks it lacks over `/p2pid/file/1`;
takes them over the direct TCP path or, failing that, the libp2p stream; checkpoints the chunks
that are durable; and hands the verified file to the service to record as complete.

A transfer that cannot reach any source waits and is retried every RETRY_SECONDS and whenever a
device that may serve it connects. A full disk stops it until the user accepts it again.
"""

from __future__ import annotations

import errno
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Final, Protocol

import trio

from p2pid.crypto.file_chunks import ContentHashError, FileIntegrityError, IncompleteFileError
from p2pid.events import now_ms
from p2pid.files.meter import Meter
from p2pid.files.storage import PartFile, find_placed
from p2pid.files.transport import BulkConnectError, TransferBroken, fetch_direct
from p2pid.net import NetError
from p2pid.net.host import NetHost, StreamError, close_quietly
from p2pid.protocols.file_transfer import (
    SourceRefused,
    fetch_manifest,
    fetch_over_stream,
    open_source,
)
from p2pid.store import files as file_queries
from p2pid.store.files import TransferRow
from p2pid.store.trio_store import TrioStore
from p2pid.wire.file_transfer import (
    MAX_RANGES,
    PROTOCOL_ID,
    ChunkRange,
    FileFrameError,
    bitmap_has,
)
from p2pid.wire.files import FileOffer, decode_offer
from p2pid.wire.framing import FrameError

if TYPE_CHECKING:
    from trio_typing import TaskStatus

    from p2pid.groups.service import Groups

log = logging.getLogger(__name__)

CHECKPOINT_SECONDS: Final = 1.0
RETRY_SECONDS: Final = 30.0
QUICK_RETRIES: Final = 4
SOURCES_PER_ATTEMPT: Final = 8
OPEN_TIMEOUT_SECONDS: Final = 10.0
ACTIVE_STATES: Final = ("downloading", "waiting")
SOURCE_ERRORS: Final = (
    NetError,
    SourceRefused,
    TransferBroken,
    BulkConnectError,
    FileFrameError,
    FrameError,
    StreamError,
    trio.TooSlowError,
)
DISK_ERRNOS: Final = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS, errno.EIO})


class DownloadHooks(Protocol):
    """What the file service does for a download: record states, and the complete file."""

    async def set_state(self, file_id: bytes, state: str, *, error: str) -> None: ...

    async def complete(self, row: TransferRow, offer: FileOffer, final: str) -> None: ...

    def progress(self, file_id: bytes, meter: Meter) -> None: ...


@dataclass
class _Task:
    """A running download: cancel `scope` to stop it; `ended` is set once it has stopped."""

    scope: trio.CancelScope = field(default_factory=trio.CancelScope)
    ended: trio.Event = field(default_factory=trio.Event)


class Downloads:
    def __init__(
        self, *, store: TrioStore, net: NetHost, groups: Groups, hooks: DownloadHooks
    ) -> None:
        self._store = store
        self._net = net
        self._groups = groups
        self._hooks = hooks
        self._nursery: trio.Nursery | None = None
        self._tasks: dict[bytes, _Task] = {}
        self._attempts: dict[bytes, int] = {}  # quick retries made since the last progress
        self._read_back: set[bytes] = set()  # transfers whose durable chunks were re-checked
        self.meters: dict[bytes, Meter] = {}  # of the downloads running

    async def run(self, *, task_status: TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Resume what a stop or a crash interrupted, then retry waiting transfers forever."""
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            rows = await self._store.read(
                lambda conn: file_queries.transfers_in_state(conn, "in", ("downloading",))
            )
            for row in rows:
                self.start(row.file_id)
            nursery.start_soon(self.retry_waiting)
            task_status.started()

    def running(self, file_id: bytes) -> bool:
        return file_id in self._tasks

    async def stop(self, file_id: bytes) -> None:
        """Cancel the download and wait until it has stopped."""
        task = self._tasks.get(file_id)
        if task is not None:
            task.scope.cancel()
            await task.ended.wait()

    def start(self, file_id: bytes) -> None:
        """Fetch the file unless that is under way already."""
        if self._nursery is None or file_id in self._tasks:
            return
        task = _Task()
        self._tasks[file_id] = task
        self._nursery.start_soon(self._download, file_id, task)

    async def _download(self, file_id: bytes, task: _Task) -> None:
        try:
            with task.scope:
                await self._fetch_file(file_id)
        except Exception:
            log.exception("transfer %s failed", file_id.hex())
            await self._hooks.set_state(file_id, "waiting", error="an internal error; retrying")
        finally:
            if self._tasks.get(file_id) is task:
                del self._tasks[file_id]
            task.ended.set()
        await self._retry_soon_if_waiting(file_id)

    async def _retry_soon_if_waiting(self, file_id: bytes) -> None:
        """A source that just went away (a restart, a dropped link) is often back within
        seconds: retry after 2, 4, 8, 16 s before leaving it to the RETRY_SECONDS loop."""
        row = await self._store.read(lambda conn: file_queries.get_transfer(conn, file_id))
        if row is None or row.state != "waiting":
            self._attempts.pop(file_id, None)
            return
        attempts = self._attempts[file_id] = self._attempts.get(file_id, 0) + 1
        if attempts <= QUICK_RETRIES and self._nursery is not None:
            self._nursery.start_soon(self._start_later, file_id, 2.0**attempts)

    async def _start_later(self, file_id: bytes, delay: float) -> None:
        await trio.sleep(delay)
        self.start(file_id)

    async def _fetch_file(self, file_id: bytes) -> None:
        row = await self._store.read(lambda conn: file_queries.get_transfer(conn, file_id))
        if row is None or row.direction != "in" or row.state not in ACTIVE_STATES:
            return
        offer = decode_offer(row.offer)
        if any(row.bitmap) and not await trio.to_thread.run_sync(os.path.exists, row.part_path):
            # Killed between moving the file into place and recording it, or the partial file
            # was deleted: find the moved file, else start over.
            moved = await trio.to_thread.run_sync(find_placed, row.folder, offer)
            if moved is not None:
                await self._hooks.complete(row, offer, moved)
                return
            row = await self._store.write(
                lambda conn: file_queries.update_transfer(
                    conn, file_id, now_ms(), bitmap=b"", bytes_done=0
                )
            )
        manifest = row.manifest
        if not manifest:
            fetched = await self._fetch_manifest(row, offer)
            if isinstance(fetched, tuple):
                state, reason = fetched
                await self._hooks.set_state(file_id, state, error=reason)
                return
            manifest = fetched
            await self._store.write(
                lambda conn: file_queries.update_transfer(
                    conn, file_id, now_ms(), manifest=manifest
                )
            )
        try:
            part = await trio.to_thread.run_sync(
                PartFile, offer, row.part_path, manifest, row.bitmap
            )
        except OSError as error:
            await self._hooks.set_state(file_id, "failed", error=disk_message(error))
            return
        try:
            # What an earlier run left on disk is read back once per run; what this run wrote
            # was checked before it was written, so a retry does not read the file again.
            if file_id not in self._read_back:
                dropped = await trio.to_thread.run_sync(part.check_durable)
                self._read_back.add(file_id)
                if dropped:
                    log.warning("%d chunks of %s did not read back", dropped, part.path)
            meter = self.meters.setdefault(file_id, Meter(offer.size))
            meter.done = part.written_bytes
            if row.state != "downloading":
                await self._hooks.set_state(file_id, "downloading", error="")
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._checkpoints, file_id, part)
                outcome = await self._fetch_from_sources(row, offer, part, meter)
                nursery.cancel_scope.cancel()
            if outcome is not None:
                state, reason = outcome
                await self._hooks.set_state(file_id, state, error=reason)
                return
            await self._finish(row, offer, part)
        finally:
            part.close()
            self.meters.pop(file_id, None)

    async def _fetch_manifest(self, row: TransferRow, offer: FileOffer) -> bytes | tuple[str, str]:
        """The file's chunk digests, from the first source that gives ones matching the offer's
        content hash; else (the state, the error) to record."""
        errors: list[str] = []
        for peer_id in await self._sources(row):
            try:
                with trio.fail_after(OPEN_TIMEOUT_SECONDS):
                    stream = await self._net.new_stream(peer_id, [PROTOCOL_ID])
                try:
                    with trio.fail_after(OPEN_TIMEOUT_SECONDS):
                        await open_source(stream, row.file_id, direct=False)
                    return await fetch_manifest(stream, offer)  # a timeout per part
                finally:
                    await close_quietly(stream)
            except ContentHashError:
                if peer_id == row.sender_peer_id:
                    return "failed", "the sender's file does not match its own offer (its hash)"
                errors.append(f"{_device(peer_id, row)} sent digests that do not verify")
            except SOURCE_ERRORS as error:
                log.info("the manifest of %s from %s: %r", offer.name, peer_id, error)
                errors.append(f"{_device(peer_id, row)} {_why(error)}")
        reason = "; ".join(errors[-3:]) or "no device that holds the file is reachable"
        return "waiting", f"{reason}; retrying"

    async def _fetch_from_sources(
        self, row: TransferRow, offer: FileOffer, part: PartFile, meter: Meter
    ) -> tuple[str, str] | None:
        """None once every chunk is durable; else (the state, the error) to record."""
        errors: list[str] = []
        for peer_id in await self._sources(row):
            if part.complete:
                break
            try:
                await self._fetch_from(peer_id, row.file_id, part, meter)
            except OSError as error:
                if error.errno in DISK_ERRNOS or not isinstance(error, ConnectionError):
                    await self._checkpoint(row.file_id, part)
                    return "failed", disk_message(error)
                errors.append(f"{_device(peer_id, row)}: {error}")
            except FileIntegrityError as error:  # a holder that serves bad data: not from them
                log.warning("refusing data from %s: %s", peer_id, error)
                errors.append(f"{_device(peer_id, row)} sent data that does not verify")
            except SOURCE_ERRORS as error:
                log.info("fetching %s from %s: %r", offer.name, peer_id, error)
                errors.append(f"{_device(peer_id, row)} {_why(error)}")
            finally:
                await self._checkpoint(row.file_id, part)
        if part.complete:
            return None
        reason = "; ".join(errors[-3:]) or "no device that holds the file is reachable"
        return "waiting", f"{reason}; retrying"

    async def _sources(self, row: TransferRow) -> list[str]:
        """The sender's device first; for a group, then the members' devices, online first."""
        sources = [row.sender_peer_id]
        if row.group_id is not None:
            group_id = row.group_id
            devices = await self._store.read(
                lambda conn: self._groups.member_device_ids(conn, group_id)
            )
            others = [d for d in devices if d != self._net.peer_id and d not in sources]
            others.sort(key=lambda d: not self._net.is_connected(d))
            sources += others
        return sources[:SOURCES_PER_ATTEMPT]

    async def _fetch_from(self, peer_id: str, file_id: bytes, part: PartFile, meter: Meter) -> None:
        def on_chunk(_index: int, count: int) -> None:
            meter.add(count)
            if meter.due():
                self._hooks.progress(file_id, meter)

        with trio.fail_after(OPEN_TIMEOUT_SECONDS):
            stream = await self._net.new_stream(peer_id, [PROTOCOL_ID])
        try:
            with trio.fail_after(OPEN_TIMEOUT_SECONDS):
                opened = await open_source(stream, file_id)
            ranges = ranges_to_fetch(part.missing(), opened.have)
            direct = opened.token is not None and bool(opened.endpoints)
            while ranges:
                if direct:
                    assert opened.token is not None
                    before = meter.done
                    try:
                        await fetch_direct(
                            opened.endpoints, opened.token, part, ranges, on_chunk=on_chunk
                        )
                    except (BulkConnectError, TransferBroken) as error:
                        if meter.done > before:
                            raise  # the direct path works; the transfer broke: try again later
                        # Unreachable, or reachable but closed at once (a middlebox, another
                        # host at that address, a listener out of slots): over libp2p instead.
                        log.info("no direct path to %s (%s): over libp2p", peer_id, error)
                        direct = False
                        ranges = ranges_to_fetch(part.missing(), opened.have)
                        continue
                else:
                    await fetch_over_stream(stream, part, ranges, on_chunk=on_chunk)
                if len(ranges) < MAX_RANGES:
                    break
                with trio.fail_after(OPEN_TIMEOUT_SECONDS):  # a fresh token for the rest
                    opened = await open_source(stream, file_id)
                ranges = ranges_to_fetch(part.missing(), opened.have)
        finally:
            await close_quietly(stream)

    async def _checkpoints(self, file_id: bytes, part: PartFile) -> None:
        while True:
            await trio.sleep(CHECKPOINT_SECONDS)
            await self._checkpoint(file_id, part)

    async def _checkpoint(self, file_id: bytes, part: PartFile) -> None:
        """Record the chunks that are durable on disk now (after an fdatasync)."""
        with trio.CancelScope(shield=True):
            try:
                bitmap, done = await trio.to_thread.run_sync(part.checkpoint)
            except OSError as error:
                log.warning("cannot make %s durable: %s", part.path, error)
                return
            now = now_ms()
            await self._store.write(
                lambda conn: file_queries.update_transfer(
                    conn, file_id, now, bitmap=bitmap, bytes_done=done
                )
            )

    async def _finish(self, row: TransferRow, offer: FileOffer, part: PartFile) -> None:
        try:
            final = await trio.to_thread.run_sync(part.finish, row.folder, offer.name)
        except (ContentHashError, IncompleteFileError) as error:
            discard(part.path)
            now = now_ms()
            await self._store.write(
                lambda conn: file_queries.update_transfer(
                    conn, row.file_id, now, bitmap=b"", bytes_done=0, part_path=""
                )
            )
            await self._hooks.set_state(
                row.file_id, "failed", error=f"{error}: the data was discarded"
            )
            return
        except OSError as error:
            await self._hooks.set_state(row.file_id, "failed", error=disk_message(error))
            return
        await self._hooks.complete(row, offer, final)

    async def retry_waiting(self) -> None:
        """Forever: every RETRY_SECONDS, try the waiting transfers again."""
        while True:
            await trio.sleep(RETRY_SECONDS)
            await self.retry_for(None)

    async def retry_for(self, peer_id: str | None) -> None:
        """Try again the waiting transfers `peer_id` may serve (all of them for None)."""
        rows = await self._store.read(
            lambda conn: file_queries.transfers_in_state(conn, "in", ("waiting",))
        )
        for row in rows:
            if peer_id is None or row.sender_peer_id == peer_id or row.group_id is not None:
                self.start(row.file_id)


def ranges_to_fetch(missing: Sequence[range], have: bytes) -> list[ChunkRange]:
    """The missing chunks the holder has, as at most MAX_RANGES ranges."""
    ranges: list[ChunkRange] = []
    for gap in missing:
        if not have:
            ranges.append(ChunkRange(gap.start, gap.stop))
        else:
            start: int | None = None
            for index in gap:
                if bitmap_has(have, index):
                    start = index if start is None else start
                elif start is not None:
                    ranges.append(ChunkRange(start, index))
                    start = None
            if start is not None:
                ranges.append(ChunkRange(start, gap.stop))
        if len(ranges) >= MAX_RANGES:
            return ranges[:MAX_RANGES]
    return ranges


def _device(peer_id: str, row: TransferRow) -> str:
    who = "the sender's device" if peer_id == row.sender_peer_id else "a member's device"
    return f"{who} ({peer_id[:16]}…)"


def _why(error: Exception) -> str:
    if isinstance(error, SourceRefused):
        return f"refused: {error}"
    if isinstance(error, TransferBroken):
        return f"went away part way ({error})"
    if isinstance(error, trio.TooSlowError | FrameError | StreamError):
        return "did not answer"
    return f"is unreachable ({error})"


def disk_message(error: OSError) -> str:
    if error.errno in (errno.ENOSPC, errno.EDQUOT):
        return "the disk is full: free some space, then `file accept` resumes it"
    return f"cannot write the file: {error.strerror or error}; `file accept` resumes it"


def discard(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    except OSError as error:
        log.warning("cannot remove %s: %s", path, error)
