"""Groups under bad input, between real in-process nodes (real NetHosts on 127.0.0.1, real
SQLCipher stores): members who are not admins, forged and replayed ops, removed members who keep
sending, Megolm replays after rotation, admins in conflict while partitioned, and a group of six.

What a correct node never sends is injected through the real sending node: its own store
transaction queues the forged body or envelope in its outbox (Olm-encrypted by its messaging, or
a Megolm envelope sealed by its group engine), and its courier delivers it. Nothing here sleeps:
a bad input is known to be processed once the sender's outbox is empty (the receiver acknowledged
it), once a valid message queued after it arrived (one device's outbox is first in, first out),
or once the receiver's drop counter moved.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Sequence
from pathlib import Path

import msgspec
import pytest

from p2pid.crypto.megolm import InboundGroupSession, MegolmCiphertext, MegolmError
from p2pid.events import now_ms
from p2pid.groups.engine import MEGOLM_OUTBOX_PREFIX, Effects, Recipient
from p2pid.groups.errors import GroupsError
from p2pid.groups.membership import Accepted, GroupLog, GroupState, op_id_of, sign_op
from p2pid.protocols.messaging import DropReason
from p2pid.store import groups as group_queries
from p2pid.store.db import Connection
from p2pid.wire.groups import (
    Add,
    GroupOp,
    GroupOpBody,
    Promote,
    Remove,
    SignedGroupOp,
    decode_op_body,
    encode_op_body,
    encode_signed_op,
)
from p2pid.wire.messages import Envelope, GroupOps, OlmType, encode_envelope
from tests.test_groups_nodes import Running, befriend, eventually, group_of, running_nodes, texts

Membership = tuple[str, str, list[tuple[str, str]]]  # name, avatar, (identity id, role) sorted


def key_of(who: Running) -> bytes:
    return who.node.keys.identity_public_key


def id_of(who: Running) -> str:
    return who.node.keys.identity_id


async def membership(who: Running, group: str) -> Membership:
    view = await who.node.groups.show(group)
    return view.name, view.avatar, sorted((m.identity_id, m.role) for m in view.members)


async def snapshot(who: Running, group: str) -> tuple[Membership, int, int]:
    """What a member holds of a group: its membership, the log's version and the ops stored."""
    group_id = bytes.fromhex(group)
    view = await who.node.groups.show(group)
    stored = await who.node.store.read(lambda conn: len(group_queries.ops_of(conn, group_id)))
    return await membership(who, group), view.version, stored


async def drained(who: Running) -> None:
    """Everything in the node's outbox was acknowledged by its receivers."""
    await eventually(who.node.messaging.stats, lambda s: s.pending_outbox == 0)


async def dropped(who: Running, reason: DropReason) -> int:
    return (await who.node.messaging.stats()).dropped.get(reason.value, 0)


async def created(alice: Running, name: str, members: Sequence[Running]) -> str:
    """Alice's new group with `members` (her contacts), once every one of them holds it."""
    group = (await alice.node.groups.create(name, "", [m.name for m in members])).group_id
    for member in members:
        await eventually(
            lambda m=member: group_of(m, name),
            lambda g: g is not None and g.members == len(members) + 1,
        )
    return group


async def queue_ops(
    sender: Running, to: Sequence[Running], group_id: bytes, ops: Sequence[SignedGroupOp]
) -> None:
    """Queue `ops` verbatim as a GroupOps body from `sender`'s real outbox (Olm, like any op)."""
    body = GroupOps(group_id=group_id, ops=[encode_signed_op(op) for op in ops])

    def write(conn: Connection) -> list[str]:
        devices: list[str] = []
        for receiver in to:
            devices += sender.node.messaging.compose_for_groups(
                conn, key_of(receiver), body, now_ms(), None
            )
        return devices

    for peer_id in await sender.node.store.write(write):
        sender.node.messaging.kick_device(peer_id)


