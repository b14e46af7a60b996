"""Device linking: the link code and its crypto, the sans-IO machines of `/p2pid/device-link/1`
driven with bytes only, and the trio drivers over real NetHosts on 127.0.0.1."""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import msgspec
import nacl.public
import nacl.signing
import pytest
import trio
from hypothesis import given, settings
from hypothesis import strategies as st

from p2pid.crypto.device_link import (
    LinkCryptoError,
    LinkOffer,
    LinkTranscript,
    approver_proof,
    confirmation_code,
    new_device_proof,
    new_link_offer,
    seal,
    shared_secret,
    unseal,
    verify_link_invite,
)
from p2pid.crypto.device_list import sign_device_list
from p2pid.crypto.identity import IdentityKeys, peer_id_from_public_key
from p2pid.crypto.invites import (
    ExpiredInviteError,
    ForgedInviteError,
    InviteError,
    new_invite,
    verify_invite,
)
from p2pid.net.host import NetHost, Stream
from p2pid.protocols.device_link import (
    MAX_FAILED_HELLOS,
    ApproverInfo,
    Granted,
    LinkApprover,
    LinkError,
    LinkNewDevice,
    NewDeviceInfo,
    abort_frame,
    cancel_link,
    finish_link,
    open_link,
    serve_link,
)
from p2pid.protocols.framed import FramedStream
from p2pid.wire.device_link import (
    LINK_PROTOCOL,
    MAX_LINK_FRAME,
    MAX_SYNC_MESSAGES,
    LinkDone,
    LinkGrant,
    LinkHello,
    LinkReply,
    LinkSecrets,
    MessageCopy,
    SyncBatch,
    SyncEnd,
    decode_link_message,
    encode_link_message,
)
from p2pid.wire.framing import encode_varint
from p2pid.wire.invite import (
    AddressHint,
    InviteFormatError,
    InviteKind,
    decode_invite,
    encode_invite,
)
from p2pid.wire.records import DeviceEntry, DevicePrekeys, SignedDeviceList

NOW = 1_800_000_000
NOW_MS = NOW * 1000
LOOPBACK = ("/ip4/127.0.0.1/tcp/0",)
STEP_TIMEOUT = 20.0
CONFIRMATION = re.compile(r"\d{3} \d{3}")


# -- helpers -------------------------------------------------------------------------------------


@dataclass
class NewDevice:
    """A device being linked: its device key, Olm keys (opaque strings here) and its code."""

    seed: bytes
    offer: LinkOffer
    name: str = "laptop"

    @property
    def signing_key(self) -> nacl.signing.SigningKey:
        return nacl.signing.SigningKey(self.seed)

    @property
    def device_key(self) -> bytes:
        return bytes(self.signing_key.verify_key)

    @property
    def peer_id(self) -> str:
        return peer_id_from_public_key(self.device_key)

    @property
    def prekeys(self) -> DevicePrekeys:
        return DevicePrekeys(
            device_key=self.device_key, one_time_keys=["otk-1", "otk-2"], fallback_key="fb"
        )

    def machine(self, prekeys: DevicePrekeys | None = None) -> LinkNewDevice:
        return LinkNewDevice(
            self.offer,
            own_peer_id=self.peer_id,
            device_name=self.name,
            olm_curve25519=f"curve-{self.name}",
            olm_ed25519=f"ed-{self.name}",
            prekeys=prekeys or self.prekeys,
        )

    def entry(self) -> DeviceEntry:
        return DeviceEntry(
            device_key=self.device_key,
            olm_curve25519=f"curve-{self.name}",
            olm_ed25519=f"ed-{self.name}",
            name=self.name,
            created_at=NOW_MS,
        )


def new_device(ttl: int = 600, now: int = NOW, hints: tuple[AddressHint, ...] = ()) -> NewDevice:
    seed = os.urandom(32)
    offer = new_link_offer(nacl.signing.SigningKey(seed), hints, ttl, "laptop", now)
    return NewDevice(seed=seed, offer=offer)


def own_entry(keys: IdentityKeys, name: str = "phone") -> DeviceEntry:
    return DeviceEntry(
        device_key=keys.device_public_key,
        olm_curve25519=f"curve-{name}",
        olm_ed25519=f"ed-{name}",
        name=name,
        created_at=NOW_MS - 1000,
        capabilities=["messaging"],
    )


def approver_for(
    keys: IdentityKeys, device: NewDevice, *, own_peer_id: str | None = None
) -> LinkApprover:
    return LinkApprover(
        device.offer.invite,
        own_peer_id=own_peer_id or keys.peer_id,
        identity_key=keys.identity_public_key,
        identity_name="Alice",
    )


def secrets_for(
    keys: IdentityKeys,
    device: NewDevice,
    *,
    signer: IdentityKeys | None = None,
    seed: bytes | None = None,
    devices: list[DeviceEntry] | None = None,
) -> LinkSecrets:
    signed = sign_device_list(
        (signer or keys).identity_signing_key,
        2,
        NOW_MS,
        devices if devices is not None else [own_entry(keys), device.entry()],
    )
    return LinkSecrets(
        identity_seed=seed or keys.identity_seed,
        identity_name="Alice",
        device_list=signed,
        sibling_prekeys=[DevicePrekeys(device_key=keys.device_public_key, fallback_key="fb-a")],
        sibling_addrs={keys.peer_id: ["/ip4/127.0.0.1/tcp/4001"]},
    )


@dataclass
class Confirming:
    """Both machines at the point where the two screens show the confirmation code."""

    alice: IdentityKeys
    device: NewDevice
    approver: LinkApprover
    machine: LinkNewDevice
    shown_on_new_device: ApproverInfo
    new_device_as_seen: NewDeviceInfo


