"""Typed queries for groups (migration 6): the groups, their membership logs, Megolm sessions,
envelopes kept for catch-up and held for a key, per-member receipts, invites and join requests.

Plain functions over a Connection, like `contacts.py`: use them through `TrioStore.read` /
`TrioStore.write`. They never COMMIT, ROLLBACK or BEGIN; a function that writes more than one
statement runs in a SAVEPOINT. Times are integer milliseconds since the epoch.

Group members who are not contacts are contacts rows with `group_only` (see `contacts.py`); a
group's messages live in `messages`, in the conversation whose peer_identity is the group id and
whose kind is 'group' (see `messages.py`).
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from p2pid.store.db import Connection, StoreError, check_blob, savepoint
from p2pid.store.messages import MessageRow, get_message

GROUP_ID_BYTES = 32
MESSAGE_ID_BYTES = 16
INVITE_ID_BYTES = 16

GROUP_ROLES: frozenset[str] = frozenset({"admin", "member", "left", "removed"})
RECEIPT_STATES: frozenset[str] = frozenset({"delivered", "read"})
JOIN_REQUEST_STATES: frozenset[str] = frozenset({"pending", "accepted", "refused"})
JOIN_REQUEST_DECISIONS: frozenset[str] = frozenset({"accepted", "refused"})

# Outgoing message states in the order they only move up; 'failed' counts as not delivered.
_STATE_RANK = {"pending": 0, "failed": 0, "delivered": 1, "read": 2}

# Enough below SQLite's limit on bound parameters for any statement built here.
_CHUNK = 500


class GroupExistsError(StoreError):
    """A group with that id is already stored."""


class UnknownGroupError(StoreError):
    """No group has that id."""


# --- groups -------------------------------------------------------------------------------


@dataclass(frozen=True)
class GroupRow:
    group_id: bytes
    name: str
    avatar: str
    my_role: str  # admin | member | left | removed
    version: int  # ops in the log
    created_at: int
    updated_at: int


def create_group(
    conn: Connection, group_id: bytes, name: str, avatar: str, my_role: str, now_ms: int
) -> None:
    """Store a new group (version 1: its genesis op). GroupExistsError if it is stored."""
    check_blob(group_id, GROUP_ID_BYTES, "group id")
    _check_role(my_role)
    cursor = conn.execute(
        "INSERT INTO groups (group_id, name, avatar, my_role, created_at, updated_at)"
        " VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (group_id) DO NOTHING",
        (group_id, name, avatar, my_role, now_ms, now_ms),
    )
    if cursor.rowcount != 1:
        raise GroupExistsError(f"group {group_id.hex()} exists")


def get_group(conn: Connection, group_id: bytes) -> GroupRow | None:
    rows = _select_groups(conn, "WHERE group_id = ?", (group_id,))
    return rows[0] if rows else None


def list_groups(conn: Connection) -> list[GroupRow]:
    """Every group, by name (case-insensitive)."""
    return sorted(_select_groups(conn, "", ()), key=lambda g: (g.name.casefold(), g.group_id))


def update_group(
    conn: Connection,
    group_id: bytes,
    *,
    name: str,
    avatar: str,
    my_role: str,
    version: int,
    now_ms: int,
) -> None:
    """Store a group's state as its log now computes it. UnknownGroupError if not stored."""
    _check_role(my_role)
    cursor = conn.execute(
        "UPDATE groups SET name = ?, avatar = ?, my_role = ?, version = ?, updated_at = ?"
        " WHERE group_id = ?",
        (name, avatar, my_role, version, now_ms, group_id),
    )
    if cursor.rowcount != 1:
        raise UnknownGroupError(f"no group {bytes(group_id).hex()}")


def delete_group(conn: Connection, group_id: bytes) -> bool:
    """Delete a group with its log, sessions, envelopes, invites, join requests and owed
    receipts. Its conversation and messages stay. False if no such group."""
    with savepoint(conn, "delete_group"):
        conn.execute("DELETE FROM group_owed_receipts WHERE group_id = ?", (group_id,))
        cursor = conn.execute("DELETE FROM groups WHERE group_id = ?", (group_id,))
    return cursor.rowcount == 1


