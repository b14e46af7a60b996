"""Messaging between real nodes in this process: real libp2p hosts on loopback, real SQLCipher
stores, real Olm sessions. Bad envelopes are made from real ones a contact's node queued."""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import msgspec
import pytest
import trio

from p2pid.crypto.identity import IdentityKeys
from p2pid.events import EventBus
from p2pid.home import Home
from p2pid.messaging import MessagingError
from p2pid.net.host import NetHost
from p2pid.node import Node, NodeConfig
from p2pid.protocols.framed import FramedStream
from p2pid.protocols.messaging import DeliveryLink
from p2pid.provision import create_home, unlock_vault_key
from p2pid.store import messages as message_queries
from p2pid.store import queries
from p2pid.store.contacts import get_contact
from p2pid.store.trio_store import TrioStore
from p2pid.wire.events import Event
from p2pid.wire.framing import encode_varint
from p2pid.wire.messages import (
    MAX_FRAME_BYTES,
    PROTOCOL_ID,
    Envelope,
    MessageReceived,
    MessageStateChanged,
    Result,
    decode_envelope,
)

LOOPBACK = ("/ip4/127.0.0.1/tcp/0",)
STEP_TIMEOUT = 20.0
E = TypeVar("E", bound=Event)


@dataclass
class Person:
    name: str
    home: Home
    store: TrioStore
    vault_key: bytes
    keys: IdentityKeys
    events: trio.MemoryReceiveChannel[Event]
    node: Node | None = None

    @property
    def running(self) -> Node:
        assert self.node is not None, f"{self.name}'s node is not running"
        return self.node

    async def next_event(self, kind: type[E], where: Callable[[E], bool] = lambda _: True) -> E:
        with trio.fail_after(STEP_TIMEOUT):
            async for event in self.events:
                if isinstance(event, kind) and where(event):
                    return event
        raise AssertionError("the event channel closed")


@contextlib.asynccontextmanager
async def person(tmp_path: Path, name: str) -> AsyncIterator[Person]:
    home = Home(tmp_path / name.lower())
    create_home(home, name, passphrase=None)
    vault_key = unlock_vault_key(home)
    async with TrioStore.open(home.database, vault_key) as store:
        identity = await store.read(queries.load_local_identity)
        assert identity is not None
        keys = IdentityKeys(identity.identity_seed, identity.device_seed)
        yield Person(name, home, store, vault_key, keys, EventBus().subscribe())


@contextlib.asynccontextmanager
async def node_of(who: Person) -> AsyncIterator[Node]:
    bus = EventBus()
    who.events = bus.subscribe()
    config = NodeConfig(listen_addrs=LOOPBACK, mdns_enabled=False)
    async with Node.running(who.store, who.vault_key, bus, config) as node:
        who.node = node
        try:
            yield node
        finally:
            who.node = None


async def befriend(inviter: Person, joiner: Person) -> None:
    created = await inviter.running.create_invite(uses=1, ttl_seconds=600)
    with trio.fail_after(STEP_TIMEOUT):
        await joiner.running.join(created.code)


async def one_time_keys_held(holder: Person, contact: Person) -> tuple[str, ...]:
    row = await holder.store.read(lambda conn: get_contact(conn, contact.keys.identity_public_key))
    assert row is not None
    [device] = row.devices
    return device.one_time_keys


async def texts(who: Person, contact: str) -> list[str]:
    page = await who.running.messages(contact, 500, None, mark_read=False)
    return [message.text for message in page.messages]


async def test_a_message_arrives_once_and_its_receipts_come_back(tmp_path: Path) -> None:
    async with (
        person(tmp_path, "Alice") as alice,
        person(tmp_path, "Bob") as bob,
        node_of(alice),
        node_of(bob),
    ):
        await befriend(alice, bob)
        card_keys = await one_time_keys_held(alice, bob)
        assert len(card_keys) == 5
        sent = await alice.running.send("Bob", "hello Bob")
        assert sent.state == "pending" and sent.outgoing
        assert await one_time_keys_held(alice, bob) == card_keys[1:]  # one claimed

        received = await bob.next_event(MessageReceived)
        assert received.message.text == "hello Bob" and received.name == "Alice"
        assert received.message.message_id == sent.message_id
        delivered = await alice.next_event(MessageStateChanged)
        assert delivered.state == "delivered" and delivered.message_ids == [sent.message_id]

        page = await bob.running.messages("Alice", 50, None, mark_read=True)
        assert [m.text for m in page.messages] == ["hello Bob"] and page.unread == 1
        read = await alice.next_event(MessageStateChanged)
        assert read.state == "read" and read.message_ids == [sent.message_id]
        assert (await bob.running.messages("Alice", 50, None, mark_read=False)).unread == 0
        # Opening the session used up one of Bob's one-time keys: Bob sent Alice fresh ones
        # (queued before the read receipt, so they are in by now).
        refilled = await one_time_keys_held(alice, bob)
        assert len(refilled) == 5 and not set(refilled) & set(card_keys)

        reply = await bob.running.send("Alice", "hi Alice")
        assert (await alice.next_event(MessageReceived)).message.text == "hi Alice"
        # Bob had seen Alice's message: his reply comes after it in the conversation.
        assert reply.lamport > sent.lamport
        assert await texts(alice, "Bob") == ["hello Bob", "hi Alice"]
        assert await texts(bob, "Alice") == ["hello Bob", "hi Alice"]

        reply_delivered = await bob.next_event(MessageStateChanged)
        assert reply_delivered.message_ids == [reply.message_id]
        stats = await bob.running.message_stats()
        assert stats.received >= 2 and stats.dropped == {} and stats.pending_outbox == 0