def to_confirmation(alice: IdentityKeys | None = None) -> Confirming:
    alice = alice or IdentityKeys.generate()
    device = new_device()
    approver, machine = approver_for(alice, device), device.machine()
    reply, info = machine.receive_hello(approver.hello(), alice.peer_id)
    seen = approver.receive_reply(reply)
    return Confirming(alice, device, approver, machine, info, seen)


def flipped(data: bytes, at: int, bit: int = 0x01) -> bytes:
    return data[:at] + bytes([data[at] ^ bit]) + data[at + 1 :]


def message_copy(number: int) -> MessageCopy:
    return MessageCopy(
        conversation_with=b"\xb0" * 32,
        message_id=number.to_bytes(16, "big"),
        sender_identity=b"\xb0" * 32,
        sender_device="12D3KooWbob",
        outgoing=False,
        body=f"message {number}",
        lamport=number + 1,
        sent_at=NOW_MS,
        received_at=NOW_MS,
        state="read",
    )


# -- the link code and its crypto -----------------------------------------------------------------


def test_a_link_code_is_signed_by_the_device_and_carries_the_ephemeral_key() -> None:
    hint = AddressHint.from_multiaddr("/ip4/192.168.1.20/tcp/4001")
    assert hint is not None
    device = new_device(hints=(hint,))
    invite = device.offer.invite
    assert invite.kind is InviteKind.DEVICE_LINK
    assert invite.device_key == device.device_key
    assert invite.identity_key == bytes(device.offer.ephemeral.public_key)
    assert invite.hints == (hint,) and invite.expires_at == NOW + 600
    assert len(device.offer.secret) == 16
    verify_link_invite(invite, NOW)
    # The text form survives the round trip and still verifies.
    decoded = decode_invite(encode_invite(invite))
    assert decoded == invite
    verify_link_invite(decoded, NOW + 599)
    # A device-link code is no contact invite: nothing signed it with its "identity" slot.
    with pytest.raises(InviteError):
        verify_invite(invite, NOW)


def test_bad_offers_are_refused() -> None:
    key = nacl.signing.SigningKey.generate()
    with pytest.raises(ValueError, match="positive"):
        new_link_offer(key, (), 0, "laptop", NOW)
    with pytest.raises(ValueError, match="expiry"):
        new_link_offer(key, (), 600, "laptop", 2**32 - 10)


@pytest.mark.parametrize(
    "change",
    [
        {"name": "Mallory"},
        {"expires_at": NOW + 10_000},
        {"secret": b"\x01" * 16},
        {"identity_key": bytes(nacl.public.PrivateKey.generate().public_key)},
        {"device_key": bytes(nacl.signing.SigningKey.generate().verify_key)},
        {"hints": (AddressHint.from_multiaddr("/ip4/10.0.0.66/tcp/666"),)},
    ],
    ids=["name", "expiry", "secret", "ephemeral", "device", "hints"],
)
def test_an_altered_code_is_forged(change: dict[str, object]) -> None:
    invite = new_device().offer.invite
    altered = dataclasses.replace(invite, **change)  # type: ignore[arg-type]
    with pytest.raises(ForgedInviteError, match="altered or is not genuine"):
        verify_link_invite(altered, NOW)


def test_every_altered_character_of_a_code_is_caught() -> None:
    text = encode_invite(new_device().offer.invite)
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"
    prefix = len("P2PID:")
    outcomes = set()
    for at in range(prefix, len(text)):
        replacement = alphabet[(alphabet.index(text[at]) + 1) % len(alphabet)]
        altered = text[:at] + replacement + text[at + 1 :]
        try:
            invite = decode_invite(altered)
        except InviteFormatError:
            outcomes.add("malformed")
            continue
        with pytest.raises(ForgedInviteError):
            verify_link_invite(invite, NOW)
        outcomes.add("forged")
    assert outcomes == {"malformed", "forged"}


def test_an_expired_code_is_refused() -> None:
    invite = new_device(ttl=60).offer.invite
    verify_link_invite(invite, NOW + 59)
    for when in (NOW + 60, NOW + 10_000):
        with pytest.raises(ExpiredInviteError, match="expired"):
            verify_link_invite(invite, when)


def test_a_contact_invite_is_not_a_link_code() -> None:
    alice = IdentityKeys.generate()
    contact = new_invite(
        InviteKind.CONTACT,
        alice.identity_signing_key,
        alice.device_public_key,
        (),
        ttl_seconds=600,
        name="Alice",
        now=NOW,
    )
    verify_invite(contact, NOW)  # genuine, as a contact invite
    with pytest.raises(ForgedInviteError, match="contact code, not a device link"):
        verify_link_invite(contact, NOW)
    # Labelled as a device link but signed by an identity key, not the device key it names.
    relabelled = new_invite(
        InviteKind.DEVICE_LINK,
        alice.identity_signing_key,
        alice.device_public_key,
        (),
        ttl_seconds=600,
        name="Alice",
        now=NOW,
    )
    with pytest.raises(ForgedInviteError, match="signature"):
        verify_link_invite(relabelled, NOW)


def test_a_code_with_an_unusable_ephemeral_key_is_refused() -> None:
    """The code's signer chose a low-order X25519 point: no shared secret could come of it."""
    key = nacl.signing.SigningKey.generate()
    genuine = new_link_offer(key, (), 600, "laptop", NOW).invite
    unsigned = dataclasses.replace(genuine, identity_key=b"\0" * 32)
    resigned = dataclasses.replace(unsigned, signature=key.sign(unsigned.signed_bytes()).signature)
    with pytest.raises(ForgedInviteError, match="X25519"):
        verify_link_invite(resigned, NOW)