def _select_groups(conn: Connection, where: str, parameters: tuple[object, ...]) -> list[GroupRow]:
    rows = conn.execute(
        "SELECT group_id, name, avatar, my_role, version, created_at, updated_at"
        f" FROM groups {where}",
        parameters,
    ).fetchall()
    return [
        GroupRow(
            group_id=bytes(group_id),
            name=str(name),
            avatar=str(avatar),
            my_role=str(my_role),
            version=int(version),
            created_at=int(created_at),
            updated_at=int(updated_at),
        )
        for group_id, name, avatar, my_role, version, created_at, updated_at in rows
    ]


def _check_role(role: str) -> None:
    if role not in GROUP_ROLES:
        raise ValueError(f"unknown group role {role!r}; expected one of {sorted(GROUP_ROLES)}")


# --- the membership log -------------------------------------------------------------------


def add_ops(
    conn: Connection, group_id: bytes, ops: Sequence[tuple[bytes, bytes]], now_ms: int
) -> int:
    """Append (op id, encoded signed op) pairs to a group's log; ops already there are skipped.
    Returns how many were new. UnknownGroupError if the group is not stored."""
    added = 0
    with savepoint(conn, "add_ops"):
        if conn.execute("SELECT 1 FROM groups WHERE group_id = ?", (group_id,)).fetchone() is None:
            raise UnknownGroupError(f"no group {bytes(group_id).hex()}")
        for op_id, signed in ops:
            added += conn.execute(
                "INSERT INTO group_ops (group_id, op_id, signed, received_at) VALUES (?, ?, ?, ?)"
                " ON CONFLICT (group_id, op_id) DO NOTHING",
                (group_id, op_id, signed, now_ms),
            ).rowcount
    return added


def ops_of(conn: Connection, group_id: bytes) -> list[bytes]:
    """The group's encoded signed ops in the order they were stored."""
    rows = conn.execute(
        "SELECT signed FROM group_ops WHERE group_id = ? ORDER BY seq", (group_id,)
    ).fetchall()
    return [bytes(signed) for (signed,) in rows]


def op_received_at(conn: Connection, group_id: bytes, op_id: bytes) -> int | None:
    """When this device stored the op (its own clock), if it holds it."""
    row = conn.execute(
        "SELECT received_at FROM group_ops WHERE group_id = ? AND op_id = ?", (group_id, op_id)
    ).fetchone()
    return None if row is None else int(row[0])


# --- Megolm sessions ----------------------------------------------------------------------


@dataclass(frozen=True)
class OutboundRow:
    """This device's Megolm session for a group."""

    group_id: bytes
    session_id: str
    pickle: str = field(repr=False)  # encrypted with the vault key
    shared_with: tuple[str, ...]  # PeerIds its key went to
    created_at: int
    messages: int  # sent under it


def get_outbound(conn: Connection, group_id: bytes) -> OutboundRow | None:
    row = conn.execute(
        "SELECT group_id, session_id, pickle, shared_with, created_at, messages"
        " FROM group_outbound_sessions WHERE group_id = ?",
        (group_id,),
    ).fetchone()
    if row is None:
        return None
    group, session_id, pickle, shared_with, created_at, messages = row
    return OutboundRow(
        group_id=bytes(group),
        session_id=str(session_id),
        pickle=str(pickle),
        shared_with=_decode_list(shared_with),
        created_at=int(created_at),
        messages=int(messages),
    )


def save_outbound(conn: Connection, row: OutboundRow) -> None:
    """Store the group's outbound session, replacing the one stored (a rotation) or its state."""
    conn.execute(
        "INSERT INTO group_outbound_sessions"
        " (group_id, session_id, pickle, shared_with, created_at, messages)"
        " VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (group_id) DO UPDATE SET"
        " session_id = excluded.session_id, pickle = excluded.pickle,"
        " shared_with = excluded.shared_with, created_at = excluded.created_at,"
        " messages = excluded.messages",
        (
            row.group_id,
            row.session_id,
            row.pickle,
            json.dumps(list(row.shared_with), separators=(",", ":")),
            row.created_at,
            row.messages,
        ),
    )


def delete_outbound(conn: Connection, group_id: bytes) -> bool:
    """Drop the group's outbound session (the next send starts a new one). False if none."""
    cursor = conn.execute("DELETE FROM group_outbound_sessions WHERE group_id = ?", (group_id,))
    return cursor.rowcount == 1


