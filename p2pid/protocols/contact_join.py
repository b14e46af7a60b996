"""Contact join (`/p2pid/contact-join/1`): turning a scanned invite into two verified contacts.

Modelled on Delta Chat's SecureJoin and Briar's BQP. Noise has already authenticated both
PeerIds. The joiner proves it holds the invite's secret (a keyed hash bound to the invite and
both PeerIds); the inviter is authenticated by the invite itself (signed by its identity, naming
its device key, which must be the device at the other end of the stream). Each side's card
carries a device list signed by its identity that must include the device it talks to.

    joiner                                     inviter
      | -- hello(invite_id, identity, proof, card) -> |  checks proof, redeems a use,
      |                                               |  stores joiner as verified (commit)
      | <- welcome(proof, card) | refused(reason) --- |
      |  checks card, stores inviter (commit)         |
      | -- done ------------------------------------> |

`Joiner` and `Inviter` are sans-IO: bytes in, bytes out. The trio drivers below add the stream.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Protocol

import msgspec
import trio

from p2pid.crypto.identity import peer_id_from_public_key
from p2pid.crypto.join_proof import ProofRole, join_proof, proofs_equal
from p2pid.net.host import NetHost, Stream, remote_peer_id
from p2pid.protocols.cards import CardError, JoinedContact, verify_card
from p2pid.protocols.framed import FramedStream
from p2pid.wire.contact_join import (
    MAX_FRAME_BYTES,
    PROTOCOL_ID,
    JoinDone,
    JoinHello,
    JoinMessage,
    JoinRefused,
    JoinWelcome,
    RefusalReason,
    decode_message,
    encode_message,
)
from p2pid.wire.invite import Invite
from p2pid.wire.records import ContactCard

log = logging.getLogger(__name__)

STEP_TIMEOUT_SECONDS = 15.0


class JoinError(Exception):
    """The join did not complete; nothing was stored on this side."""


class JoinRefusedError(JoinError):
    def __init__(self, reason: RefusalReason) -> None:
        super().__init__(_REFUSAL_TEXT.get(reason, str(reason)))
        self.reason = reason


class JoinProtocolError(JoinError):
    """The other side broke the protocol: malformed, out of order, or unauthenticated."""


_REFUSAL_TEXT = {
    RefusalReason.UNKNOWN_INVITE: "the inviter does not know this invite (cancelled or never made)",
    RefusalReason.EXPIRED: "the invite has expired",
    RefusalReason.SPENT: "the invite has been used up",
    RefusalReason.CANCELLED: "the invite was cancelled",
    RefusalReason.BAD_PROOF: "the inviter refused the proof of the invite's secret",
    RefusalReason.BAD_CARD: "the inviter refused this node's contact card",
    RefusalReason.BLOCKED: "the inviter refused the join",
}


def _decode(frame: bytes) -> JoinMessage:
    try:
        return decode_message(frame)
    except (msgspec.DecodeError, ValueError) as error:
        raise JoinProtocolError(f"malformed contact-join message: {error}") from None


def _verified_card(card: ContactCard, identity_key: bytes, peer_id: str) -> JoinedContact:
    try:
        return verify_card(card, identity_key, peer_id)
    except CardError as error:
        raise JoinProtocolError(str(error)) from None


class Joiner:
    """The joiner's side of one join."""

    def __init__(
        self,
        invite: Invite,
        *,
        own_peer_id: str,
        own_identity_key: bytes,
        own_card: ContactCard,
    ) -> None:
        self.invite = invite
        self.inviter_peer_id = peer_id_from_public_key(invite.device_key)
        self.own_peer_id = own_peer_id
        self.own_identity_key = own_identity_key
        self.own_card = own_card
        self._state = "start"

    def _proof(self, role: ProofRole) -> bytes:
        return join_proof(
            self.invite.secret,
            role,
            invite_id=self.invite.invite_id,
            inviter_peer_id=self.inviter_peer_id,
            joiner_peer_id=self.own_peer_id,
            joiner_identity_key=self.own_identity_key,
        )

    def hello(self) -> bytes:
        if self._state != "start":
            raise JoinProtocolError("hello already sent")
        self._state = "sent_hello"
        return encode_message(
            JoinHello(
                invite_id=self.invite.invite_id,
                joiner_identity_key=self.own_identity_key,
                proof=self._proof(ProofRole.JOINER),
                card=self.own_card,
            )
        )

    def receive_reply(self, frame: bytes) -> JoinedContact:
        """The inviter, verified; raises JoinRefusedError or JoinProtocolError."""
        if self._state != "sent_hello":
            raise JoinProtocolError("no reply expected now")
        self._state = "failed"
        reply = _decode(frame)
        if isinstance(reply, JoinRefused):
            raise JoinRefusedError(reply.reason)
        if not isinstance(reply, JoinWelcome):
            raise JoinProtocolError(f"expected welcome, got {type(reply).__name__}")
        if not proofs_equal(self._proof(ProofRole.INVITER), reply.proof):
            raise JoinProtocolError("the inviter's proof does not match the invite")
        contact = _verified_card(reply.card, self.invite.identity_key, self.inviter_peer_id)
        self._state = "welcomed"
        return contact

    def done(self) -> bytes:
        if self._state != "welcomed":
            raise JoinProtocolError("not welcomed")
        self._state = "done"
        return encode_message(JoinDone())


