"""Profile fields: the rules, the sans-IO snapshot machines, and pushes between real NetHosts on
127.0.0.1, each node with its own SQLCipher store holding the others as contacts."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import msgspec
import pytest
import trio
from hypothesis import given, settings
from hypothesis import strategies as st

from p2pid.contacts import contact_record
from p2pid.crypto.device_list import sign_device_list, verify_device_list
from p2pid.crypto.identity import IdentityKeys, identity_id_from_public_key
from p2pid.events import now_ms
from p2pid.home import Home
from p2pid.net.host import NetHost, StreamError
from p2pid.profile import Profile, ProfileError, PushReport
from p2pid.protocols.cards import JoinedContact
from p2pid.protocols.framed import FramedStream
from p2pid.protocols.profile import (
    ProfileProtocolError,
    ProfilePushError,
    SenderClock,
    SnapshotReceiver,
    SnapshotSender,
    VersionBook,
    new_snapshot,
    push_snapshot,
)
from p2pid.provision import create_home, unlock_vault_key
from p2pid.store import queries
from p2pid.store.contacts import AUDIENCES as STORE_AUDIENCES
from p2pid.store.contacts import ContactRecord, contact_fields, set_blocked, upsert_contact
from p2pid.store.db import Connection
from p2pid.store.trio_store import TrioStore
from p2pid.wire.framing import FrameDecoder, FrameError, FrameTooLarge, encode_varint
from p2pid.wire.profile import (
    AUDIENCES,
    MAX_FIELDS,
    MAX_FRAME_BYTES,
    MAX_NAME_CHARS,
    MAX_VALUE_CHARS,
    PROTOCOL_ID,
    AckStatus,
    ContactProfileUpdated,
    ProfileAck,
    ProfileDelivered,
    ProfileFieldError,
    ProfileSnapshot,
    check_audience,
    check_field_name,
    check_field_value,
    decode_message,
    encode_message,
)
from p2pid.wire.records import ContactCard, DeviceEntry

LOOPBACK = ["/ip4/127.0.0.1/tcp/0"]
STEP_TIMEOUT = 15
ALICE_KEY = b"\xa1" * 32

# -- the rules for a field ---------------------------------------------------------------------


@pytest.mark.parametrize("name", ["phone", "email", "a", "x" * MAX_NAME_CHARS, "home_2", "b-day"])
def test_good_field_names(name: str) -> None:
    assert check_field_name(name) == name


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("", "needs a name"),
        ("Phone", "did you mean 'phone'"),
        ("x" * (MAX_NAME_CHARS + 1), "longer than 32"),
        ("e mail", "lower-case letters"),
        ("télé", "lower-case letters"),
        ("phone\n", "lower-case letters"),
        ("name", "display name"),
    ],
)
def test_bad_field_names_are_refused_clearly(name: str, message: str) -> None:
    with pytest.raises(ProfileFieldError, match=message):
        check_field_name(name)


def test_values_are_text_up_to_1000_characters_without_control_characters() -> None:
    assert check_field_value("phone", "+1 555 0100") == "+1 555 0100"
    assert check_field_value("motto", "ü" * MAX_VALUE_CHARS) == "ü" * MAX_VALUE_CHARS
    assert check_field_value("motto", "👩‍💻 دوستان") == "👩‍💻 دوستان"  # ZWJ and RTL text are fine
    assert check_field_value("address", "1 Main St\nSpringfield") == "1 Main St\nSpringfield"
    refusals = [
        ("phone", "", "empty"),
        ("motto", "x" * (MAX_VALUE_CHARS + 1), "1001 characters"),
        ("phone", "555\n0100", "only 'address' may hold newlines"),
        ("phone", "555\t0100", "control character"),
        ("address", "1 Main St\r\nSpringfield", "control character '\\\\r'"),
        ("phone", "ring\x07", "control character"),
        ("phone", "\x9b", "control character"),  # C1
        ("phone", "\ud800", "not valid Unicode"),
    ]
    for name, value, message in refusals:
        with pytest.raises(ProfileFieldError, match=message):
            check_field_value(name, value)


def test_audiences_match_the_store() -> None:
    assert set(AUDIENCES) == STORE_AUDIENCES
    for audience in AUDIENCES:
        assert check_audience(audience) == audience
    with pytest.raises(ProfileFieldError, match="public, contacts, chosen, groups"):
        check_audience("friends")


# -- sans-IO: versions and the snapshot machines ------------------------------------------------


def exchange(snapshot: ProfileSnapshot, book: VersionBook, stored: dict[str, str]) -> ProfileAck:
    """One push through both machines; `stored` plays the receiver's store."""
    sender = SnapshotSender(snapshot)
    receiver = SnapshotReceiver(ALICE_KEY, book)
    outcome = receiver.receive(sender.request())
    if isinstance(outcome, ProfileSnapshot):
        stored.clear()
        stored.update(outcome.fields)
        outcome = receiver.applied()
    return sender.receive_ack(outcome)


