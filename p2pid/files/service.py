"""File sharing (issue 8): offering files to a contact or a group, accepting them, fetching them
over the fastest path, resuming, cancelling, and serving what this device holds.

The offer (with the file's key) is an ordinary end-to-end encrypted message body (`FileShare`);
the data is fetched by the receiver over `/p2pid/file/1` (p2pid.protocols.file_transfer), which
hands out a direct TCP endpoint (p2pid.files.transport) and falls back to the libp2p stream
itself. Chunks are verified as they arrive, written at their offset into a partial file whose
durable chunks are checkpointed in the store, and the file is moved into place only after the
content hash of the whole file matched (p2pid.files.storage).
"""

from __future__ import annotations

import errno
import logging
import mimetypes
import os
import stat
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import platformdirs
import trio

from p2pid.contacts import Contacts, ContactsError
from p2pid.crypto.file_chunks import (
    ContentHashError,
    FileIntegrityError,
    IncompleteFileError,
    chunk_length,
    hash_file,
    new_offer,
)
from p2pid.crypto.identity import identity_id_from_public_key
from p2pid.events import now_ms
from p2pid.files.effects import FileEffects, FileRefusal
from p2pid.files.errors import FilesError
from p2pid.files.storage import (
    FileSource,
    PartFile,
    SourceChangedError,
    file_mtime_ns,
    find_placed,
    part_path_for,
)
from p2pid.files.transport import (
    BulkConnectError,
    BulkServer,
    ChunkSource,
    TransferBroken,
    fetch_direct,
)
from p2pid.groups.errors import GroupsError
from p2pid.messaging import Messaging
from p2pid.net import NetError
from p2pid.net.host import NetHost, Stream, close_quietly
from p2pid.protocols.file_transfer import (
    SourceRefused,
    fetch_over_stream,
    open_source,
    serve_file_stream,
)
from p2pid.protocols.messaging import DropReason
from p2pid.store import contacts as contact_queries
from p2pid.store import files as file_queries
from p2pid.store import groups as group_queries
from p2pid.store.contacts import ContactDevice, ContactRow
from p2pid.store.db import Connection
from p2pid.store.files import FileSettingsRow, TransferRow
from p2pid.store.trio_store import TrioStore
from p2pid.wire.events import Event
from p2pid.wire.file_transfer import (
    MAX_RANGES,
    PROTOCOL_ID,
    ChunkRange,
    Endpoint,
    Refused,
    bitmap_has,
)
from p2pid.wire.file_views import (
    FileOffered,
    FileProgress,
    FileSettings,
    FileStateChanged,
    FileTransferView,
)
from p2pid.wire.files import MAX_FILE_SIZE, FileOffer, decode_offer, encode_offer
from p2pid.wire.messages import FileNotice, FileShare

if TYPE_CHECKING:
    from trio_typing import TaskStatus

    from p2pid.groups.service import Groups

log = logging.getLogger(__name__)

CHECKPOINT_SECONDS = 1.0
PROGRESS_SECONDS = 0.25
RATE_WINDOW_SECONDS = 3.0
RETRY_SECONDS = 30.0
SOURCES_PER_ATTEMPT = 8
OPEN_TIMEOUT_SECONDS = 10.0
ACTIVE_STATES = ("downloading", "waiting")
FINAL_STATES = ("complete", "failed", "cancelled")
DISK_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS, errno.EIO})


def file_hex(file_id: bytes) -> str:
    return file_id.hex()


@dataclass
class _Meter:
    """Bytes moved by one transfer: the rate over the last seconds, and when to publish."""

    size: int
    done: int = 0
    samples: deque[tuple[float, int]] = field(default_factory=deque)
    published_at: float = 0.0

    def add(self, count: int) -> None:
        self.done += count
        now = time.monotonic()
        self.samples.append((now, self.done))
        while len(self.samples) > 2 and now - self.samples[0][0] > RATE_WINDOW_SECONDS:
            self.samples.popleft()

    def rate(self) -> float:
        if len(self.samples) < 2:
            return 0.0
        (t0, b0), (t1, b1) = self.samples[0], self.samples[-1]
        return (b1 - b0) / (t1 - t0) if t1 > t0 else 0.0

    def due(self) -> bool:
        now = time.monotonic()
        if now - self.published_at < PROGRESS_SECONDS:
            return False
        self.published_at = now
        return True