class Inviter:
    """The inviter's side of one join, on one stream from `joiner_peer_id`."""

    def __init__(self, *, own_peer_id: str, joiner_peer_id: str) -> None:
        self.own_peer_id = own_peer_id
        self.joiner_peer_id = joiner_peer_id
        self.hello: JoinHello | None = None
        self.joiner: JoinedContact | None = None

    def receive_hello(self, frame: bytes) -> JoinHello:
        if self.hello is not None:
            raise JoinProtocolError("hello already received")
        message = _decode(frame)
        if not isinstance(message, JoinHello):
            raise JoinProtocolError(f"expected hello, got {type(message).__name__}")
        self.hello = message
        return message

    def _proof(self, secret: bytes, role: ProofRole) -> bytes:
        assert self.hello is not None
        return join_proof(
            secret,
            role,
            invite_id=self.hello.invite_id,
            inviter_peer_id=self.own_peer_id,
            joiner_peer_id=self.joiner_peer_id,
            joiner_identity_key=self.hello.joiner_identity_key,
        )

    def admit(self, secret: bytes) -> JoinedContact | RefusalReason:
        """Check the proof against the invite's secret, then the joiner's card."""
        if self.hello is None:
            raise JoinProtocolError("no hello yet")
        if not proofs_equal(self._proof(secret, ProofRole.JOINER), self.hello.proof):
            return RefusalReason.BAD_PROOF
        return self.admit_known_joiner()

    def admit_known_joiner(self) -> JoinedContact | RefusalReason:
        """A joiner retrying after it lost our welcome: the invite's secret may be burnt by now,
        but this identity already redeemed the invite and its card must still hold."""
        if self.hello is None:
            raise JoinProtocolError("no hello yet")
        try:
            self.joiner = _verified_card(
                self.hello.card, self.hello.joiner_identity_key, self.joiner_peer_id
            )
        except JoinProtocolError:
            return RefusalReason.BAD_CARD
        return self.joiner

    def welcome_proof(self, secret: bytes) -> bytes:
        return self._proof(secret, ProofRole.INVITER)

    def welcome(self, proof: bytes, own_card: ContactCard) -> bytes:
        if self.joiner is None:
            raise JoinProtocolError("the joiner was not admitted")
        return encode_message(JoinWelcome(proof=proof, card=own_card))

    @staticmethod
    def refuse(reason: RefusalReason) -> bytes:
        return encode_message(JoinRefused(reason=reason))

    @staticmethod
    def receive_done(frame: bytes) -> None:
        if not isinstance(_decode(frame), JoinDone):
            raise JoinProtocolError("expected done")


