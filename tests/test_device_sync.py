"""What moves to a new device of mine and what my devices tell each other: the store-level
export and import of `p2pid.device_sync` (real SQLCipher stores), and, between real in-process
nodes, how device lists and copies from a contact are handled."""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import msgspec
import pytest
import trio

from p2pid.crypto.device_list import DEVICE_LIST_CONTEXT, DeviceListError, sign_device_list
from p2pid.crypto.identity import IdentityKeys
from p2pid.device_sync import (
    HistoryChoice,
    SyncError,
    export_batches,
    import_batch,
    import_contact,
    import_message,
    join_signed_list,
    record_from_list,
    split_signed_list,
)
from p2pid.events import EventBus, now_ms
from p2pid.home import Home
from p2pid.linking import LinkedHome, LinkOptions, link_new_device
from p2pid.net.host import NetHost
from p2pid.protocols.messaging import DeliveryLink
from p2pid.provision import unlock_vault_key
from p2pid.store import contacts as contact_queries
from p2pid.store import messages as message_queries
from p2pid.store import queries
from p2pid.store.contacts import ContactRow
from p2pid.store.db import Connection, open_database
from p2pid.store.messages import NewMessage
from p2pid.store.trio_store import TrioStore
from p2pid.wire.device_link import (
    MAX_LINK_FRAME,
    MAX_SYNC_CONTACTS,
    MAX_SYNC_MESSAGES,
    ContactSnapshot,
    MessageCopy,
    ProfileFieldCopy,
    SyncBatch,
    SyncEnd,
    decode_link_message,
    encode_link_message,
)
from p2pid.wire.devices import ContactDevicesChanged
from p2pid.wire.messages import (
    Body,
    ContactCopy,
    DeviceListUpdate,
    Envelope,
    MessagesDropped,
    MessageSent,
    Result,
    SentCopy,
    Text,
    decode_envelope,
)
from p2pid.wire.records import (
    DeviceEntry,
    DeviceListBody,
    DevicePrekeys,
    SignedDeviceList,
    encode,
)
from tests.test_messaging import LOOPBACK, STEP_TIMEOUT, befriend, node_of, person, texts
from tests.test_messaging import Person as NodePerson

NOW_MS = 1_800_000_000_000
DAY_MS = 24 * 3600 * 1000


# -- store-level helpers ---------------------------------------------------------------------------


@pytest.fixture
def source(tmp_path: Path) -> Iterator[Connection]:
    connection = open_database(tmp_path / "source.db", os.urandom(32), create=True)
    yield connection
    connection.close()


@pytest.fixture
def target(tmp_path: Path) -> Iterator[Connection]:
    connection = open_database(tmp_path / "target.db", os.urandom(32), create=True)
    yield connection
    connection.close()


@dataclass
class Someone:
    name: str
    keys: IdentityKeys

    @property
    def identity_key(self) -> bytes:
        return self.keys.identity_public_key

    def entry(self, device: str = "phone") -> DeviceEntry:
        return DeviceEntry(
            device_key=self.keys.device_public_key,
            olm_curve25519=f"curve-{self.name}-{device}",
            olm_ed25519=f"ed-{self.name}-{device}",
            name=f"{self.name}'s {device}",
            created_at=NOW_MS - 100 * DAY_MS,
        )

    def signed_list(self, version: int = 1, signer: IdentityKeys | None = None) -> SignedDeviceList:
        return sign_device_list(
            (signer or self.keys).identity_signing_key, version, NOW_MS, [self.entry()]
        )

    def prekeys(self) -> DevicePrekeys:
        return DevicePrekeys(
            device_key=self.keys.device_public_key,
            one_time_keys=[f"otk-{self.name}-1", f"otk-{self.name}-2"],
            fallback_key=f"fallback-{self.name}",
        )


def someone(name: str) -> Someone:
    return Someone(name, IdentityKeys.generate())


def add_contact(conn: Connection, who: Someone, display_name: str | None = None) -> None:
    record = record_from_list(
        who.signed_list(), who.identity_key, display_name or who.name, [who.prekeys()]
    )
    contact_queries.upsert_contact(conn, record, NOW_MS - 50 * DAY_MS)


def add_message(
    conn: Connection,
    me: Someone,
    contact: Someone,
    *,
    outgoing: bool,
    state: str,
    lamport: int,
    days_ago: float,
    body: str | None = None,
) -> NewMessage:
    at = NOW_MS - int(days_ago * DAY_MS)
    message = NewMessage(
        message_id=os.urandom(16),
        sender_identity=(me if outgoing else contact).identity_key,
        sender_device=(me if outgoing else contact).keys.peer_id,
        outgoing=outgoing,
        kind="text",
        body=body or f"{'to' if outgoing else 'from'} {contact.name} #{lamport} ({state})",
        lamport=lamport,
        sent_at=at - 500,
        received_at=at,
        state=state,
    )
    conversation = message_queries.conversation_id_for(conn, contact.identity_key, at)
    assert message_queries.insert_message(conn, conversation, message) is not None
    return message


