"""Groups between real in-process nodes (real NetHosts on 127.0.0.1, real SQLCipher stores):
create, send, membership changes, rotation on removal, members who are not contacts, catch-up
from another member, bad input from members."""

from __future__ import annotations

from functools import partial
from pathlib import Path

import pytest

from p2pid.groups.errors import GroupsError
from p2pid.store import queries
from p2pid.wire.group_views import GroupSummary
from tests import nodes
from tests.nodes import Running, befriend, running_node, running_nodes

# Membership changes are probed while they propagate: a group not known yet is not done yet.
eventually = partial(nodes.eventually, ignore=(GroupsError,))


async def group_of(who: Running, name: str) -> GroupSummary | None:
    return next((g for g in await who.node.groups.list_groups() if g.name == name), None)


async def known_peers(who: Running) -> set[str]:
    return {peer.peer_id for peer in await who.node.store.read(queries.list_peers)}


async def texts(who: Running, group: str) -> list[str]:
    page = await who.node.groups.messages(group, 500, None)
    return [m.text for m in page.messages]


async def test_a_group_of_three_chats_and_a_removed_member_reads_nothing_new(
    tmp_path: Path,
) -> None:
    async with running_nodes(tmp_path, "Alice", "Bob", "Carol") as (alice, bob, carol):
        await befriend(alice, bob)
        await befriend(alice, carol)
        view = await alice.node.groups.create("Family", "F", ["Bob", "Carol"])
        assert {m.name for m in view.members} == {"Alice", "Bob", "Carol"}
        assert view.my_role == "admin"
        group = view.group_id
        for member in (bob, carol):
            joined = await eventually(lambda m=member: group_of(m, "Family"), bool)
            assert joined is not None and joined.my_role == "member" and joined.members == 3

        await alice.node.groups.send(group, "hello family")
        for member in (bob, carol):
            await eventually(lambda m=member: texts(m, group), lambda t: t == ["hello family"])
        # Carol is not Bob's contact, yet they read each other.
        await carol.node.groups.send(group, "hi from carol")
        await eventually(lambda: texts(bob, group), lambda t: "hi from carol" in t)
        assert await bob.node.contact_list() == [await bob.node.contact("Alice")]
        # Alice removes Bob as a contact: he stays in her group, only hidden from her contacts.
        await alice.node.remove_contact("Bob")
        assert [c.name for c in await alice.node.contact_list()] == ["Carol"]
        await alice.node.groups.send(group, "still in the group")
        await eventually(lambda: texts(bob, group), lambda t: "still in the group" in t)

        await alice.node.groups.remove(group, "Carol")
        await eventually(
            lambda: group_of(carol, "Family"), lambda g: g is not None and g.my_role == "removed"
        )
        await eventually(lambda: bob.node.groups.show(group), lambda v: len(v.members) == 2)
        await alice.node.groups.send(group, "after carol left")
        await eventually(lambda: texts(bob, group), lambda t: "after carol left" in t)
        assert "after carol left" not in await texts(carol, group)
        with pytest.raises(GroupsError, match="no longer a member"):
            await carol.node.groups.send(group, "still here?")

        left = await bob.node.groups.leave(group)
        assert left.my_role == "left" and "Bob" not in {m.name for m in left.members}
        await eventually(lambda: alice.node.groups.show(group), lambda v: len(v.members) == 1)
        assert (await group_of(bob, "Family")) is not None  # the history stays with him


async def test_a_member_who_was_offline_catches_up_from_another_member_once_the_sender_is_gone(
    tmp_path: Path,
) -> None:
    async with running_node(tmp_path / "carol", "Carol") as carol:
        async with running_node(tmp_path / "alice", "Alice") as alice:
            async with running_node(tmp_path / "bob", "Bob") as bob:
                await befriend(alice, bob)
                await befriend(alice, carol)
                group = (await alice.node.groups.create("Club", "", ["Bob", "Carol"])).group_id
                for member in (bob, carol):
                    await eventually(lambda m=member: group_of(m, "Club"), bool)
                # Carol's first message introduces her to Bob (her card: where she listens).
                await carol.node.groups.send(group, "hello from carol")
                await eventually(lambda: texts(bob, group), lambda t: t == ["hello from carol"])
                assert carol.node.net.peer_id in await known_peers(bob)
            sent = [f"message {i}" for i in range(20)]
            for text in sent:  # Bob is offline: the key and the messages wait in Alice's outbox
                await alice.node.groups.send(group, text)
            await eventually(lambda: texts(carol, group), lambda t: t[1:] == sent)
        # Alice is gone too; Bob comes back and asks Carol, who is not his contact.
        async with running_node(tmp_path / "bob", "Bob") as bob:
            assert await texts(bob, group) == ["hello from carol"]
            # Connecting to Carol starts a catch-up on its own; asking races with it.
            result = await bob.node.groups.sync(group)
            assert result.group_id == group
            await eventually(lambda: texts(bob, group), lambda t: t[1:] == sent)
            # Asking again fetches nothing twice.
            assert (await bob.node.groups.sync(group)).messages == 0


async def test_a_stranger_joins_by_a_group_invite_with_and_without_approval(
    tmp_path: Path,
) -> None:
    async with running_nodes(tmp_path, "Alice", "Dave", "Erin") as (alice, dave, erin):
        group = (await alice.node.groups.create("Choir", "", [])).group_id
        invite = await alice.node.groups.create_invite("Choir", 1, 600, False)
        joined = await dave.node.groups.join(invite.code)
        assert joined.state == "joined" and joined.group is not None
        assert {m.name for m in joined.group.members} == {"Alice", "Dave"}
        assert await dave.node.contact_list() == []  # a member, not a contact
        with pytest.raises(GroupsError, match="used"):
            await erin.node.groups.join(invite.code)  # one use only

        gated = await alice.node.groups.create_invite("Choir", 5, 600, True)
        waiting = await erin.node.groups.join(gated.code)
        assert waiting.state == "waiting" and waiting.group is None
        assert await group_of(erin, "Choir") is None
        [request] = await alice.node.groups.join_requests()
        assert request.name == "Erin" and request.group_id == group
        view = await alice.node.groups.answer_join(request.request_id, True)
        assert view is not None and {m.name for m in view.members} == {"Alice", "Dave", "Erin"}
        await eventually(
            lambda: group_of(erin, "Choir"), lambda g: g is not None and g.members == 3
        )
        await erin.node.groups.send(group, "thanks for having me")
        for member in (alice, dave):
            await eventually(
                lambda m=member: texts(m, group), lambda t: t == ["thanks for having me"]
            )
        with pytest.raises(GroupsError, match="no waiting join request"):
            await alice.node.groups.answer_join(request.request_id, True)
        with pytest.raises(GroupsError, match="not a group"):
            await erin.node.groups.join((await alice.node.create_invite(1, 600)).code)
        with pytest.raises(GroupsError, match="only an admin"):
            await dave.node.groups.create_invite("Choir", 1, 600, False)
