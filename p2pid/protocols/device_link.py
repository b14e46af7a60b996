"""`/p2pid/device-link/1`: linking a new device to an identity. Sans-IO machines for both
roles (bytes in, bytes and typed results out) and thin trio drivers.

The approver is a device already linked; it dials the new device that shows the code. Each
machine refuses frames out of order, a second use, and anything malformed or mis-proved with
LinkError; nothing is stored by the machines themselves.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from enum import Enum, auto

import msgspec
import nacl.public
import nacl.signing
import trio

from p2pid.crypto.device_link import (
    LinkCryptoError,
    LinkOffer,
    LinkTranscript,
    approver_proof,
    check_proof,
    confirmation_code,
    new_device_proof,
    seal,
    shared_secret,
    unseal,
)
from p2pid.crypto.device_list import DeviceListError, VerifiedDeviceList, verify_device_list
from p2pid.crypto.identity import peer_id_from_public_key
from p2pid.net.host import NetHost, Stream, StreamError, close_quietly, remote_peer_id
from p2pid.protocols.framed import FramedStream
from p2pid.wire.device_link import (
    LINK_PROTOCOL,
    MAX_LINK_FRAME,
    LinkAbort,
    LinkDone,
    LinkGrant,
    LinkHello,
    LinkMessage,
    LinkReply,
    LinkSecrets,
    SyncBatch,
    SyncEnd,
    decode_link_message,
    decode_secrets,
    encode_link_message,
    encode_secrets,
)
from p2pid.wire.framing import FrameError
from p2pid.wire.invite import Invite
from p2pid.wire.records import DevicePrekeys, encode

log = logging.getLogger(__name__)

STEP_TIMEOUT_SECONDS = 30.0
# The new device writes the whole history before it answers: long histories take a while.
DONE_TIMEOUT_SECONDS = 600.0
# How long the person on either device may take to compare the codes.
CONFIRM_TIMEOUT_SECONDS = 300.0
MAX_FAILED_HELLOS = 3
# The stream broke or carried something that is not a frame: the drivers raise LinkError.
_BROKEN = (StreamError, FrameError)


class LinkError(Exception):
    """The link cannot go on; the message says why (shown to the person)."""


def _decode(frame: bytes) -> LinkMessage:
    try:
        message = decode_link_message(frame)
    except (msgspec.DecodeError, ValueError) as error:
        raise LinkError(f"malformed device-link frame: {error}") from None
    if isinstance(message, LinkAbort):
        raise LinkError(f"the other device stopped the link: {message.reason}")
    return message


def _reply_keys(reply: LinkReply) -> bytes:
    """The encoding of what the new device's proof covers besides the transcript."""
    return msgspec.msgpack.encode(
        [reply.device_name, reply.olm_curve25519, reply.olm_ed25519, encode(reply.prekeys)]
    )


@dataclass(frozen=True)
class NewDeviceInfo:
    """What the approver learns of the new device once its proof checked out."""

    peer_id: str
    name: str
    olm_curve25519: str
    olm_ed25519: str
    prekeys: DevicePrekeys
    confirmation: str


class _ApproverState(Enum):
    START = auto()
    HELLO_SENT = auto()
    CONFIRMING = auto()
    GRANTED = auto()
    DONE = auto()