# -- trio drivers ----------------------------------------------------------------------------


@dataclass(frozen=True)
class PriorWelcome:
    """This joiner already redeemed the invite; `proof` is the welcome proof it was sent."""

    proof: bytes


class ContactBook(Protocol):
    """What the join protocol needs of the node: invites, the card, and storing contacts."""

    async def own_card(self, recipient_identity_key: bytes) -> ContactCard: ...

    async def is_blocked(self, identity_key: bytes) -> bool: ...

    async def invite_for_join(
        self, invite_id: bytes, joiner_identity_key: bytes
    ) -> bytes | PriorWelcome | RefusalReason:
        """The live invite's secret, the welcome already given to this joiner, or why not."""
        ...

    async def admit_joiner(
        self, invite_id: bytes, joiner: JoinedContact, welcome_proof: bytes
    ) -> RefusalReason | None:
        """Redeem one use of the invite and store the joiner as verified, in one commit."""
        ...

    async def store_inviter(self, inviter: JoinedContact) -> None: ...


async def join(
    net: NetHost, invite: Invite, book: ContactBook, own_identity_key: bytes
) -> JoinedContact:
    """The joiner's driver: dial the inviter (its hints are already in the dialer), join."""
    joiner = Joiner(
        invite,
        own_peer_id=net.peer_id,
        own_identity_key=own_identity_key,
        own_card=await book.own_card(invite.identity_key),
    )
    stream = await net.new_stream(joiner.inviter_peer_id, [PROTOCOL_ID])
    framed = FramedStream(stream, MAX_FRAME_BYTES)
    try:
        with trio.fail_after(STEP_TIMEOUT_SECONDS):
            await framed.send(joiner.hello())
            inviter = joiner.receive_reply(await framed.receive())
        await book.store_inviter(inviter)
        with trio.move_on_after(STEP_TIMEOUT_SECONDS):
            await framed.send(joiner.done())
        return inviter
    finally:
        await stream.close()


async def serve_join(stream: Stream, net: NetHost, book: ContactBook) -> None:
    """The inviter's stream handler (registered guarded by NetHost)."""
    inviter = Inviter(own_peer_id=net.peer_id, joiner_peer_id=remote_peer_id(stream))
    framed = FramedStream(stream, MAX_FRAME_BYTES)
    with trio.fail_after(STEP_TIMEOUT_SECONDS):
        hello = inviter.receive_hello(await framed.receive())
    if await book.is_blocked(hello.joiner_identity_key):
        log.info("dropped a join from a blocked identity")
        await stream.reset()
        return
    refusal, proof = await _admit(inviter, hello, book)
    if refusal is not None or proof is None:
        log.info("refused a join: %s", refusal)
        await framed.send(inviter.refuse(refusal or RefusalReason.BAD_CARD))
        await stream.close()
        return
    with trio.fail_after(STEP_TIMEOUT_SECONDS):
        await framed.send(inviter.welcome(proof, await book.own_card(hello.joiner_identity_key)))
    with trio.move_on_after(STEP_TIMEOUT_SECONDS):
        inviter.receive_done(await framed.receive())
    await stream.close()


async def _admit(
    inviter: Inviter, hello: JoinHello, book: ContactBook
) -> tuple[RefusalReason | None, bytes | None]:
    lookup = await book.invite_for_join(hello.invite_id, hello.joiner_identity_key)
    if isinstance(lookup, RefusalReason):
        return lookup, None
    if isinstance(lookup, PriorWelcome):
        admitted = inviter.admit_known_joiner()
        return (admitted, None) if isinstance(admitted, RefusalReason) else (None, lookup.proof)
    admitted = inviter.admit(lookup)
    if isinstance(admitted, RefusalReason):
        return admitted, None
    proof = inviter.welcome_proof(lookup)
    return await book.admit_joiner(hello.invite_id, admitted, proof), proof