def test_a_snapshot_is_applied_and_acknowledged() -> None:
    book, stored = VersionBook(), dict[str, str]()
    snapshot = new_snapshot({"phone": "1"}, 100)
    ack = exchange(snapshot, book, stored)
    assert ack == ProfileAck(message_id=snapshot.message_id, status=AckStatus.APPLIED, latest=100)
    assert stored == {"phone": "1"}
    assert book.latest(ALICE_KEY) == 100


def test_an_older_snapshot_after_a_newer_one_is_ignored() -> None:
    book, stored = VersionBook(), dict[str, str]()
    shared = new_snapshot({"phone": "1", "email": "a@example.org"}, 100)
    revoked = new_snapshot({"phone": "1"}, 200)
    assert exchange(shared, book, stored).status is AckStatus.APPLIED
    assert exchange(revoked, book, stored).status is AckStatus.APPLIED
    assert stored == {"phone": "1"}

    replayed = exchange(shared, book, stored)  # late, reordered or replayed
    assert (replayed.status, replayed.latest) == (AckStatus.STALE, 200)
    assert stored == {"phone": "1"}  # the revoked field did not come back
    assert exchange(revoked, book, stored).status is AckStatus.DUPLICATE  # a retry: harmless
    same_version_other_message = new_snapshot({"phone": "2"}, 200)
    assert exchange(same_version_other_message, book, stored).status is AckStatus.STALE
    assert stored == {"phone": "1"} and book.latest(ALICE_KEY) == 200


def test_versions_are_per_contact() -> None:
    book = VersionBook()
    stored: dict[str, str] = {}
    exchange(new_snapshot({}, 500), book, stored)
    bob = SnapshotReceiver(b"\xb0" * 32, book)
    assert isinstance(bob.receive(encode_message(new_snapshot({}, 1))), ProfileSnapshot)


def test_the_sender_clock_never_repeats_or_goes_back() -> None:
    clock = SenderClock()
    assert clock.next(1_000) == 1_000
    assert clock.next(1_000) == 1_001  # two snapshots in one millisecond
    assert clock.next(900) == 1_002  # the wall clock went back
    assert clock.next(5_000) == 5_000
    clock.observe(9_000)  # a receiver holds 9000 from us (clock reset across a restart)
    assert clock.next(5_001) == 9_001
    clock.observe(10)
    assert clock.next(5_002) == 9_002


def valid_snapshot_fields() -> dict[str, Any]:
    return {"type": "snapshot", "message_id": b"m" * 16, "version": 7, "fields": {"phone": "1"}}


MALFORMED: list[tuple[str, bytes]] = [
    ("garbage", b"\x00\xff\x13garbage"),
    ("empty", b""),
    ("not a map", msgspec.msgpack.encode([1, 2, 3])),
    ("unknown type", msgspec.msgpack.encode({**valid_snapshot_fields(), "type": "hello"})),
    (
        "no type",
        msgspec.msgpack.encode({k: v for k, v in valid_snapshot_fields().items() if k != "type"}),
    ),
    (
        "missing version",
        msgspec.msgpack.encode(
            {k: v for k, v in valid_snapshot_fields().items() if k != "version"}
        ),
    ),
    ("short message id", msgspec.msgpack.encode({**valid_snapshot_fields(), "message_id": b"m"})),
    ("version zero", msgspec.msgpack.encode({**valid_snapshot_fields(), "version": 0})),
    ("negative version", msgspec.msgpack.encode({**valid_snapshot_fields(), "version": -5})),
    ("version as text", msgspec.msgpack.encode({**valid_snapshot_fields(), "version": "7"})),
    ("fields as list", msgspec.msgpack.encode({**valid_snapshot_fields(), "fields": ["phone"]})),
    ("value not text", msgspec.msgpack.encode({**valid_snapshot_fields(), "fields": {"a": 1}})),
    ("bad field name", msgspec.msgpack.encode({**valid_snapshot_fields(), "fields": {"A": "1"}})),
    ("display name", msgspec.msgpack.encode({**valid_snapshot_fields(), "fields": {"name": "M"}})),
    ("control char", msgspec.msgpack.encode({**valid_snapshot_fields(), "fields": {"a": "\x1b"}})),
    ("too long", msgspec.msgpack.encode({**valid_snapshot_fields(), "fields": {"a": "x" * 1001}})),
    (
        "too many fields",
        msgspec.msgpack.encode(
            {**valid_snapshot_fields(), "fields": {f"f{i}": "x" for i in range(MAX_FIELDS + 1)}}
        ),
    ),
    (
        "an ack",
        encode_message(ProfileAck(message_id=b"m" * 16, status=AckStatus.APPLIED, latest=7)),
    ),
]