@dataclass
class History:
    me: Someone
    bob: Someone
    carol: Someone
    dave: Someone
    eve: Someone
    messages: list[NewMessage]
    recent: int  # messages received in the last 7 days


def populate(conn: Connection) -> History:
    """Alice's store: herself, three contacts (one blocked), a blocked stranger, profile
    fields with grants, and a history over 40 days."""
    me, bob, carol, dave, eve = (someone(n) for n in ("Alice", "Bob", "Carol", "Dave", "Eve"))
    own = record_from_list(me.signed_list(), me.identity_key, "Alice", [])
    contact_queries.save_self(conn, own, NOW_MS - 100 * DAY_MS)
    for who in (bob, carol, dave):
        add_contact(conn, who)
    contact_queries.rename_contact(conn, bob.identity_key, "Bobby", NOW_MS)
    contact_queries.set_verified(conn, bob.identity_key, "sas", NOW_MS - 20 * DAY_MS)
    contact_queries.set_verified(conn, carol.identity_key, "invite", NOW_MS - 30 * DAY_MS)
    contact_queries.set_contact_fields(
        conn, bob.identity_key, {"email": "bob@example.org", "city": "Oslo"}, NOW_MS
    )
    queries.upsert_peer_seen(
        conn, bob.keys.peer_id, ["/ip4/10.0.0.2/tcp/4001"], "manual", {}, NOW_MS
    )
    contact_queries.set_blocked(conn, dave.identity_key, True, NOW_MS)
    contact_queries.set_blocked(conn, eve.identity_key, True, NOW_MS)
    contact_queries.set_profile_field(conn, "email", "alice@example.org", "public", NOW_MS)
    contact_queries.set_profile_field(conn, "phone", "+47 555 0100", "chosen", NOW_MS)
    contact_queries.set_profile_field(conn, "city", "Bergen", "contacts", NOW_MS)
    contact_queries.grant_field(conn, "phone", bob.identity_key)
    contact_queries.grant_field(conn, "phone", carol.identity_key)

    messages = [
        add_message(conn, me, bob, outgoing=True, state="read", lamport=1, days_ago=40),
        add_message(conn, me, bob, outgoing=False, state="read", lamport=2, days_ago=30),
        add_message(conn, me, bob, outgoing=True, state="failed", lamport=3, days_ago=10),
        add_message(conn, me, bob, outgoing=True, state="delivered", lamport=4, days_ago=5),
        add_message(conn, me, bob, outgoing=False, state="unread", lamport=5, days_ago=2),
        add_message(conn, me, bob, outgoing=False, state="unread", lamport=6, days_ago=1),
        add_message(conn, me, bob, outgoing=True, state="pending", lamport=7, days_ago=0.5),
        add_message(conn, me, carol, outgoing=False, state="unread", lamport=1, days_ago=20),
        add_message(conn, me, carol, outgoing=True, state="delivered", lamport=2, days_ago=3),
    ]
    recent = sum(1 for m in messages if m.received_at >= NOW_MS - 7 * DAY_MS)
    return History(me, bob, carol, dave, eve, messages, recent)


def import_all(conn: Connection, batches: list[SyncBatch]) -> None:
    for batch in batches:
        import_batch(conn, batch, NOW_MS)


def stored_messages(conn: Connection) -> list[tuple[object, ...]]:
    rows = message_queries.messages_since(conn, 0, 0, 10_000)
    return sorted(
        (
            row.peer_identity,
            row.message_id,
            row.sender_identity,
            row.sender_device,
            row.outgoing,
            row.body,
            row.lamport,
            row.sent_at,
            row.received_at,
            row.state,
        )
        for row in rows
    )


def contact_view(conn: Connection) -> list[tuple[object, ...]]:
    return [
        (
            row.identity_key,
            row.display_name,
            row.nickname,
            row.verified_by,
            row.blocked,
            row.device_list,
            row.device_list_version,
            tuple((d.peer_id, d.name, d.olm_curve25519, d.fallback_key) for d in row.devices),
            contact_queries.contact_fields(conn, row.identity_key),
        )
        for row in contact_queries.list_contacts(conn)
    ]


def nothing_stored(conn: Connection) -> bool:
    return (
        contact_queries.list_contacts(conn) == []
        and queries.list_peers(conn) == []
        and message_queries.list_conversations(conn) == []
    )


