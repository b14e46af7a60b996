"""Messaging: one-to-one conversations, end to end encrypted with Olm, delivered from a durable
outbox. The node-side half of `/p2pid/msg/1`, both roles.

Sending commits, in one transaction, the message in the history, each recipient device's
envelope (encrypted once, sent as is on every retry) in the outbox, and the advanced Olm
sessions; only then does `send` return. Receiving commits a whole batch (messages, advanced
sessions, the de-duplication record, and the delivery receipt going back) before acknowledging
it. Olm state lives in the store only: every use loads it, advances it and saves it inside the
same write, so a rolled-back write leaves no session ahead of what was sent or stored.
"""

from __future__ import annotations

import logging
import os
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import TYPE_CHECKING

import trio

from p2pid.contacts import publish_one_time_keys
from p2pid.courier import Courier
from p2pid.crypto.device_list import DeviceListError
from p2pid.crypto.identity import IdentityKeys, identity_id_from_public_key
from p2pid.crypto.olm import OlmAccount, OlmCiphertext, OlmError, OlmSession
from p2pid.device_sync import (
    SyncError,
    contact_snapshot,
    import_contact,
    profile_copies,
    record_from_list,
    replace_profile,
)
from p2pid.events import now_ms
from p2pid.files.effects import FileEffects, FileRefusal
from p2pid.groups.engine import MEGOLM_OUTBOX_PREFIX, Effects, GroupRefusal, Recipient
from p2pid.net.host import NetHost, Stream
from p2pid.protocols.messaging import DropReason, check_header, serve_messages
from p2pid.store import contacts as contact_queries
from p2pid.store import messages as message_queries
from p2pid.store import queries
from p2pid.store.contacts import ContactDevice, ContactRecord, ContactRow, DeviceConflictError
from p2pid.store.db import Connection, savepoint
from p2pid.store.messages import (
    Cursor,
    InvalidSearchError,
    MessageRow,
    NewMessage,
    NewOutboxEntry,
    OlmSessionRow,
    OutboxEntry,
)
from p2pid.store.trio_store import TrioStore
from p2pid.wire.devices import ContactDevicesChanged, OwnDevicesChanged
from p2pid.wire.events import Event
from p2pid.wire.invite import AddressHint
from p2pid.wire.messages import (
    MAX_LAMPORT,
    MAX_RECEIPT_IDS,
    MESSAGE_ID_BYTES,
    Body,
    ContactCopy,
    ContactRemoval,
    ConversationSummary,
    DeliveryReceipt,
    DeviceListUpdate,
    Envelope,
    FileLineCopy,
    FileNotice,
    FileShare,
    GroupKey,
    GroupOps,
    GroupReadCopy,
    GroupReceipt,
    MessagePage,
    MessageReceived,
    MessagesDropped,
    MessageSent,
    MessageStateChanged,
    MessageView,
    MessagingStats,
    OlmType,
    Payload,
    PayloadError,
    PrekeyRefill,
    ProfileCopy,
    ReadCopy,
    ReadReceipt,
    Result,
    SentCopy,
    Text,
    check_text,
    decode_payload,
    encode_envelope,
    encode_payload,
)

if TYPE_CHECKING:
    from trio_typing import TaskStatus

    from p2pid.files.service import Files
    from p2pid.groups.service import Groups

log = logging.getLogger(__name__)

PREKEYS_PER_REFILL = 5
# A contact opening session after session (each one asks for a refill) cannot make this device
# mint one-time keys faster than this.
REFILL_INTERVAL_MS = 10 * 60 * 1000
MAX_PAGE = 500
RECEIVED_ENVELOPES_KEPT_MS = 30 * 24 * 3600 * 1000
RECEIPT_COALESCE_SECONDS = 0.02
DEFAULT_PAGE = 50