async def queue_megolm(
    sender: Running, group_id: bytes, ciphertext: bytes, state: GroupState | None = None
) -> str:
    """Queue a Megolm ciphertext under a new message id to the member devices of `state` (the
    sender's current one by default), as `seal_message` does minus the sealing; the new id."""

    def write(conn: Connection) -> list[Recipient]:
        engine = sender.node.groups.engine
        with sender.node.groups.lock:
            members = engine.member_devices(
                conn, state or engine.logs[group_id].state, include_me=False
            )
        session_id = msgspec.msgpack.decode(ciphertext, type=MegolmCiphertext).session_id
        for recipient in members:
            envelope = Envelope(
                message_id=message_id,
                sender_identity=key_of(sender),
                sender_device=sender.node.keys.device_public_key,
                recipient_device=recipient.device_key,
                olm_type=OlmType.MEGOLM,
                body=ciphertext,
            )
            sender.node.messaging.enqueue_raw(
                conn,
                message_id,
                recipient,
                encode_envelope(envelope),
                MEGOLM_OUTBOX_PREFIX + session_id,
                now_ms(),
            )
        return members

    message_id = os.urandom(16)
    recipients = await sender.node.store.write(write)
    assert recipients
    for recipient in recipients:
        sender.node.messaging.kick_device(recipient.peer_id)
    return message_id.hex()


async def envelope_of(who: Running, group: str, message_id: str) -> bytes:
    """The encoded MegolmCiphertext of a group message as the node keeps it."""
    group_id = bytes.fromhex(group)
    [row] = await who.node.store.read(
        lambda conn: group_queries.get_envelopes(conn, group_id, [bytes.fromhex(message_id)])
    )
    return row.ciphertext


def copy_of(group_log: GroupLog) -> GroupLog:
    copy = GroupLog.from_genesis(group_log.genesis)
    copy.add_all(op for op in group_log.ops() if op is not group_log.genesis)
    return copy


async def reconnect(nodes: Sequence[Running]) -> None:
    """Tell restarted nodes where the others listen now, and connect every pair."""
    for a, b in itertools.permutations(nodes, 2):
        a.node.net.add_addrs(b.node.net.peer_id, b.node.reachable_addrs())
    for a, b in itertools.combinations(nodes, 2):
        await a.node.net.connect(b.node.net.peer_id)


# -- 1. members who are not admins ---------------------------------------------------------------


async def test_a_member_who_is_not_an_admin_can_neither_add_nor_remove(tmp_path: Path) -> None:
    """Bob, a plain member, is refused by his own service; then his node sends every member an
    add (of his contact Dave) and a remove (of Carol) signed by his own identity key on the
    current heads: a well-formed, correctly signed op whose only fault is its author's role. The
    service would never sign it, so it is signed with `sign_op` and queued in Bob's outbox."""
    async with running_nodes(tmp_path, "Alice", "Bob", "Carol", "Dave") as nodes:
        alice, bob, carol, dave = nodes
        await befriend(alice, bob)
        await befriend(alice, carol)
        await befriend(bob, dave)
        group = await created(alice, "Book club", [bob, carol])
        group_id = bytes.fromhex(group)
        members = (alice, bob, carol)
        before = [await snapshot(m, group) for m in members]

        with pytest.raises(GroupsError, match="only an admin") as refused:
            await bob.node.groups.add(group, "Dave")
        assert refused.value.kind == "refused"
        with pytest.raises(GroupsError, match="only an admin") as refused:
            await bob.node.groups.remove(group, "Carol")
        assert refused.value.kind == "refused"
        assert [await snapshot(m, group) for m in members] == before

        heads = sorted(bob.node.groups.engine.logs[group_id].heads)
        forged = [
            sign_op(
                bob.node.keys.identity_signing_key,
                GroupOpBody(
                    group_id=group_id, parents=heads, author=key_of(bob), created_at=now_ms(), op=op
                ),
            )
            for op in (Add(member=key_of(dave), display_name="Dave"), Remove(member=key_of(carol)))
        ]
        await queue_ops(bob, [alice, carol], group_id, forged)
        await drained(bob)

        assert [await snapshot(m, group) for m in members] == before
        assert id_of(dave) not in {i for i, _ in (await membership(alice, group))[2]}
        assert await dave.node.groups.list_groups() == []


# -- 2. forged and replayed ops -------------------------------------------------------------------


