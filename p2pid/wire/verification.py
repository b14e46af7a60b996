"""SAS verification (`/p2pid/sas/1`): its messages, the records the node returns, its events.

See docs/protocol.md. Every message carries the verification id the initiator drew, so a message
of one verification is never taken for another's.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated

import msgspec

from p2pid.wire.events import Event

PROTOCOL_ID = "/p2pid/sas/1"
MAX_FRAME_BYTES = 1024
VERIFICATION_ID_BYTES = 16
SAS_PUBLIC_KEY_BYTES = 32  # Curve25519
COMMITMENT_BYTES = 32
MAX_MAC_CHARS = 64  # vodozemac's MAC is 43 characters of unpadded base64

VerificationId = Annotated[
    bytes, msgspec.Meta(min_length=VERIFICATION_ID_BYTES, max_length=VERIFICATION_ID_BYTES)
]
SasPublicKey = Annotated[
    bytes, msgspec.Meta(min_length=SAS_PUBLIC_KEY_BYTES, max_length=SAS_PUBLIC_KEY_BYTES)
]
Commitment = Annotated[
    bytes, msgspec.Meta(min_length=COMMITMENT_BYTES, max_length=COMMITMENT_BYTES)
]
MacTag = Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_MAC_CHARS)]


class CancelReason(StrEnum):
    MISMATCH = "mismatch"  # a person said the codes differ
    USER_CANCELLED = "user_cancelled"  # a person declined or gave up
    TIMEOUT = "timeout"  # nobody finished within the time allowed
    BUSY = "busy"  # a verification with this contact is already running
    BAD_COMMITMENT = "bad_commitment"  # the initiator's key does not match its commitment
    BAD_MAC = "bad_mac"  # the two sides do not hold the same keys
    PROTOCOL_ERROR = "protocol_error"  # a malformed or out-of-order message
    DISCONNECTED = "disconnected"  # the stream broke (never sent, only reported locally)


# -- messages ----------------------------------------------------------------------------------


class SasStart(msgspec.Struct, frozen=True, kw_only=True, tag="start"):
    """Initiator -> responder: a new verification, committing to the initiator's SAS key."""

    verification_id: VerificationId
    commitment: Commitment


class SasAccept(msgspec.Struct, frozen=True, kw_only=True, tag="accept"):
    """Responder -> initiator, once its person accepted: the responder's SAS key."""

    verification_id: VerificationId
    public_key: SasPublicKey


class SasKey(msgspec.Struct, frozen=True, kw_only=True, tag="key"):
    """Initiator -> responder: the initiator's SAS key, which must match the commitment."""

    verification_id: VerificationId
    public_key: SasPublicKey


class SasMac(msgspec.Struct, frozen=True, kw_only=True, tag="mac"):
    """Either way, once the sender's person confirmed the codes match."""

    verification_id: VerificationId
    mac: MacTag


class SasCancel(msgspec.Struct, frozen=True, kw_only=True, tag="cancel"):
    """Either way, at any time before the end: nothing gets verified."""

    verification_id: VerificationId
    reason: CancelReason


SasMessage = SasStart | SasAccept | SasKey | SasMac | SasCancel

_decoder: msgspec.msgpack.Decoder[SasMessage] = msgspec.msgpack.Decoder(SasMessage)


def encode_message(message: SasMessage) -> bytes:
    return msgspec.msgpack.encode(message)


def decode_message(data: bytes) -> SasMessage:
    """Strict: raises msgspec.DecodeError (a ValueError) on anything malformed."""
    return _decoder.decode(data)


# -- what the node returns ---------------------------------------------------------------------


class VerificationState(StrEnum):
    REQUESTED = "requested"  # incoming: waiting for this person to accept
    WAITING = "waiting"  # waiting for the other side (to accept, or for its key)
    KEYS_READY = "keys_ready"  # compare the codes now
    CONFIRMED = "confirmed"  # this person confirmed; waiting for the other side's
    VERIFIED = "verified"
    CANCELLED = "cancelled"


class VerificationView(msgspec.Struct, kw_only=True):
    """One verification as its person sees it. `emoji` and `decimals` are empty until ready."""

    verification_id: str  # hex
    identity_id: str
    name: str
    incoming: bool
    state: VerificationState
    emoji: list[tuple[str, str]] = []  # seven (symbol, name)
    decimals: list[int] = []  # three numbers, 1000..9191
    peer_confirmed: bool = False
    started_at_ms: int


class VerificationOutcome(msgspec.Struct, kw_only=True):
    verification_id: str
    identity_id: str
    name: str
    verified: bool
    reason: CancelReason | None = None  # why not, when not
    by_peer: bool = False  # the other side cancelled


# -- events ------------------------------------------------------------------------------------


class VerificationRequested(Event, tag="verification.requested"):
    """A contact asks to verify: accept it to see the codes, or cancel it."""

    verification_id: str
    identity_id: str
    name: str


class VerificationKeysReady(Event, tag="verification.keys_ready"):
    """Both sides now show these codes; each person says whether theirs match."""

    verification_id: str
    identity_id: str
    name: str
    incoming: bool
    emoji: list[tuple[str, str]]
    decimals: list[int]


class VerificationDone(Event, tag="verification.done"):
    verification_id: str
    identity_id: str
    name: str
    verified: bool
    reason: CancelReason | None = None
    by_peer: bool = False


VerificationEvent = VerificationRequested | VerificationKeysReady | VerificationDone
