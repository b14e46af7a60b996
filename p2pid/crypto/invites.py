"""Signing and verifying invites (the record and its codec are in p2pid.wire.invite).

The identity key signs SIGNATURE_CONTEXT + the invite's body with Ed25519 (PyNaCl). A verified
invite proves that the holder of the identity key vouched for the device key and the hints until
`expires_at`; the one-time secret is what the joiner presents back to the inviter.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime

import nacl.exceptions
import nacl.signing
import nacl.utils

from p2pid.wire.invite import (
    MAX_EXPIRES_AT,
    AddressHint,
    Invite,
    InviteKind,
    invite_body,
)

DEFAULT_SECRET_BYTES = 16


class InviteError(Exception):
    """A well-formed invite that must not be acted on."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class ForgedInviteError(InviteError):
    """The signature does not match: the invite was altered or not made by its identity key."""


class ExpiredInviteError(InviteError):
    """The invite was genuine but its time is over."""


def new_invite(
    kind: InviteKind,
    signing_key: nacl.signing.SigningKey,
    device_key: bytes,
    hints: Iterable[AddressHint],
    ttl_seconds: int,
    name: str,
    now: int,
    secret_bytes: int = DEFAULT_SECRET_BYTES,
) -> Invite:
    """A fresh invite with a random one-time secret, signed by the identity `signing_key`.

    The name is cut to 32 UTF-8 bytes on a character boundary.
    """
    if ttl_seconds <= 0:
        raise ValueError(f"an invite's time to live must be positive, not {ttl_seconds}")
    expires_at = now + ttl_seconds
    if expires_at > MAX_EXPIRES_AT:
        raise ValueError(f"expiry {expires_at} is past what an invite can hold ({MAX_EXPIRES_AT})")
    unsigned = invite_body(
        kind=kind,
        identity_key=bytes(signing_key.verify_key),
        device_key=device_key,
        hints=hints,
        secret=nacl.utils.random(secret_bytes),
        expires_at=expires_at,
        name=name,
    )
    signature = signing_key.sign(unsigned.signed_bytes()).signature
    return unsigned.with_signature(signature)


def verify_invite(invite: Invite, now: int) -> None:
    """Raise ForgedInviteError unless the identity key signed exactly this invite, then
    ExpiredInviteError if `now` is at or past its expiry."""
    verify_key = nacl.signing.VerifyKey(invite.identity_key)
    try:
        verify_key.verify(invite.signed_bytes(), invite.signature)
    except nacl.exceptions.BadSignatureError:
        raise ForgedInviteError(
            "the invite's signature does not match: it was altered or is not genuine"
        ) from None
    if now >= invite.expires_at:
        expired_at = datetime.fromtimestamp(invite.expires_at, UTC)
        raise ExpiredInviteError(f"the invite expired at {expired_at:%Y-%m-%d %H:%M:%S} UTC")
