"""Contact requests: the node-side half of `/p2pid/contact-request/1` (see the protocol module).

Someone who knows this node's PeerId but holds no invite asks to become a contact, with their
name and a short note. The user accepts or declines; both sides then hold each other as
UNVERIFIED contacts (nobody compared anything: a SAS comparison can verify them later).

Choices, in one place:

- The recipient stores the request verbatim (the `card` column of `contact_requests` holds the
  whole request message: card, ticket, address hints), commits, then acknowledges.
- Rate limits (`RateLimits`): at most 3 requests per identity and per device (PeerId) in 24 h,
  20 in total per hour; requests count in every state (pending, accepted, declined, replaced).
  Over a limit the request is refused (`rate_limited`) and nothing is stored. A resend of the
  same request (same id) is acknowledged again without storing or counting anything.
- A blocked identity, or a device of a blocked contact, is dropped silently: the stream is
  reset, nothing stored, nothing said, no event.
- A request from a contact is refused as `already_contacts`; from a device that belongs to
  another contact's identity it is refused as `bad_card` and flagged as an identity change.
- Accepting stores the requester (commit), then dials their device and sends this node's card.
  If that fails the request stays accepted, the caller gets an `unreachable` error, and
  `accept` again re-sends (the requester stores idempotently).
- Declining is recorded and never sent: the requester cannot tell it from no answer yet.
- The requester keeps no record of what it sent: its ticket (a MAC under its device key over
  the request id, the time and the recipient's PeerId) proves, when the acceptance comes back,
  that it sent that request to that device, within 30 days.
"""

from __future__ import annotations

import builtins
import logging
import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, get_args

import msgspec
import trio

from p2pid.contacts import Contacts, ContactsError, contact_record
from p2pid.crypto.identity import identity_id_from_public_key
from p2pid.events import now_ms
from p2pid.net import NetError, describe_error
from p2pid.net.host import NetHost, Stream
from p2pid.protocols import contact_request
from p2pid.protocols.cards import JoinedContact
from p2pid.protocols.contact_request import (
    Acceptor,
    Requester,
    RequestError,
    RequestRefusedError,
    VerifiedAcceptance,
    VerifiedRequest,
    make_ticket,
    note_problem,
    parse_stored_request,
    ticket_key,
)
from p2pid.store import contacts as contact_queries
from p2pid.store.contacts import (
    ContactRequestRow,
    ContactUpsert,
    DeviceConflictError,
    RequestState,
)
from p2pid.store.db import Connection
from p2pid.store.trio_store import TrioStore
from p2pid.wire import events
from p2pid.wire.contact_request import (
    MAX_ADDR_CHARS,
    MAX_ADDRS,
    MESSAGE_ID_BYTES,
    ContactRequest,
    ContactRequestAccepted,
    ContactRequestAnswered,
    ContactRequestReceived,
    ContactRequestSummary,
    RefusalReason,
    decode_message,
)

log = logging.getLogger(__name__)

HOUR_MS = 3600 * 1000
DAY_MS = 24 * HOUR_MS

# own_card() shows a recipient the fields it may see; a stranger (no contact has this key, and
# no Ed25519 key is all zeros) sees the public ones only.
_STRANGER = bytes(32)

_STATES: dict[str, RequestState] = {state: state for state in get_args(RequestState)}


@dataclass(frozen=True)
class RateLimits:
    """How many requests this node stores: per sender (identity, and device) and in total."""

    per_sender: int = 3
    per_sender_window_ms: int = DAY_MS
    total: int = 20
    total_window_ms: int = HOUR_MS


class ContactRequestError(ContactsError):
    """`kind`: invalid, not_found, unreachable (no answer, or the peer cannot be reached),
    refused (the other side said no, with its reason), conflict (an identity change)."""


@dataclass(frozen=True)
class _Stored:
    request_id: int
    new: bool


