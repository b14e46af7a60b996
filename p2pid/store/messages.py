"""Typed queries for one-to-one conversations, their messages, the outbox, Olm sessions and
the de-duplication of received envelopes.

Plain functions over a Connection, like `contacts.py`: use them through `TrioStore.read` /
`TrioStore.write`. They never COMMIT, ROLLBACK or BEGIN; a function that writes more than one
statement runs in a SAVEPOINT. Times are integer milliseconds since the epoch.

A conversation's display order is (lamport, sent_at, message_id), ascending: every listing
and every "before" / "up to" below follows it.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import sqlcipher3.dbapi2 as sqlite

from p2pid.store.db import Connection, StoreError, check_blob, savepoint

IDENTITY_KEY_BYTES = 32
MESSAGE_ID_BYTES = 16

OUTGOING_STATES: frozenset[str] = frozenset({"pending", "delivered", "read", "failed"})
INCOMING_STATES: frozenset[str] = frozenset({"unread", "read"})
CONVERSATION_KINDS: tuple[str, ...] = ("direct", "group")
MESSAGE_KINDS: tuple[str, ...] = ("text", "file")  # "file": a file offered in the conversation

# Enough below SQLite's limit on bound parameters for any statement built here.
_CHUNK = 500


# --- errors -------------------------------------------------------------------------------


class InvalidSearchError(StoreError):
    """The search text is not a query FTS5 can run, even with each word quoted."""


class UnknownConversationError(StoreError):
    """No conversation has that id."""


class SessionOwnerError(StoreError):
    """An Olm session id is stored for another peer's Curve25519 key."""


# --- rows ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class MessageRow:
    rowid: int
    conversation_id: int
    peer_identity: bytes  # the conversation's contact
    message_id: bytes
    sender_identity: bytes
    sender_device: str  # a PeerId
    outgoing: bool
    kind: str
    body: str
    lamport: int
    sent_at: int
    received_at: int
    state: str  # outgoing: pending | delivered | read; incoming: unread | read
    state_at: int | None


@dataclass(frozen=True)
class NewMessage:
    """What `insert_message` stores."""

    message_id: bytes
    sender_identity: bytes
    sender_device: str
    outgoing: bool
    kind: str
    body: str
    lamport: int
    sent_at: int
    received_at: int
    state: str


@dataclass(frozen=True)
class ConversationRow:
    id: int
    peer_identity: bytes
    lamport: int
    unread: int
    created_at: int
    updated_at: int
    last_message: MessageRow | None  # the last in display order
    kind: str = "direct"  # direct (peer_identity: a contact) | group (peer_identity: a group id)


_CURSOR_TEXT = re.compile(rf"(\d+)\.(-?\d+)\.([0-9a-fA-F]{{{2 * MESSAGE_ID_BYTES}}})")


@dataclass(frozen=True)
class Cursor:
    """A position in a conversation for keyset pagination: a message's order key."""

    lamport: int
    sent_at: int
    message_id: bytes

    def __post_init__(self) -> None:
        check_blob(self.message_id, MESSAGE_ID_BYTES, "message id")

    def encode(self) -> str:
        """Opaque text for clients; `decode` reads it back."""
        return f"{self.lamport}.{self.sent_at}.{self.message_id.hex()}"

    @classmethod
    def decode(cls, text: str) -> Cursor:
        match = _CURSOR_TEXT.fullmatch(text) if isinstance(text, str) else None
        if match is None:
            raise ValueError(
                f"not a message cursor: {text!r} (expected LAMPORT.SENT_AT.MESSAGE_ID_HEX)"
            )
        lamport, sent_at, message_id = match.groups()
        return cls(int(lamport), int(sent_at), bytes.fromhex(message_id))


def cursor_of(message: MessageRow) -> Cursor:
    return Cursor(message.lamport, message.sent_at, message.message_id)


# --- conversations ------------------------------------------------------------------------


