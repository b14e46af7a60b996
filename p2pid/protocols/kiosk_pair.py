"""Kiosk pairing (`/p2pid/kiosk-pair/1`) and the owner's approval (`/p2pid/kiosk-approval/1`).

Noise has authenticated both PeerIds. The person proves it saw the kiosk's screen: the QR
invite's secret (a keyed hash bound to the invite, both PeerIds and a nonce the kiosk picked for
this stream) or the short code (SPAKE2 bound to both PeerIds, key confirmation both ways). Only
then does the kiosk look at the grant: signed by the person's identity, for this kiosk, live,
with a device list signed by the same identity that lists the device speaking.

    person                                              kiosk
      | -- hello(method, invite_id | spake2 msg) ------> |  code: counts an attempt
      | <- challenge(nonce, kiosk key, has_owner,        |
      |              [spake2 msg, kiosk confirm]) ------ |
      |  checks the kiosk's confirmation (code)          |
      | -- request(proof, grant, device list, name) ---> |  checks proof, grant, devices;
      |                                                  |  a guest: asks the owner; stores
      | <- accepted(role, name, routines) | refused ---- |

`PersonPairing` and `KioskPairing` are sans-IO; `pair` and `serve_pair` drive them on a stream.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol

import msgspec
import trio

from p2pid.crypto.device_list import DeviceListError, VerifiedDeviceList, verify_device_list
from p2pid.crypto.grants import GrantError, VerifiedGrant, verify_grant
from p2pid.crypto.pake import CodePake, PakeError, macs_equal, qr_proof
from p2pid.net.host import NetHost, Stream, StreamError, remote_peer_id
from p2pid.protocols.framed import FramedStream
from p2pid.wire.framing import FrameError
from p2pid.wire.invite import Invite
from p2pid.wire.kiosk import (
    APPROVAL_PROTOCOL_ID,
    MAX_FRAME_BYTES,
    NONCE_BYTES,
    PAIR_PROTOCOL_ID,
    ApprovalAnswer,
    ApprovalRequest,
    KioskWireError,
    PairAccepted,
    PairChallenge,
    PairHello,
    PairMessage,
    PairMethod,
    PairRefused,
    PairRequest,
    Refusal,
    Role,
    SignedGrant,
    decode_approval,
    decode_pair,
    encode,
)
from p2pid.wire.records import SignedDeviceList

log = logging.getLogger(__name__)

STEP_TIMEOUT_SECONDS = 15.0
APPROVAL_TIMEOUT_SECONDS = 120.0

# What a stream that breaks under a protocol raises: reset, cut short (StreamClosedEarly is a
# FrameError), an oversized frame, a dead connection. Dialling raises NetError besides.
STREAM_ERRORS: tuple[type[Exception], ...] = (
    StreamError,
    FrameError,
    OSError,
    trio.BrokenResourceError,
    trio.ClosedResourceError,
)


class PairError(Exception):
    """Pairing did not complete; nothing was stored on this side."""


class PairRefusedError(PairError):
    def __init__(self, reason: Refusal, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class PairProtocolError(PairError):
    """The other side broke the protocol: malformed, out of order, or unauthenticated."""


def _decode(frame: bytes) -> PairMessage:
    try:
        return decode_pair(frame)
    except (msgspec.DecodeError, KioskWireError, ValueError) as error:
        raise PairProtocolError(f"malformed kiosk-pair message: {error}") from None


def _context(nonce: bytes, kiosk_identity_key: bytes, has_owner: bool) -> bytes:
    return nonce + kiosk_identity_key + bytes([has_owner])


# -- the person's machine ------------------------------------------------------------------


class PersonPairing:
    """The person's side of one pairing: by QR `invite`, or by `short_code`."""

    def __init__(
        self,
        *,
        own_peer_id: str,
        kiosk_peer_id: str,
        invite: Invite | None = None,
        short_code: str | None = None,
    ) -> None:
        if (invite is None) == (short_code is None):
            raise ValueError("pair by invite or by short code, not both or neither")
        self.own_peer_id = own_peer_id
        self.kiosk_peer_id = kiosk_peer_id
        self.invite = invite
        self._pake = (
            CodePake(
                short_code, person=True, person_peer_id=own_peer_id, kiosk_peer_id=kiosk_peer_id
            )
            if short_code is not None
            else None
        )
        self.challenge: PairChallenge | None = None
        self._state = "start"

    def hello(self) -> bytes:
        if self._state != "start":
            raise PairProtocolError("hello already sent")
        self._state = "sent_hello"
        if self.invite is not None:
            return encode(PairHello(method=PairMethod.QR, invite_id=self.invite.invite_id))
        assert self._pake is not None
        return encode(PairHello(method=PairMethod.CODE, pake=self._pake.outbound))

    def receive_challenge(self, frame: bytes) -> PairChallenge:
        if self._state != "sent_hello":
            raise PairProtocolError("no challenge expected now")
        self._state = "failed"
        message = _decode(frame)
        if isinstance(message, PairRefused):
            raise PairRefusedError(message.reason, message.message)
        if not isinstance(message, PairChallenge):
            raise PairProtocolError(f"expected a challenge, got {type(message).__name__}")
        if len(message.nonce) != NONCE_BYTES or len(message.kiosk_identity_key) != 32:
            raise PairProtocolError("malformed challenge")
        if self.invite is not None:
            if message.kiosk_identity_key != self.invite.identity_key:
                raise PairProtocolError("the kiosk names another identity than its QR code")
        else:
            assert self._pake is not None
            try:
                self._pake.finish(
                    message.pake,
                    _context(message.nonce, message.kiosk_identity_key, message.has_owner),
                )
            except PakeError as error:
                raise PairProtocolError(str(error)) from None
            if not self._pake.check_peer_confirmation(message.confirm):
                raise PairRefusedError(
                    Refusal.BAD_PROOF, "wrong short code (or not this kiosk's): check and retry"
                )
        self.challenge = message
        self._state = "challenged"
        return message

    def request(
        self, grant: SignedGrant, device_list: SignedDeviceList, display_name: str, addrs: list[str]
    ) -> bytes:
        if self._state != "challenged" or self.challenge is None:
            raise PairProtocolError("not challenged")
        self._state = "sent_request"
        if self.invite is not None:
            proof = qr_proof(
                self.invite.secret,
                invite_id=self.invite.invite_id,
                kiosk_peer_id=self.kiosk_peer_id,
                person_peer_id=self.own_peer_id,
                nonce=self.challenge.nonce,
            )
        else:
            assert self._pake is not None
            proof = self._pake.own_confirmation()
        return encode(
            PairRequest(
                proof=proof,
                grant=grant,
                device_list=device_list,
                display_name=display_name,
                addrs=addrs,
            )
        )

    def receive_result(self, frame: bytes) -> PairAccepted:
        if self._state != "sent_request":
            raise PairProtocolError("no result expected now")
        self._state = "done"
        message = _decode(frame)
        if isinstance(message, PairRefused):
            raise PairRefusedError(message.reason, message.message)
        if not isinstance(message, PairAccepted):
            raise PairProtocolError(f"expected accepted, got {type(message).__name__}")
        return message


