"""Contact requests (`/p2pid/contact-request/1`): asking someone known only by PeerId.

No invite and no shared secret: Noise has authenticated both PeerIds, and the requester's card
carries a device list signed by its identity that must include the requesting device. Nobody
compared anything, so each side stores the other UNVERIFIED (a SAS comparison can verify later).

    requester                                       recipient
      | -- request(id, identity, note, card, -----> |  blocked identity or device: reset,
      |            ticket, addrs)                   |    nothing stored, nothing said
      |                                             |  checks name and note, the card, that
      |                                             |    they are not contacts yet, rate limits
      |                                             |  stores the pending request (commit)
      | <- received(id) | refused(reason) --------- |
                   ... the recipient's user accepts, maybe much later ...
      |                                             |  stores the requester, unverified (commit)
      | <- accepted(id, identity, ticket, card) --- |  on a new stream, dialled by the recipient
      |  blocked identity: reset                    |
      |  checks the ticket (made here, for the      |
      |    device speaking) and the card            |
      |  stores the recipient, unverified (commit)  |
      | -- stored(id) | refused(reason) ----------> |

A decline is never sent: to the requester it looks like a request not answered yet.

The ticket is a MAC by the requesting device over (request id, time, recipient PeerId), under a
key derived from its device seed: the requester keeps no record of what it sent, yet accepts an
acceptance only for a request it sent, from the device it sent it to, within TICKET_MAX_AGE_MS.

`Requester`, `Responder` and `Acceptor` are sans-IO: bytes in, bytes out. The trio drivers
below add the stream.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import logging
import time
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import msgspec
import trio

from p2pid.net.host import NetHost, Stream, StreamError, remote_peer_id
from p2pid.protocols.cards import CardError, JoinedContact, verify_card
from p2pid.protocols.framed import FramedStream
from p2pid.wire.contact_request import (
    MAX_FRAME_BYTES,
    MAX_NAME_CHARS,
    MAX_NOTE_CHARS,
    MESSAGE_ID_BYTES,
    PROTOCOL_ID,
    AcceptanceStored,
    ContactRequest,
    RefusalReason,
    RequestAccepted,
    RequestMessage,
    RequestReceived,
    RequestRefused,
    decode_message,
    encode_message,
)
from p2pid.wire.framing import FrameError
from p2pid.wire.records import ContactCard

log = logging.getLogger(__name__)

STEP_TIMEOUT_SECONDS = 15.0

TICKET_CONTEXT = b"p2pid-contact-request-ticket-v1"
TICKET_MAC_BYTES = 16
TICKET_BYTES = MESSAGE_ID_BYTES + 8 + TICKET_MAC_BYTES
TICKET_MAX_AGE_MS = 30 * 24 * 3600 * 1000
TICKET_CLOCK_SKEW_MS = 10 * 60 * 1000

# Characters a name or note may not hold: C0/C1 controls (newlines included), surrogates, line
# and paragraph separators, and the bidi embeddings/overrides/isolates that reorder what is shown.
_FORBIDDEN_CATEGORIES = frozenset({"Cc", "Cs", "Zl", "Zp"})
_BIDI_CONTROLS = frozenset("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")


class RequestError(Exception):
    """The exchange did not complete; nothing was stored on this side by it."""


class RequestRefusedError(RequestError):
    def __init__(self, reason: RefusalReason) -> None:
        super().__init__(REFUSAL_TEXT.get(reason, str(reason)))
        self.reason = reason


class RequestProtocolError(RequestError):
    """The other side broke the protocol: malformed, out of order, or unauthenticated."""


class RequestUnanswered(RequestError):
    """The other side ended the stream without answering (as a blocking peer does)."""


REFUSAL_TEXT = {
    RefusalReason.RATE_LIMITED: "the recipient gets too many contact requests now: try later",
    RefusalReason.ALREADY_CONTACTS: "you are already contacts",
    RefusalReason.INVALID: "the recipient refused the name or note (too long or control chars)",
    RefusalReason.BAD_CARD: "the other side refused this node's contact card",
    RefusalReason.UNKNOWN_REQUEST: "the requester does not know this request",
}


def text_problem(text: str, what: str, max_chars: int, *, required: bool) -> str | None:
    """Why `text` cannot be a name or note, or None if it can."""
    if len(text) > max_chars:
        return f"the {what} is longer than {max_chars} characters"
    if required and not text.strip():
        return f"the {what} is empty"
    for character in text:
        if unicodedata.category(character) in _FORBIDDEN_CATEGORIES or character in _BIDI_CONTROLS:
            return f"the {what} holds control characters"
    return None


def note_problem(note: str) -> str | None:
    return text_problem(note, "note", MAX_NOTE_CHARS, required=False)


def name_problem(name: str) -> str | None:
    return text_problem(name, "name", MAX_NAME_CHARS, required=True)


# -- tickets ---------------------------------------------------------------------------------


def ticket_key(device_seed: bytes) -> bytes:
    """The key this device MACs its tickets with; never leaves the device."""
    return hashlib.blake2b(TICKET_CONTEXT, key=device_seed, digest_size=32).digest()


def _ticket_mac(key: bytes, head: bytes, recipient_peer_id: str) -> bytes:
    return hashlib.blake2b(
        head + recipient_peer_id.encode(), key=key, digest_size=TICKET_MAC_BYTES
    ).digest()


def make_ticket(key: bytes, request_id: bytes, recipient_peer_id: str, issued_at_ms: int) -> bytes:
    if len(request_id) != MESSAGE_ID_BYTES:
        raise ValueError(f"a request id is {MESSAGE_ID_BYTES} bytes")
    head = request_id + issued_at_ms.to_bytes(8, "big")
    return head + _ticket_mac(key, head, recipient_peer_id)


def open_ticket(key: bytes, ticket: bytes, sender_peer_id: str, now_ms: int) -> bytes | None:
    """The request id, if this device made `ticket` for `sender_peer_id` and it is not stale."""
    if len(ticket) != TICKET_BYTES:
        return None
    head, mac = ticket[: MESSAGE_ID_BYTES + 8], ticket[MESSAGE_ID_BYTES + 8 :]
    if not hmac.compare_digest(mac, _ticket_mac(key, head, sender_peer_id)):
        return None
    issued_at = int.from_bytes(head[MESSAGE_ID_BYTES:], "big")
    if not now_ms - TICKET_MAX_AGE_MS <= issued_at <= now_ms + TICKET_CLOCK_SKEW_MS:
        return None
    return head[:MESSAGE_ID_BYTES]


# -- verified results --------------------------------------------------------------------------


@dataclass(frozen=True)
class VerifiedRequest:
    """A request whose card holds: what the recipient stores as pending."""

    request_id: bytes
    requester: JoinedContact
    note: str
    addrs: tuple[str, ...]
    ticket: bytes  # to return with the acceptance
    frame: bytes  # the request message, verbatim

    @property
    def name(self) -> str:
        return self.requester.display_name


@dataclass(frozen=True)
class VerifiedAcceptance:
    """An acceptance of a request this device sent, from the device it sent it to."""

    request_id: bytes  # as `send` returned it, recovered from the ticket
    message_id: bytes
    recipient: JoinedContact


def _decode(frame: bytes) -> RequestMessage:
    try:
        return decode_message(frame)
    except (msgspec.DecodeError, ValueError) as error:
        raise RequestProtocolError(f"malformed contact-request message: {error}") from None


def _expect_acknowledgement(
    frame: bytes,
    kind: type[RequestReceived] | type[AcceptanceStored],
    message_id: bytes,
    mismatch: str,
) -> None:
    """The other side's answer must acknowledge `message_id` with `kind`, or refuse it."""
    reply = _decode(frame)
    if isinstance(reply, RequestRefused):
        raise RequestRefusedError(reply.reason)
    if not isinstance(reply, kind):
        raise RequestProtocolError(
            f"expected {kind.__struct_config__.tag}, got {type(reply).__name__}"
        )
    if reply.message_id != message_id:
        raise RequestProtocolError(mismatch)