class LinkApprover:
    """The linked device's side: proves the secret, checks the new device, seals the grant."""

    def __init__(
        self,
        invite: Invite,
        *,
        own_peer_id: str,
        identity_key: bytes,
        identity_name: str,
        ephemeral: nacl.public.PrivateKey | None = None,
    ) -> None:
        self._invite = invite
        self._ephemeral = ephemeral or nacl.public.PrivateKey.generate()
        self._identity_name = identity_name
        self.new_peer_id = peer_id_from_public_key(invite.device_key)
        self._transcript = LinkTranscript(
            invite_id=invite.invite_id,
            approver_peer_id=own_peer_id,
            new_peer_id=self.new_peer_id,
            approver_identity_key=identity_key,
            approver_ephemeral=bytes(self._ephemeral.public_key),
            new_ephemeral=invite.identity_key,
        )
        self._shared = shared_secret(self._ephemeral, invite.identity_key)
        self._state = _ApproverState.START

    def _expect(self, state: _ApproverState) -> None:
        if self._state is not state:
            raise LinkError(f"device link out of order: {self._state.name.lower()}")

    def hello(self) -> bytes:
        self._expect(_ApproverState.START)
        self._state = _ApproverState.HELLO_SENT
        return encode_link_message(
            LinkHello(
                invite_id=self._invite.invite_id,
                approver_identity_key=self._transcript.approver_identity_key,
                approver_name=self._identity_name,
                ephemeral_key=self._transcript.approver_ephemeral,
                proof=approver_proof(self._invite.secret, self._transcript),
            )
        )

    def receive_reply(self, frame: bytes) -> NewDeviceInfo:
        self._expect(_ApproverState.HELLO_SENT)
        reply = _decode(frame)
        if not isinstance(reply, LinkReply):
            raise LinkError("the new device did not answer with its keys")
        expected = new_device_proof(self._invite.secret, self._transcript, _reply_keys(reply))
        try:
            check_proof(expected, reply.proof)
        except LinkCryptoError:
            raise LinkError("the new device does not know the code's secret") from None
        if reply.prekeys.device_key != self._invite.device_key:
            raise LinkError("the new device's keys name another device")
        self._state = _ApproverState.CONFIRMING
        return NewDeviceInfo(
            peer_id=self.new_peer_id,
            name=reply.device_name,
            olm_curve25519=reply.olm_curve25519,
            olm_ed25519=reply.olm_ed25519,
            prekeys=reply.prekeys,
            confirmation=confirmation_code(self._invite.secret, self._shared, self._transcript),
        )

    def grant(self, secrets: LinkSecrets) -> bytes:
        self._expect(_ApproverState.CONFIRMING)
        self._state = _ApproverState.GRANTED
        sealed = seal(self._invite.secret, self._shared, self._transcript, encode_secrets(secrets))
        return encode_link_message(LinkGrant(sealed=sealed))

    def receive_done(self, frame: bytes) -> None:
        self._expect(_ApproverState.GRANTED)
        if not isinstance(_decode(frame), LinkDone):
            raise LinkError("the new device did not confirm the link")
        self._state = _ApproverState.DONE


@dataclass(frozen=True)
class ApproverInfo:
    identity_key: bytes
    name: str
    confirmation: str


@dataclass(frozen=True)
class Granted:
    """The identity the new device joins, checked: its list is signed and lists this device."""

    secrets: LinkSecrets
    device_list: VerifiedDeviceList


class _NewDeviceState(Enum):
    WAITING = auto()
    REPLIED = auto()
    SYNCING = auto()
    ENDED = auto()
    SPENT = auto()