async def test_forged_ops_are_refused_and_a_replayed_op_changes_nothing(tmp_path: Path) -> None:
    """Bob (a plain member) sends, from his real outbox:
    - an op claiming Alice (the admin) as author, promoting Bob, but signed by Bob's key: what a
      member would do to make himself admin (his node cannot sign as Alice);
    - Alice's genuine add of Carol taken from Bob's log, its body altered (another member, same
      parents) and Alice's signature kept: valid in every respect but the signature;
    - Alice's genuine removal of Carol, sent again verbatim after Alice re-added Carol: applied a
      second time it would remove her again.
    A correct node sends none of these, so they are built by hand and queued with the
    sender's own `compose_for_groups`."""
    async with running_nodes(tmp_path, "Alice", "Bob", "Carol") as nodes:
        alice, bob, carol = nodes
        await befriend(alice, bob)
        await befriend(alice, carol)
        group = await created(alice, "Chess", [bob, carol])
        group_id = bytes.fromhex(group)

        await alice.node.groups.remove(group, "Carol")
        await alice.node.groups.add(group, "Carol")
        for member in nodes:
            await eventually(
                lambda m=member: snapshot(m, group), lambda s: s[1] == 5 and len(s[0][2]) == 3
            )
        before = [await snapshot(m, group) for m in nodes]

        bob_log = bob.node.groups.engine.logs[group_id]
        genuine = [(decode_op_body(op.body).op, op) for op in bob_log.ops()]
        add_carol = next(signed for op, signed in genuine if isinstance(op, Add))
        remove_carol = next(signed for op, signed in genuine if isinstance(op, Remove))
        promote_me = sign_op(
            bob.node.keys.identity_signing_key,
            GroupOpBody(
                group_id=group_id,
                parents=sorted(bob_log.heads),
                author=key_of(alice),
                created_at=now_ms(),
                op=Promote(member=key_of(bob)),
            ),
        )
        altered_body = msgspec.structs.replace(
            decode_op_body(add_carol.body), op=Add(member=os.urandom(32), display_name="Mallory")
        )
        altered = SignedGroupOp(body=encode_op_body(altered_body), signature=add_carol.signature)
        assert decode_op_body(remove_carol.body).author == key_of(alice)

        for op in (promote_me, altered, remove_carol):
            await queue_ops(bob, [alice, carol], group_id, [op])
        await drained(bob)

        assert [await snapshot(m, group) for m in nodes] == before
        (_name, _avatar, roles), _version, _stored = before[0]
        assert (id_of(bob), "member") in roles and (id_of(carol), "member") in roles
        assert len(roles) == 3  # no Mallory


# -- 3. a removed member who keeps sending --------------------------------------------------------


async def test_a_removed_member_who_keeps_sending_is_dropped_by_every_member(
    tmp_path: Path,
) -> None:
    """Carol is removed; her service then refuses to send. Her node is made to send anyway, two
    ways no correct node would: (1) her engine seals a message with a copy of the log from before
    her removal and her outbound Megolm session as it was (both put back inside the transaction,
    then the real log restored): a new index under a session Alice and Bob hold; (2) her earlier
    message's ciphertext re-queued under a new message id. Alice and Bob drop both as from a
    non-member and show nothing."""
    async with running_nodes(tmp_path, "Alice", "Bob", "Carol") as nodes:
        alice, bob, carol = nodes
        await befriend(alice, bob)
        await befriend(alice, carol)
        group = await created(alice, "Choir", [bob, carol])
        group_id = bytes.fromhex(group)
        sent = await carol.node.groups.send(group, "carol, while a member")
        for member in (alice, bob):
            await eventually(lambda m=member: texts(m, group), lambda t: t == [sent.text])
        engine = carol.node.groups.engine
        stale_log = copy_of(engine.logs[group_id])
        outbound = await carol.node.store.read(
            lambda conn: group_queries.get_outbound(conn, group_id)
        )
        assert outbound is not None and len(outbound.shared_with) == 2
        old_ciphertext = await envelope_of(carol, group, sent.message_id)

        await alice.node.groups.remove(group, "Carol")
        await eventually(
            lambda: group_of(carol, "Choir"), lambda g: g is not None and g.my_role == "removed"
        )
        await eventually(lambda: bob.node.groups.show(group), lambda v: len(v.members) == 2)
        with pytest.raises(GroupsError, match="no longer a member"):
            await carol.node.groups.send(group, "refused")
        drops_before = [await dropped(m, DropReason.NOT_CONTACT) for m in (alice, bob)]

        def seal_as_if_a_member(conn: Connection) -> Effects:
            effects = Effects()
            with carol.node.groups.lock:
                real_log = engine.logs[group_id]
                engine.logs[group_id] = stale_log
                try:
                    group_queries.save_outbound(conn, outbound)
                    engine.seal_message(conn, group_id, "carol, removed", now_ms(), effects)
                finally:
                    engine.logs[group_id] = real_log
            return effects

        effects = await carol.node.store.write(seal_as_if_a_member)
        assert len(effects.kick) == 2  # queued for Alice's and Bob's devices
        for peer_id in effects.kick:
            carol.node.messaging.kick_device(peer_id)
        await queue_megolm(carol, group_id, old_ciphertext, stale_log.state)

        await drained(carol)  # acknowledged (refused) by both
        for member, before in zip((alice, bob), drops_before, strict=True):
            assert await dropped(member, DropReason.NOT_CONTACT) >= before + 2
            assert await texts(member, group) == [sent.text]


