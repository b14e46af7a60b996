"""Groups, the node's service: create and change groups, send to them, catch up on what was
missed, and the views the RPC methods return. The work inside each store transaction is in
p2pid.groups.engine; this module is the trio side."""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, TypeVar

import nacl.signing
import trio

from p2pid.crypto.identity import IdentityKeys, identity_id_from_public_key
from p2pid.events import now_ms
from p2pid.groups.engine import (
    MAX_MEMBERS,
    Effects,
    GroupEngine,
    GroupRefusal,
    group_hex,
    message_view,
    my_role,
    stored_by,
)
from p2pid.groups.errors import GroupsError
from p2pid.groups.history import HistoryRequesterBackend, HistoryResponderBackend
from p2pid.groups.invites import GroupInvites
from p2pid.groups.membership import GroupError, GroupLog, GroupState, Member
from p2pid.net.host import NetHost
from p2pid.protocols.group_history import GroupHistoryServer, HistoryError, fetch_history
from p2pid.protocols.group_sync import GroupSyncServer, SyncGroup, SyncReport, sync_group
from p2pid.protocols.messaging import DropReason
from p2pid.store import contacts as contact_queries
from p2pid.store import groups as group_queries
from p2pid.store import messages as message_queries
from p2pid.store.contacts import ContactRow
from p2pid.store.db import Connection
from p2pid.store.messages import Cursor, MessageRow
from p2pid.store.trio_store import TrioStore
from p2pid.wire.events import Event
from p2pid.wire.group_views import (
    GroupInviteCreated,
    GroupJoinRequestView,
    GroupJoinResult,
    GroupMemberView,
    GroupMessageReceipts,
    GroupMessageStateChanged,
    GroupReceiptView,
    GroupSummary,
    GroupSyncResult,
    GroupView,
)
from p2pid.wire.groups import (
    Add,
    Demote,
    GroupOp,
    Leave,
    Promote,
    Remove,
    Rename,
    Role,
    SignedGroupOp,
)
from p2pid.wire.messages import (
    MAX_RECEIPT_IDS,
    GroupReadCopy,
    GroupReceipt,
    MessagePage,
    MessageView,
    PayloadError,
    check_text,
)

if TYPE_CHECKING:
    from trio_typing import TaskStatus

    from p2pid.contacts import Contacts
    from p2pid.messaging import Messaging

log = logging.getLogger(__name__)
_T = TypeVar("_T")

MAX_PAGE = 500
RECEIPT_COALESCE_SECONDS = 0.02
HELD_KEPT_MS = 7 * 24 * 3600 * 1000  # a group message whose key never came is dropped then
SYNC_INTERVAL_SECONDS = 60.0  # at most one automatic catch-up per member device and minute
SYNC_CANDIDATES = 8  # member devices asked at once by an explicit catch-up