@pytest.mark.parametrize("frame", [frame for _, frame in MALFORMED], ids=[n for n, _ in MALFORMED])
def test_malformed_snapshots_are_refused_and_change_nothing(frame: bytes) -> None:
    book = VersionBook()
    receiver = SnapshotReceiver(ALICE_KEY, book)
    with pytest.raises(ProfileProtocolError):
        receiver.receive(frame)
    assert book.latest(ALICE_KEY) == 0
    with pytest.raises(ProfileProtocolError):
        receiver.applied()  # nothing to acknowledge


def test_the_valid_template_of_the_malformed_cases_is_accepted() -> None:
    receiver = SnapshotReceiver(ALICE_KEY, VersionBook())
    snapshot = receiver.receive(msgspec.msgpack.encode(valid_snapshot_fields()))
    assert isinstance(snapshot, ProfileSnapshot) and snapshot.fields == {"phone": "1"}


def test_the_sender_refuses_acks_that_do_not_fit() -> None:
    snapshot = new_snapshot({"phone": "1"}, 100)
    with pytest.raises(ProfileProtocolError, match="no ack expected"):
        SnapshotSender(snapshot).receive_ack(b"")
    wrong = [
        ProfileAck(message_id=b"x" * 16, status=AckStatus.APPLIED, latest=100),  # another message
        ProfileAck(message_id=snapshot.message_id, status=AckStatus.APPLIED, latest=99),
        ProfileAck(message_id=snapshot.message_id, status=AckStatus.DUPLICATE, latest=101),
        ProfileAck(message_id=snapshot.message_id, status=AckStatus.STALE, latest=50),
    ]
    for ack in wrong:
        sender = SnapshotSender(snapshot)
        sender.request()
        with pytest.raises(ProfileProtocolError):
            sender.receive_ack(encode_message(ack))
    sender = SnapshotSender(snapshot)
    with pytest.raises(ProfileProtocolError, match="expected an ack"):
        sender.request()
        sender.receive_ack(encode_message(snapshot))
    with pytest.raises(ProfileProtocolError, match="already sent"):
        sender.request()


def test_a_sender_cannot_build_a_snapshot_with_a_bad_field() -> None:
    with pytest.raises(ProfileFieldError):
        new_snapshot({"Phone": "1"}, 1)


@settings(max_examples=300)
@given(st.binary(max_size=512))
def test_arbitrary_bytes_never_get_past_the_receiver_silently(data: bytes) -> None:
    book = VersionBook()
    try:
        outcome = SnapshotReceiver(ALICE_KEY, book).receive(data)
    except ProfileProtocolError:
        return
    assert isinstance(outcome, ProfileSnapshot)
    assert decode_message(data) == outcome


def test_the_largest_legal_snapshot_fits_a_frame_and_an_oversized_one_is_refused_early() -> None:
    largest = new_snapshot(
        {f"{i:02d}".ljust(MAX_NAME_CHARS, "x"): "😀" * MAX_VALUE_CHARS for i in range(MAX_FIELDS)},
        2**63 - 1,
    )
    encoded = encode_message(largest)
    assert len(encoded) <= MAX_FRAME_BYTES
    decoder = FrameDecoder(MAX_FRAME_BYTES)
    assert decoder.feed(encode_varint(len(encoded)) + encoded) == [encoded]
    with pytest.raises(FrameTooLarge):
        FrameDecoder(MAX_FRAME_BYTES).feed(encode_varint(MAX_FRAME_BYTES + 1))  # header alone