# -- export ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("choice", "expected"),
    [
        (HistoryChoice("none"), "none"),
        (HistoryChoice("days", 7), "recent"),
        (HistoryChoice("days", 0), "nothing"),
        (HistoryChoice("days", 365), "all"),
        (HistoryChoice("all"), "all"),
    ],
    ids=["none", "7-days", "0-days", "365-days", "all"],
)
def test_export_counts_follow_the_history_choice(
    source: Connection, choice: HistoryChoice, expected: str
) -> None:
    history = populate(source)
    batches, end = export_batches(source, choice, NOW_MS)
    wanted = {
        "none": 0,
        "nothing": 0,
        "recent": history.recent,
        "all": len(history.messages),
    }[expected]
    assert 0 < history.recent < len(history.messages)
    # Contacts: Bob, Carol and the blocked Dave; never myself.
    assert end == SyncEnd(contacts=3, messages=wanted)
    contacts = [c for b in batches for c in b.contacts]
    assert {c.identity_key for c in contacts} == {
        history.bob.identity_key,
        history.carol.identity_key,
        history.dave.identity_key,
    }
    messages = [m for b in batches for m in b.messages]
    assert len(messages) == wanted
    if expected == "recent":
        assert all(m.received_at >= NOW_MS - 7 * DAY_MS for m in messages)
    # Blocks and the profile travel once, whatever the choice.
    assert sorted(k for b in batches for k in b.blocked) == sorted(
        [history.dave.identity_key, history.eve.identity_key]
    )
    assert sorted(p.name for b in batches for p in b.profile) == ["city", "email", "phone"]
    # Every batch survives the new device's strict decoder.
    for batch in batches:
        assert decode_link_message(encode_link_message(batch)) == batch


def test_an_exported_contact_carries_only_fallback_keys(source: Connection) -> None:
    history = populate(source)
    batches, _ = export_batches(source, HistoryChoice("none"), NOW_MS)
    [bob] = [c for b in batches for c in b.contacts if c.identity_key == history.bob.identity_key]
    assert bob.nickname == "Bobby" and bob.verified_by == "sas"
    assert bob.fields == {"city": "Oslo", "email": "bob@example.org"}
    # One-time keys are for one device to claim: they are not copied.
    assert bob.prekeys == [
        DevicePrekeys(device_key=history.bob.keys.device_public_key, fallback_key="fallback-Bob")
    ]
    assert bob.addrs == {history.bob.keys.peer_id: ["/ip4/10.0.0.2/tcp/4001"]}
    # The list travels exactly as Bob signed it (Ed25519 signatures are deterministic).
    assert bob.device_list == history.bob.signed_list()
    assert split_signed_list(join_signed_list(bob.device_list)) == bob.device_list


def test_large_histories_come_in_bounded_batches(source: Connection) -> None:
    me = someone("Alice")
    contacts = [someone(f"C{n}") for n in range(MAX_SYNC_CONTACTS + 4)]
    for who in contacts:
        add_contact(source, who)
    bob = contacts[0]
    count = MAX_SYNC_MESSAGES + 500
    for n in range(count):
        add_message(source, me, bob, outgoing=n % 2 == 0, state="read", lamport=n + 1, days_ago=1)
    big = 60_000
    for n in range(12):  # about 720 kB of text: more than one batch's worth of bytes
        add_message(
            source,
            me,
            bob,
            outgoing=True,
            state="delivered",
            lamport=count + n + 1,
            days_ago=1,
            body=chr(ord("a") + n) * big,
        )
    batches, end = export_batches(source, HistoryChoice("all"), NOW_MS)
    assert end == SyncEnd(contacts=len(contacts), messages=count + 12)
    contact_batches = [b for b in batches if b.contacts]
    assert [len(b.contacts) for b in contact_batches] == [MAX_SYNC_CONTACTS, 4]
    message_batches = [b for b in batches if b.messages]
    assert len(message_batches) >= 3
    for batch in batches:
        encoded = encode_link_message(batch)
        assert len(encoded) <= MAX_LINK_FRAME
        assert len(batch.messages) <= MAX_SYNC_MESSAGES
        assert decode_link_message(encoded) == batch
    # In storage order, each exactly once.
    exported = [m.lamport for b in message_batches for m in b.messages]
    assert exported == list(range(1, count + 13))


def test_a_contact_with_an_overlong_display_name_does_not_break_the_export(
    source: Connection, target: Connection
) -> None:
    """A contact's card names them as they like (the join protocol does not bound it); the
    new device's decoder must still take every batch."""
    long_name, empty = someone("Long"), someone("Empty")
    add_contact(source, long_name, display_name="L" * 100)
    add_contact(source, empty, display_name="")
    batches, end = export_batches(source, HistoryChoice("all"), NOW_MS)
    assert end.contacts == 2
    for batch in batches:
        assert decode_link_message(encode_link_message(batch)) == batch
    import_all(target, batches)
    stored = {row.identity_key: row for row in contact_queries.list_contacts(target)}
    assert stored[long_name.identity_key].display_name.startswith("L" * 60)
    assert set(stored) == {long_name.identity_key, empty.identity_key}