class Groups:
    def __init__(
        self,
        *,
        store: TrioStore,
        net: NetHost,
        keys: IdentityKeys,
        vault_key: bytes,
        messaging: Messaging,
        publish: Callable[[Event], None],
        display_name: Callable[[], str],
        addrs: Callable[[], list[str]],
        contacts: Contacts,
        remember_addrs: Callable[[str], Awaitable[None]],
    ) -> None:
        self._store = store
        self._net = net
        self._messaging = messaging
        self._publish = publish
        self._display_name = display_name
        self._me = keys.identity_public_key
        self.lock = threading.RLock()
        self.engine = GroupEngine(
            identity_key=keys.identity_public_key,
            identity_signing_key=keys.identity_signing_key,
            device_signing_key=nacl.signing.SigningKey(keys.device_seed),
            vault_key=vault_key,
            compose=messaging.compose_for_groups,
            enqueue_raw=messaging.enqueue_raw,
            own_addrs=addrs,
        )
        self._receipts_owed = trio.Event()
        self._last_sync: dict[str, float] = {}
        self._nursery: trio.Nursery | None = None
        self._sync_server = GroupSyncServer(self._sync_lookup, on_accepted=self._synced)
        self._device_owners: dict[str, bytes] = {}  # PeerId -> identity, for sync requests
        self._responder_copies: dict[bytes, list[GroupLog]] = {}
        self.invites = GroupInvites(
            store=store,
            net=net,
            engine=self.engine,
            lock=self.lock,
            contacts=contacts,
            addrs=addrs,
            write=self._write,
            publish=publish,
            remember_addrs=remember_addrs,
        )

    # -- running -------------------------------------------------------------------------------

    async def run(self, *, task_status: TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        await self._store.read(self._load)
        cutoff = now_ms() - HELD_KEPT_MS
        await self._store.write(lambda conn: group_queries.prune_held(conn, cutoff))
        self._sync_server.install(self._net)
        self.invites.install()
        GroupHistoryServer(HistoryResponderBackend(self._store, self.engine, self.lock)).install(
            self._net
        )
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            nursery.start_soon(self._send_owed_receipts)
            task_status.started()

    def _load(self, conn: Connection) -> None:
        with self.lock:
            self.engine.load(conn)

    def committed(self, effects: Effects) -> None:
        """After a transaction with group work committed: announce and act on it."""
        for event in effects.events:
            self._publish(event)
        for peer_id, addrs in effects.hints.items():
            self._net.add_addrs(peer_id, addrs)
            effects.kick.add(peer_id)
        for peer_id in effects.kick:
            self._messaging.kick_device(peer_id)
        if effects.receipts_owed:
            self._receipts_owed.set()
        if self._nursery is not None:
            for group_id, peer_id in effects.sync:
                self._nursery.start_soon(self._catch_up_quietly, group_id, peer_id)

    async def _write(self, fn: Callable[[Connection, Effects], object]) -> Effects:
        def write(conn: Connection) -> Effects:
            effects = Effects()
            with self.lock:
                fn(conn, effects)
            return effects

        effects = await self._store.write(write)
        self.committed(effects)
        return effects

    def shares_a_group_with(self, identity_key: bytes) -> bool:
        with self.lock:
            return any(
                log.state.is_member(identity_key) and log.state.is_member(self._me)
                for log in self.engine.logs.values()
            )

    def is_member(self, group_id: bytes, identity_key: bytes | None = None) -> bool:
        """Whether `identity_key` (default: me) is a member of the group, and I am too."""
        with self.lock:
            group_log = self.engine.logs.get(group_id)
            if group_log is None or not group_log.state.is_member(self._me):
                return False
            return group_log.state.is_member(identity_key or self._me)

    def group_name(self, group_id: bytes) -> str:
        with self.lock:
            group_log = self.engine.logs.get(group_id)
            return group_log.state.name if group_log is not None else ""

    def member_name(self, conn: Connection, group_id: bytes, identity_key: bytes) -> str:
        """What I call a member: my name for a contact, else the name they gave the group."""
        person = self.engine.person(conn, identity_key)
        if person is not None and not person.group_only:
            return person.name
        with self.lock:
            group_log = self.engine.logs.get(group_id)
            member = group_log.state.members.get(identity_key) if group_log else None
        return member.display_name if member else identity_id_from_public_key(identity_key)[:12]

    def receipts_owed(self) -> None:
        """A committed transaction owes delivery receipts (group_queries.owe_receipt): send them
        with the next batch."""
        self._receipts_owed.set()

    def member_identities(self, group_id: bytes) -> list[bytes]:
        with self.lock:
            group_log = self.engine.logs.get(group_id)
            return list(group_log.state.members) if group_log is not None else []

    def member_device_ids(self, conn: Connection, group_id: bytes) -> list[str]:
        """Every member device of the group I know (none if I am not a member)."""
        if not self.is_member(group_id):
            return []
        return self._member_device_ids(conn, group_id)

    async def find(self, reference: str) -> bytes:
        """A group's id by its name or a prefix of its id (GroupsError if none or several)."""
        return await self._find(reference)

    # -- views ---------------------------------------------------------------------------------

    async def list_groups(self) -> list[GroupSummary]:
        def read(conn: Connection) -> list[GroupSummary]:
            summaries = []
            with self.lock:
                for row in group_queries.list_groups(conn):
                    group_log = self.engine.logs.get(row.group_id)
                    conversation = message_queries.get_conversation(conn, row.group_id)
                    last = None
                    if conversation is not None:
                        newest = message_queries.page(conn, conversation.id, 1, None)
                        last = message_view(newest[-1], row.group_id) if newest else None
                    summaries.append(
                        GroupSummary(
                            group_id=group_hex(row.group_id),
                            name=row.name,
                            avatar=row.avatar,
                            my_role=row.my_role,
                            members=len(group_log.state.members) if group_log else 0,
                            unread=conversation.unread if conversation else 0,
                            last_message=last,
                            updated_at_ms=max(
                                row.updated_at, conversation.updated_at if conversation else 0
                            ),
                        )
                    )
            return sorted(summaries, key=lambda s: -s.updated_at_ms)

        return await self._store.read(read)

    async def show(self, group: str) -> GroupView:
        group_id = await self._find(group)
        return await self._store.read(lambda conn: self._view(conn, group_id))

    def _view(self, conn: Connection, group_id: bytes) -> GroupView:
        with self.lock:
            state = self.engine.logs[group_id].state
            row = group_queries.get_group(conn, group_id)
            views = {
                key: self._member_view(conn, key, member, state)
                for key, member in state.members.items()
            }
        seniority = {key: index for index, key in enumerate(state.admins)}
        order = sorted(
            views,
            key=lambda key: (
                key not in seniority,
                seniority.get(key, 0),
                views[key].name.casefold(),
            ),
        )
        members = [views[key] for key in order]
        return GroupView(
            group_id=group_hex(group_id),
            name=state.name,
            avatar=state.avatar,
            my_role=row.my_role if row else my_role(state, self._me),
            members=members,
            version=state.version,
            created_at_ms=row.created_at if row else 0,
        )

    def _member_view(
        self, conn: Connection, key: bytes, member: Member, state: GroupState
    ) -> GroupMemberView:
        person = self.engine.person(conn, key)
        is_contact = person is not None and not person.group_only and key != self._me
        name = person.name if is_contact and person is not None else member.display_name
        return GroupMemberView(
            identity_id=identity_id_from_public_key(key),
            name=name,
            role=member.role.value,
            is_me=key == self._me,
            is_contact=is_contact,
            devices=len(person.devices) if person else 0,
            added_by=identity_id_from_public_key(member.added_by),
            added_at_ms=member.added_at,
        )

    async def _find(self, reference: str) -> bytes:
        wanted = reference.strip()
        if not wanted:
            raise GroupsError("invalid", "name a group")
        rows = await self._store.read(group_queries.list_groups)
        by_id = [
            r for r in rows if len(wanted) >= 4 and r.group_id.hex().startswith(wanted.lower())
        ]
        if len(by_id) == 1:
            return by_id[0].group_id
        by_name = [r for r in rows if r.name.casefold() == wanted.casefold()]
        if len(by_name) == 1:
            return by_name[0].group_id
        if len(by_id) > 1 or len(by_name) > 1:
            raise GroupsError("invalid", f"{reference!r} matches several groups; use the id")
        raise GroupsError("not_found", f"no group {reference!r}")

    def _find_member(self, conn: Connection, group_id: bytes, reference: str) -> bytes:
        wanted = reference.strip()
        with self.lock:
            state = self.engine.logs[group_id].state
            views = {
                key: self._member_view(conn, key, member, state)
                for key, member in state.members.items()
            }
        by_id = [
            key
            for key, view in views.items()
            if len(wanted) >= 6 and view.identity_id.startswith(wanted.lower())
        ]
        if len(by_id) == 1:
            return by_id[0]
        by_name = [key for key, view in views.items() if view.name.casefold() == wanted.casefold()]
        if len(by_name) == 1:
            return by_name[0]
        if len(by_id) > 1 or len(by_name) > 1:
            raise GroupsError("invalid", f"{reference!r} matches several members; use the id")
        raise GroupsError("not_found", f"no member {reference!r} in this group")

    # -- membership ----------------------------------------------------------------------------

    async def create(self, name: str, avatar: str, members: Sequence[str]) -> GroupView:
        contacts = [await self._contact(reference) for reference in members]
        if len({c.identity_key for c in contacts}) + 1 > MAX_MEMBERS:
            raise GroupsError("invalid", f"a group has at most {MAX_MEMBERS} members")
        now = now_ms()
        try:
            group_log, _genesis = GroupLog.create(
                self.engine.identity_signing_key,
                name.strip(),
                avatar.strip(),
                now,
                display_name=self._display_name()[:64] or "me",
            )
        except (GroupError, ValueError) as error:
            raise GroupsError("invalid", str(error)) from None

        def write(conn: Connection, effects: Effects) -> None:
            self.engine.new_group(conn, group_log, now)
            self.engine.announce_change(conn, group_log, None, now, effects)
            added = self._author_adds(conn, group_log, contacts, now)
            self.engine.distribute_ops(
                conn, group_log, group_log.ops(), now, effects, welcome=added
            )

        await self._write(write)
        return await self.show(group_log.group_id.hex())

    def _author_adds(
        self, conn: Connection, group_log: GroupLog, contacts: Sequence[ContactRow], now: int
    ) -> list[bytes]:
        added = []
        for contact in contacts:
            if group_log.state.is_member(contact.identity_key):
                continue
            op = Add(member=contact.identity_key, display_name=contact.display_name[:64] or "?")
            signed = group_log.author_op(self.engine.identity_signing_key, op, now)
            self.engine.store_ops(conn, group_log, [signed], now)
            added.append(contact.identity_key)
        return added

    async def _contact(self, reference: str) -> ContactRow:
        contacts = await self._store.read(contact_queries.list_contacts)
        wanted = reference.strip()
        by_id = [
            c
            for c in contacts
            if len(wanted) >= 6
            and identity_id_from_public_key(c.identity_key).startswith(wanted.lower())
        ]
        by_name = [
            c
            for c in contacts
            if wanted.casefold() in (c.name.casefold(), c.display_name.casefold())
        ]
        found = by_id if len(by_id) == 1 else by_name
        if len(found) != 1:
            if len(by_id) > 1 or len(by_name) > 1:
                raise GroupsError("invalid", f"{reference!r} matches several contacts")
            raise GroupsError("not_found", f"no contact {reference!r}")
        if found[0].blocked:
            raise GroupsError("refused", f"{found[0].name} is blocked")
        return found[0]

    async def add(self, group: str, contact: str) -> GroupView:
        group_id = await self._find(group)
        person = await self._contact(contact)
        now = now_ms()

        def write(conn: Connection, effects: Effects) -> None:
            group_log = self.engine.logs[group_id]
            before = group_log.state
            if before.is_member(person.identity_key):
                raise GroupsError("conflict", f"{person.name} is in the group already")
            full = self.engine.cap_refusal(conn, group_id, len(person.devices))
            if full is not None:
                raise GroupsError("refused", full)
            added = self._guarded(lambda: self._author_adds(conn, group_log, [person], now))
            new_ops = group_log.ops()[-len(added) :] if added else []
            self.engine.distribute_ops(conn, group_log, new_ops, now, effects, welcome=added)
            self.engine.announce_change(conn, group_log, before, now, effects)

        await self._write(write)
        return await self.show(group_id.hex())

    async def remove(self, group: str, member: str) -> GroupView:
        group_id = await self._find(group)
        key = await self._store.read(lambda conn: self._find_member(conn, group_id, member))
        if key == self._me:
            return await self.leave(group_id.hex())
        return await self._author(group_id, Remove(member=key), also=[key])

    async def leave(self, group: str) -> GroupView:
        group_id = await self._find(group)
        return await self._author(group_id, Leave())

    async def promote(self, group: str, member: str) -> GroupView:
        group_id = await self._find(group)
        key = await self._store.read(lambda conn: self._find_member(conn, group_id, member))
        return await self._author(group_id, Promote(member=key))

    async def demote(self, group: str, member: str) -> GroupView:
        group_id = await self._find(group)
        key = await self._store.read(lambda conn: self._find_member(conn, group_id, member))
        return await self._author(group_id, Demote(member=key))

    async def rename(self, group: str, name: str, avatar: str | None) -> GroupView:
        group_id = await self._find(group)
        with self.lock:
            current = self.engine.logs[group_id].state.avatar
        return await self._author(
            group_id,
            Rename(name=name.strip(), avatar=current if avatar is None else avatar.strip()),
        )

    async def _author(self, group_id: bytes, op: GroupOp, also: Sequence[bytes] = ()) -> GroupView:
        now = now_ms()

        def write(conn: Connection, effects: Effects) -> None:
            group_log = self.engine.logs[group_id]
            before = group_log.state
            signed = self._guarded(
                lambda: group_log.author_op(self.engine.identity_signing_key, op, now)
            )
            if isinstance(op, Leave):
                row = group_queries.get_group(conn, group_id)
                assert row is not None
                group_queries.update_group(
                    conn,
                    group_id,
                    name=row.name,
                    avatar=row.avatar,
                    my_role="left",
                    version=row.version,
                    now_ms=now,
                )
            self.engine.store_ops(conn, group_log, [signed], now)
            leaving = [self._me] if isinstance(op, Leave) else []
            self.engine.distribute_ops(
                conn, group_log, [signed], now, effects, also=[*also, *before.members, *leaving]
            )
            self.engine.announce_change(conn, group_log, before, now, effects)
            if not group_log.state.is_member(self._me):
                group_queries.delete_outbound(conn, group_id)

        await self._write(write)
        return await self.show(group_id.hex())

    @staticmethod
    def _guarded(fn: Callable[[], _T]) -> _T:
        try:
            return fn()
        except GroupError as error:
            raise GroupsError("refused", str(error)) from None
        except ValueError as error:
            raise GroupsError("invalid", str(error)) from None

    # -- messages ------------------------------------------------------------------------------

    async def send(self, group: str, text: str) -> MessageView:
        try:
            check_text(text)
        except PayloadError as error:
            raise GroupsError("invalid", str(error)) from None
        group_id = await self._find(group)
        now = now_ms()
        rows: list[MessageRow] = []

        def write(conn: Connection, effects: Effects) -> None:
            if not self.engine.logs[group_id].state.is_member(self._me):
                raise GroupsError("refused", "you are no longer a member of this group")
            rows.append(self.engine.seal_message(conn, group_id, text, now, effects))

        await self._write(write)
        return message_view(rows[0], group_id)

    async def messages(self, group: str, limit: int, before: str | None) -> MessagePage:
        if not 1 <= limit <= MAX_PAGE:
            raise GroupsError("invalid", f"limit must be between 1 and {MAX_PAGE}")
        cursor = None
        if before is not None:
            try:
                cursor = Cursor.decode(before)
            except ValueError as error:
                raise GroupsError("invalid", f"bad cursor: {error}") from None
        group_id = await self._find(group)

        def read(conn: Connection) -> tuple[list[MessageRow], int, str]:
            row = group_queries.get_group(conn, group_id)
            conversation = message_queries.get_conversation(conn, group_id)
            if conversation is None:
                return [], 0, row.name if row else ""
            rows = message_queries.page(conn, conversation.id, limit + 1, cursor)
            return rows, conversation.unread, row.name if row else ""

        rows, unread, name = await self._store.read(read)
        more = len(rows) > limit
        rows = rows[-limit:] if more else rows
        return MessagePage(
            conversation_id=group_hex(group_id),
            name=name,
            messages=[message_view(row, group_id) for row in rows],
            unread=unread,
            before=message_queries.cursor_of(rows[0]).encode() if more and rows else None,
        )

    async def mark_read(self, group: str) -> int:
        group_id = await self._find(group)
        count = [0]

        def write(conn: Connection, effects: Effects) -> None:
            conversation = message_queries.get_conversation(conn, group_id)
            if conversation is None or conversation.unread == 0:
                return
            unread = message_queries.unread_messages(conn, conversation.id)
            newest = message_queries.mark_read(conn, conversation.id, now_ms())
            count[0] = conversation.unread
            now = now_ms()
            by_sender: dict[bytes, list[bytes]] = {}
            for row in unread:
                by_sender.setdefault(row.sender_identity, []).append(row.message_id)
            for sender, ids in by_sender.items():
                for start in range(0, len(ids), MAX_RECEIPT_IDS):
                    receipt = GroupReceipt(
                        group_id=group_id,
                        message_ids=ids[start : start + MAX_RECEIPT_IDS],
                        read=True,
                    )
                    effects.kick.update(
                        self._messaging.compose_for_groups(conn, sender, receipt, now, None)
                    )
            if newest is not None:
                copy = GroupReadCopy(group_id=group_id, up_to=newest.message_id)
                effects.kick.update(
                    self._messaging.compose_for_groups(conn, self._me, copy, now, None)
                )

        await self._write(write)
        return count[0]

    async def _send_owed_receipts(self) -> None:
        while True:
            await trio.sleep(RECEIPT_COALESCE_SECONDS)
            self._receipts_owed = trio.Event()

            def write(conn: Connection, effects: Effects) -> None:
                now = now_ms()
                for (group_id, sender), ids in group_queries.take_owed_receipts(conn).items():
                    for start in range(0, len(ids), MAX_RECEIPT_IDS):
                        receipt = GroupReceipt(
                            group_id=group_id, message_ids=ids[start : start + MAX_RECEIPT_IDS]
                        )
                        effects.kick.update(
                            self._messaging.compose_for_groups(conn, sender, receipt, now, None)
                        )

            await self._write(write)
            await self._receipts_owed.wait()

    def apply_receipt(
        self, conn: Connection, sender: ContactRow, body: GroupReceipt, now: int, effects: Effects
    ) -> None:
        """A member's delivery or read receipt for messages of mine."""
        with self.lock:
            group_log = self.engine.logs.get(body.group_id)
            if group_log is None:
                return
            state = group_log.state
            others = [k for k in state.members if k != self._me]
        if sender.identity_key not in state.members:
            raise GroupRefusal(DropReason.NOT_CONTACT)
        changed: dict[str, list[str]] = {}
        conversation = message_queries.get_conversation(conn, body.group_id)
        if conversation is None:
            return
        for message_id in body.message_ids:
            mine = message_queries.get_message(conn, message_id)
            if mine is None or not mine.outgoing or mine.sender_identity != self._me:
                continue
            if mine.conversation_id != conversation.id:
                continue
            group_queries.set_receipt(
                conn, message_id, sender.identity_key, "read" if body.read else "delivered", now
            )
            receipts = group_queries.receipts_for(conn, message_id)
            all_read = all(receipts.get(k, ("", 0))[0] == "read" for k in others)
            state_now = "read" if all_read else "delivered"
            row = group_queries.upgrade_message_state(conn, message_id, state_now, now)
            if row is not None:
                changed.setdefault(row.state, []).append(message_id.hex())
        for new_state, ids in changed.items():
            effects.events.append(
                GroupMessageStateChanged(
                    at_ms=now, group_id=group_hex(body.group_id), message_ids=ids, state=new_state
                )
            )

    def apply_read_copy(self, conn: Connection, body: GroupReadCopy, now: int) -> None:
        conversation = message_queries.get_conversation(conn, body.group_id)
        if conversation is not None and conversation.unread:
            message_queries.mark_read_here_up_to(conn, conversation.id, body.up_to, now)

    async def receipts(self, group: str, message_id: str) -> GroupMessageReceipts:
        group_id = await self._find(group)
        try:
            message_key = bytes.fromhex(message_id)
        except ValueError:
            raise GroupsError("invalid", "a message id is 32 hex characters") from None

        def read(conn: Connection) -> GroupMessageReceipts:
            row = message_queries.get_message(conn, message_key)
            conversation = message_queries.get_conversation(conn, group_id)
            if row is None or conversation is None or row.conversation_id != conversation.id:
                raise GroupsError("not_found", f"no message {message_id} in this group")
            if not row.outgoing:
                raise GroupsError("invalid", "receipts are kept for your own messages")
            receipts = group_queries.receipts_for(conn, message_key)
            with self.lock:
                state = self.engine.logs[group_id].state
                views = [
                    self._member_view(conn, key, member, state)
                    for key, member in state.members.items()
                    if key != self._me
                ]
            result = []
            for view in sorted(views, key=lambda v: v.name.casefold()):
                key = _key_of(view.identity_id, state)
                got = receipts.get(key) if key is not None else None
                result.append(
                    GroupReceiptView(
                        identity_id=view.identity_id,
                        name=view.name,
                        state=got[0] if got else "pending",
                        at_ms=got[1] if got else None,
                    )
                )
            return GroupMessageReceipts(
                group_id=group_hex(group_id), message_id=message_id, receipts=result
            )

        return await self._store.read(read)

    # -- invites by code ------------------------------------------------------------------------

    async def create_invite(
        self, group: str, uses: int, ttl_seconds: int, approval: bool
    ) -> GroupInviteCreated:
        return await self.invites.create(await self._find(group), uses, ttl_seconds, approval)

    async def join(self, code: str) -> GroupJoinResult:
        joined = await self.invites.join(code)
        if not joined.admitted:
            return GroupJoinResult(state="waiting", group=None)
        return GroupJoinResult(state="joined", group=await self.show(joined.group_id.hex()))

    async def join_requests(self) -> list[GroupJoinRequestView]:
        return await self.invites.requests()

    async def answer_join(self, request_id: str, accept: bool) -> GroupView | None:
        group_id = await self.invites.answer(request_id, accept)
        return await self.show(group_id.hex()) if group_id is not None else None

    # -- catching up ---------------------------------------------------------------------------

    def _sync_lookup(self, group_id: bytes) -> SyncGroup | None:
        with self.lock:
            group_log = self.engine.logs.get(group_id)
            if group_log is None or not group_log.state.is_member(self._me):
                return None
            copy = _copy_log(group_log)
            copies = self._responder_copies.setdefault(group_id, [])
            copies.append(copy)
            del copies[:-4]  # exchanges that accepted nothing never come back for theirs
            members = frozenset(group_log.state.members)
        device_owners = self._device_owners

        def is_member_device(peer_id: str) -> bool:
            return device_owners.get(peer_id) in members

        return SyncGroup(log=copy, is_member_device=is_member_device)

    async def refresh_device_owners(self) -> None:
        def read(conn: Connection) -> dict[str, bytes]:
            owners: dict[str, bytes] = {}
            people = [*contact_queries.list_known_people(conn)]
            mine = contact_queries.get_self(conn)
            if mine is not None:
                people.append(mine)
            for person in people:
                for device in person.devices:
                    owners[device.peer_id] = person.identity_key
            return owners

        self._device_owners = await self._store.read(read)

    async def _synced(self, report: SyncReport) -> None:
        copies = self._responder_copies.pop(report.group_id, [])
        await self._merge(report.group_id, [op for copy in copies for op in copy.ops()])

    async def _merge(self, group_id: bytes, ops: Sequence[SignedGroupOp]) -> None:
        now = now_ms()

        def write(conn: Connection, effects: Effects) -> None:
            group_log = self.engine.logs.get(group_id)
            if group_log is None:
                return
            before = group_log.state
            results = group_log.add_all(ops)
            self.engine.store_ops(conn, group_log, stored_by(group_log, results), now)
            self.engine.announce_change(conn, group_log, before, now, effects)

        await self._write(write)

    async def sync(self, group: str) -> GroupSyncResult:
        """Catch up now: from the member devices connected, else from all of them at once; the
        first exchange that completes answers (the others are cancelled)."""
        group_id = await self._find(group)
        devices = await self._store.read(lambda conn: self._member_device_ids(conn, group_id))
        candidates = [d for d in devices if self._net.is_connected(d)] or devices
        answers: list[tuple[int, int]] = []

        async def attempt(peer_id: str, cancel_scope: trio.CancelScope) -> None:
            try:
                answers.append(await self._catch_up(group_id, peer_id))
            except Exception as error:  # unreachable, refused, broken: another may answer
                log.info("group catch-up from %s failed: %r", peer_id, error)
                return
            cancel_scope.cancel()

        async with trio.open_nursery() as nursery:
            for peer_id in candidates[:SYNC_CANDIDATES]:
                nursery.start_soon(attempt, peer_id, nursery.cancel_scope)
        if not answers:
            raise GroupsError("unreachable", "no member device of this group answered")
        ops, messages = answers[0]
        return GroupSyncResult(group_id=group_hex(group_id), ops=ops, messages=messages)

    def _member_device_ids(self, conn: Connection, group_id: bytes) -> list[str]:
        with self.lock:
            state = self.engine.logs[group_id].state
            return [r.peer_id for r in self.engine.member_devices(conn, state)]

    async def _catch_up(self, group_id: bytes, peer_id: str) -> tuple[int, int]:
        with self.lock:
            copy = _copy_log(self.engine.logs[group_id])
        try:
            report = await sync_group(self._net, peer_id, copy)
        finally:
            await self._merge(group_id, copy.ops())
        messages = await self._fetch_history(group_id, peer_id)
        return len(report.accepted), messages

    async def _fetch_history(self, group_id: bytes, peer_id: str) -> int:
        """Fetch the group messages this device lacks from the member device `peer_id`."""

        def device_key(conn: Connection) -> bytes | None:
            person = contact_queries.contact_for_peer(
                conn, peer_id, include_self=True, include_group_only=True
            )
            device = (
                next((d for d in person.devices if d.peer_id == peer_id), None) if person else None
            )
            return device.device_key if device else None

        via = await self._store.read(device_key)
        if via is None:
            return 0
        backend = HistoryRequesterBackend(self._store, self.engine, self.lock, via, self.committed)
        try:
            await fetch_history(self._net, peer_id, group_id, 0, backend)
        except HistoryError as error:
            log.info("group history from %s: %s (%d taken)", peer_id, error, backend.accepted)
        return backend.accepted

    async def _catch_up_quietly(self, group_id: bytes, peer_id: str) -> None:
        now = trio.current_time()
        if now - self._last_sync.get(peer_id, -SYNC_INTERVAL_SECONDS) < SYNC_INTERVAL_SECONDS:
            return
        self._last_sync[peer_id] = now
        with contextlib.suppress(Exception):
            await self._catch_up(group_id, peer_id)

    async def on_connected(self, peer_id: str) -> None:
        """A device connected: catch up on the groups we share with it."""
        await self.refresh_device_owners()
        owner = self._device_owners.get(peer_id)
        if owner is None:
            return
        with self.lock:
            shared = [
                group_id
                for group_id, group_log in self.engine.logs.items()
                if group_log.state.is_member(owner) and group_log.state.is_member(self._me)
            ]
        for group_id in shared:
            await self._catch_up_quietly(group_id, peer_id)


def _copy_log(group_log: GroupLog) -> GroupLog:
    copy = GroupLog.from_genesis(group_log.genesis)
    copy.add_all(op for op in group_log.ops() if op is not group_log.genesis)
    return copy


def _key_of(identity_id: str, state: GroupState) -> bytes | None:
    for key in state.members:
        if identity_id_from_public_key(key) == identity_id:
            return key
    return None


__all__ = ["Groups", "GroupsError", "Role"]
