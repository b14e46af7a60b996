"""Group join (`/p2pid/group-join/1`): the sans-IO machines with bytes in and bytes out, then the
trio drivers over real NetHosts on 127.0.0.1 with an in-memory backend."""

from __future__ import annotations

import secrets
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import TypeVar

import msgspec
import pytest
import trio
from hypothesis import given, settings
from hypothesis import strategies as st

from p2pid.crypto.device_list import sign_device_list
from p2pid.crypto.identity import IdentityKeys
from p2pid.crypto.invites import new_invite
from p2pid.crypto.join_proof import PROOF_BYTES
from p2pid.groups.membership import GroupLog
from p2pid.net.host import NetHost, Stream
from p2pid.protocols import group_join
from p2pid.protocols.cards import JoinedContact
from p2pid.protocols.framed import FramedStream
from p2pid.protocols.group_join import (
    Admitted,
    GroupInviter,
    GroupInviteSecret,
    GroupJoiner,
    GroupJoinError,
    GroupJoinInviteError,
    GroupJoinProtocolError,
    GroupJoinRefusedError,
    GroupJoinServer,
    GroupJoinTimeoutError,
    GroupJoinUnreachableError,
    JoinOutcome,
    Waiting,
    join_group,
    refusal_text,
)
from p2pid.wire import group_join as wire
from p2pid.wire.framing import encode_varint
from p2pid.wire.group_join import (
    MAX_CARD_BYTES,
    MAX_CARDS,
    MAX_FRAME_BYTES,
    MAX_HELLO_FRAME_BYTES,
    MAX_MEMBER_CARD_BYTES,
    MAX_OP_BYTES,
    MAX_OPS,
    PROTOCOL_ID,
    GroupJoinDone,
    GroupJoinHello,
    GroupJoinRefused,
    GroupJoinWaiting,
    GroupJoinWelcome,
    RefusalReason,
    decode_message,
    encode_message,
)
from p2pid.wire.groups import Add, decode_signed_op, encode_signed_op
from p2pid.wire.invite import Invite, InviteKind, invite_body
from p2pid.wire.messages import MemberCard
from p2pid.wire.records import ContactCard, DeviceEntry, SignedDeviceList

CardT = TypeVar("CardT", MemberCard, ContactCard)

NOW = 1_800_000_000
T0 = 1_700_000_000_000
LOOPBACK = ["/ip4/127.0.0.1/tcp/0"]
NET_TIMEOUT = 10


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

    def member_card(self) -> MemberCard:
        return MemberCard(display_name=self.card.display_name, device_list=self.card.device_list)


def person(
    name: str,
    keys: IdentityKeys | None = None,
    signer: IdentityKeys | None = None,
    listed: IdentityKeys | None = None,
) -> Person:
    """`signer` signs the device list (default: the person), which lists `listed`'s device
    (default: the person's)."""
    keys = keys or IdentityKeys.generate()
    device = DeviceEntry(
        device_key=(listed or keys).device_public_key,
        olm_curve25519="c",
        olm_ed25519="e",
        name=f"{name}'s laptop",
        created_at=1,
    )
    devices = sign_device_list((signer or keys).identity_signing_key, 1, 1, [device])
    return Person(keys, ContactCard(display_name=name, device_list=devices))


def group_invite(
    admin: Person, *, kind: InviteKind = InviteKind.GROUP, now: int = NOW, name: str = "Family"
) -> Invite:
    return new_invite(
        kind,
        admin.keys.identity_signing_key,
        admin.keys.device_public_key,
        (),
        ttl_seconds=600,
        name=name,
        now=now,
    )


def forged_invite(admin: Person, forger: Person) -> Invite:
    """Claims the admin's identity and device, signed by the forger."""
    unsigned = invite_body(
        InviteKind.GROUP,
        admin.identity_key,
        admin.keys.device_public_key,
        (),
        secrets.token_bytes(16),
        NOW + 600,
        "Family",
    )
    return unsigned.with_signature(
        forger.keys.identity_signing_key.sign(unsigned.signed_bytes()).signature
    )


def joiner_for(bob: Person, invite: Invite, now: int = NOW) -> GroupJoiner:
    return GroupJoiner(
        invite,
        own_peer_id=bob.peer_id,
        own_identity_key=bob.identity_key,
        own_card=bob.card,
        now=now,
    )


def family_log(admin: Person, *others: Person) -> GroupLog:
    log, _ = GroupLog.create(
        admin.keys.identity_signing_key, "Family", "", T0, display_name=admin.card.display_name
    )
    for index, other in enumerate(others):
        log.author_op(
            admin.keys.identity_signing_key,
            Add(member=other.identity_key, display_name=other.card.display_name),
            T0 + 1 + index,
        )
    return log


def encoded_ops(log: GroupLog) -> list[bytes]:
    return [encode_signed_op(op) for op in log.ops()]


def exchange(
    joiner: GroupJoiner,
    inviter: GroupInviter,
    secret: GroupInviteSecret,
    answer: Admitted | Waiting,
) -> JoinOutcome:
    inviter.receive_hello(joiner.hello())
    checked = inviter.check(secret)
    assert isinstance(checked, JoinedContact)
    outcome = joiner.receive_reply(inviter.reply(answer))
    inviter.receive_done(joiner.done())
    return outcome


# -- the machines ----------------------------------------------------------------------------