def test_events_carry_their_type_tags() -> None:
    updated = ContactProfileUpdated(at_ms=1, identity_id="abc", fields={"a": "1"}, removed=["b"])
    delivered = ProfileDelivered(at_ms=2, identity_id="abc", peer_id="12D3", version=9)
    assert msgspec.json.decode(msgspec.json.encode(updated))["type"] == "contact.profile_updated"
    assert msgspec.json.decode(msgspec.json.encode(delivered))["type"] == "profile.delivered"


# -- real nodes --------------------------------------------------------------------------------


@dataclass
class Person:
    name: str
    keys: IdentityKeys = field(repr=False)
    store: TrioStore
    net: NetHost
    profile: Profile
    events: list[Any] = field(default_factory=list)

    @property
    def identity_key(self) -> bytes:
        return self.keys.identity_public_key

    @property
    def identity_id(self) -> str:
        return identity_id_from_public_key(self.identity_key)

    @property
    def peer_id(self) -> str:
        return self.net.peer_id

    def as_contact(self) -> JoinedContact:
        """How the others see this person after a join: a verified card with its device list."""
        device = DeviceEntry(
            device_key=self.keys.device_public_key,
            olm_curve25519="curve",
            olm_ed25519="ed",
            name=f"{self.name}'s laptop",
            created_at=1,
        )
        signed = sign_device_list(self.keys.identity_signing_key, 1, 1, [device])
        return JoinedContact(
            identity_key=self.identity_key,
            peer_id=self.peer_id,
            card=ContactCard(display_name=self.name, device_list=signed),
            devices=verify_device_list(signed, self.identity_key),
        )

    async def fields_of(self, other: Person) -> dict[str, str]:
        return await self.store.read(lambda conn: contact_fields(conn, other.identity_key))

    def updates(self) -> list[ContactProfileUpdated]:
        return [event for event in self.events if isinstance(event, ContactProfileUpdated)]


@contextlib.asynccontextmanager
async def running_person(tmp_path: Path, name: str) -> AsyncIterator[Person]:
    home = Home(tmp_path / name.lower())
    create_home(home, name, passphrase=None)
    vault_key = unlock_vault_key(home)
    async with TrioStore.open(home.database, vault_key) as store:
        identity = await store.read(queries.load_local_identity)
        assert identity is not None
        async with NetHost.open(identity.device_seed, LOOPBACK) as net:
            events: list[Any] = []
            profile = Profile(
                store=store, net=net, identity_name=identity.name, publish=events.append
            )
            net.set_stream_handler(PROTOCOL_ID, profile.serve)
            keys = IdentityKeys(identity.identity_seed, identity.device_seed)
            yield Person(name, keys, store, net, profile, events)


@pytest.fixture
async def people(tmp_path: Path) -> AsyncIterator[tuple[Person, Person, Person, Person]]:
    """Alice, Bob and Carol, all contacts of one another, and Dave, a contact of nobody."""
    async with (
        running_person(tmp_path, "Alice") as alice,
        running_person(tmp_path, "Bob") as bob,
        running_person(tmp_path, "Carol") as carol,
        running_person(tmp_path, "Dave") as dave,
    ):
        for one, other in [(alice, bob), (alice, carol), (bob, carol)]:
            await befriend(one, other)
        yield alice, bob, carol, dave


async def befriend(one: Person, other: Person) -> None:
    for holder, contact in [(one, other), (other, one)]:
        await holder.store.write(
            partial(store_contact, record=contact_record(contact.as_contact()))
        )


def store_contact(conn: Connection, record: ContactRecord) -> None:
    upsert_contact(conn, record, now_ms())


async def connect(one: Person, other: Person) -> None:
    """Connect, and wait until both ends see the connection."""
    events = other.net.connection_events()
    one.net.add_addrs(other.peer_id, other.net.listen_addrs())
    with trio.fail_after(STEP_TIMEOUT):
        await one.net.connect(other.peer_id)
        while not other.net.is_connected(one.peer_id):
            await events.receive()
    await events.aclose()


