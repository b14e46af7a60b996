"""Contacts, devices, invites, contact requests and the profile: real SQLCipher files, no mocks."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import pytest
import sqlcipher3.dbapi2 as sqlcipher
import trio

from p2pid.store import Connection, TrioStore, open_database
from p2pid.store.contacts import (
    ClaimedPrekey,
    ContactDevice,
    ContactRecord,
    ContactUpsert,
    DeviceConflictError,
    InviteRow,
    InviteState,
    RedeemResult,
    UnknownContactError,
    UnknownProfileFieldError,
    add_contact_request,
    burn_expired_invites,
    cancel_invite,
    claim_one_time_key,
    contact_fields,
    contact_for_peer,
    count_requests_since,
    create_invite,
    fields_visible_to,
    get_contact,
    get_contact_request,
    get_invite,
    get_invite_use,
    grant_field,
    is_blocked,
    list_blocked,
    list_contact_requests,
    list_contacts,
    list_identity_key_changes,
    list_invite_uses,
    list_invites,
    list_profile_fields,
    prune_contact_requests,
    record_identity_key_change,
    redeem_invite,
    remove_contact,
    remove_profile_field,
    rename_contact,
    resolve_identity_key_change,
    revoke_field_grant,
    set_blocked,
    set_contact_fields,
    set_contact_request_state,
    set_device_prekeys,
    set_profile_field,
    set_verified,
    upsert_contact,
)
from p2pid.store.db import apply_migrations, schema_version
from p2pid.store.migrations import LATEST_SCHEMA_VERSION, MIGRATIONS
from p2pid.store.queries import list_peers, upsert_peer_seen

ALICE = b"\xa1" * 32
BOB = b"\xb0" * 32
CAROL = b"\xc0" * 32
NOW_S = 1_800_000_000
NOW_MS = NOW_S * 1000
SECRET = b"\x5e" * 24
MARKER = "INVITE-CODE-MARKER-41d2"

CONTACT_TABLES = {
    "contacts",
    "contact_devices",
    "identity_key_changes",
    "blocked_identities",
    "invites",
    "invite_uses",
    "contact_requests",
    "profile_fields",
    "profile_field_grants",
    "contact_fields",
}


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


def table_names(conn: Connection) -> set[str]:
    rows = conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'").fetchall()
    return {str(name) for (name,) in rows}


def device(
    peer_id: str,
    *,
    curve: str | None = None,
    name: str = "phone",
    one_time_keys: tuple[str, ...] = (),
    fallback_key: str | None = None,
) -> ContactDevice:
    return ContactDevice(
        peer_id=peer_id,
        device_key=peer_id.encode().ljust(32, b"\0")[:32],
        olm_curve25519=curve or f"curve-{peer_id}",
        olm_ed25519=f"ed-{peer_id}",
        name=name,
        created_at=1_000,
        capabilities=("chat", "files"),
        fallback_key=fallback_key,
        one_time_keys=one_time_keys,
    )


def record(
    identity_key: bytes, version: int, *devices: ContactDevice, name: str = "Alice"
) -> ContactRecord:
    return ContactRecord(
        identity_key=identity_key,
        display_name=name,
        device_list=f"signed-list-v{version}".encode(),
        device_list_version=version,
        devices=devices,
    )


def add(conn: Connection, identity_key: bytes, *peer_ids: str, name: str = "Alice") -> None:
    devices = [device(peer) for peer in peer_ids]
    upsert_contact(conn, record(identity_key, 1, *devices, name=name), NOW_MS)


def peer_ids_of(conn: Connection, identity_key: bytes) -> list[str]:
    contact = get_contact(conn, identity_key)
    assert contact is not None
    return [device.peer_id for device in contact.devices]


def an_invite(
    invite_id: bytes = b"\x01" * 16, max_uses: int = 1, expires_at: int = NOW_S + 600
) -> InviteRow:
    return InviteRow(
        invite_id=invite_id,
        kind=1,
        secret=SECRET,
        code=MARKER,
        max_uses=max_uses,
        uses_left=max_uses,
        expires_at=expires_at,
        created_at=NOW_MS,
    )


def joiner(n: int) -> bytes:
    return n.to_bytes(32, "big")


def raw_secret_and_code(conn: Connection, invite_id: bytes) -> tuple[bytes, str]:
    secret, code = conn.execute(
        "SELECT secret, code FROM invites WHERE invite_id = ?", (invite_id,)
    ).fetchone()
    return bytes(secret), str(code)


# --- migration 2 --------------------------------------------------------------------------


def test_a_fresh_database_has_the_contact_tables(conn: Connection) -> None:
    assert schema_version(conn) == LATEST_SCHEMA_VERSION >= 2
    assert table_names(conn) >= CONTACT_TABLES | {"local_identity", "peers", "peer_addrs"}
    assert conn.execute("PRAGMA foreign_key_check").fetchall() == []


def test_a_version_1_database_is_upgraded_at_open(db_path: Path, key: bytes) -> None:
    # What the old code left behind: keyed, migrated to version 1 only, with data in it.
    old = sqlcipher.connect(str(db_path), isolation_level=None)
    old.execute(f"PRAGMA key = \"x'{key.hex()}'\"")
    old.execute("PRAGMA journal_mode = WAL")
    assert apply_migrations(old, MIGRATIONS[:1]) == 1
    upsert_peer_seen(old, "kept-peer", ["/ip4/127.0.0.1/tcp/1"], "manual", {"name": "x"}, 5)
    assert not table_names(old) & CONTACT_TABLES
    old.close()

    upgraded = open_database(db_path, key)
    try:
        assert schema_version(upgraded) == LATEST_SCHEMA_VERSION
        assert table_names(upgraded) >= CONTACT_TABLES
        assert [peer.peer_id for peer in list_peers(upgraded)] == ["kept-peer"]
        add(upgraded, ALICE, "p-alice")  # and the new tables work
        assert peer_ids_of(upgraded, ALICE) == ["p-alice"]
        assert upgraded.execute("PRAGMA foreign_key_check").fetchall() == []
    finally:
        upgraded.close()

    again = open_database(db_path, key)  # nothing applied twice
    try:
        assert schema_version(again) == LATEST_SCHEMA_VERSION
        assert peer_ids_of(again, ALICE) == ["p-alice"]
    finally:
        again.close()


def test_migration_2_applies_on_top_of_1_in_one_step(conn: Connection) -> None:
    fresh = sqlcipher.connect(":memory:", isolation_level=None)
    try:
        assert apply_migrations(fresh, MIGRATIONS[:1]) == 1
        assert apply_migrations(fresh, MIGRATIONS) == LATEST_SCHEMA_VERSION
        assert table_names(fresh) == table_names(conn)
    finally:
        fresh.close()


# --- contacts and devices -----------------------------------------------------------------


def test_a_new_contact_round_trips_with_its_devices(conn: Connection) -> None:
    phone = device("p1", one_time_keys=("otk1", "otk2"), fallback_key="fb")
    laptop = device("p2", name="laptop")
    assert upsert_contact(conn, record(ALICE, 3, phone, laptop), NOW_MS) is ContactUpsert.ADDED

    contact = get_contact(conn, ALICE)
    assert contact is not None
    assert contact.identity_key == ALICE
    assert (contact.display_name, contact.nickname, contact.name) == ("Alice", None, "Alice")
    assert contact.device_list == b"signed-list-v3"
    assert contact.device_list_version == 3
    assert contact.devices == (phone, laptop)
    assert (contact.added_at, contact.updated_at) == (NOW_MS, NOW_MS)
    assert not contact.verified and contact.verified_by is None and contact.verified_at is None
    assert not contact.blocked and not contact.identity_key_changed
    assert b"signed-list" not in repr(contact).encode()

    assert contact_for_peer(conn, "p2") == contact
    assert contact_for_peer(conn, "nobody") is None
    assert get_contact(conn, BOB) is None


def test_contacts_are_listed_by_name(conn: Connection) -> None:
    add(conn, ALICE, "pa", name="bob")
    add(conn, BOB, "pb", name="Alice")
    add(conn, CAROL, "pc", name="carol")
    assert rename_contact(conn, CAROL, "Aaron", NOW_MS)
    assert [contact.name for contact in list_contacts(conn)] == ["Aaron", "Alice", "bob"]
    assert [contact.devices[0].peer_id for contact in list_contacts(conn)] == ["pc", "pb", "pa"]


def test_an_older_or_equal_device_list_is_ignored(conn: Connection) -> None:
    upsert_contact(conn, record(ALICE, 5, device("p1"), device("p2")), NOW_MS)

    older = record(ALICE, 4, device("p3"), name="Alice 2")
    assert upsert_contact(conn, older, NOW_MS + 1) is ContactUpsert.DEVICES_KEPT
    equal = record(ALICE, 5, device("p4"), name="Alice 3")
    assert upsert_contact(conn, equal, NOW_MS + 2) is ContactUpsert.DEVICES_KEPT

    contact = get_contact(conn, ALICE)
    assert contact is not None
    assert contact.device_list_version == 5
    assert contact.device_list == b"signed-list-v5"
    assert [d.peer_id for d in contact.devices] == ["p1", "p2"]
    assert contact.display_name == "Alice 3"  # the name is not part of the signed list
    assert contact.updated_at == NOW_MS + 2
    assert contact_for_peer(conn, "p3") is None


def test_a_newer_device_list_replaces_the_devices(conn: Connection) -> None:
    upsert_contact(conn, record(ALICE, 1, device("p1"), device("p2")), NOW_MS)

    newer = record(ALICE, 2, device("p2", name="renamed"), device("p3"), name="Alice B")
    assert upsert_contact(conn, newer, NOW_MS + 1) is ContactUpsert.DEVICES_UPDATED

    contact = get_contact(conn, ALICE)
    assert contact is not None
    assert contact.device_list_version == 2
    assert contact.device_list == b"signed-list-v2"
    assert contact.display_name == "Alice B"
    assert [(d.peer_id, d.name) for d in contact.devices] == [("p2", "renamed"), ("p3", "phone")]
    assert contact.added_at == NOW_MS and contact.updated_at == NOW_MS + 1
    assert contact_for_peer(conn, "p1") is None  # revoked: gone from the new list


def test_a_resent_card_never_brings_claimed_one_time_keys_back(conn: Connection) -> None:
    keys = ("k1", "k2")
    upsert_contact(conn, record(ALICE, 1, device("p1", one_time_keys=keys)), NOW_MS)
    assert claim_one_time_key(conn, "p1") == ClaimedPrekey("k1", one_time=True)

    resent = record(
        ALICE,
        2,
        device("p1", one_time_keys=keys, fallback_key="fb"),  # same Olm account
        device("p2", one_time_keys=("n1",), fallback_key="fb2"),  # new device
        device("p3", one_time_keys=("m1",)),
    )
    upsert_contact(conn, resent, NOW_MS)
    stored = {d.peer_id: d for d in get_contact(conn, ALICE).devices}  # type: ignore[union-attr]
    assert (stored["p1"].one_time_keys, stored["p1"].fallback_key) == (("k2",), None)
    assert (stored["p2"].one_time_keys, stored["p2"].fallback_key) == (("n1",), "fb2")

    # A device whose Olm account changed takes the record's prekeys.
    reset = record(ALICE, 3, device("p1", curve="new-curve", one_time_keys=("z1",)))
    upsert_contact(conn, reset, NOW_MS)
    [p1] = get_contact(conn, ALICE).devices  # type: ignore[union-attr]
    assert (p1.olm_curve25519, p1.one_time_keys) == ("new-curve", ("z1",))


def test_claiming_one_time_keys_then_the_fallback(conn: Connection) -> None:
    upsert_contact(conn, record(ALICE, 1, device("p1", one_time_keys=("a", "b"))), NOW_MS)
    add(conn, BOB, "bare")

    assert set_device_prekeys(conn, "p1", ["x", "y"], "fb")
    assert not set_device_prekeys(conn, "nobody", ["x"], None)
    assert claim_one_time_key(conn, "p1") == ClaimedPrekey("x", one_time=True)
    assert claim_one_time_key(conn, "p1") == ClaimedPrekey("y", one_time=True)
    assert claim_one_time_key(conn, "p1") == ClaimedPrekey("fb", one_time=False)
    assert claim_one_time_key(conn, "p1") == ClaimedPrekey("fb", one_time=False)
    assert claim_one_time_key(conn, "bare") is None
    assert claim_one_time_key(conn, "nobody") is None


def test_a_device_cannot_belong_to_two_identities(conn: Connection) -> None:
    add(conn, ALICE, "shared", "pa")

    with pytest.raises(DeviceConflictError) as caught:
        upsert_contact(conn, record(BOB, 1, device("pb"), device("shared")), NOW_MS)
    assert caught.value.peer_id == "shared"
    assert caught.value.owner_identity_key == ALICE
    assert caught.value.claimed_by == BOB
    assert get_contact(conn, BOB) is None  # nothing stored
    assert contact_for_peer(conn, "pb") is None

    add(conn, BOB, "pb")
    with pytest.raises(DeviceConflictError):
        upsert_contact(conn, record(BOB, 2, device("pb"), device("shared")), NOW_MS)
    assert peer_ids_of(conn, BOB) == ["pb"]
    assert contact_for_peer(conn, "shared").identity_key == ALICE  # type: ignore[union-attr]

    # The unique index refuses it even past the query functions.
    with pytest.raises(sqlcipher.IntegrityError):
        conn.execute(
            "INSERT INTO contact_devices (identity_key, peer_id, device_key, olm_curve25519,"
            " olm_ed25519, name, created_at) VALUES (?, 'shared', ?, 'c', 'e', 'n', 1)",
            (BOB, b"\x00" * 32),
        )


def test_malformed_contact_records_are_refused(conn: Connection) -> None:
    with pytest.raises(ValueError, match="identity key"):
        upsert_contact(conn, record(b"short", 1, device("p1")), NOW_MS)
    with pytest.raises(ValueError, match="twice"):
        upsert_contact(conn, record(ALICE, 1, device("p1"), device("p1")), NOW_MS)
    bad_device = ContactDevice("p1", b"short", "c", "e", "n", 1)
    with pytest.raises(ValueError, match="device key"):
        upsert_contact(conn, record(ALICE, 1, bad_device), NOW_MS)
    with pytest.raises(sqlcipher.IntegrityError):
        conn.execute(
            "INSERT INTO contacts (identity_key, display_name, added_at, updated_at)"
            " VALUES (?, 'x', 1, 1)",
            (b"\x01" * 31,),
        )
    assert list_contacts(conn) == []


def test_verification_by_invite_then_sas(conn: Connection) -> None:
    add(conn, ALICE, "p1")

    assert set_verified(conn, ALICE, "invite", NOW_MS + 1)
    contact = get_contact(conn, ALICE)
    assert contact is not None
    assert (contact.verified, contact.verified_by, contact.verified_at) == (
        True,
        "invite",
        NOW_MS + 1,
    )

    assert set_verified(conn, ALICE, "sas", NOW_MS + 2)
    assert set_verified(conn, ALICE, "invite", NOW_MS + 3)  # does not downgrade SAS
    contact = get_contact(conn, ALICE)
    assert contact is not None
    assert (contact.verified_by, contact.verified_at) == ("sas", NOW_MS + 2)

    assert set_verified(conn, ALICE, None, NOW_MS + 4)
    contact = get_contact(conn, ALICE)
    assert contact is not None
    assert (contact.verified, contact.verified_by, contact.verified_at) == (False, None, None)

    assert not set_verified(conn, BOB, "sas", NOW_MS)
    with pytest.raises(ValueError, match="verification"):
        set_verified(conn, ALICE, "trust-me", NOW_MS)  # type: ignore[arg-type]


def test_renaming_a_contact(conn: Connection) -> None:
    add(conn, ALICE, "p1")
    assert rename_contact(conn, ALICE, "Mum", NOW_MS + 1)
    contact = get_contact(conn, ALICE)
    assert contact is not None
    assert (contact.nickname, contact.name, contact.display_name) == ("Mum", "Mum", "Alice")
    assert contact.updated_at == NOW_MS + 1

    assert rename_contact(conn, ALICE, "", NOW_MS)
    assert get_contact(conn, ALICE).nickname is None  # type: ignore[union-attr]
    assert rename_contact(conn, ALICE, "x", NOW_MS)
    assert rename_contact(conn, ALICE, None, NOW_MS)
    assert get_contact(conn, ALICE).name == "Alice"  # type: ignore[union-attr]
    assert not rename_contact(conn, BOB, "nobody", NOW_MS)


def test_removing_a_contact_cascades(conn: Connection) -> None:
    add(conn, ALICE, "p1", "p2")
    add(conn, BOB, "pb")
    set_profile_field(conn, "phone", "+1", "chosen", NOW_MS)
    grant_field(conn, "phone", ALICE)
    grant_field(conn, "phone", BOB)
    set_contact_fields(conn, ALICE, {"email": "a@x"}, NOW_MS)
    set_blocked(conn, ALICE, True, NOW_MS)

    assert remove_contact(conn, ALICE)
    assert not remove_contact(conn, ALICE)

    assert get_contact(conn, ALICE) is None
    assert contact_for_peer(conn, "p1") is None
    count = "SELECT count(*) FROM {} WHERE identity_key = ?"
    for table in ("contact_devices", "contact_fields", "profile_field_grants"):
        assert conn.execute(count.format(table), (ALICE,)).fetchone()[0] == 0, table
    assert [field.granted_to for field in list_profile_fields(conn)] == [(BOB,)]
    assert peer_ids_of(conn, BOB) == ["pb"]
    assert is_blocked(conn, ALICE)  # a block outlives the contact
    add(conn, ALICE, "p1")  # and the devices are free again
    assert peer_ids_of(conn, ALICE) == ["p1"]


def test_blocking_contacts_and_strangers(conn: Connection) -> None:
    add(conn, ALICE, "p1")

    assert set_blocked(conn, ALICE, True, NOW_MS)
    assert not set_blocked(conn, ALICE, True, NOW_MS)  # no change
    assert set_blocked(conn, CAROL, True, NOW_MS + 1)  # not a contact: blockable too
    assert is_blocked(conn, ALICE) and is_blocked(conn, CAROL) and not is_blocked(conn, BOB)
    assert get_contact(conn, ALICE).blocked  # type: ignore[union-attr]
    assert list_blocked(conn) == [CAROL, ALICE]

    assert set_blocked(conn, ALICE, False, NOW_MS)
    assert not set_blocked(conn, ALICE, False, NOW_MS)
    assert not is_blocked(conn, ALICE)
    assert not get_contact(conn, ALICE).blocked  # type: ignore[union-attr]
    with pytest.raises(ValueError):
        set_blocked(conn, b"short", True, NOW_MS)


def test_identity_key_changes_are_flagged(conn: Connection) -> None:
    add(conn, ALICE, "p1")

    first = record_identity_key_change(conn, "p1", ALICE, BOB, NOW_MS)
    again = record_identity_key_change(conn, "p1", ALICE, BOB, NOW_MS + 5)
    other = record_identity_key_change(conn, "p1", ALICE, CAROL, NOW_MS + 1)
    assert again == first and other != first

    changes = list_identity_key_changes(conn)
    assert [(c.id, c.new_identity_key) for c in changes] == [(first, BOB), (other, CAROL)]
    assert (changes[0].seen_at, changes[0].last_seen_at) == (NOW_MS, NOW_MS + 5)
    assert (changes[0].peer_id, changes[0].old_identity_key) == ("p1", ALICE)
    assert not changes[0].resolved
    assert get_contact(conn, ALICE).identity_key_changed  # type: ignore[union-attr]

    assert resolve_identity_key_change(conn, first, NOW_MS + 6)
    assert not resolve_identity_key_change(conn, first, NOW_MS + 7)
    assert resolve_identity_key_change(conn, other, NOW_MS + 6)
    assert list_identity_key_changes(conn) == []
    assert not get_contact(conn, ALICE).identity_key_changed  # type: ignore[union-attr]
    everything = list_identity_key_changes(conn, unresolved_only=False)
    assert {c.id for c in everything} == {first, other}
    assert all(c.resolved and c.resolved_at == NOW_MS + 6 for c in everything)

    # Seen again after being resolved: a new flag.
    assert record_identity_key_change(conn, "p1", ALICE, BOB, NOW_MS + 9) not in (first, other)
    with pytest.raises(ValueError):
        record_identity_key_change(conn, "p1", ALICE, ALICE, NOW_MS)


# --- invites ------------------------------------------------------------------------------


def test_an_invite_round_trips_and_hides_its_secret(conn: Connection) -> None:
    create_invite(conn, an_invite())
    stored = get_invite(conn, b"\x01" * 16)
    assert stored == an_invite()
    assert stored is not None and stored.state(NOW_S) is InviteState.LIVE
    assert MARKER not in repr(stored) and repr(SECRET) not in repr(stored)
    assert get_invite(conn, b"\x02" * 16) is None


def test_malformed_new_invites_are_refused(conn: Connection) -> None:
    good = an_invite()
    for bad, match in [
        (InviteRow(b"short", 1, SECRET, "c", 1, 1, NOW_S, NOW_MS), "invite id"),
        (InviteRow(good.invite_id, 1, None, "c", 1, 1, NOW_S, NOW_MS), "secret"),
        (InviteRow(good.invite_id, 1, SECRET, "", 1, 1, NOW_S, NOW_MS), "code"),
        (InviteRow(good.invite_id, 1, bytes(16), "c", 1, 1, NOW_S, NOW_MS), "zero"),
        (InviteRow(good.invite_id, 1, SECRET, "c", 0, 0, NOW_S, NOW_MS), "uses"),
        (InviteRow(good.invite_id, 1, SECRET, "c", 3, 2, NOW_S, NOW_MS), "uses"),
        (InviteRow(good.invite_id, 1, SECRET, "c", 1, 1, NOW_S, NOW_MS, NOW_MS), "cancelled"),
    ]:
        with pytest.raises(ValueError, match=match):
            create_invite(conn, bad)
    create_invite(conn, good)
    with pytest.raises(sqlcipher.IntegrityError):
        create_invite(conn, good)


def test_a_single_use_invite_burns_its_secret(conn: Connection) -> None:
    create_invite(conn, an_invite())
    invite_id = an_invite().invite_id

    assert redeem_invite(conn, invite_id, joiner(1), NOW_S, NOW_MS, receipt=b"r1") == "ok"

    secret, code = raw_secret_and_code(conn, invite_id)
    assert secret == bytes(len(SECRET)) and code == ""
    spent = get_invite(conn, invite_id)
    assert spent is not None
    assert (spent.secret, spent.code, spent.uses_left) == (None, None, 0)
    assert spent.state(NOW_S) is InviteState.SPENT

    # The same joiner retrying (lost ack) is recognised and not charged.
    retry = redeem_invite(conn, invite_id, joiner(1), NOW_S + 1, NOW_MS + 1)
    assert retry is RedeemResult.ALREADY_REDEEMED_BY_THIS_JOINER
    use = get_invite_use(conn, invite_id, joiner(1))
    assert use is not None and (use.used_at, use.receipt) == (NOW_MS, b"r1")
    assert redeem_invite(conn, invite_id, joiner(2), NOW_S, NOW_MS) is RedeemResult.SPENT
    assert get_invite_use(conn, invite_id, joiner(2)) is None
    assert [u.joiner_identity_key for u in list_invite_uses(conn, invite_id)] == [joiner(1)]


def test_an_invite_with_n_uses(conn: Connection) -> None:
    invite_id = an_invite().invite_id
    create_invite(conn, an_invite(max_uses=3))

    for n in (1, 2):
        assert redeem_invite(conn, invite_id, joiner(n), NOW_S, NOW_MS + n) is RedeemResult.OK
        again = redeem_invite(conn, invite_id, joiner(n), NOW_S, NOW_MS + n)
        assert again is RedeemResult.ALREADY_REDEEMED_BY_THIS_JOINER
    live = get_invite(conn, invite_id)
    assert live is not None and (live.uses_left, live.secret, live.code) == (1, SECRET, MARKER)

    assert redeem_invite(conn, invite_id, joiner(3), NOW_S, NOW_MS + 3) is RedeemResult.OK
    assert redeem_invite(conn, invite_id, joiner(4), NOW_S, NOW_MS + 4) is RedeemResult.SPENT
    assert raw_secret_and_code(conn, invite_id) == (bytes(len(SECRET)), "")
    uses = list_invite_uses(conn, invite_id)
    assert [u.joiner_identity_key for u in uses] == [joiner(1), joiner(2), joiner(3)]


def test_an_invite_expires_at_its_second(conn: Connection) -> None:
    invite_id = an_invite().invite_id
    create_invite(conn, an_invite(max_uses=2, expires_at=NOW_S))

    assert redeem_invite(conn, invite_id, joiner(1), NOW_S - 1, NOW_MS) is RedeemResult.OK
    assert redeem_invite(conn, invite_id, joiner(2), NOW_S, NOW_MS) is RedeemResult.EXPIRED
    late_retry = redeem_invite(conn, invite_id, joiner(1), NOW_S + 99, NOW_MS)
    assert late_retry is RedeemResult.ALREADY_REDEEMED_BY_THIS_JOINER
    assert get_invite(conn, invite_id).uses_left == 1  # type: ignore[union-attr]


def test_a_cancelled_invite(conn: Connection) -> None:
    invite_id = an_invite().invite_id
    create_invite(conn, an_invite(max_uses=2))
    assert redeem_invite(conn, invite_id, joiner(1), NOW_S, NOW_MS) is RedeemResult.OK

    assert cancel_invite(conn, invite_id, NOW_MS + 1)
    assert not cancel_invite(conn, invite_id, NOW_MS + 2)
    assert not cancel_invite(conn, b"\x09" * 16, NOW_MS)

    cancelled = get_invite(conn, invite_id)
    assert cancelled is not None
    assert cancelled.cancelled_at == NOW_MS + 1
    assert cancelled.state(NOW_S) is InviteState.CANCELLED
    assert (cancelled.secret, cancelled.code) == (None, None)
    assert raw_secret_and_code(conn, invite_id) == (bytes(len(SECRET)), "")
    assert redeem_invite(conn, invite_id, joiner(2), NOW_S, NOW_MS) is RedeemResult.CANCELLED
    retry = redeem_invite(conn, invite_id, joiner(1), NOW_S, NOW_MS)
    assert retry is RedeemResult.ALREADY_REDEEMED_BY_THIS_JOINER


def test_a_spent_invite_cannot_be_cancelled_and_unknown_ones_are_unknown(
    conn: Connection,
) -> None:
    invite_id = an_invite().invite_id
    create_invite(conn, an_invite())
    redeem_invite(conn, invite_id, joiner(1), NOW_S, NOW_MS)
    assert not cancel_invite(conn, invite_id, NOW_MS)
    unknown = redeem_invite(conn, b"\x07" * 16, joiner(1), NOW_S, NOW_MS)
    assert unknown is RedeemResult.UNKNOWN
    with pytest.raises(ValueError):
        redeem_invite(conn, invite_id, b"short", NOW_S, NOW_MS)


def test_listing_invites(conn: Connection) -> None:
    ids = [bytes([n]) * 16 for n in range(1, 6)]
    for n, invite_id in enumerate(ids):
        invite = an_invite(invite_id, max_uses=1, expires_at=NOW_S + 60)
        create_invite(conn, dataclasses.replace(invite, created_at=NOW_MS + n))
    redeem_invite(conn, ids[0], joiner(1), NOW_S, NOW_MS)  # spent
    cancel_invite(conn, ids[1], NOW_MS)  # cancelled
    conn.execute("UPDATE invites SET expires_at = ? WHERE invite_id = ?", (NOW_S, ids[2]))

    assert [i.invite_id for i in list_invites(conn, NOW_S)] == [ids[4], ids[3]]
    assert [i.invite_id for i in list_invites(conn, NOW_S, include_spent=True)] == ids[::-1]
    assert list_invites(conn, NOW_S + 60) == []

    assert burn_expired_invites(conn, NOW_S) == 1  # ids[2]; the others are burnt or live
    assert get_invite(conn, ids[2]).secret is None  # type: ignore[union-attr]
    assert get_invite(conn, ids[3]).secret == SECRET  # type: ignore[union-attr]
    assert burn_expired_invites(conn, NOW_S) == 0


# --- through the trio adapter -------------------------------------------------------------


async def test_concurrent_redeems_never_over_spend(db_path: Path, key: bytes) -> None:
    invite_id = an_invite().invite_id
    results: list[RedeemResult] = []

    async def redeem(store: TrioStore, who: bytes) -> None:
        fn = partial(
            redeem_invite, invite_id=invite_id, joiner_identity_key=who, now_s=NOW_S, now_ms=NOW_MS
        )
        results.append(await store.write(fn))

    async with TrioStore.open(db_path, key, create=True) as store:
        await store.write(partial(create_invite, invite=an_invite(max_uses=5)))
        async with trio.open_nursery() as nursery:
            for n in range(60):
                nursery.start_soon(redeem, store, joiner(n))
            for _ in range(20):  # the same joiner again and again
                nursery.start_soon(redeem, store, joiner(1000))
        invite = await store.read(partial(get_invite, invite_id=invite_id))
        uses = await store.read(partial(list_invite_uses, invite_id=invite_id))

    assert len(results) == 80
    assert results.count(RedeemResult.OK) == 5
    assert len({use.joiner_identity_key for use in uses}) == 5
    repeats = 19 if joiner(1000) in {use.joiner_identity_key for use in uses} else 0
    assert results.count(RedeemResult.ALREADY_REDEEMED_BY_THIS_JOINER) == repeats
    assert results.count(RedeemResult.SPENT) == 75 - repeats
    assert invite is not None and invite.uses_left == 0 and invite.secret is None
    assert store.stats.commits < store.stats.writes  # they really were grouped


async def test_the_same_joiner_racing_itself_is_charged_once(db_path: Path, key: bytes) -> None:
    invite_id = an_invite().invite_id
    results: list[RedeemResult] = []

    async def redeem(store: TrioStore) -> None:
        fn = partial(
            redeem_invite,
            invite_id=invite_id,
            joiner_identity_key=joiner(7),
            now_s=NOW_S,
            now_ms=NOW_MS,
        )
        results.append(await store.write(fn))

    async with TrioStore.open(db_path, key, create=True) as store:
        await store.write(partial(create_invite, invite=an_invite(max_uses=3)))
        async with trio.open_nursery() as nursery:
            for _ in range(30):
                nursery.start_soon(redeem, store)
        invite = await store.read(partial(get_invite, invite_id=invite_id))

    assert results.count(RedeemResult.OK) == 1
    assert results.count(RedeemResult.ALREADY_REDEEMED_BY_THIS_JOINER) == 29
    assert invite is not None and invite.uses_left == 2


async def test_admitting_a_joiner_is_one_atomic_write(db_path: Path, key: bytes) -> None:
    """Redeem + store the joiner as a verified contact: a failure undoes the redeem too."""
    invite_id = an_invite().invite_id

    def admit(conn: Connection, who: bytes, peer_ids: tuple[str, ...]) -> RedeemResult:
        result = redeem_invite(conn, invite_id, who, NOW_S, NOW_MS)
        if result is RedeemResult.OK:
            devices = [device(peer) for peer in peer_ids]
            upsert_contact(conn, record(who, 1, *devices), NOW_MS)
            set_verified(conn, who, "invite", NOW_MS)
        return result

    async with TrioStore.open(db_path, key, create=True) as store:
        await store.write(partial(create_invite, invite=an_invite(max_uses=1)))
        await store.write(partial(add, identity_key=ALICE, name="Alice"))
        alice = record(ALICE, 2, device("taken"))
        await store.write(partial(upsert_contact, record=alice, now_ms=NOW_MS))

        with pytest.raises(DeviceConflictError):
            await store.write(partial(admit, who=BOB, peer_ids=("taken",)))
        invite = await store.read(partial(get_invite, invite_id=invite_id))
        assert invite is not None and invite.uses_left == 1 and invite.secret == SECRET
        assert await store.read(partial(get_contact, identity_key=BOB)) is None

        assert await store.write(partial(admit, who=BOB, peer_ids=("pb",))) is RedeemResult.OK
        bob = await store.read(partial(get_contact, identity_key=BOB))
        assert bob is not None and bob.verified_by == "invite"
        assert [d.peer_id for d in bob.devices] == ["pb"]


async def test_read_queries_run_read_only(db_path: Path, key: bytes) -> None:
    async with TrioStore.open(db_path, key, create=True) as store:

        def populate(conn: Connection) -> None:
            add(conn, ALICE, "p1")
            create_invite(conn, an_invite())
            add_contact_request(conn, BOB, "pb", "Bob", "hi", b"card", NOW_MS)
            set_profile_field(conn, "phone", "+1", "contacts", NOW_MS)
            set_contact_fields(conn, ALICE, {"email": "a@x"}, NOW_MS)

        await store.write(populate)
        for fn in (
            list_contacts,
            partial(contact_for_peer, peer_id="p1"),
            partial(list_invites, now_s=NOW_S),
            partial(get_invite_use, invite_id=b"\x01" * 16, joiner_identity_key=BOB),
            list_contact_requests,
            partial(count_requests_since, since_ms=0),
            list_profile_fields,
            partial(fields_visible_to, identity_key=ALICE),
            partial(contact_fields, identity_key=ALICE),
            list_identity_key_changes,
            list_blocked,
            partial(is_blocked, identity_key=ALICE),
        ):
            await store.read(fn)
        assert await store.read(partial(fields_visible_to, identity_key=ALICE)) == {"phone": "+1"}


# --- contact requests ---------------------------------------------------------------------


def test_a_contact_request_round_trips(conn: Connection) -> None:
    request_id = add_contact_request(conn, BOB, "pb", "Bob", "met at the café", b"card", NOW_MS)
    request = get_contact_request(conn, request_id)
    assert request is not None
    assert (request.identity_key, request.peer_id, request.display_name) == (BOB, "pb", "Bob")
    assert (request.note, request.card, request.received_at) == ("met at the café", b"card", NOW_MS)
    assert (request.state, request.decided_at) == ("pending", None)
    assert list_contact_requests(conn) == [request]
    assert get_contact_request(conn, request_id + 1) is None
    with pytest.raises(ValueError):
        add_contact_request(conn, b"short", "p", "x", "", b"", NOW_MS)


def test_a_second_pending_request_replaces_the_first(conn: Connection) -> None:
    first = add_contact_request(conn, BOB, "pb", "Bob", "hi", b"card-1", NOW_MS)
    second = add_contact_request(conn, BOB, "pb2", "Bobby", "hi again", b"card-2", NOW_MS + 1)
    other = add_contact_request(conn, CAROL, "pc", "Carol", "", b"card-c", NOW_MS + 2)

    pending = list_contact_requests(conn)
    assert [r.id for r in pending] == [other, second]
    assert pending[1].card == b"card-2" and pending[1].note == "hi again"
    replaced = get_contact_request(conn, first)
    assert replaced is not None
    assert (replaced.state, replaced.decided_at, replaced.card) == ("replaced", NOW_MS + 1, b"")
    assert [r.id for r in list_contact_requests(conn, None)] == [other, second, first]
    assert [r.id for r in list_contact_requests(conn, "replaced")] == [first]
    with pytest.raises(ValueError):
        list_contact_requests(conn, "maybe")  # type: ignore[arg-type]

    # One pending request per identity, even past the query functions.
    with pytest.raises(sqlcipher.IntegrityError):
        conn.execute(
            "INSERT INTO contact_requests (identity_key, peer_id, display_name, note, card,"
            " received_at) VALUES (?, 'p', 'x', '', x'', 1)",
            (BOB,),
        )


def test_deciding_a_request(conn: Connection) -> None:
    bob = add_contact_request(conn, BOB, "pb", "Bob", "", b"c", NOW_MS)
    carol = add_contact_request(conn, CAROL, "pc", "Carol", "", b"c", NOW_MS)

    assert set_contact_request_state(conn, bob, "accepted", NOW_MS + 1)
    assert not set_contact_request_state(conn, bob, "declined", NOW_MS + 2)  # already decided
    assert set_contact_request_state(conn, carol, "declined", NOW_MS + 3)
    assert not set_contact_request_state(conn, 999, "accepted", NOW_MS)
    with pytest.raises(ValueError):
        set_contact_request_state(conn, bob, "pending", NOW_MS)  # type: ignore[arg-type]

    assert list_contact_requests(conn) == []
    accepted = get_contact_request(conn, bob)
    assert accepted is not None and (accepted.state, accepted.decided_at) == (
        "accepted",
        NOW_MS + 1,
    )
    assert [r.id for r in list_contact_requests(conn, "declined")] == [carol]
    # A new request after a decision is a new pending one.
    again = add_contact_request(conn, CAROL, "pc", "Carol", "please", b"c", NOW_MS + 4)
    assert [r.id for r in list_contact_requests(conn)] == [again]


def test_rate_limit_counts(conn: Connection) -> None:
    for n in range(5):  # replaced requests still count
        add_contact_request(conn, BOB, "pb", "Bob", str(n), b"c", NOW_MS + n * 1000)
    add_contact_request(conn, CAROL, "pc", "Carol", "", b"c", NOW_MS + 2500)
    declined = add_contact_request(conn, ALICE, "pa", "Alice", "", b"c", NOW_MS - 10_000)
    set_contact_request_state(conn, declined, "declined", NOW_MS)

    assert count_requests_since(conn, NOW_MS) == 6
    assert count_requests_since(conn, NOW_MS - 10_000) == 7
    assert count_requests_since(conn, NOW_MS, BOB) == 5
    assert count_requests_since(conn, NOW_MS + 2000, BOB) == 3
    assert count_requests_since(conn, NOW_MS + 2000) == 4
    assert count_requests_since(conn, NOW_MS + 5000) == 0
    assert count_requests_since(conn, 0, ALICE) == 1
    assert count_requests_since(conn, 0, b"\x00" * 32) == 0

    # Housekeeping: decided and replaced requests older than a cut-off go; pending ones stay.
    assert prune_contact_requests(conn, NOW_MS + 2000) == 3  # Alice's + Bob's first two
    assert count_requests_since(conn, 0) == 4
    assert len(list_contact_requests(conn)) == 2


# --- profile ------------------------------------------------------------------------------


def test_profile_fields_round_trip(conn: Connection) -> None:
    set_profile_field(conn, "display_name", "Zoe", "public", NOW_MS)
    set_profile_field(conn, "phone", "+1", "contacts", NOW_MS)
    set_profile_field(conn, "phone", "+2", "chosen", NOW_MS + 1)

    fields = list_profile_fields(conn)
    assert [(f.name, f.value, f.audience, f.updated_at, f.granted_to) for f in fields] == [
        ("display_name", "Zoe", "public", NOW_MS, ()),
        ("phone", "+2", "chosen", NOW_MS + 1, ()),
    ]
    assert remove_profile_field(conn, "phone")
    assert not remove_profile_field(conn, "phone")
    assert [f.name for f in list_profile_fields(conn)] == ["display_name"]

    with pytest.raises(ValueError, match="audience"):
        set_profile_field(conn, "x", "y", "everyone", NOW_MS)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="name"):
        set_profile_field(conn, "", "y", "public", NOW_MS)


def test_grants(conn: Connection) -> None:
    add(conn, ALICE, "pa")
    add(conn, BOB, "pb")
    set_profile_field(conn, "phone", "+1", "chosen", NOW_MS)

    assert grant_field(conn, "phone", ALICE)
    assert not grant_field(conn, "phone", ALICE)
    assert grant_field(conn, "phone", BOB)
    with pytest.raises(UnknownContactError):
        grant_field(conn, "phone", CAROL)
    with pytest.raises(UnknownProfileFieldError):
        grant_field(conn, "email", ALICE)
    [phone] = list_profile_fields(conn)
    assert set(phone.granted_to) == {ALICE, BOB}

    assert revoke_field_grant(conn, "phone", BOB)
    assert not revoke_field_grant(conn, "phone", BOB)
    assert list_profile_fields(conn)[0].granted_to == (ALICE,)

    assert remove_profile_field(conn, "phone")  # its grants go with it
    assert conn.execute("SELECT count(*) FROM profile_field_grants").fetchone()[0] == 0


def test_field_visibility_per_audience(conn: Connection) -> None:
    add(conn, ALICE, "pa")
    add(conn, BOB, "pb")
    add(conn, CAROL, "pc")
    set_profile_field(conn, "name", "Zoe", "public", NOW_MS)
    set_profile_field(conn, "email", "z@x", "contacts", NOW_MS)
    set_profile_field(conn, "phone", "+1", "chosen", NOW_MS)
    set_profile_field(conn, "team", "blue", "groups", NOW_MS)
    grant_field(conn, "phone", ALICE)
    set_blocked(conn, CAROL, True, NOW_MS)

    public = {"name": "Zoe"}
    assert fields_visible_to(conn, ALICE) == {"name": "Zoe", "email": "z@x", "phone": "+1"}
    assert fields_visible_to(conn, BOB) == {"name": "Zoe", "email": "z@x"}
    assert fields_visible_to(conn, CAROL) == public  # blocked: a stranger
    assert fields_visible_to(conn, b"\x42" * 32) == public  # not a contact
    assert fields_visible_to(conn, None) == public

    # Grants apply only while the audience is 'chosen', and come back with it.
    set_profile_field(conn, "phone", "+1", "groups", NOW_MS)
    assert "phone" not in fields_visible_to(conn, ALICE)
    set_profile_field(conn, "phone", "+1", "chosen", NOW_MS)
    assert fields_visible_to(conn, ALICE)["phone"] == "+1"


def test_contact_fields_are_replaced_as_a_whole(conn: Connection) -> None:
    add(conn, ALICE, "pa")
    assert contact_fields(conn, ALICE) == {}

    assert set_contact_fields(conn, ALICE, {"email": "a@x", "phone": "+1"}, NOW_MS)
    assert contact_fields(conn, ALICE) == {"email": "a@x", "phone": "+1"}

    # phone revoked, email unchanged, city new.
    assert set_contact_fields(conn, ALICE, {"email": "a@x", "city": "Oslo"}, NOW_MS + 1)
    assert contact_fields(conn, ALICE) == {"city": "Oslo", "email": "a@x"}
    updated = dict(
        conn.execute(
            "SELECT name, updated_at FROM contact_fields WHERE identity_key = ?", (ALICE,)
        ).fetchall()
    )
    assert updated == {"email": NOW_MS, "city": NOW_MS + 1}

    assert not set_contact_fields(conn, ALICE, {"email": "a@x", "city": "Oslo"}, NOW_MS + 2)
    assert set_contact_fields(conn, ALICE, {}, NOW_MS + 3)
    assert contact_fields(conn, ALICE) == {}
    with pytest.raises(UnknownContactError):
        set_contact_fields(conn, BOB, {"x": "y"}, NOW_MS)