def test_an_admitted_joiner_gets_the_log_the_cards_and_the_verified_admin() -> None:
    alice, bob, carol = person("Alice"), person("Bob"), person("Carol")
    log = family_log(alice, carol)
    invite = group_invite(alice)
    joiner = joiner_for(bob, invite)
    inviter = GroupInviter(own_peer_id=alice.peer_id, joiner_peer_id=bob.peer_id)

    hello = inviter.receive_hello(joiner.hello())
    assert hello.invite_id == invite.invite_id and hello.identity_key == bob.identity_key
    checked = inviter.check(GroupInviteSecret(invite.secret))
    assert isinstance(checked, JoinedContact)
    assert checked.identity_key == bob.identity_key and checked.peer_id == bob.peer_id
    assert inviter.joiner == checked

    answer = Admitted(
        card=alice.card, group_id=log.group_id, ops=encoded_ops(log), cards=[carol.member_card()]
    )
    outcome = joiner.receive_reply(inviter.reply(answer))
    assert outcome.admitted and outcome.group_id == log.group_id
    assert outcome.group_name == "Family"
    assert list(outcome.ops) == encoded_ops(log)
    assert outcome.cards == (carol.member_card(),)
    assert outcome.inviter.identity_key == alice.identity_key
    assert outcome.inviter.devices.peer_ids() == [alice.peer_id]
    inviter.receive_done(joiner.done())


def test_a_waiting_joiner_gets_the_group_id_and_the_verified_admin_only() -> None:
    alice, bob = person("Alice"), person("Bob")
    invite = group_invite(alice)
    group_id = family_log(alice).group_id
    outcome = exchange(
        joiner_for(bob, invite),
        GroupInviter(own_peer_id=alice.peer_id, joiner_peer_id=bob.peer_id),
        GroupInviteSecret(invite.secret),
        Waiting(card=alice.card, group_id=group_id),
    )
    assert not outcome.admitted
    assert outcome.group_id == group_id and outcome.ops == () and outcome.cards == ()
    assert outcome.inviter.identity_key == alice.identity_key


def test_the_wire_proof_length_is_the_crypto_one() -> None:
    assert wire.PROOF_BYTES == PROOF_BYTES


def checked_against(
    hello_from: Person, speaking: str, invite: Invite, secret: GroupInviteSecret, inviter_id: str
) -> JoinedContact | RefusalReason:
    inviter = GroupInviter(own_peer_id=inviter_id, joiner_peer_id=speaking)
    inviter.receive_hello(joiner_for(hello_from, invite).hello())
    return inviter.check(secret)


def test_a_wrong_secret_is_refused_as_bad_proof() -> None:
    alice, bob = person("Alice"), person("Bob")
    invite, other = group_invite(alice), group_invite(alice)
    result = checked_against(
        bob, bob.peer_id, invite, GroupInviteSecret(other.secret), alice.peer_id
    )
    assert result is RefusalReason.BAD_PROOF


def test_a_hello_replayed_from_another_peer_id_is_refused_as_bad_proof() -> None:
    """Mallory replays Bob's hello (his card, his proof) from her own device."""
    alice, bob, mallory = person("Alice"), person("Bob"), person("Mallory")
    invite = group_invite(alice)
    result = checked_against(
        bob, mallory.peer_id, invite, GroupInviteSecret(invite.secret), alice.peer_id
    )
    assert result is RefusalReason.BAD_PROOF


def test_a_proof_is_bound_to_the_inviter_device() -> None:
    alice, bob = person("Alice"), person("Bob")
    alices_other_device = IdentityKeys(
        alice.keys.identity_seed, IdentityKeys.generate().device_seed
    )
    invite = group_invite(alice)
    result = checked_against(
        bob, bob.peer_id, invite, GroupInviteSecret(invite.secret), alices_other_device.peer_id
    )
    assert result is RefusalReason.BAD_PROOF


def test_a_joiner_card_signed_by_another_identity_is_refused() -> None:
    alice, mallory = person("Alice"), person("Mallory")
    forged_bob = person("Bob", signer=mallory.keys)
    invite = group_invite(alice)
    result = checked_against(
        forged_bob, forged_bob.peer_id, invite, GroupInviteSecret(invite.secret), alice.peer_id
    )
    assert result is RefusalReason.BAD_CARD


def test_a_joiner_card_not_listing_the_speaking_device_is_refused() -> None:
    alice = person("Alice")
    bob = person("Bob", listed=IdentityKeys.generate())  # his list names some other device
    invite = group_invite(alice)
    result = checked_against(
        bob, bob.peer_id, invite, GroupInviteSecret(invite.secret), alice.peer_id
    )
    assert result is RefusalReason.BAD_CARD


def test_an_unusable_invite_is_told_only_to_a_joiner_whose_proof_holds() -> None:
    alice, bob = person("Alice"), person("Bob")
    invite, other = group_invite(alice), group_invite(alice)
    for reason in (RefusalReason.EXPIRED, RefusalReason.USED_UP):
        spent = GroupInviteSecret(invite.secret, unusable=reason)
        assert checked_against(bob, bob.peer_id, invite, spent, alice.peer_id) is reason
        guessing = GroupInviteSecret(invite.secret, unusable=reason)
        wrong = checked_against(bob, bob.peer_id, other, guessing, alice.peer_id)
        assert wrong is RefusalReason.BAD_PROOF


@pytest.mark.parametrize(
    ("kind", "text"),
    [
        (InviteKind.CONTACT, "contact invite"),
        (InviteKind.DEVICE_LINK, "device link invite"),
        (InviteKind.KIOSK, "kiosk invite"),
    ],
)
def test_the_joiner_takes_only_group_invites(kind: InviteKind, text: str) -> None:
    alice, bob = person("Alice"), person("Bob")
    with pytest.raises(GroupJoinInviteError, match=f"this is a {text}, not a group invite"):
        joiner_for(bob, group_invite(alice, kind=kind))