def conversation_id_for(
    conn: Connection, peer_identity: bytes, now_ms: int, kind: str = "direct"
) -> int:
    """The id of the conversation with `peer_identity` (a contact, or a group id for a 'group'
    conversation), created (empty, of that kind) if there is none. A stored one keeps its kind."""
    check_blob(peer_identity, IDENTITY_KEY_BYTES, "peer identity key")
    if kind not in CONVERSATION_KINDS:
        raise ValueError(
            f"unknown conversation kind {kind!r}; expected one of {CONVERSATION_KINDS}"
        )
    row = conn.execute(
        "SELECT id FROM conversations WHERE peer_identity = ?", (peer_identity,)
    ).fetchone()
    if row is None:
        # kind is named only for a group: a database before migration 6 takes a direct one too
        kind_column = (", kind", ", 'group'") if kind == "group" else ("", "")
        row = conn.execute(
            f"INSERT INTO conversations (peer_identity, created_at, updated_at{kind_column[0]})"
            f" VALUES (?, ?, ?{kind_column[1]}) RETURNING id",
            (peer_identity, now_ms, now_ms),
        ).fetchone()
    return int(row[0])


def get_conversation(conn: Connection, peer_identity: bytes) -> ConversationRow | None:
    rows = _select_conversations(conn, "WHERE c.peer_identity = ?", (peer_identity,))
    return rows[0] if rows else None


def list_conversations(conn: Connection, limit: int = 500) -> list[ConversationRow]:
    """Conversations, most recently updated first."""
    _check_limit(limit)
    return _select_conversations(conn, "ORDER BY c.updated_at DESC, c.id DESC LIMIT ?", (limit,))


def next_lamport(conn: Connection, conversation_id: int) -> int:
    """Advance the conversation's Lamport clock by one and return it, for a message I send."""
    row = conn.execute(
        "UPDATE conversations SET lamport = lamport + 1 WHERE id = ? RETURNING lamport",
        (conversation_id,),
    ).fetchone()
    if row is None:
        raise UnknownConversationError(f"no conversation {conversation_id}")
    return int(row[0])


# --- messages -----------------------------------------------------------------------------


def insert_message(
    conn: Connection, conversation_id: int, message: NewMessage
) -> MessageRow | None:
    """Store a message; None, changing nothing, if its message_id is already stored.

    The conversation's clock moves up to the message's lamport, its updated_at up to the
    message's received_at, and an incoming 'unread' message counts one more unread.
    """
    _check_new_message(message)
    unread = int(not message.outgoing and message.state == "unread")
    with savepoint(conn, "insert_message"):
        conversation = conn.execute(
            "SELECT peer_identity FROM conversations WHERE id = ?", (conversation_id,)
        ).fetchone()
        if conversation is None:
            raise UnknownConversationError(f"no conversation {conversation_id}")
        inserted = conn.execute(
            "INSERT INTO messages (conversation_id, message_id, sender_identity, sender_device,"
            " outgoing, kind, body, lamport, sent_at, received_at, state)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
            " ON CONFLICT (message_id) DO NOTHING RETURNING id",
            (
                conversation_id,
                message.message_id,
                message.sender_identity,
                message.sender_device,
                int(message.outgoing),
                message.kind,
                message.body,
                message.lamport,
                message.sent_at,
                message.received_at,
                message.state,
            ),
        ).fetchone()
        if inserted is None:
            return None
        conn.execute(
            "UPDATE conversations SET lamport = max(lamport, ?), updated_at = max(updated_at, ?),"
            " unread = unread + ? WHERE id = ?",
            (message.lamport, message.received_at, unread, conversation_id),
        )
    return MessageRow(
        rowid=int(inserted[0]),
        conversation_id=conversation_id,
        peer_identity=bytes(conversation[0]),
        message_id=message.message_id,
        sender_identity=message.sender_identity,
        sender_device=message.sender_device,
        outgoing=message.outgoing,
        kind=message.kind,
        body=message.body,
        lamport=message.lamport,
        sent_at=message.sent_at,
        received_at=message.received_at,
        state=message.state,
        state_at=None,
    )


@contextlib.contextmanager
def search_index_deferred(conn: Connection) -> Iterator[None]:
    """Insert many messages without indexing each one for search; the index is rebuilt once at
    the end (ten times faster for a copied history). Use inside a transaction."""
    (trigger,) = conn.execute(
        "SELECT sql FROM sqlite_master WHERE type = 'trigger' AND name = 'messages_fts_insert'"
    ).fetchone()
    conn.execute("DROP TRIGGER messages_fts_insert")
    yield
    conn.execute(str(trigger))
    conn.execute("INSERT INTO messages_fts (messages_fts) VALUES ('rebuild')")