# -- import ----------------------------------------------------------------------------------------


def test_import_reproduces_the_store(source: Connection, target: Connection) -> None:
    history = populate(source)
    batches, end = export_batches(source, HistoryChoice("all"), NOW_MS)
    # The new device's own row is written before the history (as write_linked_home does).
    own = record_from_list(history.me.signed_list(), history.me.identity_key, "Alice", [])
    contact_queries.save_self(target, own, NOW_MS)
    import_all(target, batches)

    assert contact_view(target) == contact_view(source)
    assert [c.name for c in contact_queries.list_contacts(target)] == ["Bobby", "Carol", "Dave"]
    bob = contact_queries.get_contact(target, history.bob.identity_key)
    assert bob is not None
    [device] = bob.devices
    assert device.one_time_keys == () and device.fallback_key == "fallback-Bob"
    assert {p.peer_id: [a.addr for a in p.addrs] for p in queries.list_peers(target)} == {
        history.bob.keys.peer_id: ["/ip4/10.0.0.2/tcp/4001"]
    }
    assert sorted(contact_queries.list_blocked(target)) == sorted(
        contact_queries.list_blocked(source)
    )
    assert [
        (f.name, f.value, f.audience, sorted(f.granted_to))
        for f in contact_queries.list_profile_fields(target)
    ] == [
        (f.name, f.value, f.audience, sorted(f.granted_to))
        for f in contact_queries.list_profile_fields(source)
    ]
    assert stored_messages(target) == stored_messages(source)
    assert len(stored_messages(target)) == end.messages
    for who, unread in ((history.bob, 2), (history.carol, 1)):
        conversation = message_queries.get_conversation(target, who.identity_key)
        original = message_queries.get_conversation(source, who.identity_key)
        assert conversation is not None and original is not None
        assert conversation.unread == original.unread == unread
        assert conversation.lamport == original.lamport
    # My own row is untouched by the history, and is no contact.
    mine = contact_queries.get_self(target)
    assert mine is not None and mine.identity_key == history.me.identity_key
    assert contact_queries.get_contact(target, history.me.identity_key) is None

    # Importing the same history again changes nothing.
    before = (contact_view(target), stored_messages(target))
    import_all(target, batches)
    assert (contact_view(target), stored_messages(target)) == before
    conversation = message_queries.get_conversation(target, history.bob.identity_key)
    assert conversation is not None and conversation.unread == 2


def test_an_imported_contact_keeps_when_it_was_added_and_verified(
    source: Connection, target: Connection
) -> None:
    history = populate(source)
    batches, _ = export_batches(source, HistoryChoice("none"), NOW_MS)
    import_all(target, batches)
    for key in (history.bob.identity_key, history.carol.identity_key):
        original = contact_queries.get_contact(source, key)
        copied = contact_queries.get_contact(target, key)
        assert original is not None and copied is not None
        assert (copied.added_at, copied.verified_at) == (original.added_at, original.verified_at)


def snapshot_of(who: Someone, **change: object) -> ContactSnapshot:
    snapshot = ContactSnapshot(
        identity_key=who.identity_key,
        display_name=who.name,
        nickname="nick",
        verified_by="sas",
        verified_at=NOW_MS,
        device_list=who.signed_list(),
        prekeys=[who.prekeys()],
        fields={"email": f"{who.name}@example.org"},
        addrs={who.keys.peer_id: ["/ip4/10.0.0.9/tcp/4001"]},
        added_at=NOW_MS,
    )
    return msgspec.structs.replace(snapshot, **change)


def test_a_snapshot_with_a_forged_device_list_is_skipped(target: Connection) -> None:
    bob, carol, mallory = someone("Bob"), someone("Carol"), someone("Mallory")
    forged = [
        snapshot_of(bob, device_list=bob.signed_list(signer=mallory.keys)),
        # Carol's genuine list, presented as Bob's.
        snapshot_of(bob, device_list=carol.signed_list()),
        # A list whose signature lost a bit.
        snapshot_of(
            bob,
            device_list=SignedDeviceList(
                body=bob.signed_list().body,
                signature=bytes([bob.signed_list().signature[0] ^ 1])
                + bob.signed_list().signature[1:],
            ),
        ),
        snapshot_of(bob, device_list=SignedDeviceList(body=b"\x80", signature=b"\0" * 64)),
    ]
    for snapshot in forged:
        with pytest.raises(SyncError, match="device list is refused"):
            import_contact(target, snapshot, NOW_MS)
        assert nothing_stored(target)
    # In a batch: the forged ones are skipped, the genuine one is stored.
    import_batch(target, SyncBatch(contacts=[*forged, snapshot_of(carol)]), NOW_MS)
    [stored] = contact_queries.list_contacts(target)
    assert stored.identity_key == carol.identity_key and stored.nickname == "nick"
    assert stored.verified_by == "sas"
    assert contact_queries.contact_fields(target, carol.identity_key) == {
        "email": "Carol@example.org"
    }
    assert [p.peer_id for p in queries.list_peers(target)] == [carol.keys.peer_id]