def test_the_joiner_refuses_a_forged_or_expired_invite_before_any_hello() -> None:
    alice, bob, mallory = person("Alice"), person("Bob"), person("Mallory")
    with pytest.raises(GroupJoinInviteError, match="signature does not match"):
        joiner_for(bob, forged_invite(alice, mallory))
    with pytest.raises(GroupJoinInviteError, match="expired"):
        joiner_for(bob, group_invite(alice), now=NOW + 600)


def answered(
    bob: Person, invite: Invite, secret: bytes, inviter_id: str, answer: Admitted | Waiting
) -> tuple[GroupJoiner, bytes]:
    """A joiner that sent its hello and the inviter's reply, made with `secret` on `inviter_id`."""
    joiner = joiner_for(bob, invite)
    inviter = GroupInviter(own_peer_id=inviter_id, joiner_peer_id=bob.peer_id)
    inviter.receive_hello(joiner.hello())
    assert isinstance(inviter.check(GroupInviteSecret(secret)), JoinedContact)
    return joiner, inviter.reply(answer)


def test_the_joiner_refuses_an_inviter_that_does_not_know_the_secret() -> None:
    alice, bob = person("Alice"), person("Bob")
    invite, other = group_invite(alice), group_invite(alice)
    log = family_log(alice)
    joiner = joiner_for(bob, invite)
    joiner.hello()
    # An inviter guessing: it answers Bob's hello as if its own secret were the invite's.
    inviter = GroupInviter(own_peer_id=alice.peer_id, joiner_peer_id=bob.peer_id)
    inviter.receive_hello(joiner_for(bob, other).hello())
    assert isinstance(inviter.check(GroupInviteSecret(other.secret)), JoinedContact)
    reply = inviter.reply(Waiting(card=alice.card, group_id=log.group_id))
    with pytest.raises(GroupJoinProtocolError, match="proof does not match"):
        joiner.receive_reply(reply)


@pytest.mark.parametrize("admitted", [True, False], ids=["welcome", "waiting"])
def test_the_joiner_refuses_an_admin_card_signed_by_another_identity(admitted: bool) -> None:
    alice, bob, mallory = person("Alice"), person("Bob"), person("Mallory")
    invite, log = group_invite(alice), family_log(alice)
    answer: Admitted | Waiting = (
        Admitted(card=mallory.card, group_id=log.group_id, ops=encoded_ops(log), cards=[])
        if admitted
        else Waiting(card=mallory.card, group_id=log.group_id)
    )
    joiner, reply = answered(bob, invite, invite.secret, alice.peer_id, answer)
    with pytest.raises(GroupJoinProtocolError, match="not signed by this identity"):
        joiner.receive_reply(reply)


def test_the_joiner_refuses_an_admin_card_not_listing_the_speaking_device() -> None:
    """Alice's genuine card that lists only her other device, not the one the invite names."""
    alice = person("Alice")
    other_device = IdentityKeys(alice.keys.identity_seed, IdentityKeys.generate().device_seed)
    elsewhere = person("Alice", keys=alice.keys, listed=other_device)
    bob, invite, log = person("Bob"), group_invite(alice), family_log(alice)
    joiner, reply = answered(
        bob,
        invite,
        invite.secret,
        alice.peer_id,
        Waiting(card=elsewhere.card, group_id=log.group_id),
    )
    with pytest.raises(GroupJoinProtocolError, match="does not include the device speaking"):
        joiner.receive_reply(reply)


EXPECTED_TEXT = {
    RefusalReason.UNKNOWN_INVITE: "does not know this invite",
    RefusalReason.EXPIRED: "has expired",
    RefusalReason.USED_UP: "used up",
    RefusalReason.BAD_PROOF: "refused the proof",
    RefusalReason.BAD_CARD: "refused this node's contact card",
    RefusalReason.REFUSED: "admin refused the join",
    RefusalReason.GROUP_FULL: "group is full",
    RefusalReason.BUSY: "busy; try again",
}


@pytest.mark.parametrize("reason", list(RefusalReason))
def test_every_refusal_reaches_the_joiner_with_a_clear_message(reason: RefusalReason) -> None:
    alice, bob = person("Alice"), person("Bob")
    joiner = joiner_for(bob, group_invite(alice))
    joiner.hello()
    with pytest.raises(GroupJoinRefusedError) as refused:
        joiner.receive_reply(GroupInviter.refuse(reason))
    assert refused.value.reason is reason
    assert EXPECTED_TEXT[reason] in str(refused.value) == refusal_text(reason)
    with pytest.raises(RuntimeError):
        joiner.done()  # nothing to confirm after a refusal


def test_refusal_texts_are_distinct() -> None:
    assert len({refusal_text(reason) for reason in RefusalReason}) == len(RefusalReason)


# -- frames out of order ---------------------------------------------------------------------


def all_frames(alice: Person, bob: Person, invite: Invite) -> dict[str, bytes]:
    log = family_log(alice)
    _, welcome = answered(
        bob,
        invite,
        invite.secret,
        alice.peer_id,
        Admitted(card=alice.card, group_id=log.group_id, ops=encoded_ops(log), cards=[]),
    )
    _, waiting = answered(
        bob, invite, invite.secret, alice.peer_id, Waiting(card=alice.card, group_id=log.group_id)
    )
    return {
        "hello": joiner_for(bob, invite).hello(),
        "welcome": welcome,
        "waiting": waiting,
        "refused": GroupInviter.refuse(RefusalReason.REFUSED),
        "done": encode_message(GroupJoinDone()),
    }