@dataclass(frozen=True)
class _IdentityChange:
    peer_id: str
    owner_identity_key: bytes
    claimed_by: bytes


def _summary(row: ContactRequestRow) -> ContactRequestSummary:
    return ContactRequestSummary(
        request_id=row.id,
        identity_id=identity_id_from_public_key(row.identity_key),
        peer_id=row.peer_id,
        name=row.display_name,
        note=row.note,
        state=row.state,
        received_at_ms=row.received_at,
        decided_at_ms=row.decided_at,
    )


def _stored_message_id(frame: bytes) -> bytes | None:
    try:
        message = decode_message(frame)
    except (msgspec.DecodeError, ValueError):
        return None
    return message.message_id if isinstance(message, ContactRequest) else None


# Two queries over `contact_requests` that p2pid.store.contacts lacks; they belong there.


def count_requests_from_peer_since(conn: Connection, since_ms: int, peer_id: str) -> int:
    """Requests received at or after `since_ms` (every state) from one device."""
    row = conn.execute(
        "SELECT count(*) FROM contact_requests WHERE received_at >= ? AND peer_id = ?",
        (since_ms, peer_id),
    ).fetchone()
    return int(row[0])


def pending_request_of(conn: Connection, identity_key: bytes) -> tuple[int, bytes] | None:
    """(id, card) of the pending request from an identity (there is at most one)."""
    row = conn.execute(
        "SELECT id, card FROM contact_requests WHERE identity_key = ? AND state = 'pending'",
        (identity_key,),
    ).fetchone()
    return None if row is None else (int(row[0]), bytes(row[1]))


