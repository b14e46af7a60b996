"""Messages of the kiosk protocols. Sans-IO; see docs/protocol.md, "Kiosk pairing and control".

- `/p2pid/kiosk-pair/1`: a person's device pairs with a kiosk (QR invite or short code + SPAKE2)
  and hands it a signed grant.
- `/p2pid/kiosk/1`: one request, one answer per stream: invoke a routine, revoke a grant, and
  the owner's operations (guests, remove a guest, reset).
- `/p2pid/kiosk-approval/1`: the kiosk asks its owner's device whether a new person may pair.

Every record is MessagePack, decoded strictly (unknown tag, missing field, wrong type -> a
DecodeError); sizes are bounded by the frame limit and by `check_*` below.
"""

from __future__ import annotations

from enum import StrEnum

import msgspec

from p2pid.wire.records import SignedDeviceList

PAIR_PROTOCOL_ID = "/p2pid/kiosk-pair/1"
CONTROL_PROTOCOL_ID = "/p2pid/kiosk/1"
APPROVAL_PROTOCOL_ID = "/p2pid/kiosk-approval/1"
MAX_FRAME_BYTES = 64 * 1024

GRANT_ID_BYTES = 16
NONCE_BYTES = 32
MAX_ARGS = 16
MAX_ARG_CHARS = 1024
MAX_NAME_CHARS = 64
MAX_ROUTINE_NAME_CHARS = 64
MAX_OUTPUT_CHARS = 16 * 1024
MAX_ADDRS = 8
MAX_SCOPES = 16


class Role(StrEnum):
    OWNER = "owner"
    GUEST = "guest"


class PairMethod(StrEnum):
    QR = "qr"
    CODE = "code"


class Refusal(StrEnum):
    """Why a kiosk refused; the message beside it says it in words."""

    UNKNOWN_CODE = "unknown_code"  # no such invite / short code (rotated, expired, never shown)
    EXPIRED = "expired"
    BAD_PROOF = "bad_proof"
    LOCKED = "locked"
    BAD_GRANT = "bad_grant"
    NOT_APPROVED = "not_approved"
    OWNER_UNREACHABLE = "owner_unreachable"
    NOT_PAIRED = "not_paired"  # the kiosk does not know the grant (unknown, revoked, replaced)
    GRANT_EXPIRED = "grant_expired"  # a known grant past its expiry (revoking it still works)
    UNKNOWN_DEVICE = "unknown_device"  # the device speaking is not on the person's device list
    NOT_ALLOWED = "not_allowed"  # the role may not do this
    BAD_ARGS = "bad_args"
    UNKNOWN_ROUTINE = "unknown_routine"
    PROTOCOL = "protocol"
    NOT_FOUND = "not_found"


# -- grants --------------------------------------------------------------------------------


class GrantBody(msgspec.Struct, frozen=True, kw_only=True):
    """What a person signs for a kiosk: who, which kiosk, which role, until when."""

    grant_id: bytes
    identity_key: bytes  # the person's identity public key; it signs this
    kiosk_identity_key: bytes
    kiosk_peer_id: str
    role: Role  # the role asked for; the kiosk decides (its owner's identity -> owner)
    scopes: list[str] = []
    issued_at_ms: int
    expires_at_ms: int


class SignedGrant(msgspec.Struct, frozen=True, kw_only=True):
    body: bytes  # MessagePack of a GrantBody, exactly as signed
    signature: bytes  # Ed25519 by body.identity_key over GRANT_CONTEXT + body


# -- pairing -------------------------------------------------------------------------------


class RoutineArgInfo(msgspec.Struct, frozen=True, kw_only=True):
    name: str
    kind: str


class RoutineInfo(msgspec.Struct, frozen=True, kw_only=True):
    name: str
    description: str = ""
    args: list[RoutineArgInfo] = []
    roles: list[str] = []


class PairHello(msgspec.Struct, frozen=True, kw_only=True, tag="hello"):
    """Person -> kiosk. QR: names the invite. Code: carries the person's SPAKE2 message."""

    method: PairMethod
    invite_id: bytes = b""
    pake: bytes = b""


class PairChallenge(msgspec.Struct, frozen=True, kw_only=True, tag="challenge"):
    """Kiosk -> person: a fresh nonce; for the code method the kiosk's SPAKE2 message and its
    key confirmation."""

    nonce: bytes
    kiosk_identity_key: bytes
    has_owner: bool  # so the person can ask for the role it will likely get
    pake: bytes = b""
    confirm: bytes = b""  # MAC over the transcript, kiosk_identity_key and has_owner included


class PairRequest(msgspec.Struct, frozen=True, kw_only=True, tag="request"):
    """Person -> kiosk: the proof (QR secret or key confirmation), then the grant and who."""

    proof: bytes
    grant: SignedGrant
    device_list: SignedDeviceList
    display_name: str
    addrs: list[str] = []


class PairAccepted(msgspec.Struct, frozen=True, kw_only=True, tag="accepted"):
    role: Role
    kiosk_name: str
    routines: list[RoutineInfo] = []


class PairRefused(msgspec.Struct, frozen=True, kw_only=True, tag="refused"):
    reason: Refusal
    message: str


PairMessage = PairHello | PairChallenge | PairRequest | PairAccepted | PairRefused

# -- control -------------------------------------------------------------------------------