async def test_a_contacts_field_reaches_every_contact(
    people: tuple[Person, Person, Person, Person],
) -> None:
    alice, bob, carol, _ = people
    await connect(alice, bob)
    await connect(alice, carol)
    with trio.fail_after(STEP_TIMEOUT):
        shown = await alice.profile.set("phone", "+1 555 0100", "contacts")
    assert (shown.name, shown.value, shown.audience, shown.granted_to) == (
        "phone",
        "+1 555 0100",
        "contacts",
        [],
    )
    # set() returns once every connected contact committed and acknowledged.
    assert await bob.fields_of(alice) == {"phone": "+1 555 0100"}
    assert await carol.fields_of(alice) == {"phone": "+1 555 0100"}
    [update] = bob.updates()
    assert update.identity_id == alice.identity_id
    assert (update.fields, update.removed) == ({"phone": "+1 555 0100"}, [])
    delivered = {e.peer_id for e in alice.events if isinstance(e, ProfileDelivered)}
    assert delivered == {bob.peer_id, carol.peer_id}

    with trio.fail_after(STEP_TIMEOUT):
        await alice.profile.set("phone", "+1 555 0199", "contacts")  # an update propagates
        await alice.profile.set("address", "1 Main St\nSpringfield", "public")
        await alice.profile.set("club", "chess", "groups")  # not for plain contacts yet
    expected = {"phone": "+1 555 0199", "address": "1 Main St\nSpringfield"}
    assert await bob.fields_of(alice) == expected
    assert await carol.fields_of(alice) == expected
    assert [f.name for f in await alice.profile.show()] == ["address", "club", "phone"]


async def test_a_chosen_field_reaches_only_the_contact_it_is_shared_with(
    people: tuple[Person, Person, Person, Person],
) -> None:
    alice, bob, carol, _ = people
    await connect(alice, bob)
    await connect(alice, carol)
    with trio.fail_after(STEP_TIMEOUT):
        await alice.profile.set("email", "alice@example.org", "chosen")
        assert await bob.fields_of(alice) == {} and await carol.fields_of(alice) == {}
        shared = await alice.profile.share("email", bob.identity_key)
    assert shared.audience == "chosen" and shared.granted_to == [bob.identity_id]
    assert await bob.fields_of(alice) == {"email": "alice@example.org"}
    assert await carol.fields_of(alice) == {}
    assert carol.updates() == []

    with trio.fail_after(STEP_TIMEOUT):
        await alice.profile.set("email", "alice@example.net", "chosen")  # grants are kept
        club = await alice.profile.set("club", "chess", "groups")
        assert await bob.fields_of(alice) == {"email": "alice@example.net"}
        # Sharing a 'groups' field with a contact makes it 'chosen'.
        assert club.audience == "groups"
        club = await alice.profile.share("club", carol.identity_key)
    assert club.audience == "chosen" and club.granted_to == [carol.identity_id]
    assert await carol.fields_of(alice) == {"club": "chess"}
    assert await bob.fields_of(alice) == {"email": "alice@example.net"}


async def test_revoking_removes_the_field_at_the_contact_and_stops_its_updates(
    people: tuple[Person, Person, Person, Person],
) -> None:
    alice, bob, carol, _ = people
    await connect(alice, bob)
    await connect(alice, carol)
    with trio.fail_after(STEP_TIMEOUT):
        await alice.profile.set("phone", "+1 555 0100", "contacts")
        await alice.profile.set("email", "alice@example.org", "chosen")
        await alice.profile.share("email", bob.identity_key)
        await alice.profile.share("email", carol.identity_key)
        assert await bob.fields_of(alice) == {"phone": "+1 555 0100", "email": "alice@example.org"}

        revoked = await alice.profile.revoke("email", bob.identity_key)
        assert revoked.granted_to == [carol.identity_id]
        assert await bob.fields_of(alice) == {"phone": "+1 555 0100"}
        assert bob.updates()[-1].removed == ["email"]

        await alice.profile.set("email", "new@example.org", "chosen")  # no longer Bob's
        assert await bob.fields_of(alice) == {"phone": "+1 555 0100"}
        assert await carol.fields_of(alice) == {"phone": "+1 555 0100", "email": "new@example.org"}

        await alice.profile.remove("phone")  # removing a field removes it everywhere
    assert await bob.fields_of(alice) == {}
    assert await carol.fields_of(alice) == {"email": "new@example.org"}
    assert [f.name for f in await alice.profile.show()] == ["email"]