class ContactRequests:
    """The node's contact requests: send one, list, accept or decline those received, and the
    stream handler (`serve`) for both exchanges of the protocol."""

    def __init__(
        self,
        *,
        store: TrioStore,
        net: NetHost,
        contacts: Contacts,
        publish: Callable[[Any], None],
        limits: RateLimits | None = None,
        addrs: Callable[[], Sequence[str]] | None = None,
    ) -> None:
        """`addrs`: where peers can dial this node (sent along with a request so the recipient
        can answer later); the host's listen addresses if not given."""
        self.store = store
        self.net = net
        self.contacts = contacts
        self.publish = publish
        self.limits = limits or RateLimits()
        self._addrs = addrs or net.listen_addrs
        self._ticket_key = ticket_key(contacts.keys.device_seed)

    @property
    def ticket_key(self) -> bytes:
        return self._ticket_key

    @property
    def _identity_key(self) -> bytes:
        return self.contacts.keys.identity_public_key

    # -- the requester's side ----------------------------------------------------------------

    async def send(self, peer_id: str, note: str) -> str:
        """Ask the person behind `peer_id` (its addresses already known to the host) to become
        a contact. Returns the request's id (hex) once their device stored it; the event
        `contact_request.accepted` carries the same id if they accept."""
        if (problem := note_problem(note)) is not None:
            raise ContactRequestError("invalid", problem)
        if peer_id == self.net.peer_id:
            raise ContactRequestError("invalid", "that is this node's own PeerId")
        known = await self.store.read(lambda conn: contact_queries.contact_for_peer(conn, peer_id))
        if known is not None and known.blocked:
            raise ContactRequestError("invalid", "you blocked this contact: unblock it first")
        request_id = secrets.token_bytes(MESSAGE_ID_BYTES)
        requester = Requester(
            request_id=request_id,
            own_identity_key=self._identity_key,
            own_card=await self.contacts.own_card(known.identity_key if known else _STRANGER),
            note=note,
            ticket=make_ticket(self._ticket_key, request_id, peer_id, now_ms()),
            addrs=self._address_hints(),
        )
        try:
            await contact_request.send_request(self.net, peer_id, requester)
        except RequestRefusedError as refused:
            raise ContactRequestError("refused", f"contact request refused: {refused}") from None
        except (RequestError, NetError, trio.TooSlowError) as error:
            raise ContactRequestError(
                "unreachable", f"contact request not delivered to {peer_id}: {_why(error)}"
            ) from None
        return request_id.hex()

    def _address_hints(self) -> list[str]:
        hints = [
            addr
            for addr in self._addrs()
            if len(addr) <= MAX_ADDR_CHARS
            and "/ip4/0.0.0.0/" not in addr
            and "/ip6/::/" not in addr
        ]
        return list(dict.fromkeys(hints))[:MAX_ADDRS]

    # -- requests received ---------------------------------------------------------------------

    async def list(self, state: str | None = "pending") -> builtins.list[ContactRequestSummary]:
        """Requests received in `state` (pending, accepted, declined, replaced; None or 'all'
        for every one), newest first."""
        wanted: RequestState | None = None
        if state not in (None, "all"):
            if state not in _STATES:
                raise ContactRequestError(
                    "invalid", f"unknown state {state!r}; expected one of {sorted(_STATES)}"
                )
            wanted = _STATES[state]
        rows = await self.store.read(
            lambda conn: contact_queries.list_contact_requests(conn, wanted)
        )
        return [_summary(row) for row in rows]

    async def accept(self, request_id: int) -> ContactRequestSummary:
        """Store the requester as an unverified contact, then send them this node's card.

        If their device cannot be told, the request stays accepted (the contact stored) and
        ContactRequestError('unreachable' or 'refused') says so: call accept again to retry.
        """
        try:
            row, request, upserted = await self.store.write(
                lambda conn: self._accept_locally(conn, request_id)
            )
        except DeviceConflictError as conflict:
            await self._flag_identity_change(
                _IdentityChange(conflict.peer_id, conflict.owner_identity_key, conflict.claimed_by)
            )
            raise ContactRequestError(
                "conflict", f"not accepted: {_identity_change_text(conflict)}"
            ) from None
        requester = request.requester
        if upserted is ContactUpsert.ADDED:
            self._announce_added(requester)
        problem = await self._deliver_acceptance(row, request)
        self.publish(
            ContactRequestAnswered(
                at_ms=now_ms(),
                request_id=row.id,
                identity_id=identity_id_from_public_key(row.identity_key),
                name=row.display_name,
                state="accepted",
                delivered=problem is None,
            )
        )
        if problem is not None:
            kind, why = problem
            raise ContactRequestError(
                kind,
                f"accepted: {row.display_name} is now a contact (unverified), but their device "
                f"{row.peer_id} was not told: {why}. Accept again to retry.",
            )
        return _summary(row)

    def _accept_locally(
        self, conn: Connection, request_id: int
    ) -> tuple[ContactRequestRow, VerifiedRequest, ContactUpsert | None]:
        row = self._decidable(conn, request_id, ("pending", "accepted"))
        if contact_queries.is_blocked(conn, row.identity_key):
            raise ContactRequestError("invalid", "this identity is blocked: unblock it first")
        try:
            request = parse_stored_request(row.card, row.peer_id)
        except RequestError as error:
            raise ContactRequestError(
                "invalid", f"the stored request is unusable: {error}"
            ) from None
        if row.state == "accepted":
            return row, request, None
        upserted = contact_queries.upsert_contact(conn, contact_record(request.requester), now_ms())
        contact_queries.set_contact_request_state(conn, request_id, "accepted", now_ms())
        accepted = contact_queries.get_contact_request(conn, request_id)
        assert accepted is not None
        return accepted, request, upserted

    async def _deliver_acceptance(
        self, row: ContactRequestRow, request: VerifiedRequest
    ) -> tuple[str, str] | None:
        """None once the requester stored it, else (error kind, why)."""
        for addr in request.addrs:
            try:
                self.net.add_addrs(row.peer_id, [addr])
            except ValueError as error:
                log.info("ignored an address hint of a contact request: %s", error)
        acceptor = Acceptor(
            message_id=secrets.token_bytes(MESSAGE_ID_BYTES),
            own_identity_key=self._identity_key,
            own_card=await self.contacts.own_card(row.identity_key),
            ticket=request.ticket,
        )
        try:
            await contact_request.send_acceptance(self.net, row.peer_id, acceptor)
        except RequestRefusedError as refused:
            return "refused", str(refused)
        except (RequestError, NetError, trio.TooSlowError) as error:
            return "unreachable", _why(error)
        return None

    async def decline(self, request_id: int) -> ContactRequestSummary:
        """Record the decline. Nothing is sent to the requester. Declining twice is a no-op."""
        row, changed = await self.store.write(lambda conn: self._decline_locally(conn, request_id))
        if changed:
            self.publish(
                ContactRequestAnswered(
                    at_ms=now_ms(),
                    request_id=row.id,
                    identity_id=identity_id_from_public_key(row.identity_key),
                    name=row.display_name,
                    state="declined",
                    delivered=False,
                )
            )
        return _summary(row)

    def _decline_locally(self, conn: Connection, request_id: int) -> tuple[ContactRequestRow, bool]:
        row = self._decidable(conn, request_id, ("pending", "declined"))
        if row.state == "declined":
            return row, False
        contact_queries.set_contact_request_state(conn, request_id, "declined", now_ms())
        declined = contact_queries.get_contact_request(conn, request_id)
        assert declined is not None
        return declined, True

    @staticmethod
    def _decidable(
        conn: Connection, request_id: int, states: tuple[RequestState, ...]
    ) -> ContactRequestRow:
        row = contact_queries.get_contact_request(conn, request_id)
        if row is None:
            raise ContactRequestError("not_found", f"no contact request {request_id}")
        if row.state not in states:
            raise ContactRequestError("invalid", f"contact request {request_id} is {row.state}")
        return row

    # -- the stream handler and what the protocol needs (RequestBook) --------------------------

    async def serve(self, stream: Stream) -> None:
        """The handler for PROTOCOL_ID (register it with `net.set_stream_handler`)."""
        await contact_request.serve(stream, self)

    async def is_dropped(self, identity_key: bytes, peer_id: str) -> bool:
        def lookup(conn: Connection) -> bool:
            if contact_queries.is_blocked(conn, identity_key):
                return True
            owner = contact_queries.contact_for_peer(conn, peer_id)
            return owner is not None and owner.blocked

        return await self.store.read(lookup)

    async def store_request(self, request: VerifiedRequest) -> RefusalReason | None:
        if request.requester.identity_key == self._identity_key:
            log.info("refused a contact request from this node's own identity")
            return RefusalReason.INVALID
        outcome = await self.store.write(lambda conn: self._admit_request(conn, request))
        if isinstance(outcome, _IdentityChange):
            await self._flag_identity_change(outcome, already_recorded=True)
            return RefusalReason.BAD_CARD
        if isinstance(outcome, RefusalReason):
            return outcome
        if outcome.new:
            self.publish(
                ContactRequestReceived(
                    at_ms=now_ms(),
                    request_id=outcome.request_id,
                    identity_id=identity_id_from_public_key(request.requester.identity_key),
                    peer_id=request.requester.peer_id,
                    name=request.name,
                    note=request.note,
                )
            )
        return None

    def _admit_request(
        self, conn: Connection, request: VerifiedRequest
    ) -> _Stored | _IdentityChange | RefusalReason:
        """In one write: contact checks, de-duplication, rate limits, then store."""
        identity, peer_id, now = request.requester.identity_key, request.requester.peer_id, now_ms()
        if contact_queries.get_contact(conn, identity) is not None:
            return RefusalReason.ALREADY_CONTACTS
        owner = contact_queries.contact_for_peer(conn, peer_id)
        if owner is not None:  # the device of another contact, now claiming this identity
            contact_queries.record_identity_key_change(
                conn, peer_id, owner.identity_key, identity, now
            )
            return _IdentityChange(peer_id, owner.identity_key, identity)
        pending = pending_request_of(conn, identity)
        if pending is not None and _stored_message_id(pending[1]) == request.request_id:
            return _Stored(pending[0], new=False)  # a resend: answered again, not counted
        limits = self.limits
        sender_since = now - limits.per_sender_window_ms
        if (
            contact_queries.count_requests_since(conn, sender_since, identity) >= limits.per_sender
            or count_requests_from_peer_since(conn, sender_since, peer_id) >= limits.per_sender
            or contact_queries.count_requests_since(conn, now - limits.total_window_ms)
            >= limits.total
        ):
            log.info("refused a contact request over the rate limits")
            return RefusalReason.RATE_LIMITED
        request_id = contact_queries.add_contact_request(
            conn, identity, peer_id, request.name, request.note, request.frame, now
        )
        return _Stored(request_id, new=True)

    async def store_acceptance(self, acceptance: VerifiedAcceptance) -> RefusalReason | None:
        recipient = acceptance.recipient
        if recipient.identity_key == self._identity_key:
            return RefusalReason.BAD_CARD
        record = contact_record(recipient)

        def store(conn: Connection) -> ContactUpsert | _IdentityChange:
            try:
                return contact_queries.upsert_contact(conn, record, now_ms())
            except DeviceConflictError as conflict:
                contact_queries.record_identity_key_change(
                    conn,
                    conflict.peer_id,
                    conflict.owner_identity_key,
                    conflict.claimed_by,
                    now_ms(),
                )
                return _IdentityChange(
                    conflict.peer_id, conflict.owner_identity_key, conflict.claimed_by
                )

        outcome = await self.store.write(store)
        if isinstance(outcome, _IdentityChange):
            await self._flag_identity_change(outcome, already_recorded=True)
            return RefusalReason.BAD_CARD
        if outcome is ContactUpsert.ADDED:
            self._announce_added(recipient)
            self.publish(
                ContactRequestAccepted(
                    at_ms=now_ms(),
                    request_id=acceptance.request_id.hex(),
                    identity_id=identity_id_from_public_key(recipient.identity_key),
                    peer_id=recipient.peer_id,
                    name=recipient.display_name,
                )
            )
        return None

    # -- events ----------------------------------------------------------------------------------

    def _announce_added(self, contact: JoinedContact) -> None:
        for listener in self.contacts.on_contact_added:
            listener(contact.identity_key)
        self.publish(
            events.ContactAdded(
                at_ms=now_ms(),
                identity_id=identity_id_from_public_key(contact.identity_key),
                name=contact.display_name,
                verified=False,
            )
        )

    async def _flag_identity_change(
        self, change: _IdentityChange, *, already_recorded: bool = False
    ) -> None:
        if not already_recorded:
            await self.store.write(
                lambda conn: contact_queries.record_identity_key_change(
                    conn, change.peer_id, change.owner_identity_key, change.claimed_by, now_ms()
                )
            )
        log.warning("%s", _identity_change_text(change))
        self.publish(
            events.ContactIdentityChanged(
                at_ms=now_ms(),
                identity_id=identity_id_from_public_key(change.owner_identity_key),
                peer_id=change.peer_id,
                new_identity_id=identity_id_from_public_key(change.claimed_by),
            )
        )


def _identity_change_text(change: _IdentityChange | DeviceConflictError) -> str:
    return (
        f"device {change.peer_id} belongs to contact "
        f"{identity_id_from_public_key(change.owner_identity_key)} and now claims identity "
        f"{identity_id_from_public_key(change.claimed_by)}: the contact is flagged"
    )


def _why(error: BaseException) -> str:
    if isinstance(error, trio.TooSlowError):
        return f"no answer within {contact_request.STEP_TIMEOUT_SECONDS:g} s"
    if isinstance(error, NetError):
        return describe_error(error)
    return str(error)
