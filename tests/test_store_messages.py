"""Conversations, messages, search, the outbox, Olm sessions: real SQLCipher files, no mocks."""

from __future__ import annotations

import itertools
import os
import random
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path

import pytest
import sqlcipher3.dbapi2 as sqlcipher
from hypothesis import given, settings
from hypothesis import strategies as st

from p2pid.store import Connection, TrioStore, open_database
from p2pid.store.contacts import ContactRecord, get_contact, upsert_contact
from p2pid.store.db import apply_migrations, schema_version
from p2pid.store.messages import (
    Cursor,
    InvalidSearchError,
    MessageRow,
    NewMessage,
    NewOutboxEntry,
    SessionOwnerError,
    UnknownConversationError,
    conversation_id_for,
    count_attempt,
    count_pending,
    cursor_of,
    delete_sessions,
    devices_with_pending,
    drop_outbox_for_identity,
    enqueue,
    envelope_seen,
    get_conversation,
    get_message,
    insert_message,
    list_conversations,
    mark_delivered,
    mark_read,
    mark_read_up_to,
    next_lamport,
    page,
    pending_for_device,
    prune_received_envelopes,
    record_envelope,
    remove_from_outbox,
    replace_envelope,
    save_session,
    search,
    sessions_for,
)
from p2pid.store.migrations import LATEST_SCHEMA_VERSION, MIGRATIONS
from p2pid.store.queries import list_peers, upsert_peer_seen

ME = b"\x11" * 32
ALICE = b"\xa1" * 32
BOB = b"\xb0" * 32
MY_DEVICE = "12D3KooWMe"
ALICE_DEVICE = "12D3KooWAlice"
BOB_DEVICE = "12D3KooWBob"
NOW_MS = 1_800_000_000_000

MESSAGE_TABLES = {
    "conversations",
    "messages",
    "messages_fts",
    "outbox",
    "olm_sessions",
    "received_envelopes",
}

_ids = itertools.count(1)


@pytest.fixture
def key() -> bytes:
    return os.urandom(32)


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "p2pid.db"


@pytest.fixture
def conn(db_path: Path, key: bytes) -> Iterator[Connection]:
    connection = open_database(db_path, key, create=True)
    yield connection
    connection.close()


@pytest.fixture(scope="module")
def shared_conn(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Connection]:
    """One database for the property tests: each example uses a conversation of its own."""
    path = tmp_path_factory.mktemp("messages") / "p2pid.db"
    connection = open_database(path, os.urandom(32), create=True)
    yield connection
    connection.close()


def table_names(conn: Connection) -> set[str]:
    rows = conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'").fetchall()
    return {str(name) for (name,) in rows}


def mid(n: int) -> bytes:
    return n.to_bytes(16, "big")


def fresh_identity() -> bytes:
    return next(_ids).to_bytes(32, "big")


def message(
    n: int,
    *,
    lamport: int | None = None,
    sent_at: int | None = None,
    outgoing: bool = False,
    state: str | None = None,
    body: str | None = None,
    peer: bytes = ALICE,
    message_id: bytes | None = None,
) -> NewMessage:
    return NewMessage(
        message_id=mid(n) if message_id is None else message_id,
        sender_identity=ME if outgoing else peer,
        sender_device=MY_DEVICE if outgoing else ALICE_DEVICE,
        outgoing=outgoing,
        kind="text",
        body=f"message {n}" if body is None else body,
        lamport=n if lamport is None else lamport,
        sent_at=NOW_MS + n if sent_at is None else sent_at,
        received_at=NOW_MS + n if sent_at is None else sent_at,
        state=state or ("pending" if outgoing else "unread"),
    )


def add(conn: Connection, conversation_id: int, new: NewMessage) -> MessageRow:
    row = insert_message(conn, conversation_id, new)
    assert row is not None
    return row


def order_key(row: MessageRow) -> tuple[int, int, bytes]:
    return (row.lamport, row.sent_at, row.message_id)


def walk_back(conn: Connection, conversation_id: int, size: int) -> list[MessageRow]:
    """Every message of the conversation, by pages from the newest, in display order."""
    pages: list[list[MessageRow]] = []
    before: Cursor | None = None
    while chunk := page(conn, conversation_id, size, before):
        assert len(chunk) <= size
        pages.append(chunk)
        before = Cursor.decode(cursor_of(chunk[0]).encode())
    return [row for chunk in reversed(pages) for row in chunk]