def test_a_snapshot_claiming_another_contacts_device_is_skipped(target: Connection) -> None:
    """Bob's copied list names Carol's device (Bob can sign any device key): refused as a
    SyncError, not a store error that would end the whole link or message batch."""
    bob, carol = someone("Bob"), someone("Carol")
    import_contact(target, snapshot_of(carol), NOW_MS)
    before = contact_view(target)
    claim = sign_device_list(bob.keys.identity_signing_key, 1, NOW_MS, [bob.entry(), carol.entry()])
    snapshot = snapshot_of(bob, device_list=claim)
    with pytest.raises(SyncError, match="another identity's device"):
        import_contact(target, snapshot, NOW_MS)
    assert contact_view(target) == before
    import_batch(target, SyncBatch(contacts=[snapshot, snapshot_of(someone("Dave"))]), NOW_MS)
    assert sorted(c.display_name for c in contact_queries.list_contacts(target)) == [
        "Carol",
        "Dave",
    ]


def test_a_snapshot_only_brings_addresses_of_its_own_devices(target: Connection) -> None:
    bob, carol = someone("Bob"), someone("Carol")
    snapshot = snapshot_of(
        bob,
        addrs={
            bob.keys.peer_id: ["/ip4/10.0.0.2/tcp/4001"],
            carol.keys.peer_id: ["/ip4/10.6.6.6/tcp/666"],  # not a device of Bob
        },
    )
    import_contact(target, snapshot, NOW_MS)
    assert [p.peer_id for p in queries.list_peers(target)] == [bob.keys.peer_id]


def test_record_from_list_refuses_a_forged_list() -> None:
    bob, mallory = someone("Bob"), someone("Mallory")
    with pytest.raises(DeviceListError):
        record_from_list(bob.signed_list(signer=mallory.keys), bob.identity_key, "Bob", [])
    record = record_from_list(bob.signed_list(3), bob.identity_key, "Bob", [bob.prekeys()])
    assert record.device_list_version == 3
    [device] = record.devices
    assert device.peer_id == bob.keys.peer_id
    assert device.one_time_keys == ("otk-Bob-1", "otk-Bob-2")
    # Prekeys for a device the list does not hold are ignored.
    other = record_from_list(bob.signed_list(), bob.identity_key, "Bob", [mallory.prekeys()])
    assert other.devices[0].fallback_key is None


def copy_of(**change: object) -> MessageCopy:
    bob = b"\xb0" * 32
    message = MessageCopy(
        conversation_with=bob,
        message_id=os.urandom(16),
        sender_identity=bob,
        sender_device="12D3KooWbob",
        outgoing=False,
        body="hello",
        lamport=1,
        sent_at=NOW_MS,
        received_at=NOW_MS,
        state="unread",
    )
    return msgspec.structs.replace(message, **change)


@pytest.mark.parametrize(
    "message",
    [
        copy_of(state="bogus"),
        copy_of(state=""),
        copy_of(outgoing=True, state="unread"),
        copy_of(outgoing=False, state="delivered"),
        copy_of(outgoing=False, state="pending"),
    ],
    ids=["bogus", "empty", "outgoing-unread", "incoming-delivered", "incoming-pending"],
)
def test_a_message_copy_with_an_unknown_state_is_refused(
    target: Connection, message: MessageCopy
) -> None:
    with pytest.raises(SyncError, match="unknown state"):
        import_message(target, message, NOW_MS)
    with pytest.raises(SyncError, match="unknown state"):
        import_batch(target, SyncBatch(messages=[message]), NOW_MS)
    assert nothing_stored(target)
    import_message(target, copy_of(), NOW_MS)
    [conversation] = message_queries.list_conversations(target)
    assert conversation.unread == 1


def test_unusable_profile_copies_are_skipped(target: Connection) -> None:
    bob, stranger = someone("Bob"), someone("Stranger")
    import_contact(target, snapshot_of(bob), NOW_MS)
    import_batch(
        target,
        SyncBatch(
            profile=[
                ProfileFieldCopy(name="odd", value="x", audience="everyone"),
                ProfileFieldCopy(
                    name="phone",
                    value="+47 555 0100",
                    audience="chosen",
                    granted_to=[bob.identity_key, stranger.identity_key],
                ),
            ]
        ),
        NOW_MS,
    )
    [phone] = contact_queries.list_profile_fields(target)
    assert (phone.name, phone.audience, phone.granted_to) == (
        "phone",
        "chosen",
        (bob.identity_key,),
    )