# -- the kiosk's machine --------------------------------------------------------------------


@dataclass(frozen=True)
class AdmittedPerson:
    """Someone who proved they saw the screen, with a valid grant from a device of theirs."""

    grant: VerifiedGrant
    devices: VerifiedDeviceList
    display_name: str
    addrs: list[str]
    peer_id: str

    @property
    def identity_key(self) -> bytes:
        return self.grant.body.identity_key

    @property
    def role(self) -> Role:
        return self.grant.body.role


class KioskPairing:
    """The kiosk's side of one pairing, on one stream from `person_peer_id`."""

    def __init__(self, *, own_peer_id: str, own_identity_key: bytes, person_peer_id: str) -> None:
        self.own_peer_id = own_peer_id
        self.own_identity_key = own_identity_key
        self.person_peer_id = person_peer_id
        self.hello: PairHello | None = None
        self.nonce = b""
        self._pake: CodePake | None = None
        self._state = "start"

    def receive_hello(self, frame: bytes) -> PairHello:
        if self._state != "start":
            raise PairProtocolError("hello already received")
        message = _decode(frame)
        if not isinstance(message, PairHello):
            raise PairProtocolError(f"expected hello, got {type(message).__name__}")
        if message.method is PairMethod.CODE and not message.pake:
            raise PairProtocolError("a short-code hello carries a SPAKE2 message")
        if message.method is PairMethod.QR and len(message.invite_id) != 16:
            raise PairProtocolError("a QR hello names a 16-byte invite id")
        self.hello = message
        self._state = "hello"
        return message

    def challenge(self, *, has_owner: bool, short_code: str | None = None) -> bytes:
        """The challenge; for a short-code hello, `short_code` is the code on screen now."""
        if self._state != "hello" or self.hello is None:
            raise PairProtocolError("no hello yet")
        self.nonce = secrets.token_bytes(NONCE_BYTES)
        pake = confirm = b""
        if self.hello.method is PairMethod.CODE:
            if short_code is None:
                raise ValueError("a short-code pairing needs the code on screen")
            self._pake = CodePake(
                short_code,
                person=False,
                person_peer_id=self.person_peer_id,
                kiosk_peer_id=self.own_peer_id,
            )
            try:
                self._pake.finish(
                    self.hello.pake, _context(self.nonce, self.own_identity_key, has_owner)
                )
            except PakeError as error:
                raise PairProtocolError(str(error)) from None
            pake, confirm = self._pake.outbound, self._pake.own_confirmation()
        self._state = "challenged"
        return encode(
            PairChallenge(
                nonce=self.nonce,
                kiosk_identity_key=self.own_identity_key,
                has_owner=has_owner,
                pake=pake,
                confirm=confirm,
            )
        )

    def receive_request(self, frame: bytes) -> PairRequest:
        if self._state != "challenged":
            raise PairProtocolError("no request expected now")
        self._state = "requested"
        message = _decode(frame)
        if not isinstance(message, PairRequest):
            raise PairProtocolError(f"expected a request, got {type(message).__name__}")
        self.request = message
        return message

    def proof_ok(self, invite_secret: bytes | None) -> bool:
        """Whether the request's proof holds: the QR invite's secret, or the code's key."""
        assert self.hello is not None and self._state == "requested"
        if self.hello.method is PairMethod.CODE:
            assert self._pake is not None
            return self._pake.check_peer_confirmation(self.request.proof)
        if invite_secret is None:
            return False
        expected = qr_proof(
            invite_secret,
            invite_id=self.hello.invite_id,
            kiosk_peer_id=self.own_peer_id,
            person_peer_id=self.person_peer_id,
            nonce=self.nonce,
        )
        return macs_equal(expected, self.request.proof)

    def admit(self, now_ms: int) -> AdmittedPerson:
        """The grant and device list checked; raises PairRefusedError(BAD_GRANT)."""
        request = self.request
        try:
            grant = verify_grant(
                request.grant,
                kiosk_identity_key=self.own_identity_key,
                kiosk_peer_id=self.own_peer_id,
                now_ms=now_ms,
            )
            devices = verify_device_list(request.device_list, grant.body.identity_key)
        except (GrantError, DeviceListError) as error:
            raise PairRefusedError(Refusal.BAD_GRANT, f"grant refused: {error}") from None
        if devices.device_for_peer(self.person_peer_id) is None:
            raise PairRefusedError(
                Refusal.BAD_GRANT, "grant refused: the device list does not list this device"
            )
        return AdmittedPerson(
            grant=grant,
            devices=devices,
            display_name=request.display_name,
            addrs=list(request.addrs),
            peer_id=self.person_peer_id,
        )

    @staticmethod
    def accepted(role: Role, kiosk_name: str, routines: list[dict[str, object]]) -> bytes:
        accepted = msgspec.convert(
            {"role": role, "kiosk_name": kiosk_name, "routines": routines}, PairAccepted
        )
        return encode(accepted)

    @staticmethod
    def refused(reason: Refusal, message: str) -> bytes:
        return encode(PairRefused(reason=reason, message=message))