def plan(conn: Connection, sql: str, parameters: tuple[object, ...] = ()) -> str:
    rows = conn.execute(f"EXPLAIN QUERY PLAN {sql}", parameters).fetchall()
    return "\n".join(str(row[3]) for row in rows)


def explain_what_runs(conn: Connection, call: Callable[[], object], marker: str = "") -> str:
    """The query plan of the statement `call` runs that contains `marker` (and is the only one)."""
    executed: list[str] = []
    set_trace = getattr(conn, "set_trace_callback")  # noqa: B009 - not in the Connection Protocol
    set_trace(executed.append)
    try:
        call()
    finally:
        set_trace(None)
    statements = [
        sql for sql in executed if marker in sql and not sql.startswith(("SAVEPOINT", "RELEASE"))
    ]
    assert len(statements) == 1, executed
    return plan(conn, statements[0])  # the trace shows it with its parameters bound


def bodies(rows: list[MessageRow]) -> list[str]:
    return [row.body for row in rows]


def fts_in_sync(conn: Connection) -> None:
    conn.execute("INSERT INTO messages_fts (messages_fts) VALUES ('integrity-check')")


# --- migration 3 --------------------------------------------------------------------------


def test_a_fresh_database_has_the_message_tables(conn: Connection) -> None:
    assert schema_version(conn) == LATEST_SCHEMA_VERSION >= 3
    assert table_names(conn) >= MESSAGE_TABLES | {"contacts", "peers"}
    assert conn.execute("PRAGMA foreign_key_check").fetchall() == []


def test_a_version_2_database_is_upgraded_at_open(db_path: Path, key: bytes) -> None:
    old = sqlcipher.connect(str(db_path), isolation_level=None)
    old.execute(f"PRAGMA key = \"x'{key.hex()}'\"")
    old.execute("PRAGMA journal_mode = WAL")
    assert apply_migrations(old, MIGRATIONS[:2]) == 2
    upsert_peer_seen(old, "kept-peer", ["/ip4/127.0.0.1/tcp/1"], "manual", {}, 5)
    upsert_contact(old, ContactRecord(ALICE, "Alice", None, 0, ()), NOW_MS)
    assert not table_names(old) & MESSAGE_TABLES
    old.close()

    upgraded = open_database(db_path, key)
    try:
        assert schema_version(upgraded) == LATEST_SCHEMA_VERSION
        assert table_names(upgraded) >= MESSAGE_TABLES
        assert [peer.peer_id for peer in list_peers(upgraded)] == ["kept-peer"]
        assert get_contact(upgraded, ALICE) is not None
        conversation = conversation_id_for(upgraded, ALICE, NOW_MS)
        add(upgraded, conversation, message(1, body="after the upgrade"))
        assert bodies(search(upgraded, "upgrade")) == ["after the upgrade"]
    finally:
        upgraded.close()

    again = open_database(db_path, key)
    try:
        assert schema_version(again) == LATEST_SCHEMA_VERSION
        assert bodies(page(again, conversation, 10)) == ["after the upgrade"]
    finally:
        again.close()


def test_migration_3_applies_on_top_of_2_in_one_step(conn: Connection) -> None:
    fresh = sqlcipher.connect(":memory:", isolation_level=None)
    try:
        assert apply_migrations(fresh, MIGRATIONS[:2]) == 2
        assert apply_migrations(fresh, MIGRATIONS) == LATEST_SCHEMA_VERSION
        assert table_names(fresh) == table_names(conn)
    finally:
        fresh.close()


def test_the_schema_refuses_inconsistent_rows(conn: Connection) -> None:
    conversation = conversation_id_for(conn, ALICE, NOW_MS)
    columns = (
        "INSERT INTO messages (conversation_id, message_id, sender_identity, sender_device,"
        " outgoing, body, lamport, sent_at, received_at, state)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
    )
    for outgoing, state in [(1, "unread"), (0, "pending"), (0, "delivered"), (1, "sent")]:
        with pytest.raises(sqlcipher.IntegrityError):
            conn.execute(columns, (conversation, mid(1), ME, "d", outgoing, "x", 1, 1, 1, state))
    with pytest.raises(sqlcipher.IntegrityError):
        conn.execute(columns, (conversation, b"short", ME, "d", 1, "x", 1, 1, 1, "pending"))
    with pytest.raises(sqlcipher.IntegrityError):
        conn.execute(columns, (conversation, mid(1), ME, "d", 1, "x", 0, 1, 1, "pending"))


# --- conversations and inserting ----------------------------------------------------------