@dataclass(frozen=True)
class InboundRow:
    """A member device's Megolm session, as its key was shared with me."""

    session_id: str
    group_id: bytes
    sender_identity: bytes
    sender_device_key: bytes
    sender_peer_id: str
    pickle: str = field(repr=False)  # encrypted with the vault key
    first_index: int
    share: bytes = field(repr=False)  # the encoded GroupSessionShare as received
    seen: bytes = field(repr=False)  # SeenIndexes.to_bytes()
    created_at: int


_INBOUND_COLUMNS = (
    "session_id, group_id, sender_identity, sender_device_key, sender_peer_id, pickle,"
    " first_index, share, seen, created_at"
)


def get_inbound(conn: Connection, session_id: str) -> InboundRow | None:
    row = conn.execute(
        f"SELECT {_INBOUND_COLUMNS} FROM group_inbound_sessions WHERE session_id = ?",
        (session_id,),
    ).fetchone()
    return None if row is None else _inbound_row(row)


def save_inbound(conn: Connection, row: InboundRow) -> None:
    """Store an inbound session, replacing one stored under the same session id."""
    conn.execute(
        f"INSERT OR REPLACE INTO group_inbound_sessions ({_INBOUND_COLUMNS})"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (
            row.session_id,
            row.group_id,
            row.sender_identity,
            row.sender_device_key,
            row.sender_peer_id,
            row.pickle,
            row.first_index,
            row.share,
            row.seen,
            row.created_at,
        ),
    )


def update_seen(conn: Connection, session_id: str, seen: bytes) -> bool:
    """Store the session's replay window. False if no such session."""
    cursor = conn.execute(
        "UPDATE group_inbound_sessions SET seen = ? WHERE session_id = ?", (seen, session_id)
    )
    return cursor.rowcount == 1


def inbound_for_group(conn: Connection, group_id: bytes) -> list[InboundRow]:
    """The group's inbound sessions, oldest first."""
    rows = conn.execute(
        f"SELECT {_INBOUND_COLUMNS} FROM group_inbound_sessions WHERE group_id = ?"
        " ORDER BY created_at, session_id",
        (group_id,),
    ).fetchall()
    return [_inbound_row(row) for row in rows]


def _inbound_row(row: Sequence[Any]) -> InboundRow:
    (
        session_id,
        group_id,
        sender_identity,
        sender_device_key,
        sender_peer_id,
        pickle,
        first_index,
        share,
        seen,
        created_at,
    ) = row
    return InboundRow(
        session_id=str(session_id),
        group_id=bytes(group_id),
        sender_identity=bytes(sender_identity),
        sender_device_key=bytes(sender_device_key),
        sender_peer_id=str(sender_peer_id),
        pickle=str(pickle),
        first_index=int(first_index),
        share=bytes(share),
        seen=bytes(seen),
        created_at=int(created_at),
    )


# --- envelopes kept for catch-up ----------------------------------------------------------


@dataclass(frozen=True)
class GroupEnvelopeRow:
    message_id: bytes
    group_id: bytes
    sender_identity: bytes
    sender_device_key: bytes
    session_id: str
    message_index: int
    ciphertext: bytes = field(repr=False)  # an encoded MegolmCiphertext
    sent_at: int
    received_at: int


_ENVELOPE_COLUMNS = (
    "message_id, group_id, sender_identity, sender_device_key, session_id, message_index,"
    " ciphertext, sent_at, received_at"
)


def store_envelope(conn: Connection, row: GroupEnvelopeRow) -> bool:
    """Keep a group message as received. False, changing nothing, if its id is stored."""
    check_blob(row.message_id, MESSAGE_ID_BYTES, "message id")
    cursor = conn.execute(
        f"INSERT INTO group_envelopes ({_ENVELOPE_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
        " ON CONFLICT (message_id) DO NOTHING",
        (
            row.message_id,
            row.group_id,
            row.sender_identity,
            row.sender_device_key,
            row.session_id,
            row.message_index,
            row.ciphertext,
            row.sent_at,
            row.received_at,
        ),
    )
    return cursor.rowcount == 1