def transcript(**change: object) -> LinkTranscript:
    base = LinkTranscript(
        invite_id=b"\x01" * 16,
        approver_peer_id="12D3KooWapprover",
        new_peer_id="12D3KooWnew",
        approver_identity_key=b"\x02" * 32,
        approver_ephemeral=b"\x03" * 32,
        new_ephemeral=b"\x04" * 32,
    )
    return dataclasses.replace(base, **change)  # type: ignore[arg-type]


def test_proofs_codes_and_seals_are_bound_to_the_whole_transcript() -> None:
    secret, shared = b"\x05" * 16, b"\x06" * 32
    base = transcript()
    variants = [
        transcript(invite_id=b"\x09" * 16),
        transcript(approver_peer_id="12D3KooWmallory"),
        transcript(new_peer_id="12D3KooWother"),
        transcript(approver_identity_key=b"\x07" * 32),
        transcript(approver_ephemeral=b"\x08" * 32),
        transcript(new_ephemeral=b"\x09" * 32),
        # Length prefixes: moving a byte from one PeerId to the other is another transcript.
        transcript(approver_peer_id="12D3KooWapproverX", new_peer_id="2D3KooWnew"),
    ]
    assert len({v.encode() for v in variants} | {base.encode()}) == len(variants) + 1
    sealed = seal(secret, shared, base, b"identity seed")
    assert unseal(secret, shared, base, sealed) == b"identity seed"
    for other in variants:
        assert approver_proof(secret, other) != approver_proof(secret, base)
        assert new_device_proof(secret, other, b"k") != new_device_proof(secret, base, b"k")
        with pytest.raises(LinkCryptoError, match="altered"):
            unseal(secret, shared, other, sealed)
    # Each role's proof is its own: the approver's cannot stand in for the new device's.
    assert approver_proof(secret, base) != new_device_proof(secret, base, b"")
    assert new_device_proof(secret, base, b"k") != new_device_proof(secret, base, b"K")
    with pytest.raises(LinkCryptoError):
        unseal(b"\x00" * 16, shared, base, sealed)
    with pytest.raises(LinkCryptoError):
        unseal(secret, b"\x00" * 32, base, sealed)
    with pytest.raises(LinkCryptoError):
        unseal(secret, shared, base, flipped(sealed, len(sealed) - 1))
    # The confirmation code: six digits, and another shared secret shows another code (the
    # chance of a collision is one in a million; these fixed inputs do not collide).
    code = confirmation_code(secret, shared, base)
    assert CONFIRMATION.fullmatch(code)
    assert confirmation_code(secret, b"\x0a" * 32, base) != code
    assert confirmation_code(secret, shared, base) == code


def test_shared_secret_refuses_a_low_order_key() -> None:
    own = nacl.public.PrivateKey.generate()
    with pytest.raises(LinkCryptoError, match="X25519"):
        shared_secret(own, b"\0" * 32)
    other = nacl.public.PrivateKey.generate()
    assert shared_secret(own, bytes(other.public_key)) == shared_secret(
        other, bytes(own.public_key)
    )


# -- the machines, bytes only ------------------------------------------------------------------


def test_a_full_link_through_the_machines() -> None:
    state = to_confirmation()
    alice, device, approver, machine = state.alice, state.device, state.approver, state.machine
    info, seen = state.shown_on_new_device, state.new_device_as_seen
    # Both screens show the same code; each side learned who the other is.
    assert CONFIRMATION.fullmatch(info.confirmation)
    assert seen.confirmation == info.confirmation
    assert info.identity_key == alice.identity_public_key and info.name == "Alice"
    assert seen.peer_id == device.peer_id
    assert seen.name == "laptop"
    assert seen.olm_curve25519 == "curve-laptop"
    assert seen.prekeys == device.prekeys

    secrets = secrets_for(alice, device)
    granted = machine.receive_grant(approver.grant(secrets))
    assert granted.secrets == secrets and machine.granted is granted
    assert granted.secrets.identity_seed == alice.identity_seed
    assert granted.device_list.body.version == 2
    assert granted.device_list.peer_ids() == [alice.peer_id, device.peer_id]
    listed = granted.device_list.device_for_peer(device.peer_id)
    assert listed is not None and listed.name == "laptop"

    first = SyncBatch(blocked=[b"\x0b" * 32])
    second = SyncBatch(messages=[message_copy(1), message_copy(2)])
    end = SyncEnd(contacts=0, messages=2)
    received = [machine.receive_sync(encode_link_message(m)) for m in (first, second, end)]
    assert received == [first, second, end]
    done = machine.done()
    assert isinstance(decode_link_message(done), LinkDone)
    approver.receive_done(done)
    # Spent on both sides.
    with pytest.raises(LinkError, match="out of order"):
        approver.receive_done(done)
    with pytest.raises(LinkError, match="already used"):
        machine.receive_hello(approver_for(alice, device).hello(), alice.peer_id)