def test_a_conversation_is_created_once_per_peer(conn: Connection) -> None:
    assert get_conversation(conn, ALICE) is None
    first = conversation_id_for(conn, ALICE, NOW_MS)
    assert conversation_id_for(conn, ALICE, NOW_MS + 5) == first
    assert conversation_id_for(conn, BOB, NOW_MS) != first
    row = get_conversation(conn, ALICE)
    assert row is not None
    assert (row.id, row.peer_identity, row.lamport, row.unread) == (first, ALICE, 0, 0)
    assert (row.created_at, row.updated_at, row.last_message) == (NOW_MS, NOW_MS, None)
    with pytest.raises(ValueError, match="32 bytes"):
        conversation_id_for(conn, b"short", NOW_MS)


def test_inserting_moves_the_conversation_clock_and_unread_count(conn: Connection) -> None:
    conversation = conversation_id_for(conn, ALICE, NOW_MS)
    stored = add(conn, conversation, message(1, lamport=7, sent_at=NOW_MS + 100))
    assert stored == get_message(conn, mid(1))
    assert (stored.peer_identity, stored.state, stored.state_at) == (ALICE, "unread", None)
    add(conn, conversation, message(2, lamport=3, sent_at=NOW_MS + 50, state="read"))
    add(conn, conversation, message(3, lamport=4, outgoing=True, sent_at=NOW_MS + 70))
    row = get_conversation(conn, ALICE)
    assert row is not None
    assert (row.lamport, row.unread, row.updated_at) == (7, 1, NOW_MS + 100)
    assert next_lamport(conn, conversation) == 8
    assert next_lamport(conn, conversation) == 9


def test_a_duplicate_message_changes_nothing(conn: Connection) -> None:
    conversation = conversation_id_for(conn, ALICE, NOW_MS)
    add(conn, conversation, message(1, lamport=5))
    before = get_conversation(conn, ALICE)
    again = message(1, lamport=50, sent_at=NOW_MS + 10_000, body="changed")
    assert insert_message(conn, conversation, again) is None
    # Even into another conversation: a message id is stored once.
    assert insert_message(conn, conversation_id_for(conn, BOB, NOW_MS), again) is None
    assert get_conversation(conn, ALICE) == before
    assert before is not None and before.unread == 1
    assert bodies(page(conn, conversation, 10)) == ["message 1"]
    assert search(conn, "changed") == []


def test_malformed_messages_are_refused(conn: Connection) -> None:
    conversation = conversation_id_for(conn, ALICE, NOW_MS)
    with pytest.raises(ValueError, match="outgoing message cannot be 'unread'"):
        insert_message(conn, conversation, message(1, outgoing=True, state="unread"))
    with pytest.raises(ValueError, match="incoming message cannot be 'pending'"):
        insert_message(conn, conversation, message(1, state="pending"))
    with pytest.raises(ValueError, match="16 bytes"):
        insert_message(conn, conversation, message(1, message_id=b"x" * 15))
    with pytest.raises(ValueError, match="lamport"):
        insert_message(conn, conversation, message(1, lamport=0))
    with pytest.raises(UnknownConversationError):
        insert_message(conn, conversation + 100, message(1))
    with pytest.raises(UnknownConversationError):
        next_lamport(conn, conversation + 100)
    assert page(conn, conversation, 10) == []
    assert conn.in_transaction is False


def test_conversations_are_listed_by_last_update_with_their_last_message(
    conn: Connection,
) -> None:
    alice = conversation_id_for(conn, ALICE, NOW_MS)
    bob = conversation_id_for(conn, BOB, NOW_MS + 1)
    empty = conversation_id_for(conn, fresh_identity(), NOW_MS - 1)
    add(conn, alice, message(1, lamport=9, sent_at=NOW_MS + 10))
    # Received later, but earlier in display order: not the last message.
    add(conn, alice, message(2, lamport=2, sent_at=NOW_MS + 20))
    add(conn, bob, message(3, lamport=1, sent_at=NOW_MS + 15, peer=BOB))
    listed = list_conversations(conn)
    assert [row.id for row in listed] == [alice, bob, empty]
    assert [row.last_message.message_id if row.last_message else None for row in listed] == [
        mid(1),
        mid(3),
        None,
    ]
    assert listed[0].last_message == get_message(conn, mid(1))
    assert [row.id for row in list_conversations(conn, limit=1)] == [alice]


# --- pages --------------------------------------------------------------------------------