def messages_since(
    conn: Connection, since_ms: int, after_rowid: int, limit: int
) -> list[MessageRow]:
    """Messages received at or after `since_ms`, by storage order after `after_rowid` (for
    copying a history page by page)."""
    return _select_messages(
        conn,
        "WHERE m.id > ? AND m.received_at >= ? ORDER BY m.id LIMIT ?",
        (after_rowid, since_ms, limit),
    )


def get_message(conn: Connection, message_id: bytes) -> MessageRow | None:
    rows = _select_messages(conn, "WHERE m.message_id = ?", (message_id,))
    return rows[0] if rows else None


def page(
    conn: Connection, conversation_id: int, limit: int, before: Cursor | None = None
) -> list[MessageRow]:
    """The `limit` messages just before `before` (or the newest ones), oldest first."""
    _check_limit(limit)
    where = "WHERE m.conversation_id = ?"
    parameters: tuple[object, ...] = (conversation_id,)
    if before is not None:
        where += " AND (m.lamport, m.sent_at, m.message_id) < (?, ?, ?)"
        parameters += (before.lamport, before.sent_at, before.message_id)
    rows = _select_messages(
        conn,
        f"{where} ORDER BY m.lamport DESC, m.sent_at DESC, m.message_id DESC LIMIT ?",
        (*parameters, limit),
    )
    rows.reverse()
    return rows


def search(
    conn: Connection, query: str, conversation_id: int | None = None, limit: int = 50
) -> list[MessageRow]:
    """Messages whose body matches `query`, newest stored first (highest rowid).

    `query` is FTS5 syntax (words, "phrases", prefix*, AND / OR / NOT, NEAR); text that does
    not parse is searched again with each whitespace-separated word quoted (a trailing * kept
    as a prefix search), so plain text works. InvalidSearchError if neither runs.
    """
    _check_limit(limit)
    if not query.strip():
        raise InvalidSearchError("the search is empty")
    sql = (
        f"SELECT {_MESSAGE_COLUMNS} FROM messages_fts f"
        # CROSS JOIN keeps the full-text index the outer loop (newest match first, stop at
        # `limit`); otherwise SQLite may walk the conversation and probe the index per message.
        " CROSS JOIN messages m ON m.id = f.rowid"
        " JOIN conversations c ON c.id = m.conversation_id"
        " WHERE messages_fts MATCH ?"
    )
    parameters: tuple[object, ...] = ()
    if conversation_id is not None:
        sql += " AND m.conversation_id = ?"
        parameters = (conversation_id,)
    sql += " ORDER BY f.rowid DESC LIMIT ?"
    if _self_contained(query):
        try:
            expression = _match_expression(query, conversation_id)
            return _search_once(conn, sql, (expression, *parameters, limit))
        except InvalidSearchError:
            pass
    expression = _match_expression(_quote_words(query), conversation_id)
    try:
        return _search_once(conn, sql, (expression, *parameters, limit))
    except InvalidSearchError as exc:
        raise InvalidSearchError(f"cannot search for {query!r}: {exc}") from None


def unread_messages(conn: Connection, conversation_id: int) -> list[MessageRow]:
    """The conversation's unread incoming messages, in display order."""
    return _select_messages(
        conn,
        "WHERE m.conversation_id = ? AND m.state = 'unread'"
        " ORDER BY m.lamport, m.sent_at, m.message_id",
        (conversation_id,),
    )


