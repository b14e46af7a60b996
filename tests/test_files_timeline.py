"""A file offered in a conversation is a line of it, on both ends (real in-process nodes on
127.0.0.1, real stores): in its place among the texts, unread for the recipient, delivered and
read for the sender, in one-to-one conversations and in groups; an offer refused leaves no line.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import TypeVar

import msgspec
import pytest
import trio

from p2pid.crypto.file_chunks import new_offer
from p2pid.files.timeline import line_text
from p2pid.sizes import human_size
from p2pid.wire.events import Event
from p2pid.wire.file_views import FileOffered
from p2pid.wire.group_views import GroupMessageReceived, GroupMessageSent
from p2pid.wire.messages import (
    FileLineCopy,
    FileShare,
    MessageReceived,
    MessagesDropped,
    MessageSent,
    MessageStateChanged,
    MessageView,
    Payload,
    PayloadError,
    decode_payload,
    encode_payload,
)
from tests import nodes
from tests.nodes import WAIT_SECONDS, Running, befriend, eventually, group_of
from tests.test_device_sync import device_of, link_laptop
from tests.test_messaging import befriend as befriend_people
from tests.test_messaging import node_of, person

running_node = partial(nodes.running_node, auto_accept="none")
running_nodes = partial(nodes.running_nodes, auto_accept="none")

SIZE = 3_250_000
E = TypeVar("E", bound=Event)


async def next_event(who: Running, kind: type[E]) -> E:
    with trio.fail_after(WAIT_SECONDS):
        async for event in who.events:
            if isinstance(event, kind):
                return event
    raise AssertionError("the event stream ended")


async def direct_lines(who: Running, contact: str) -> list[MessageView]:
    return (await who.node.messages(contact, 50, None, False)).messages


async def group_lines(who: Running, group: str) -> list[MessageView]:
    return (await who.node.groups.messages(group, 50, None)).messages


def make_file(tmp_path: Path, name: str) -> Path:
    path = tmp_path / "out" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x" * SIZE)
    return path


def test_the_line_names_the_file_and_its_size() -> None:
    offer = new_offer("minutes.pdf", SIZE, "application/pdf", bytes(32))
    assert line_text(offer.name, offer.size) == "📎 minutes.pdf (3.2 MB)"
    assert [human_size(n) for n in (0, 999, 1000, 1_234_567, 150_000_000)] == [
        "0 B",
        "999 B",
        "1.0 kB",
        "1.2 MB",
        "150 MB",
    ]


async def test_a_file_sent_to_a_contact_is_a_line_of_the_conversation(tmp_path: Path) -> None:
    source = make_file(tmp_path, "minutes.pdf")
    async with running_nodes(tmp_path, "Alice", "Bob") as (alice, bob):
        await befriend(alice, bob)
        await alice.node.send("Bob", "the minutes follow")
        await next_event(bob, MessageReceived)
        sent = await alice.node.files.send("Bob", str(source))

        mine = (await direct_lines(alice, "Bob"))[-1]
        assert (mine.kind, mine.message_id, mine.outgoing) == ("file", sent.transfer_id, True)
        assert mine.text == "📎 minutes.pdf (3.2 MB)"

        received = await next_event(bob, MessageReceived)
        assert received.message.kind == "file"
        assert received.message.message_id == sent.transfer_id  # `file show` finds it
        assert (received.name, received.message.text) == ("Alice", mine.text)
        offered = await next_event(bob, FileOffered)
        assert offered.transfer.transfer_id == sent.transfer_id

        await alice.node.send("Bob", "did it arrive?")
        await eventually(lambda: direct_lines(bob, "Alice"), lambda m: len(m) == 3)
        page = await bob.node.messages("Alice", 50, None, False)
        assert [(m.kind, m.text) for m in page.messages] == [
            ("text", "the minutes follow"),
            ("file", mine.text),
            ("text", "did it arrive?"),
        ]
        assert page.unread == 3
        lamports = [m.lamport for m in page.messages]
        assert lamports == sorted(lamports) and len(set(lamports)) == 3
        assert page.messages[1].lamport == mine.lamport

        # Bob's device acknowledges the line like a text, and reading it tells Alice.
        await eventually(
            lambda: direct_lines(alice, "Bob"),
            lambda lines: next(m for m in lines if m.kind == "file").state == "delivered",
        )
        assert await bob.node.mark_read("Alice") == 3
        await eventually(
            lambda: direct_lines(alice, "Bob"),
            lambda lines: next(m for m in lines if m.kind == "file").state == "read",
        )
        summaries = {s.name: s for s in await bob.node.conversations()}
        assert summaries["Alice"].unread == 0
        found = await bob.node.search_messages("minutes.pdf", None, 10)
        assert [m.message_id for m in found] == [sent.transfer_id]


async def test_a_file_sent_to_a_group_is_a_line_of_the_group_for_every_member(
    tmp_path: Path,
) -> None:
    source = make_file(tmp_path, "slides.key")
    async with running_nodes(tmp_path, "Alice", "Bob", "Carol") as (alice, bob, carol):
        await group_of(alice, "Team", bob, carol)
        await alice.node.groups.send("Team", "before")
        sent = await alice.node.files.send("Team", str(source))
        await alice.node.groups.send("Team", "after")
        mine = [m for m in await group_lines(alice, "Team") if m.kind == "file"]
        assert [(m.message_id, m.outgoing) for m in mine] == [(sent.transfer_id, True)]

        for member in (bob, carol):
            lines = await eventually(
                lambda m=member: group_lines(m, "Team"), lambda lines: len(lines) == 3
            )
            assert [(m.kind, m.text) for m in lines] == [
                ("text", "before"),
                ("file", "📎 slides.key (3.2 MB)"),
                ("text", "after"),
            ]
            assert lines[1].message_id == sent.transfer_id and lines[1].state == "unread"
            assert lines[1].lamport == mine[0].lamport  # the place Alice gave it
        # The event names the group and the sender as Bob calls them.
        received = await next_event(bob, GroupMessageReceived)
        while received.message.kind != "file":
            received = await next_event(bob, GroupMessageReceived)
        assert (received.group_name, received.sender_name) == ("Team", "Alice")

        await eventually(
            lambda: group_lines(alice, "Team"),
            lambda lines: next(m for m in lines if m.kind == "file").state == "delivered",
        )
        for member in (bob, carol):
            assert await member.node.groups.mark_read("Team") == 3
        await eventually(
            lambda: group_lines(alice, "Team"),
            lambda lines: next(m for m in lines if m.kind == "file").state == "read",
        )


async def test_an_offer_refused_leaves_no_line(tmp_path: Path) -> None:
    async with running_nodes(tmp_path, "Alice", "Bob") as (alice, bob):
        await befriend(alice, bob)
        bob_contact = await alice.node.contacts.find("Bob")
        good = new_offer("ok.txt", 10, "text/plain", bytes(32))
        bad = msgspec.structs.replace(good, name="../../.bashrc")
        await alice.node.store.write(
            lambda conn: alice.node.messaging.compose_for_groups(
                conn, bob_contact.identity_key, FileShare(offer=bad), 1, None
            )
        )
        alice.node.messaging.kick_device(bob.node.net.peer_id)
        dropped = await next_event(bob, MessagesDropped)
        assert dropped.reason == "bad_payload"
        assert await direct_lines(bob, "Alice") == []
        assert await bob.node.files.list_transfers() == []


# -- the line on my other devices --------------------------------------------------------------


async def test_my_other_device_shows_the_line_of_a_file_i_send_and_its_receipts(
    tmp_path: Path,
) -> None:
    """The phone sends a file to Bob, and one to a group: the laptop (linked with the real
    drivers) shows both lines as mine, and Bob's receipts mark them there too. The transfer
    stays on the phone."""
    source = make_file(tmp_path, "report.ods")
    async with (
        person(tmp_path, "Alice") as phone,
        person(tmp_path, "Bob") as bob,
        node_of(phone),
        node_of(bob),
    ):
        await befriend_people(phone, bob)
        await bob.running.files.set_settings(None, "none", None)
        home = await link_laptop(tmp_path, phone)
        async with device_of(home, "Laptop") as laptop, node_of(laptop):
            sent = await phone.running.files.send("Bob", str(source))
            copied = await laptop.next_event(MessageSent, lambda e: e.message.kind == "file")
            assert copied.message.message_id == sent.transfer_id
            assert copied.message.outgoing and copied.name == "Bob"
            assert copied.message.text == "📎 report.ods (3.2 MB)"
            phone_line = (await phone.running.messages("Bob", 10, None, False)).messages[-1]
            assert copied.message.lamport == phone_line.lamport
            assert await laptop.running.files.list_transfers() == []

            # Bob's device has the offer: his delivery receipt reaches the laptop too.
            await laptop.next_event(
                MessageStateChanged,
                lambda e: e.state == "delivered" and sent.transfer_id in e.message_ids,
            )

            group = (await phone.running.groups.create("Team", "A", ["Bob"])).group_id
            await eventually(
                laptop.running.groups.list_groups,
                lambda groups: any(g.group_id == group for g in groups),
            )
            to_team = await phone.running.files.send("Team", str(source))
            in_group = await laptop.next_event(GroupMessageSent, lambda e: e.message.kind == "file")
            assert (in_group.group_id, in_group.group_name) == (group, "Team")
            assert in_group.message.message_id == to_team.transfer_id


async def test_a_line_copy_from_someone_else_is_refused(tmp_path: Path) -> None:
    """Only my own devices may put a line of mine into a conversation."""
    async with running_nodes(tmp_path, "Alice", "Bob") as (alice, bob):
        await befriend(alice, bob)
        bob_contact = await alice.node.contacts.find("Bob")
        forged = FileLineCopy(
            conversation_with=alice.node.messaging.identity_key, name="x.txt", size=1
        )
        await alice.node.store.write(
            lambda conn: alice.node.messaging.compose_for_groups(
                conn, bob_contact.identity_key, forged, 1, None
            )
        )
        alice.node.messaging.kick_device(bob.node.net.peer_id)
        dropped = await next_event(bob, MessagesDropped)
        assert dropped.reason == "forged_payload"
        assert await direct_lines(bob, "Alice") == []


def test_a_line_copy_with_an_unclean_name_is_refused() -> None:
    for name in ("../x", "CON", " padded "):
        copy = FileLineCopy(conversation_with=bytes(32), name=name, size=1)
        payload = Payload(
            message_id=bytes(16),
            sender_identity=bytes(32),
            recipient_identity=bytes(32),
            sent_at_ms=1,
            lamport=1,
            body=copy,
        )
        with pytest.raises(PayloadError, match="file name"):
            decode_payload(encode_payload(payload))