class LinkNewDevice:
    """The new device's side, for one code: at most one approver gets through, and the code is
    void after MAX_FAILED_HELLOS wrong proofs."""

    def __init__(
        self,
        offer: LinkOffer,
        *,
        own_peer_id: str,
        device_name: str,
        olm_curve25519: str,
        olm_ed25519: str,
        prekeys: DevicePrekeys,
    ) -> None:
        self._offer = offer
        self._own_peer_id = own_peer_id
        self._reply_fields = (device_name, olm_curve25519, olm_ed25519, prekeys)
        self._state = _NewDeviceState.WAITING
        self._failures = 0
        self._transcript: LinkTranscript | None = None
        self._shared = b""
        self._approver_identity = b""
        self.granted: Granted | None = None

    @property
    def void(self) -> bool:
        return self._failures >= MAX_FAILED_HELLOS

    @property
    def spent(self) -> bool:
        """The code can serve no further link: an approver got past the hello (whatever came
        of it), or too many wrong proofs came."""
        return self.void or self._state is not _NewDeviceState.WAITING

    def receive_hello(self, frame: bytes, approver_peer_id: str) -> tuple[bytes, ApproverInfo]:
        """Check the approver's proof; the reply to send and what to show the person."""
        if self._state is not _NewDeviceState.WAITING or self.void:
            raise LinkError("this code was already used; show a new one")
        hello = _decode(frame)
        if not isinstance(hello, LinkHello):
            raise LinkError("the approver did not start with a hello")
        if hello.invite_id != self._offer.invite.invite_id:
            self._failures += 1
            raise LinkError("the approver answers another code")
        transcript = LinkTranscript(
            invite_id=hello.invite_id,
            approver_peer_id=approver_peer_id,
            new_peer_id=self._own_peer_id,
            approver_identity_key=hello.approver_identity_key,
            approver_ephemeral=hello.ephemeral_key,
            new_ephemeral=bytes(self._offer.ephemeral.public_key),
        )
        try:
            check_proof(approver_proof(self._offer.secret, transcript), hello.proof)
            shared = shared_secret(self._offer.ephemeral, hello.ephemeral_key)
        except LinkCryptoError as error:
            self._failures += 1
            raise LinkError(f"refused the approver: {error}") from None
        name, curve, ed, prekeys = self._reply_fields
        unsigned = LinkReply(
            device_name=name,
            olm_curve25519=curve,
            olm_ed25519=ed,
            prekeys=prekeys,
            proof=b"\0" * 32,
        )
        proof = new_device_proof(self._offer.secret, transcript, _reply_keys(unsigned))
        reply = LinkReply(
            device_name=name, olm_curve25519=curve, olm_ed25519=ed, prekeys=prekeys, proof=proof
        )
        self._transcript, self._shared = transcript, shared
        self._approver_identity = hello.approver_identity_key
        self._state = _NewDeviceState.REPLIED
        info = ApproverInfo(
            identity_key=hello.approver_identity_key,
            name=hello.approver_name,
            confirmation=confirmation_code(self._offer.secret, shared, transcript),
        )
        return encode_link_message(reply), info

    def receive_grant(self, frame: bytes) -> Granted:
        if self._state is not _NewDeviceState.REPLIED or self._transcript is None:
            raise LinkError("device link out of order: a grant before the reply")
        grant = _decode(frame)
        if not isinstance(grant, LinkGrant):
            raise LinkError("the approver did not send the grant")
        try:
            plaintext = unseal(self._offer.secret, self._shared, self._transcript, grant.sealed)
            secrets = decode_secrets(plaintext)
        except LinkCryptoError as error:
            raise LinkError(str(error)) from None
        except (msgspec.DecodeError, ValueError) as error:
            raise LinkError(f"malformed grant: {error}") from None
        signing_key = nacl.signing.SigningKey(secrets.identity_seed)
        if bytes(signing_key.verify_key) != self._approver_identity:
            raise LinkError("the grant's identity is not the approver's")
        try:
            device_list = verify_device_list(secrets.device_list, self._approver_identity)
        except DeviceListError as error:
            raise LinkError(f"the new device list is refused: {error}") from None
        if device_list.device_for_peer(self._own_peer_id) is None:
            raise LinkError("the new device list does not list this device")
        self._state = _NewDeviceState.SYNCING
        self.granted = Granted(secrets=secrets, device_list=device_list)
        return self.granted

    def receive_sync(self, frame: bytes) -> SyncBatch | SyncEnd:
        if self._state is not _NewDeviceState.SYNCING:
            raise LinkError("device link out of order: history before the grant")
        message = _decode(frame)
        if isinstance(message, SyncEnd):
            self._state = _NewDeviceState.ENDED
            return message
        if not isinstance(message, SyncBatch):
            raise LinkError("expected history or its end")
        return message

    def done(self) -> bytes:
        if self._state is not _NewDeviceState.ENDED:
            raise LinkError("device link out of order: done before the history ended")
        self._state = _NewDeviceState.SPENT
        return encode_link_message(LinkDone())


