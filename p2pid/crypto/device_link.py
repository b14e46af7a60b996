"""The keys of a device link: the code the new device shows, the proofs of its secret, the
confirmation code both screens show, and the key sealing the identity seed. All PyNaCl.

A device-link code is an invite of kind DEVICE_LINK whose `identity_key` slot carries the new
device's ephemeral X25519 public key (it has no identity yet) and whose signature is by the
device key itself: the code vouches for the PeerId, the address hints and the ephemeral key.

Every proof and key derives from the transcript: the invite id, both PeerIds, both ephemeral
keys and the approver's identity key, length-prefixed. The link key also mixes the X25519 shared
secret, so only the two devices in this run of the protocol can open what it seals.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime

import nacl.bindings
import nacl.encoding
import nacl.exceptions
import nacl.hash
import nacl.public
import nacl.secret
import nacl.signing
import nacl.utils

from p2pid.crypto.invites import ExpiredInviteError, ForgedInviteError
from p2pid.crypto.join_proof import proofs_equal
from p2pid.wire.invite import MAX_EXPIRES_AT, AddressHint, Invite, InviteKind, invite_body

LINK_SECRET_BYTES = 16
PROOF_BYTES = 32
CONFIRMATION_DIGITS = 6

_APPROVER = b"p2pid-link-a"
_NEW_DEVICE = b"p2pid-link-n"
_CONFIRM = b"p2pid-link-c"
_SEAL = b"p2pid-link-k"


class LinkCryptoError(ValueError):
    """A proof or a sealed grant that does not check out."""


@dataclass(frozen=True)
class LinkOffer:
    """What the new device keeps while its code is shown."""

    invite: Invite
    ephemeral: nacl.public.PrivateKey

    @property
    def secret(self) -> bytes:
        return self.invite.secret


def new_link_offer(
    device_signing_key: nacl.signing.SigningKey,
    hints: Iterable[AddressHint],
    ttl_seconds: int,
    name: str,
    now: int,
) -> LinkOffer:
    if ttl_seconds <= 0:
        raise ValueError(f"a link code's time to live must be positive, not {ttl_seconds}")
    expires_at = now + ttl_seconds
    if expires_at > MAX_EXPIRES_AT:
        raise ValueError("the expiry is past what a code can hold")
    ephemeral = nacl.public.PrivateKey.generate()
    unsigned = invite_body(
        kind=InviteKind.DEVICE_LINK,
        identity_key=bytes(ephemeral.public_key),
        device_key=bytes(device_signing_key.verify_key),
        hints=hints,
        secret=nacl.utils.random(LINK_SECRET_BYTES),
        expires_at=expires_at,
        name=name,
    )
    signature = device_signing_key.sign(unsigned.signed_bytes()).signature
    return LinkOffer(invite=unsigned.with_signature(signature), ephemeral=ephemeral)


def verify_link_invite(invite: Invite, now: int) -> None:
    """Raise ForgedInviteError unless the device key signed this device-link code, then
    ExpiredInviteError if it is past its expiry."""
    if invite.kind is not InviteKind.DEVICE_LINK:
        raise ForgedInviteError(f"this is a {invite.kind.name.lower()} code, not a device link")
    try:
        nacl.signing.VerifyKey(invite.device_key).verify(invite.signed_bytes(), invite.signature)
    except (nacl.exceptions.BadSignatureError, nacl.exceptions.ValueError):
        raise ForgedInviteError(
            "the code's signature does not match: it was altered or is not genuine"
        ) from None
    try:  # a low-order point gives every scalar the same all-zero result: refused here
        nacl.bindings.crypto_scalarmult(nacl.utils.random(32), invite.identity_key)
    except nacl.exceptions.RuntimeError:
        raise ForgedInviteError("the code's ephemeral key is not a usable X25519 key") from None
    if now >= invite.expires_at:
        expired_at = datetime.fromtimestamp(invite.expires_at, UTC)
        raise ExpiredInviteError(f"the code expired at {expired_at:%Y-%m-%d %H:%M:%S} UTC")


@dataclass(frozen=True)
class LinkTranscript:
    invite_id: bytes
    approver_peer_id: str
    new_peer_id: str
    approver_identity_key: bytes
    approver_ephemeral: bytes
    new_ephemeral: bytes

    def encode(self) -> bytes:
        parts = (
            self.invite_id,
            self.approver_peer_id.encode(),
            self.new_peer_id.encode(),
            self.approver_identity_key,
            self.approver_ephemeral,
            self.new_ephemeral,
        )
        return b"".join(len(part).to_bytes(2, "big") + part for part in parts)


def _mac(key: bytes, person: bytes, message: bytes, size: int = PROOF_BYTES) -> bytes:
    return nacl.hash.blake2b(
        message,
        digest_size=size,
        key=key,
        person=person.ljust(16, b"\0"),
        encoder=nacl.encoding.RawEncoder,
    )


def approver_proof(secret: bytes, transcript: LinkTranscript) -> bytes:
    return _mac(secret, _APPROVER, transcript.encode())


def new_device_proof(secret: bytes, transcript: LinkTranscript, reply_keys: bytes) -> bytes:
    """Binds the new device's Olm keys (`reply_keys`, their encoding) to the transcript too."""
    return _mac(secret, _NEW_DEVICE, transcript.encode() + reply_keys)


def check_proof(expected: bytes, received: bytes) -> None:
    if not proofs_equal(expected, received):
        raise LinkCryptoError("the proof of the code's secret is wrong")


def shared_secret(own: nacl.public.PrivateKey, their_public: bytes) -> bytes:
    try:
        return nacl.bindings.crypto_scalarmult(bytes(own), their_public)
    except nacl.exceptions.RuntimeError:
        raise LinkCryptoError("the ephemeral key is not a usable X25519 key") from None


def _session_key(secret: bytes, shared: bytes, transcript: LinkTranscript) -> bytes:
    return _mac(secret + shared, _SEAL, transcript.encode())


def confirmation_code(secret: bytes, shared: bytes, transcript: LinkTranscript) -> str:
    """Six digits, shown as '123 456' on both devices."""
    digest = _mac(secret + shared, _CONFIRM, transcript.encode(), size=8)
    number = int.from_bytes(digest, "big") % 10**CONFIRMATION_DIGITS
    text = f"{number:0{CONFIRMATION_DIGITS}d}"
    return f"{text[:3]} {text[3:]}"


def seal(secret: bytes, shared: bytes, transcript: LinkTranscript, plaintext: bytes) -> bytes:
    box = nacl.secret.SecretBox(_session_key(secret, shared, transcript))
    return bytes(box.encrypt(plaintext))


def unseal(secret: bytes, shared: bytes, transcript: LinkTranscript, sealed: bytes) -> bytes:
    box = nacl.secret.SecretBox(_session_key(secret, shared, transcript))
    try:
        return box.decrypt(sealed)
    except nacl.exceptions.CryptoError:
        raise LinkCryptoError("the sealed grant does not open: it was altered") from None