@pytest.mark.parametrize("wrong", ["welcome", "waiting", "refused", "done"])
def test_the_inviter_takes_only_a_hello_first(wrong: str) -> None:
    alice, bob = person("Alice"), person("Bob")
    frames = all_frames(alice, bob, group_invite(alice))
    inviter = GroupInviter(own_peer_id=alice.peer_id, joiner_peer_id=bob.peer_id)
    with pytest.raises(GroupJoinProtocolError, match="expected hello"):
        inviter.receive_hello(frames[wrong])


@pytest.mark.parametrize("wrong", ["hello", "welcome", "waiting", "refused", "done"])
def test_the_inviter_takes_only_a_done_after_its_reply(wrong: str) -> None:
    alice, bob = person("Alice"), person("Bob")
    invite = group_invite(alice)
    frames = all_frames(alice, bob, invite)
    inviter = GroupInviter(own_peer_id=alice.peer_id, joiner_peer_id=bob.peer_id)
    # Before its reply, even a done is out of order.
    with pytest.raises(GroupJoinProtocolError, match="no done expected"):
        inviter.receive_done(frames["done"])
    inviter.receive_hello(frames["hello"])
    with pytest.raises(GroupJoinProtocolError, match="hello already received"):
        inviter.receive_hello(frames["hello"])
    with pytest.raises(GroupJoinProtocolError, match="no done expected"):
        inviter.receive_done(frames["done"])
    assert isinstance(inviter.check(GroupInviteSecret(invite.secret)), JoinedContact)
    inviter.reply(Waiting(card=alice.card, group_id=bytes(32)))
    if wrong == "done":
        inviter.receive_done(frames["done"])
        with pytest.raises(GroupJoinProtocolError, match="no done expected"):
            inviter.receive_done(frames["done"])  # a second one
    else:
        with pytest.raises(GroupJoinProtocolError, match="expected done"):
            inviter.receive_done(frames[wrong])


@pytest.mark.parametrize("wrong", ["hello", "done"])
def test_the_joiner_takes_only_a_reply_after_its_hello(wrong: str) -> None:
    alice, bob = person("Alice"), person("Bob")
    invite = group_invite(alice)
    frames = all_frames(alice, bob, invite)
    joiner = joiner_for(bob, invite)
    with pytest.raises(GroupJoinProtocolError, match="no reply expected"):
        joiner.receive_reply(frames["welcome"])  # before its hello
    joiner.hello()
    with pytest.raises(GroupJoinProtocolError, match="expected a welcome, waiting or refused"):
        joiner.receive_reply(frames[wrong])
    with pytest.raises(GroupJoinProtocolError, match="no reply expected"):
        joiner.receive_reply(frames["welcome"])  # a failed join stays failed


def test_the_joiner_takes_one_reply_only() -> None:
    alice, bob = person("Alice"), person("Bob")
    invite = group_invite(alice)
    frames = all_frames(alice, bob, invite)
    joiner = joiner_for(bob, invite)
    joiner.hello()
    assert joiner.receive_reply(frames["waiting"]).admitted is False
    with pytest.raises(GroupJoinProtocolError, match="no reply expected"):
        joiner.receive_reply(frames["welcome"])
    joiner.done()
    with pytest.raises(RuntimeError):
        joiner.done()
    with pytest.raises(RuntimeError):
        joiner.hello()


def test_the_inviter_machine_refuses_misuse() -> None:
    alice, bob = person("Alice"), person("Bob")
    invite = group_invite(alice)
    inviter = GroupInviter(own_peer_id=alice.peer_id, joiner_peer_id=bob.peer_id)
    with pytest.raises(RuntimeError):
        inviter.check(GroupInviteSecret(invite.secret))
    inviter.receive_hello(joiner_for(bob, invite).hello())
    with pytest.raises(RuntimeError):
        inviter.reply(Waiting(card=alice.card, group_id=bytes(32)))  # not checked
    assert inviter.check(GroupInviteSecret(bytes(16))) is RefusalReason.BAD_PROOF
    with pytest.raises(RuntimeError):
        inviter.reply(Waiting(card=alice.card, group_id=bytes(32)))  # refused


# -- malformed and oversized frames ----------------------------------------------------------


def hello_fields(bob: Person, invite: Invite) -> dict[str, object]:
    hello = decode_message(joiner_for(bob, invite).hello())
    assert isinstance(hello, GroupJoinHello)
    return {
        "type": "hello",
        "invite_id": hello.invite_id,
        "identity_key": hello.identity_key,
        "proof": hello.proof,
        "card": msgspec.to_builtins(hello.card),
    }


@pytest.mark.parametrize(
    ("change", "why"),
    [
        ({"invite_id": bytes(15)}, "invite_id"),
        ({"identity_key": bytes(33)}, "identity_key"),
        ({"proof": bytes(31)}, "proof"),
        ({"proof": "not bytes"}, "proof"),
        ({"type": "welcome!"}, "Invalid value 'welcome!'"),
        ({"card": None}, "card"),
    ],
)
def test_malformed_hellos_are_protocol_errors(change: dict[str, object], why: str) -> None:
    alice, bob = person("Alice"), person("Bob")
    fields = hello_fields(bob, group_invite(alice)) | change
    inviter = GroupInviter(own_peer_id=alice.peer_id, joiner_peer_id=bob.peer_id)
    with pytest.raises(GroupJoinProtocolError, match="malformed group-join message") as error:
        inviter.receive_hello(msgspec.msgpack.encode(fields))
    assert why in str(error.value)


