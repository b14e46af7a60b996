"""Group join (`/p2pid/group-join/1`): a person who scanned a group invite joins the group
through the admin device named in the invite (the flow is in p2pid.wire.group_join).

Modelled on contact join. Noise has authenticated both PeerIds. Before sending anything, the
joiner checks the invite: a GROUP invite, signed by its identity key, not expired. The joiner
then proves it holds the invite's secret (a keyed hash bound to the invite, both PeerIds and its
identity key). The inviter answers with its own proof and a card signed by the invite's identity
key that lists the device speaking; each side checks the other's card the same way.

`GroupJoiner` and `GroupInviter` are sans-IO: bytes in, bytes out. The inviter's decisions come
from a `GroupInviterBackend` (the node): which secret an invite has and whether it is still
usable (told only to a joiner whose proof holds), then whether the joiner is admitted, must
wait for an admin's approval, or is refused. The welcome's ops and cards are not checked here:
the node replays them into a GroupLog, which checks every signature and that the genesis is
`group_id`.

The trio drivers are `join_group` (the joiner) and `GroupJoinServer` (the inviter).
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum, auto
from typing import Protocol

import msgspec
import trio

from p2pid.crypto.identity import peer_id_from_public_key
from p2pid.crypto.invites import InviteError, verify_invite
from p2pid.crypto.join_proof import ProofRole, join_proof, proofs_equal
from p2pid.net import NetError
from p2pid.net.host import NetHost, Stream, StreamError, close_quietly, remote_peer_id
from p2pid.protocols.cards import CardError, JoinedContact, verify_card
from p2pid.protocols.framed import FramedStream
from p2pid.wire.framing import FrameError, encode_frame
from p2pid.wire.group_join import (
    MAX_FRAME_BYTES,
    MAX_HELLO_FRAME_BYTES,
    PROTOCOL_ID,
    GroupJoinDone,
    GroupJoinHello,
    GroupJoinMessage,
    GroupJoinRefused,
    GroupJoinWaiting,
    GroupJoinWelcome,
    RefusalReason,
    decode_message,
    encode_message,
)
from p2pid.wire.invite import Invite, InviteKind
from p2pid.wire.messages import MemberCard
from p2pid.wire.records import ContactCard

log = logging.getLogger(__name__)

STEP_TIMEOUT_SECONDS = 15.0  # a small frame
# The joiner's wait for the reply: the inviter's lookup and admission, then a welcome that may
# be several MiB.
REPLY_TIMEOUT_SECONDS = 60.0
MAX_CONCURRENT_JOINS = 8  # per server; more at once are refused as busy


# -- errors and results ----------------------------------------------------------------------


class GroupJoinError(Exception):
    """The join did not complete; nothing was stored on this side."""


class GroupJoinRefusedError(GroupJoinError):
    def __init__(self, reason: RefusalReason) -> None:
        super().__init__(_REFUSAL_TEXT.get(reason, str(reason)))
        self.reason = reason


class GroupJoinProtocolError(GroupJoinError):
    """The other side broke the protocol: malformed, out of order, or unauthenticated."""


class GroupJoinInviteError(GroupJoinError):
    """The invite itself cannot be used: not a group invite, forged or expired. Nothing was
    sent."""


class GroupJoinUnreachableError(GroupJoinError):
    """The admin's device could not be reached, or the stream broke."""


class GroupJoinTimeoutError(GroupJoinError):
    """The admin's device stopped answering."""


_REFUSAL_TEXT = {
    RefusalReason.UNKNOWN_INVITE: "the group admin's device does not know this invite"
    " (cancelled or never made)",
    RefusalReason.EXPIRED: "the group invite has expired",
    RefusalReason.USED_UP: "the group invite has been used up",
    RefusalReason.BAD_PROOF: "the group admin's device refused the proof of the invite's secret",
    RefusalReason.BAD_CARD: "the group admin's device refused this node's contact card",
    RefusalReason.REFUSED: "the group admin refused the join",
    RefusalReason.GROUP_FULL: "the group is full",
    RefusalReason.BUSY: "the group admin's device is busy; try again in a moment",
}


