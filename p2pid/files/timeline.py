"""A file offered in a conversation is also a line of it: a message of kind "file" whose id is the
transfer's (the file id) and whose text names the file. So the conversation's order, unread
count, receipts, previews and search include it without knowing about files, and a client that
does know follows the message id to `file show`.

Both ends write the line in the transaction that stores the offer: the sender when it sends, a
recipient when it takes the offer (a one-to-one offer at the payload's Lamport value, a group
offer at the one the offer carries). An offer to me reaches each of my devices, so each has the
line; the sender's other devices get the line alone (`FileLineCopy`), not the transfer, which
stays on the device that holds the file. A device linked later gets no lines.
"""

from __future__ import annotations

from typing import Literal

from p2pid.sizes import human_size
from p2pid.store import messages as message_queries
from p2pid.store.db import Connection
from p2pid.store.messages import MessageRow, NewMessage
from p2pid.wire.files import FileOffer
from p2pid.wire.messages import MAX_LAMPORT, FileLineCopy

ConversationKind = Literal["direct", "group"]


def line_text(name: str, size: int) -> str:
    return f"📎 {name} ({human_size(size)})"


def add_sent_line(
    conn: Connection,
    *,
    conversation_with: bytes,
    kind: ConversationKind,
    offer: FileOffer,
    me: bytes,
    my_device: str,
    now: int,
) -> MessageRow:
    """The line of a file I offer, next in the conversation's order (a contact's identity or a
    group id)."""
    conversation = message_queries.conversation_id_for(conn, conversation_with, now, kind)
    lamport = min(message_queries.next_lamport(conn, conversation), MAX_LAMPORT)
    line = _line(offer.file_id, me, my_device, offer.name, offer.size, lamport, now, now)
    row = message_queries.insert_message(conn, conversation, line)
    assert row is not None  # a new file id
    return row


def add_received_line(
    conn: Connection,
    *,
    conversation_with: bytes,
    kind: ConversationKind,
    offer: FileOffer,
    sender_identity: bytes,
    sender_device: str,
    lamport: int | None,
    sent_at: int,
    now: int,
) -> MessageRow | None:
    """The line of a file offered to me, unread; None if the file id is already a line here.
    Without a `lamport` (an offer that carries none) it goes after everything seen so far."""
    conversation = message_queries.conversation_id_for(conn, conversation_with, now, kind)
    if lamport is None:
        lamport = min(message_queries.next_lamport(conn, conversation), MAX_LAMPORT)
    line = _line(
        offer.file_id,
        sender_identity,
        sender_device,
        offer.name,
        offer.size,
        lamport,
        sent_at,
        now,
        outgoing=False,
    )
    return message_queries.insert_message(conn, conversation, line)


def add_copied_line(
    conn: Connection,
    *,
    message_id: bytes,
    copy: FileLineCopy,
    me: bytes,
    my_device: str,
    lamport: int,
    sent_at: int,
    now: int,
) -> MessageRow | None:
    """The line of a file another device of mine (`my_device`) offered; None if it is here
    already. Receipts for it come to every device of mine, so its state follows."""
    kind: ConversationKind = "group" if copy.group else "direct"
    conversation = message_queries.conversation_id_for(conn, copy.conversation_with, now, kind)
    line = _line(message_id, me, my_device, copy.name, copy.size, lamport, sent_at, now)
    return message_queries.insert_message(conn, conversation, line)


def _line(
    message_id: bytes,
    sender_identity: bytes,
    sender_device: str,
    name: str,
    size: int,
    lamport: int,
    sent_at: int,
    now: int,
    *,
    outgoing: bool = True,
) -> NewMessage:
    """A file's line: mine `pending`, theirs `unread`."""
    return NewMessage(
        message_id=message_id,
        sender_identity=sender_identity,
        sender_device=sender_device,
        outgoing=outgoing,
        kind="file",
        body=line_text(name, size),
        lamport=lamport,
        sent_at=sent_at,
        received_at=now,
        state="pending" if outgoing else "unread",
    )
