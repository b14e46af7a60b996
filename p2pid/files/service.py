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

import logging
import mimetypes
import os
import shutil
import stat
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import platformdirs
import trio

from p2pid.contacts import Contacts, ContactsError
from p2pid.crypto.file_chunks import (
    chunk_length,
    hash_file,
    new_offer,
)
from p2pid.crypto.identity import identity_id_from_public_key
from p2pid.events import now_ms
from p2pid.files.downloads import Downloads, discard
from p2pid.files.effects import FileEffects, FileRefusal
from p2pid.files.errors import FilesError
from p2pid.files.meter import Meter
from p2pid.files.serving import FileServer
from p2pid.files.storage import (
    SourceChangedError,
    file_mtime_ns,
    part_path_for,
)
from p2pid.files.timeline import (
    ConversationKind,
    add_copied_line,
    add_received_line,
    add_sent_line,
)
from p2pid.groups.engine import message_view as group_message_view
from p2pid.groups.errors import GroupsError
from p2pid.messaging import Messaging, copied_sent_event, message_view
from p2pid.net.host import NetHost, Stream
from p2pid.protocols.messaging import DropReason
from p2pid.sizes import human_size
from p2pid.store import contacts as contact_queries
from p2pid.store import files as file_queries
from p2pid.store import groups as group_queries
from p2pid.store.contacts import ContactDevice, ContactRow
from p2pid.store.db import Connection
from p2pid.store.files import FileSettingsRow, TransferRow
from p2pid.store.messages import MessageRow
from p2pid.store.trio_store import TrioStore
from p2pid.wire.events import Event
from p2pid.wire.file_views import (
    FileOffered,
    FileSettings,
    FileStateChanged,
    FileTransferView,
)
from p2pid.wire.files import (
    DEFAULT_CHUNK_SIZE,
    MAX_FILE_SIZE,
    FileOffer,
    decode_offer,
    encode_offer,
)
from p2pid.wire.group_views import GroupMessageReceived, GroupMessageSent
from p2pid.wire.messages import (
    FileLineCopy,
    FileNotice,
    FileShare,
    MessageReceived,
    MessageSent,
    Payload,
)

if TYPE_CHECKING:
    from trio_typing import TaskStatus

    from p2pid.groups.service import Groups

log = logging.getLogger(__name__)

FINAL_STATES = ("complete", "failed", "cancelled")
AUTO_ACCEPT_KEEP_FREE_BYTES = 1024**3  # what taking files unasked leaves free, at least
CHUNK_SIZE = DEFAULT_CHUNK_SIZE