def verified_card(card: ContactCard, identity_key: bytes, peer_id: str) -> JoinedContact | None:
    """The card as a contact, if its device list is signed by `identity_key` and lists
    `peer_id` (the device at the other end of the stream); None otherwise."""
    try:
        return verify_card(card, identity_key, peer_id)
    except CardError as error:
        log.info("refused a contact card: %s", error)
        return None


def check_request(request: ContactRequest, frame: bytes, sender_peer_id: str) -> VerifiedRequest:
    """Name, note and card of a request that came from `sender_peer_id` (or was stored from it);
    raises RequestRefusedError."""
    if name_problem(request.card.display_name) or note_problem(request.note):
        raise RequestRefusedError(RefusalReason.INVALID)
    requester = verified_card(request.card, request.identity_key, sender_peer_id)
    if requester is None:
        raise RequestRefusedError(RefusalReason.BAD_CARD)
    return VerifiedRequest(
        request_id=request.message_id,
        requester=requester,
        note=request.note,
        addrs=tuple(request.addrs),
        ticket=request.ticket,
        frame=frame,
    )


def parse_stored_request(frame: bytes, sender_peer_id: str) -> VerifiedRequest:
    """A request as the recipient stored it, checked again; raises RequestError."""
    message = _decode(frame)
    if not isinstance(message, ContactRequest):
        raise RequestProtocolError(f"stored a {type(message).__name__}, not a request")
    return check_request(message, frame, sender_peer_id)