def refusal_text(reason: RefusalReason) -> str:
    return _REFUSAL_TEXT.get(reason, str(reason))


@dataclass(frozen=True)
class JoinOutcome:
    """What the joiner got: admitted (the group's whole log and its members' cards), or waiting
    for an admin's approval (the group comes later over `/p2pid/msg/1`)."""

    inviter: JoinedContact  # the admin whose device answered, verified
    group_id: bytes
    group_name: str  # as the invite names it
    admitted: bool
    ops: tuple[bytes, ...] = ()  # encoded SignedGroupOps, unchecked
    cards: tuple[MemberCard, ...] = ()


def _decode(frame: bytes) -> GroupJoinMessage:
    try:
        return decode_message(frame)
    except (msgspec.DecodeError, ValueError) as error:
        raise GroupJoinProtocolError(f"malformed group-join message: {error}") from None


def _proof(
    secret: bytes,
    role: ProofRole,
    *,
    invite_id: bytes,
    inviter_peer_id: str,
    joiner_peer_id: str,
    joiner_identity_key: bytes,
) -> bytes:
    return join_proof(
        secret,
        role,
        invite_id=invite_id,
        inviter_peer_id=inviter_peer_id,
        joiner_peer_id=joiner_peer_id,
        joiner_identity_key=joiner_identity_key,
    )


# -- the joiner ------------------------------------------------------------------------------


class _JoinerState(Enum):
    START = auto()
    SENT_HELLO = auto()
    ANSWERED = auto()
    DONE = auto()
    FAILED = auto()


class GroupJoiner:
    """The joiner's side of one join: `hello()`, `receive_reply(frame)`, `done()`.

    Raises GroupJoinInviteError at once for an invite that is not a GROUP invite, not signed by
    its identity key, or expired at `now` (unix seconds)."""

    def __init__(
        self,
        invite: Invite,
        *,
        own_peer_id: str,
        own_identity_key: bytes,
        own_card: ContactCard,
        now: int,
    ) -> None:
        if invite.kind is not InviteKind.GROUP:
            raise GroupJoinInviteError(
                f"this is a {invite.kind.name.lower().replace('_', ' ')} invite, not a group invite"
            )
        try:
            verify_invite(invite, now)
        except InviteError as error:
            raise GroupJoinInviteError(f"cannot use this group invite: {error}") from None
        self.invite = invite
        self.inviter_peer_id = peer_id_from_public_key(invite.device_key)
        self.own_peer_id = own_peer_id
        self.own_identity_key = own_identity_key
        self.own_card = own_card
        self._state = _JoinerState.START

    def _proof(self, role: ProofRole) -> bytes:
        return _proof(
            self.invite.secret,
            role,
            invite_id=self.invite.invite_id,
            inviter_peer_id=self.inviter_peer_id,
            joiner_peer_id=self.own_peer_id,
            joiner_identity_key=self.own_identity_key,
        )

    def hello(self) -> bytes:
        if self._state is not _JoinerState.START:
            raise RuntimeError("hello already sent")
        try:
            frame = encode_message(
                GroupJoinHello(
                    invite_id=self.invite.invite_id,
                    identity_key=self.own_identity_key,
                    proof=self._proof(ProofRole.JOINER),
                    card=self.own_card,
                )
            )
        except ValueError as error:
            raise GroupJoinError(f"this node's hello cannot be sent: {error}") from None
        self._state = _JoinerState.SENT_HELLO
        return frame

    def receive_reply(self, frame: bytes) -> JoinOutcome:
        """The outcome, the inviter verified; raises GroupJoinRefusedError or
        GroupJoinProtocolError."""
        if self._state is not _JoinerState.SENT_HELLO:
            raise GroupJoinProtocolError("no reply expected now")
        self._state = _JoinerState.FAILED
        reply = _decode(frame)
        if isinstance(reply, GroupJoinRefused):
            raise GroupJoinRefusedError(reply.reason)
        if not isinstance(reply, GroupJoinWelcome | GroupJoinWaiting):
            raise GroupJoinProtocolError(
                f"expected a welcome, waiting or refused, got {type(reply).__name__}"
            )
        if not proofs_equal(self._proof(ProofRole.INVITER), reply.proof):
            raise GroupJoinProtocolError("the inviter's proof does not match the invite")
        try:
            inviter = verify_card(reply.card, self.invite.identity_key, self.inviter_peer_id)
        except CardError as error:
            raise GroupJoinProtocolError(f"the inviter's card: {error}") from None
        self._state = _JoinerState.ANSWERED
        if isinstance(reply, GroupJoinWaiting):
            return JoinOutcome(
                inviter=inviter,
                group_id=reply.group_id,
                group_name=self.invite.name,
                admitted=False,
            )
        return JoinOutcome(
            inviter=inviter,
            group_id=reply.group_id,
            group_name=self.invite.name,
            admitted=True,
            ops=tuple(reply.ops),
            cards=tuple(reply.cards),
        )

    def done(self) -> bytes:
        if self._state is not _JoinerState.ANSWERED:
            raise RuntimeError("no welcome or waiting received")
        self._state = _JoinerState.DONE
        return encode_message(GroupJoinDone())