# -- 4. a removed member's node cannot read what follows ------------------------------------------


async def test_a_removed_members_node_holds_no_key_to_messages_sent_after_the_removal(
    tmp_path: Path,
) -> None:
    """Nothing is forged: the ciphertexts Alice and Bob sealed after Carol's removal (the same
    bytes went to every remaining member device) are tried against every inbound Megolm session
    Carol's store holds, as if her node had intercepted them on the wire."""
    async with running_nodes(tmp_path, "Alice", "Bob", "Carol") as nodes:
        alice, bob, carol = nodes
        await befriend(alice, bob)
        await befriend(alice, carol)
        group = await created(alice, "Garden", [bob, carol])
        group_id = bytes.fromhex(group)
        for member in nodes:
            await member.node.groups.send(group, f"{member.name}, before")
        for member in nodes:
            await eventually(lambda m=member: texts(m, group), lambda t: len(t) == 3)

        await alice.node.groups.remove(group, "Carol")
        await eventually(
            lambda: group_of(carol, "Garden"), lambda g: g is not None and g.my_role == "removed"
        )
        await eventually(lambda: bob.node.groups.show(group), lambda v: len(v.members) == 2)
        after = [await m.node.groups.send(group, f"{m.name}, after") for m in (alice, bob)]
        for member, other in ((alice, bob), (bob, alice)):
            await eventually(lambda m=member: texts(m, group), lambda t: len(t) == 5)
            await drained(other)

        def carol_sessions(conn: Connection) -> tuple[list[group_queries.InboundRow], int]:
            held = conn.execute("SELECT count(*) FROM group_held").fetchone()[0]
            return group_queries.inbound_for_group(conn, group_id), int(held)

        sessions, held = await carol.node.store.read(carol_sessions)
        assert held == 0  # nothing was queued to her device, not even undecryptable
        assert len(sessions) == 3  # Alice's, Bob's and her own from before
        vault_key = carol.node.groups.engine.vault_key
        for sender, message in zip((alice, bob), after, strict=True):
            ciphertext = msgspec.msgpack.decode(
                await envelope_of(sender, group, message.message_id), type=MegolmCiphertext
            )
            assert ciphertext.session_id not in {row.session_id for row in sessions}
            for row in sessions:
                with pytest.raises(MegolmError):
                    InboundGroupSession.from_pickle(row.pickle, vault_key).decrypt(ciphertext)
        assert [t for t in await texts(carol, group) if t.endswith("after")] == []


# -- 5. a Megolm ciphertext replayed under a stale session ----------------------------------------