def test_a_hello_with_invalid_utf8_is_a_protocol_error() -> None:
    alice, bob = person("Alice"), person("Bob")
    frame = joiner_for(bob, group_invite(alice)).hello()
    name = msgspec.msgpack.encode("Bob")
    assert frame.count(name) == 1
    tampered = frame.replace(name, bytes([0xA3, 0xFF, 0xFE, 0xFD]))
    inviter = GroupInviter(own_peer_id=alice.peer_id, joiner_peer_id=bob.peer_id)
    with pytest.raises(GroupJoinProtocolError, match="malformed"):
        inviter.receive_hello(tampered)


def welcome(
    *,
    ops: list[bytes] | None = None,
    cards: list[MemberCard] | None = None,
    card: ContactCard | None = None,
) -> GroupJoinWelcome:
    return GroupJoinWelcome(
        proof=bytes(32),
        card=card or person("Alice").card,
        group_id=bytes(32),
        ops=[b"op"] if ops is None else ops,
        cards=cards or [],
    )


def padded_list(padding: int) -> SignedDeviceList:
    return SignedDeviceList(body=b"x" * padding, signature=bytes(64))


def sized(make: Callable[[SignedDeviceList], CardT], size: int) -> CardT:
    """A card whose encoding is exactly `size` bytes (>= 1 KiB): the wire does not look inside
    the device list, so a padded one will do."""
    overhead = len(msgspec.msgpack.encode(make(padded_list(1024)))) - 1024
    made = make(padded_list(size - overhead))
    assert len(msgspec.msgpack.encode(made)) == size
    return made


def member_card_of(size: int) -> MemberCard:
    return sized(lambda devices: MemberCard(display_name="M", device_list=devices), size)


def contact_card_of(size: int) -> ContactCard:
    return sized(lambda devices: ContactCard(display_name="A", device_list=devices), size)


def unchecked(message: msgspec.Struct) -> bytes:
    return msgspec.msgpack.encode(message)


@pytest.mark.parametrize(
    ("message", "why"),
    [
        (welcome(ops=[b"o"] * (MAX_OPS + 1)), f"length <= {MAX_OPS}"),
        (welcome(ops=[b"o" * (MAX_OP_BYTES + 1)]), f"length <= {MAX_OP_BYTES}"),
        (welcome(ops=[]), "length >= 1"),
        (welcome(ops=[b""]), "length >= 1"),
        (
            welcome(cards=[member_card_of(1024)] * (MAX_CARDS + 1)),
            f"length <= {MAX_CARDS}",
        ),
        (
            welcome(cards=[member_card_of(1024), member_card_of(MAX_MEMBER_CARD_BYTES + 1)]),
            "member card 2 is over",
        ),
        (welcome(card=contact_card_of(MAX_CARD_BYTES + 1)), "contact card is at most"),
    ],
    ids=["ops", "op size", "no ops", "empty op", "cards", "card size", "admin card size"],
)
def test_welcomes_over_the_bounds_are_refused_both_ways(
    message: GroupJoinWelcome, why: str
) -> None:
    with pytest.raises(msgspec.ValidationError, match=why):
        encode_message(message)
    with pytest.raises(msgspec.ValidationError, match=why):
        decode_message(unchecked(message))


def test_a_hello_over_its_frame_bound_is_refused_both_ways() -> None:
    alice = person("Alice")
    big = contact_card_of(MAX_CARD_BYTES)
    hello = GroupJoinHello(invite_id=bytes(16), identity_key=bytes(32), proof=bytes(32), card=big)
    assert len(encode_message(hello)) <= MAX_HELLO_FRAME_BYTES
    bob = Person(IdentityKeys.generate(), contact_card_of(MAX_CARD_BYTES + 1))
    with pytest.raises(GroupJoinError, match="cannot be sent: a contact card is at most"):
        joiner_for(bob, group_invite(alice)).hello()


def test_the_largest_welcome_fits_the_frame() -> None:
    largest = GroupJoinWelcome(
        proof=bytes(32),
        card=contact_card_of(MAX_CARD_BYTES),
        group_id=bytes(32),
        ops=[b"o" * MAX_OP_BYTES] * MAX_OPS,
        cards=[member_card_of(MAX_MEMBER_CARD_BYTES)] * MAX_CARDS,
    )
    frame = encode_message(largest)
    assert MAX_FRAME_BYTES - 1024 < len(frame) <= MAX_FRAME_BYTES
    assert decode_message(frame) == largest


def test_the_inviter_cannot_reply_with_a_welcome_over_the_bounds() -> None:
    alice, bob = person("Alice"), person("Bob")
    invite = group_invite(alice)
    inviter = GroupInviter(own_peer_id=alice.peer_id, joiner_peer_id=bob.peer_id)
    inviter.receive_hello(joiner_for(bob, invite).hello())
    assert isinstance(inviter.check(GroupInviteSecret(invite.secret)), JoinedContact)
    too_long = Admitted(card=alice.card, group_id=bytes(32), ops=[b"o"] * (MAX_OPS + 1), cards=[])
    with pytest.raises(ValueError, match=f"length <= {MAX_OPS}"):
        inviter.reply(too_long)
    # Still in a state to answer otherwise.
    inviter.reply(Waiting(card=alice.card, group_id=bytes(32)))


ALICE, BOB = person("Alice"), person("Bob")
INVITE = group_invite(ALICE)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400))
def test_arbitrary_bytes_raise_only_protocol_errors(data: bytes) -> None:
    inviter = GroupInviter(own_peer_id="a", joiner_peer_id="b")
    try:
        hello = inviter.receive_hello(data)
    except GroupJoinProtocolError:
        pass
    else:
        assert isinstance(hello, GroupJoinHello)
    joiner = GroupJoiner(
        INVITE,
        own_peer_id=BOB.peer_id,
        own_identity_key=BOB.identity_key,
        own_card=BOB.card,
        now=NOW,
    )
    joiner.hello()
    with pytest.raises((GroupJoinProtocolError, GroupJoinRefusedError)):
        joiner.receive_reply(data)