# -- the machines ------------------------------------------------------------------------------


class Requester:
    """The requester's side: one request, one answer."""

    def __init__(
        self,
        *,
        request_id: bytes,
        own_identity_key: bytes,
        own_card: ContactCard,
        note: str,
        ticket: bytes,
        addrs: Sequence[str] = (),
    ) -> None:
        if (problem := note_problem(note)) is not None:
            raise ValueError(problem)
        self.request_id = request_id
        self._message = ContactRequest(
            message_id=request_id,
            identity_key=own_identity_key,
            note=note,
            card=own_card,
            ticket=ticket,
            addrs=list(addrs),
        )
        self._state = "start"

    def request(self) -> bytes:
        if self._state != "start":
            raise RequestProtocolError("request already sent")
        self._state = "sent"
        return encode_message(self._message)

    def receive_reply(self, frame: bytes) -> None:
        """Returns once the recipient stored the request; raises RequestRefusedError or
        RequestProtocolError."""
        if self._state != "sent":
            raise RequestProtocolError("no reply expected now")
        self._state = "failed"
        _expect_acknowledgement(
            frame, RequestReceived, self.request_id, "the recipient acknowledged another request"
        )
        self._state = "received"


class Responder:
    """The dialled side, on one stream from `remote_peer_id`: a request from someone, or the
    acceptance of a request this device sent. One opening message, one answer."""

    def __init__(self, *, remote_peer_id: str) -> None:
        self.remote_peer_id = remote_peer_id
        self.opening: ContactRequest | RequestAccepted | None = None
        self._frame = b""
        self._admitted: VerifiedRequest | VerifiedAcceptance | None = None
        self._answered = False

    def receive_opening(self, frame: bytes) -> ContactRequest | RequestAccepted:
        if self.opening is not None:
            raise RequestProtocolError("the stream already carried its message")
        message = _decode(frame)
        if not isinstance(message, ContactRequest | RequestAccepted):
            raise RequestProtocolError(
                f"expected request or accepted, got {type(message).__name__}"
            )
        self.opening, self._frame = message, frame
        return message

    def admit_request(self) -> VerifiedRequest | RefusalReason:
        if not isinstance(self.opening, ContactRequest):
            raise RequestProtocolError("no request received")
        try:
            admitted = check_request(self.opening, self._frame, self.remote_peer_id)
        except RequestRefusedError as refused:
            return refused.reason
        self._admitted = admitted
        return admitted

    def admit_acceptance(self, key: bytes, now_ms: int) -> VerifiedAcceptance | RefusalReason:
        """`key`: this device's ticket key."""
        acceptance = self.opening
        if not isinstance(acceptance, RequestAccepted):
            raise RequestProtocolError("no acceptance received")
        request_id = open_ticket(key, acceptance.ticket, self.remote_peer_id, now_ms)
        if request_id is None:
            return RefusalReason.UNKNOWN_REQUEST
        if name_problem(acceptance.card.display_name):
            return RefusalReason.INVALID
        recipient = verified_card(acceptance.card, acceptance.identity_key, self.remote_peer_id)
        if recipient is None:
            return RefusalReason.BAD_CARD
        admitted = VerifiedAcceptance(
            request_id=request_id, message_id=acceptance.message_id, recipient=recipient
        )
        self._admitted = admitted
        return admitted

    def _answer(self, message: RequestMessage) -> bytes:
        if self.opening is None:
            raise RequestProtocolError("nothing to answer yet")
        if self._answered:
            raise RequestProtocolError("already answered")
        self._answered = True
        return encode_message(message)

    def received(self) -> bytes:
        """The answer once the admitted request is stored (or was already)."""
        if not isinstance(self._admitted, VerifiedRequest):
            raise RequestProtocolError("no admitted request")
        return self._answer(RequestReceived(message_id=self._admitted.request_id))

    def stored(self) -> bytes:
        """The answer once the admitted acceptance is stored."""
        if not isinstance(self._admitted, VerifiedAcceptance):
            raise RequestProtocolError("no admitted acceptance")
        return self._answer(AcceptanceStored(message_id=self._admitted.message_id))

    def refuse(self, reason: RefusalReason) -> bytes:
        return self._answer(RequestRefused(reason=reason))