@dataclass
class _Task:
    """A running download: cancel `scope` to stop it; `ended` is set once it has stopped."""

    scope: trio.CancelScope = field(default_factory=trio.CancelScope)
    ended: trio.Event = field(default_factory=trio.Event)


class Files:
    def __init__(
        self,
        *,
        store: TrioStore,
        net: NetHost,
        messaging: Messaging,
        groups: Groups,
        contacts: Contacts,
        publish: Callable[[Event], None],
        default_folder: str,
        addrs: Callable[[], list[str]],
    ) -> None:
        self._store = store
        self._net = net
        self._messaging = messaging
        self._groups = groups
        self._contacts = contacts
        self._publish = publish
        self._default_folder = default_folder
        self._addrs = addrs
        self._bulk = BulkServer(_bulk_host(net.listen_addrs()))
        self._nursery: trio.Nursery | None = None
        self._tasks: dict[bytes, _Task] = {}
        self._meters: dict[bytes, _Meter] = {}
        self._served: dict[bytes, int] = {}  # outgoing: bytes served since the daemon started
        self._serving: dict[bytes, int] = {}  # file id -> size, of the files served

    # -- life ----------------------------------------------------------------------------------

    async def run(self, *, task_status: TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            await nursery.start(self._bulk.run)
            rows = await self._store.read(
                lambda conn: file_queries.transfers_in_state(conn, "in", ("downloading",))
            )
            for row in rows:  # interrupted by a stop or a crash: resume
                self._start(row.file_id)
            nursery.start_soon(self._retry_waiting)
            task_status.started()

    async def serve(self, stream: Stream) -> None:
        await serve_file_stream(stream, self._lookup, self._bulk, self._endpoints, self._on_sent)

    def on_connected(self, peer_id: str) -> None:
        """A device connected: waiting transfers it may serve try again now."""
        if self._nursery is not None:
            self._nursery.start_soon(self._retry_for, peer_id)

    # -- sending -------------------------------------------------------------------------------

    async def send(self, target: str, path: str) -> FileTransferView:
        status = await trio.to_thread.run_sync(_readable_file, path)
        contact, group_id = await self._target(target)
        content_hash = await trio.to_thread.run_sync(hash_file, path)
        after = os.stat(path)
        if (after.st_size, after.st_mtime_ns) != (status.st_size, status.st_mtime_ns):
            raise FilesError("conflict", f"{path} changed while it was being read; try again")
        name = Path(path).name
        media_type = mimetypes.guess_type(name)[0] or "application/octet-stream"
        try:
            offer = new_offer(name, status.st_size, media_type, content_hash)
        except ValueError as error:
            raise FilesError("invalid", f"cannot offer {name!r}: {error}") from None
        now = now_ms()
        body = FileShare(offer=offer, group_id=group_id)

        def write(conn: Connection) -> tuple[FileTransferView, list[str]]:
            file_queries.insert_transfer(
                conn,
                TransferRow(
                    file_id=offer.file_id,
                    direction="out",
                    offer=encode_offer(offer),
                    peer_identity=contact.identity_key if contact else None,
                    group_id=group_id,
                    sender_peer_id=self._net.peer_id,
                    state="sending",
                    path=path,
                    path_mtime_ns=status.st_mtime_ns,
                    folder="",
                    part_path="",
                    bitmap=b"",
                    bytes_done=0,
                    error="",
                    created_at=now,
                    updated_at=now,
                    completed_at=None,
                ),
            )
            devices = [
                device
                for person in self._recipients(conn, contact, group_id)
                for device in self._messaging.compose_for_groups(conn, person, body, now, None)
            ]
            if not devices:
                raise FilesError("unreachable", "no device of the recipients can be written to")
            row = file_queries.get_transfer(conn, offer.file_id)
            assert row is not None
            return self._view(conn, row), devices

        view, devices = await self._store.write(write)
        for peer_id in set(devices):
            self._messaging.kick_device(peer_id)
        self._publish(FileStateChanged(at_ms=now, transfer=view))
        return view

    async def _target(self, reference: str) -> tuple[ContactRow | None, bytes | None]:
        contact: ContactRow | None = None
        group_id: bytes | None = None
        try:
            contact = await self._contacts.find(reference)
        except ContactsError as error:
            if error.kind != "not_found":
                raise FilesError(error.kind, str(error)) from None
        try:
            group_id = await self._groups.find(reference)
        except GroupsError as error:
            if error.kind != "not_found":
                raise FilesError(error.kind, str(error)) from None
        if contact is not None and group_id is not None:
            raise FilesError(
                "invalid", f"{reference!r} names a contact and a group; use an identity or group id"
            )
        if contact is None and group_id is None:
            raise FilesError("not_found", f"no contact or group {reference!r}")
        if contact is not None and contact.blocked:
            raise FilesError("refused", f"{contact.name} is blocked; unblock them to send")
        if group_id is not None and not self._groups.is_member(group_id):
            raise FilesError("refused", "you are no longer a member of this group")
        return contact, group_id

    def _recipients(
        self, conn: Connection, contact: ContactRow | None, group_id: bytes | None
    ) -> list[bytes]:
        """The identities an offer goes to (never mine)."""
        if contact is not None:
            return [contact.identity_key]
        assert group_id is not None
        me = self._messaging.identity_key
        return [key for key in self._groups.member_identities(group_id) if key != me]

    # -- receiving offers and notices (inside the batch's transaction) -------------------------

    def apply_body(
        self,
        conn: Connection,
        contact: ContactRow,
        device: ContactDevice,
        body: FileShare | FileNotice,
        now: int,
        effects: FileEffects,
    ) -> None:
        if isinstance(body, FileShare):
            self._take_offer(conn, contact, device, body, now, effects)
        else:
            self._take_notice(conn, contact, body, now, effects)

    def _take_offer(
        self,
        conn: Connection,
        contact: ContactRow,
        device: ContactDevice,
        body: FileShare,
        now: int,
        effects: FileEffects,
    ) -> None:
        if body.group_id is not None:
            if not self._groups.is_member(body.group_id, contact.identity_key):
                raise FileRefusal(DropReason.NOT_CONTACT, "the sender is not a member")
        elif contact.group_only:
            raise FileRefusal(DropReason.NOT_CONTACT, "a file from someone who is not a contact")
        offer = body.offer
        inserted = file_queries.insert_transfer(
            conn,
            TransferRow(
                file_id=offer.file_id,
                direction="in",
                offer=encode_offer(offer),
                peer_identity=contact.identity_key,
                group_id=body.group_id,
                sender_peer_id=device.peer_id,
                state="offered",
                path="",
                path_mtime_ns=0,
                folder="",
                part_path="",
                bitmap=b"",
                bytes_done=0,
                error="",
                created_at=now,
                updated_at=now,
                completed_at=None,
            ),
        )
        if not inserted:  # the same file offered again (or a file id clash): keep the first
            return
        row = file_queries.get_transfer(conn, offer.file_id)
        assert row is not None
        effects.offered.append(offer.file_id)
        effects.events.append(FileOffered(at_ms=now, transfer=self._view(conn, row)))

    def _take_notice(
        self,
        conn: Connection,
        contact: ContactRow,
        body: FileNotice,
        now: int,
        effects: FileEffects,
    ) -> None:
        row = file_queries.get_transfer(conn, body.file_id)
        if row is None or row.state in FINAL_STATES:
            return
        if row.direction == "out":
            if not self._may_fetch(conn, row, contact.identity_key):
                raise FileRefusal(DropReason.FORGED_PAYLOAD, "a notice from a non-recipient")
            file_queries.record_delivery(conn, row.file_id, contact.identity_key, body.state, now)
            done = file_queries.deliveries(conn, row.file_id)
            recipients = self._recipients(conn, self._contact_of(conn, row), row.group_id)
            if all(key in done for key in recipients):
                if any(done[key] == "complete" for key in recipients):
                    row = file_queries.update_transfer(
                        conn, row.file_id, now, state="complete", completed_at=now
                    )
                    effects.delivered.append(row.file_id)
                else:
                    row = file_queries.update_transfer(
                        conn,
                        row.file_id,
                        now,
                        state="cancelled",
                        error="cancelled by the recipient",
                    )
                    effects.stopped.append(row.file_id)
            effects.events.append(FileStateChanged(at_ms=now, transfer=self._view(conn, row)))
            return
        if contact.identity_key != row.peer_identity or body.state != "cancelled":
            raise FileRefusal(DropReason.FORGED_PAYLOAD, "a notice from someone else")
        row = file_queries.update_transfer(
            conn, row.file_id, now, state="cancelled", error="cancelled by the sender"
        )
        effects.stopped.append(row.file_id)
        effects.events.append(FileStateChanged(at_ms=now, transfer=self._view(conn, row)))

    def _may_fetch(self, conn: Connection, row: TransferRow, identity_key: bytes) -> bool:
        if row.group_id is not None:
            return self._groups.is_member(row.group_id, identity_key)
        return identity_key == row.peer_identity

    def _contact_of(self, conn: Connection, row: TransferRow) -> ContactRow | None:
        if row.peer_identity is None:
            return None
        return contact_queries.get_contact(
            conn, row.peer_identity, include_self=True, include_group_only=True
        )

    def committed(self, effects: FileEffects) -> None:
        for event in effects.events:
            self._publish(event)
        if self._nursery is None:
            return
        for file_id in effects.stopped:
            self._nursery.start_soon(self._stop_and_discard, file_id)
        for file_id in effects.offered:
            self._nursery.start_soon(self._auto_accept, file_id)

    async def _auto_accept(self, file_id: bytes) -> None:
        def read(conn: Connection) -> tuple[TransferRow, FileSettingsRow, ContactRow | None]:
            row = file_queries.get_transfer(conn, file_id)
            assert row is not None
            return row, file_queries.get_settings(conn), self._contact_of(conn, row)

        row, settings, sender = await self._store.read(read)
        offer = decode_offer(row.offer)
        if sender is None or sender.group_only or sender.blocked or row.state != "offered":
            return
        if settings.auto_accept == "none" or offer.size > settings.auto_accept_max_bytes:
            return
        if settings.auto_accept == "verified" and not sender.verified:
            return
        try:
            await self.accept(file_hex(file_id), None)
        except FilesError as error:
            log.warning("could not accept %s automatically: %s", offer.name, error)

    # -- accepting and fetching ----------------------------------------------------------------

    async def accept(self, transfer: str, folder: str | None) -> FileTransferView:
        row = await self._find(transfer)
        if row.direction != "in":
            raise FilesError("invalid", "this is a file you sent")
        if row.state == "complete":
            raise FilesError("conflict", "this file is already complete")
        if row.state == "cancelled":
            raise FilesError("conflict", "this transfer was cancelled")
        settings = await self._store.read(file_queries.get_settings)
        target = folder or row.folder or settings.folder or self._default_folder
        if not os.path.isabs(target):
            raise FilesError("invalid", f"{target!r} is not an absolute path")
        create = target == self._default_folder and not folder
        await trio.to_thread.run_sync(_writable_folder, target, create)
        offer = decode_offer(row.offer)
        changes: dict[str, object] = {"state": "downloading", "error": "", "folder": target}
        if row.part_path and os.path.dirname(row.part_path) != target:
            self._discard(row.part_path)  # a new folder: start over there
            changes |= {"bitmap": b"", "bytes_done": 0, "part_path": ""}
        if not row.part_path or "part_path" in changes:
            changes["part_path"] = part_path_for(target, offer.name, offer.file_id)
        if row.file_id in self._tasks:
            return await self.show(transfer)
        now = now_ms()

        def write(conn: Connection) -> FileTransferView:
            updated = file_queries.update_transfer(conn, row.file_id, now, **changes)
            return self._view(conn, updated)

        view = await self._store.write(write)
        self._publish(FileStateChanged(at_ms=now, transfer=view))
        self._start(row.file_id)
        return view

    def _start(self, file_id: bytes) -> None:
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
            log.exception("transfer %s failed", file_hex(file_id))
            await self._set_state(file_id, "waiting", error="an internal error; retrying")
        finally:
            if self._tasks.get(file_id) is task:
                del self._tasks[file_id]
            task.ended.set()

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
                await self._complete(row, offer, moved)
                return
            row = await self._store.write(
                lambda conn: file_queries.update_transfer(
                    conn, file_id, now_ms(), bitmap=b"", bytes_done=0
                )
            )
        try:
            part = await trio.to_thread.run_sync(PartFile, offer, row.part_path, row.bitmap)
        except OSError as error:
            await self._set_state(file_id, "failed", error=_disk_message(error))
            return
        try:
            try:
                await trio.to_thread.run_sync(part.catch_up_hash)
            except FileIntegrityError:  # the partial file was cut short or altered meanwhile
                part.close()
                self._discard(row.part_path)
                await self._store.write(
                    lambda conn: file_queries.update_transfer(
                        conn, file_id, now_ms(), bitmap=b"", bytes_done=0
                    )
                )
                part = await trio.to_thread.run_sync(PartFile, offer, row.part_path, None)
            meter = self._meters.setdefault(file_id, _Meter(offer.size))
            meter.done = part.written_bytes
            if row.state != "downloading":
                await self._set_state(file_id, "downloading", error="")
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._checkpoints, file_id, part)
                outcome = await self._fetch_from_sources(row, offer, part, meter)
                nursery.cancel_scope.cancel()
            if outcome is not None:
                state, reason = outcome
                await self._set_state(file_id, state, error=reason)
                return
            await self._finish(row, offer, part)
        finally:
            part.close()
            self._meters.pop(file_id, None)

    async def _fetch_from_sources(
        self, row: TransferRow, offer: FileOffer, part: PartFile, meter: _Meter
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
                    return "failed", _disk_message(error)
                errors.append(f"{peer_id[:12]}: {error}")
            except FileIntegrityError as error:  # a holder that serves bad data: not from them
                log.warning("refusing data from %s: %s", peer_id, error)
                errors.append(f"{peer_id[:12]} sent bad data")
            except (
                NetError,
                SourceRefused,
                TransferBroken,
                BulkConnectError,
                trio.TooSlowError,
            ) as error:
                log.info("fetching %s from %s: %r", offer.name, peer_id, error)
                errors.append(f"{peer_id[:12]}: {error}")
            finally:
                await self._checkpoint(row.file_id, part)
        if part.complete:
            return None
        reason = "; ".join(errors[-3:]) or "no device that holds the file is reachable"
        return "waiting", reason

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

    async def _fetch_from(
        self, peer_id: str, file_id: bytes, part: PartFile, meter: _Meter
    ) -> None:
        def on_chunk(_index: int, count: int) -> None:
            meter.add(count)
            if meter.due():
                self._publish_progress(file_id, "in", meter)

        with trio.fail_after(OPEN_TIMEOUT_SECONDS):
            stream = await self._net.new_stream(peer_id, [PROTOCOL_ID])
        try:
            with trio.fail_after(OPEN_TIMEOUT_SECONDS):
                opened = await open_source(stream, file_id)
            ranges = _ranges(part.missing(), opened.have)
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
                        ranges = _ranges(part.missing(), opened.have)
                        continue
                else:
                    await fetch_over_stream(stream, part, ranges, on_chunk=on_chunk)
                if len(ranges) < MAX_RANGES:
                    break
                with trio.fail_after(OPEN_TIMEOUT_SECONDS):  # a fresh token for the rest
                    opened = await open_source(stream, file_id)
                ranges = _ranges(part.missing(), opened.have)
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
            self._discard(part.path)
            now = now_ms()
            await self._store.write(
                lambda conn: file_queries.update_transfer(
                    conn, row.file_id, now, bitmap=b"", bytes_done=0, part_path=""
                )
            )
            await self._set_state(row.file_id, "failed", error=f"{error}: the data was discarded")
            return
        except OSError as error:
            await self._set_state(row.file_id, "failed", error=_disk_message(error))
            return
        await self._complete(row, offer, final)

    async def _complete(self, row: TransferRow, offer: FileOffer, final: str) -> None:
        now = now_ms()
        notice = FileNotice(file_id=row.file_id, state="complete")
        sender = row.peer_identity
        assert sender is not None

        def write(conn: Connection) -> tuple[FileTransferView, list[str]]:
            updated = file_queries.update_transfer(
                conn,
                row.file_id,
                now,
                state="complete",
                path=final,
                path_mtime_ns=file_mtime_ns(final),
                part_path="",
                bytes_done=offer.size,
                error="",
                completed_at=now,
            )
            devices = self._messaging.compose_for_groups(conn, sender, notice, now, None)
            return self._view(conn, updated), devices

        view, devices = await self._store.write(write)
        for peer_id in devices:
            self._messaging.kick_device(peer_id)
        meter = self._meters.get(row.file_id) or _Meter(offer.size, done=offer.size)
        meter.done = offer.size
        self._publish_progress(row.file_id, "in", meter)
        self._publish(FileStateChanged(at_ms=now, transfer=view))

    async def _retry_waiting(self) -> None:
        while True:
            await trio.sleep(RETRY_SECONDS)
            await self._retry_for(None)

    async def _retry_for(self, peer_id: str | None) -> None:
        rows = await self._store.read(
            lambda conn: file_queries.transfers_in_state(conn, "in", ("waiting",))
        )
        for row in rows:
            if peer_id is None or row.sender_peer_id == peer_id or row.group_id is not None:
                self._start(row.file_id)

    # -- serving -------------------------------------------------------------------------------

    async def _lookup(self, file_id: bytes, peer_id: str) -> ChunkSource | Refused:
        def read(conn: Connection) -> tuple[TransferRow | None, bool]:
            row = file_queries.get_transfer(conn, file_id)
            if row is None:
                return None, False
            person = contact_queries.contact_for_peer(
                conn, peer_id, include_self=False, include_group_only=True
            )
            allowed = person is not None and not person.blocked
            if allowed and person is not None:
                if row.group_id is not None:
                    allowed = self._groups.is_member(row.group_id, person.identity_key)
                else:
                    allowed = row.direction == "out" and person.identity_key == row.peer_identity
            return row, allowed

        row, allowed = await self._store.read(read)
        if row is None:
            return Refused(reason="unknown", message="no such file here")
        if not allowed:
            return Refused(reason="not_allowed", message="this file was not offered to you")
        if row.state == "cancelled":
            return Refused(reason="cancelled", message="the transfer was cancelled")
        offer = decode_offer(row.offer)
        self._serving[file_id] = offer.size
        try:
            if row.direction == "out" or row.state == "complete":
                return await trio.to_thread.run_sync(
                    lambda: FileSource(offer, row.path, mtime_ns=row.path_mtime_ns)
                )
            if row.part_path and any(row.bitmap):
                return await trio.to_thread.run_sync(
                    lambda: FileSource(offer, row.part_path, have=row.bitmap)
                )
        except OSError as error:
            return Refused(reason="changed", message=f"the file is not available: {error}")
        return Refused(reason="unknown", message="no verified chunks of this file here")

    def _endpoints(self) -> list[Endpoint]:
        port = self._bulk.port
        hosts: list[str] = []
        for addr in self._addrs():
            parts = addr.split("/")
            if len(parts) > 2 and parts[1] == "ip4" and parts[2] not in hosts:
                hosts.append(parts[2])
        return [Endpoint(host, port) for host in hosts[:8]]

    def _on_sent(self, file_id: bytes, count: int) -> None:
        self._served[file_id] = self._served.get(file_id, 0) + count
        meter = self._meters.get(file_id)
        if meter is None:
            size = self._serving.get(file_id)
            if size is None:
                return
            meter = self._meters[file_id] = _Meter(size)
        meter.add(count)
        if meter.due():
            self._publish_progress(file_id, "out", meter)

    # -- cancelling ----------------------------------------------------------------------------

    async def cancel(self, transfer: str) -> FileTransferView:
        row = await self._find(transfer)
        if row.state in FINAL_STATES:
            raise FilesError("conflict", f"this transfer is already {row.state}")
        now = now_ms()
        notice = FileNotice(file_id=row.file_id, state="cancelled")

        def write(conn: Connection) -> tuple[FileTransferView, list[str]]:
            updated = file_queries.update_transfer(
                conn, row.file_id, now, state="cancelled", error="cancelled here"
            )
            if row.direction == "in":
                people = [row.peer_identity] if row.peer_identity else []
            else:
                people = self._recipients(conn, self._contact_of(conn, row), row.group_id)
            devices = [
                device
                for person in people
                for device in self._messaging.compose_for_groups(conn, person, notice, now, None)
            ]
            return self._view(conn, updated), devices

        view, devices = await self._store.write(write)
        for peer_id in set(devices):
            self._messaging.kick_device(peer_id)
        if row.direction == "out":
            self._bulk.close_file(row.file_id)
        else:
            await self._stop_and_discard(row.file_id)
        self._publish(FileStateChanged(at_ms=now, transfer=view))
        return view

    async def _stop_and_discard(self, file_id: bytes) -> None:
        task = self._tasks.get(file_id)
        if task is not None:
            task.scope.cancel()
            await task.ended.wait()
        row = await self._store.read(lambda conn: file_queries.get_transfer(conn, file_id))
        if row is not None and row.part_path:
            self._discard(row.part_path)
            now = now_ms()
            await self._store.write(
                lambda conn: file_queries.update_transfer(
                    conn, file_id, now, part_path="", bitmap=b"", bytes_done=0
                )
            )
        self._bulk.close_file(file_id)

    @staticmethod
    def _discard(path: str) -> None:
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
        except OSError as error:
            log.warning("cannot remove %s: %s", path, error)

    # -- reading -------------------------------------------------------------------------------

    async def list_transfers(self) -> list[FileTransferView]:
        def read(conn: Connection) -> list[FileTransferView]:
            return [self._view(conn, row) for row in file_queries.list_transfers(conn)]

        return await self._store.read(read)

    async def show(self, transfer: str) -> FileTransferView:
        row = await self._find(transfer)
        return await self._store.read(lambda conn: self._view(conn, row))

    async def _find(self, reference: str) -> TransferRow:
        wanted = reference.strip().lower()
        if len(wanted) < 4 or any(c not in "0123456789abcdef" for c in wanted):
            raise FilesError("invalid", f"{reference!r} is not a transfer id (hex, 4+ digits)")
        rows = await self._store.read(file_queries.list_transfers)
        matches = [row for row in rows if row.file_id.hex().startswith(wanted)]
        if not matches:
            raise FilesError("not_found", f"no transfer {reference!r}")
        if len(matches) > 1:
            raise FilesError("invalid", f"{reference!r} matches several transfers; give more")
        return matches[0]

    async def _set_state(self, file_id: bytes, state: str, *, error: str) -> None:
        now = now_ms()

        def write(conn: Connection) -> FileTransferView | None:
            row = file_queries.get_transfer(conn, file_id)
            if row is None or row.state == "cancelled":
                return None
            updated = file_queries.update_transfer(conn, file_id, now, state=state, error=error)
            return self._view(conn, updated)

        with trio.CancelScope(shield=True):
            view = await self._store.write(write)
        if view is not None:
            self._publish(FileStateChanged(at_ms=now, transfer=view))

    def _publish_progress(self, file_id: bytes, direction: str, meter: _Meter) -> None:
        rate = meter.rate()
        left = max(0, meter.size - meter.done)
        self._publish(
            FileProgress(
                at_ms=now_ms(),
                transfer_id=file_hex(file_id),
                direction=direction,
                bytes_done=min(meter.done, meter.size),
                size=meter.size,
                rate_bps=rate,
                eta_s=left / rate if rate > 0 else (0.0 if not left else None),
            )
        )

    def _view(self, conn: Connection, row: TransferRow) -> FileTransferView:
        offer = decode_offer(row.offer)
        person = self._contact_of(conn, row)
        group = group_queries.get_group(conn, row.group_id) if row.group_id else None
        recipients = delivered = 0
        bytes_done = row.bytes_done
        if row.direction == "out":
            people = self._recipients(conn, person, row.group_id)
            done = file_queries.deliveries(conn, row.file_id)
            recipients = len(people)
            delivered = sum(1 for key in people if done.get(key) == "complete")
            bytes_done = min(offer.size, self._served.get(row.file_id, 0))
            if row.state == "complete":
                bytes_done = offer.size
        elif row.file_id in self._meters:
            bytes_done = self._meters[row.file_id].done
        return FileTransferView(
            transfer_id=file_hex(row.file_id),
            direction=row.direction,
            name=offer.name,
            size=offer.size,
            media_type=offer.media_type,
            state=row.state,
            peer_id=identity_id_from_public_key(row.peer_identity) if row.peer_identity else "",
            peer_name=person.name if person else "",
            group_id=row.group_id.hex() if row.group_id else "",
            group_name=group.name if group else "",
            bytes_done=bytes_done,
            path=row.path or (str(Path(row.folder) / offer.name) if row.folder else ""),
            folder=row.folder,
            error=row.error,
            content_hash=offer.content_hash.hex(),
            created_at_ms=row.created_at,
            updated_at_ms=row.updated_at,
            completed_at_ms=row.completed_at,
            recipients=recipients,
            delivered=delivered,
        )

    # -- settings ------------------------------------------------------------------------------

    async def settings(self) -> FileSettings:
        row = await self._store.read(file_queries.get_settings)
        return self._settings_view(row)

    async def set_settings(
        self, folder: str | None, auto_accept: str | None, auto_accept_max_bytes: int | None
    ) -> FileSettings:
        if folder:
            await trio.to_thread.run_sync(_writable_folder, folder, False)
        if auto_accept is not None and auto_accept not in file_queries.AUTO_ACCEPT:
            raise FilesError("invalid", "auto-accept is one of none, verified, contacts")
        if auto_accept_max_bytes is not None and not 0 <= auto_accept_max_bytes <= MAX_FILE_SIZE:
            raise FilesError("invalid", f"the size limit is 0..{MAX_FILE_SIZE} bytes")

        def write(conn: Connection) -> FileSettingsRow:
            current = file_queries.get_settings(conn)
            updated = FileSettingsRow(
                folder=current.folder if folder is None else folder,
                auto_accept=auto_accept or current.auto_accept,
                auto_accept_max_bytes=(
                    current.auto_accept_max_bytes
                    if auto_accept_max_bytes is None
                    else auto_accept_max_bytes
                ),
            )
            file_queries.set_settings(conn, updated)
            return updated

        return self._settings_view(await self._store.write(write))

    def _settings_view(self, row: FileSettingsRow) -> FileSettings:
        return FileSettings(
            folder=row.folder or self._default_folder,
            auto_accept=row.auto_accept,
            auto_accept_max_bytes=row.auto_accept_max_bytes,
        )


def _readable_file(path: str) -> os.stat_result:
    if not os.path.isabs(path):
        raise FilesError("invalid", f"{path!r} is not an absolute path")
    try:
        status = os.stat(path)
    except OSError as error:
        raise FilesError("invalid", f"cannot read {path}: {error.strerror}") from None
    if not stat.S_ISREG(status.st_mode):
        raise FilesError("invalid", f"{path} is not a regular file")
    if not os.access(path, os.R_OK):
        raise FilesError("invalid", f"{path} is not readable")
    if status.st_size > MAX_FILE_SIZE:
        raise FilesError("invalid", f"{path} is larger than {MAX_FILE_SIZE} bytes")
    return status


def _writable_folder(folder: str, create: bool) -> None:
    if not os.path.isabs(folder):
        raise FilesError("invalid", f"{folder!r} is not an absolute path")
    if create:
        os.makedirs(folder, mode=0o700, exist_ok=True)
    if not os.path.isdir(folder) or not os.access(folder, os.W_OK | os.X_OK):
        raise FilesError("invalid", f"{folder} is not a folder this daemon can write to")


def default_files_folder() -> str:
    """~/Downloads/p2pid (the platform's downloads folder)."""
    return str(Path(platformdirs.user_downloads_dir()) / "p2pid")


def _ranges(missing: Sequence[range], have: bytes) -> list[ChunkRange]:
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


def _bulk_host(listen_addrs: Sequence[str]) -> str:
    """Where libp2p listens: its one IPv4 address, else every interface."""
    hosts = {addr.split("/")[2] for addr in listen_addrs if addr.startswith("/ip4/")}
    return hosts.pop() if len(hosts) == 1 else "0.0.0.0"


def _disk_message(error: OSError) -> str:
    if error.errno in (errno.ENOSPC, errno.EDQUOT):
        return "the disk is full: free some space, then `file accept` resumes it"
    return f"cannot write the file: {error.strerror or error}; `file accept` resumes it"


__all__ = ["Files", "FilesError", "SourceChangedError", "chunk_length"]
