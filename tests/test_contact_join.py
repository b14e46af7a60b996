"""The contact-join machines, driven with bytes in and bytes out: no network."""

from dataclasses import dataclass

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from p2pid.crypto.device_list import sign_device_list
from p2pid.crypto.identity import IdentityKeys
from p2pid.crypto.invites import new_invite
from p2pid.protocols.contact_join import (
    Inviter,
    Joiner,
    JoinProtocolError,
    JoinRefusedError,
)
from p2pid.wire.contact_join import JoinHello, RefusalReason, decode_message, encode_message
from p2pid.wire.invite import Invite, InviteKind
from p2pid.wire.records import ContactCard, DeviceEntry

NOW = 1_800_000_000


@dataclass
class Person:
    keys: IdentityKeys
    card: ContactCard

    @property
    def peer_id(self) -> str:
        return self.keys.peer_id


def person(
    name: str, keys: IdentityKeys | None = None, signer: IdentityKeys | None = None
) -> Person:
    keys = keys or IdentityKeys.generate()
    signer = signer or keys
    device = DeviceEntry(
        device_key=keys.device_public_key,
        olm_curve25519="c",
        olm_ed25519="e",
        name=f"{name}'s laptop",
        created_at=1,
    )
    devices = sign_device_list(signer.identity_signing_key, 1, 1, [device])
    return Person(keys, ContactCard(display_name=name, device_list=devices))


def invite_from(alice: Person) -> Invite:
    return new_invite(
        InviteKind.CONTACT,
        alice.keys.identity_signing_key,
        alice.keys.device_public_key,
        (),
        ttl_seconds=600,
        name="Alice",
        now=NOW,
    )


def joiner_for(bob: Person, invite: Invite) -> Joiner:
    return Joiner(
        invite,
        own_peer_id=bob.peer_id,
        own_identity_key=bob.keys.identity_public_key,
        own_card=bob.card,
    )


def test_join_gives_both_sides_the_verified_other() -> None:
    alice, bob = person("Alice"), person("Bob")
    invite = invite_from(alice)
    joiner = joiner_for(bob, invite)
    inviter = Inviter(own_peer_id=alice.peer_id, joiner_peer_id=bob.peer_id)

    hello = inviter.receive_hello(joiner.hello())
    admitted = inviter.admit(invite.secret)
    assert not isinstance(admitted, RefusalReason)
    assert admitted.identity_key == bob.keys.identity_public_key
    assert admitted.display_name == "Bob"
    assert hello.invite_id == invite.invite_id

    inviter_as_seen = joiner.receive_reply(
        inviter.welcome(inviter.welcome_proof(invite.secret), alice.card)
    )
    assert inviter_as_seen.identity_key == alice.keys.identity_public_key
    assert inviter_as_seen.devices.peer_ids() == [alice.peer_id]
    Inviter.receive_done(joiner.done())


def test_wrong_secret_is_refused_as_bad_proof() -> None:
    alice, bob = person("Alice"), person("Bob")
    invite, other = invite_from(alice), invite_from(alice)
    inviter = Inviter(own_peer_id=alice.peer_id, joiner_peer_id=bob.peer_id)
    inviter.receive_hello(joiner_for(bob, invite).hello())
    assert inviter.admit(other.secret) is RefusalReason.BAD_PROOF


def test_a_proof_is_bound_to_the_joiner_device() -> None:
    """Mallory replays Bob's hello from her own PeerId: the proof no longer matches."""
    alice, bob, mallory = person("Alice"), person("Bob"), person("Mallory")
    invite = invite_from(alice)
    inviter = Inviter(own_peer_id=alice.peer_id, joiner_peer_id=mallory.peer_id)
    inviter.receive_hello(joiner_for(bob, invite).hello())
    assert inviter.admit(invite.secret) is RefusalReason.BAD_PROOF


def test_a_proof_is_bound_to_the_inviter_device() -> None:
    alice, bob = person("Alice"), person("Bob")
    alices_other_device = IdentityKeys(
        alice.keys.identity_seed, IdentityKeys.generate().device_seed
    )
    invite = invite_from(alice)
    inviter = Inviter(own_peer_id=alices_other_device.peer_id, joiner_peer_id=bob.peer_id)
    inviter.receive_hello(joiner_for(bob, invite).hello())
    assert inviter.admit(invite.secret) is RefusalReason.BAD_PROOF


