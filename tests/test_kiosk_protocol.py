"""Sans-IO kiosk pairing machines, grants and the PAKE: bytes in, bytes out, no network."""

from __future__ import annotations

import contextlib
import random
import time

import msgspec
import nacl.signing
import pytest

from p2pid.crypto.device_list import sign_device_list
from p2pid.crypto.grants import GrantError, open_grant, sign_grant, verify_grant
from p2pid.crypto.identity import IdentityKeys
from p2pid.crypto.invites import new_invite
from p2pid.crypto.pake import CodePake, PakeError
from p2pid.protocols.kiosk_pair import (
    KioskPairing,
    PairProtocolError,
    PairRefusedError,
    PersonPairing,
)
from p2pid.wire.invite import InviteKind
from p2pid.wire.kiosk import (
    Refusal,
    RevokeGrant,
    Role,
    SignedGrant,
    decode_control_request,
    decode_pair,
    encode,
)
from p2pid.wire.records import DeviceEntry

KIOSK = IdentityKeys.generate()
PERSON = IdentityKeys.generate()
NOW = int(time.time() * 1000)


def device_list(keys: IdentityKeys) -> object:
    entry = DeviceEntry(
        device_key=keys.device_public_key,
        olm_curve25519="x",
        olm_ed25519="y",
        name="phone",
        created_at=NOW,
    )
    return sign_device_list(keys.identity_signing_key, 1, NOW, [entry])


def grant(role: Role = Role.OWNER, ttl_ms: int = 60_000, now: int = NOW) -> SignedGrant:
    return sign_grant(
        PERSON.identity_signing_key,
        kiosk_identity_key=KIOSK.identity_public_key,
        kiosk_peer_id=KIOSK.peer_id,
        role=role,
        now_ms=now,
        ttl_ms=ttl_ms,
    )


def machines(short_code: str | None = None, typed: str | None = None):  # type: ignore[no-untyped-def]
    invite = None
    if short_code is None:
        invite = new_invite(
            InviteKind.KIOSK,
            KIOSK.identity_signing_key,
            KIOSK.device_public_key,
            (),
            600,
            "TV",
            int(time.time()),
        )
    person = PersonPairing(
        own_peer_id=PERSON.peer_id,
        kiosk_peer_id=KIOSK.peer_id,
        invite=invite,
        short_code=typed if short_code is not None else None,
    )
    kiosk = KioskPairing(
        own_peer_id=KIOSK.peer_id,
        own_identity_key=KIOSK.identity_public_key,
        person_peer_id=PERSON.peer_id,
    )
    return person, kiosk, invite


def test_qr_pairing_round_trip_and_a_replayed_request_fails_on_a_new_nonce() -> None:
    person, kiosk, invite = machines()
    kiosk.receive_hello(person.hello())
    person.receive_challenge(kiosk.challenge(has_owner=False))
    request = person.request(grant(), device_list(PERSON), "Alice", [])  # type: ignore[arg-type]
    kiosk.receive_request(request)
    assert kiosk.proof_ok(invite.secret)
    admitted = kiosk.admit(NOW)
    assert admitted.role is Role.OWNER and admitted.display_name == "Alice"
    # the same request replayed on another stream (another nonce) is refused
    _, other, _ = machines()
    other.receive_hello(
        PersonPairing(
            own_peer_id=PERSON.peer_id, kiosk_peer_id=KIOSK.peer_id, invite=invite
        ).hello()
    )
    other.challenge(has_owner=False)
    other.receive_request(request)
    assert not other.proof_ok(invite.secret)


def test_short_code_pake_confirms_both_ways_and_a_wrong_code_is_caught_by_the_person() -> None:
    person, kiosk, _ = machines("123456", "123456")
    kiosk.receive_hello(person.hello())
    challenge = person.receive_challenge(kiosk.challenge(has_owner=True, short_code="123456"))
    assert challenge.has_owner
    kiosk.receive_request(person.request(grant(Role.GUEST), device_list(PERSON), "Bob", []))  # type: ignore[arg-type]
    assert kiosk.proof_ok(None)

    person, kiosk, _ = machines("123456", "654321")
    kiosk.receive_hello(person.hello())
    with pytest.raises(PairRefusedError, match="wrong short code"):
        person.receive_challenge(kiosk.challenge(has_owner=False, short_code="123456"))


def test_out_of_order_and_malformed_messages_are_protocol_errors() -> None:
    person, kiosk, _ = machines()
    with pytest.raises(PairProtocolError):
        kiosk.receive_request(b"\x80")
    with pytest.raises(PairProtocolError):
        person.receive_result(b"")
    with pytest.raises(PairProtocolError, match="malformed"):
        kiosk.receive_hello(b"garbage")
    hello = person.hello()
    with pytest.raises(PairProtocolError):
        person.hello()
    kiosk2 = machines()[1]
    with pytest.raises(PairProtocolError, match="expected hello"):
        kiosk2.receive_hello(KioskPairing.refused(Refusal.LOCKED, "x"))
    assert hello


def test_a_revoke_may_carry_a_device_list_and_decodes_without_one() -> None:
    signed = device_list(PERSON)
    with_list = RevokeGrant(grant_id=b"g" * 16, device_list=signed)  # type: ignore[arg-type]
    assert decode_control_request(encode(with_list)) == with_list
    bare = msgspec.msgpack.encode({"type": "revoke", "grant_id": b"g" * 16})
    assert decode_control_request(bare) == RevokeGrant(grant_id=b"g" * 16)
    with pytest.raises(msgspec.DecodeError):
        decode_control_request(
            msgspec.msgpack.encode({"type": "revoke", "grant_id": b"g" * 16, "device_list": 3})
        )


def test_random_bytes_never_crash_the_decoders() -> None:
    rng = random.Random(7)
    for _ in range(2000):
        data = rng.randbytes(rng.randrange(0, 64))
        for decode in (decode_pair, decode_control_request):
            with contextlib.suppress(msgspec.DecodeError, ValueError):
                decode(data)


def test_grants_are_checked_for_signature_kiosk_and_time() -> None:
    signed = grant()
    assert (
        verify_grant(
            signed,
            kiosk_identity_key=KIOSK.identity_public_key,
            kiosk_peer_id=KIOSK.peer_id,
            now_ms=NOW,
        ).body.role
        is Role.OWNER
    )
    with pytest.raises(GrantError, match="expired"):
        verify_grant(
            signed,
            kiosk_identity_key=KIOSK.identity_public_key,
            kiosk_peer_id=KIOSK.peer_id,
            now_ms=NOW + 60_000,
        )
    with pytest.raises(GrantError, match="another kiosk"):
        verify_grant(
            signed,
            kiosk_identity_key=PERSON.identity_public_key,
            kiosk_peer_id=KIOSK.peer_id,
            now_ms=NOW,
        )
    forged = SignedGrant(
        body=signed.body,
        signature=nacl.signing.SigningKey.generate()
        .sign(b"p2pid-kiosk-grant-v1\0" + signed.body)
        .signature,
    )
    with pytest.raises(GrantError, match="not signed"):
        open_grant(forged)
    with pytest.raises(GrantError, match="malformed"):
        open_grant(SignedGrant(body=b"\x00", signature=b"0" * 64))


def test_pake_rejects_garbage_messages() -> None:
    pake = CodePake("123456", person=False, person_peer_id="a", kiosk_peer_id="b")
    with pytest.raises(PakeError):
        pake.finish(b"\x00" * 33, b"")