def test_wrong_proofs_are_counted_and_void_the_code_after_three() -> None:
    alice, mallory = IdentityKeys.generate(), IdentityKeys.generate()
    device = new_device()
    machine = device.machine()
    genuine = decode_link_message(approver_for(alice, device).hello())
    assert isinstance(genuine, LinkHello)
    guesses = [
        # The right invite id with a proof made without the secret.
        msgspec.structs.replace(genuine, proof=os.urandom(32)),
        # Alice's proof presented for Mallory's identity key (another transcript).
        msgspec.structs.replace(genuine, approver_identity_key=mallory.identity_public_key),
        msgspec.structs.replace(genuine, proof=flipped(genuine.proof, 0)),
    ]
    for number, guess in enumerate(guesses, start=1):
        assert not machine.void
        with pytest.raises(LinkError, match="proof of the code's secret is wrong"):
            machine.receive_hello(encode_link_message(guess), alice.peer_id)
        assert machine.void is (number >= MAX_FAILED_HELLOS)
    # Void: even the genuine approver is turned away now.
    approver = approver_for(alice, device)
    with pytest.raises(LinkError, match="already used"):
        machine.receive_hello(approver.hello(), alice.peer_id)


def test_a_hello_for_another_code_counts_as_a_failure() -> None:
    alice = IdentityKeys.generate()
    device, other = new_device(), new_device()
    machine = device.machine()
    with pytest.raises(LinkError, match="another code"):
        machine.receive_hello(approver_for(alice, other).hello(), alice.peer_id)
    # A guessed secret: the invite id derives from the secret, so it names another code.
    forged = dataclasses.replace(device.offer.invite, secret=other.offer.secret)
    assert forged.invite_id != device.offer.invite.invite_id
    with pytest.raises(LinkError, match="another code"):
        machine.receive_hello(
            LinkApprover(
                forged,
                own_peer_id=alice.peer_id,
                identity_key=alice.identity_public_key,
                identity_name="Alice",
            ).hello(),
            alice.peer_id,
        )
    assert not machine.void
    # Two failures: the genuine approver still gets through.
    reply, info = machine.receive_hello(approver_for(alice, device).hello(), alice.peer_id)
    assert isinstance(decode_link_message(reply), LinkReply)
    assert CONFIRMATION.fullmatch(info.confirmation)


def test_a_hello_replayed_from_another_peer_is_refused() -> None:
    """Mallory's device relays Alice's genuine hello: the transcript names Alice's PeerId."""
    alice, mallory = IdentityKeys.generate(), IdentityKeys.generate()
    device = new_device()
    machine = device.machine()
    approver = approver_for(alice, device)
    hello = approver.hello()
    with pytest.raises(LinkError, match="proof"):
        machine.receive_hello(hello, mallory.peer_id)
    # The same hello over Alice's own connection is fine; her approver then checks the reply.
    reply, _ = machine.receive_hello(hello, alice.peer_id)
    assert approver.receive_reply(reply).peer_id == device.peer_id


def test_a_reply_made_for_another_approver_peer_is_refused() -> None:
    """The new device answered a relayed hello (its transcript names Mallory's PeerId): the
    reply's proof does not check out for Alice's approver."""
    alice, mallory = IdentityKeys.generate(), IdentityKeys.generate()
    device = new_device()
    relay = approver_for(alice, device, own_peer_id=mallory.peer_id)
    reply, _ = device.machine().receive_hello(relay.hello(), mallory.peer_id)
    approver = approver_for(alice, device)
    approver.hello()
    with pytest.raises(LinkError, match="does not know the code's secret"):
        approver.receive_reply(reply)


def test_a_hello_with_an_unusable_ephemeral_key_is_counted() -> None:
    alice = IdentityKeys.generate()
    device = new_device()
    machine = device.machine()
    bad = transcript(
        invite_id=device.offer.invite.invite_id,
        approver_peer_id=alice.peer_id,
        new_peer_id=device.peer_id,
        approver_identity_key=alice.identity_public_key,
        approver_ephemeral=b"\0" * 32,
        new_ephemeral=bytes(device.offer.ephemeral.public_key),
    )
    hello = LinkHello(
        invite_id=bad.invite_id,
        approver_identity_key=alice.identity_public_key,
        approver_name="Alice",
        ephemeral_key=bad.approver_ephemeral,
        proof=approver_proof(device.offer.secret, bad),
    )
    with pytest.raises(LinkError, match="X25519"):
        machine.receive_hello(encode_link_message(hello), alice.peer_id)
    assert not machine.void
    machine.receive_hello(approver_for(alice, device).hello(), alice.peer_id)


