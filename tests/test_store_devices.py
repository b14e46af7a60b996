"""The store's side of my own devices (migration 4): my identity's row, revoked devices, reading
up to a message another device of mine read, and the deferred search index of a copied history."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from p2pid.store import Connection, open_database
from p2pid.store.contacts import (
    ContactDevice,
    ContactRecord,
    contact_for_peer,
    get_contact,
    get_self,
    list_contacts,
    list_revoked_devices,
    save_self,
    upsert_contact,
)
from p2pid.store.db import StoreError
from p2pid.store.messages import (
    conversation_id_for,
    get_conversation,
    insert_message,
    mark_read_here_up_to,
    search,
    search_index_deferred,
)
from tests.test_store_messages import ALICE, NOW_MS, message

ME = b"\x01" * 32
PHONE = ContactDevice("12D3KooWPhone", b"\x11" * 32, "curve-p", "ed-p", "phone", 1)
LAPTOP = ContactDevice("12D3KooWLaptop", b"\x12" * 32, "curve-l", "ed-l", "laptop", 2)


@pytest.fixture
def conn(tmp_path: Path) -> Iterator[Connection]:
    connection = open_database(tmp_path / "p2pid.db", os.urandom(32), create=True)
    yield connection
    connection.close()


def my_list(version: int, *devices: ContactDevice) -> ContactRecord:
    return ContactRecord(ME, "Me", b"list" * 20, version, devices)


def test_my_row_is_never_a_contact(conn: Connection) -> None:
    save_self(conn, my_list(1, PHONE, LAPTOP), NOW_MS)
    upsert_contact(conn, ContactRecord(ALICE, "Alice", None, 0, ()), NOW_MS)
    assert [c.display_name for c in list_contacts(conn)] == ["Alice"]
    assert get_contact(conn, ME) is None
    assert contact_for_peer(conn, LAPTOP.peer_id) is None
    mine = get_self(conn)
    assert mine is not None and [d.name for d in mine.devices] == ["laptop", "phone"]
    assert get_contact(conn, ME, include_self=True) == mine
    assert contact_for_peer(conn, LAPTOP.peer_id, include_self=True) == mine


def test_a_newer_list_records_the_devices_it_left_out(conn: Connection) -> None:
    save_self(conn, my_list(1, PHONE, LAPTOP), NOW_MS)
    save_self(conn, my_list(1, PHONE), NOW_MS + 1)  # not newer: nothing changes
    assert list_revoked_devices(conn) == []
    save_self(conn, my_list(2, PHONE), NOW_MS + 2)
    [revoked] = list_revoked_devices(conn)
    assert (revoked.peer_id, revoked.name, revoked.device_list_version) == (
        LAPTOP.peer_id,
        "laptop",
        2,
    )
    mine = get_self(conn)
    assert mine is not None and [d.peer_id for d in mine.devices] == [PHONE.peer_id]


def test_only_one_identity_is_mine(conn: Connection) -> None:
    save_self(conn, my_list(1, PHONE), NOW_MS)
    other = ContactRecord(b"\x02" * 32, "Other", b"x", 1, (LAPTOP,))
    with pytest.raises(StoreError):
        save_self(conn, other, NOW_MS)


def test_reading_up_to_a_message_leaves_later_ones_unread(conn: Connection) -> None:
    conversation = conversation_id_for(conn, ALICE, NOW_MS)
    rows = [insert_message(conn, conversation, message(n, lamport=n)) for n in range(1, 6)]
    assert all(rows)
    third = rows[2]
    assert third is not None
    assert mark_read_here_up_to(conn, conversation, third.message_id, NOW_MS) == 3
    state = get_conversation(conn, ALICE)
    assert state is not None and state.unread == 2
    assert mark_read_here_up_to(conn, conversation, os.urandom(16), NOW_MS) == 0  # unknown
    assert mark_read_here_up_to(conn, conversation, third.message_id, NOW_MS) == 0  # again


def test_a_history_inserted_with_the_index_deferred_is_searchable(conn: Connection) -> None:
    conversation = conversation_id_for(conn, ALICE, NOW_MS)
    conn.execute("BEGIN")
    with search_index_deferred(conn):
        for n in range(1, 201):
            insert_message(conn, conversation, message(n, body=f"copied note number {n}"))
    conn.execute("COMMIT")
    assert len(search(conn, "copied", limit=500)) == 200
    assert len(search(conn, "number 17", limit=500)) >= 1
    # The trigger is back: a message stored afterwards is found at once.
    insert_message(conn, conversation, message(500, body="arrived later"))
    assert [row.body for row in search(conn, "later")] == ["arrived later"]