def abort_frame(reason: str) -> bytes:
    return encode_link_message(LinkAbort(reason=reason[:256]))


# -- trio drivers -------------------------------------------------------------------------------


@dataclass
class OpenLink:
    """An approver's link waiting for the person to compare the confirmation codes."""

    framed: FramedStream
    approver: LinkApprover
    device: NewDeviceInfo


async def open_link(net: NetHost, approver: LinkApprover) -> OpenLink:
    """Dial the new device (its hints already given to the dialer), prove the secret and get
    its keys and the confirmation code."""
    stream = await net.new_stream(approver.new_peer_id, [LINK_PROTOCOL])
    framed = FramedStream(stream, MAX_LINK_FRAME)
    try:
        with trio.fail_after(STEP_TIMEOUT_SECONDS):
            await framed.send(approver.hello())
            device = approver.receive_reply(await framed.receive())
    except _BROKEN as error:
        await stream.reset()
        raise LinkError(f"the link with the new device broke off: {error}") from None
    except BaseException:
        await stream.reset()
        raise
    return OpenLink(framed=framed, approver=approver, device=device)


async def finish_link(
    link: OpenLink, secrets: LinkSecrets, batches: Iterable[SyncBatch], end: SyncEnd
) -> None:
    """Hand over the grant and the history; return once the new device committed them."""
    framed = link.framed
    try:
        with trio.fail_after(STEP_TIMEOUT_SECONDS):
            await framed.send(link.approver.grant(secrets))
        for batch in batches:
            with trio.fail_after(STEP_TIMEOUT_SECONDS):
                await framed.send(encode_link_message(batch))
        with trio.fail_after(DONE_TIMEOUT_SECONDS):
            await framed.send(encode_link_message(end))
            link.approver.receive_done(await framed.receive())
    except _BROKEN as error:
        raise LinkError(f"the link with the new device broke off: {error}") from None
    finally:
        await close_quietly(framed.stream)


async def cancel_link(link: OpenLink, reason: str) -> None:
    with trio.move_on_after(2):
        await link.framed.send(abort_frame(reason))
    await link.framed.stream.close()


ConfirmCallback = Callable[[ApproverInfo], Awaitable[bool]]
CommitCallback = Callable[[Granted, list[SyncBatch], SyncEnd], Awaitable[None]]


async def serve_link(
    stream: Stream, machine: LinkNewDevice, confirm: ConfirmCallback, commit: CommitCallback
) -> bool:
    """The new device's stream handler. True once the identity and history are committed."""
    framed = FramedStream(stream, MAX_LINK_FRAME)
    approver_peer_id = remote_peer_id(stream)
    try:
        with trio.fail_after(STEP_TIMEOUT_SECONDS):
            reply, info = machine.receive_hello(await framed.receive(), approver_peer_id)
            await framed.send(reply)
        if not await confirm(info):
            await framed.send(abort_frame("the person on the new device refused"))
            return False
        with trio.fail_after(CONFIRM_TIMEOUT_SECONDS):  # the approver's person compares codes
            granted = machine.receive_grant(await framed.receive())
        batches: list[SyncBatch] = []
        while True:
            with trio.fail_after(STEP_TIMEOUT_SECONDS):
                message = machine.receive_sync(await framed.receive())
            if isinstance(message, SyncEnd):
                break
            batches.append(message)
        await commit(granted, batches, message)
        with trio.fail_after(STEP_TIMEOUT_SECONDS):
            await framed.send(machine.done())
        return True
    except LinkError as error:
        log.info("device link from %s refused: %s", approver_peer_id, error)
        with trio.move_on_after(2), contextlib.suppress(*_BROKEN):
            await framed.send(abort_frame(str(error)))
        raise
    except _BROKEN as error:
        raise LinkError(f"the link with the approving device broke off: {error}") from None
    finally:
        await close_quietly(stream)