# -- the inviter -----------------------------------------------------------------------------


@dataclass(frozen=True)
class GroupInviteSecret:
    """A group invite the inviter holds. `unusable` (expired, used up) is told only to a joiner
    whose proof holds, so a stranger learns nothing of the invite."""

    secret: bytes
    unusable: RefusalReason | None = None


@dataclass(frozen=True)
class Admitted:
    """The joiner is a member now: the admin's card for them, the group's whole log and every
    other member's card."""

    card: ContactCard
    group_id: bytes
    ops: Sequence[bytes]
    cards: Sequence[MemberCard]


@dataclass(frozen=True)
class Waiting:
    """An admin must approve the joiner."""

    card: ContactCard
    group_id: bytes


class _InviterState(Enum):
    START = auto()
    GOT_HELLO = auto()
    CHECKED = auto()
    ANSWERED = auto()
    DONE = auto()


class GroupInviter:
    """The inviter's side of one join, on one stream from `joiner_peer_id`: `receive_hello`,
    `check(invite)`, then `reply(...)` or `refuse(reason)`, then `receive_done`."""

    def __init__(self, *, own_peer_id: str, joiner_peer_id: str) -> None:
        self.own_peer_id = own_peer_id
        self.joiner_peer_id = joiner_peer_id
        self.hello: GroupJoinHello | None = None
        self.joiner: JoinedContact | None = None
        self._secret: bytes | None = None
        self._state = _InviterState.START

    def receive_hello(self, frame: bytes) -> GroupJoinHello:
        if self._state is not _InviterState.START:
            raise GroupJoinProtocolError("hello already received")
        message = _decode(frame)
        if not isinstance(message, GroupJoinHello):
            raise GroupJoinProtocolError(f"expected hello, got {type(message).__name__}")
        self.hello = message
        self._state = _InviterState.GOT_HELLO
        return message

    def _proof(self, secret: bytes, role: ProofRole) -> bytes:
        assert self.hello is not None
        return _proof(
            secret,
            role,
            invite_id=self.hello.invite_id,
            inviter_peer_id=self.own_peer_id,
            joiner_peer_id=self.joiner_peer_id,
            joiner_identity_key=self.hello.identity_key,
        )

    def check(self, invite: GroupInviteSecret) -> JoinedContact | RefusalReason:
        """The joiner, if its proof of `invite`'s secret holds, its card is signed by the
        identity it claims and lists the device speaking, and the invite is still usable."""
        if self._state is not _InviterState.GOT_HELLO or self.hello is None:
            raise RuntimeError("no hello to check")
        if not proofs_equal(self._proof(invite.secret, ProofRole.JOINER), self.hello.proof):
            return RefusalReason.BAD_PROOF
        try:
            joiner = verify_card(self.hello.card, self.hello.identity_key, self.joiner_peer_id)
        except CardError:
            return RefusalReason.BAD_CARD
        if invite.unusable is not None:
            return invite.unusable
        self.joiner = joiner
        self._secret = invite.secret
        self._state = _InviterState.CHECKED
        return joiner

    def reply(self, answer: Admitted | Waiting) -> bytes:
        """The welcome or waiting frame; ValueError if a welcome is over the wire's bounds."""
        if self._state is not _InviterState.CHECKED or self._secret is None:
            raise RuntimeError("the joiner was not checked")
        proof = self._proof(self._secret, ProofRole.INVITER)
        message: GroupJoinMessage
        if isinstance(answer, Admitted):
            message = GroupJoinWelcome(
                proof=proof,
                card=answer.card,
                group_id=answer.group_id,
                ops=list(answer.ops),
                cards=list(answer.cards),
            )
        else:
            message = GroupJoinWaiting(proof=proof, card=answer.card, group_id=answer.group_id)
        frame = encode_message(message)
        self._state = _InviterState.ANSWERED
        return frame

    @staticmethod
    def refuse(reason: RefusalReason) -> bytes:
        return encode_message(GroupJoinRefused(reason=reason))

    def receive_done(self, frame: bytes) -> None:
        if self._state is not _InviterState.ANSWERED:
            raise GroupJoinProtocolError("no done expected now")
        message = _decode(frame)
        if not isinstance(message, GroupJoinDone):
            raise GroupJoinProtocolError(f"expected done, got {type(message).__name__}")
        self._state = _InviterState.DONE