def test_a_card_signed_by_another_identity_is_refused() -> None:
    alice, mallory = person("Alice"), person("Mallory")
    forged_bob = person("Bob", signer=mallory.keys)
    invite = invite_from(alice)
    inviter = Inviter(own_peer_id=alice.peer_id, joiner_peer_id=forged_bob.peer_id)
    inviter.receive_hello(joiner_for(forged_bob, invite).hello())
    assert inviter.admit(invite.secret) is RefusalReason.BAD_CARD


def test_joiner_refuses_a_welcome_from_an_impostor_card() -> None:
    alice, bob, mallory = person("Alice"), person("Bob"), person("Mallory")
    invite = invite_from(alice)
    joiner = joiner_for(bob, invite)
    inviter = Inviter(own_peer_id=alice.peer_id, joiner_peer_id=bob.peer_id)
    inviter.receive_hello(joiner.hello())
    inviter.admit(invite.secret)
    with pytest.raises(JoinProtocolError, match="not signed by this identity"):
        joiner.receive_reply(inviter.welcome(inviter.welcome_proof(invite.secret), mallory.card))


def test_refusal_reaches_the_joiner_with_its_reason() -> None:
    alice, bob = person("Alice"), person("Bob")
    joiner = joiner_for(bob, invite_from(alice))
    joiner.hello()
    with pytest.raises(JoinRefusedError) as refused:
        joiner.receive_reply(Inviter.refuse(RefusalReason.SPENT))
    assert refused.value.reason is RefusalReason.SPENT
    assert "used up" in str(refused.value)


def test_out_of_order_messages_are_protocol_errors() -> None:
    alice, bob = person("Alice"), person("Bob")
    invite = invite_from(alice)
    joiner = joiner_for(bob, invite)
    with pytest.raises(JoinProtocolError):
        joiner.receive_reply(Inviter.refuse(RefusalReason.SPENT))  # before hello
    hello = joiner.hello()
    with pytest.raises(JoinProtocolError):
        joiner.receive_reply(hello)  # a hello where a welcome belongs
    inviter = Inviter(own_peer_id=alice.peer_id, joiner_peer_id=bob.peer_id)
    with pytest.raises(JoinProtocolError):
        inviter.receive_hello(Inviter.refuse(RefusalReason.SPENT))
    inviter.receive_hello(hello)
    with pytest.raises(JoinProtocolError):
        inviter.receive_hello(hello)  # a second hello on one stream


@settings(max_examples=200)
@given(st.binary(max_size=512))
def test_arbitrary_bytes_never_get_past_the_decoder_silently(data: bytes) -> None:
    inviter = Inviter(own_peer_id="a", joiner_peer_id="b")
    try:
        hello = inviter.receive_hello(data)
    except JoinProtocolError:
        return
    assert isinstance(hello, JoinHello)


def test_a_flipped_bit_in_a_hello_is_caught() -> None:
    alice, bob = person("Alice"), person("Bob")
    invite = invite_from(alice)
    hello = joiner_for(bob, invite).hello()
    outcomes = set()
    for index in range(len(hello)):
        tampered = bytearray(hello)
        tampered[index] ^= 0x01
        inviter = Inviter(own_peer_id=alice.peer_id, joiner_peer_id=bob.peer_id)
        try:
            inviter.receive_hello(bytes(tampered))
        except JoinProtocolError:
            outcomes.add("malformed")
            continue
        result = inviter.admit(invite.secret)
        if isinstance(result, RefusalReason):
            outcomes.add("refused")
            continue
        # The only flips that survive are inside fields nobody signed or proved: the display
        # name and the opaque Olm key strings of the card's unsigned part.
        original = decode_message(hello)
        assert isinstance(original, JoinHello)
        assert result.identity_key == original.joiner_identity_key
        assert encode_message(original) != bytes(tampered)
        outcomes.add("accepted-unsigned-field")
    assert "refused" in outcomes and "malformed" in outcomes


def test_card_records_round_trip_strictly() -> None:
    card = person("Bob").card
    assert msgspec.msgpack.decode(msgspec.msgpack.encode(card), type=ContactCard) == card
    with pytest.raises(msgspec.ValidationError):
        msgspec.msgpack.decode(msgspec.msgpack.encode({"display_name": 5}), type=ContactCard)