def test_a_flipped_bit_in_a_welcome_is_caught_or_harmless() -> None:
    log = family_log(ALICE)
    answer = Admitted(card=ALICE.card, group_id=log.group_id, ops=encoded_ops(log), cards=[])
    _, reply = answered(BOB, INVITE, INVITE.secret, ALICE.peer_id, answer)
    original = decode_message(reply)
    assert isinstance(original, GroupJoinWelcome)
    outcomes = set()
    for index in range(len(reply)):
        tampered = bytearray(reply)
        tampered[index] ^= 0x01
        joiner = joiner_for(BOB, INVITE)
        joiner.hello()
        try:
            outcome = joiner.receive_reply(bytes(tampered))
        except (GroupJoinProtocolError, GroupJoinRefusedError):
            outcomes.add("caught")
            continue
        # What survives is what the protocol leaves to others: the ops (the GroupLog checks
        # their signatures), the group id (checked against the genesis), unsigned card fields.
        assert outcome.inviter.identity_key == ALICE.identity_key
        outcomes.add("passed on")
    assert "caught" in outcomes


# -- over the network ------------------------------------------------------------------------


@dataclass
class Invitation:
    secret: bytes
    group: GroupLog
    uses: int = 1
    approval: bool = False
    refuse: bool = False
    extra_ops: int = 0  # padding ops sent beyond the log (to overflow the welcome)


@dataclass
class MemoryBackend:
    """Invites and joins held in memory; `hold` (if set) stalls `admit` until it is set."""

    admin: Person
    members: dict[bytes, Person] = field(default_factory=dict)
    invites: dict[bytes, Invitation] = field(default_factory=dict)
    lookups: list[bytes] = field(default_factory=list)
    admitted: list[JoinedContact] = field(default_factory=list)
    requests: list[JoinedContact] = field(default_factory=list)
    hold: trio.Event | None = None
    holding: trio.Event = field(default_factory=trio.Event)

    def offer(
        self,
        invite: Invite,
        group: GroupLog,
        *,
        uses: int = 1,
        approval: bool = False,
        refuse: bool = False,
        extra_ops: int = 0,
    ) -> None:
        self.invites[invite.invite_id] = Invitation(
            invite.secret, group, uses=uses, approval=approval, refuse=refuse, extra_ops=extra_ops
        )

    async def lookup(self, invite_id: bytes) -> GroupInviteSecret | RefusalReason:
        self.lookups.append(invite_id)
        invitation = self.invites.get(invite_id)
        if invitation is None:
            return RefusalReason.UNKNOWN_INVITE
        unusable = RefusalReason.USED_UP if invitation.uses <= 0 else None
        return GroupInviteSecret(invitation.secret, unusable=unusable)

    async def admit(
        self, invite_id: bytes, joiner: JoinedContact
    ) -> Admitted | Waiting | RefusalReason:
        if self.hold is not None:
            self.holding.set()
            await self.hold.wait()
        invitation = self.invites[invite_id]
        if invitation.refuse:
            return RefusalReason.REFUSED
        invitation.uses -= 1
        if invitation.approval:
            self.requests.append(joiner)
            return Waiting(card=self.admin.card, group_id=invitation.group.group_id)
        invitation.group.author_op(
            self.admin.keys.identity_signing_key,
            Add(member=joiner.identity_key, display_name=joiner.display_name),
            T0 + 100,
        )
        self.admitted.append(joiner)
        ops = encoded_ops(invitation.group) + [b"pad"] * invitation.extra_ops
        return Admitted(
            card=self.admin.card,
            group_id=invitation.group.group_id,
            ops=ops,
            cards=[member.member_card() for member in self.members.values()],
        )


@dataclass
class Served:
    """A GroupJoinServer counting the streams it handled."""

    server: GroupJoinServer
    started: int = 0
    finished: int = 0
    all_finished: trio.Event = field(default_factory=trio.Event)
    expected: int = 1

    async def handle(self, stream: Stream) -> None:
        self.started += 1
        try:
            await self.server.handle(stream)
        finally:
            self.finished += 1
            if self.finished >= self.expected:
                self.all_finished.set()


@asynccontextmanager
async def hosts(alice: Person, bob: Person) -> AsyncIterator[tuple[NetHost, NetHost]]:
    async with (
        NetHost.open(alice.keys.device_seed, LOOPBACK) as admin_host,
        NetHost.open(bob.keys.device_seed, LOOPBACK) as joiner_host,
    ):
        assert admin_host.peer_id == alice.peer_id and joiner_host.peer_id == bob.peer_id
        joiner_host.add_addrs(admin_host.peer_id, admin_host.listen_addrs())
        yield admin_host, joiner_host


def serve(admin_host: NetHost, backend: MemoryBackend, expected: int = 1, **options: int) -> Served:
    served = Served(
        GroupJoinServer(backend, own_peer_id=admin_host.peer_id, **options), expected=expected
    )
    admin_host.set_stream_handler(PROTOCOL_ID, served.handle)
    return served


def real_invite(alice: Person) -> Invite:
    return group_invite(alice, now=int(time.time()))


async def join(joiner_host: NetHost, bob: Person, invite: Invite) -> JoinOutcome:
    with trio.fail_after(NET_TIMEOUT):
        return await join_group(joiner_host, invite, bob.identity_key, bob.card)