def mark_read(conn: Connection, conversation_id: int, now_ms: int) -> MessageRow | None:
    """Mark every unread incoming message of the conversation read; its unread count is 0.

    Returns the newest incoming message in display order (what a read receipt names) if any
    message changed, else None.
    """
    with savepoint(conn, "mark_read"):
        changed = conn.execute(
            "UPDATE messages INDEXED BY messages_unread SET state = 'read', state_at = ?"
            " WHERE conversation_id = ? AND state = 'unread' RETURNING id",
            (now_ms, conversation_id),
        ).fetchall()
        conn.execute(
            "UPDATE conversations SET unread = 0 WHERE id = ? AND unread <> 0", (conversation_id,)
        )
    if not changed:
        return None
    newest = _select_messages(
        conn,
        "WHERE m.conversation_id = ? AND m.outgoing = 0"
        " ORDER BY m.lamport DESC, m.sent_at DESC, m.message_id DESC LIMIT 1",
        (conversation_id,),
    )
    return newest[0] if newest else None


def mark_read_here_up_to(conn: Connection, conversation_id: int, up_to: bytes, now_ms: int) -> int:
    """Mark unread incoming messages read up to and including `up_to` in display order (another
    device of mine read that far). Messages after it stay unread. Returns how many changed;
    0 if `up_to` is not stored here (yet)."""
    anchor = get_message(conn, up_to)
    if anchor is None or anchor.conversation_id != conversation_id:
        return 0
    with savepoint(conn, "mark_read_here_up_to"):
        changed = conn.execute(
            "UPDATE messages INDEXED BY messages_unread SET state = 'read', state_at = ?"
            " WHERE conversation_id = ? AND state = 'unread'"
            " AND (lamport, sent_at, message_id) <= (?, ?, ?) RETURNING id",
            (now_ms, conversation_id, anchor.lamport, anchor.sent_at, anchor.message_id),
        ).fetchall()
        conn.execute(
            "UPDATE conversations SET unread = max(0, unread - ?) WHERE id = ?",
            (len(changed), conversation_id),
        )
    return len(changed)


def mark_delivered(
    conn: Connection, message_ids: Sequence[bytes], by_identity: bytes, now_ms: int
) -> list[MessageRow]:
    """Pending (or failed) outgoing messages of the conversation with `by_identity` ->
    'delivered'.

    Ids of other conversations, incoming messages and messages past 'pending' are ignored.
    Returns the changed messages in display order.
    """
    ids = list(dict.fromkeys(message_ids))
    for message_id in ids:
        check_blob(message_id, MESSAGE_ID_BYTES, "message id")
    changed: list[MessageRow] = []
    with savepoint(conn, "mark_delivered"):
        for chunk in _chunks(ids):
            marks = ", ".join("?" * len(chunk))
            changed += _update_messages(
                conn,
                "UPDATE messages SET state = 'delivered', state_at = ?"
                f" WHERE message_id IN ({marks}) AND outgoing = 1"
                " AND state IN ('pending', 'failed')"
                " AND conversation_id = (SELECT id FROM conversations WHERE peer_identity = ?)",
                (now_ms, *chunk, by_identity),
                by_identity,
            )
    return _in_display_order(changed)


def mark_read_up_to(
    conn: Connection, up_to: bytes, by_identity: bytes, now_ms: int
) -> list[MessageRow]:
    """Outgoing messages at or before `up_to` (display order), pending or delivered -> 'read'.

    `up_to` must be an outgoing message of the conversation with `by_identity`; otherwise
    nothing changes. Returns the changed messages in display order.
    """
    check_blob(up_to, MESSAGE_ID_BYTES, "message id")
    target = conn.execute(
        "SELECT conversation_id, lamport, sent_at FROM messages"
        " WHERE message_id = ? AND outgoing = 1"
        " AND conversation_id = (SELECT id FROM conversations WHERE peer_identity = ?)",
        (up_to, by_identity),
    ).fetchone()
    if target is None:
        return []
    conversation_id, lamport, sent_at = int(target[0]), int(target[1]), int(target[2])
    changed = _update_messages(
        conn,
        "UPDATE messages INDEXED BY messages_outgoing_unread SET state = 'read', state_at = ?"
        " WHERE conversation_id = ? AND outgoing = 1 AND state <> 'read'"
        " AND (lamport, sent_at, message_id) <= (?, ?, ?)",
        (now_ms, conversation_id, lamport, sent_at, up_to),
        by_identity,
    )
    return _in_display_order(changed)