# -- trio drivers ----------------------------------------------------------------------------


class PairingDesk(Protocol):
    """What the pairing handler needs of the kiosk: codes, attempts, policy, storing."""

    own_identity_key: bytes

    def has_owner_now(self) -> bool: ...

    async def begin_code_attempt(self) -> str:
        """The short code on screen; counts (and stores) an attempt. Raises PairRefusedError
        (locked)."""
        ...

    async def code_attempt_succeeded(self) -> None: ...

    def invite_secret(self, invite_id: bytes) -> bytes:
        """The live QR invite's secret; raises PairRefusedError (unknown or expired)."""
        ...

    def now_ms(self) -> int: ...

    async def admit(self, person: AdmittedPerson) -> tuple[Role, list[dict[str, object]]]:
        """Check the role, ask the owner for a guest, store; raises PairRefusedError."""
        ...

    @property
    def kiosk_name(self) -> str: ...


async def serve_pair(stream: Stream, net: NetHost, desk: PairingDesk) -> None:
    """The kiosk's stream handler."""
    machine = KioskPairing(
        own_peer_id=net.peer_id,
        own_identity_key=desk.own_identity_key,
        person_peer_id=remote_peer_id(stream),
    )
    framed = FramedStream(stream, MAX_FRAME_BYTES)
    try:
        with trio.fail_after(STEP_TIMEOUT_SECONDS):
            hello = machine.receive_hello(await framed.receive())
            code = await desk.begin_code_attempt() if hello.method is PairMethod.CODE else None
            secret = desk.invite_secret(hello.invite_id) if code is None else None
            await framed.send(machine.challenge(has_owner=desk.has_owner_now(), short_code=code))
            machine.receive_request(await framed.receive())
        if not machine.proof_ok(secret):
            what = "short code" if code is not None else "QR code's secret"
            raise PairRefusedError(Refusal.BAD_PROOF, f"wrong {what}")
        if code is not None:
            await desk.code_attempt_succeeded()
        person = machine.admit(desk.now_ms())
        role, routines = await desk.admit(person)
        with trio.fail_after(STEP_TIMEOUT_SECONDS):
            await framed.send(machine.accepted(role, desk.kiosk_name, routines))
    except PairRefusedError as refusal:
        log.info("refused a pairing: %s", refusal)
        with trio.move_on_after(STEP_TIMEOUT_SECONDS):
            await framed.send(machine.refused(refusal.reason, str(refusal)))
    await stream.close()


