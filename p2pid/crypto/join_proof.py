"""Proofs of knowing an invite's secret, bound to the invite and to both devices' PeerIds.

A keyed BLAKE2b (PyNaCl) over the length-prefixed context, so a proof made for one inviter, one
joiner device or one identity key is worthless anywhere else.
"""

from __future__ import annotations

from enum import Enum

import nacl.bindings
import nacl.encoding
import nacl.hash

PROOF_BYTES = 32


class ProofRole(Enum):
    JOINER = b"p2pid-join-j"
    INVITER = b"p2pid-join-i"


def _length_prefixed(*parts: bytes) -> bytes:
    return b"".join(len(part).to_bytes(2, "big") + part for part in parts)


def join_proof(
    secret: bytes,
    role: ProofRole,
    *,
    invite_id: bytes,
    inviter_peer_id: str,
    joiner_peer_id: str,
    joiner_identity_key: bytes,
) -> bytes:
    message = _length_prefixed(
        invite_id, inviter_peer_id.encode(), joiner_peer_id.encode(), joiner_identity_key
    )
    return nacl.hash.blake2b(
        message,
        digest_size=PROOF_BYTES,
        key=secret,
        person=role.value.ljust(16, b"\0"),
        encoder=nacl.encoding.RawEncoder,
    )


def proofs_equal(expected: bytes, received: bytes) -> bool:
    return len(expected) == len(received) and nacl.bindings.sodium_memcmp(expected, received)