def envelope_ids(
    conn: Connection,
    group_id: bytes,
    since_ms: int,
    after: tuple[int, bytes] | None,
    limit: int,
) -> list[tuple[bytes, int]]:
    """(message id, sent_at) of the group's envelopes sent at or after `since_ms`, in
    (sent_at, message id) order, strictly after the cursor `after` (a (sent_at, id) pair)."""
    _check_limit(limit)
    where = "WHERE group_id = ? AND sent_at >= ?"
    parameters: tuple[object, ...] = (group_id, since_ms)
    if after is not None:
        where += " AND (sent_at, message_id) > (?, ?)"
        parameters += (after[0], after[1])
    rows = conn.execute(
        f"SELECT message_id, sent_at FROM group_envelopes {where}"
        " ORDER BY sent_at, message_id LIMIT ?",
        (*parameters, limit),
    ).fetchall()
    return [(bytes(message_id), int(sent_at)) for message_id, sent_at in rows]


def get_envelopes(
    conn: Connection, group_id: bytes, ids: Sequence[bytes]
) -> list[GroupEnvelopeRow]:
    """The envelopes of `ids` that belong to the group, in (sent_at, message id) order."""
    found: list[GroupEnvelopeRow] = []
    for chunk in _chunks(list(dict.fromkeys(ids))):
        marks = ", ".join("?" * len(chunk))
        rows = conn.execute(
            f"SELECT {_ENVELOPE_COLUMNS} FROM group_envelopes"
            f" WHERE group_id = ? AND message_id IN ({marks})",
            (group_id, *chunk),
        ).fetchall()
        found += [_envelope_row(row) for row in rows]
    return sorted(found, key=lambda e: (e.sent_at, e.message_id))


def known_ids(conn: Connection, ids: Sequence[bytes]) -> set[bytes]:
    """Those of `ids` whose envelope is stored (in any group)."""
    known: set[bytes] = set()
    for chunk in _chunks(list(dict.fromkeys(ids))):
        marks = ", ".join("?" * len(chunk))
        rows = conn.execute(
            f"SELECT message_id FROM group_envelopes WHERE message_id IN ({marks})", chunk
        ).fetchall()
        known.update(bytes(message_id) for (message_id,) in rows)
    return known


def latest_sent_at(conn: Connection, group_id: bytes) -> int | None:
    """The sent_at of the group's newest stored envelope, None if it has none."""
    row = conn.execute(
        "SELECT max(sent_at) FROM group_envelopes WHERE group_id = ?", (group_id,)
    ).fetchone()
    return None if row[0] is None else int(row[0])


def _envelope_row(row: Sequence[Any]) -> GroupEnvelopeRow:
    (
        message_id,
        group_id,
        sender_identity,
        sender_device_key,
        session_id,
        message_index,
        ciphertext,
        sent_at,
        received_at,
    ) = row
    return GroupEnvelopeRow(
        message_id=bytes(message_id),
        group_id=bytes(group_id),
        sender_identity=bytes(sender_identity),
        sender_device_key=bytes(sender_device_key),
        session_id=str(session_id),
        message_index=int(message_index),
        ciphertext=bytes(ciphertext),
        sent_at=int(sent_at),
        received_at=int(received_at),
    )


# --- envelopes held for a key -------------------------------------------------------------


def hold(
    conn: Connection,
    session_id: str,
    sender_peer_id: str,
    envelope: bytes,
    now_ms: int,
    max_per_sender: int = 1000,
) -> None:
    """Keep an envelope until its session's key arrives. Past `max_per_sender` envelopes held
    from that device, its oldest ones are dropped."""
    if max_per_sender < 1:
        raise ValueError("max_per_sender must be at least 1")
    with savepoint(conn, "hold"):
        conn.execute(
            "INSERT INTO group_held (session_id, sender_peer_id, envelope, received_at)"
            " VALUES (?, ?, ?, ?)",
            (session_id, sender_peer_id, envelope, now_ms),
        )
        conn.execute(
            "DELETE FROM group_held WHERE sender_peer_id = ?1 AND id NOT IN ("
            " SELECT id FROM group_held WHERE sender_peer_id = ?1"
            " ORDER BY received_at DESC, id DESC LIMIT ?2)",
            (sender_peer_id, max_per_sender),
        )