async def test_an_older_snapshot_replayed_after_a_newer_one_is_ignored(
    people: tuple[Person, Person, Person, Person],
) -> None:
    alice, bob, _, _ = people
    await connect(alice, bob)
    shared = new_snapshot({"phone": "1", "email": "a@example.org"}, 1_000)
    revoked = new_snapshot({"phone": "1"}, 2_000)
    with trio.fail_after(STEP_TIMEOUT):
        assert (await push_snapshot(alice.net, bob.peer_id, shared)).status is AckStatus.APPLIED
        assert (await push_snapshot(alice.net, bob.peer_id, revoked)).status is AckStatus.APPLIED
        replay = await push_snapshot(alice.net, bob.peer_id, shared)
        assert (replay.status, replay.latest) == (AckStatus.STALE, 2_000)
        retry = await push_snapshot(alice.net, bob.peer_id, revoked)
        assert retry.status is AckStatus.DUPLICATE
    assert await bob.fields_of(alice) == {"phone": "1"}
    assert len(bob.updates()) == 2  # the shared set, then the revocation; nothing after


async def test_a_sender_whose_clock_is_behind_catches_up_and_is_applied(
    people: tuple[Person, Person, Person, Person],
) -> None:
    alice, bob, _, _ = people
    await connect(alice, bob)
    future = now_ms() + 3_600_000  # e.g. pushed before the clock was set back an hour
    with trio.fail_after(STEP_TIMEOUT):
        ahead = new_snapshot({"motto": "from the future"}, future)
        assert (await push_snapshot(alice.net, bob.peer_id, ahead)).status is AckStatus.APPLIED
        await alice.profile.set("phone", "1", "contacts")
    assert await bob.fields_of(alice) == {"phone": "1"}
    assert bob.profile.versions.latest(alice.identity_key) > future
    assert alice.profile.clock.last > future


async def test_a_push_from_a_non_contact_is_dropped_and_stores_nothing(
    people: tuple[Person, Person, Person, Person],
) -> None:
    _, bob, _, dave = people
    await connect(dave, bob)
    with trio.fail_after(STEP_TIMEOUT), pytest.raises(ProfilePushError):
        await push_snapshot(dave.net, bob.peer_id, new_snapshot({"phone": "1"}, now_ms()))
    stored = await bob.store.read(
        lambda conn: conn.execute("SELECT count(*) FROM contact_fields").fetchone()[0]
    )
    assert stored == 0 and bob.events == []
    assert bob.profile.versions.latest(dave.identity_key) == 0
    with trio.fail_after(STEP_TIMEOUT):
        assert await dave.profile.push_pending() == PushReport(delivered=(), pending=())


async def test_blocked_contacts_neither_receive_nor_are_heard(
    people: tuple[Person, Person, Person, Person],
) -> None:
    alice, bob, carol, _ = people
    await connect(alice, bob)
    await connect(alice, carol)
    await bob.store.write(lambda conn: set_blocked(conn, alice.identity_key, True, now_ms()))
    await alice.store.write(lambda conn: set_blocked(conn, carol.identity_key, True, now_ms()))
    with trio.fail_after(STEP_TIMEOUT):
        await alice.profile.set("phone", "1", "contacts")
        # Bob blocked Alice: her push is dropped, and stays pending on her side.
        assert await alice.profile.push_pending() == PushReport(
            delivered=(), pending=(bob.peer_id,)
        )
        with pytest.raises(ProfileError, match="blocked"):
            await alice.profile.share("phone", carol.identity_key)
    assert await bob.fields_of(alice) == {} and bob.events == []
    assert await carol.fields_of(alice) == {}  # Alice blocked Carol: nothing is sent
    assert await alice.profile.pending() == [bob.peer_id]