# -- trio drivers ----------------------------------------------------------------------------

# The stream broke or carried something that is not a frame.
_BROKEN = (StreamError, FrameError)


class GroupInviterBackend(Protocol):
    """What the inviter's side needs of the node."""

    async def lookup(self, invite_id: bytes) -> GroupInviteSecret | RefusalReason:
        """The group invite's secret and whether it is still usable, or why not (unknown)."""
        ...

    async def admit(
        self, invite_id: bytes, joiner: JoinedContact
    ) -> Admitted | Waiting | RefusalReason:
        """Redeem one use of the invite and add the joiner (Admitted) or record a join request
        (Waiting), in one commit; or refuse (used up meanwhile, refused, group full)."""
        ...


async def join_group(
    net: NetHost, invite: Invite, identity_key: bytes, card: ContactCard
) -> JoinOutcome:
    """The joiner's driver: check the invite, dial the admin's device (its hints are already in
    the dialer), join. Raises GroupJoinInviteError (nothing sent), GroupJoinRefusedError,
    GroupJoinProtocolError, GroupJoinUnreachableError or GroupJoinTimeoutError."""
    joiner = GroupJoiner(
        invite,
        own_peer_id=net.peer_id,
        own_identity_key=identity_key,
        own_card=card,
        now=int(time.time()),
    )
    hello = joiner.hello()
    try:
        with trio.fail_after(STEP_TIMEOUT_SECONDS):
            stream = await net.new_stream(joiner.inviter_peer_id, [PROTOCOL_ID])
    except NetError as error:
        raise GroupJoinUnreachableError(
            f"cannot reach the group admin's device {joiner.inviter_peer_id}: {error}"
        ) from None
    except trio.TooSlowError:
        raise GroupJoinTimeoutError(
            f"the group admin's device {joiner.inviter_peer_id} did not answer"
        ) from None
    framed = FramedStream(stream, MAX_FRAME_BYTES)
    try:
        with trio.fail_after(STEP_TIMEOUT_SECONDS):
            await stream.write(encode_frame(hello, MAX_HELLO_FRAME_BYTES))
        with trio.fail_after(REPLY_TIMEOUT_SECONDS):
            outcome = joiner.receive_reply(await framed.receive())
        with trio.move_on_after(STEP_TIMEOUT_SECONDS), contextlib.suppress(*_BROKEN):
            await framed.send(joiner.done())
        return outcome
    except GroupJoinError:
        await _reset_quietly(stream)
        raise
    except _BROKEN as error:
        await _reset_quietly(stream)
        raise GroupJoinUnreachableError(
            f"the join with the group admin's device broke off: {error}"
        ) from None
    except trio.TooSlowError:
        await _reset_quietly(stream)
        raise GroupJoinTimeoutError("the group admin's device stopped answering") from None
    finally:
        await close_quietly(stream)