class Acceptor:
    """The recipient's side of telling the requester it accepted: one message, one answer."""

    def __init__(
        self, *, message_id: bytes, own_identity_key: bytes, own_card: ContactCard, ticket: bytes
    ) -> None:
        self.message_id = message_id
        self._message = RequestAccepted(
            message_id=message_id, identity_key=own_identity_key, ticket=ticket, card=own_card
        )
        self._state = "start"

    def accepted(self) -> bytes:
        if self._state != "start":
            raise RequestProtocolError("acceptance already sent")
        self._state = "sent"
        return encode_message(self._message)

    def receive_reply(self, frame: bytes) -> None:
        """Returns once the requester stored this node as a contact."""
        if self._state != "sent":
            raise RequestProtocolError("no reply expected now")
        self._state = "failed"
        _expect_acknowledgement(
            frame, AcceptanceStored, self.message_id, "the requester acknowledged another message"
        )
        self._state = "stored"


# -- trio drivers ----------------------------------------------------------------------------


class RequestBook(Protocol):
    """What the protocol needs of the node: blocks, tickets, and storing."""

    @property
    def ticket_key(self) -> bytes: ...

    async def is_dropped(self, identity_key: bytes, peer_id: str) -> bool:
        """A blocked identity, or a device of a blocked contact: answer nothing."""
        ...

    async def store_request(self, request: VerifiedRequest) -> RefusalReason | None:
        """Check contacts and rate limits and store the pending request, in one commit."""
        ...

    async def store_acceptance(self, acceptance: VerifiedAcceptance) -> RefusalReason | None:
        """Store the recipient as an unverified contact (commit)."""
        ...


async def _exchange(net: NetHost, peer_id: str, first: bytes) -> bytes:
    """Open a stream, send one frame, return the answer; RequestUnanswered if there is none."""
    stream = await net.new_stream(peer_id, [PROTOCOL_ID])
    framed = FramedStream(stream, MAX_FRAME_BYTES)
    try:
        with trio.fail_after(STEP_TIMEOUT_SECONDS):
            await framed.send(first)
            try:
                return await framed.receive()
            except (StreamError, FrameError) as error:
                why = f"{peer_id} ended the exchange without an answer"
                raise RequestUnanswered(why) from error
    finally:
        with contextlib.suppress(StreamError):
            await stream.close()


async def send_request(net: NetHost, peer_id: str, requester: Requester) -> None:
    """The requester's driver: returns once the recipient stored the request."""
    requester.receive_reply(await _exchange(net, peer_id, requester.request()))


async def send_acceptance(net: NetHost, peer_id: str, acceptor: Acceptor) -> None:
    """The recipient's driver after its user accepted: returns once the requester stored it."""
    acceptor.receive_reply(await _exchange(net, peer_id, acceptor.accepted()))


async def serve(stream: Stream, book: RequestBook) -> None:
    """The stream handler (registered guarded by NetHost) for requests and acceptances."""
    responder = Responder(remote_peer_id=remote_peer_id(stream))
    framed = FramedStream(stream, MAX_FRAME_BYTES)
    try:
        with trio.fail_after(STEP_TIMEOUT_SECONDS):
            opening = responder.receive_opening(await framed.receive())
    except (RequestProtocolError, FrameError) as error:
        log.info("contact-request stream from %s reset: %s", responder.remote_peer_id, error)
        await stream.reset()
        return
    if await book.is_dropped(opening.identity_key, responder.remote_peer_id):
        log.info("dropped a contact-request message from a blocked identity")
        await stream.reset()
        return
    refusal: RefusalReason | None
    if isinstance(opening, ContactRequest):
        request = responder.admit_request()
        refusal = (
            request if isinstance(request, RefusalReason) else await book.store_request(request)
        )
        answer = responder.refuse(refusal) if refusal is not None else responder.received()
    else:
        acceptance = responder.admit_acceptance(book.ticket_key, int(time.time() * 1000))
        refusal = (
            acceptance
            if isinstance(acceptance, RefusalReason)
            else await book.store_acceptance(acceptance)
        )
        answer = responder.refuse(refusal) if refusal is not None else responder.stored()
    if refusal is not None:
        log.info("refused a contact-request %s: %s", type(opening).__name__, refusal)
    with trio.fail_after(STEP_TIMEOUT_SECONDS):
        await framed.send(answer)
    await stream.close()