async def test_bad_requests_are_refused_and_change_nothing(tmp_path: Path) -> None:
    async with (
        person(tmp_path, "Alice") as alice,
        person(tmp_path, "Bob") as bob,
        node_of(alice),
        node_of(bob),
    ):
        await befriend(alice, bob)
        for text in ["", "   ", "x" * 40_000]:
            with pytest.raises(MessagingError):
                await alice.running.send("Bob", text)
        with pytest.raises(MessagingError, match="limit"):
            await alice.running.messages("Bob", 0, None, mark_read=False)
        with pytest.raises(MessagingError, match="cursor"):
            await alice.running.messages("Bob", 10, "garbage", mark_read=False)
        await alice.running.block_contact("Bob", True)
        with pytest.raises(MessagingError, match="blocked"):
            await alice.running.send("Bob", "hello")
        assert await texts(alice, "Bob") == []
        assert (await alice.running.message_stats()).pending_outbox == 0


async def test_messages_sent_while_the_contact_is_away_arrive_when_it_connects(
    tmp_path: Path,
) -> None:
    async with person(tmp_path, "Alice") as alice, person(tmp_path, "Bob") as bob, node_of(bob):
        async with node_of(alice):
            await befriend(alice, bob)
        for number in range(3):
            await bob.running.send("Alice", f"while you were out {number}")
        assert (await bob.running.message_stats()).pending_outbox == 3
        async with node_of(alice) as alice_node:
            # Alice's node comes back on a new port and dials Bob: the connection alone
            # sets Bob's courier off.
            alice_node.net.add_addrs(bob.running.net.peer_id, bob.running.net.listen_addrs())
            await alice_node.net.connect(bob.running.net.peer_id)
            for number in range(3):
                event = await alice.next_event(MessageReceived)
                assert event.message.text == f"while you were out {number}"
            assert await texts(alice, "Bob") == [f"while you were out {n}" for n in range(3)]


# -- envelopes a contact's node really queued, replayed and tampered with ------------------------


async def queued_envelopes(sender: Person, count: int) -> list[Envelope]:
    """Envelopes `sender` queued for its only contact, who is away: the real thing."""
    for number in range(count):
        await sender.running.send("Alice", f"genuine {number}")

    def read(conn: message_queries.Connection) -> list[bytes]:
        [device] = message_queries.devices_with_pending(conn)
        return [e.envelope for e in message_queries.pending_for_device(conn, device, 100)]

    return [decode_envelope(raw) for raw in await sender.store.read(read)]


def flipped(data: bytes, at: int) -> bytes:
    return data[:at] + bytes([data[at] ^ 0x01]) + data[at + 1 :]