async def test_an_old_ciphertext_replayed_after_rotation_is_taken_as_a_replay(
    tmp_path: Path,
) -> None:
    """Bob's first message, sealed under the session he used before Carol's removal, is queued
    again by Bob's node after he rotated (same ciphertext, a new envelope message id, straight
    into his outbox with `enqueue_raw`: his engine never reuses an index). Alice takes it as a
    replay of an index she has seen (a duplicate, not a drop) and shows it once."""
    async with running_nodes(tmp_path, "Alice", "Bob", "Carol") as nodes:
        alice, bob, carol = nodes
        await befriend(alice, bob)
        await befriend(alice, carol)
        group = await created(alice, "Band", [bob, carol])
        group_id = bytes.fromhex(group)
        first = await bob.node.groups.send(group, "first")
        await eventually(lambda: texts(alice, group), lambda t: t == ["first"])
        old = await envelope_of(bob, group, first.message_id)

        await alice.node.groups.remove(group, "Carol")
        await eventually(lambda: bob.node.groups.show(group), lambda v: len(v.members) == 2)
        await bob.node.groups.send(group, "second")
        await eventually(lambda: texts(alice, group), lambda t: t == ["first", "second"])
        current = await bob.node.store.read(lambda conn: group_queries.get_outbound(conn, group_id))
        old_session = msgspec.msgpack.decode(old, type=MegolmCiphertext).session_id
        assert current is not None and current.session_id != old_session  # rotated
        stats = await alice.node.messaging.stats()

        await queue_megolm(bob, group_id, old)
        await bob.node.groups.send(group, "third")  # queued after the replay
        await eventually(lambda: texts(alice, group), lambda t: "third" in t)

        assert await texts(alice, group) == ["first", "second", "third"]
        now = await alice.node.messaging.stats()
        assert now.duplicates > stats.duplicates
        assert now.dropped == stats.dropped


# -- 6. admins in conflict while partitioned -------------------------------------------------


async def partitioned_admins(tmp_path: Path, name: str) -> str:
    """Alice's group with Bob (promoted to admin) and Carol, everyone agreed and nothing in
    flight; then the three nodes stop. Restarted, each listens on a new port that no other knows:
    they are partitioned until `reconnect`."""
    async with running_nodes(tmp_path, "Alice", "Bob", "Carol") as nodes:
        alice, bob, carol = nodes
        await befriend(alice, bob)
        await befriend(alice, carol)
        group = await created(alice, name, [bob, carol])
        await alice.node.groups.promote(group, "Bob")
        for member in nodes:
            await eventually(
                lambda m=member: membership(m, group), lambda v: (id_of(bob), "admin") in v[2]
            )
        for member in nodes:
            await drained(member)
    return group


async def agreed(nodes: Sequence[Running], group: str) -> list[tuple[Membership, int]]:
    return [(await membership(m, group), (await m.node.groups.show(group)).version) for m in nodes]


async def author_sorting_before(who: Running, group: str, op: GroupOp, other: bytes) -> None:
    """Author `op` on `who`'s log and send it to the members, as the service does, with a
    `created_at` (the author's clock, informative only) chosen so that its id sorts before
    `other`."""
    group_id = bytes.fromhex(group)
    groups, engine = who.node.groups, who.node.groups.engine

    def write(conn: Connection) -> Effects:
        effects = Effects()
        with groups.lock:
            group_log = engine.logs[group_id]
            before = group_log.state
            for created_at in itertools.count(now_ms()):
                body = GroupOpBody(
                    group_id=group_id,
                    parents=sorted(group_log.heads),
                    author=key_of(who),
                    created_at=created_at,
                    op=op,
                )
                if op_id_of(encode_op_body(body)) < other:
                    break
            signed = sign_op(engine.identity_signing_key, body)
            assert isinstance(group_log.add(signed), Accepted)
            engine.store_ops(conn, group_log, [signed], created_at)
            also = [op.member] if isinstance(op, Remove) else []
            engine.distribute_ops(conn, group_log, [signed], created_at, effects, also=also)
            engine.announce_change(conn, group_log, before, created_at, effects)
        return effects

    groups.committed(await who.node.store.write(write))


