"""The store's side of groups (migration 6): groups, their logs, Megolm sessions, kept and held
envelopes, receipts, invites, join requests, and group-only members. Real SQLCipher files."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlcipher3.dbapi2 as sqlcipher

from p2pid.store import Connection, open_database
from p2pid.store.contacts import (
    ContactDevice,
    ContactRecord,
    ContactUpsert,
    InviteRow,
    UnknownContactError,
    contact_for_peer,
    create_invite,
    fields_visible_to,
    get_contact,
    grant_field,
    list_contacts,
    list_group_only,
    list_known_people,
    remove_contact,
    save_self,
    set_blocked,
    set_contact_fields,
    set_profile_field,
    upsert_contact,
)
from p2pid.store.db import apply_migrations, schema_version
from p2pid.store.groups import (
    GroupEnvelopeRow,
    GroupExistsError,
    InboundRow,
    OutboundRow,
    UnknownGroupError,
    add_group_invite,
    add_join_request,
    add_ops,
    create_group,
    delete_group,
    delete_outbound,
    envelope_ids,
    get_envelopes,
    get_group,
    get_group_invite,
    get_inbound,
    get_join_request,
    get_outbound,
    hold,
    inbound_for_group,
    known_ids,
    latest_sent_at,
    list_groups,
    list_join_requests,
    ops_of,
    owe_receipt,
    prune_held,
    receipts_for,
    save_inbound,
    save_outbound,
    set_join_request_state,
    set_receipt,
    store_envelope,
    take_held,
    take_owed_receipts,
    update_group,
    update_seen,
    upgrade_message_state,
)
from p2pid.store.messages import (
    NewMessage,
    conversation_id_for,
    get_conversation,
    get_message,
    insert_message,
    list_conversations,
    mark_failed_if_undeliverable,
    mark_read,
    unread_messages,
)
from p2pid.store.migrations import LATEST_SCHEMA_VERSION, MIGRATIONS

NOW_MS = 1_800_000_000_000
ME = b"\x01" * 32
ALICE = b"\xa1" * 32
BOB = b"\xb0" * 32
CAROL = b"\xc0" * 32
GROUP = b"\x9a" * 32
OTHER_GROUP = b"\x9b" * 32
ALICE_PHONE = ContactDevice("12D3KooWAlice", b"\x21" * 32, "curve-a", "ed-a", "phone", 1)
BOB_PHONE = ContactDevice("12D3KooWBob", b"\x22" * 32, "curve-b", "ed-b", "phone", 2)
MY_PHONE = ContactDevice("12D3KooWMe", b"\x23" * 32, "curve-m", "ed-m", "phone", 3)


@pytest.fixture
def conn(tmp_path: Path) -> Iterator[Connection]:
    connection = open_database(tmp_path / "p2pid.db", os.urandom(32), create=True)
    yield connection
    connection.close()


@pytest.fixture
def group(conn: Connection) -> bytes:
    create_group(conn, GROUP, "Climbing", "🧗", "admin", NOW_MS)
    return GROUP


def mid(n: int) -> bytes:
    return n.to_bytes(16, "big")


def record(key: bytes, name: str, version: int = 0, *devices: ContactDevice) -> ContactRecord:
    return ContactRecord(key, name, None if version == 0 else b"list", version, devices)


def envelope(n: int, sent_at: int, group_id: bytes = GROUP) -> GroupEnvelopeRow:
    return GroupEnvelopeRow(
        message_id=mid(n),
        group_id=group_id,
        sender_identity=ALICE,
        sender_device_key=ALICE_PHONE.device_key,
        session_id="s-alice",
        message_index=n,
        ciphertext=b"ct%d" % n,
        sent_at=sent_at,
        received_at=NOW_MS,
    )


def inbound(session_id: str, group_id: bytes = GROUP, created_at: int = NOW_MS) -> InboundRow:
    return InboundRow(
        session_id=session_id,
        group_id=group_id,
        sender_identity=ALICE,
        sender_device_key=ALICE_PHONE.device_key,
        sender_peer_id=ALICE_PHONE.peer_id,
        pickle="pickle-" + session_id,
        first_index=3,
        share=b"share",
        seen=b"seen-0",
        created_at=created_at,
    )


def my_group_message(conn: Connection, n: int, state: str = "pending") -> bytes:
    conversation = conversation_id_for(conn, GROUP, NOW_MS, "group")
    new = NewMessage(
        mid(n), ME, MY_PHONE.peer_id, True, "text", f"m{n}", n, NOW_MS + n, NOW_MS, state
    )
    assert insert_message(conn, conversation, new) is not None
    return mid(n)


def count(conn: Connection, table: str) -> int:
    return int(conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0])


# --- migration 6 --------------------------------------------------------------------------


def test_migration_6_keeps_the_rows_of_a_version_5_store(tmp_path: Path) -> None:
    path, key = tmp_path / "old.db", os.urandom(32)
    old = sqlcipher.connect(str(path), isolation_level=None)
    old.execute(f"PRAGMA key = \"x'{key.hex()}'\"")
    assert apply_migrations(old, MIGRATIONS[:5]) == 5
    upsert_contact(old, record(ALICE, "Alice", 1, ALICE_PHONE), NOW_MS)
    conversation = conversation_id_for(old, ALICE, NOW_MS)
    message = NewMessage(mid(1), ALICE, ALICE_PHONE.peer_id, False, "text", "hi", 1, 5, 6, "unread")
    assert insert_message(old, conversation, message) is not None
    old.close()

    upgraded = open_database(path, key)
    try:
        assert schema_version(upgraded) == LATEST_SCHEMA_VERSION >= 6
        alice = get_contact(upgraded, ALICE)
        assert alice is not None and not alice.group_only
        assert [d.peer_id for d in alice.devices] == [ALICE_PHONE.peer_id]
        [kept] = list_conversations(upgraded)
        assert (kept.id, kept.peer_identity, kept.kind, kept.unread) == (
            conversation,
            ALICE,
            "direct",
            1,
        )
        assert kept.last_message is not None and kept.last_message.body == "hi"
        assert list_groups(upgraded) == []
        assert upgraded.execute("PRAGMA foreign_key_check").fetchall() == []
    finally:
        upgraded.close()


def test_migration_6_on_top_of_5_gives_the_fresh_schema(conn: Connection) -> None:
    fresh = sqlcipher.connect(":memory:", isolation_level=None)
    try:
        assert apply_migrations(fresh, MIGRATIONS[:5]) == 5
        assert apply_migrations(fresh, MIGRATIONS) == LATEST_SCHEMA_VERSION
        schema = "SELECT type, name, sql FROM sqlite_master ORDER BY name"
        assert fresh.execute(schema).fetchall() == conn.execute(schema).fetchall()
    finally:
        fresh.close()


def test_the_schema_checks_its_values(conn: Connection, group: bytes) -> None:
    upsert_contact(conn, record(ALICE, "Alice"), NOW_MS)
    conversation_id_for(conn, ALICE, NOW_MS)
    with pytest.raises(sqlcipher.IntegrityError):
        conn.execute("UPDATE contacts SET group_only = 2")
    with pytest.raises(sqlcipher.IntegrityError):
        conn.execute("UPDATE conversations SET kind = 'channel'")
    with pytest.raises(sqlcipher.IntegrityError):
        conn.execute("INSERT INTO groups VALUES (?, 'x', '', 'admin', 1, 0, 0)", (b"short",))
    with pytest.raises(sqlcipher.IntegrityError):
        conn.execute(
            "INSERT INTO group_ops (group_id, op_id, signed, received_at) VALUES (?, ?, ?, ?)",
            (OTHER_GROUP, b"op", b"signed", NOW_MS),
        )
    with pytest.raises(sqlcipher.IntegrityError):
        conn.execute(
            "INSERT INTO group_outbound_sessions (group_id, session_id, pickle, shared_with,"
            " created_at) VALUES (?, 's', 'p', '{}', 0)",
            (group,),
        )


# --- group-only members -------------------------------------------------------------------


def test_a_group_only_member_is_hidden_from_contact_listings(conn: Connection) -> None:
    assert upsert_contact(conn, record(ALICE, "Alice"), NOW_MS) is ContactUpsert.ADDED
    added = upsert_contact(conn, record(BOB, "bob", 1, BOB_PHONE), NOW_MS, group_only=True)
    assert added is ContactUpsert.ADDED
    assert [c.identity_key for c in list_contacts(conn)] == [ALICE]
    assert get_contact(conn, BOB) is None
    assert contact_for_peer(conn, BOB_PHONE.peer_id) is None

    bob = get_contact(conn, BOB, include_group_only=True)
    assert bob is not None and bob.group_only and bob.name == "bob"
    assert contact_for_peer(conn, BOB_PHONE.peer_id, include_group_only=True) == bob
    assert list_group_only(conn) == [bob]
    assert [c.identity_key for c in list_known_people(conn)] == [ALICE, BOB]
    alice = get_contact(conn, ALICE, include_group_only=True)
    assert alice is not None and not alice.group_only


def test_my_own_row_is_never_among_known_people(conn: Connection) -> None:
    save_self(conn, record(ME, "Me", 1, MY_PHONE), NOW_MS)
    upsert_contact(conn, record(BOB, "Bob"), NOW_MS, group_only=True)
    assert [c.identity_key for c in list_known_people(conn)] == [BOB]
    assert get_contact(conn, ME, include_group_only=True) is None
    mine = get_contact(conn, ME, include_self=True, include_group_only=True)
    assert mine is not None and not mine.group_only


def test_blocked_group_only_members_are_still_known_people(conn: Connection) -> None:
    upsert_contact(conn, record(BOB, "Bob"), NOW_MS, group_only=True)
    set_blocked(conn, BOB, True, NOW_MS)
    [bob] = list_known_people(conn)
    assert bob.blocked and bob.group_only
    assert list_contacts(conn) == []


def test_upserting_as_a_contact_promotes_a_group_only_member(conn: Connection) -> None:
    upsert_contact(conn, record(BOB, "Bob", 1, BOB_PHONE), NOW_MS, group_only=True)
    # the same list again, now as a contact (an invite, a request, a copy from my device)
    outcome = upsert_contact(conn, record(BOB, "Bob", 1, BOB_PHONE), NOW_MS + 5)
    assert outcome is ContactUpsert.DEVICES_KEPT
    bob = get_contact(conn, BOB)
    assert bob is not None and not bob.group_only and bob.updated_at == NOW_MS + 5
    assert [d.peer_id for d in bob.devices] == [BOB_PHONE.peer_id]
    assert list_group_only(conn) == []
    # a later group-only upsert (a newer list through a group) never demotes the contact
    outcome = upsert_contact(conn, record(BOB, "Bob", 2, BOB_PHONE), NOW_MS + 9, group_only=True)
    assert outcome is ContactUpsert.DEVICES_UPDATED
    bob = get_contact(conn, BOB)
    assert bob is not None and not bob.group_only and bob.device_list_version == 2


def test_a_contact_is_never_turned_group_only(conn: Connection) -> None:
    upsert_contact(conn, record(ALICE, "Alice", 1, ALICE_PHONE), NOW_MS)
    upsert_contact(conn, record(ALICE, "Alice", 1, ALICE_PHONE), NOW_MS + 1, group_only=True)
    upsert_contact(conn, record(ALICE, "Alicia", 1, ALICE_PHONE), NOW_MS + 2, group_only=True)
    alice = get_contact(conn, ALICE)
    assert alice is not None and not alice.group_only and alice.display_name == "Alicia"
    assert list_group_only(conn) == []


def test_a_group_only_upsert_keeps_the_flag(conn: Connection) -> None:
    upsert_contact(conn, record(BOB, "Bob", 1, BOB_PHONE), NOW_MS, group_only=True)
    upsert_contact(conn, record(BOB, "Robert", 2, BOB_PHONE), NOW_MS + 1, group_only=True)
    [bob] = list_group_only(conn)
    assert (bob.display_name, bob.device_list_version, bob.updated_at) == ("Robert", 2, NOW_MS + 1)


def test_group_only_members_get_no_contact_profile(conn: Connection) -> None:
    set_profile_field(conn, "city", "Lyon", "contacts", NOW_MS)
    set_profile_field(conn, "site", "x.org", "public", NOW_MS)
    set_profile_field(conn, "phone", "0600", "chosen", NOW_MS)
    upsert_contact(conn, record(BOB, "Bob"), NOW_MS, group_only=True)
    assert fields_visible_to(conn, BOB) == {"site": "x.org"}
    with pytest.raises(UnknownContactError):
        grant_field(conn, "phone", BOB)
    with pytest.raises(UnknownContactError):
        set_contact_fields(conn, BOB, {"city": "Paris"}, NOW_MS)
    upsert_contact(conn, record(BOB, "Bob"), NOW_MS + 1)
    assert fields_visible_to(conn, BOB) == {"city": "Lyon", "site": "x.org"}


def test_removing_a_group_only_row_by_key_works(conn: Connection) -> None:
    upsert_contact(conn, record(BOB, "Bob", 1, BOB_PHONE), NOW_MS, group_only=True)
    assert remove_contact(conn, BOB)
    assert list_known_people(conn) == []


# --- conversations of a group -------------------------------------------------------------


def test_a_group_conversation_has_its_kind(conn: Connection) -> None:
    direct = conversation_id_for(conn, ALICE, NOW_MS)
    grouped = conversation_id_for(conn, GROUP, NOW_MS + 1, "group")
    assert conversation_id_for(conn, GROUP, NOW_MS + 2) == grouped  # keeps its kind
    assert conversation_id_for(conn, ALICE, NOW_MS + 2, "group") == direct
    alice, group_conversation = get_conversation(conn, ALICE), get_conversation(conn, GROUP)
    assert alice is not None and alice.kind == "direct"
    assert group_conversation is not None and group_conversation.kind == "group"
    assert {(c.peer_identity, c.kind) for c in list_conversations(conn)} == {
        (ALICE, "direct"),
        (GROUP, "group"),
    }
    with pytest.raises(ValueError):
        conversation_id_for(conn, BOB, NOW_MS, "channel")


# --- groups -------------------------------------------------------------------------------


def test_groups_are_created_read_updated_and_listed_by_name(conn: Connection) -> None:
    create_group(conn, GROUP, "zebra", "", "admin", NOW_MS)
    create_group(conn, OTHER_GROUP, "Apes", "🐒", "member", NOW_MS + 1)
    with pytest.raises(GroupExistsError):
        create_group(conn, GROUP, "again", "", "member", NOW_MS + 2)
    assert [g.name for g in list_groups(conn)] == ["Apes", "zebra"]
    zebra = get_group(conn, GROUP)
    assert zebra is not None
    assert (zebra.my_role, zebra.version, zebra.created_at, zebra.updated_at) == (
        "admin",
        1,
        NOW_MS,
        NOW_MS,
    )
    update_group(
        conn, GROUP, name="Zebras", avatar="🦓", my_role="left", version=4, now_ms=NOW_MS + 9
    )
    zebra = get_group(conn, GROUP)
    assert zebra is not None
    assert (zebra.name, zebra.avatar, zebra.my_role, zebra.version) == ("Zebras", "🦓", "left", 4)
    assert (zebra.created_at, zebra.updated_at) == (NOW_MS, NOW_MS + 9)
    assert get_group(conn, b"\x00" * 32) is None
    with pytest.raises(UnknownGroupError):
        update_group(conn, b"\x00" * 32, name="x", avatar="", my_role="admin", version=1, now_ms=1)
    with pytest.raises(ValueError):
        update_group(conn, GROUP, name="x", avatar="", my_role="owner", version=1, now_ms=1)
    with pytest.raises(ValueError):
        create_group(conn, b"short", "x", "", "admin", NOW_MS)


def test_ops_are_kept_once_in_arrival_order(conn: Connection, group: bytes) -> None:
    assert add_ops(conn, group, [(b"op-c", b"create"), (b"op-a", b"add bob")], NOW_MS) == 2
    assert add_ops(conn, group, [(b"op-a", b"add bob"), (b"op-r", b"rename")], NOW_MS + 1) == 1
    assert add_ops(conn, group, [(b"op-c", b"create")], NOW_MS + 2) == 0
    assert ops_of(conn, group) == [b"create", b"add bob", b"rename"]
    create_group(conn, OTHER_GROUP, "Other", "", "member", NOW_MS)
    assert add_ops(conn, OTHER_GROUP, [(b"op-c", b"other create")], NOW_MS) == 1  # per group
    assert ops_of(conn, OTHER_GROUP) == [b"other create"]
    with pytest.raises(UnknownGroupError):
        add_ops(conn, b"\x00" * 32, [(b"op", b"x")], NOW_MS)


def test_deleting_a_group_deletes_what_hangs_on_it(conn: Connection, group: bytes) -> None:
    create_group(conn, OTHER_GROUP, "Other", "", "member", NOW_MS)
    for group_id in (GROUP, OTHER_GROUP):
        add_ops(conn, group_id, [(b"op", b"create")], NOW_MS)
        save_outbound(conn, OutboundRow(group_id, "out-" + group_id.hex(), "p", (), NOW_MS, 0))
        save_inbound(conn, inbound("in-" + group_id.hex(), group_id))
        store_envelope(conn, envelope(group_id[0], NOW_MS, group_id))
        add_join_request(conn, group_id, BOB, BOB_PHONE.peer_id, "Bob", b"card", NOW_MS)
        owe_receipt(conn, group_id, ALICE, mid(group_id[0]))
        invite_id = bytes([group_id[0]]) * 16
        create_invite(conn, InviteRow(invite_id, 4, b"s", "code", 1, 1, 9, NOW_MS))
        add_group_invite(conn, invite_id, group_id, False)
    conversation_id_for(conn, GROUP, NOW_MS, "group")

    assert delete_group(conn, GROUP)
    assert not delete_group(conn, GROUP)
    assert get_group(conn, GROUP) is None
    assert ops_of(conn, GROUP) == []
    assert get_outbound(conn, GROUP) is None
    assert inbound_for_group(conn, GROUP) == []
    assert envelope_ids(conn, GROUP, 0, None, 10) == []
    assert get_group_invite(conn, bytes([GROUP[0]]) * 16) is None
    assert [r.group_id for r in list_join_requests(conn)] == [OTHER_GROUP]
    assert list(take_owed_receipts(conn)) == [(OTHER_GROUP, ALICE)]
    assert get_conversation(conn, GROUP) is not None  # the history stays
    # the other group is untouched
    assert ops_of(conn, OTHER_GROUP) == [b"create"]
    assert get_outbound(conn, OTHER_GROUP) is not None
    assert len(inbound_for_group(conn, OTHER_GROUP)) == 1
    assert len(envelope_ids(conn, OTHER_GROUP, 0, None, 10)) == 1
    assert get_group_invite(conn, bytes([OTHER_GROUP[0]]) * 16) == (OTHER_GROUP, False)
    assert conn.execute("PRAGMA foreign_key_check").fetchall() == []


# --- Megolm sessions ----------------------------------------------------------------------


def test_the_outbound_session_is_upserted_and_deleted(conn: Connection, group: bytes) -> None:
    assert get_outbound(conn, group) is None
    first = OutboundRow(group, "s1", "pickle-1", (), NOW_MS, 0)
    save_outbound(conn, first)
    assert get_outbound(conn, group) == first
    used = OutboundRow(group, "s1", "pickle-2", (ALICE_PHONE.peer_id, BOB_PHONE.peer_id), NOW_MS, 7)
    save_outbound(conn, used)
    assert get_outbound(conn, group) == used
    rotated = OutboundRow(group, "s2", "pickle-3", (BOB_PHONE.peer_id,), NOW_MS + 5, 0)
    save_outbound(conn, rotated)
    assert get_outbound(conn, group) == rotated
    assert count(conn, "group_outbound_sessions") == 1
    assert delete_outbound(conn, group)
    assert not delete_outbound(conn, group)
    assert get_outbound(conn, group) is None


def test_inbound_sessions_are_stored_replaced_and_listed(conn: Connection, group: bytes) -> None:
    assert get_inbound(conn, "s-a") is None
    save_inbound(conn, inbound("s-b", created_at=NOW_MS + 1))
    save_inbound(conn, inbound("s-a", created_at=NOW_MS))
    assert get_inbound(conn, "s-a") == inbound("s-a")
    assert update_seen(conn, "s-a", b"seen-1")
    assert not update_seen(conn, "unknown", b"x")
    stored = get_inbound(conn, "s-a")
    assert stored is not None and stored.seen == b"seen-1"
    replacement = InboundRow(
        "s-a", group, BOB, BOB_PHONE.device_key, BOB_PHONE.peer_id, "p2", 0, b"sh", b"s", NOW_MS
    )
    save_inbound(conn, replacement)
    assert get_inbound(conn, "s-a") == replacement
    assert [r.session_id for r in inbound_for_group(conn, group)] == ["s-a", "s-b"]
    assert inbound_for_group(conn, OTHER_GROUP) == []


# --- envelopes ----------------------------------------------------------------------------


def test_envelopes_are_kept_once(conn: Connection, group: bytes) -> None:
    assert store_envelope(conn, envelope(1, NOW_MS))
    again = envelope(1, NOW_MS + 50)
    assert not store_envelope(conn, again)
    assert get_envelopes(conn, group, [mid(1)]) == [envelope(1, NOW_MS)]
    assert known_ids(conn, [mid(1), mid(2), mid(1)]) == {mid(1)}
    assert known_ids(conn, []) == set()
    with pytest.raises(ValueError):
        store_envelope(conn, dataclasses.replace(envelope(3, NOW_MS), message_id=b"short"))


def test_envelope_ids_page_by_sent_at_then_id(conn: Connection, group: bytes) -> None:
    create_group(conn, OTHER_GROUP, "Other", "", "member", NOW_MS)
    # sent_at ties broken by message id, whatever order they arrive in
    for n, sent_at in [(5, 300), (1, 100), (4, 200), (2, 200), (3, 200), (6, 50)]:
        assert store_envelope(conn, envelope(n, sent_at))
    store_envelope(conn, envelope(9, 150, OTHER_GROUP))
    expected = [(mid(1), 100), (mid(2), 200), (mid(3), 200), (mid(4), 200), (mid(5), 300)]
    pages = []
    cursor: tuple[int, bytes] | None = None
    while True:
        batch = envelope_ids(conn, group, 100, cursor, 2)
        if not batch:
            break
        pages.append(batch)
        last_id, last_sent = batch[-1]
        cursor = (last_sent, last_id)
    assert pages == [expected[0:2], expected[2:4], expected[4:5]]
    assert envelope_ids(conn, group, 0, None, 100)[0] == (mid(6), 50)
    assert envelope_ids(conn, group, 301, None, 10) == []
    with pytest.raises(ValueError):
        envelope_ids(conn, group, 0, None, 0)


def test_get_envelopes_returns_only_that_groups_in_order(conn: Connection, group: bytes) -> None:
    create_group(conn, OTHER_GROUP, "Other", "", "member", NOW_MS)
    store_envelope(conn, envelope(3, 100))
    store_envelope(conn, envelope(1, 200))
    store_envelope(conn, envelope(2, 100))
    store_envelope(conn, envelope(7, 50, OTHER_GROUP))
    found = get_envelopes(conn, group, [mid(1), mid(7), mid(2), mid(3), mid(8), mid(1)])
    assert [e.message_id for e in found] == [mid(2), mid(3), mid(1)]
    assert get_envelopes(conn, group, []) == []
    assert known_ids(conn, [mid(7), mid(3)]) == {mid(7), mid(3)}


def test_latest_sent_at(conn: Connection, group: bytes) -> None:
    assert latest_sent_at(conn, group) is None
    store_envelope(conn, envelope(1, 200))
    store_envelope(conn, envelope(2, 100))
    assert latest_sent_at(conn, group) == 200


def test_many_ids_at_once(conn: Connection, group: bytes) -> None:
    for n in range(1, 1201):
        store_envelope(conn, envelope(n, n))
    ids = [mid(n) for n in range(1, 1301)]
    assert len(known_ids(conn, ids)) == 1200
    assert [e.sent_at for e in get_envelopes(conn, group, ids)] == list(range(1, 1201))


# --- held envelopes -----------------------------------------------------------------------


def test_held_envelopes_are_taken_once_oldest_first(conn: Connection) -> None:
    hold(conn, "s1", "peer-a", b"e1", NOW_MS)
    hold(conn, "s2", "peer-a", b"other session", NOW_MS + 1)
    hold(conn, "s1", "peer-b", b"e2", NOW_MS + 2)
    hold(conn, "s1", "peer-a", b"e3", NOW_MS + 3)
    assert take_held(conn, "s1") == [("peer-a", b"e1"), ("peer-b", b"e2"), ("peer-a", b"e3")]
    assert take_held(conn, "s1") == []
    assert take_held(conn, "s2") == [("peer-a", b"other session")]


def test_the_hold_cap_drops_the_senders_oldest(conn: Connection) -> None:
    hold(conn, "s1", "peer-b", b"b0", NOW_MS)
    for n in range(5):
        hold(conn, f"s{n % 2}", "peer-a", b"a%d" % n, NOW_MS + n, max_per_sender=3)
    assert count(conn, "group_held") == 4  # peer-b's own envelope is not counted against a
    assert take_held(conn, "s0") == [("peer-a", b"a2"), ("peer-a", b"a4")]
    assert take_held(conn, "s1") == [("peer-b", b"b0"), ("peer-a", b"a3")]


def test_prune_held(conn: Connection) -> None:
    hold(conn, "s1", "peer-a", b"old", NOW_MS)
    hold(conn, "s1", "peer-a", b"new", NOW_MS + 10)
    assert prune_held(conn, NOW_MS + 10) == 1
    assert take_held(conn, "s1") == [("peer-a", b"new")]


# --- receipts -----------------------------------------------------------------------------


def test_a_receipt_never_goes_down(conn: Connection) -> None:
    assert receipts_for(conn, mid(1)) == {}
    assert set_receipt(conn, mid(1), ALICE, "delivered", 10)
    assert not set_receipt(conn, mid(1), ALICE, "delivered", 11)
    assert set_receipt(conn, mid(1), ALICE, "read", 12)
    assert not set_receipt(conn, mid(1), ALICE, "delivered", 13)
    assert not set_receipt(conn, mid(1), ALICE, "read", 14)
    assert set_receipt(conn, mid(1), BOB, "read", 15)  # read without a delivery first
    assert set_receipt(conn, mid(2), ALICE, "delivered", 16)
    assert receipts_for(conn, mid(1)) == {ALICE: ("read", 12), BOB: ("read", 15)}
    assert receipts_for(conn, mid(2)) == {ALICE: ("delivered", 16)}
    with pytest.raises(ValueError):
        set_receipt(conn, mid(1), ALICE, "pending", 17)


def test_owed_receipts_are_taken_by_group_and_sender(conn: Connection) -> None:
    owe_receipt(conn, GROUP, ALICE, mid(1))
    owe_receipt(conn, GROUP, ALICE, mid(2))
    owe_receipt(conn, GROUP, ALICE, mid(1))
    owe_receipt(conn, GROUP, BOB, mid(3))
    owe_receipt(conn, OTHER_GROUP, ALICE, mid(4))
    owed = take_owed_receipts(conn)
    assert {key: sorted(ids) for key, ids in owed.items()} == {
        (GROUP, ALICE): [mid(1), mid(2)],
        (GROUP, BOB): [mid(3)],
        (OTHER_GROUP, ALICE): [mid(4)],
    }
    assert take_owed_receipts(conn) == {}


def test_my_group_message_state_only_goes_up(conn: Connection) -> None:
    sent = my_group_message(conn, 1)
    delivered = upgrade_message_state(conn, sent, "delivered", NOW_MS + 10)
    assert delivered is not None and (delivered.state, delivered.state_at) == (
        "delivered",
        NOW_MS + 10,
    )
    assert delivered.peer_identity == GROUP and delivered.message_id == sent
    assert upgrade_message_state(conn, sent, "delivered", NOW_MS + 11) is None
    read = upgrade_message_state(conn, sent, "read", NOW_MS + 12)
    assert read is not None and read.state == "read"
    assert upgrade_message_state(conn, sent, "delivered", NOW_MS + 13) is None
    assert upgrade_message_state(conn, sent, "read", NOW_MS + 14) is None
    stored = get_message(conn, sent)
    assert stored is not None and (stored.state, stored.state_at) == ("read", NOW_MS + 12)
    # straight from pending to read
    other = my_group_message(conn, 2)
    jumped = upgrade_message_state(conn, other, "read", NOW_MS)
    assert jumped is not None and jumped.state == "read"
    with pytest.raises(ValueError):
        upgrade_message_state(conn, other, "pending", NOW_MS)
    assert upgrade_message_state(conn, mid(99), "read", NOW_MS) is None


def test_a_failed_group_message_may_still_be_delivered(conn: Connection) -> None:
    sent = my_group_message(conn, 1)
    failed = mark_failed_if_undeliverable(conn, sent, NOW_MS)
    assert failed is not None and failed.state == "failed"
    delivered = upgrade_message_state(conn, sent, "delivered", NOW_MS + 1)
    assert delivered is not None and delivered.state == "delivered"


def test_only_my_group_messages_are_upgraded(conn: Connection) -> None:
    direct = conversation_id_for(conn, ALICE, NOW_MS)
    mine = NewMessage(mid(1), ME, MY_PHONE.peer_id, True, "text", "x", 1, NOW_MS, NOW_MS, "pending")
    insert_message(conn, direct, mine)
    assert upgrade_message_state(conn, mid(1), "delivered", NOW_MS) is None
    grouped = conversation_id_for(conn, GROUP, NOW_MS, "group")
    theirs = NewMessage(mid(2), ALICE, "peer", False, "text", "y", 1, NOW_MS, NOW_MS, "unread")
    insert_message(conn, grouped, theirs)
    assert upgrade_message_state(conn, mid(2), "read", NOW_MS) is None


# --- invites and join requests ------------------------------------------------------------


def test_a_group_invite_names_its_group(conn: Connection, group: bytes) -> None:
    invite_id = b"\x44" * 16
    create_invite(conn, InviteRow(invite_id, 4, b"secret", "code", 5, 5, 99, NOW_MS))
    assert get_group_invite(conn, invite_id) is None
    add_group_invite(conn, invite_id, group, True)
    assert get_group_invite(conn, invite_id) == (group, True)
    with pytest.raises(sqlcipher.IntegrityError):
        add_group_invite(conn, b"\x45" * 16, group, False)  # no such invite
    conn.execute("DELETE FROM invites WHERE invite_id = ?", (invite_id,))
    assert get_group_invite(conn, invite_id) is None


def test_join_requests(conn: Connection, group: bytes) -> None:
    create_group(conn, OTHER_GROUP, "Other", "", "admin", NOW_MS)
    bob = add_join_request(conn, group, BOB, BOB_PHONE.peer_id, "Bob", b"card-1", NOW_MS)
    carol = add_join_request(conn, group, CAROL, "peer-c", "Carol", b"card-c", NOW_MS + 1)
    elsewhere = add_join_request(conn, OTHER_GROUP, BOB, "peer-b", "Bob", b"c", NOW_MS + 2)
    assert len({bob, carol, elsewhere}) == 3
    # Bob asks again for the same group: same request, new fields, still pending
    again = add_join_request(conn, group, BOB, "peer-b2", "Robert", b"card-2", NOW_MS + 3)
    assert again == bob
    request = get_join_request(conn, bob)
    assert request is not None
    assert (request.peer_id, request.display_name, request.card, request.requested_at) == (
        "peer-b2",
        "Robert",
        b"card-2",
        NOW_MS + 3,
    )
    assert request.state == "pending" and request.group_id == group
    assert [r.id for r in list_join_requests(conn)] == [carol, elsewhere, bob]

    assert set_join_request_state(conn, carol, "refused")
    assert not set_join_request_state(conn, carol, "accepted")  # decided already
    assert set_join_request_state(conn, bob, "accepted")
    assert not set_join_request_state(conn, 12345, "accepted")
    assert [r.id for r in list_join_requests(conn)] == [elsewhere]
    assert [r.id for r in list_join_requests(conn, "refused")] == [carol]
    assert len(list_join_requests(conn, None)) == 3
    assert get_join_request(conn, 12345) is None
    # a refused person who asks again is pending again (the caller rate-limits)
    assert add_join_request(conn, group, CAROL, "peer-c", "Carol", b"c", NOW_MS + 4) == carol
    carol_again = get_join_request(conn, carol)
    assert carol_again is not None and carol_again.state == "pending"
    with pytest.raises(ValueError):
        set_join_request_state(conn, bob, "pending")
    with pytest.raises(ValueError):
        list_join_requests(conn, "maybe")


def test_unread_messages_lists_what_mark_read_will_change(conn: Connection) -> None:
    grouped = conversation_id_for(conn, GROUP, NOW_MS, "group")
    for n, lamport, sender in [(3, 2, BOB), (1, 1, ALICE), (2, 3, ALICE)]:
        new = NewMessage(
            mid(n), sender, "peer", False, "text", "t", lamport, NOW_MS, NOW_MS, "unread"
        )
        insert_message(conn, grouped, new)
    my_group_message(conn, 9)
    assert [m.message_id for m in unread_messages(conn, grouped)] == [mid(1), mid(3), mid(2)]
    mark_read(conn, grouped, NOW_MS)
    assert unread_messages(conn, grouped) == []