def test_frames_out_of_order_are_refused() -> None:
    alice = IdentityKeys.generate()
    device = new_device()
    machine, approver = device.machine(), approver_for(alice, device)
    secrets = secrets_for(alice, device)
    end = encode_link_message(SyncEnd(contacts=0, messages=0))
    batch = encode_link_message(SyncBatch())

    # The new device, before any hello: no grant, no history, no done.
    sealed_elsewhere = to_confirmation(alice)
    early_grant = sealed_elsewhere.approver.grant(secrets)
    with pytest.raises(LinkError, match="grant before the reply"):
        machine.receive_grant(early_grant)
    with pytest.raises(LinkError, match="history before the grant"):
        machine.receive_sync(batch)
    with pytest.raises(LinkError, match="done before the history ended"):
        machine.done()
    # The approver: no reply before its hello, no grant before the reply, no done before grant.
    with pytest.raises(LinkError, match="out of order"):
        approver.receive_reply(batch)
    with pytest.raises(LinkError, match="out of order"):
        approver.grant(secrets)
    with pytest.raises(LinkError, match="out of order"):
        approver.receive_done(encode_link_message(LinkDone()))

    hello = approver.hello()
    with pytest.raises(LinkError, match="out of order"):
        approver.hello()  # one hello per link
    # Frames of the wrong kind where a hello belongs are refused without counting.
    for wrong in (batch, end, encode_link_message(LinkDone())):
        with pytest.raises(LinkError, match="did not start with a hello"):
            machine.receive_hello(wrong, alice.peer_id)
    assert not machine.void
    reply, _ = machine.receive_hello(hello, alice.peer_id)
    with pytest.raises(LinkError, match="already used"):
        machine.receive_hello(hello, alice.peer_id)  # a second hello
    with pytest.raises(LinkError, match="history before the grant"):
        machine.receive_sync(batch)
    with pytest.raises(LinkError, match="did not answer with its keys"):
        approver.receive_reply(hello)
    approver.receive_reply(reply)
    with pytest.raises(LinkError, match="out of order"):
        approver.receive_reply(reply)
    with pytest.raises(LinkError, match="out of order"):
        approver.receive_done(encode_link_message(LinkDone()))  # done before the grant

    with pytest.raises(LinkError, match="did not send the grant"):
        machine.receive_grant(end)
    grant = approver.grant(secrets)
    with pytest.raises(LinkError, match="out of order"):
        approver.grant(secrets)
    machine.receive_grant(grant)
    with pytest.raises(LinkError, match="out of order"):
        machine.receive_grant(grant)  # a second grant
    with pytest.raises(LinkError, match="done before the history ended"):
        machine.done()
    with pytest.raises(LinkError, match="expected history"):
        machine.receive_sync(grant)
    with pytest.raises(LinkError, match="did not confirm"):
        approver.receive_done(end)
    machine.receive_sync(batch)
    machine.receive_sync(end)
    with pytest.raises(LinkError, match="history before the grant"):
        machine.receive_sync(batch)  # history after its end
    done = machine.done()
    with pytest.raises(LinkError, match="out of order"):
        machine.done()
    approver.receive_done(done)
    with pytest.raises(LinkError, match="already used"):
        machine.receive_hello(approver_for(alice, device).hello(), alice.peer_id)


def raw_hello(**change: object) -> bytes:
    fields: dict[str, object] = {
        "type": "hello",
        "invite_id": b"\x01" * 16,
        "approver_identity_key": b"\x02" * 32,
        "approver_name": "Alice",
        "ephemeral_key": b"\x03" * 32,
        "proof": b"\x04" * 32,
    }
    fields.update(change)
    return msgspec.msgpack.encode({k: v for k, v in fields.items() if v is not None})


MALFORMED = {
    "empty": b"",
    "garbage": b"\xc1\xff\x00junk",
    "not a map": msgspec.msgpack.encode([1, 2, 3]),
    "unknown tag": raw_hello(type="hijack"),
    "short key": raw_hello(ephemeral_key=b"\x03" * 31),
    "long proof": raw_hello(proof=b"\x04" * 33),
    "short invite id": raw_hello(invite_id=b"\x01" * 15),
    "missing proof": raw_hello(proof=None),
    "empty name": raw_hello(approver_name=""),
    "long name": raw_hello(approver_name="A" * 65),
    "key as text": raw_hello(approver_identity_key="x" * 32),
}


@pytest.mark.parametrize("frame", MALFORMED.values(), ids=MALFORMED.keys())
def test_malformed_hellos_are_refused_without_counting(frame: bytes) -> None:
    device = new_device()
    machine = device.machine()
    with pytest.raises(LinkError, match="malformed"):
        machine.receive_hello(frame, "12D3KooWsomeone")
    assert not machine.void
    assert raw_hello() and isinstance(decode_link_message(raw_hello()), LinkHello)


def test_oversized_records_are_refused() -> None:
    state = to_confirmation()
    big_grant = encode_link_message(LinkGrant(sealed=b"\0" * 16385))
    with pytest.raises(LinkError, match="malformed"):
        state.machine.receive_grant(big_grant)
    state.machine.receive_grant(state.approver.grant(secrets_for(state.alice, state.device)))
    too_many = SyncBatch(messages=[message_copy(n) for n in range(MAX_SYNC_MESSAGES + 1)])
    with pytest.raises(LinkError, match="malformed"):
        state.machine.receive_sync(encode_link_message(too_many))
    long_body = msgspec.structs.replace(message_copy(1), body="x" * 65537)
    with pytest.raises(LinkError, match="malformed"):
        state.machine.receive_sync(encode_link_message(SyncBatch(messages=[long_body])))
    negative = msgspec.msgpack.encode({"type": "end", "contacts": -1, "messages": 0})
    with pytest.raises(LinkError, match="malformed"):
        state.machine.receive_sync(negative)
    # The limits themselves still pass.
    most = SyncBatch(messages=[message_copy(n) for n in range(MAX_SYNC_MESSAGES)])
    assert state.machine.receive_sync(encode_link_message(most)) == most


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=512))
def test_arbitrary_bytes_only_ever_raise_link_errors(data: bytes) -> None:
    state = to_confirmation()
    machine = LinkNewDevice(
        state.device.offer,
        own_peer_id=state.device.peer_id,
        device_name="laptop",
        olm_curve25519="c",
        olm_ed25519="e",
        prekeys=state.device.prekeys,
    )
    with pytest.raises(LinkError):
        machine.receive_hello(data, state.alice.peer_id)
    with pytest.raises(LinkError):
        state.machine.receive_grant(data)
    approver = approver_for(state.alice, state.device)
    approver.hello()
    with pytest.raises(LinkError):
        approver.receive_reply(data)


def test_every_flipped_bit_of_a_hello_is_refused_but_the_unproved_name() -> None:
    alice = IdentityKeys.generate()
    device = new_device()
    hello = approver_for(alice, device).hello()
    original = decode_link_message(hello)
    assert isinstance(original, LinkHello)
    outcomes = set()
    for at in range(len(hello)):
        machine = device.machine()
        try:
            _, info = machine.receive_hello(flipped(hello, at), alice.peer_id)
        except LinkError as error:
            outcomes.add("malformed" if "malformed" in str(error) else "refused")
            continue
        # Only the approver's name is outside the proof; the PeerId-bound Noise channel
        # vouches for it (only Alice's device can speak on that stream).
        assert info.name != original.approver_name
        assert info.identity_key == alice.identity_public_key
        outcomes.add("name")
    assert {"malformed", "refused"} <= outcomes