def take_held(conn: Connection, session_id: str) -> list[tuple[str, bytes]]:
    """Remove and return the envelopes held for the session: (sender PeerId, envelope), oldest
    first."""
    rows = conn.execute(
        "DELETE FROM group_held WHERE session_id = ?"
        " RETURNING id, received_at, sender_peer_id, envelope",
        (session_id,),
    ).fetchall()
    rows.sort(key=lambda row: (int(row[1]), int(row[0])))
    return [(str(sender), bytes(envelope)) for _, _, sender, envelope in rows]


def prune_held(conn: Connection, before_ms: int) -> int:
    """Drop envelopes held since before `before_ms`; returns how many."""
    return conn.execute("DELETE FROM group_held WHERE received_at < ?", (before_ms,)).rowcount


# --- receipts -----------------------------------------------------------------------------


def set_receipt(
    conn: Connection, message_id: bytes, member_identity: bytes, state: str, at_ms: int
) -> bool:
    """Record that a member has my message ('delivered') or read it ('read'). A receipt never
    goes down from 'read'. True if that changed anything."""
    if state not in RECEIPT_STATES:
        raise ValueError(f"a receipt is one of {sorted(RECEIPT_STATES)}, not {state!r}")
    changed = conn.execute(
        "INSERT INTO group_receipts (message_id, member_identity, state, at) VALUES (?, ?, ?, ?)"
        " ON CONFLICT (message_id, member_identity) DO UPDATE SET"
        " state = excluded.state, at = excluded.at"
        " WHERE group_receipts.state = 'delivered' AND excluded.state = 'read'"
        " RETURNING 1",
        (message_id, member_identity, state, at_ms),
    ).fetchall()
    return bool(changed)


def receipts_for(conn: Connection, message_id: bytes) -> dict[bytes, tuple[str, int]]:
    """Member identity -> (state, at) for one of my messages."""
    rows = conn.execute(
        "SELECT member_identity, state, at FROM group_receipts WHERE message_id = ?",
        (message_id,),
    ).fetchall()
    return {bytes(member): (str(state), int(at)) for member, state, at in rows}


def owe_receipt(
    conn: Connection, group_id: bytes, sender_identity: bytes, message_id: bytes
) -> None:
    """Note a delivery receipt to send to a group message's sender."""
    conn.execute(
        "INSERT INTO group_owed_receipts (group_id, sender_identity, message_id) VALUES (?, ?, ?)"
        " ON CONFLICT DO NOTHING",
        (group_id, sender_identity, message_id),
    )


def take_owed_receipts(conn: Connection) -> dict[tuple[bytes, bytes], list[bytes]]:
    """Every receipt owed, by (group id, sender identity); they are removed (the caller sends
    them)."""
    owed: dict[tuple[bytes, bytes], list[bytes]] = {}
    for group_id, sender, message_id in conn.execute(
        "DELETE FROM group_owed_receipts RETURNING group_id, sender_identity, message_id"
    ).fetchall():
        owed.setdefault((bytes(group_id), bytes(sender)), []).append(bytes(message_id))
    return owed


def upgrade_message_state(
    conn: Connection, message_id: bytes, state: str, now_ms: int
) -> MessageRow | None:
    """Move one of my outgoing group messages up to 'delivered' or 'read' (from 'pending' or
    'failed'; 'delivered' to 'read'). The changed message, or None if nothing changed."""
    if state not in RECEIPT_STATES:
        raise ValueError(f"a message is upgraded to {sorted(RECEIPT_STATES)}, not {state!r}")
    below = sorted(s for s, rank in _STATE_RANK.items() if rank < _STATE_RANK[state])
    marks = ", ".join("?" * len(below))
    changed = conn.execute(
        "UPDATE messages SET state = ?, state_at = ?"
        f" WHERE message_id = ? AND outgoing = 1 AND state IN ({marks})"
        " AND conversation_id IN (SELECT id FROM conversations WHERE kind = 'group')"
        " RETURNING id",
        (state, now_ms, message_id, *below),
    ).fetchall()
    return get_message(conn, message_id) if changed else None


# --- invites and join requests ------------------------------------------------------------


def add_group_invite(conn: Connection, invite_id: bytes, group_id: bytes, approval: bool) -> None:
    """Tie an invite (an invites row) to the group it joins; `approval`: an admin must accept
    each joiner."""
    check_blob(invite_id, INVITE_ID_BYTES, "invite id")
    conn.execute(
        "INSERT INTO group_invites (invite_id, group_id, approval) VALUES (?, ?, ?)",
        (invite_id, group_id, int(approval)),
    )