async def test_a_contact_offline_now_gets_the_snapshot_when_it_connects(
    people: tuple[Person, Person, Person, Person],
) -> None:
    alice, bob, carol, _ = people
    with trio.fail_after(STEP_TIMEOUT):
        await alice.profile.set("phone", "1", "contacts")  # nobody is connected
    assert await bob.fields_of(alice) == {}
    assert await alice.profile.pending() == sorted([bob.peer_id, carol.peer_id])

    await connect(alice, bob)
    with trio.fail_after(STEP_TIMEOUT):
        report = await alice.profile.push_pending(bob.peer_id)  # what the node does on connect
    assert report == PushReport(delivered=(bob.peer_id,), pending=())
    assert await bob.fields_of(alice) == {"phone": "1"}
    assert await alice.profile.pending() == [carol.peer_id]
    with trio.fail_after(STEP_TIMEOUT):
        assert await alice.profile.push_pending(bob.peer_id) == PushReport((), ())  # up to date

    # A restart forgets what was acknowledged: each device gets one snapshot on its next
    # connection, so anything changed while the node was down still arrives.
    restarted = Profile(
        store=alice.store, net=alice.net, identity_name="Alice", publish=alice.events.append
    )
    assert bob.peer_id in await restarted.pending()
    with trio.fail_after(STEP_TIMEOUT):
        report = await restarted.push_pending(bob.peer_id)
    assert report.delivered == (bob.peer_id,)
    assert await bob.fields_of(alice) == {"phone": "1"}
    assert len(bob.updates()) == 1  # the same set again: stored, no new event


async def test_malformed_and_oversized_frames_reset_the_stream_and_store_nothing(
    people: tuple[Person, Person, Person, Person],
) -> None:
    alice, bob, _, _ = people
    await connect(alice, bob)
    bad_frames = [
        encode_varint(5) + b"\xc1junk",
        encode_varint(MAX_FRAME_BYTES + 1) + b"\x00" * 64,  # refused on its length alone
    ]
    with trio.fail_after(STEP_TIMEOUT):
        for raw in bad_frames:
            stream = await alice.net.new_stream(bob.peer_id, [PROTOCOL_ID])
            await stream.write(raw)
            with pytest.raises((StreamError, FrameError)):
                await FramedStream(stream, MAX_FRAME_BYTES).receive()
            await stream.close()
    assert await bob.fields_of(alice) == {} and bob.events == []
    assert bob.profile.versions.latest(alice.identity_key) == 0


async def test_invalid_names_values_and_requests_are_refused_and_change_nothing(
    people: tuple[Person, Person, Person, Person],
) -> None:
    alice, bob, _, dave = people
    await connect(alice, bob)
    with trio.fail_after(STEP_TIMEOUT):
        await alice.profile.set("phone", "1", "contacts")
        await alice.profile.set("email", "a@example.org", "chosen")
        before = await alice.profile.show()
        refusals: list[tuple[Callable[[], Awaitable[object]], str, str]] = [
            (
                lambda: alice.profile.set("name", "Alicia", "public"),
                "invalid",
                "display name \\('Alice'",
            ),
            (lambda: alice.profile.set("Phone", "1", "public"), "invalid", "did you mean 'phone'"),
            (lambda: alice.profile.set("x" * 33, "1", "public"), "invalid", "longer than 32"),
            (lambda: alice.profile.set("phone", "1\n2", "contacts"), "invalid", "newlines"),
            (
                lambda: alice.profile.set("phone", "x" * 1001, "contacts"),
                "invalid",
                "1001 characters",
            ),
            (
                lambda: alice.profile.set("phone", "bell\x07", "contacts"),
                "invalid",
                "control character",
            ),
            (lambda: alice.profile.set("phone", "", "contacts"), "invalid", "empty"),
            (lambda: alice.profile.set("phone", "1", "friends"), "invalid", "unknown audience"),
            (lambda: alice.profile.remove("fax"), "not_found", "no profile field 'fax'"),
            (lambda: alice.profile.share("fax", bob.identity_key), "not_found", "set it first"),
            (lambda: alice.profile.share("email", dave.identity_key), "not_found", "no contact"),
            (lambda: alice.profile.revoke("phone", bob.identity_key), "invalid", "every contact"),
            (lambda: alice.profile.revoke("email", bob.identity_key), "not_found", "not shared"),
        ]
        for request, kind, message in refusals:
            with pytest.raises(ProfileError, match=message) as refused:
                await request()
            assert refused.value.kind == kind
        for i in range(MAX_FIELDS - 2):
            await alice.profile.set(f"f{i}", "x", "groups")
        with pytest.raises(ProfileError, match="at most 64"):
            await alice.profile.set("one_too_many", "x", "groups")
        await alice.profile.set("f0", "changed", "groups")  # changing one is still fine
    after = {f.name: f for f in await alice.profile.show()}
    assert {name: after[name] for name in ("email", "phone")} == {f.name: f for f in before}
    assert await bob.fields_of(alice) == {"phone": "1"}
