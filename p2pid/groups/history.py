"""The node's two ends of `/p2pid/group-history/1`: serving the group messages this device keeps
to member devices that missed them, and taking what another member serves.

A responder serves only current member devices, and to another person's device only messages
sent since that person was added (their `add` op's time): a newcomer gets no earlier history by
asking a member instead of the sender. Forwarded keys start at the first index served."""

from __future__ import annotations

import threading
from collections.abc import Callable

from p2pid.events import now_ms
from p2pid.groups.engine import Effects, GroupEngine, GroupRefusal
from p2pid.store import contacts as contact_queries
from p2pid.store import groups as group_queries
from p2pid.store.db import Connection
from p2pid.store.trio_store import TrioStore
from p2pid.wire.group_history import (
    Cursor,
    HistoryItem,
    IdEntry,
    IdsPage,
    RefusalReason,
)
from p2pid.wire.groups import Add, GroupOpBody

Commit = Callable[[Effects], None]


class HistoryResponderBackend:
    def __init__(self, store: TrioStore, engine: GroupEngine, lock: threading.RLock) -> None:
        self._store = store
        self._engine = engine
        self._lock = lock

    def _since(self, conn: Connection, peer_id: str, group_id: bytes) -> int | RefusalReason:
        """The earliest send time this device may be served, or why it is refused."""
        with self._lock:
            group_log = self._engine.logs.get(group_id)
            if group_log is None or not group_log.state.is_member(self._engine.me):
                return RefusalReason.UNKNOWN_GROUP
            person = contact_queries.contact_for_peer(
                conn, peer_id, include_self=True, include_group_only=True
            )
            member = group_log.state.members.get(person.identity_key) if person else None
            if person is None or member is None:
                return RefusalReason.NOT_MEMBER
            if person.identity_key == self._engine.me:
                return 0
            # The add op's time is the admin's word; when it reached this device is not.
            added = next(
                (
                    op_id
                    for op_id in reversed(group_log.order())
                    if isinstance(op := group_log.body(op_id), GroupOpBody)
                    and isinstance(op.op, Add)
                    and op.op.member == person.identity_key
                ),
                None,
            )
            stored = group_queries.op_received_at(conn, group_id, added) if added else None
            return max(member.added_at, stored or 0)

    async def page(
        self, peer_id: str, group_id: bytes, since_ms: int, after: Cursor | None, limit: int
    ) -> IdsPage | RefusalReason:
        def read(conn: Connection) -> IdsPage | RefusalReason:
            since = self._since(conn, peer_id, group_id)
            if isinstance(since, RefusalReason):
                return since
            cursor = (after.sent_at_ms, after.message_id) if after is not None else None
            ids = group_queries.envelope_ids(conn, group_id, max(since, since_ms), cursor, limit)
            entries = [IdEntry(message_id=m, sent_at_ms=t) for m, t in ids]
            last = entries[-1] if len(entries) == limit else None
            next_cursor = (
                Cursor(sent_at_ms=last.sent_at_ms, message_id=last.message_id) if last else None
            )
            return IdsPage(ids=entries, next=next_cursor)

        return await self._store.read(read)

    async def items(
        self, peer_id: str, group_id: bytes, ids: list[bytes]
    ) -> tuple[list[HistoryItem], list[bytes]] | RefusalReason:
        def read(conn: Connection) -> tuple[list[HistoryItem], list[bytes]] | RefusalReason:
            since = self._since(conn, peer_id, group_id)
            if isinstance(since, RefusalReason):
                return since
            rows = [
                r for r in group_queries.get_envelopes(conn, group_id, ids) if r.sent_at >= since
            ]
            first: dict[str, int] = {}
            for row in rows:
                first[row.session_id] = min(
                    first.get(row.session_id, row.message_index), row.message_index
                )
            with self._lock:
                keys = self._engine.forwarded_keys(conn, group_id, first)
            items = [
                HistoryItem(
                    message_id=row.message_id,
                    sender_identity=row.sender_identity,
                    sender_device_key=row.sender_device_key,
                    ciphertext=row.ciphertext,
                )
                for row in rows
            ]
            return items, keys

        return await self._store.read(read)


class HistoryRequesterBackend:
    def __init__(
        self,
        store: TrioStore,
        engine: GroupEngine,
        lock: threading.RLock,
        responder_device_key: bytes,
        committed: Commit,
    ) -> None:
        self._store = store
        self._engine = engine
        self._lock = lock
        self._via = responder_device_key
        self._committed = committed
        self.accepted = 0

    async def missing(self, ids: list[bytes]) -> list[bytes]:
        known = await self._store.read(lambda conn: group_queries.known_ids(conn, ids))
        return [i for i in ids if i not in known]

    async def take(self, items: list[HistoryItem], keys: list[bytes]) -> int:
        now = now_ms()

        def write(conn: Connection) -> tuple[int, Effects]:
            effects = Effects()
            accepted = 0
            with self._lock:
                for key in keys:
                    self._engine.take_forwarded_key(conn, key, self._via, now, effects)
                for item in items:
                    try:
                        row = self._engine.open_message(
                            conn,
                            item.message_id,
                            item.sender_identity,
                            item.sender_device_key,
                            item.ciphertext,
                            now,
                            effects,
                        )
                    except GroupRefusal:
                        continue
                    accepted += row is not None
            return accepted, effects

        accepted, effects = await self._store.write(write)
        self._committed(effects)
        self.accepted += accepted
        return accepted
