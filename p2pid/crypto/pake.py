"""Pairing proofs for kiosks: the QR secret proof and the short-code PAKE (SPAKE2).

QR: the person proves it holds the invite's one-time secret with a keyed BLAKE2b over the invite
id, both PeerIds and a nonce the kiosk picked for this stream, so a recorded proof is worthless on
any other stream.

Short code: SPAKE2 (person = side A, kiosk = side B; identities = the two PeerIds) turns the code
into a shared key; each side then sends a MAC over the transcript (both PeerIds, both SPAKE2
messages, the nonce) under a key derived from it. Nothing is trusted before the MAC checks out.
"""

from __future__ import annotations

import nacl.bindings
import nacl.encoding
import nacl.hash
from spake2 import SPAKE2_A, SPAKE2_B
from spake2.spake2 import SPAKEError

MAC_BYTES = 32
_QR_PERSON = b"p2pid-kiosk-qr"
_CONFIRM_PERSON_A = b"p2pid-kiosk-pa"
_CONFIRM_PERSON_B = b"p2pid-kiosk-pb"


class PakeError(ValueError):
    """The SPAKE2 exchange failed: a malformed or reused message."""


def _length_prefixed(*parts: bytes) -> bytes:
    return b"".join(len(part).to_bytes(2, "big") + part for part in parts)


def _mac(key: bytes, person: bytes, message: bytes) -> bytes:
    return nacl.hash.blake2b(
        message,
        digest_size=MAC_BYTES,
        key=key[:64],
        person=person.ljust(16, b"\0"),
        encoder=nacl.encoding.RawEncoder,
    )


def qr_proof(
    secret: bytes, *, invite_id: bytes, kiosk_peer_id: str, person_peer_id: str, nonce: bytes
) -> bytes:
    message = _length_prefixed(invite_id, kiosk_peer_id.encode(), person_peer_id.encode(), nonce)
    return _mac(secret, _QR_PERSON, message)


def macs_equal(expected: bytes, received: bytes) -> bool:
    return len(expected) == len(received) and nacl.bindings.sodium_memcmp(expected, received)


class CodePake:
    """One SPAKE2 run over a short code. `person=True` is side A, the kiosk side B."""

    def __init__(self, code: str, *, person: bool, person_peer_id: str, kiosk_peer_id: str) -> None:
        self.person = person
        self._ids = (person_peer_id.encode(), kiosk_peer_id.encode())
        side = SPAKE2_A if person else SPAKE2_B
        self._spake = side(code.encode(), idA=self._ids[0], idB=self._ids[1])
        self.outbound = self._spake.start()
        self._key: bytes | None = None
        self._transcript = b""

    def finish(self, inbound: bytes, context: bytes) -> None:
        """`context`: what else both MACs cover (the nonce and the kiosk's claims)."""
        try:
            self._key = self._spake.finish(inbound)
        except (SPAKEError, ValueError) as error:
            raise PakeError(f"the PAKE message is not acceptable: {error}") from None
        a_msg, b_msg = (self.outbound, inbound) if self.person else (inbound, self.outbound)
        self._transcript = _length_prefixed(*self._ids, a_msg, b_msg, context)

    def _confirm(self, person_side: bool) -> bytes:
        if self._key is None:
            raise PakeError("the PAKE has not finished")
        return _mac(
            self._key, _CONFIRM_PERSON_A if person_side else _CONFIRM_PERSON_B, self._transcript
        )

    def own_confirmation(self) -> bytes:
        return self._confirm(self.person)

    def check_peer_confirmation(self, received: bytes) -> bool:
        return macs_equal(self._confirm(not self.person), received)