async def test_a_joiner_is_admitted_over_the_network() -> None:
    alice, bob, carol = person("Alice"), person("Bob"), person("Carol")
    backend = MemoryBackend(alice, members={carol.identity_key: carol})
    group = family_log(alice, carol)
    invite = real_invite(alice)
    backend.offer(invite, group)
    async with hosts(alice, bob) as (admin_host, joiner_host):
        served = serve(admin_host, backend)
        outcome = await join(joiner_host, bob, invite)
        with trio.fail_after(NET_TIMEOUT):
            await served.all_finished.wait()
    assert outcome.admitted and outcome.group_id == group.group_id
    assert outcome.inviter.identity_key == alice.identity_key
    assert outcome.cards == (carol.member_card(),)
    [joined] = backend.admitted
    assert joined.identity_key == bob.identity_key and joined.peer_id == bob.peer_id
    # The joiner's copy of the log replays to a group it is a member of.
    signed = [decode_signed_op(op) for op in outcome.ops]
    replayed = GroupLog.from_genesis(signed[0])
    replayed.add_all(signed[1:])
    assert replayed.group_id == outcome.group_id
    assert replayed.state.is_member(bob.identity_key)
    assert replayed.heads == group.heads


async def test_a_joiner_waits_for_approval_over_the_network() -> None:
    alice, bob = person("Alice"), person("Bob")
    backend = MemoryBackend(alice)
    invite = real_invite(alice)
    group = family_log(alice)
    backend.offer(invite, group, approval=True)
    async with hosts(alice, bob) as (admin_host, joiner_host):
        served = serve(admin_host, backend)
        outcome = await join(joiner_host, bob, invite)
        with trio.fail_after(NET_TIMEOUT):
            await served.all_finished.wait()
    assert not outcome.admitted and outcome.ops == ()
    assert outcome.group_id == group.group_id
    assert [request.identity_key for request in backend.requests] == [bob.identity_key]
    assert backend.admitted == [] and len(group) == 1


@pytest.mark.parametrize(
    ("setup", "reason"),
    [
        (lambda backend, invite, group: None, RefusalReason.UNKNOWN_INVITE),
        (
            lambda backend, invite, group: backend.offer(invite, group, uses=0),
            RefusalReason.USED_UP,
        ),
        (
            lambda backend, invite, group: backend.offer(invite, group, refuse=True),
            RefusalReason.REFUSED,
        ),
    ],
    ids=["unknown", "used up", "refused"],
)
async def test_refusals_over_the_network(
    setup: Callable[[MemoryBackend, Invite, GroupLog], object], reason: RefusalReason
) -> None:
    alice, bob = person("Alice"), person("Bob")
    backend = MemoryBackend(alice)
    invite, group = real_invite(alice), family_log(alice)
    setup(backend, invite, group)
    async with hosts(alice, bob) as (admin_host, joiner_host):
        serve(admin_host, backend)
        with pytest.raises(GroupJoinRefusedError) as refused:
            await join(joiner_host, bob, invite)
    assert refused.value.reason is reason
    assert EXPECTED_TEXT[reason] in str(refused.value)
    assert backend.admitted == [] and len(group) == 1


async def test_a_single_use_invite_admits_once() -> None:
    alice, bob, carol = person("Alice"), person("Bob"), person("Carol")
    backend = MemoryBackend(alice)
    invite, group = real_invite(alice), family_log(alice)
    backend.offer(invite, group)
    async with (
        NetHost.open(alice.keys.device_seed, LOOPBACK) as admin_host,
        NetHost.open(bob.keys.device_seed, LOOPBACK) as bob_host,
        NetHost.open(carol.keys.device_seed, LOOPBACK) as carol_host,
    ):
        for host in (bob_host, carol_host):
            host.add_addrs(admin_host.peer_id, admin_host.listen_addrs())
        serve(admin_host, backend)
        assert (await join(bob_host, bob, invite)).admitted
        with pytest.raises(GroupJoinRefusedError, match="used up"):
            await join(carol_host, carol, invite)
    assert [joined.identity_key for joined in backend.admitted] == [bob.identity_key]


async def test_a_forged_invite_is_refused_before_anything_is_sent() -> None:
    alice, bob, mallory = person("Alice"), person("Bob"), person("Mallory")
    backend = MemoryBackend(alice)
    forged = forged_invite(alice, mallory)
    backend.offer(forged, family_log(alice))
    contact_invite = group_invite(alice, kind=InviteKind.CONTACT)
    async with hosts(alice, bob) as (admin_host, joiner_host):
        served = serve(admin_host, backend)
        with pytest.raises(GroupJoinInviteError, match="signature does not match"):
            await join(joiner_host, bob, forged)
        with pytest.raises(GroupJoinInviteError, match="not a group invite"):
            await join(joiner_host, bob, contact_invite)
        assert not joiner_host.is_connected(admin_host.peer_id)
    assert served.started == 0 and backend.lookups == []


async def test_a_welcome_over_the_bounds_turns_into_waiting() -> None:
    """Admitted, but the log does not fit a welcome: the joiner is told to wait for the group
    over /p2pid/msg/1 rather than given a frame it would refuse."""
    alice, bob = person("Alice"), person("Bob")
    backend = MemoryBackend(alice)
    invite, group = real_invite(alice), family_log(alice)
    backend.offer(invite, group, extra_ops=MAX_OPS)
    async with hosts(alice, bob) as (admin_host, joiner_host):
        serve(admin_host, backend)
        outcome = await join(joiner_host, bob, invite)
    assert not outcome.admitted and outcome.group_id == group.group_id
    assert [joined.identity_key for joined in backend.admitted] == [bob.identity_key]


