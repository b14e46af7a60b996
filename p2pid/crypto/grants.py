"""Kiosk grants: a person's identity signs what one kiosk may let them (and only them) do.

A grant names the person's identity key, the kiosk (identity key and PeerId), a role, scopes and a
validity window. It carries no secret: the kiosk checks that the device speaking is one of the
person's devices (their signed device list) and that the grant is live (not expired, not revoked).
"""

from __future__ import annotations

from dataclasses import dataclass

import msgspec
import nacl.exceptions
import nacl.signing
import nacl.utils

from p2pid.wire.kiosk import (
    GRANT_ID_BYTES,
    GrantBody,
    KioskWireError,
    Role,
    SignedGrant,
    decode_grant_body,
    encode,
)

GRANT_CONTEXT = b"p2pid-kiosk-grant-v1\0"
DEFAULT_GRANT_TTL_MS = 30 * 24 * 3600 * 1000
MAX_GRANT_TTL_MS = 366 * 24 * 3600 * 1000
CLOCK_SKEW_MS = 5 * 60 * 1000


class GrantError(ValueError):
    """A grant that must not be honoured; the message says why."""


@dataclass(frozen=True)
class VerifiedGrant:
    body: GrantBody
    signed: SignedGrant

    @property
    def grant_id(self) -> bytes:
        return self.body.grant_id


def new_grant_id() -> bytes:
    return nacl.utils.random(GRANT_ID_BYTES)


def sign_grant(
    signing_key: nacl.signing.SigningKey,
    *,
    kiosk_identity_key: bytes,
    kiosk_peer_id: str,
    role: Role,
    now_ms: int,
    ttl_ms: int = DEFAULT_GRANT_TTL_MS,
    scopes: list[str] | None = None,
    grant_id: bytes | None = None,
) -> SignedGrant:
    if not 0 < ttl_ms <= MAX_GRANT_TTL_MS:
        raise GrantError(f"a grant lives 1 ms .. {MAX_GRANT_TTL_MS // 86_400_000} days")
    body = GrantBody(
        grant_id=grant_id if grant_id is not None else new_grant_id(),
        identity_key=bytes(signing_key.verify_key),
        kiosk_identity_key=kiosk_identity_key,
        kiosk_peer_id=kiosk_peer_id,
        role=role,
        scopes=list(scopes or []),
        issued_at_ms=now_ms,
        expires_at_ms=now_ms + ttl_ms,
    )
    encoded = encode(body)
    return SignedGrant(body=encoded, signature=signing_key.sign(GRANT_CONTEXT + encoded).signature)


def open_grant(signed: SignedGrant) -> VerifiedGrant:
    """Check the signature by the identity key the grant names, and its shape (not its time)."""
    try:
        body = decode_grant_body(signed.body)
    except (msgspec.DecodeError, KioskWireError) as error:
        raise GrantError(f"malformed grant: {error}") from None
    try:
        nacl.signing.VerifyKey(body.identity_key).verify(
            GRANT_CONTEXT + signed.body, signed.signature
        )
    except (nacl.exceptions.BadSignatureError, nacl.exceptions.ValueError, ValueError):
        raise GrantError("the grant is not signed by the identity it names") from None
    if body.expires_at_ms <= body.issued_at_ms:
        raise GrantError("the grant expires before it is issued")
    return VerifiedGrant(body=body, signed=signed)


def verify_grant(
    signed: SignedGrant, *, kiosk_identity_key: bytes, kiosk_peer_id: str, now_ms: int
) -> VerifiedGrant:
    """A grant for this kiosk, signed by the person it names, live at `now_ms`; else GrantError."""
    grant = open_grant(signed)
    body = grant.body
    if body.kiosk_identity_key != kiosk_identity_key or body.kiosk_peer_id != kiosk_peer_id:
        raise GrantError("the grant is for another kiosk")
    check_live(body, now_ms)
    if body.expires_at_ms - body.issued_at_ms > MAX_GRANT_TTL_MS:
        raise GrantError("the grant lives longer than a kiosk accepts")
    return grant


def check_live(body: GrantBody, now_ms: int) -> None:
    if now_ms >= body.expires_at_ms:
        raise GrantError("the grant has expired")
    if body.issued_at_ms > now_ms + CLOCK_SKEW_MS:
        raise GrantError("the grant is issued in the future (check the clocks)")


def grant_bytes(signed: SignedGrant) -> bytes:
    return encode(signed)


def grant_from_bytes(data: bytes) -> SignedGrant:
    return msgspec.msgpack.decode(data, type=SignedGrant)