def get_group_invite(conn: Connection, invite_id: bytes) -> tuple[bytes, bool] | None:
    """(group id, approval) of a group invite, None if the invite is not one."""
    row = conn.execute(
        "SELECT group_id, approval FROM group_invites WHERE invite_id = ?", (invite_id,)
    ).fetchone()
    return None if row is None else (bytes(row[0]), bool(row[1]))


@dataclass(frozen=True)
class JoinRequestRow:
    id: int
    group_id: bytes
    identity_key: bytes
    peer_id: str
    display_name: str
    card: bytes = field(repr=False)  # an encoded ContactCard
    requested_at: int
    state: str  # pending | accepted | refused


def add_join_request(
    conn: Connection,
    group_id: bytes,
    identity_key: bytes,
    peer_id: str,
    display_name: str,
    card: bytes,
    now_ms: int,
) -> int:
    """Store a pending request to join a group; returns its id. An earlier request from the
    same identity for the same group is overwritten (same id) and pending again."""
    row = conn.execute(
        "INSERT INTO group_join_requests"
        " (group_id, identity_key, peer_id, display_name, card, requested_at)"
        " VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (group_id, identity_key) DO UPDATE SET"
        " peer_id = excluded.peer_id, display_name = excluded.display_name,"
        " card = excluded.card, requested_at = excluded.requested_at, state = 'pending'"
        " RETURNING id",
        (group_id, identity_key, peer_id, display_name, card, now_ms),
    ).fetchone()
    return int(row[0])


def list_join_requests(conn: Connection, state: str | None = "pending") -> list[JoinRequestRow]:
    """Requests in `state` (None: all), oldest first."""
    if state is None:
        return _select_join_requests(conn, "", ())
    if state not in JOIN_REQUEST_STATES:
        raise ValueError(f"unknown join request state {state!r}")
    return _select_join_requests(conn, "WHERE state = ?", (state,))


def get_join_request(conn: Connection, request_id: int) -> JoinRequestRow | None:
    rows = _select_join_requests(conn, "WHERE id = ?", (request_id,))
    return rows[0] if rows else None


def set_join_request_state(conn: Connection, request_id: int, state: str) -> bool:
    """Accept or refuse a pending request. False if unknown or no longer pending."""
    if state not in JOIN_REQUEST_DECISIONS:
        raise ValueError(f"a join request is {sorted(JOIN_REQUEST_DECISIONS)}, not {state!r}")
    cursor = conn.execute(
        "UPDATE group_join_requests SET state = ? WHERE id = ? AND state = 'pending'",
        (state, request_id),
    )
    return cursor.rowcount == 1


def _select_join_requests(
    conn: Connection, where: str, parameters: tuple[object, ...]
) -> list[JoinRequestRow]:
    rows = conn.execute(
        "SELECT id, group_id, identity_key, peer_id, display_name, card, requested_at, state"
        f" FROM group_join_requests {where} ORDER BY requested_at, id",
        parameters,
    ).fetchall()
    return [_join_request(row) for row in rows]


def _join_request(row: Sequence[Any]) -> JoinRequestRow:
    request_id, group_id, identity_key, peer_id, display_name, card, requested_at, state = row
    return JoinRequestRow(
        id=int(request_id),
        group_id=bytes(group_id),
        identity_key=bytes(identity_key),
        peer_id=str(peer_id),
        display_name=str(display_name),
        card=bytes(card),
        requested_at=int(requested_at),
        state=str(state),
    )


# --- helpers ------------------------------------------------------------------------------


def _decode_list(text: object) -> tuple[str, ...]:
    decoded = json.loads(str(text))
    if not isinstance(decoded, list):
        raise StoreError(f"expected a JSON list in the store, got {text!r}")
    return tuple(str(item) for item in decoded)


def _check_limit(limit: int) -> None:
    if limit < 1:
        raise ValueError(f"the limit must be at least 1, not {limit}")


def _chunks(values: list[Any]) -> Iterator[list[Any]]:
    for start in range(0, len(values), _CHUNK):
        yield values[start : start + _CHUNK]