def test_a_tampered_reply_is_refused_by_the_approver() -> None:
    alice = IdentityKeys.generate()
    device = new_device()
    approver = approver_for(alice, device)
    reply, _ = device.machine().receive_hello(approver.hello(), alice.peer_id)
    genuine = decode_link_message(reply)
    assert isinstance(genuine, LinkReply)
    mallory = nacl.signing.SigningKey.generate()
    tampered = [
        msgspec.structs.replace(genuine, proof=flipped(genuine.proof, 31)),
        msgspec.structs.replace(genuine, device_name="Mallory's laptop"),
        msgspec.structs.replace(genuine, olm_curve25519="curve-mallory"),
        msgspec.structs.replace(genuine, olm_ed25519="ed-mallory"),
        msgspec.structs.replace(
            genuine, prekeys=msgspec.structs.replace(genuine.prekeys, one_time_keys=["mallory"])
        ),
        msgspec.structs.replace(
            genuine, prekeys=msgspec.structs.replace(genuine.prekeys, fallback_key="mallory")
        ),
        msgspec.structs.replace(
            genuine,
            prekeys=msgspec.structs.replace(genuine.prekeys, device_key=bytes(mallory.verify_key)),
        ),
    ]
    for bad in tampered:
        with pytest.raises(LinkError, match="does not know the code's secret"):
            approver.receive_reply(encode_link_message(bad))
    # None of it advanced the approver: the genuine reply still goes through.
    assert approver.receive_reply(reply).name == "laptop"


def test_a_reply_naming_another_device_is_refused() -> None:
    """The new device knows the secret but hands over the Olm keys of another device."""
    alice = IdentityKeys.generate()
    device = new_device()
    other = DevicePrekeys(device_key=bytes(nacl.signing.SigningKey.generate().verify_key))
    approver = approver_for(alice, device)
    reply, _ = device.machine(prekeys=other).receive_hello(approver.hello(), alice.peer_id)
    with pytest.raises(LinkError, match="name another device"):
        approver.receive_reply(reply)