def mark_failed_if_undeliverable(
    conn: Connection, message_id: bytes, now_ms: int
) -> MessageRow | None:
    """A pending outgoing message none of whose envelopes is left in the outbox (every device
    refused it) -> 'failed'. The changed message, or None."""
    check_blob(message_id, MESSAGE_ID_BYTES, "message id")
    if conn.execute("SELECT 1 FROM outbox WHERE message_id = ?", (message_id,)).fetchone():
        return None
    row = conn.execute(
        "SELECT c.peer_identity FROM messages m JOIN conversations c ON c.id = m.conversation_id"
        " WHERE m.message_id = ? AND m.outgoing = 1 AND m.state = 'pending'",
        (message_id,),
    ).fetchone()
    if row is None:
        return None
    [changed] = _update_messages(
        conn,
        "UPDATE messages SET state = 'failed', state_at = ? WHERE message_id = ?",
        (now_ms, message_id),
        bytes(row[0]),
    )
    return changed


# --- the outbox ---------------------------------------------------------------------------


@dataclass(frozen=True)
class NewOutboxEntry:
    message_id: bytes
    recipient_identity: bytes
    recipient_device: str  # a PeerId
    payload: bytes = field(repr=False)  # plaintext, to re-encrypt under a new session
    envelope: bytes = field(repr=False)  # encrypted, sent as is on every retry
    session_id: str
    created_at: int


@dataclass(frozen=True)
class OutboxEntry:
    id: int
    message_id: bytes
    recipient_identity: bytes
    recipient_device: str
    payload: bytes = field(repr=False)
    envelope: bytes = field(repr=False)
    session_id: str
    created_at: int
    attempts: int


def enqueue(conn: Connection, entry: NewOutboxEntry) -> int:
    """Queue an envelope for a device; returns its id.

    The same message for the same device is queued once: enqueuing it again changes nothing
    and returns the id of the entry already queued.
    """
    check_blob(entry.message_id, MESSAGE_ID_BYTES, "message id")
    check_blob(entry.recipient_identity, IDENTITY_KEY_BYTES, "recipient identity key")
    with savepoint(conn, "enqueue"):
        row = conn.execute(
            "INSERT INTO outbox (message_id, recipient_identity, recipient_device, payload,"
            " envelope, session_id, created_at) VALUES (?, ?, ?, ?, ?, ?, ?)"
            " ON CONFLICT (message_id, recipient_device) DO NOTHING RETURNING id",
            (
                entry.message_id,
                entry.recipient_identity,
                entry.recipient_device,
                entry.payload,
                entry.envelope,
                entry.session_id,
                entry.created_at,
            ),
        ).fetchone()
        if row is None:
            row = conn.execute(
                "SELECT id FROM outbox WHERE message_id = ? AND recipient_device = ?",
                (entry.message_id, entry.recipient_device),
            ).fetchone()
    return int(row[0])


def pending_for_device(
    conn: Connection, recipient_device: str, limit: int, max_bytes: int | None = None
) -> list[OutboxEntry]:
    """The oldest entries queued for the device, first in first out.

    With `max_bytes`, stop before the envelopes' total length would pass it (but always
    return at least one entry if any is queued).
    """
    _check_limit(limit)
    entries: list[OutboxEntry] = []
    total = 0
    for row in conn.execute(
        "SELECT id, message_id, recipient_identity, recipient_device, payload, envelope,"
        " session_id, created_at, attempts FROM outbox WHERE recipient_device = ?"
        " ORDER BY id LIMIT ?",
        (recipient_device, limit),
    ):
        entry = _outbox_entry(row)
        total += len(entry.envelope)
        if max_bytes is not None and entries and total > max_bytes:
            break
        entries.append(entry)
    return entries


def remove_from_outbox(conn: Connection, ids: Sequence[int]) -> int:
    """Delete entries (sent, or given up); returns how many were there."""
    removed = 0
    with savepoint(conn, "remove_from_outbox"):
        for chunk in _chunks(list(ids)):
            marks = ", ".join("?" * len(chunk))
            removed += conn.execute(f"DELETE FROM outbox WHERE id IN ({marks})", chunk).rowcount
    return removed


def count_attempt(conn: Connection, ids: Sequence[int]) -> None:
    with savepoint(conn, "count_attempt"):
        for chunk in _chunks(list(ids)):
            marks = ", ".join("?" * len(chunk))
            conn.execute(f"UPDATE outbox SET attempts = attempts + 1 WHERE id IN ({marks})", chunk)