async def test_a_busy_server_refuses_more_joins_than_it_serves_at_once() -> None:
    alice, bob, carol = person("Alice"), person("Bob"), person("Carol")
    backend = MemoryBackend(alice, hold=trio.Event())
    invite, group = real_invite(alice), family_log(alice)
    backend.offer(invite, group, uses=2)
    outcomes: list[JoinOutcome] = []
    async with (
        NetHost.open(alice.keys.device_seed, LOOPBACK) as admin_host,
        NetHost.open(bob.keys.device_seed, LOOPBACK) as bob_host,
        NetHost.open(carol.keys.device_seed, LOOPBACK) as carol_host,
    ):
        for host in (bob_host, carol_host):
            host.add_addrs(admin_host.peer_id, admin_host.listen_addrs())
        serve(admin_host, backend, max_concurrent=1)

        async def bob_joins() -> None:
            outcomes.append(await join(bob_host, bob, invite))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(bob_joins)
            with trio.fail_after(NET_TIMEOUT):
                await backend.holding.wait()
            with pytest.raises(GroupJoinRefusedError) as refused:
                await join(carol_host, carol, invite)
            assert refused.value.reason is RefusalReason.BUSY
            assert backend.hold is not None
            backend.hold.set()
        # Once Bob's join is through, Carol gets in.
        assert (await join(carol_host, carol, invite)).admitted
    assert [outcome.admitted for outcome in outcomes] == [True]
    assert len(backend.admitted) == 2


async def read_until_closed(framed: FramedStream) -> list[bytes]:
    frames: list[bytes] = []
    with trio.fail_after(NET_TIMEOUT):
        while True:
            try:
                frame = await framed.receive_or_end()
            except Exception:
                return frames
            if frame is None:
                return frames
            frames.append(frame)


@pytest.mark.parametrize(
    "payload",
    [
        pytest.param(encode_varint(MAX_HELLO_FRAME_BYTES + 1) + b"x" * 100, id="oversized"),
        pytest.param(encode_varint(5) + b"\xc1\xc1\xc1\xc1\xc1", id="malformed"),
        pytest.param(encode_varint(3) + b"abc", id="not msgpack"),
        pytest.param(encode_varint(100) + b"x" * 10, id="cut short"),
        pytest.param(
            encode_varint(len(encode_message(GroupJoinDone()))) + encode_message(GroupJoinDone()),
            id="done first",
        ),
    ],
)
async def test_bad_frames_close_the_stream_and_reach_no_backend(payload: bytes) -> None:
    alice, bob = person("Alice"), person("Bob")
    backend = MemoryBackend(alice)
    async with hosts(alice, bob) as (admin_host, joiner_host):
        served = serve(admin_host, backend)
        stream = await joiner_host.new_stream(admin_host.peer_id, [PROTOCOL_ID])
        await stream.write(payload)
        framed = FramedStream(stream, MAX_FRAME_BYTES)
        await framed.finish()
        assert await read_until_closed(framed) == []
        with trio.fail_after(NET_TIMEOUT):
            await served.all_finished.wait()
        await stream.close()
    assert backend.lookups == []


async def impostor(stream: Stream, reply: bytes) -> None:
    framed = FramedStream(stream, MAX_FRAME_BYTES)
    await framed.receive()
    await framed.send(reply)
    await stream.close()


async def test_the_joiner_raises_a_protocol_error_on_a_garbage_reply() -> None:
    alice, bob = person("Alice"), person("Bob")
    async with hosts(alice, bob) as (admin_host, joiner_host):
        admin_host.set_stream_handler(PROTOCOL_ID, lambda stream: impostor(stream, b"\xc1"))
        with pytest.raises(GroupJoinProtocolError, match="malformed"):
            await join(joiner_host, bob, real_invite(alice))


async def test_the_joiner_times_out_on_a_silent_inviter(monkeypatch: pytest.MonkeyPatch) -> None:
    alice, bob = person("Alice"), person("Bob")
    monkeypatch.setattr(group_join, "REPLY_TIMEOUT_SECONDS", 0.3)
    release = trio.Event()

    async def silent(stream: Stream) -> None:
        await release.wait()
        await stream.close()

    async with hosts(alice, bob) as (admin_host, joiner_host):
        admin_host.set_stream_handler(PROTOCOL_ID, silent)
        with pytest.raises(GroupJoinTimeoutError, match="stopped answering"):
            await join(joiner_host, bob, real_invite(alice))
        release.set()


async def test_the_joiner_reports_an_admin_device_without_the_protocol() -> None:
    alice, bob = person("Alice"), person("Bob")
    async with hosts(alice, bob) as (_, joiner_host):
        with pytest.raises(GroupJoinUnreachableError, match="cannot reach the group admin"):
            await join(joiner_host, bob, real_invite(alice))


async def test_the_joiner_reports_a_stream_cut_before_the_reply() -> None:
    alice, bob = person("Alice"), person("Bob")

    async def vanishing(stream: Stream) -> None:
        await FramedStream(stream, MAX_FRAME_BYTES).receive()
        await stream.reset()

    async with hosts(alice, bob) as (admin_host, joiner_host):
        admin_host.set_stream_handler(PROTOCOL_ID, vanishing)
        with pytest.raises(GroupJoinUnreachableError, match="broke off"):
            await join(joiner_host, bob, real_invite(alice))


def test_refused_frames_round_trip() -> None:
    for reason in RefusalReason:
        assert decode_message(encode_message(GroupJoinRefused(reason=reason))) == GroupJoinRefused(
            reason=reason
        )
    waiting = GroupJoinWaiting(proof=bytes(32), card=person("A").card, group_id=bytes(32))
    assert decode_message(encode_message(waiting)) == waiting