def test_a_tampered_grant_does_not_open() -> None:
    state = to_confirmation()
    grant = decode_link_message(state.approver.grant(secrets_for(state.alice, state.device)))
    assert isinstance(grant, LinkGrant)
    for at in (0, 24, len(grant.sealed) // 2, len(grant.sealed) - 1):
        for bit in (0x01, 0x80):
            bad = LinkGrant(sealed=flipped(grant.sealed, at, bit))
            with pytest.raises(LinkError, match="altered"):
                state.machine.receive_grant(encode_link_message(bad))
    with pytest.raises(LinkError, match="altered"):
        state.machine.receive_grant(encode_link_message(LinkGrant(sealed=grant.sealed[:-1])))
    assert state.machine.granted is None


def test_a_grant_sealed_for_another_link_does_not_open() -> None:
    """Alice's approver ran a link with another new device: its grant is no use here."""
    first, second = to_confirmation(), to_confirmation()
    grant = first.approver.grant(secrets_for(first.alice, second.device))
    with pytest.raises(LinkError, match="altered"):
        second.machine.receive_grant(grant)


@pytest.mark.parametrize("case", ["other seed", "list by another key", "list without me"])
def test_a_grant_that_does_not_make_this_device_mine_is_refused(case: str) -> None:
    state = to_confirmation()
    alice, device = state.alice, state.device
    mallory = IdentityKeys.generate()
    if case == "other seed":
        secrets = secrets_for(alice, device, seed=mallory.identity_seed)
        expected = "not the approver's"
    elif case == "list by another key":
        secrets = secrets_for(alice, device, signer=mallory)
        expected = "device list is refused"
    else:
        secrets = secrets_for(alice, device, devices=[own_entry(alice)])
        expected = "does not list this device"
    with pytest.raises(LinkError, match=expected):
        state.machine.receive_grant(state.approver.grant(secrets))
    assert state.machine.granted is None
    with pytest.raises(LinkError, match="history before the grant"):
        state.machine.receive_sync(encode_link_message(SyncEnd(contacts=0, messages=0)))


def test_a_grant_with_a_forged_list_signature_is_refused() -> None:
    state = to_confirmation()
    good = secrets_for(state.alice, state.device)
    signature = good.device_list.signature
    forged_list = SignedDeviceList(
        body=good.device_list.body, signature=signature[:-1] + bytes([signature[-1] ^ 1])
    )
    secrets = msgspec.structs.replace(good, device_list=forged_list)
    with pytest.raises(LinkError, match="device list is refused"):
        state.machine.receive_grant(state.approver.grant(secrets))


def test_an_abort_surfaces_with_its_reason() -> None:
    state = to_confirmation()
    with pytest.raises(LinkError, match="stopped the link: the codes did not match"):
        state.machine.receive_grant(abort_frame("the codes did not match"))
    alice = IdentityKeys.generate()
    device = new_device()
    approver = approver_for(alice, device)
    approver.hello()
    with pytest.raises(LinkError, match="stopped the link: the person on the new device"):
        approver.receive_reply(abort_frame("the person on the new device refused"))
    # A long reason is cut to what the record holds, not refused as malformed.
    with pytest.raises(LinkError, match=r"stopped the link: x{256}$"):
        approver.receive_reply(abort_frame("x" * 1000))
    machine = device.machine()
    with pytest.raises(LinkError, match="stopped the link: nope"):
        machine.receive_hello(abort_frame("nope"), alice.peer_id)
    assert not machine.void


# -- the trio drivers over real NetHosts ---------------------------------------------------------


@dataclass
class NewDeviceSide:
    """The new device's stream handler, recording what serve_link did."""

    machine: LinkNewDevice
    decide: Callable[[ApproverInfo], Awaitable[bool]]
    shown: list[ApproverInfo] = field(default_factory=list)
    committed: list[tuple[Granted, list[SyncBatch], SyncEnd]] = field(default_factory=list)
    outcomes: list[bool | Exception] = field(default_factory=list)
    finished: trio.Event = field(default_factory=trio.Event)
    asked: trio.Event = field(default_factory=trio.Event)

    async def confirm(self, info: ApproverInfo) -> bool:
        self.shown.append(info)
        self.asked.set()
        return await self.decide(info)

    async def commit(self, granted: Granted, batches: list[SyncBatch], end: SyncEnd) -> None:
        self.committed.append((granted, batches, end))

    async def handle(self, stream: Stream) -> None:
        try:
            self.outcomes.append(await serve_link(stream, self.machine, self.confirm, self.commit))
        except Exception as error:  # what serve_link raised, for the test to look at
            self.outcomes.append(error)
        finally:
            self.finished.set()

    async def wait(self) -> bool | Exception:
        with trio.fail_after(STEP_TIMEOUT):
            await self.finished.wait()
        [outcome] = self.outcomes
        return outcome


async def accept(_: ApproverInfo) -> bool:
    return True


async def refuse(_: ApproverInfo) -> bool:
    return False


@dataclass
class Hosts:
    alice: IdentityKeys
    device: NewDevice
    approver_net: NetHost
    device_net: NetHost


async def run_with_hosts(test: Callable[[Hosts], Awaitable[None]]) -> None:
    alice, device = IdentityKeys.generate(), new_device()
    async with (
        NetHost.open(alice.device_seed, LOOPBACK) as approver_net,
        NetHost.open(device.seed, LOOPBACK) as device_net,
    ):
        assert device_net.peer_id == device.peer_id  # the code names the host's PeerId
        approver_net.add_addrs(device.peer_id, device_net.listen_addrs())
        await test(Hosts(alice, device, approver_net, device_net))


def link_approver(hosts: Hosts, invite: object | None = None) -> LinkApprover:
    return LinkApprover(
        invite or hosts.device.offer.invite,  # type: ignore[arg-type]
        own_peer_id=hosts.approver_net.peer_id,
        identity_key=hosts.alice.identity_public_key,
        identity_name="Alice",
    )


async def test_open_and_finish_link_over_real_hosts() -> None:
    async def test(hosts: Hosts) -> None:
        side = NewDeviceSide(hosts.device.machine(), accept)
        hosts.device_net.set_stream_handler(LINK_PROTOCOL, side.handle)
        with trio.fail_after(STEP_TIMEOUT):
            link = await open_link(hosts.approver_net, link_approver(hosts))
            await side.asked.wait()
        [shown] = side.shown
        assert shown.confirmation == link.device.confirmation
        assert CONFIRMATION.fullmatch(shown.confirmation)
        assert shown.name == "Alice" and shown.identity_key == hosts.alice.identity_public_key
        assert link.device.peer_id == hosts.device.peer_id and link.device.name == "laptop"
        assert not side.committed  # nothing before the grant

        batches = [
            SyncBatch(blocked=[b"\x0b" * 32]),
            SyncBatch(messages=[message_copy(n) for n in range(500)]),
            SyncBatch(messages=[message_copy(n) for n in range(500, 600)]),
        ]
        end = SyncEnd(contacts=0, messages=600)
        secrets = secrets_for(hosts.alice, hosts.device)
        with trio.fail_after(STEP_TIMEOUT):
            await finish_link(link, secrets, batches, end)
        assert await side.wait() is True
        [(granted, received, received_end)] = side.committed
        assert granted.secrets == secrets
        assert hosts.device.peer_id in granted.device_list.peer_ids()
        assert received == batches and received_end == end

    await run_with_hosts(test)


async def test_the_new_device_refusing_commits_nothing() -> None:
    async def test(hosts: Hosts) -> None:
        side = NewDeviceSide(hosts.device.machine(), refuse)
        hosts.device_net.set_stream_handler(LINK_PROTOCOL, side.handle)
        with trio.fail_after(STEP_TIMEOUT):
            link = await open_link(hosts.approver_net, link_approver(hosts))
        assert await side.wait() is False
        secrets = secrets_for(hosts.alice, hosts.device)
        with trio.fail_after(STEP_TIMEOUT), pytest.raises(LinkError, match="refused"):
            await finish_link(link, secrets, [SyncBatch()], SyncEnd(contacts=0, messages=0))
        assert side.committed == []
        assert side.machine.granted is None
        # The code is spent: a second approval is refused.
        with trio.fail_after(STEP_TIMEOUT), pytest.raises(LinkError, match="already used"):
            await open_link(hosts.approver_net, link_approver(hosts))

    await run_with_hosts(test)


async def test_the_approver_cancelling_commits_nothing() -> None:
    async def test(hosts: Hosts) -> None:
        side = NewDeviceSide(hosts.device.machine(), accept)
        hosts.device_net.set_stream_handler(LINK_PROTOCOL, side.handle)
        with trio.fail_after(STEP_TIMEOUT):
            link = await open_link(hosts.approver_net, link_approver(hosts))
            await cancel_link(link, "the codes did not match")
        outcome = await side.wait()
        assert isinstance(outcome, LinkError)
        assert "the codes did not match" in str(outcome)
        assert side.committed == [] and side.machine.granted is None

    await run_with_hosts(test)


async def test_a_wrong_secret_over_the_network_is_refused_with_a_reason() -> None:
    async def test(hosts: Hosts) -> None:
        side = NewDeviceSide(hosts.device.machine(), accept)
        hosts.device_net.set_stream_handler(LINK_PROTOCOL, side.handle)
        guessed = dataclasses.replace(hosts.device.offer.invite, secret=os.urandom(16))
        with trio.fail_after(STEP_TIMEOUT), pytest.raises(LinkError, match="another code"):
            await open_link(hosts.approver_net, link_approver(hosts, guessed))
        outcome = await side.wait()
        assert isinstance(outcome, LinkError) and side.shown == []
        assert not side.machine.void

        # The genuine approver still links the device afterwards.
        second = NewDeviceSide(side.machine, accept)
        hosts.device_net.set_stream_handler(LINK_PROTOCOL, second.handle)
        with trio.fail_after(STEP_TIMEOUT):
            link = await open_link(hosts.approver_net, link_approver(hosts))
            await finish_link(
                link,
                secrets_for(hosts.alice, hosts.device),
                [],
                SyncEnd(contacts=0, messages=0),
            )
        assert await second.wait() is True and len(second.committed) == 1

    await run_with_hosts(test)


async def test_oversized_and_malformed_frames_on_the_wire_spoil_nothing() -> None:
    async def test(hosts: Hosts) -> None:
        machine = hosts.device.machine()
        for raw, expected in (
            (encode_varint(MAX_LINK_FRAME + 1), "broke off"),
            (encode_varint(5) + b"\xc1junk", "malformed"),
        ):
            side = NewDeviceSide(machine, accept)
            hosts.device_net.set_stream_handler(LINK_PROTOCOL, side.handle)
            stream = await hosts.approver_net.new_stream(hosts.device.peer_id, [LINK_PROTOCOL])
            await stream.write(raw)
            outcome = await side.wait()
            assert isinstance(outcome, LinkError) and side.committed == []
            assert expected in str(outcome)
            await stream.reset()
        assert not machine.void
        side = NewDeviceSide(machine, accept)
        hosts.device_net.set_stream_handler(LINK_PROTOCOL, side.handle)
        with trio.fail_after(STEP_TIMEOUT):
            link = await open_link(hosts.approver_net, link_approver(hosts))
            await finish_link(
                link, secrets_for(hosts.alice, hosts.device), [], SyncEnd(contacts=0, messages=0)
            )
        assert await side.wait() is True

    await run_with_hosts(test)


async def test_an_approver_going_away_ends_the_new_devices_side_with_a_link_error() -> None:
    async def test(hosts: Hosts) -> None:
        side = NewDeviceSide(hosts.device.machine(), accept)
        hosts.device_net.set_stream_handler(LINK_PROTOCOL, side.handle)
        with trio.fail_after(STEP_TIMEOUT):
            link = await open_link(hosts.approver_net, link_approver(hosts))
        await link.framed.stream.reset()  # the approving daemon died while the codes showed
        outcome = await side.wait()
        assert isinstance(outcome, LinkError) and "broke off" in str(outcome)
        assert side.committed == [] and side.machine.granted is None

    await run_with_hosts(test)


async def test_a_new_device_going_away_ends_finish_link_with_a_link_error() -> None:
    async def test(hosts: Hosts) -> None:
        machine = hosts.device.machine()
        granted = trio.Event()

        async def dies_after_the_grant(stream: Stream) -> None:
            framed = FramedStream(stream, MAX_LINK_FRAME)
            reply, _ = machine.receive_hello(await framed.receive(), hosts.approver_net.peer_id)
            await framed.send(reply)
            machine.receive_grant(await framed.receive())
            granted.set()
            await stream.reset()

        hosts.device_net.set_stream_handler(LINK_PROTOCOL, dies_after_the_grant)
        history = [SyncBatch(messages=[message_copy(n) for n in range(MAX_SYNC_MESSAGES)])] * 4
        with trio.fail_after(STEP_TIMEOUT):
            link = await open_link(hosts.approver_net, link_approver(hosts))
            with pytest.raises(LinkError, match="broke off"):
                await finish_link(
                    link,
                    secrets_for(hosts.alice, hosts.device),
                    history,
                    SyncEnd(contacts=0, messages=4 * MAX_SYNC_MESSAGES),
                )
        assert granted.is_set()

    await run_with_hosts(test)


async def test_a_new_device_that_answers_garbage_ends_open_link_with_a_link_error() -> None:
    async def test(hosts: Hosts) -> None:
        async def garbage(stream: Stream) -> None:
            await FramedStream(stream, MAX_LINK_FRAME).receive()
            await stream.write(encode_varint(MAX_LINK_FRAME + 1))

        hosts.device_net.set_stream_handler(LINK_PROTOCOL, garbage)
        with trio.fail_after(STEP_TIMEOUT), pytest.raises(LinkError, match="broke off"):
            await open_link(hosts.approver_net, link_approver(hosts))

        async def hangs_up(stream: Stream) -> None:
            await FramedStream(stream, MAX_LINK_FRAME).receive()
            await stream.close()

        hosts.device_net.set_stream_handler(LINK_PROTOCOL, hangs_up)
        with trio.fail_after(STEP_TIMEOUT), pytest.raises(LinkError, match="broke off"):
            await open_link(hosts.approver_net, link_approver(hosts))

    await run_with_hosts(test)