# -- messaging: what a contact may and may not send about devices -------------------------------


async def envelopes_queued_by(
    sender: NodePerson, recipient: NodePerson, make: Callable[[], Awaitable[object]]
) -> list[Envelope]:
    """Run `make` on the sender's node while the recipient is away; the envelopes it queued
    for the recipient's device, oldest first: the real thing, as the sender's node made it."""
    peer = recipient.keys.peer_id

    def pending(conn: Connection) -> dict[int, bytes]:
        return {e.id: e.envelope for e in message_queries.pending_for_device(conn, peer, 1000)}

    before = await sender.store.read(pending)
    await make()
    after = await sender.store.read(pending)
    return [decode_envelope(after[i]) for i in sorted(after.keys() - before.keys())]


async def compose_to(sender: NodePerson, recipient: NodePerson, body: Body) -> None:
    """Queue a body no honest node sends to a contact (the sender's own messaging code)."""
    messaging = sender.running.messaging
    await sender.store.write(
        lambda conn: messaging._compose(conn, recipient.keys.identity_public_key, body, now_ms())
    )


def list_claiming(identity: IdentityKeys, signer: IdentityKeys, version: int) -> SignedDeviceList:
    """A list naming `identity` but signed by `signer`."""
    body = encode(
        DeviceListBody(
            identity_key=identity.identity_public_key,
            version=version,
            issued_at=now_ms(),
            devices=[
                DeviceEntry(
                    device_key=identity.device_public_key,
                    olm_curve25519="c",
                    olm_ed25519="e",
                    name="forged",
                    created_at=1,
                )
            ],
        )
    )
    signature = signer.identity_signing_key.sign(DEVICE_LIST_CONTEXT + body).signature
    return SignedDeviceList(body=body, signature=signature)


async def stored_row(holder: NodePerson, contact: NodePerson) -> ContactRow:
    row = await holder.store.read(
        lambda conn: contact_queries.get_contact(conn, contact.keys.identity_public_key)
    )
    assert row is not None
    return row


def current_entries(row: ContactRow) -> list[DeviceEntry]:
    assert row.device_list is not None
    body = msgspec.msgpack.decode(split_signed_list(row.device_list).body, type=DeviceListBody)
    return list(body.devices)


def tablet(name: str = "Bob's tablet") -> DeviceEntry:
    return DeviceEntry(
        device_key=bytes(IdentityKeys.generate().device_public_key),
        olm_curve25519="curve-tablet",
        olm_ed25519="ed-tablet",
        name=name,
        created_at=now_ms(),
    )


