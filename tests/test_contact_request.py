"""Contact requests: the sans-IO machines with bytes in and bytes out, then two or three real
nodes (NetHost on 127.0.0.1, SQLCipher TrioStore, Contacts) in one trio process."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec
import pytest
import trio
from hypothesis import given, settings
from hypothesis import strategies as st

from p2pid.contact_requests import ContactRequestError, ContactRequests, RateLimits
from p2pid.contacts import Contacts
from p2pid.crypto.device_list import sign_device_list
from p2pid.crypto.identity import IdentityKeys, identity_id_from_public_key
from p2pid.events import EventBus
from p2pid.home import Home
from p2pid.net.dialer import DialPolicy
from p2pid.net.host import NetHost, StreamError
from p2pid.protocols import contact_request
from p2pid.protocols.contact_request import (
    TICKET_MAX_AGE_MS,
    Acceptor,
    Requester,
    RequestProtocolError,
    RequestRefusedError,
    Responder,
    VerifiedAcceptance,
    VerifiedRequest,
    make_ticket,
    open_ticket,
    ticket_key,
)
from p2pid.provision import create_home, unlock_vault_key
from p2pid.store import contacts as contact_queries
from p2pid.store import queries
from p2pid.store.contacts import ContactRow
from p2pid.store.queries import LocalIdentityRow
from p2pid.store.trio_store import TrioStore
from p2pid.wire import events
from p2pid.wire.contact_request import (
    MAX_FRAME_BYTES,
    MAX_NOTE_CHARS,
    PROTOCOL_ID,
    ContactRequest,
    ContactRequestAccepted,
    ContactRequestAnswered,
    ContactRequestReceived,
    RefusalReason,
    RequestAccepted,
    RequestReceived,
    decode_message,
    encode_message,
)
from p2pid.wire.framing import FrameDecoder, FrameTooLarge, encode_frame, encode_varint
from p2pid.wire.records import ContactCard, DeviceEntry

NOW_MS = 1_800_000_000_000
LOOPBACK = ["/ip4/127.0.0.1/tcp/0"]
TEST_TIMEOUT = 30
# A stopped node's port refuses at once; do not keep retrying it for the default 10 s.
QUICK_DIALS = DialPolicy(connect_timeout=1.0, attempt_timeout=1.0)


# -- the machines, no network ----------------------------------------------------------------


@dataclass
class Person:
    keys: IdentityKeys
    card: ContactCard

    @property
    def peer_id(self) -> str:
        return self.keys.peer_id

    @property
    def identity_key(self) -> bytes:
        return self.keys.identity_public_key

    @property
    def ticket_key(self) -> bytes:
        return ticket_key(self.keys.device_seed)


def person(name: str, signer: IdentityKeys | None = None) -> Person:
    keys = IdentityKeys.generate()
    device = DeviceEntry(
        device_key=keys.device_public_key,
        olm_curve25519="c",
        olm_ed25519="e",
        name=f"{name}'s laptop",
        created_at=1,
    )
    devices = sign_device_list((signer or keys).identity_signing_key, 1, 1, [device])
    return Person(keys, ContactCard(display_name=name, device_list=devices))


def requester(alice: Person, bob: Person, note: str = "we met at the meetup") -> Requester:
    request_id = bytes(range(16))
    return Requester(
        request_id=request_id,
        own_identity_key=alice.identity_key,
        own_card=alice.card,
        note=note,
        ticket=make_ticket(alice.ticket_key, request_id, bob.peer_id, NOW_MS),
        addrs=["/ip4/127.0.0.1/tcp/4001"],
    )


def raw_request(alice: Person, **changes: Any) -> bytes:
    fields: dict[str, Any] = {
        "message_id": b"\x01" * 16,
        "identity_key": alice.identity_key,
        "note": "hi",
        "card": alice.card,
        "ticket": b"t" * 40,
    }
    fields.update(changes)
    return encode_message(ContactRequest(**fields))


def test_request_then_acceptance_give_each_side_the_verified_card_of_the_other() -> None:
    alice, bob = person("Alice"), person("Bob")
    sender = requester(alice, bob)
    at_bob = Responder(remote_peer_id=alice.peer_id)

    opening = at_bob.receive_opening(sender.request())
    assert isinstance(opening, ContactRequest)
    request = at_bob.admit_request()
    assert isinstance(request, VerifiedRequest)
    assert request.requester.identity_key == alice.identity_key
    assert request.requester.devices.peer_ids() == [alice.peer_id]
    assert (request.name, request.note, request.addrs) == (
        "Alice",
        "we met at the meetup",
        ("/ip4/127.0.0.1/tcp/4001",),
    )
    assert decode_message(request.frame) == opening  # what bob stores, verbatim
    sender.receive_reply(at_bob.received())

    acceptor = Acceptor(
        message_id=b"\x02" * 16,
        own_identity_key=bob.identity_key,
        own_card=bob.card,
        ticket=request.ticket,
    )
    at_alice = Responder(remote_peer_id=bob.peer_id)
    at_alice.receive_opening(acceptor.accepted())
    acceptance = at_alice.admit_acceptance(alice.ticket_key, NOW_MS + 1000)
    assert isinstance(acceptance, VerifiedAcceptance)
    assert acceptance.request_id == sender.request_id
    assert acceptance.recipient.identity_key == bob.identity_key
    assert acceptance.recipient.devices.peer_ids() == [bob.peer_id]
    acceptor.receive_reply(at_alice.stored())


def test_a_refusal_reaches_the_requester_with_its_reason() -> None:
    alice, bob = person("Alice"), person("Bob")
    sender = requester(alice, bob)
    at_bob = Responder(remote_peer_id=alice.peer_id)
    at_bob.receive_opening(sender.request())
    with pytest.raises(RequestRefusedError) as refused:
        sender.receive_reply(at_bob.refuse(RefusalReason.RATE_LIMITED))
    assert refused.value.reason is RefusalReason.RATE_LIMITED
    assert "too many" in str(refused.value)


@pytest.mark.parametrize(
    "note",
    [
        "x" * (MAX_NOTE_CHARS + 1),
        "two\nlines",
        "nul\x00",
        "escape \x1b[31mred",
        "bidi \u202eevil",
        "line separator \u2028",
    ],
    ids=["too-long", "newline", "nul", "escape", "bidi-override", "line-separator"],
)
def test_notes_out_of_bounds_are_refused_as_invalid(note: str) -> None:
    alice, bob = person("Alice"), person("Bob")
    with pytest.raises(ValueError):
        requester(alice, bob, note=note)
    at_bob = Responder(remote_peer_id=alice.peer_id)
    at_bob.receive_opening(raw_request(alice, note=note))
    assert at_bob.admit_request() is RefusalReason.INVALID


@pytest.mark.parametrize(
    "name",
    ["", "   ", "x" * 65, "Bob\x07", "Bob\nAdmin"],
    ids=["empty", "blank", "too-long", "bell", "newline"],
)
def test_names_out_of_bounds_are_refused_as_invalid(name: str) -> None:
    alice = person(name)
    at_bob = Responder(remote_peer_id=alice.peer_id)
    at_bob.receive_opening(raw_request(alice))
    assert at_bob.admit_request() is RefusalReason.INVALID


def test_notes_and_names_within_bounds_pass() -> None:
    alice, bob = person("Zoë 👩‍💻"), person("Bob")
    note = "é" * (MAX_NOTE_CHARS - 12) + " 👨‍👩‍👧 tab-free"
    at_bob = Responder(remote_peer_id=alice.peer_id)
    at_bob.receive_opening(requester(alice, bob, note=note[:MAX_NOTE_CHARS]).request())
    assert isinstance(at_bob.admit_request(), VerifiedRequest)


def test_a_card_signed_by_another_identity_is_refused() -> None:
    mallory = person("Mallory")
    forged_alice = person("Alice", signer=mallory.keys)
    at_bob = Responder(remote_peer_id=forged_alice.peer_id)
    at_bob.receive_opening(raw_request(forged_alice))
    assert at_bob.admit_request() is RefusalReason.BAD_CARD


def test_a_card_without_the_device_speaking_is_refused() -> None:
    alice, mallory = person("Alice"), person("Mallory")
    at_bob = Responder(remote_peer_id=mallory.peer_id)  # Mallory replays Alice's request
    at_bob.receive_opening(raw_request(alice))
    assert at_bob.admit_request() is RefusalReason.BAD_CARD


def acceptance_from(bob: Person, ticket: bytes) -> bytes:
    return Acceptor(
        message_id=b"\x03" * 16, own_identity_key=bob.identity_key, own_card=bob.card, ticket=ticket
    ).accepted()


def test_an_acceptance_needs_a_ticket_this_device_made_for_that_peer() -> None:
    alice, bob, mallory = person("Alice"), person("Bob"), person("Mallory")
    request_id = b"\x04" * 16
    ticket = make_ticket(alice.ticket_key, request_id, bob.peer_id, NOW_MS)
    assert open_ticket(alice.ticket_key, ticket, bob.peer_id, NOW_MS) == request_id

    def admit(sender: Person, ticket: bytes, key: bytes, now: int) -> object:
        responder = Responder(remote_peer_id=sender.peer_id)
        responder.receive_opening(acceptance_from(sender, ticket))
        return responder.admit_acceptance(key, now)

    assert isinstance(admit(bob, ticket, alice.ticket_key, NOW_MS), VerifiedAcceptance)
    unknown = RefusalReason.UNKNOWN_REQUEST
    assert admit(mallory, ticket, alice.ticket_key, NOW_MS) is unknown  # forwarded ticket
    assert admit(bob, ticket, bob.ticket_key, NOW_MS) is unknown  # another device's key
    assert admit(bob, ticket, alice.ticket_key, NOW_MS + TICKET_MAX_AGE_MS + 1) is unknown
    assert admit(bob, ticket, alice.ticket_key, NOW_MS - 3600 * 1000) is unknown  # future
    tampered = bytes([ticket[0] ^ 1]) + ticket[1:]
    assert admit(bob, tampered, alice.ticket_key, NOW_MS) is unknown
    assert admit(bob, ticket[:-1], alice.ticket_key, NOW_MS) is unknown


def test_an_acceptance_with_a_forged_card_is_refused() -> None:
    alice, bob, mallory = person("Alice"), person("Bob"), person("Mallory")
    forged_bob = Person(bob.keys, person("Bob", signer=mallory.keys).card)
    ticket = make_ticket(alice.ticket_key, b"\x05" * 16, bob.peer_id, NOW_MS)
    at_alice = Responder(remote_peer_id=bob.peer_id)
    at_alice.receive_opening(acceptance_from(forged_bob, ticket))
    assert at_alice.admit_acceptance(alice.ticket_key, NOW_MS) is RefusalReason.BAD_CARD


def test_out_of_order_messages_are_protocol_errors() -> None:
    alice, bob = person("Alice"), person("Bob")
    sender = requester(alice, bob)
    with pytest.raises(RequestProtocolError):
        sender.receive_reply(encode_message(RequestReceived(message_id=sender.request_id)))
    frame = sender.request()
    with pytest.raises(RequestProtocolError):
        sender.request()  # twice
    with pytest.raises(RequestProtocolError):
        sender.receive_reply(frame)  # a request where an answer belongs

    at_bob = Responder(remote_peer_id=alice.peer_id)
    with pytest.raises(RequestProtocolError):
        at_bob.refuse(RefusalReason.INVALID)  # nothing to answer yet
    with pytest.raises(RequestProtocolError):
        at_bob.receive_opening(encode_message(RequestReceived(message_id=b"\x00" * 16)))
    at_bob = Responder(remote_peer_id=alice.peer_id)
    at_bob.receive_opening(frame)
    with pytest.raises(RequestProtocolError):
        at_bob.receive_opening(frame)  # a second message on one stream
    with pytest.raises(RequestProtocolError):
        at_bob.received()  # before admitting
    with pytest.raises(RequestProtocolError):
        at_bob.admit_acceptance(alice.ticket_key, NOW_MS)  # a request is no acceptance
    assert isinstance(at_bob.admit_request(), VerifiedRequest)
    with pytest.raises(RequestProtocolError):
        at_bob.stored()  # a request is answered received, not stored
    at_bob.received()
    with pytest.raises(RequestProtocolError):
        at_bob.refuse(RefusalReason.INVALID)  # answered already


def test_a_reply_naming_another_request_is_a_protocol_error() -> None:
    alice, bob = person("Alice"), person("Bob")
    sender = requester(alice, bob)
    sender.request()
    with pytest.raises(RequestProtocolError, match="another request"):
        sender.receive_reply(encode_message(RequestReceived(message_id=b"\xff" * 16)))


@pytest.mark.parametrize(
    "frame",
    [
        b"",
        b"\xc1",
        msgspec.msgpack.encode({"type": "nonsense"}),
        msgspec.msgpack.encode({"type": "request"}),  # missing fields
        msgspec.msgpack.encode({"type": "received", "message_id": b"short"}),
        msgspec.msgpack.encode({"type": "refused", "reason": "no_such_reason"}),
    ],
)
def test_malformed_messages_are_protocol_errors(frame: bytes) -> None:
    with pytest.raises(RequestProtocolError, match="malformed"):
        Responder(remote_peer_id="p").receive_opening(frame)


def test_wrong_field_sizes_are_malformed() -> None:
    alice = person("Alice")
    for changes in ({"message_id": b"x" * 15}, {"identity_key": b"k" * 31}, {"ticket": b""}):
        with pytest.raises(RequestProtocolError, match="malformed"):
            Responder(remote_peer_id=alice.peer_id).receive_opening(raw_request(alice, **changes))
    too_many = raw_request(alice, addrs=["/ip4/127.0.0.1/tcp/1"] * 9)
    with pytest.raises(RequestProtocolError, match="malformed"):
        Responder(remote_peer_id=alice.peer_id).receive_opening(too_many)


def test_oversized_frames_are_refused_before_their_payload() -> None:
    alice = person("Alice")
    with pytest.raises(FrameTooLarge):
        encode_frame(raw_request(alice, note="x" * MAX_FRAME_BYTES), MAX_FRAME_BYTES)
    with pytest.raises(FrameTooLarge):
        FrameDecoder(MAX_FRAME_BYTES).feed(encode_varint(MAX_FRAME_BYTES + 1))


@settings(max_examples=200)
@given(st.binary(max_size=512))
def test_arbitrary_bytes_never_get_past_the_decoder_silently(data: bytes) -> None:
    try:
        opening = Responder(remote_peer_id="p").receive_opening(data)
    except RequestProtocolError:
        return
    assert isinstance(opening, ContactRequest | RequestAccepted)


# -- real nodes ------------------------------------------------------------------------------


@dataclass
class Side:
    name: str
    store: TrioStore
    identity: LocalIdentityRow
    contacts: Contacts
    events: list[Any] = field(default_factory=list)
    _net: NetHost | None = None
    _requests: ContactRequests | None = None

    @property
    def net(self) -> NetHost:
        assert self._net is not None, f"{self.name} is offline"
        return self._net

    @property
    def requests(self) -> ContactRequests:
        assert self._requests is not None, f"{self.name} is offline"
        return self._requests

    @property
    def identity_key(self) -> bytes:
        return self.contacts.keys.identity_public_key

    @property
    def peer_id(self) -> str:
        return self.contacts.keys.peer_id

    async def contact_list(self) -> list[ContactRow]:
        return await self.contacts.list_contacts()

    async def stored_requests(self) -> list[contact_queries.ContactRequestRow]:
        return await self.store.read(lambda conn: contact_queries.list_contact_requests(conn, None))

    def events_of(self, kind: type[Any]) -> list[Any]:
        return [event for event in self.events if isinstance(event, kind)]

    def knows(self, other: Side) -> None:
        self.net.add_addrs(other.peer_id, other.net.listen_addrs())


@contextlib.asynccontextmanager
async def side(tmp_path: Path, name: str) -> AsyncIterator[Side]:
    home = Home(tmp_path / name.lower())
    create_home(home, name, passphrase=None)
    vault_key = unlock_vault_key(home)
    async with TrioStore.open(home.database, vault_key) as store:
        identity = await store.read(queries.load_local_identity)
        assert identity is not None
        contacts = Contacts(store=store, identity=identity, vault_key=vault_key, events=EventBus())
        await contacts.start()
        yield Side(name, store, identity, contacts)


@contextlib.asynccontextmanager
async def online(node: Side, limits: RateLimits | None = None) -> AsyncIterator[Side]:
    async with NetHost.open(node.identity.device_seed, LOOPBACK, dial_policy=QUICK_DIALS) as net:
        requests = ContactRequests(
            store=node.store,
            net=net,
            contacts=node.contacts,
            publish=node.events.append,
            limits=limits,
        )
        net.set_stream_handler(PROTOCOL_ID, requests.serve)
        node._net, node._requests = net, requests
        try:
            yield node
        finally:
            node._net, node._requests = None, None


@contextlib.asynccontextmanager
async def two_online(tmp_path: Path) -> AsyncIterator[tuple[Side, Side]]:
    async with (
        side(tmp_path, "Alice") as alice,
        side(tmp_path, "Bob") as bob,
        online(alice),
        online(bob),
    ):
        alice.knows(bob)
        yield alice, bob


@contextlib.contextmanager
def refused(kind: str, match: str) -> Iterator[None]:
    with pytest.raises(ContactRequestError, match=match) as error:
        yield
    assert error.value.kind == kind


async def test_request_accept_and_both_hold_each_other_unverified(tmp_path: Path) -> None:
    with trio.fail_after(TEST_TIMEOUT):
        async with two_online(tmp_path) as (alice, bob):
            request_id = await alice.requests.send(bob.peer_id, "we met at the meetup")
            assert len(bytes.fromhex(request_id)) == 16

            [pending] = await bob.requests.list()
            assert (pending.name, pending.note, pending.state) == (
                "Alice",
                "we met at the meetup",
                "pending",
            )
            assert pending.identity_id == identity_id_from_public_key(alice.identity_key)
            assert pending.peer_id == alice.peer_id
            [received] = bob.events_of(ContactRequestReceived)
            assert (received.request_id, received.name) == (pending.request_id, "Alice")
            assert await bob.contact_list() == [] and await alice.contact_list() == []

            accepted = await bob.requests.accept(pending.request_id)
            assert accepted.state == "accepted" and accepted.decided_at_ms is not None
            assert await bob.requests.list() == []
            assert [r.request_id for r in await bob.requests.list("accepted")] == [
                pending.request_id
            ]

            [alice_at_bob] = await bob.contact_list()
            assert alice_at_bob.identity_key == alice.identity_key
            assert alice_at_bob.display_name == "Alice"
            assert alice_at_bob.verified_by is None and not alice_at_bob.verified
            assert [device.peer_id for device in alice_at_bob.devices] == [alice.peer_id]
            [bob_at_alice] = await alice.contact_list()
            assert bob_at_alice.identity_key == bob.identity_key
            assert bob_at_alice.verified_by is None
            assert [device.peer_id for device in bob_at_alice.devices] == [bob.peer_id]

            [answered] = bob.events_of(ContactRequestAnswered)
            assert (answered.state, answered.delivered) == ("accepted", True)
            [told] = alice.events_of(ContactRequestAccepted)
            assert (told.request_id, told.name, told.peer_id) == (request_id, "Bob", bob.peer_id)
            for node in (alice, bob):
                [added] = node.events_of(events.ContactAdded)
                assert not added.verified

            # Contacts now: a new request is answered so, and nothing is stored.
            with refused("refused", "already contacts"):
                await alice.requests.send(bob.peer_id, "hello again")
            assert len(await bob.stored_requests()) == 1

            # Accepting again re-sends; the requester stores idempotently, announces nothing.
            await bob.requests.accept(pending.request_id)
            assert len(alice.events_of(events.ContactAdded)) == 1
            assert len(await alice.contact_list()) == 1


async def test_decline_is_recorded_and_not_sent(tmp_path: Path) -> None:
    with trio.fail_after(TEST_TIMEOUT):
        async with two_online(tmp_path) as (alice, bob):
            await alice.requests.send(bob.peer_id, "")
            [pending] = await bob.requests.list()
            declined = await bob.requests.decline(pending.request_id)
            assert declined.state == "declined"
            assert (await bob.requests.decline(pending.request_id)).state == "declined"
            [answered] = bob.events_of(ContactRequestAnswered)
            assert (answered.state, answered.delivered) == ("declined", False)
            with refused("invalid", "is declined"):
                await bob.requests.accept(pending.request_id)
            with refused("not_found", "no contact request"):
                await bob.requests.accept(pending.request_id + 100)
            with refused("invalid", "unknown state"):
                await bob.requests.list("maybe")
            assert await bob.contact_list() == [] and await alice.contact_list() == []
            assert alice.events == []
            assert [r.state for r in await bob.requests.list(None)] == ["declined"]


async def test_rate_limit_per_sender_refuses_and_stores_nothing(tmp_path: Path) -> None:
    with trio.fail_after(TEST_TIMEOUT):
        async with two_online(tmp_path) as (alice, bob):
            per_sender = bob.requests.limits.per_sender
            for attempt in range(per_sender):
                await alice.requests.send(bob.peer_id, f"attempt {attempt}")
            with refused("refused", "too many contact requests"):
                await alice.requests.send(bob.peer_id, "once more")
            stored = await bob.stored_requests()
            assert len(stored) == per_sender  # the earlier ones replaced, still counted
            [pending] = await bob.requests.list()
            assert pending.note == f"attempt {per_sender - 1}"
            assert len(bob.events_of(ContactRequestReceived)) == per_sender


async def test_rate_limit_in_total(tmp_path: Path) -> None:
    with trio.fail_after(TEST_TIMEOUT):
        async with (
            side(tmp_path, "Alice") as alice,
            side(tmp_path, "Bob") as bob,
            side(tmp_path, "Carol") as carol,
            online(alice),
            online(bob, RateLimits(total=2)),
            online(carol),
        ):
            alice.knows(bob)
            carol.knows(bob)
            await alice.requests.send(bob.peer_id, "one")
            await alice.requests.send(bob.peer_id, "two")
            with refused("refused", "too many"):
                await carol.requests.send(bob.peer_id, "three")
            assert {r.identity_key for r in await bob.stored_requests()} == {alice.identity_key}


async def test_blocked_sender_is_dropped_silently(tmp_path: Path) -> None:
    with trio.fail_after(TEST_TIMEOUT):
        async with two_online(tmp_path) as (alice, bob):
            await bob.contacts.set_blocked(alice.identity_key, True)
            with refused("unreachable", "without an answer"):
                await alice.requests.send(bob.peer_id, "let me in")
            assert await bob.stored_requests() == []
            assert bob.events == []

            await bob.contacts.set_blocked(alice.identity_key, False)
            await alice.requests.send(bob.peer_id, "let me in")
            assert len(await bob.requests.list()) == 1


async def test_forged_card_is_refused_and_nothing_stored(tmp_path: Path) -> None:
    with trio.fail_after(TEST_TIMEOUT):
        async with (
            side(tmp_path, "Bob") as bob,
            side(tmp_path, "Mallory") as mallory,
            online(bob),
            online(mallory),
        ):
            mallory.knows(bob)
            # Mallory's device, listed in a device list signed by another identity, claiming
            # to be that identity.
            victim = IdentityKeys.generate()
            entry = DeviceEntry(
                device_key=mallory.contacts.keys.device_public_key,
                olm_curve25519="c",
                olm_ed25519="e",
                name="not yours",
                created_at=1,
            )
            forged = ContactCard(
                display_name="Victim",
                device_list=sign_device_list(
                    mallory.contacts.keys.identity_signing_key, 1, 1, [entry]
                ),
            )
            request_id = b"\x06" * 16
            forger = Requester(
                request_id=request_id,
                own_identity_key=victim.identity_public_key,
                own_card=forged,
                note="trust me",
                ticket=make_ticket(b"k" * 32, request_id, bob.peer_id, NOW_MS),
            )
            with pytest.raises(RequestRefusedError) as error:
                await contact_request.send_request(mallory.net, bob.peer_id, forger)
            assert error.value.reason is RefusalReason.BAD_CARD
            assert await bob.stored_requests() == []
            assert bob.events == []


async def test_an_acceptance_nobody_asked_for_is_refused(tmp_path: Path) -> None:
    with trio.fail_after(TEST_TIMEOUT):
        async with (
            side(tmp_path, "Alice") as alice,
            side(tmp_path, "Mallory") as mallory,
            online(alice),
            online(mallory),
        ):
            mallory.knows(alice)
            acceptor = Acceptor(
                message_id=b"\x07" * 16,
                own_identity_key=mallory.identity_key,
                own_card=await mallory.contacts.own_card(alice.identity_key),
                ticket=make_ticket(b"k" * 32, b"\x08" * 16, mallory.peer_id, NOW_MS),
            )
            with pytest.raises(RequestRefusedError) as error:
                await contact_request.send_acceptance(mallory.net, alice.peer_id, acceptor)
            assert error.value.reason is RefusalReason.UNKNOWN_REQUEST
            assert await alice.contact_list() == []
            assert alice.events == []


async def test_accept_while_the_requester_is_offline_keeps_it_accepted_for_a_retry(
    tmp_path: Path,
) -> None:
    with trio.fail_after(TEST_TIMEOUT):
        async with side(tmp_path, "Alice") as alice, side(tmp_path, "Bob") as bob, online(bob):
            async with online(alice):
                alice.knows(bob)
                request_id = await alice.requests.send(bob.peer_id, "call me back")
            [pending] = await bob.requests.list()

            with refused("unreachable", "Accept again to retry"):
                await bob.requests.accept(pending.request_id)
            assert [r.state for r in await bob.requests.list(None)] == ["accepted"]
            assert len(await bob.contact_list()) == 1
            [answered] = bob.events_of(ContactRequestAnswered)
            assert not answered.delivered

            # Alice comes back on another port (her daemon restarted: no state about the
            # request survives but her ticket key); Bob learns the address, as mDNS would.
            async with online(alice):
                bob.knows(alice)
                await bob.requests.accept(pending.request_id)
                [bob_at_alice] = await alice.contact_list()
                assert bob_at_alice.identity_key == bob.identity_key
                assert bob_at_alice.verified_by is None
                [told] = alice.events_of(ContactRequestAccepted)
                assert told.request_id == request_id
            assert [e.delivered for e in bob.events_of(ContactRequestAnswered)] == [False, True]


async def test_bad_notes_are_refused_before_anything_is_sent(tmp_path: Path) -> None:
    with trio.fail_after(TEST_TIMEOUT):
        async with two_online(tmp_path) as (alice, bob):
            with refused("invalid", "longer than"):
                await alice.requests.send(bob.peer_id, "x" * (MAX_NOTE_CHARS + 1))
            with refused("invalid", "control characters"):
                await alice.requests.send(bob.peer_id, "hi\x1b[2J")
            with refused("invalid", "own PeerId"):
                await alice.requests.send(alice.peer_id, "me")
            assert await bob.stored_requests() == []


@pytest.mark.parametrize(
    "payload",
    [
        encode_varint(MAX_FRAME_BYTES + 1),  # oversized: refused on the length prefix alone
        encode_frame(b"\x93\x01\x02\x03", MAX_FRAME_BYTES),  # well framed, not a message
        encode_frame(encode_message(RequestReceived(message_id=b"\x00" * 16)), MAX_FRAME_BYTES),
    ],
    ids=["oversized", "malformed", "out-of-order"],
)
async def test_bad_streams_are_reset_and_store_nothing(tmp_path: Path, payload: bytes) -> None:
    with trio.fail_after(TEST_TIMEOUT):
        async with two_online(tmp_path) as (alice, bob):
            stream = await alice.net.new_stream(bob.peer_id, [PROTOCOL_ID])
            await stream.write(payload)
            with contextlib.suppress(StreamError):
                assert await stream.read(1024) == b""  # reset (or ended) without an answer
            assert await bob.stored_requests() == []
            assert bob.events == []


def card_of(node: Side, identity: IdentityKeys, name: str) -> ContactCard:
    """A card listing `node`'s device, signed by `identity` (not `node`'s own identity)."""
    entry = DeviceEntry(
        device_key=node.contacts.keys.device_public_key,
        olm_curve25519="c",
        olm_ed25519="e",
        name="a device",
        created_at=1,
    )
    return ContactCard(
        display_name=name,
        device_list=sign_device_list(identity.identity_signing_key, 1, 1, [entry]),
    )


def raw_requester(identity_key: bytes, card: ContactCard, to: Side, request_id: bytes) -> Requester:
    return Requester(
        request_id=request_id,
        own_identity_key=identity_key,
        own_card=card,
        note="hi",
        ticket=make_ticket(b"k" * 32, request_id, to.peer_id, NOW_MS),
    )


async def test_a_resent_request_is_acknowledged_once_stored_and_not_counted(
    tmp_path: Path,
) -> None:
    with trio.fail_after(TEST_TIMEOUT):
        async with two_online(tmp_path) as (alice, bob):
            card = await alice.contacts.own_card(bob.identity_key)
            for _ in range(bob.requests.limits.per_sender + 2):
                resend = raw_requester(alice.identity_key, card, bob, b"\x09" * 16)
                await contact_request.send_request(alice.net, bob.peer_id, resend)
            assert len(await bob.stored_requests()) == 1
            assert len(bob.events_of(ContactRequestReceived)) == 1


async def test_rate_limit_per_device_across_identities(tmp_path: Path) -> None:
    with trio.fail_after(TEST_TIMEOUT):
        async with (
            side(tmp_path, "Bob") as bob,
            side(tmp_path, "Mallory") as mallory,
            online(bob),
            online(mallory),
        ):
            mallory.knows(bob)

            async def as_new_identity(index: int) -> None:
                identity = IdentityKeys.generate()
                card = card_of(mallory, identity, f"Sock puppet {index}")
                request = raw_requester(
                    identity.identity_public_key, card, bob, bytes([index]) * 16
                )
                await contact_request.send_request(mallory.net, bob.peer_id, request)

            for index in range(bob.requests.limits.per_sender):
                await as_new_identity(index)
            with pytest.raises(RequestRefusedError) as error:
                await as_new_identity(99)
            assert error.value.reason is RefusalReason.RATE_LIMITED
            assert len(await bob.stored_requests()) == bob.requests.limits.per_sender


async def test_a_contact_device_claiming_another_identity_is_refused_and_flagged(
    tmp_path: Path,
) -> None:
    with trio.fail_after(TEST_TIMEOUT):
        async with two_online(tmp_path) as (alice, bob):
            await alice.requests.send(bob.peer_id, "hi")
            [pending] = await bob.requests.list()
            await bob.requests.accept(pending.request_id)

            other = IdentityKeys.generate()
            claim = raw_requester(
                other.identity_public_key, card_of(alice, other, "Alice 2"), bob, b"\x0a" * 16
            )
            with pytest.raises(RequestRefusedError) as error:
                await contact_request.send_request(alice.net, bob.peer_id, claim)
            assert error.value.reason is RefusalReason.BAD_CARD
            [alice_at_bob] = await bob.contact_list()
            assert alice_at_bob.identity_key_changed
            [flagged] = bob.events_of(events.ContactIdentityChanged)
            assert flagged.new_identity_id == identity_id_from_public_key(other.identity_public_key)
            assert len(await bob.stored_requests()) == 1