def test_pages_walk_back_through_every_message_once_in_display_order(conn: Connection) -> None:
    conversation = conversation_id_for(conn, ALICE, NOW_MS)
    other = conversation_id_for(conn, BOB, NOW_MS)
    rng = random.Random(7)
    ids = rng.sample(range(1, 10_000), 300)
    for index, n in enumerate(ids):
        # Interleaved clocks with many ties on lamport, and some ties on (lamport, sent_at).
        new = message(n, lamport=1 + index // 3, sent_at=NOW_MS + rng.choice([0, 1, 2]))
        add(conn, conversation, new)
        add(conn, other, message(20_000 + n, lamport=index + 1, peer=BOB))
    expected = sorted(page(conn, conversation, 1000), key=order_key)
    assert len(expected) == 300
    for size in (1, 7, 50, 299, 300, 301):
        walked = walk_back(conn, conversation, size)
        assert [row.message_id for row in walked] == [row.message_id for row in expected]
    newest = page(conn, conversation, 50)
    assert newest == expected[-50:]
    assert page(conn, conversation, 10, cursor_of(expected[0])) == []
    assert page(conn, conversation, 10, cursor_of(expected[5])) == expected[:5]


def test_a_page_is_an_index_search_without_sorting(conn: Connection) -> None:
    conversation = conversation_id_for(conn, ALICE, NOW_MS)
    for before in (None, Cursor(5, NOW_MS, mid(1))):
        found = explain_what_runs(conn, partial(page, conn, conversation, 50, before), "ORDER BY")
        assert "SEARCH m USING INDEX messages_order (conversation_id=?" in found
        assert "TEMP B-TREE" not in found
    found = explain_what_runs(conn, partial(page, conn, conversation, 50, Cursor(5, 6, mid(1))))
    assert "(conversation_id=? AND (lamport,sent_at,message_id)<(?,?,?))" in found


@settings(max_examples=60, deadline=None)
@given(
    keys=st.lists(
        st.tuples(st.integers(1, 12), st.integers(0, 6)), min_size=0, max_size=60, unique=False
    ),
    size=st.integers(1, 15),
)
def test_pages_follow_the_display_order_for_any_clocks(
    shared_conn: Connection, keys: list[tuple[int, int]], size: int
) -> None:
    conversation = conversation_id_for(shared_conn, fresh_identity(), NOW_MS)
    for lamport, sent_at in keys:
        message_id = os.urandom(16)
        add(
            shared_conn,
            conversation,
            message(0, lamport=lamport, sent_at=sent_at, message_id=message_id),
        )
    walked = walk_back(shared_conn, conversation, size)
    assert [order_key(row) for row in walked] == sorted(order_key(row) for row in walked)
    assert len({row.message_id for row in walked}) == len(walked) == len(keys)


def test_cursors_round_trip_as_text_and_refuse_garbage() -> None:
    cursor = Cursor(12, NOW_MS, mid(99))
    assert Cursor.decode(cursor.encode()) == cursor
    assert Cursor.decode(Cursor(1, -5, mid(0)).encode()) == Cursor(1, -5, mid(0))
    garbage = ["", "1.2", "1.2.3.4", f"x.1.{mid(1).hex()}", f"1.2.{mid(1).hex()}00", " 1.2.00"]
    for text in garbage:
        with pytest.raises(ValueError, match="not a message cursor"):
            Cursor.decode(text)
    with pytest.raises(ValueError, match="16 bytes"):
        Cursor(1, 2, b"short")


# --- search -------------------------------------------------------------------------------


@pytest.fixture
def chat(conn: Connection) -> tuple[Connection, int, int]:
    alice = conversation_id_for(conn, ALICE, NOW_MS)
    bob = conversation_id_for(conn, BOB, NOW_MS)
    texts = [
        (alice, "Hello world, how are you?"),
        (alice, "The world is big"),
        (alice, "hello there"),
        (alice, "Meet at the café at noon"),
        (bob, "hello from Bob"),
        (alice, "help me with the helicopter"),
        (bob, "Crème brûlée for dessert"),
        (alice, "world hello"),
    ]
    for n, (conversation, body) in enumerate(texts, start=1):
        add(conn, conversation, message(n, body=body, peer=ALICE if conversation == alice else BOB))
    return conn, alice, bob


def test_search_words_phrases_and_prefixes(chat: tuple[Connection, int, int]) -> None:
    conn, _, _ = chat
    assert bodies(search(conn, "hello world")) == ["world hello", "Hello world, how are you?"]
    assert bodies(search(conn, '"hello world"')) == ["Hello world, how are you?"]
    assert bodies(search(conn, "hel*")) == [
        "world hello",
        "help me with the helicopter",
        "hello from Bob",
        "hello there",
        "Hello world, how are you?",
    ]
    assert bodies(search(conn, "hello NOT world")) == ["hello from Bob", "hello there"]
    assert bodies(search(conn, "hello", limit=2)) == ["world hello", "hello from Bob"]
    assert search(conn, "nothing") == []


def test_search_ignores_diacritics_and_case(chat: tuple[Connection, int, int]) -> None:
    conn, _, _ = chat
    assert bodies(search(conn, "cafe")) == ["Meet at the café at noon"]
    assert bodies(search(conn, "CAFÉ")) == ["Meet at the café at noon"]
    assert bodies(search(conn, "creme brulee")) == ["Crème brûlée for dessert"]


def test_search_within_a_conversation(chat: tuple[Connection, int, int]) -> None:
    conn, alice, bob = chat
    assert bodies(search(conn, "hello", conversation_id=bob)) == ["hello from Bob"]
    found = search(conn, "hello", conversation_id=alice)
    assert len(found) == 3 and {row.peer_identity for row in found} == {ALICE}
    assert found == sorted(found, key=lambda row: -row.rowid)


def test_malformed_searches_fall_back_to_quoted_words(chat: tuple[Connection, int, int]) -> None:
    conn, _, _ = chat
    assert bodies(search(conn, '"hello')) == bodies(search(conn, "hello"))
    assert bodies(search(conn, "AND")) == []  # the word "and", not an operator
    assert bodies(search(conn, "hello AND")) == []
    assert bodies(search(conn, "noon: café")) == ["Meet at the café at noon"]  # not a column
    assert bodies(search(conn, "hello-world")) == ["Hello world, how are you?"]
    assert bodies(search(conn, "hel* (")) == bodies(search(conn, "hel*"))
    assert search(conn, "!!! ???") == []


def test_a_search_within_a_conversation_stays_within_it(
    chat: tuple[Connection, int, int],
) -> None:
    conn, alice, bob = chat
    # The conversation filter is a token of the full-text index: the user's words never
    # match it, and unbalanced parentheses cannot escape from it.
    assert search(conn, str(alice)) == search(conn, str(bob)) == []
    for text in ["hello) OR (hello", "hello)) OR ((hello", 'hello") OR ("hello', "world) OR x:("]:
        found = search(conn, text, conversation_id=bob)
        assert {row.conversation_id for row in found} <= {bob}, text
    assert bodies(search(conn, "(hello OR dessert) NOT bob", conversation_id=bob)) == [
        "Crème brûlée for dessert"
    ]


def test_an_empty_search_is_refused(conn: Connection) -> None:
    for text in ["", "   \n"]:
        with pytest.raises(InvalidSearchError, match="empty"):
            search(conn, text)


def test_the_index_follows_edits_and_deletes(chat: tuple[Connection, int, int]) -> None:
    conn, _, bob = chat
    conn.execute("UPDATE messages SET body = 'goodbye world' WHERE message_id = ?", (mid(3),))
    assert bodies(search(conn, "goodbye")) == ["goodbye world"]
    assert "hello there" not in bodies(search(conn, "there"))
    conn.execute("UPDATE messages SET state = 'read' WHERE message_id = ?", (mid(2),))
    conn.execute("UPDATE messages SET conversation_id = ? WHERE message_id = ?", (bob, mid(4)))
    assert bodies(search(conn, "cafe", conversation_id=bob)) == ["Meet at the café at noon"]
    conn.execute("DELETE FROM messages WHERE message_id = ?", (mid(1),))
    assert bodies(search(conn, "hello world")) == ["world hello"]
    conn.execute("DELETE FROM conversations WHERE id = ?", (bob,))  # cascades to its messages
    assert bodies(search(conn, "hello", conversation_id=None)) == ["world hello"]
    assert search(conn, "dessert") == []
    fts_in_sync(conn)


def test_a_search_runs_newest_first_from_the_full_text_index(conn: Connection) -> None:
    conversation = conversation_id_for(conn, ALICE, NOW_MS)
    for within in (None, conversation):
        found = explain_what_runs(conn, partial(search, conn, "hello", within), "MATCH")
        lines = found.splitlines()
        # The full-text index drives the loop (each match, newest first, then its message),
        # rather than every message of the conversation probing the index.
        outer = next(i for i, line in enumerate(lines) if line.startswith("SCAN f VIRTUAL TABLE"))
        assert lines[outer + 1] == "SEARCH m USING INTEGER PRIMARY KEY (rowid=?)", found
        assert "TEMP B-TREE" not in found


# --- read and delivery states -------------------------------------------------------------


def test_mark_read_reads_every_unread_incoming_message(conn: Connection) -> None:
    alice = conversation_id_for(conn, ALICE, NOW_MS)
    bob = conversation_id_for(conn, BOB, NOW_MS)
    add(conn, alice, message(1, lamport=1))
    add(conn, alice, message(2, lamport=5))
    add(conn, alice, message(3, lamport=3))
    add(conn, alice, message(4, lamport=6, outgoing=True))
    add(conn, bob, message(5, lamport=1, peer=BOB))
    conversation = get_conversation(conn, ALICE)
    assert conversation is not None and conversation.unread == 3

    newest = mark_read(conn, alice, NOW_MS + 500)
    assert newest is not None and newest.message_id == mid(2)  # highest lamport, incoming
    assert (newest.state, newest.state_at) == ("read", NOW_MS + 500)
    rows = {row.message_id: row for row in page(conn, alice, 10)}
    assert [rows[mid(n)].state for n in (1, 2, 3, 4)] == ["read", "read", "read", "pending"]
    assert rows[mid(4)].state_at is None
    assert (conversation := get_conversation(conn, ALICE)) and conversation.unread == 0
    assert (other := get_conversation(conn, BOB)) and other.unread == 1
    assert mark_read(conn, alice, NOW_MS + 600) is None
    assert get_message(conn, mid(1)) == rows[mid(1)]  # state_at kept

    # A late message from before: reading it names the newest incoming message all the same.
    add(conn, alice, message(6, lamport=2))
    newest = mark_read(conn, alice, NOW_MS + 700)
    assert newest is not None and newest.message_id == mid(2)


def test_mark_read_only_visits_unread_rows(conn: Connection) -> None:
    conversation = conversation_id_for(conn, ALICE, NOW_MS)
    add(conn, conversation, message(1))
    found = explain_what_runs(conn, partial(mark_read, conn, conversation, NOW_MS), "'unread'")
    assert "USING COVERING INDEX messages_unread (conversation_id=?)" in found


def test_delivery_receipts_only_touch_my_pending_messages_to_that_peer(
    conn: Connection,
) -> None:
    alice = conversation_id_for(conn, ALICE, NOW_MS)
    bob = conversation_id_for(conn, BOB, NOW_MS)
    add(conn, alice, message(1, lamport=2, outgoing=True))
    add(conn, alice, message(2, lamport=1, outgoing=True))
    add(conn, alice, message(3, lamport=3, outgoing=True, state="read"))
    add(conn, alice, message(4, lamport=4))  # incoming
    add(conn, bob, message(5, lamport=1, outgoing=True))
    ids = [mid(n) for n in (1, 2, 3, 4, 5, 99)] + [mid(1)]
    changed = mark_delivered(conn, ids, ALICE, NOW_MS + 9)
    assert [row.message_id for row in changed] == [mid(2), mid(1)]  # display order
    assert all(row.state == "delivered" and row.state_at == NOW_MS + 9 for row in changed)
    assert all(row.peer_identity == ALICE for row in changed)
    assert changed[0] == get_message(conn, mid(2))
    states = {n: row.state for n in range(1, 6) if (row := get_message(conn, mid(n)))}
    assert states == {1: "delivered", 2: "delivered", 3: "read", 4: "unread", 5: "pending"}
    assert mark_delivered(conn, [mid(1)], ALICE, NOW_MS + 10) == []  # already delivered
    assert mark_delivered(conn, [mid(5)], fresh_identity(), NOW_MS) == []
    assert mark_delivered(conn, [], ALICE, NOW_MS) == []
    many = [mid(n) for n in range(10_000, 11_200)] + [mid(5)]
    assert [row.message_id for row in mark_delivered(conn, many, BOB, NOW_MS)] == [mid(5)]
    with pytest.raises(ValueError, match="16 bytes"):
        mark_delivered(conn, [b"short"], ALICE, NOW_MS)


def test_read_up_to_follows_the_display_order(conn: Connection) -> None:
    alice = conversation_id_for(conn, ALICE, NOW_MS)
    bob = conversation_id_for(conn, BOB, NOW_MS)
    # Display order: 1, 2 (tie on lamport, earlier sent_at), 3 (tie on both, higher id), 4, 5.
    add(conn, alice, message(1, lamport=1, outgoing=True, state="read"))
    add(conn, alice, message(3, lamport=2, sent_at=NOW_MS, outgoing=True, state="delivered"))
    add(conn, alice, message(2, lamport=2, sent_at=NOW_MS, outgoing=True))
    add(conn, alice, message(6, lamport=2, sent_at=NOW_MS - 1))  # incoming
    add(conn, alice, message(4, lamport=3, outgoing=True))
    add(conn, alice, message(5, lamport=4, outgoing=True))
    add(conn, bob, message(7, lamport=1, outgoing=True))

    assert mark_read_up_to(conn, mid(6), ALICE, NOW_MS) == []  # incoming: not a receipt target
    assert mark_read_up_to(conn, mid(7), ALICE, NOW_MS) == []  # another conversation
    assert mark_read_up_to(conn, mid(99), ALICE, NOW_MS) == []

    changed = mark_read_up_to(conn, mid(3), ALICE, NOW_MS + 1)
    assert [row.message_id for row in changed] == [mid(2), mid(3)]
    assert all((row.state, row.state_at) == ("read", NOW_MS + 1) for row in changed)
    assert (row4 := get_message(conn, mid(4))) and row4.state == "pending"
    assert (row6 := get_message(conn, mid(6))) and row6.state == "unread"
    assert mark_read_up_to(conn, mid(2), ALICE, NOW_MS + 2) == []
    changed = mark_read_up_to(conn, mid(5), ALICE, NOW_MS + 3)
    assert [row.message_id for row in changed] == [mid(4), mid(5)]
    assert (row7 := get_message(conn, mid(7))) and row7.state == "pending"


def test_read_up_to_only_visits_messages_not_read_yet(conn: Connection) -> None:
    conversation = conversation_id_for(conn, ALICE, NOW_MS)
    add(conn, conversation, message(1, outgoing=True))
    call = partial(mark_read_up_to, conn, mid(1), ALICE, NOW_MS)
    found = explain_what_runs(conn, call, "UPDATE")
    assert "SEARCH messages USING INDEX messages_outgoing_unread (conversation_id=? AND" in found


# --- the outbox ---------------------------------------------------------------------------


def entry(
    n: int, device: str = ALICE_DEVICE, size: int = 10, identity: bytes = ALICE
) -> NewOutboxEntry:
    return NewOutboxEntry(
        message_id=mid(n),
        recipient_identity=identity,
        recipient_device=device,
        payload=f"plaintext {n}".encode(),
        envelope=bytes([n % 256]) * size,
        session_id="session-1",
        created_at=NOW_MS + n,
    )


def test_the_outbox_is_first_in_first_out_per_device(conn: Connection) -> None:
    first = enqueue(conn, entry(1))
    enqueue(conn, entry(2, device=BOB_DEVICE, identity=BOB))
    third = enqueue(conn, entry(3))
    assert enqueue(conn, entry(1)) == first  # the same message for the same device: queued once
    enqueue(conn, entry(1, device="12D3KooWAlice2"))  # another device of hers: its own entry
    queued = pending_for_device(conn, ALICE_DEVICE, 10)
    assert [item.id for item in queued] == [first, third]
    assert queued[0].payload == b"plaintext 1" and queued[0].envelope == bytes([1]) * 10
    assert (queued[0].recipient_identity, queued[0].attempts) == (ALICE, 0)
    assert [item.id for item in pending_for_device(conn, ALICE_DEVICE, 1)] == [first]
    assert pending_for_device(conn, "nobody", 10) == []
    assert devices_with_pending(conn) == [ALICE_DEVICE, BOB_DEVICE, "12D3KooWAlice2"]
    assert count_pending(conn) == 4
    assert "plaintext" not in repr(queued[0])


def test_a_batch_stops_before_max_bytes_but_holds_at_least_one(conn: Connection) -> None:
    for n, size in enumerate([40, 30, 30, 10], start=1):
        enqueue(conn, entry(n, size=size))

    def sizes(limit: int, max_bytes: int) -> list[int]:
        entries = pending_for_device(conn, ALICE_DEVICE, limit, max_bytes=max_bytes)
        return [len(item.envelope) for item in entries]

    assert sizes(10, max_bytes=100) == [40, 30, 30]
    assert sizes(10, max_bytes=99) == [40, 30]
    assert sizes(10, max_bytes=5) == [40]
    assert sizes(2, max_bytes=1000) == [40, 30]


def test_outbox_attempts_replacements_and_removal(conn: Connection) -> None:
    ids = [enqueue(conn, entry(n)) for n in (1, 2, 3)]
    enqueue(conn, entry(4, device=BOB_DEVICE, identity=BOB))
    count_attempt(conn, ids[:2])
    count_attempt(conn, ids[:1])
    assert replace_envelope(conn, ids[1], b"new envelope", "session-2")
    assert not replace_envelope(conn, 9999, b"x", "s")
    queued = pending_for_device(conn, ALICE_DEVICE, 10)
    assert [item.attempts for item in queued] == [2, 1, 0]
    assert (queued[1].envelope, queued[1].session_id) == (b"new envelope", "session-2")
    assert queued[1].payload == b"plaintext 2"
    assert remove_from_outbox(conn, [ids[0], ids[0], 9999]) == 1
    assert [item.id for item in pending_for_device(conn, ALICE_DEVICE, 10)] == ids[1:]
    assert remove_from_outbox(conn, []) == 0
    assert drop_outbox_for_identity(conn, ALICE) == 2
    assert devices_with_pending(conn) == [BOB_DEVICE]
    assert count_pending(conn) == 1
    with pytest.raises(ValueError, match="16 bytes"):
        enqueue(conn, NewOutboxEntry(b"x", ALICE, ALICE_DEVICE, b"", b"", "s", 0))


# --- Olm sessions and received envelopes --------------------------------------------------


def test_sessions_are_listed_most_recently_used_first(conn: Connection) -> None:
    save_session(conn, "s1", "curve-a", "pickle-1", NOW_MS)
    save_session(conn, "s2", "curve-a", "pickle-2", NOW_MS + 10)
    save_session(conn, "s3", "curve-b", "pickle-3", NOW_MS + 20)
    assert [row.session_id for row in sessions_for(conn, "curve-a")] == ["s2", "s1"]
    save_session(conn, "s1", "curve-a", "pickle-1b", NOW_MS + 30)
    sessions = sessions_for(conn, "curve-a")
    assert [row.session_id for row in sessions] == ["s1", "s2"]
    assert (sessions[0].pickle, sessions[0].created_at) == ("pickle-1b", NOW_MS)
    assert sessions[0].last_used_at == NOW_MS + 30
    assert "pickle" not in repr(sessions[0])
    with pytest.raises(SessionOwnerError):
        save_session(conn, "s1", "curve-b", "stolen", NOW_MS + 40)
    assert sessions_for(conn, "curve-a")[0].pickle == "pickle-1b"
    assert delete_sessions(conn, "curve-a") == 2
    assert sessions_for(conn, "curve-a") == []
    assert [row.session_id for row in sessions_for(conn, "curve-b")] == ["s3"]


def test_received_envelopes_are_recorded_once(conn: Connection) -> None:
    assert not envelope_seen(conn, ALICE_DEVICE, mid(1))
    assert record_envelope(conn, ALICE_DEVICE, mid(1), NOW_MS)
    assert not record_envelope(conn, ALICE_DEVICE, mid(1), NOW_MS + 1)
    assert envelope_seen(conn, ALICE_DEVICE, mid(1))
    assert record_envelope(conn, BOB_DEVICE, mid(1), NOW_MS)  # another sender's id space
    assert not envelope_seen(conn, ALICE_DEVICE, mid(2))
    with pytest.raises(ValueError, match="16 bytes"):
        record_envelope(conn, ALICE_DEVICE, b"short", NOW_MS)


# --- through the trio store ---------------------------------------------------------------


async def test_messages_through_the_trio_store(db_path: Path, key: bytes) -> None:
    async with TrioStore.open(db_path, key, create=True) as store:
        conversation = await store.write(
            partial(conversation_id_for, peer_identity=ALICE, now_ms=1)
        )
        lamport = await store.write(partial(next_lamport, conversation_id=conversation))
        new = message(1, lamport=lamport, outgoing=True, body="sent through trio")
        stored = await store.write(
            partial(insert_message, conversation_id=conversation, message=new)
        )
        assert stored is not None
        assert await store.read(partial(page, conversation_id=conversation, limit=10)) == [stored]
        assert await store.read(partial(search, query="trio")) == [stored]
        assert await store.read(list_conversations)


def test_received_envelopes_are_pruned_by_age(conn: Connection) -> None:
    sender = "12D3KooWSender"
    old, new = os.urandom(16), os.urandom(16)
    assert record_envelope(conn, sender, old, 1_000)
    assert record_envelope(conn, sender, new, 5_000)
    assert prune_received_envelopes(conn, 2_000) == 1
    assert not envelope_seen(conn, sender, old)
    assert envelope_seen(conn, sender, new)