async def test_replayed_reordered_tampered_and_forged_envelopes(tmp_path: Path) -> None:
    async with (
        person(tmp_path, "Alice") as alice,
        person(tmp_path, "Bob") as bob,
        person(tmp_path, "Carol") as carol,
    ):
        async with node_of(alice), node_of(bob), node_of(carol):
            await befriend(alice, bob)
            await befriend(alice, carol)
        async with node_of(bob):
            genuine = await queued_envelopes(bob, 5)
        async with node_of(carol):
            from_carol = (await queued_envelopes(carol, 1))[0]
        # Bob's device, speaking for itself over its own authenticated connection.
        async with (
            node_of(alice) as alice_node,
            NetHost.open(bob.keys.device_seed, LOOPBACK) as bob_device,
        ):
            bob_device.add_addrs(alice_node.net.peer_id, alice_node.net.listen_addrs())
            link = await DeliveryLink.open(bob_device, alice_node.net.peer_id)

            async def deliver(*envelopes: Envelope) -> list[Result]:
                with trio.fail_after(STEP_TIMEOUT):
                    return await link.deliver(list(envelopes))

            first, second, third, fourth, fifth = genuine
            assert await deliver(first) == [Result.STORED]
            assert await deliver(first) == [Result.DUPLICATE]  # a retry: acked, not stored

            # Tampered ciphertexts decrypt under no session: refused, nothing stored, and
            # the genuine envelope still decrypts afterwards (no state was advanced).
            body = second.body
            for bad_body in [body[: len(body) // 2], flipped(body, len(body) - 5)]:
                tampered = msgspec.structs.replace(second, body=bad_body)
                assert await deliver(tampered) == [Result.NO_SESSION]
            # A genuine ciphertext under another message id: its payload says otherwise.
            relabelled = msgspec.structs.replace(second, message_id=os.urandom(16))
            assert await deliver(relabelled) == [Result.REJECTED]
            # Headers that lie: another sender identity, another device, another recipient.
            as_carol = msgspec.structs.replace(
                third, sender_identity=carol.keys.identity_public_key
            )
            to_bob = msgspec.structs.replace(third, recipient_device=bob.keys.device_public_key)
            carol_relayed = from_carol  # Carol's envelope, sent by Bob's device
            assert await deliver(as_carol, to_bob, carol_relayed) == [Result.REJECTED] * 3

            # Reordered: Olm accepts a later message first; the conversation keeps the
            # sender's order all the same.
            assert await deliver(fourth, second, third) == [Result.STORED] * 3
            # A replay of a decrypted envelope under a fresh id is caught by Olm itself.
            replayed = msgspec.structs.replace(fourth, message_id=os.urandom(16))
            assert await deliver(replayed) == [Result.NO_SESSION]
            assert await deliver(fifth) == [Result.STORED]
            await link.aclose()

            assert await texts(alice, "Bob") == [f"genuine {n}" for n in range(5)]
            assert await texts(alice, "Carol") == []
            stats = await alice_node.message_stats()
            assert stats.dropped == {
                "undecryptable": 3,
                "forged_payload": 1,
                "not_contact": 1,
                "misaddressed": 1,
                "forged_sender": 1,
            }
            assert stats.duplicates == 1

            # Frames that are not the protocol close the stream; nothing is stored.
            for raw in [encode_varint(5) + b"\xc1junk", encode_varint(MAX_FRAME_BYTES + 1)]:
                stream = await bob_device.new_stream(alice_node.net.peer_id, [PROTOCOL_ID])
                await stream.write(raw)
                with trio.fail_after(STEP_TIMEOUT):
                    assert await FramedStream(stream, MAX_FRAME_BYTES).receive_or_end() is None
                await stream.close()
            stats = await alice_node.message_stats()
            assert stats.dropped["malformed"] == 2
            assert await texts(alice, "Bob") == [f"genuine {n}" for n in range(5)]


async def test_a_message_no_device_will_take_is_marked_failed(tmp_path: Path) -> None:
    async with (
        person(tmp_path, "Alice") as alice,
        person(tmp_path, "Bob") as bob,
        node_of(alice),
        node_of(bob),
    ):
        await befriend(alice, bob)
        await bob.running.remove_contact("Alice")  # Alice does not know
        sent = await alice.running.send("Bob", "are you there?")
        failed = await alice.next_event(MessageStateChanged)
        assert failed.state == "failed" and failed.message_ids == [sent.message_id]
        [shown] = (await alice.running.messages("Bob", 10, None, mark_read=False)).messages
        assert shown.state == "failed"
        assert (await alice.running.message_stats()).pending_outbox == 0
        assert (await bob.running.message_stats()).dropped == {"not_contact": 1}


async def test_every_contact_gets_the_same_fallback_key(tmp_path: Path) -> None:
    async with (
        person(tmp_path, "Alice") as alice,
        person(tmp_path, "Bob") as bob,
        person(tmp_path, "Carol") as carol,
        node_of(alice),
        node_of(bob),
        node_of(carol),
    ):
        await befriend(alice, bob)
        await befriend(alice, carol)
        held = []
        for holder in (bob, carol):
            row = await holder.store.read(
                lambda conn: get_contact(conn, alice.keys.identity_public_key)
            )
            assert row is not None
            held.append(row.devices[0].fallback_key)
        # vodozemac keeps two fallback keys: one per card would soon strand older contacts.
        assert held[0] is not None and held[0] == held[1]