async def pair(
    net: NetHost,
    machine: PersonPairing,
    make_request: Callable[[PairChallenge], Awaitable[bytes]],
) -> PairAccepted:
    """The person's driver: `make_request` signs the grant once the kiosk is authenticated."""
    stream = await net.new_stream(machine.kiosk_peer_id, [PAIR_PROTOCOL_ID])
    framed = FramedStream(stream, MAX_FRAME_BYTES)
    try:
        with trio.fail_after(STEP_TIMEOUT_SECONDS):
            await framed.send(machine.hello())
            challenge = machine.receive_challenge(await framed.receive())
            await framed.send(await make_request(challenge))
        # A guest waits while the kiosk asks its owner.
        with trio.fail_after(APPROVAL_TIMEOUT_SECONDS + STEP_TIMEOUT_SECONDS):
            return machine.receive_result(await framed.receive())
    finally:
        await stream.close()


# -- approval --------------------------------------------------------------------------------


class ApprovalDesk(Protocol):
    """The owner's node: is this a kiosk I own, and what does my person answer?"""

    async def ask_owner(self, kiosk_peer_id: str, request: ApprovalRequest) -> bool | None:
        """True/False: the answer; None: not a kiosk this node owns (the stream is reset)."""
        ...


async def serve_approval(stream: Stream, desk: ApprovalDesk) -> None:
    """The owner's stream handler."""
    framed = FramedStream(stream, MAX_FRAME_BYTES)
    with trio.fail_after(STEP_TIMEOUT_SECONDS):
        message = decode_approval(await framed.receive())
    if not isinstance(message, ApprovalRequest):
        await stream.reset()
        return
    answer = await desk.ask_owner(remote_peer_id(stream), message)
    if answer is None:
        await stream.reset()
        return
    with trio.fail_after(STEP_TIMEOUT_SECONDS):
        await framed.send(encode(ApprovalAnswer(accept=answer)))
    await stream.close()


async def request_approval(
    net: NetHost, owner_peer_id: str, request: ApprovalRequest, timeout_s: float
) -> bool:
    """Ask one device of the owner; raises NetError / trio.TooSlowError / PairProtocolError."""
    stream = await net.new_stream(owner_peer_id, [APPROVAL_PROTOCOL_ID])
    framed = FramedStream(stream, MAX_FRAME_BYTES)
    try:
        with trio.fail_after(timeout_s):
            await framed.send(encode(request))
            try:
                answer = decode_approval(await framed.receive())
            except (msgspec.DecodeError, KioskWireError) as error:
                raise PairProtocolError(f"malformed approval answer: {error}") from None
        if not isinstance(answer, ApprovalAnswer):
            raise PairProtocolError("expected an approval answer")
        return answer.accept
    finally:
        await stream.close()