async def test_device_lists_and_copies_from_a_contact(tmp_path: Path) -> None:
    mallory = IdentityKeys.generate()
    async with person(tmp_path, "Alice") as alice, person(tmp_path, "Bob") as bob:
        async with node_of(alice), node_of(bob):
            await befriend(alice, bob)
        original = await stored_row(alice, bob)
        assert original.device_list_version == 1
        [phone] = current_entries(original)
        new_tablet = tablet()
        renamed = msgspec.structs.replace(phone, name="renamed")
        carol = someone("Carol")

        def update(signed: SignedDeviceList) -> Callable[[], Awaitable[None]]:
            return lambda: bob.running.messaging.publish_device_list(
                DeviceListUpdate(device_list=signed, prekeys=[])
            )

        sign = bob.keys.identity_signing_key
        async with node_of(bob):
            plan: list[tuple[str, Callable[[], Awaitable[object]]]] = [
                ("v3", update(sign_device_list(sign, 3, now_ms(), [phone, new_tablet]))),
                ("v2", update(sign_device_list(sign, 2, now_ms(), [renamed]))),
                ("v3 again", update(sign_device_list(sign, 3, now_ms(), [renamed]))),
                ("by mallory", update(list_claiming(bob.keys, mallory, 9))),
                ("mallory's own", update(sign_device_list(mallory.identity_signing_key, 9, 1, []))),
                (
                    "sent copy",
                    lambda: compose_to(
                        bob, alice, SentCopy(conversation_with=carol.identity_key, text="hi")
                    ),
                ),
                (
                    "contact copy",
                    lambda: compose_to(bob, alice, ContactCopy(contact=snapshot_of(carol))),
                ),
                ("text", lambda: bob.running.send("Alice", "still here")),
            ]
            queued = {}
            for label, make in plan:
                [queued[label]] = await envelopes_queued_by(bob, alice, make)

        async with (
            node_of(alice) as alice_node,
            NetHost.open(bob.keys.device_seed, LOOPBACK) as bob_device,
        ):
            bob_device.add_addrs(alice_node.net.peer_id, alice_node.net.listen_addrs())
            link = await DeliveryLink.open(bob_device, alice_node.net.peer_id)

            async def deliver(label: str) -> Result:
                with trio.fail_after(STEP_TIMEOUT):
                    [result] = await link.deliver([queued[label]])
                return result

            # A newer list: taken, and announced.
            assert await deliver("v3") is Result.STORED
            changed = await alice.next_event(ContactDevicesChanged)
            assert changed.version == 3 and changed.removed == []
            assert len(changed.added) == 1
            accepted = await stored_row(alice, bob)
            assert accepted.device_list_version == 3
            assert current_entries(accepted) == [phone, new_tablet]
            assert sorted(d.name for d in accepted.devices) == sorted([phone.name, "Bob's tablet"])

            # An older list and another at the same version: acknowledged, nothing changes.
            for label in ("v2", "v3 again"):
                assert await deliver(label) is Result.STORED
                assert await stored_row(alice, bob) == accepted

            # Lists not signed by Bob's identity: rejected as forged, nothing changes.
            for label in ("by mallory", "mallory's own"):
                assert await deliver(label) is Result.REJECTED
                dropped = await alice.next_event(MessagesDropped)
                assert dropped.reason == "forged_payload"
                assert await stored_row(alice, bob) == accepted

            # Copies are for my own devices: from a contact they are forged.
            for label in ("sent copy", "contact copy"):
                assert await deliver(label) is Result.REJECTED
                dropped = await alice.next_event(MessagesDropped)
                assert dropped.reason == "forged_payload"
            assert await texts(alice, "Bob") == []
            conversations = await alice.store.read(message_queries.list_conversations)
            assert carol.identity_key not in {c.peer_identity for c in conversations}
            contacts = await alice.store.read(contact_queries.list_contacts)
            assert [c.identity_key for c in contacts] == [bob.keys.identity_public_key]

            # Bob's channel still works after all that.
            assert await deliver("text") is Result.STORED
            assert await texts(alice, "Bob") == ["still here"]
            stats = await alice_node.message_stats()
            assert stats.dropped == {"forged_payload": 4}
            assert await stored_row(alice, bob) == accepted
            await link.aclose()


async def test_a_contact_list_claiming_my_device_is_rejected(tmp_path: Path) -> None:
    async with person(tmp_path, "Alice") as alice, person(tmp_path, "Bob") as bob:
        async with node_of(alice), node_of(bob):
            await befriend(alice, bob)
        [phone] = current_entries(await stored_row(alice, bob))
        alices_device = DeviceEntry(
            device_key=alice.keys.device_public_key,
            olm_curve25519="curve-stolen",
            olm_ed25519="ed-stolen",
            name="not Bob's",
            created_at=now_ms(),
        )
        claim = sign_device_list(bob.keys.identity_signing_key, 2, now_ms(), [phone, alices_device])
        async with node_of(bob):
            [grab] = await envelopes_queued_by(
                bob,
                alice,
                lambda: bob.running.messaging.publish_device_list(
                    DeviceListUpdate(device_list=claim, prekeys=[])
                ),
            )
            [text] = await envelopes_queued_by(
                bob, alice, lambda: bob.running.send("Alice", "after")
            )
        async with (
            node_of(alice) as alice_node,
            NetHost.open(bob.keys.device_seed, LOOPBACK) as bob_device,
        ):
            bob_device.add_addrs(alice_node.net.peer_id, alice_node.net.listen_addrs())
            link = await DeliveryLink.open(bob_device, alice_node.net.peer_id)
            with trio.fail_after(STEP_TIMEOUT):
                assert await link.deliver([grab, text]) == [Result.REJECTED, Result.STORED]
            assert (await stored_row(alice, bob)).device_list_version == 1
            assert await texts(alice, "Bob") == ["after"]
            await link.aclose()


# -- messaging between two devices of mine, linked in this process -----------------------------