class GroupJoinServer:
    """The inviter's stream handler: `install(net)`, or give `own_peer_id` and register
    `handle` yourself. At most `max_concurrent` joins at once; more are refused as busy."""

    def __init__(
        self,
        backend: GroupInviterBackend,
        *,
        own_peer_id: str | None = None,
        max_concurrent: int = MAX_CONCURRENT_JOINS,
    ) -> None:
        self._backend = backend
        self._own_peer_id = own_peer_id
        self._slots = trio.Semaphore(max_concurrent)

    def install(self, net: NetHost) -> None:
        self._own_peer_id = net.peer_id
        net.set_stream_handler(PROTOCOL_ID, self.handle)

    async def handle(self, stream: Stream) -> None:
        if self._own_peer_id is None:
            raise RuntimeError("GroupJoinServer needs install(net) or own_peer_id")
        peer_id = remote_peer_id(stream)
        try:
            try:
                self._slots.acquire_nowait()
            except trio.WouldBlock:
                log.info("group join: refused %s, busy", peer_id)
                await self._send(stream, GroupInviter.refuse(RefusalReason.BUSY))
                return
            try:
                await self._serve(
                    stream, GroupInviter(own_peer_id=self._own_peer_id, joiner_peer_id=peer_id)
                )
            finally:
                self._slots.release()
        except (GroupJoinError, *_BROKEN, trio.TooSlowError) as error:
            log.info("group join from %s closed: %r", peer_id, error)
            await _reset_quietly(stream)
        finally:
            await close_quietly(stream)

    async def _serve(self, stream: Stream, inviter: GroupInviter) -> None:
        framed = FramedStream(stream, MAX_HELLO_FRAME_BYTES)
        with trio.fail_after(STEP_TIMEOUT_SECONDS):
            hello = inviter.receive_hello(await framed.receive())
        answer = await self._answer(inviter, hello)
        if isinstance(answer, RefusalReason):
            log.info("group join: refused %s: %s", inviter.joiner_peer_id, answer)
            await self._send(stream, inviter.refuse(answer))
            return
        try:
            frame = inviter.reply(answer)
        except ValueError as error:
            if not isinstance(answer, Admitted):
                raise
            # A member already, but the log or the cards are over this protocol's bounds: the
            # joiner gets the group over /p2pid/msg/1 like a member added by an admin.
            log.warning("group join: a welcome for %s: %s", inviter.joiner_peer_id, error)
            frame = inviter.reply(Waiting(card=answer.card, group_id=answer.group_id))
        with trio.fail_after(REPLY_TIMEOUT_SECONDS):
            await stream.write(encode_frame(frame, MAX_FRAME_BYTES))
        with trio.move_on_after(STEP_TIMEOUT_SECONDS):
            inviter.receive_done(await framed.receive())

    async def _answer(
        self, inviter: GroupInviter, hello: GroupJoinHello
    ) -> Admitted | Waiting | RefusalReason:
        invite = await self._backend.lookup(hello.invite_id)
        if isinstance(invite, RefusalReason):
            return invite
        joiner = inviter.check(invite)
        if isinstance(joiner, RefusalReason):
            return joiner
        return await self._backend.admit(hello.invite_id, joiner)

    @staticmethod
    async def _send(stream: Stream, frame: bytes) -> None:
        with trio.move_on_after(STEP_TIMEOUT_SECONDS), contextlib.suppress(*_BROKEN):
            await stream.write(encode_frame(frame, MAX_FRAME_BYTES))


async def _reset_quietly(stream: Stream) -> None:
    with trio.CancelScope(shield=True), contextlib.suppress(Exception):
        await stream.reset()