async def test_an_admin_removed_while_partitioned_loses_what_he_did_meanwhile(
    tmp_path: Path,
) -> None:
    """While partitioned, Alice (the creator) removes Bob and Bob (an admin she promoted)
    removes Carol and renames the group; Bob cannot remove Alice (she is senior). Both nodes
    author on their own stale logs. Bob's removal of Carol is authored through his engine as his
    service would, except that its clock value is picked (within a few ms of now) so its op id
    sorts before Alice's removal of Bob: the linear order alone would then let it take effect,
    as an admin grinding ids could arrange. Once connected, removal wins: every node, Bob's
    included, ends with Alice and Carol in "Quartet"."""
    group = await partitioned_admins(tmp_path, "Quartet")
    async with running_nodes(tmp_path, "Alice", "Bob", "Carol") as nodes:
        alice, bob, carol = nodes
        await alice.node.groups.remove(group, "Bob")
        with pytest.raises(GroupsError, match="more senior admin") as refused:
            await bob.node.groups.remove(group, "Alice")
        assert refused.value.kind == "refused"
        [removal_of_bob] = alice.node.groups.engine.logs[bytes.fromhex(group)].heads
        await author_sorting_before(bob, group, Remove(member=key_of(carol)), removal_of_bob)
        await bob.node.groups.rename(group, "Bob's band", None)
        assert len((await bob.node.groups.show(group)).members) == 2  # he saw no removal yet
        assert {m.name for m in (await alice.node.groups.show(group)).members} == {
            "Alice",
            "Carol",
        }

        await reconnect(nodes)
        expected = ("Quartet", "", sorted([(id_of(alice), "admin"), (id_of(carol), "member")]))
        for member in nodes:
            await eventually(lambda m=member: membership(m, group), lambda v: v == expected)
        assert (await group_of(bob, "Quartet")) is not None
        assert (await bob.node.groups.show(group)).my_role == "removed"
        assert (await carol.node.groups.show(group)).my_role == "member"


async def test_concurrent_renames_and_a_removal_converge_on_every_node(tmp_path: Path) -> None:
    """While partitioned, Alice renames the group "Alpha" and Bob (an admin) renames it "Beta"
    and removes Carol. Nothing is forged: both author on their own stale logs. Once connected,
    all three (Carol, removed, included) hold the same ops and the same state: Carol out, one
    of the two names, chosen alike everywhere."""
    group = await partitioned_admins(tmp_path, "Trio")
    async with running_nodes(tmp_path, "Alice", "Bob", "Carol") as nodes:
        alice, bob, carol = nodes
        await alice.node.groups.rename(group, "Alpha", None)
        await bob.node.groups.rename(group, "Beta", None)
        await bob.node.groups.remove(group, "Carol")
        assert (await alice.node.groups.show(group)).name == "Alpha"
        assert (await bob.node.groups.show(group)).name == "Beta"

        await reconnect(nodes)
        # genesis, 2 adds, promote, then the three concurrent ops
        final = await eventually(
            lambda: agreed(nodes, group), lambda v: all(x == v[0] for x in v) and v[0][1] == 7
        )
        (name, _avatar, roles), _version = final[0]
        assert name in {"Alpha", "Beta"}
        assert roles == sorted([(id_of(alice), "admin"), (id_of(bob), "admin")])
        assert (await carol.node.groups.show(group)).my_role == "removed"


# -- 7. a group of six -------------------------------------------------------------------------


async def test_a_group_of_six_where_only_the_creator_knows_everyone(tmp_path: Path) -> None:
    """Nothing is forged: six real nodes, the five members contacts of the creator only. Every
    message reaches every other member; after a removal, the next round reaches every remaining
    member and nothing of it reaches the removed one."""
    names = ("Alice", "Bob", "Carol", "Dave", "Erin", "Frank")
    async with running_nodes(tmp_path, *names) as nodes:
        alice, *members = nodes
        for member in members:
            await befriend(alice, member)
        group = await created(alice, "Six", members)

        for member in nodes:
            await member.node.groups.send(group, f"hello from {member.name}")
        first = {f"hello from {n}" for n in names}
        for member in nodes:
            await eventually(lambda m=member: texts(m, group), lambda t: set(t) == first)

        frank = nodes[-1]
        remaining = nodes[:-1]
        await alice.node.groups.remove(group, "Frank")
        await eventually(
            lambda: group_of(frank, "Six"), lambda g: g is not None and g.my_role == "removed"
        )
        for member in remaining:
            await eventually(lambda m=member: membership(m, group), lambda v: len(v[2]) == 5)

        for member in remaining:
            await member.node.groups.send(group, f"again from {member.name}")
        second = {f"again from {m.name}" for m in remaining}
        for member in remaining:
            await eventually(lambda m=member: texts(m, group), lambda t: set(t) == first | second)
        for member in remaining:
            await drained(member)
        assert set(await texts(frank, group)) == first
        held = await frank.node.store.read(
            lambda conn: conn.execute("SELECT count(*) FROM group_held").fetchone()[0]
        )
        assert held == 0