def replace_envelope(conn: Connection, id: int, envelope: bytes, session_id: str) -> bool:
    """Store an entry's payload re-encrypted under another session. False if no such entry."""
    cursor = conn.execute(
        "UPDATE outbox SET envelope = ?, session_id = ? WHERE id = ?", (envelope, session_id, id)
    )
    return cursor.rowcount == 1


def devices_with_pending(conn: Connection) -> list[str]:
    """Devices with something queued, the one waiting longest first."""
    rows = conn.execute(
        "SELECT recipient_device FROM outbox GROUP BY recipient_device ORDER BY min(id)"
    ).fetchall()
    return [str(device) for (device,) in rows]


def count_pending(conn: Connection) -> int:
    return int(conn.execute("SELECT count(*) FROM outbox").fetchone()[0])


def drop_outbox_for_device(conn: Connection, recipient_device: str) -> int:
    """Delete everything queued for one device (it left its owner's device list)."""
    return conn.execute(
        "DELETE FROM outbox WHERE recipient_device = ?", (recipient_device,)
    ).rowcount


def drop_outbox_for_identity(conn: Connection, recipient_identity: bytes) -> int:
    """Delete everything queued for a person's devices (e.g. the contact was removed)."""
    cursor = conn.execute("DELETE FROM outbox WHERE recipient_identity = ?", (recipient_identity,))
    return cursor.rowcount


# --- Olm sessions -------------------------------------------------------------------------


@dataclass(frozen=True)
class OlmSessionRow:
    session_id: str
    peer_curve25519: str
    pickle: str = field(repr=False)  # vodozemac pickle, encrypted with the vault key
    created_at: int
    last_used_at: int


def sessions_for(conn: Connection, peer_curve25519: str) -> list[OlmSessionRow]:
    """The sessions with a device (its Curve25519 key), most recently used first."""
    rows = conn.execute(
        "SELECT session_id, peer_curve25519, pickle, created_at, last_used_at FROM olm_sessions"
        " WHERE peer_curve25519 = ? ORDER BY last_used_at DESC, created_at DESC, session_id",
        (peer_curve25519,),
    ).fetchall()
    return [
        OlmSessionRow(
            session_id=str(session_id),
            peer_curve25519=str(peer),
            pickle=str(pickle),
            created_at=int(created_at),
            last_used_at=int(last_used_at),
        )
        for session_id, peer, pickle, created_at, last_used_at in rows
    ]


def save_session(
    conn: Connection, session_id: str, peer_curve25519: str, pickle: str, now_ms: int
) -> None:
    """Store a session, or its new pickle; it was used now (created now if new).

    SessionOwnerError if `session_id` is stored for another peer key.
    """
    cursor = conn.execute(
        "INSERT INTO olm_sessions (session_id, peer_curve25519, pickle, created_at, last_used_at)"
        " VALUES (?, ?, ?, ?, ?)"
        " ON CONFLICT (session_id) DO UPDATE SET pickle = excluded.pickle,"
        " last_used_at = excluded.last_used_at"
        " WHERE peer_curve25519 = excluded.peer_curve25519",
        (session_id, peer_curve25519, pickle, now_ms, now_ms),
    )
    if cursor.rowcount != 1:
        raise SessionOwnerError(f"Olm session {session_id} belongs to another peer key")


def delete_sessions(conn: Connection, peer_curve25519: str) -> int:
    cursor = conn.execute("DELETE FROM olm_sessions WHERE peer_curve25519 = ?", (peer_curve25519,))
    return cursor.rowcount


# --- received envelopes -------------------------------------------------------------------


def record_envelope(conn: Connection, sender_device: str, message_id: bytes, now_ms: int) -> bool:
    """Note an envelope as received. False, changing nothing, if it was received before."""
    check_blob(message_id, MESSAGE_ID_BYTES, "message id")
    cursor = conn.execute(
        "INSERT INTO received_envelopes (sender_device, message_id, received_at)"
        " VALUES (?, ?, ?) ON CONFLICT DO NOTHING",
        (sender_device, message_id, now_ms),
    )
    return cursor.rowcount == 1