async def link_laptop(tmp_path: Path, phone: NodePerson) -> Home:
    """Link a new home to the phone's identity with the real drivers: the new device's side
    as `p2pid device link` runs it, the phone's as `device approve` does."""
    home = Home(tmp_path / "laptop")
    codes, code_received = trio.open_memory_channel[str](1)
    confirmations: list[str] = []

    def report(event: dict[str, object]) -> None:
        if event["event"] == "code":
            codes.send_nowait(str(event["code"]))
        elif event["event"] == "confirm":
            confirmations.append(str(event["confirmation"]))

    options = LinkOptions(device_name="laptop", listen_addrs=LOOPBACK)
    linked: list[LinkedHome] = []

    async def run_link() -> None:
        linked.append(await link_new_device(home, options, report))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(run_link)
        with trio.fail_after(STEP_TIMEOUT):
            code = await code_received.receive()
            pending = await phone.running.devices.approve(code)
            result = await phone.running.devices.confirm(
                pending.link_id, True, HistoryChoice("all")
            )
    assert result is not None and confirmations == [pending.confirmation]
    [home_linked] = linked
    assert home_linked.identity_id == phone.keys.identity_id
    assert (home_linked.contacts, home_linked.messages) == (result.contacts, result.messages)
    return home


@contextlib.asynccontextmanager
async def device_of(home: Home, name: str) -> AsyncIterator[NodePerson]:
    vault_key = unlock_vault_key(home)
    async with TrioStore.open(home.database, vault_key) as store:
        identity = await store.read(queries.load_local_identity)
        assert identity is not None
        keys = IdentityKeys(identity.identity_seed, identity.device_seed)
        yield NodePerson(name, home, store, vault_key, keys, EventBus().subscribe())


async def test_copies_and_device_lists_between_my_own_devices(tmp_path: Path) -> None:
    mallory = IdentityKeys.generate()
    async with person(tmp_path, "Alice") as phone, person(tmp_path, "Bob") as bob:
        async with node_of(phone), node_of(bob):
            await befriend(phone, bob)
            await phone.running.send("Bob", "before the laptop")
            home = await link_laptop(tmp_path, phone)
            mine = await phone.store.read(contact_queries.get_self)
            async with device_of(home, "Laptop") as laptop:
                # The history came along: Bob, and the conversation.
                contacts = await laptop.store.read(contact_queries.list_contacts)
                assert [c.identity_key for c in contacts] == [bob.keys.identity_public_key]
                assert mine is not None and mine.device_list_version == 2
                assert laptop.keys.peer_id in {d.peer_id for d in mine.devices}
                async with node_of(laptop):
                    assert await texts(laptop, "Bob") == ["before the laptop"]
                    # What the phone sends shows on the laptop: a SentCopy from my device.
                    sent = await phone.running.send("Bob", "sent from the phone")
                    copied = await laptop.next_event(MessageSent)
                    assert copied.message.message_id == sent.message_id
                    assert copied.message.outgoing and copied.message.text == sent.text
                    assert await texts(laptop, "Bob") == [
                        "before the laptop",
                        "sent from the phone",
                    ]

        # The phone is away: what the laptop's node queues for it is sent as it is.
        queued = {}
        async with device_of(home, "Laptop") as laptop, node_of(laptop):
            current = await laptop.store.read(contact_queries.get_self)
            assert current is not None
            entries = current_entries(current)
            sign = laptop.keys.identity_signing_key

            def update(signed: SignedDeviceList) -> Callable[[], Awaitable[None]]:
                return lambda: laptop.running.messaging.publish_device_list(
                    DeviceListUpdate(device_list=signed, prekeys=[])
                )

            plan: list[tuple[str, Callable[[], Awaitable[object]]]] = [
                ("older", update(sign_device_list(sign, 1, now_ms(), entries[:1]))),
                ("same", update(sign_device_list(sign, 2, now_ms(), entries[:1]))),
                ("forged", update(list_claiming(laptop.keys, mallory, 7))),
                ("note", lambda: compose_to(laptop, phone, Text(text="a note to myself"))),
            ]
            for label, make in plan:
                [queued[label]] = await envelopes_queued_by(laptop, phone, make)
            laptop_seed = laptop.keys.device_seed

        async with (
            node_of(phone) as phone_node,
            NetHost.open(laptop_seed, LOOPBACK) as laptop_device,
        ):
            laptop_device.add_addrs(phone_node.net.peer_id, phone_node.net.listen_addrs())
            link = await DeliveryLink.open(laptop_device, phone_node.net.peer_id)
            with trio.fail_after(STEP_TIMEOUT):
                results = await link.deliver([queued[label] for label, _ in plan])
            await link.aclose()
            # An older list and one at the same version change nothing; a list not signed by
            # my identity and a text to myself are forged.
            assert results == [Result.STORED, Result.STORED, Result.REJECTED, Result.REJECTED]
            after = await phone.store.read(contact_queries.get_self)
            assert after is not None and mine is not None
            assert (after.device_list, after.device_list_version) == (mine.device_list, 2)
            assert {d.peer_id for d in after.devices} == {d.peer_id for d in mine.devices}
            assert await texts(phone, "Bob") == ["before the laptop", "sent from the phone"]
            assert (await phone_node.message_stats()).dropped == {"forged_payload": 2}