class MessagingError(Exception):
    """A messaging request that cannot be carried out; `kind` maps to an RPC error code."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


class _Refused(Exception):
    def __init__(self, reason: DropReason, result: Result) -> None:
        super().__init__(reason.value)
        self.reason = reason
        self.result = result


_Recipient = Recipient


@dataclass
class _BatchOutcome:
    """What committing one incoming batch produced, to announce once it is committed."""

    results: list[Result] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)
    drops: Counter[DropReason] = field(default_factory=Counter)
    kick: set[str] = field(default_factory=set)
    received: int = 0
    duplicates: int = 0
    receipts_owed: bool = False
    revoked: bool = False  # a newer list of my own devices leaves this one out
    hints: dict[str, list[str]] = field(default_factory=dict)  # addresses of new devices
    profile_copied: bool = False  # my profile changed (from another device of mine)
    group: Effects = field(default_factory=Effects)  # what group bodies did
    files: FileEffects = field(default_factory=FileEffects)  # what file bodies did


def message_view(row: MessageRow) -> MessageView:
    return MessageView(
        message_id=row.message_id.hex(),
        conversation_id=identity_id_from_public_key(row.peer_identity),
        sender_id=identity_id_from_public_key(row.sender_identity),
        sender_device=row.sender_device,
        outgoing=row.outgoing,
        text=row.body,
        sent_at_ms=row.sent_at,
        received_at_ms=row.received_at,
        lamport=row.lamport,
        state=row.state,
        kind=row.kind,
    )


def copied_sent_event(conn: Connection, row: MessageRow, now: int) -> MessageSent:
    """`message.sent` for what another device of mine sent, naming the contact as I call them."""
    view = message_view(row)
    contact = contact_queries.get_contact(conn, row.peer_identity)
    return MessageSent(
        at_ms=now,
        conversation_id=view.conversation_id,
        name=contact.name if contact else view.conversation_id[:12],
        message=view,
    )


def _state_events(rows: Sequence[MessageRow], state: str) -> list[Event]:
    by_conversation: defaultdict[bytes, list[str]] = defaultdict(list)
    for row in rows:
        by_conversation[row.peer_identity].append(row.message_id.hex())
    return [
        MessageStateChanged(
            at_ms=now_ms(),
            conversation_id=identity_id_from_public_key(peer),
            message_ids=ids,
            state=state,
        )
        for peer, ids in by_conversation.items()
    ]


class Messaging:
    def __init__(
        self,
        *,
        store: TrioStore,
        net: NetHost,
        keys: IdentityKeys,
        vault_key: bytes,
        publish: Callable[[Event], None],
    ) -> None:
        self._store = store
        self._net = net
        self._keys = keys
        self._vault_key = vault_key
        self._publish = publish
        self._identity_key = keys.identity_public_key
        self._device_key = keys.device_public_key
        self._courier = Courier(store=store, net=net, rekey=self._rekey, give_up=self._give_up)
        self._drops: Counter[str] = Counter()
        self._received = 0
        self._duplicates = 0
        self._last_refill_ms: dict[bytes, int] = {}
        self._receipts_owed = trio.Event()
        self._sessions: dict[str, tuple[str, OlmSession]] = {}  # id -> (its pickle, session)
        # Called once a signed list of my devices without this one was committed.
        self.on_revoked: Callable[[], None] = lambda: None
        # Called once a copy of my profile from another device of mine was committed.
        self.on_profile_copied: Callable[[], None] = lambda: None
        self.groups: Groups | None = None  # set by the node: group bodies and envelopes go there
        self.files: Files | None = None  # set by the node: file offers and notices go there

    async def run(self, *, task_status: TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        cutoff = now_ms() - RECEIVED_ENVELOPES_KEPT_MS
        await self._store.write(lambda conn: message_queries.prune_received_envelopes(conn, cutoff))
        async with trio.open_nursery() as nursery:
            await nursery.start(self._courier.run)
            nursery.start_soon(self._send_owed_receipts)
            task_status.started()

    async def _send_owed_receipts(self) -> None:
        """Delivery receipts go out shortly after the messages they answer were committed:
        everything received from one person meanwhile is answered by one receipt."""
        while True:
            await trio.sleep(RECEIPT_COALESCE_SECONDS)
            self._receipts_owed = trio.Event()
            devices = await self._store.write(self._compose_owed_receipts)
            for peer_id in devices:
                self._courier.kick(peer_id)
            await self._receipts_owed.wait()

    def _compose_owed_receipts(self, conn: Connection) -> set[str]:
        now = now_ms()
        devices: set[str] = set()
        for identity_key, message_ids in message_queries.take_owed_receipts(conn).items():
            for start in range(0, len(message_ids), MAX_RECEIPT_IDS):
                receipt = DeliveryReceipt(message_ids=message_ids[start : start + MAX_RECEIPT_IDS])
                devices.update(self._compose(conn, identity_key, receipt, now)[1])
        return devices

    def kick(self, peer_id: str) -> None:
        """The device is reachable now (it connected or was discovered): deliver what waits."""
        self._courier.kick(peer_id, reachable=True)

    # -- sending -------------------------------------------------------------------------------

    async def send_text(self, contact: ContactRow, text: str) -> MessageView:
        try:
            check_text(text)
        except PayloadError as error:
            raise MessagingError("invalid", str(error)) from None
        if contact.blocked:
            raise MessagingError("refused", f"{contact.name} is blocked; unblock them to write")
        row, devices = await self._store.write(
            lambda conn: self._compose(conn, contact.identity_key, Text(text=text), now_ms())
        )
        assert row is not None
        view = message_view(row)
        self._publish(
            MessageSent(
                at_ms=now_ms(),
                conversation_id=view.conversation_id,
                name=contact.name,
                message=view,
            )
        )
        for peer_id in devices:
            self._courier.kick(peer_id)
        return view

    def _compose(
        self,
        conn: Connection,
        recipient_identity: bytes,
        body: Body,
        now: int,
        recipients: Sequence[_Recipient] | None = None,
    ) -> tuple[MessageRow | None, list[str]]:
        """Store a message and queue it, encrypted, for every device that should have it (or
        for `recipients`)."""
        conversation = 0
        if isinstance(body, Text):
            conversation = message_queries.conversation_id_for(conn, recipient_identity, now)
            lamport = message_queries.next_lamport(conn, conversation)
        else:  # receipts and keys are not part of the conversation's order
            current = message_queries.get_conversation(conn, recipient_identity)
            lamport = max(1, current.lamport if current else 1)
        # A contact who sent the largest Lamport value pins the counter there; ties are
        # ordered by time and id, and nothing we send goes past what a receiver accepts.
        lamport = min(lamport, MAX_LAMPORT)
        message_id = os.urandom(MESSAGE_ID_BYTES)
        payload = encode_payload(
            Payload(
                message_id=message_id,
                sender_identity=self._identity_key,
                recipient_identity=recipient_identity,
                sent_at_ms=now,
                lamport=lamport,
                body=body,
            )
        )
        row = None
        if isinstance(body, Text):
            row = message_queries.insert_message(
                conn,
                conversation,
                NewMessage(
                    message_id=message_id,
                    sender_identity=self._identity_key,
                    sender_device=self._net.peer_id,
                    outgoing=True,
                    kind="text",
                    body=body.text,
                    lamport=lamport,
                    sent_at=now,
                    received_at=now,
                    state="pending",
                ),
            )
        if recipients is None:
            recipients = self._recipients(conn, recipient_identity)
        queued = self._enqueue_all(conn, message_id, recipients, payload, now)
        if not queued and isinstance(body, Text):
            raise MessagingError(
                "unreachable", "no device of this contact can be written to (no Olm keys)"
            )
        if isinstance(body, Text) and recipient_identity != self._identity_key:
            copy = SentCopy(conversation_with=recipient_identity, text=body.text)
            queued += self.copy_to_my_devices(conn, message_id, lamport, copy, now)
        return row, queued

    def copy_to_my_devices(
        self, conn: Connection, message_id: bytes, lamport: int, body: Body, now: int
    ) -> list[str]:
        """Queue `body` to my other devices, as a copy of something I sent: under its message
        id, with its clock and time."""
        copy = Payload(
            message_id=message_id,
            sender_identity=self._identity_key,
            recipient_identity=self._identity_key,
            sent_at_ms=now,
            lamport=lamport,
            body=body,
        )
        return self._queue_copies(conn, message_id, copy, now)

    def compose_for_groups(
        self,
        conn: Connection,
        identity_key: bytes,
        body: Body,
        now: int,
        devices: Sequence[Recipient] | None,
    ) -> list[str]:
        """Queue a body (not a text) to a person's devices, or to `devices` of theirs."""
        return self._compose(conn, identity_key, body, now, devices)[1]

    def enqueue_raw(
        self,
        conn: Connection,
        message_id: bytes,
        recipient: Recipient,
        envelope: bytes,
        session_id: str,
        now: int,
    ) -> None:
        """Queue an envelope sealed elsewhere (a group message) for one device."""
        message_queries.enqueue(
            conn,
            NewOutboxEntry(
                message_id=message_id,
                recipient_identity=recipient.identity_key,
                recipient_device=recipient.peer_id,
                payload=b"",
                envelope=envelope,
                session_id=session_id,
                created_at=now,
            ),
        )

    @property
    def identity_key(self) -> bytes:
        return self._identity_key

    def kick_device(self, peer_id: str) -> None:
        self._courier.kick(peer_id)

    def _recipients(self, conn: Connection, identity_key: bytes) -> list[_Recipient]:
        """Every device of the person's signed device list; for my own identity, my other
        devices."""
        contact = contact_queries.get_contact(
            conn, identity_key, include_self=True, include_group_only=True
        )
        devices: Sequence[ContactDevice] = contact.devices if contact else ()
        return [
            _Recipient(identity_key, d.peer_id, d.device_key, d.olm_curve25519)
            for d in devices
            if d.device_key != self._device_key
        ]

    def _queue_copies(
        self, conn: Connection, message_id: bytes, payload: Payload, now: int
    ) -> list[str]:
        """Queue a payload to my other devices under the message's own id."""
        recipients = self._recipients(conn, self._identity_key)
        return self._enqueue_all(conn, message_id, recipients, encode_payload(payload), now)

    def _enqueue_all(
        self,
        conn: Connection,
        message_id: bytes,
        recipients: Sequence[_Recipient],
        payload: bytes,
        now: int,
    ) -> list[str]:
        """Queue the payload for each device that can be encrypted to; their PeerIds."""
        queued = []
        for recipient in recipients:
            try:
                self._enqueue(conn, message_id, recipient, payload, now)
            except OlmError as error:
                log.warning("cannot encrypt for %s: %s", recipient.peer_id, error)
                continue
            queued.append(recipient.peer_id)
        return queued

    def _enqueue(
        self, conn: Connection, message_id: bytes, recipient: _Recipient, payload: bytes, now: int
    ) -> None:
        session = self._outbound_session(conn, recipient)
        envelope = self._seal(conn, session, message_id, recipient, payload, now)
        message_queries.enqueue(
            conn,
            NewOutboxEntry(
                message_id=message_id,
                recipient_identity=recipient.identity_key,
                recipient_device=recipient.peer_id,
                payload=payload,
                envelope=envelope,
                session_id=session.session_id,
                created_at=now,
            ),
        )

    def _seal(
        self,
        conn: Connection,
        session: OlmSession,
        message_id: bytes,
        recipient: _Recipient,
        payload: bytes,
        now: int,
    ) -> bytes:
        ciphertext = session.encrypt(payload)
        self._save_session(conn, session, recipient.curve25519, now)
        return encode_envelope(
            Envelope(
                message_id=message_id,
                sender_identity=self._identity_key,
                sender_device=self._device_key,
                recipient_device=recipient.device_key,
                olm_type=OlmType(ciphertext.olm_type),
                body=ciphertext.body,
            )
        )

    def _outbound_session(self, conn: Connection, recipient: _Recipient) -> OlmSession:
        """The session used last with the device, or a new one from one of its prekeys."""
        sessions = message_queries.sessions_for(conn, recipient.curve25519)
        if sessions:
            return self._session(sessions[0])
        prekey = contact_queries.claim_one_time_key(conn, recipient.peer_id)
        key = prekey.key if prekey is not None else recipient.fallback_key
        if key is None:
            raise OlmError(f"device {recipient.peer_id} published no Olm prekeys")
        return self._account(conn).open_outbound(recipient.curve25519, key)

    def _session(self, row: OlmSessionRow) -> OlmSession:
        """The stored session; the object kept from its last use if the store holds exactly
        what that use saved (a rolled-back write leaves the cached object behind: unpickled)."""
        cached = self._sessions.get(row.session_id)
        if cached is not None and cached[0] == row.pickle:
            return cached[1]
        session = OlmSession.from_pickle(row.pickle, self._vault_key)
        self._sessions[row.session_id] = (row.pickle, session)
        return session

    def _save_session(self, conn: Connection, session: OlmSession, curve: str, now: int) -> None:
        pickle = session.pickle()
        message_queries.save_session(conn, session.session_id, curve, pickle, now)
        self._sessions[session.session_id] = (pickle, session)

    def _account(self, conn: Connection) -> OlmAccount:
        identity = queries.load_local_identity(conn)
        assert identity is not None  # the node does not run without one
        return OlmAccount.from_pickle(identity.olm_account, self._vault_key)

    def _rekey(self, conn: Connection, peer_id: str, refused: Sequence[OutboxEntry]) -> None:
        """The device cannot decrypt: forget our sessions with it and re-encrypt everything
        waiting for it under a new session from a fresh prekey."""
        contact = contact_queries.contact_for_peer(
            conn, peer_id, include_self=True, include_group_only=True
        )
        device = (
            next((d for d in contact.devices if d.peer_id == peer_id), None) if contact else None
        )
        if contact is None or device is None:
            message_queries.remove_from_outbox(conn, [entry.id for entry in refused])
            return
        recipient = _Recipient(
            contact.identity_key, peer_id, device.device_key, device.olm_curve25519
        )
        message_queries.delete_sessions(conn, recipient.curve25519)
        now = now_ms()
        session: OlmSession | None = None
        for entry in message_queries.pending_for_device(conn, peer_id, 1_000_000):
            if entry.session_id.startswith(MEGOLM_OUTBOX_PREFIX):
                continue  # a group message: Megolm, not this Olm session
            if session is None:
                try:
                    session = self._outbound_session(conn, recipient)
                except OlmError as error:
                    log.warning("cannot re-key %s: %s", peer_id, error)
                    return
            envelope = self._seal(conn, session, entry.message_id, recipient, entry.payload, now)
            message_queries.replace_envelope(conn, entry.id, envelope, session.session_id)
        log.info("re-keyed the Olm session with %s", peer_id)

    def _give_up(
        self, conn: Connection, peer_id: str, refused: Sequence[OutboxEntry]
    ) -> Callable[[], None]:
        """The device refused these for good: a message no device is left to take is failed."""
        log.warning("%s refused %d envelope(s) for good", peer_id, len(refused))
        now = now_ms()
        failed = [
            row
            for entry in refused
            if (row := message_queries.mark_failed_if_undeliverable(conn, entry.message_id, now))
        ]
        events = _state_events(failed, "failed")

        def announce() -> None:
            for event in events:
                self._publish(event)

        return announce

    # -- receiving -----------------------------------------------------------------------------

    async def serve(self, stream: Stream) -> None:
        await serve_messages(stream, self)

    def count_drop(self, peer_id: str, reason: DropReason, count: int) -> None:
        self._drops[reason.value] += count
        log.info("dropped %d envelope(s) from %s: %s", count, peer_id, reason.value)
        self._publish(MessagesDropped(at_ms=now_ms(), peer_id=peer_id, reason=reason, count=count))

    async def accept(self, peer_id: str, envelopes: list[Envelope]) -> list[Result]:
        outcome = await self._store.write(
            partial(self._accept_batch, peer_id=peer_id, envelopes=envelopes)
        )
        self._received += outcome.received
        self._duplicates += outcome.duplicates
        for reason, count in outcome.drops.items():
            self.count_drop(peer_id, reason, count)
        for event in outcome.events:
            self._publish(event)
        for peer_id, addrs in outcome.hints.items():
            self._net.add_addrs(peer_id, addrs)
            outcome.kick.add(peer_id)
        for device in outcome.kick:
            self._courier.kick(device)
        if outcome.receipts_owed:
            self._receipts_owed.set()
        if outcome.revoked:
            self.on_revoked()
        if outcome.profile_copied:
            self.on_profile_copied()
        if self.groups is not None:
            self.groups.committed(outcome.group)
        if self.files is not None:
            self.files.committed(outcome.files)
        return outcome.results

    def _accept_batch(
        self, conn: Connection, *, peer_id: str, envelopes: Sequence[Envelope]
    ) -> _BatchOutcome:
        outcome = _BatchOutcome()
        now = now_ms()
        contact = contact_queries.contact_for_peer(
            conn, peer_id, include_self=True, include_group_only=True
        )
        delivered: list[bytes] = []
        refill = False
        for envelope in envelopes:
            try:
                refill |= self._accept_one(
                    conn, peer_id, contact, envelope, now, outcome, delivered
                )
            except _Refused as refused:
                outcome.drops[refused.reason] += 1
                outcome.results.append(refused.result)
        if contact is not None:
            if contact.identity_key != self._identity_key:
                for message_id in delivered:
                    message_queries.owe_receipt(conn, contact.identity_key, message_id)
                outcome.receipts_owed = bool(delivered)
            if refill and self._refill_due(contact.identity_key, now):
                prekeys = publish_one_time_keys(
                    conn, self._vault_key, self._device_key, PREKEYS_PER_REFILL
                )
                refill_body = PrekeyRefill(prekeys=prekeys)
                outcome.kick.update(self._compose(conn, contact.identity_key, refill_body, now)[1])
        return outcome

    def _refill_due(self, identity_key: bytes, now: int) -> bool:
        if now - self._last_refill_ms.get(identity_key, 0) < REFILL_INTERVAL_MS:
            return False
        self._last_refill_ms[identity_key] = now
        return True

    def _accept_one(
        self,
        conn: Connection,
        peer_id: str,
        contact: ContactRow | None,
        envelope: Envelope,
        now: int,
        outcome: _BatchOutcome,
        delivered: list[bytes],
    ) -> bool:
        """Commit one envelope (its own savepoint); True if it opened a session (a one-time
        key of this device was used up). Raises _Refused with the result to acknowledge."""
        reason = check_header(envelope, receiver_device=self._device_key, remote_peer=peer_id)
        if reason is not None:
            raise _Refused(reason, Result.REJECTED)
        if contact is None or contact.identity_key != envelope.sender_identity:
            raise _Refused(DropReason.NOT_CONTACT, Result.REJECTED)
        if contact.blocked:  # acknowledged as stored, so the sender cannot tell
            raise _Refused(DropReason.BLOCKED, Result.STORED)
        device = next(d for d in contact.devices if d.peer_id == peer_id)
        with savepoint(conn, "accept_envelope"):
            if not message_queries.record_envelope(conn, peer_id, envelope.message_id, now):
                outcome.duplicates += 1
                outcome.results.append(Result.DUPLICATE)
                return False
            if envelope.olm_type is OlmType.MEGOLM:
                if self._accept_group_message(conn, contact, device, envelope, now, outcome):
                    outcome.received += 1
                    outcome.results.append(Result.STORED)
                else:
                    outcome.duplicates += 1
                    outcome.results.append(Result.DUPLICATE)
                return False
            plaintext, opened = self._decrypt(conn, device, envelope, now)
            try:
                payload = decode_payload(plaintext)
            except ValueError:
                raise _Refused(DropReason.BAD_PAYLOAD, Result.REJECTED) from None
            if (
                payload.message_id != envelope.message_id
                or payload.sender_identity != envelope.sender_identity
                or payload.recipient_identity != self._identity_key
            ):
                raise _Refused(DropReason.FORGED_PAYLOAD, Result.REJECTED)
            self._apply(conn, contact, device, payload, now, outcome, delivered)
        outcome.received += 1
        outcome.results.append(Result.STORED)
        return opened

    def _accept_group_message(
        self,
        conn: Connection,
        contact: ContactRow,
        device: ContactDevice,
        envelope: Envelope,
        now: int,
        outcome: _BatchOutcome,
    ) -> bool:
        """A group message (or one waiting for its key); False if it was a replay."""
        if self.groups is None:
            raise _Refused(DropReason.UNDECRYPTABLE, Result.REJECTED)
        try:
            with self.groups.lock:
                self.groups.engine.accept_megolm(
                    conn, contact, device, envelope, encode_envelope(envelope), now, outcome.group
                )
        except GroupRefusal as refusal:
            if refusal.duplicate:
                return False
            raise _Refused(refusal.reason, Result.REJECTED) from None
        return True

    def _decrypt(
        self, conn: Connection, device: ContactDevice, envelope: Envelope, now: int
    ) -> tuple[bytes, bool]:
        ciphertext = OlmCiphertext(int(envelope.olm_type), envelope.body)
        curve = device.olm_curve25519
        for row in message_queries.sessions_for(conn, curve):
            session = self._session(row)
            if envelope.olm_type is OlmType.PRE_KEY and not session.matches(ciphertext):
                continue
            try:
                plaintext = session.decrypt(ciphertext)
            except OlmError:
                self._sessions.pop(row.session_id, None)
                continue
            self._save_session(conn, session, curve, now)
            return plaintext, False
        if envelope.olm_type is not OlmType.PRE_KEY:
            raise _Refused(DropReason.UNDECRYPTABLE, Result.NO_SESSION)
        account = self._account(conn)
        try:
            session, plaintext = account.open_inbound(curve, ciphertext)
        except OlmError:
            raise _Refused(DropReason.UNDECRYPTABLE, Result.NO_SESSION) from None
        queries.update_olm_account(conn, account.pickle())
        self._save_session(conn, session, curve, now)
        return plaintext, True

    def _apply(
        self,
        conn: Connection,
        contact: ContactRow,
        device: ContactDevice,
        payload: Payload,
        now: int,
        outcome: _BatchOutcome,
        delivered: list[bytes],
    ) -> None:
        body = payload.body
        sender = contact.identity_key
        if isinstance(body, GroupOps | GroupKey | GroupReceipt):
            self._apply_group_body(conn, contact, device, body, now, outcome)
            return
        if isinstance(body, FileShare | FileNotice):
            if self.files is None or sender == self._identity_key:
                raise _Refused(DropReason.BAD_PAYLOAD, Result.REJECTED)
            try:
                line = self.files.apply_body(conn, contact, device, payload, now, outcome.files)
            except FileRefusal as refusal:
                log.info("file body from %s refused: %s", device.peer_id, refusal)
                raise _Refused(refusal.reason, Result.REJECTED) from None
            if line is not None:
                delivered.append(line)
            return
        if contact.group_only and not isinstance(body, DeviceListUpdate | PrekeyRefill):
            raise _Refused(DropReason.NOT_CONTACT, Result.REJECTED)
        if sender == self._identity_key:
            self._apply_from_my_device(conn, device, payload, now, outcome)
            return
        if isinstance(
            body,
            SentCopy
            | ContactCopy
            | ReadCopy
            | ContactRemoval
            | ProfileCopy
            | GroupReadCopy
            | FileLineCopy,
        ):
            raise _Refused(DropReason.FORGED_PAYLOAD, Result.REJECTED)
        if isinstance(body, DeviceListUpdate):
            self._apply_contact_device_list(conn, contact, body, now, outcome)
            return
        if isinstance(body, Text):
            conversation = message_queries.conversation_id_for(conn, sender, now)
            row = message_queries.insert_message(
                conn,
                conversation,
                NewMessage(
                    message_id=payload.message_id,
                    sender_identity=sender,
                    sender_device=device.peer_id,
                    outgoing=False,
                    kind="text",
                    body=body.text,
                    lamport=payload.lamport,
                    sent_at=payload.sent_at_ms,
                    received_at=now,
                    state="unread",
                ),
            )
            delivered.append(payload.message_id)
            if row is not None:
                view = message_view(row)
                outcome.events.append(
                    MessageReceived(
                        at_ms=now,
                        conversation_id=view.conversation_id,
                        name=contact.name,
                        message=view,
                    )
                )
        elif isinstance(body, DeliveryReceipt):
            rows = message_queries.mark_delivered(conn, body.message_ids, sender, now)
            outcome.events += _state_events(rows, "delivered")
        elif isinstance(body, ReadReceipt):
            rows = message_queries.mark_read_up_to(conn, body.up_to, sender, now)
            outcome.events += _state_events(rows, "read")
        elif isinstance(body, PrekeyRefill):
            if body.prekeys.device_key != device.device_key:
                raise _Refused(DropReason.FORGED_PAYLOAD, Result.REJECTED)
            contact_queries.set_device_prekeys(
                conn, device.peer_id, body.prekeys.one_time_keys, body.prekeys.fallback_key
            )

    def _apply_group_body(
        self,
        conn: Connection,
        contact: ContactRow,
        device: ContactDevice,
        body: GroupOps | GroupKey | GroupReceipt,
        now: int,
        outcome: _BatchOutcome,
    ) -> None:
        groups = self.groups
        if groups is None:
            raise _Refused(DropReason.BAD_PAYLOAD, Result.REJECTED)
        try:
            with groups.lock:
                if isinstance(body, GroupOps):
                    groups.engine.apply_ops(conn, contact, body, now, outcome.group)
                elif isinstance(body, GroupKey):
                    groups.engine.take_key(conn, contact, device, body, now, outcome.group)
                else:
                    groups.apply_receipt(conn, contact, body, now, outcome.group)
        except GroupRefusal as refusal:
            raise _Refused(refusal.reason, Result.REJECTED) from None

    def _apply_from_my_device(
        self,
        conn: Connection,
        device: ContactDevice,
        payload: Payload,
        now: int,
        outcome: _BatchOutcome,
    ) -> None:
        body = payload.body
        if isinstance(body, SentCopy):
            conversation = message_queries.conversation_id_for(conn, body.conversation_with, now)
            row = message_queries.insert_message(
                conn,
                conversation,
                NewMessage(
                    message_id=payload.message_id,
                    sender_identity=self._identity_key,
                    sender_device=device.peer_id,
                    outgoing=True,
                    kind="text",
                    body=body.text,
                    lamport=payload.lamport,
                    sent_at=payload.sent_at_ms,
                    received_at=now,
                    state="pending",
                ),
            )
            if row is not None:
                outcome.events.append(copied_sent_event(conn, row, now))
        elif isinstance(body, FileLineCopy):
            if self.files is None:
                raise _Refused(DropReason.BAD_PAYLOAD, Result.REJECTED)
            self.files.apply_line_copy(conn, device, payload, body, now, outcome.files)
        elif isinstance(body, ContactCopy):
            try:
                import_contact(conn, body.contact, now)
            except SyncError:
                raise _Refused(DropReason.FORGED_PAYLOAD, Result.REJECTED) from None
        elif isinstance(body, DeviceListUpdate):
            self._apply_own_device_list(conn, body, now, outcome)
        elif isinstance(body, ProfileCopy):
            replace_profile(conn, body.fields, now)
            outcome.profile_copied = True
        elif isinstance(body, ContactRemoval):
            if body.identity_key == self._identity_key:
                pass
            elif self.groups is not None and self.groups.shares_a_group_with(body.identity_key):
                contact_queries.make_group_only(conn, body.identity_key, now)
            else:
                contact_queries.remove_contact(conn, body.identity_key)
                message_queries.drop_outbox_for_identity(conn, body.identity_key)
        elif isinstance(body, GroupReadCopy):
            if self.groups is not None:
                self.groups.apply_read_copy(conn, body, now)
        elif isinstance(body, ReadCopy):
            read = message_queries.get_conversation(conn, body.conversation_with)
            if read is not None and read.unread:
                message_queries.mark_read_here_up_to(conn, read.id, body.up_to, now)
        elif isinstance(body, PrekeyRefill):
            if body.prekeys.device_key != device.device_key:
                raise _Refused(DropReason.FORGED_PAYLOAD, Result.REJECTED)
            contact_queries.set_device_prekeys(
                conn, device.peer_id, body.prekeys.one_time_keys, body.prekeys.fallback_key
            )
        else:  # texts and receipts to myself are not a thing
            raise _Refused(DropReason.FORGED_PAYLOAD, Result.REJECTED)

    def _apply_contact_device_list(
        self,
        conn: Connection,
        contact: ContactRow,
        body: DeviceListUpdate,
        now: int,
        outcome: _BatchOutcome,
    ) -> None:
        try:
            record = record_from_list(
                body.device_list, contact.identity_key, contact.display_name, list(body.prekeys)
            )
        except DeviceListError:
            raise _Refused(DropReason.FORGED_PAYLOAD, Result.REJECTED) from None
        if record.device_list_version <= contact.device_list_version:
            return
        gone = self._replace_devices(
            conn, record, contact.devices, contact_queries.upsert_contact, body, now, outcome
        )
        outcome.events.append(
            ContactDevicesChanged(
                at_ms=now,
                identity_id=identity_id_from_public_key(contact.identity_key),
                name=contact.name,
                version=record.device_list_version,
                added=[
                    d.peer_id
                    for d in record.devices
                    if d.peer_id not in {c.peer_id for c in contact.devices}
                ],
                removed=[d.peer_id for d in gone],
            )
        )

    def _apply_own_device_list(
        self, conn: Connection, body: DeviceListUpdate, now: int, outcome: _BatchOutcome
    ) -> None:
        mine = contact_queries.get_self(conn)
        name = mine.display_name if mine else ""
        try:
            record = record_from_list(
                body.device_list, self._identity_key, name or "me", list(body.prekeys)
            )
        except DeviceListError:
            raise _Refused(DropReason.FORGED_PAYLOAD, Result.REJECTED) from None
        if mine is not None and record.device_list_version <= mine.device_list_version:
            return
        if not any(d.device_key == self._device_key for d in record.devices):
            outcome.revoked = True
            return
        before = mine.devices if mine else ()
        self._replace_devices(conn, record, before, contact_queries.save_self, body, now, outcome)
        outcome.events.append(OwnDevicesChanged(at_ms=now, version=record.device_list_version))

    def _replace_devices(
        self,
        conn: Connection,
        record: ContactRecord,
        before: Sequence[ContactDevice],
        save: Callable[[Connection, ContactRecord, int], object],
        body: DeviceListUpdate,
        now: int,
        outcome: _BatchOutcome,
    ) -> list[ContactDevice]:
        """Store a newer device list with `save`; devices it leaves out get nothing more (their
        queue and sessions go). The devices that left."""
        kept = {d.peer_id for d in record.devices}
        gone = [d for d in before if d.peer_id not in kept]
        try:
            save(conn, record, now)
        except DeviceConflictError:  # it lists a device of someone else's (or mine)
            raise _Refused(DropReason.FORGED_PAYLOAD, Result.REJECTED) from None
        self._forget_devices(conn, gone)
        self._remember_hints(conn, record.devices, body, now, outcome)
        return gone

    def _remember_hints(
        self,
        conn: Connection,
        devices: Sequence[ContactDevice],
        body: DeviceListUpdate,
        now: int,
        outcome: _BatchOutcome,
    ) -> None:
        listed = {d.peer_id for d in devices}
        for peer_id, addrs in body.addrs.items():
            usable = [a for a in addrs if AddressHint.from_multiaddr(a) is not None]
            if peer_id in listed and usable:
                queries.upsert_peer_seen(conn, peer_id, usable, "invite", {}, now)
                outcome.hints[peer_id] = usable

    def _forget_devices(self, conn: Connection, devices: Sequence[ContactDevice]) -> None:
        """Devices that left a device list get nothing more: their queue and sessions go."""
        for device in devices:
            message_queries.drop_outbox_for_device(conn, device.peer_id)
            message_queries.delete_sessions(conn, device.olm_curve25519)

    # -- device lists ----------------------------------------------------------------------------

    async def publish_device_list(
        self, body: DeviceListUpdate, also_to: Sequence[ContactDevice] = ()
    ) -> None:
        """Queue my new device list to every device of every contact, to my other devices, and
        to `also_to` (a device just revoked, so it learns it)."""

        def write(conn: Connection) -> list[str]:
            now = now_ms()
            devices: list[str] = []
            for contact in contact_queries.list_known_people(conn):
                if contact.blocked:
                    continue
                devices += self._compose(conn, contact.identity_key, body, now)[1]
            devices += self._compose(conn, self._identity_key, body, now)[1]
            revoked = [
                _Recipient(
                    self._identity_key,
                    d.peer_id,
                    d.device_key,
                    d.olm_curve25519,
                    d.fallback_key,
                )
                for d in also_to
            ]
            if revoked:
                devices += self._compose(conn, self._identity_key, body, now, revoked)[1]
            return devices

        for peer_id in await self._store.write(write):
            self._courier.kick(peer_id)

    async def copy_profile(self) -> None:
        """Queue my profile fields, as they are now, to my other devices."""

        def write(conn: Connection) -> list[str]:
            body = ProfileCopy(fields=profile_copies(conn))
            return self._compose(conn, self._identity_key, body, now_ms())[1]

        for peer_id in await self._store.write(write):
            self._courier.kick(peer_id)

    async def copy_contact(self, identity_key: bytes, *, removed: bool = False) -> None:
        """Queue a contact I added, changed or (`removed`) removed to my other devices."""

        def write(conn: Connection) -> list[str]:
            body: Body
            if removed:
                body = ContactRemoval(identity_key=identity_key)
            else:
                contact = contact_queries.get_contact(conn, identity_key)
                snapshot = contact_snapshot(conn, contact) if contact else None
                if snapshot is None:
                    return []
                body = ContactCopy(contact=snapshot)
            return self._compose(conn, self._identity_key, body, now_ms())[1]

        for peer_id in await self._store.write(write):
            self._courier.kick(peer_id)

    # -- history -------------------------------------------------------------------------------

    async def page(
        self, contact_identity: bytes, name: str, limit: int, before: str | None
    ) -> MessagePage:
        limit = _check_limit(limit)
        cursor = None
        if before is not None:
            try:
                cursor = Cursor.decode(before)
            except ValueError as error:
                raise MessagingError("invalid", f"bad cursor: {error}") from None

        def read(conn: Connection) -> tuple[list[MessageRow], int]:
            conversation = message_queries.get_conversation(conn, contact_identity)
            if conversation is None:
                return [], 0
            rows = message_queries.page(conn, conversation.id, limit + 1, cursor)
            return rows, conversation.unread

        rows, unread = await self._store.read(read)
        more = len(rows) > limit
        rows = rows[-limit:] if more else rows
        return MessagePage(
            conversation_id=identity_id_from_public_key(contact_identity),
            name=name,
            messages=[message_view(row) for row in rows],
            unread=unread,
            before=message_queries.cursor_of(rows[0]).encode() if more and rows else None,
        )

    async def search(
        self, query: str, contact_identity: bytes | None, limit: int
    ) -> list[MessageView]:
        limit = _check_limit(limit)
        if not query.strip():
            raise MessagingError("invalid", "search for some text")

        def read(conn: Connection) -> list[MessageRow]:
            conversation_id = None
            if contact_identity is not None:
                conversation = message_queries.get_conversation(conn, contact_identity)
                if conversation is None:
                    return []
                conversation_id = conversation.id
            rows = message_queries.search(conn, query, conversation_id, limit)
            groups = {
                int(id)
                for (id,) in conn.execute("SELECT id FROM conversations WHERE kind = 'group'")
            }
            return [row for row in rows if row.conversation_id not in groups]

        try:
            rows = await self._store.read(read)
        except InvalidSearchError as error:
            raise MessagingError("invalid", str(error)) from None
        return [message_view(row) for row in rows]

    async def conversations(self, names: dict[bytes, str]) -> list[ConversationSummary]:
        rows = await self._store.read(message_queries.list_conversations)
        rows = [row for row in rows if row.kind == "direct"]  # groups are listed by `groups`
        return [
            ConversationSummary(
                conversation_id=identity_id_from_public_key(row.peer_identity),
                name=names.get(row.peer_identity, identity_id_from_public_key(row.peer_identity)),
                unread=row.unread,
                last_message=message_view(row.last_message) if row.last_message else None,
                updated_at_ms=row.updated_at,
            )
            for row in rows
        ]

    async def mark_read(self, contact: ContactRow) -> int:
        """Mark the conversation read here and tell the contact (a read receipt). Returns how
        many messages were unread."""

        def write(conn: Connection) -> tuple[int, list[str]]:
            conversation = message_queries.get_conversation(conn, contact.identity_key)
            if conversation is None or conversation.unread == 0:
                return 0, []
            newest = message_queries.mark_read(conn, conversation.id, now_ms())
            if newest is None or contact.blocked:
                return conversation.unread, []
            receipt = ReadReceipt(up_to=newest.message_id)
            now = now_ms()
            devices = self._compose(conn, contact.identity_key, receipt, now)[1]
            copy = ReadCopy(conversation_with=contact.identity_key, up_to=newest.message_id)
            return conversation.unread, devices + self._compose(
                conn, self._identity_key, copy, now
            )[1]

        unread, devices = await self._store.write(write)
        for peer_id in devices:
            self._courier.kick(peer_id)
        return unread

    async def stats(self) -> MessagingStats:
        return MessagingStats(
            pending_outbox=await self._store.read(message_queries.count_pending),
            received=self._received,
            duplicates=self._duplicates,
            dropped=dict(self._drops),
        )


def _check_limit(limit: int) -> int:
    if not 1 <= limit <= MAX_PAGE:
        raise MessagingError("invalid", f"limit must be between 1 and {MAX_PAGE}")
    return limit