def envelope_seen(conn: Connection, sender_device: str, message_id: bytes) -> bool:
    row = conn.execute(
        "SELECT 1 FROM received_envelopes WHERE sender_device = ? AND message_id = ?",
        (sender_device, message_id),
    ).fetchone()
    return row is not None


def owe_receipt(conn: Connection, identity_key: bytes, message_id: bytes) -> None:
    conn.execute(
        "INSERT INTO owed_receipts (identity_key, message_id) VALUES (?, ?) ON CONFLICT DO NOTHING",
        (identity_key, message_id),
    )


def take_owed_receipts(conn: Connection) -> dict[bytes, list[bytes]]:
    """Every receipt owed, by identity (they are removed: the caller queues them)."""
    owed: dict[bytes, list[bytes]] = {}
    for identity_key, message_id in conn.execute(
        "DELETE FROM owed_receipts RETURNING identity_key, message_id"
    ).fetchall():
        owed.setdefault(bytes(identity_key), []).append(bytes(message_id))
    return owed


def prune_received_envelopes(conn: Connection, before_ms: int) -> int:
    """Forget envelopes received before `before_ms`. Safe for texts (their message ids stay
    unique in the history) and receipts (applying one twice changes nothing)."""
    return conn.execute(
        "DELETE FROM received_envelopes WHERE received_at < ?", (before_ms,)
    ).rowcount


# --- helpers ------------------------------------------------------------------------------


_MESSAGE_COLUMNS = (
    "m.id, m.conversation_id, c.peer_identity, m.message_id, m.sender_identity,"
    " m.sender_device, m.outgoing, m.kind, m.body, m.lamport, m.sent_at, m.received_at,"
    " m.state, m.state_at"
)
_RETURNED_COLUMNS = (
    "id, conversation_id, message_id, sender_identity, sender_device, outgoing, kind, body,"
    " lamport, sent_at, received_at, state, state_at"
)


def _select_messages(
    conn: Connection, where: str, parameters: tuple[object, ...]
) -> list[MessageRow]:
    rows = conn.execute(
        f"SELECT {_MESSAGE_COLUMNS} FROM messages m"
        f" JOIN conversations c ON c.id = m.conversation_id {where}",
        parameters,
    ).fetchall()
    return [_message_row(row) for row in rows]


def _update_messages(
    conn: Connection, update: str, parameters: tuple[object, ...], peer_identity: bytes
) -> list[MessageRow]:
    """Run an UPDATE of messages of the conversation with `peer_identity`; the changed rows."""
    rows = conn.execute(f"{update} RETURNING {_RETURNED_COLUMNS}", parameters).fetchall()
    return [_message_row((row[0], row[1], peer_identity, *row[2:])) for row in rows]


def _message_row(row: Sequence[Any]) -> MessageRow:
    (
        rowid,
        conversation_id,
        peer_identity,
        message_id,
        sender_identity,
        sender_device,
        outgoing,
        kind,
        body,
        lamport,
        sent_at,
        received_at,
        state,
        state_at,
    ) = row
    return MessageRow(
        rowid=int(rowid),
        conversation_id=int(conversation_id),
        peer_identity=bytes(peer_identity),
        message_id=bytes(message_id),
        sender_identity=bytes(sender_identity),
        sender_device=str(sender_device),
        outgoing=bool(outgoing),
        kind=str(kind),
        body=str(body),
        lamport=int(lamport),
        sent_at=int(sent_at),
        received_at=int(received_at),
        state=str(state),
        state_at=None if state_at is None else int(state_at),
    )


def _outbox_entry(row: Sequence[Any]) -> OutboxEntry:
    (
        entry_id,
        message_id,
        recipient_identity,
        recipient_device,
        payload,
        envelope,
        session_id,
        created_at,
        attempts,
    ) = row
    return OutboxEntry(
        id=int(entry_id),
        message_id=bytes(message_id),
        recipient_identity=bytes(recipient_identity),
        recipient_device=str(recipient_device),
        payload=bytes(payload),
        envelope=bytes(envelope),
        session_id=str(session_id),
        created_at=int(created_at),
        attempts=int(attempts),
    )