class Invoke(msgspec.Struct, frozen=True, kw_only=True, tag="invoke"):
    grant_id: bytes
    routine: str
    args: list[str] = []
    device_list: SignedDeviceList | None = None  # a newer list of the person's devices


class RevokeGrant(msgspec.Struct, frozen=True, kw_only=True, tag="revoke"):
    """Log out: honoured for a device of the grant's person even past the grant's expiry."""

    grant_id: bytes
    device_list: SignedDeviceList | None = None  # a newer list of the person's devices


class ListGuests(msgspec.Struct, frozen=True, kw_only=True, tag="guests"):
    grant_id: bytes  # the owner's


class RemoveGuest(msgspec.Struct, frozen=True, kw_only=True, tag="remove_guest"):
    grant_id: bytes  # the owner's
    guest_identity_key: bytes


class ResetKiosk(msgspec.Struct, frozen=True, kw_only=True, tag="reset"):
    grant_id: bytes  # the owner's


class InvokeResult(msgspec.Struct, frozen=True, kw_only=True, tag="result"):
    ok: bool
    exit_code: int | None
    output: str
    duration_ms: float


class GuestInfo(msgspec.Struct, frozen=True, kw_only=True):
    identity_key: bytes
    name: str
    role: Role
    paired_at_ms: int


class GuestList(msgspec.Struct, frozen=True, kw_only=True, tag="guest_list"):
    guests: list[GuestInfo]


class ControlDone(msgspec.Struct, frozen=True, kw_only=True, tag="done"):
    pass


class ControlRefused(msgspec.Struct, frozen=True, kw_only=True, tag="refused"):
    reason: Refusal
    message: str


ControlRequest = Invoke | RevokeGrant | ListGuests | RemoveGuest | ResetKiosk
ControlReply = InvokeResult | GuestList | ControlDone | ControlRefused

# -- approval ------------------------------------------------------------------------------


class ApprovalRequest(msgspec.Struct, frozen=True, kw_only=True, tag="approval_request"):
    """Kiosk -> its owner's device: may this person pair as a guest?"""

    owner_grant_id: bytes
    person_name: str
    person_identity_key: bytes


class ApprovalAnswer(msgspec.Struct, frozen=True, kw_only=True, tag="approval_answer"):
    accept: bool


ApprovalMessage = ApprovalRequest | ApprovalAnswer


class KioskWireError(ValueError):
    """A well-formed record with a field out of bounds."""


_pair_decoder: msgspec.msgpack.Decoder[PairMessage] = msgspec.msgpack.Decoder(PairMessage)
_request_decoder: msgspec.msgpack.Decoder[ControlRequest] = msgspec.msgpack.Decoder(ControlRequest)
_reply_decoder: msgspec.msgpack.Decoder[ControlReply] = msgspec.msgpack.Decoder(ControlReply)
_approval_decoder: msgspec.msgpack.Decoder[ApprovalMessage] = msgspec.msgpack.Decoder(
    ApprovalMessage
)
_grant_decoder: msgspec.msgpack.Decoder[GrantBody] = msgspec.msgpack.Decoder(GrantBody)


def encode(record: msgspec.Struct) -> bytes:
    return msgspec.msgpack.encode(record)


def decode_pair(data: bytes) -> PairMessage:
    """Strict: raises msgspec.DecodeError or KioskWireError (both ValueError)."""
    message = _pair_decoder.decode(data)
    if isinstance(message, PairRequest):
        check_name(message.display_name)
        if len(message.addrs) > MAX_ADDRS:
            raise KioskWireError(f"at most {MAX_ADDRS} addresses")
    return message


def decode_control_request(data: bytes) -> ControlRequest:
    message = _request_decoder.decode(data)
    if isinstance(message, Invoke):
        check_invoke(message.routine, message.args)
    return message


def decode_control_reply(data: bytes) -> ControlReply:
    return _reply_decoder.decode(data)


def decode_approval(data: bytes) -> ApprovalMessage:
    message = _approval_decoder.decode(data)
    if isinstance(message, ApprovalRequest):
        check_name(message.person_name)
    return message


def decode_grant_body(data: bytes) -> GrantBody:
    body = _grant_decoder.decode(data)
    if len(body.grant_id) != GRANT_ID_BYTES:
        raise KioskWireError(f"a grant id is {GRANT_ID_BYTES} bytes")
    if len(body.identity_key) != 32 or len(body.kiosk_identity_key) != 32:
        raise KioskWireError("a grant names 32-byte identity keys")
    if len(body.scopes) > MAX_SCOPES:
        raise KioskWireError(f"at most {MAX_SCOPES} scopes")
    return body


def check_name(name: str) -> str:
    if not 1 <= len(name) <= MAX_NAME_CHARS or not name.isprintable():
        raise KioskWireError(f"a name is 1..{MAX_NAME_CHARS} printable characters")
    return name


def check_invoke(routine: str, args: list[str]) -> None:
    if not 1 <= len(routine) <= MAX_ROUTINE_NAME_CHARS:
        raise KioskWireError(f"a routine name is 1..{MAX_ROUTINE_NAME_CHARS} characters")
    if len(args) > MAX_ARGS:
        raise KioskWireError(f"at most {MAX_ARGS} arguments")
    if any(len(arg) > MAX_ARG_CHARS for arg in args):
        raise KioskWireError(f"an argument is at most {MAX_ARG_CHARS} characters")