def file_hex(file_id: bytes) -> str:
    return file_id.hex()


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
        self._server = FileServer(
            store=store, groups=groups, publish=publish, addrs=addrs, listen=net.listen_addrs()
        )
        self._nursery: trio.Nursery | None = None
        self._downloads = Downloads(store=store, net=net, groups=groups, hooks=self)

    # -- life ----------------------------------------------------------------------------------

    async def run(self, *, task_status: TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            await nursery.start(self._server.run)
            await nursery.start(self._downloads.run)
            task_status.started()

    async def serve(self, stream: Stream) -> None:
        await self._server.serve(stream)

    def on_connected(self, peer_id: str) -> None:
        """A device connected: waiting transfers it may serve try again now."""
        if self._nursery is not None:
            self._nursery.start_soon(self._downloads.retry_for, peer_id)

    # -- sending -------------------------------------------------------------------------------

    async def send(self, target: str, path: str) -> FileTransferView:
        status = await trio.to_thread.run_sync(_readable_file, path)
        contact, group_id = await self._target(target)
        content_hash, manifest = await trio.to_thread.run_sync(hash_file, path, CHUNK_SIZE)
        after = os.stat(path)
        if (after.st_size, after.st_mtime_ns) != (status.st_size, status.st_mtime_ns):
            raise FilesError("conflict", f"{path} changed while it was being read; try again")
        name = Path(path).name
        media_type = mimetypes.guess_type(name)[0] or "application/octet-stream"
        try:
            offer = new_offer(name, status.st_size, media_type, content_hash, CHUNK_SIZE)
        except ValueError as error:
            raise FilesError("invalid", f"cannot offer {name!r}: {error}") from None
        now = now_ms()

        def write(conn: Connection) -> tuple[FileTransferView, list[str], Event]:
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
                    manifest=manifest,
                    bytes_done=0,
                    error="",
                    created_at=now,
                    updated_at=now,
                    completed_at=None,
                ),
            )
            line, line_sent = self._add_sent_line(conn, contact, group_id, offer, now)
            body = FileShare(
                offer=offer,
                group_id=group_id,
                group_lamport=line.lamport if group_id is not None else None,
            )
            devices = [
                device
                for person in self._recipients(conn, contact, group_id)
                for device in self._messaging.compose_for_groups(conn, person, body, now, None)
            ]
            if not devices:
                raise FilesError("unreachable", "no device of the recipients can be written to")
            copy = FileLineCopy(
                conversation_with=line.peer_identity,
                group=group_id is not None,
                name=offer.name,
                size=offer.size,
            )
            devices += self._messaging.copy_to_my_devices(
                conn, offer.file_id, line.lamport, copy, now
            )
            row = file_queries.get_transfer(conn, offer.file_id)
            assert row is not None
            return self._view(conn, row), devices, line_sent

        view, devices, line_sent = await self._store.write(write)
        for peer_id in set(devices):
            self._messaging.kick_device(peer_id)
        self._publish(line_sent)
        self._publish(FileStateChanged(at_ms=now, transfer=view))
        return view

    def _add_sent_line(
        self,
        conn: Connection,
        contact: ContactRow | None,
        group_id: bytes | None,
        offer: FileOffer,
        now: int,
    ) -> tuple[MessageRow, Event]:
        """The offer's line in the conversation, and the event that announces it."""
        kind: ConversationKind
        if group_id is not None:
            conversation_with, kind = group_id, "group"
        else:
            assert contact is not None
            conversation_with, kind = contact.identity_key, "direct"
        row = add_sent_line(
            conn,
            conversation_with=conversation_with,
            kind=kind,
            offer=offer,
            me=self._messaging.identity_key,
            my_device=self._net.peer_id,
            now=now,
        )
        if group_id is not None:
            group_view = group_message_view(row, group_id)
            return row, GroupMessageSent(
                at_ms=now,
                group_id=group_view.conversation_id,
                group_name=self._groups.group_name(group_id),
                message=group_view,
            )
        assert contact is not None
        view = message_view(row)
        return row, MessageSent(
            at_ms=now, conversation_id=view.conversation_id, name=contact.name, message=view
        )

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
        payload: Payload,
        now: int,
        effects: FileEffects,
    ) -> bytes | None:
        """Take a file offer or notice; for a one-to-one offer, the id of its new line in the
        conversation (a delivery receipt is owed for it)."""
        body = payload.body
        if isinstance(body, FileShare):
            return self._take_offer(conn, contact, device, payload, body, now, effects)
        if isinstance(body, FileNotice):
            self._take_notice(conn, contact, body, now, effects)
            return None
        raise TypeError(f"not a file body: {type(body).__name__}")

    def _take_offer(
        self,
        conn: Connection,
        contact: ContactRow,
        device: ContactDevice,
        payload: Payload,
        body: FileShare,
        now: int,
        effects: FileEffects,
    ) -> bytes | None:
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
                manifest=b"",
                bytes_done=0,
                error="",
                created_at=now,
                updated_at=now,
                completed_at=None,
            ),
        )
        if not inserted:  # the same file offered again (or a file id clash): keep the first
            return None
        row = file_queries.get_transfer(conn, offer.file_id)
        assert row is not None
        effects.offered.append(offer.file_id)
        line = self._add_received_line(conn, contact, device, payload, body, now, effects)
        effects.events.append(FileOffered(at_ms=now, transfer=self._view(conn, row)))
        return line

    def _add_received_line(
        self,
        conn: Connection,
        contact: ContactRow,
        device: ContactDevice,
        payload: Payload,
        body: FileShare,
        now: int,
        effects: FileEffects,
    ) -> bytes | None:
        group_id = body.group_id
        row = add_received_line(
            conn,
            conversation_with=group_id if group_id is not None else contact.identity_key,
            kind="group" if group_id is not None else "direct",
            offer=body.offer,
            sender_identity=contact.identity_key,
            sender_device=device.peer_id,
            lamport=body.group_lamport if group_id is not None else payload.lamport,
            sent_at=payload.sent_at_ms,
            now=now,
        )
        if row is None:
            return None
        if group_id is None:
            view = message_view(row)
            effects.events.append(
                MessageReceived(
                    at_ms=now, conversation_id=view.conversation_id, name=contact.name, message=view
                )
            )
            return row.message_id
        group_queries.owe_receipt(conn, group_id, contact.identity_key, row.message_id)
        effects.group_receipts_owed = True
        group_view = group_message_view(row, group_id)
        effects.events.append(
            GroupMessageReceived(
                at_ms=now,
                group_id=group_view.conversation_id,
                group_name=self._groups.group_name(group_id),
                sender_name=self._groups.member_name(conn, group_id, contact.identity_key),
                message=group_view,
            )
        )
        return None

    def apply_line_copy(
        self,
        conn: Connection,
        device: ContactDevice,
        payload: Payload,
        copy: FileLineCopy,
        now: int,
        effects: FileEffects,
    ) -> None:
        """Another device of mine offered a file: its line, in the conversation here too."""
        if copy.group and not self._groups.is_member(copy.conversation_with):
            return  # a group I left meanwhile
        row = add_copied_line(
            conn,
            message_id=payload.message_id,
            copy=copy,
            me=self._messaging.identity_key,
            my_device=device.peer_id,
            lamport=payload.lamport,
            sent_at=payload.sent_at_ms,
            now=now,
        )
        if row is None:
            return
        if copy.group:
            group_view = group_message_view(row, copy.conversation_with)
            effects.events.append(
                GroupMessageSent(
                    at_ms=now,
                    group_id=group_view.conversation_id,
                    group_name=self._groups.group_name(copy.conversation_with),
                    message=group_view,
                )
            )
            return
        effects.events.append(copied_sent_event(conn, row, now))

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
        if effects.group_receipts_owed:
            self._groups.receipts_owed()
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
        folder = settings.folder or self._default_folder
        short = await trio.to_thread.run_sync(_too_little_room, folder, offer.size)
        if short:
            await self._note_on_offer(file_id, f"not accepted automatically: {short}")
            return
        try:
            await self.accept(file_hex(file_id), None)
        except FilesError as error:
            log.warning("could not accept %s automatically: %s", offer.name, error)

    async def _note_on_offer(self, file_id: bytes, note: str) -> None:
        """Say on an offer (as its error) why it waits for the person; not once it moved on."""
        now = now_ms()

        def write(conn: Connection) -> FileTransferView | None:
            row = file_queries.get_transfer(conn, file_id)
            if row is None or row.state != "offered":
                return None
            return self._view(conn, file_queries.update_transfer(conn, file_id, now, error=note))

        view = await self._store.write(write)
        if view is not None:
            self._publish(FileStateChanged(at_ms=now, transfer=view))

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
            discard(row.part_path)  # a new folder: start over there
            changes |= {"bitmap": b"", "bytes_done": 0, "part_path": ""}
        if not row.part_path or "part_path" in changes:
            changes["part_path"] = part_path_for(target, offer.name, offer.file_id)
        if self._downloads.running(row.file_id):
            return await self.show(transfer)
        now = now_ms()

        def write(conn: Connection) -> FileTransferView:
            updated = file_queries.update_transfer(conn, row.file_id, now, **changes)
            return self._view(conn, updated)

        view = await self._store.write(write)
        self._publish(FileStateChanged(at_ms=now, transfer=view))
        self._downloads.start(row.file_id)
        return view

    async def complete(self, row: TransferRow, offer: FileOffer, final: str) -> None:
        """Record a file moved into place, and tell its sender."""
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
        meter = self._downloads.meters.get(row.file_id) or Meter(offer.size)
        meter.done = offer.size
        self.progress(row.file_id, meter)
        self._publish(FileStateChanged(at_ms=now, transfer=view))

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
            self._server.close_file(row.file_id)
        else:
            await self._stop_and_discard(row.file_id)
        self._publish(FileStateChanged(at_ms=now, transfer=view))
        return view

    async def _stop_and_discard(self, file_id: bytes) -> None:
        await self._downloads.stop(file_id)
        row = await self._store.read(lambda conn: file_queries.get_transfer(conn, file_id))
        if row is not None and row.part_path:
            discard(row.part_path)
            now = now_ms()
            await self._store.write(
                lambda conn: file_queries.update_transfer(
                    conn, file_id, now, part_path="", bitmap=b"", bytes_done=0
                )
            )
        self._server.close_file(file_id)

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

    async def set_state(self, file_id: bytes, state: str, *, error: str) -> None:
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

    def progress(self, file_id: bytes, meter: Meter) -> None:
        self._publish(meter.event(file_id, "in"))

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
            bytes_done = min(offer.size, self._server.served(row.file_id))
            if row.state == "complete":
                bytes_done = offer.size
        elif row.state == "cancelled":
            bytes_done = 0  # the partial file is gone
        elif row.file_id in self._downloads.meters:
            bytes_done = self._downloads.meters[row.file_id].done
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
            path=row.path
            or (
                str(Path(row.folder) / offer.name)
                if row.folder and row.state != "cancelled"
                else ""
            ),
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


def _too_little_room(folder: str, size: int) -> str:
    """Why a file of `size` bytes may not be taken into `folder` unasked ("" if it may): it
    would leave less free than AUTO_ACCEPT_KEEP_FREE_BYTES, or a tenth of the disk if that is
    less. (The folder's nearest existing parent is measured if it does not exist yet.)"""
    path = Path(folder)
    while not path.exists() and path != path.parent:
        path = path.parent
    try:
        usage = shutil.disk_usage(path)
    except OSError as error:
        return f"cannot see the free space in {folder}: {error.strerror}"
    keep = min(AUTO_ACCEPT_KEEP_FREE_BYTES, usage.total // 10)
    if usage.free - size >= keep:
        return ""
    return (
        f"it would leave less than {human_size(keep)} free in {folder}"
        f" ({human_size(usage.free)} free now)"
    )


def default_files_folder() -> str:
    """~/Downloads/p2pid (the platform's downloads folder)."""
    return str(Path(platformdirs.user_downloads_dir()) / "p2pid")


__all__ = ["Files", "FilesError", "SourceChangedError", "chunk_length"]