def _in_display_order(messages: list[MessageRow]) -> list[MessageRow]:
    return sorted(messages, key=lambda m: (m.conversation_id, m.lamport, m.sent_at, m.message_id))


def _select_conversations(
    conn: Connection, clause: str, parameters: tuple[object, ...]
) -> list[ConversationRow]:
    rows = conn.execute(
        "SELECT c.id, c.peer_identity, c.lamport, c.unread, c.created_at, c.updated_at, c.kind,"
        f" {_MESSAGE_COLUMNS}"
        " FROM conversations c LEFT JOIN messages m ON m.id = ("
        "  SELECT id FROM messages WHERE conversation_id = c.id"
        "  ORDER BY lamport DESC, sent_at DESC, message_id DESC LIMIT 1"
        f") {clause}",
        parameters,
    ).fetchall()
    conversations = []
    for row in rows:
        conversation_id, peer_identity, lamport, unread, created_at, updated_at, kind = row[:7]
        last = None if row[7] is None else _message_row(row[7:])
        conversations.append(
            ConversationRow(
                id=int(conversation_id),
                peer_identity=bytes(peer_identity),
                lamport=int(lamport),
                unread=int(unread),
                created_at=int(created_at),
                updated_at=int(updated_at),
                last_message=last,
                kind=str(kind),
            )
        )
    return conversations


# FTS5 reports a query it cannot parse with these (as sqlite3.OperationalError).
_FTS_QUERY_ERRORS = ("fts5:", "no such column", "unterminated string", "unknown special query")


def _search_once(conn: Connection, sql: str, parameters: tuple[object, ...]) -> list[MessageRow]:
    try:
        rows = conn.execute(sql, parameters).fetchall()
    except sqlite.OperationalError as exc:
        if str(exc).startswith(_FTS_QUERY_ERRORS):
            raise InvalidSearchError(str(exc)) from None
        raise
    return [_message_row(row) for row in rows]


def _match_expression(query: str, conversation_id: int | None) -> str:
    """The user's query on the body column, within the conversation's messages if given."""
    expression = f"(body : ({query}))"
    if conversation_id is None:
        return expression
    return f'conversation_id : "{int(conversation_id)}" AND {expression}'


def _self_contained(query: str) -> bool:
    """Whether the parentheses outside "strings" balance and every string is closed: only
    then can the query be put inside another expression without escaping from it."""
    depth = 0
    in_string = False
    for char in query:
        if char == '"':
            in_string = not in_string  # "" inside a string (an escaped quote) toggles twice
        elif not in_string and char in "()":
            depth += 1 if char == "(" else -1
            if depth < 0:
                return False
    return depth == 0 and not in_string


def _quote_words(query: str) -> str:
    """Each whitespace-separated word as an FTS5 string; a trailing * stays a prefix search."""
    words = []
    for word in query.split():
        prefix = len(word) > 1 and word.endswith("*")
        stem = word[:-1] if prefix else word
        words.append('"' + stem.replace('"', '""') + '"' + ("*" if prefix else ""))
    return " ".join(words)


def _check_new_message(message: NewMessage) -> None:
    check_blob(message.message_id, MESSAGE_ID_BYTES, "message id")
    check_blob(message.sender_identity, IDENTITY_KEY_BYTES, "sender identity key")
    allowed = OUTGOING_STATES if message.outgoing else INCOMING_STATES
    if message.state not in allowed:
        direction = "an outgoing" if message.outgoing else "an incoming"
        raise ValueError(
            f"{direction} message cannot be {message.state!r}; expected one of {sorted(allowed)}"
        )
    if message.lamport < 1:
        raise ValueError("a message's lamport must be at least 1")
    if message.kind not in MESSAGE_KINDS:
        raise ValueError(f"unknown message kind {message.kind!r}; expected one of {MESSAGE_KINDS}")


def _check_limit(limit: int) -> None:
    if limit < 1:
        raise ValueError(f"the limit must be at least 1, not {limit}")


def _chunks(values: list[Any]) -> Iterator[list[Any]]:
    for start in range(0, len(values), _CHUNK):
        yield values[start : start + _CHUNK]
