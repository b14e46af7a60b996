"""What groups do inside one store transaction: apply membership ops, take Megolm keys, open and
seal group messages, and queue what goes out. Every function here runs in the store's writer
thread with the transaction's connection; the trio-facing API is p2pid.groups.service.

The group logs live in memory (replayed from `group_ops` at start) and are only touched from
inside store calls, which the store runs one at a time.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

import msgspec
import nacl.signing

from p2pid.crypto.device_list import DeviceListError
from p2pid.crypto.identity import identity_id_from_public_key, peer_id_from_public_key
from p2pid.crypto.megolm import (
    GroupSessionShare,
    InboundGroupSession,
    MegolmCiphertext,
    MegolmError,
    OutboundGroupSession,
    SeenIndexes,
    decode_share,
    encode_share,
    forward_share,
    is_forwarded,
    open_share,
)
from p2pid.device_sync import fallback_prekeys, known_addrs, record_from_list, split_signed_list
from p2pid.groups.membership import (
    Accepted,
    AddResult,
    Duplicate,
    GroupLog,
    GroupState,
    Pending,
    Rejected,
    changes,
    op_id_of,
)
from p2pid.protocols.messaging import DropReason
from p2pid.store import contacts as contact_queries
from p2pid.store import groups as group_queries
from p2pid.store import messages as message_queries
from p2pid.store import queries
from p2pid.store.contacts import ContactDevice, ContactRow, DeviceConflictError
from p2pid.store.db import Connection
from p2pid.store.messages import MessageRow, NewMessage
from p2pid.wire.events import Event
from p2pid.wire.group_messages import (
    GroupPayload,
    GroupText,
    decode_group_payload,
    encode_group_payload,
)
from p2pid.wire.group_views import GroupChanged, GroupMessageReceived, GroupMessageSent
from p2pid.wire.groups import SignedGroupOp, decode_signed_op, encode_signed_op
from p2pid.wire.messages import (
    MAX_LAMPORT,
    MESSAGE_ID_BYTES,
    Body,
    Envelope,
    GroupKey,
    GroupOps,
    MemberCard,
    MessageView,
    OlmType,
)
from p2pid.wire.records import DevicePrekeys

log = logging.getLogger(__name__)

MEGOLM_OUTBOX_PREFIX = "megolm:"  # outbox session ids of group envelopes (never re-encrypted)
MAX_OPS_PER_BODY = 48
MAX_CARDS_PER_BODY = 8
MAX_MEMBERS = 50  # product caps, from the measurements in docs/benchmarks.md
MAX_MEMBER_DEVICES = 100
MAX_ARRIVING = 16


class GroupRefusal(Exception):
    """An incoming group envelope or body refused; `reason` is counted, `duplicate` acks it as
    seen before."""

    def __init__(self, reason: DropReason, *, duplicate: bool = False) -> None:
        super().__init__(reason.value)
        self.reason = reason
        self.duplicate = duplicate


@dataclass(frozen=True)
class Recipient:
    identity_key: bytes
    peer_id: str
    device_key: bytes
    curve25519: str
    fallback_key: str | None = None


# compose(conn, recipient identity, body, now, devices or None) -> PeerIds queued
Compose = Callable[[Connection, bytes, Body, int, Sequence[Recipient] | None], list[str]]
# enqueue_raw(conn, message id, recipient, envelope bytes, outbox session id, now)
EnqueueRaw = Callable[[Connection, bytes, Recipient, bytes, str, int], None]


@dataclass
class Effects:
    """What a transaction did that the trio side announces or acts on once it committed."""

    events: list[Event] = field(default_factory=list)
    kick: set[str] = field(default_factory=set)
    sync: set[tuple[bytes, str]] = field(default_factory=set)  # (group, device) to catch up from
    receipts_owed: bool = False
    hints: dict[str, list[str]] = field(default_factory=dict)  # where member devices listen


def group_hex(group_id: bytes) -> str:
    return group_id.hex()


def message_view(row: MessageRow, group_id: bytes) -> MessageView:
    return MessageView(
        message_id=row.message_id.hex(),
        conversation_id=group_hex(group_id),
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


def my_role(state: GroupState, me: bytes) -> str:
    member = state.members.get(me)
    return member.role.value if member else "removed"


class GroupEngine:
    def __init__(
        self,
        *,
        identity_key: bytes,
        identity_signing_key: nacl.signing.SigningKey,
        device_signing_key: nacl.signing.SigningKey,
        vault_key: bytes,
        compose: Compose,
        enqueue_raw: EnqueueRaw,
        own_addrs: Callable[[], list[str]],
    ) -> None:
        self.me = identity_key
        self.identity_signing_key = identity_signing_key
        self.device_signing_key = device_signing_key
        self.device_key = bytes(device_signing_key.verify_key)
        self.peer_id = peer_id_from_public_key(self.device_key)
        self.vault_key = vault_key
        self._compose = compose
        self._enqueue_raw = enqueue_raw
        self._own_addrs = own_addrs
        self.logs: dict[bytes, GroupLog] = {}
        # Welcomes arriving in several bodies: the log until it makes me a member.
        self._arriving: dict[bytes, GroupLog] = {}

    # -- loading -------------------------------------------------------------------------------

    def load(self, conn: Connection) -> None:
        for group in group_queries.list_groups(conn):
            ops = [decode_signed_op(op) for op in group_queries.ops_of(conn, group.group_id)]
            genesis = next(op for op in ops if op_id_of(op.body) == group.group_id)
            group_log = GroupLog.from_genesis(genesis)
            group_log.add_all(op for op in ops if op is not genesis)
            self.logs[group.group_id] = group_log

    # -- people and devices ----------------------------------------------------------------------

    def person(self, conn: Connection, identity_key: bytes) -> ContactRow | None:
        return contact_queries.get_contact(
            conn, identity_key, include_self=True, include_group_only=True
        )

    def member_devices(
        self, conn: Connection, state: GroupState, *, include_me: bool = True
    ) -> list[Recipient]:
        """Every device of every member (mine other than this one), as far as I know them."""
        recipients = []
        for identity_key in state.members:
            if identity_key == self.me and not include_me:
                continue
            person = self.person(conn, identity_key)
            if person is None:
                continue
            recipients += [
                Recipient(identity_key, d.peer_id, d.device_key, d.olm_curve25519, d.fallback_key)
                for d in person.devices
                if d.device_key != self.device_key
            ]
        return recipients

    def is_member_device(self, conn: Connection, group_id: bytes, peer_id: str) -> bool:
        group_log = self.logs.get(group_id)
        if group_log is None or not group_log.state.is_member(self.me):
            return False
        person = contact_queries.contact_for_peer(
            conn, peer_id, include_self=True, include_group_only=True
        )
        return person is not None and group_log.state.is_member(person.identity_key)

    def card_of(
        self, conn: Connection, identity_key: bytes, addrs: dict[str, list[str]]
    ) -> MemberCard | None:
        person = self.person(conn, identity_key)
        if person is None or person.device_list is None:
            return None
        prekeys = fallback_prekeys(person.devices)
        if identity_key == self.me:
            own = queries.load_fallback_key(conn)
            if own is not None:
                prekeys.append(DevicePrekeys(device_key=self.device_key, fallback_key=own))
            addrs = {**addrs, self.peer_id: self._own_addrs()}
        return MemberCard(
            display_name=(person.display_name or "?")[:64],
            device_list=split_signed_list(person.device_list),
            prekeys=prekeys[:32],
            addrs={d.peer_id: addrs[d.peer_id][:8] for d in person.devices if addrs.get(d.peer_id)},
        )

    def take_card(
        self, conn: Connection, identity_key: bytes, card: MemberCard, now: int, effects: Effects
    ) -> bool:
        """Store a member's card (a group-only person unless they are a contact already)."""
        try:
            record = record_from_list(
                card.device_list, identity_key, card.display_name, list(card.prekeys)
            )
        except DeviceListError:
            return False
        if identity_key == self.me:
            return False
        known = self.person(conn, identity_key)
        if known is not None and not known.group_only:  # a contact keeps the name they gave me
            record = dataclasses.replace(record, display_name=known.display_name)
        try:
            contact_queries.upsert_contact(conn, record, now, group_only=True)
        except DeviceConflictError:
            return False
        for peer_id, addrs in card.addrs.items():
            if any(d.peer_id == peer_id for d in record.devices) and addrs:
                queries.upsert_peer_seen(conn, peer_id, list(addrs), "invite", {}, now)
                effects.hints[peer_id] = list(addrs)
        return True

    def cap_refusal(self, conn: Connection, group_id: bytes, new_devices: int) -> str | None:
        """Why one more member with `new_devices` devices would break the group's caps."""
        state = self.logs[group_id].state
        if len(state.members) >= MAX_MEMBERS:
            return f"the group has {MAX_MEMBERS} members, the most"
        devices = len(self.member_devices(conn, state)) + new_devices
        if devices > MAX_MEMBER_DEVICES:
            return f"the group would have over {MAX_MEMBER_DEVICES} devices"
        return None

    # -- membership ----------------------------------------------------------------------------

    def new_group(self, conn: Connection, group_log: GroupLog, now: int) -> None:
        state = group_log.state
        group_queries.create_group(
            conn, group_log.group_id, state.name, state.avatar, my_role(state, self.me), now
        )
        self.store_ops(conn, group_log, group_log.ops(), now)
        self.logs[group_log.group_id] = group_log

    def store_ops(
        self, conn: Connection, group_log: GroupLog, ops: Iterable[SignedGroupOp], now: int
    ) -> None:
        group_queries.add_ops(
            conn, group_log.group_id, [(op_id_of(op.body), encode_signed_op(op)) for op in ops], now
        )
        state = group_log.state
        role = my_role(state, self.me)
        row = group_queries.get_group(conn, group_log.group_id)
        if role == "removed" and row is not None and row.my_role == "left":
            role = "left"  # I left it myself
        group_queries.update_group(
            conn,
            group_log.group_id,
            name=state.name,
            avatar=state.avatar,
            my_role=role,
            version=state.version,
            now_ms=now,
        )

    def announce_change(
        self,
        conn: Connection,
        group_log: GroupLog,
        before: GroupState | None,
        now: int,
        effects: Effects,
    ) -> None:
        after = group_log.state
        row = group_queries.get_group(conn, group_log.group_id)
        if before is not None:
            diff = changes(before, after)
            if diff.empty:
                return
            added, removed = diff.added, diff.removed
        else:
            added, removed = frozenset(after.members), frozenset()
        effects.events.append(
            GroupChanged(
                at_ms=now,
                group_id=group_hex(group_log.group_id),
                name=after.name,
                my_role=row.my_role if row is not None else my_role(after, self.me),
                added=sorted(identity_id_from_public_key(k) for k in added),
                removed=sorted(identity_id_from_public_key(k) for k in removed),
            )
        )

    def distribute_ops(
        self,
        conn: Connection,
        group_log: GroupLog,
        ops: Sequence[SignedGroupOp],
        now: int,
        effects: Effects,
        *,
        also: Iterable[bytes] = (),
        welcome: Iterable[bytes] = (),
    ) -> None:
        """Queue `ops` to every member (and to `also`, e.g. who was just removed); `welcome`
        members get the whole log and every member's card instead, and the others get theirs."""
        state = group_log.state
        welcomed = set(welcome)
        addrs = known_addrs(conn)
        everyone = [k for k in state.members if k not in welcomed] + [
            k for k in also if k not in state.members
        ]
        new_cards = [c for k in welcomed if (c := self.card_of(conn, k, addrs)) is not None]
        for identity_key in everyone:
            cards = [] if identity_key == self.me else new_cards
            self._send_ops(conn, group_log.group_id, identity_key, list(ops), cards, now, effects)
        if welcomed:
            every_card = [
                c for k in state.members if (c := self.card_of(conn, k, addrs)) is not None
            ]
            for identity_key in welcomed:
                cards = [c for c in every_card if c is not None]
                self._send_ops(
                    conn, group_log.group_id, identity_key, group_log.ops(), cards, now, effects
                )

    def _send_ops(
        self,
        conn: Connection,
        group_id: bytes,
        identity_key: bytes,
        ops: list[SignedGroupOp],
        cards: list[MemberCard],
        now: int,
        effects: Effects,
    ) -> None:
        encoded = [encode_signed_op(op) for op in ops]
        bodies = [
            GroupOps(group_id=group_id, ops=encoded[start : start + MAX_OPS_PER_BODY])
            for start in range(0, len(encoded), MAX_OPS_PER_BODY)
        ]
        # The cards follow the ops (the outbox keeps the order): they are taken for members.
        bodies += [
            GroupOps(group_id=group_id, ops=[], cards=cards[start : start + MAX_CARDS_PER_BODY])
            for start in range(0, len(cards), MAX_CARDS_PER_BODY)
        ]
        for body in bodies:
            effects.kick.update(self._compose(conn, identity_key, body, now, None))

    def apply_ops(
        self, conn: Connection, sender: ContactRow, body: GroupOps, now: int, effects: Effects
    ) -> None:
        try:
            ops = [decode_signed_op(op) for op in body.ops]
        except ValueError:
            raise GroupRefusal(DropReason.BAD_PAYLOAD) from None
        group_log = self.logs.get(body.group_id)
        created = False
        if group_log is None:
            group_log = self._arriving.get(body.group_id)
            if group_log is None:
                genesis = next((op for op in ops if op_id_of(op.body) == body.group_id), None)
                if genesis is None:
                    return  # ops of a group I am not in: a welcome starts with the genesis
                try:
                    group_log = GroupLog.from_genesis(genesis)
                except ValueError:
                    raise GroupRefusal(DropReason.FORGED_PAYLOAD) from None
                while len(self._arriving) >= MAX_ARRIVING:
                    self._arriving.pop(next(iter(self._arriving)))
                self._arriving[body.group_id] = group_log
            created = True
        before = None if created else group_log.state
        if before is not None and not (
            before.is_member(sender.identity_key) or sender.identity_key == self.me
        ):
            raise GroupRefusal(DropReason.NOT_CONTACT)
        results = group_log.add_all(ops)
        rejected = [r for r in results if isinstance(r, Rejected)]
        for result in rejected:
            log.info("group op %s refused: %s", result.op_id.hex()[:12], result.reason)
        if ops and len(rejected) == len(ops):
            raise GroupRefusal(DropReason.FORGED_PAYLOAD)  # counted as a drop
        state = group_log.state
        if created:
            if not state.is_member(self.me) or not state.is_member(sender.identity_key):
                return  # not (yet) a group I was added to by one of its members
            self._arriving.pop(body.group_id, None)
            self.new_group(conn, group_log, now)
        else:
            self.store_ops(conn, group_log, stored_by(group_log, results), now)
        for identity_key, card in self._cards_by_identity(body.cards):
            if state.is_member(identity_key):
                self.take_card(conn, identity_key, card, now, effects)
        if any(isinstance(r, Pending) for r in results):
            sender_devices = [d.peer_id for d in sender.devices]
            effects.sync.update((body.group_id, p) for p in sender_devices[:1])
        if any(isinstance(r, Accepted | Duplicate) for r in results) or created:
            self.announce_change(conn, group_log, before, now, effects)
        if not state.is_member(self.me):
            group_queries.delete_outbound(conn, body.group_id)

    def _introduce_myself(
        self, conn: Connection, group_id: bytes, identity_key: bytes, now: int, effects: Effects
    ) -> None:
        """My own card (where my devices listen now), to a member I write to for the first
        time: it can answer (receipts) and reach me later, whatever the admin knew of me."""
        card = self.card_of(conn, self.me, {})
        if card is not None:
            self._send_ops(conn, group_id, identity_key, [], [card], now, effects)

    def _cards_by_identity(self, cards: Sequence[MemberCard]) -> list[tuple[bytes, MemberCard]]:
        found = []
        for card in cards:
            try:
                identity_key = msgspec.msgpack.decode(card.device_list.body)["identity_key"]
            except (msgspec.DecodeError, KeyError, TypeError):
                continue
            if isinstance(identity_key, bytes) and len(identity_key) == 32:
                found.append((identity_key, card))
        return found

    # -- Megolm keys ---------------------------------------------------------------------------

    def take_key(
        self,
        conn: Connection,
        sender: ContactRow,
        device: ContactDevice,
        body: GroupKey,
        now: int,
        effects: Effects,
    ) -> None:
        try:
            share = decode_share(body.share)
            session = open_share(share, self.vault_key, olm_sender_device_key=device.device_key)
        except MegolmError:
            raise GroupRefusal(DropReason.FORGED_PAYLOAD) from None
        if share.sender_device_key != device.device_key:
            raise GroupRefusal(DropReason.FORGED_PAYLOAD)  # keys are handed over by their owner
        self.keep_session(conn, share, session, sender.identity_key, body.share, now, effects)

    def keep_session(
        self,
        conn: Connection,
        share: GroupSessionShare,
        session: InboundGroupSession,
        owner_identity: bytes,
        encoded_share: bytes,
        now: int,
        effects: Effects,
    ) -> bool:
        group_log = self.logs.get(share.group_id)
        if group_log is None or not group_log.state.is_member(owner_identity):
            return False
        owner = self.person(conn, owner_identity)
        if owner is None or not any(d.device_key == share.sender_device_key for d in owner.devices):
            return False
        known = group_queries.get_inbound(conn, share.session_id)
        if known is not None:
            if (known.group_id, known.sender_device_key) != (
                share.group_id,
                share.sender_device_key,
            ):
                raise GroupRefusal(DropReason.FORGED_PAYLOAD)  # the first binding wins
            # The owner's key wins over a member's export (which may hold a bogus ratchet);
            # between keys of one kind, the one reaching further back.
            forwarded, known_forwarded = (
                is_forwarded(share),
                is_forwarded(decode_share(known.share)),
            )
            if forwarded and not known_forwarded:
                return False
            if forwarded == known_forwarded and known.first_index <= share.first_index:
                return False
        group_queries.save_inbound(
            conn,
            group_queries.InboundRow(
                session_id=share.session_id,
                group_id=share.group_id,
                sender_identity=owner_identity,
                sender_device_key=share.sender_device_key,
                sender_peer_id=peer_id_from_public_key(share.sender_device_key),
                pickle=session.pickle(),
                first_index=share.first_index,
                share=encoded_share,
                seen=known.seen if known is not None else SeenIndexes().to_bytes(),
                created_at=now,
            ),
        )
        for sender_peer_id, raw in group_queries.take_held(conn, share.session_id):
            try:
                envelope = msgspec.msgpack.decode(raw, type=Envelope)
                self.open_message(
                    conn,
                    envelope.message_id,
                    envelope.sender_identity,
                    envelope.sender_device,
                    envelope.body,
                    now,
                    effects,
                )
            except (GroupRefusal, msgspec.DecodeError) as error:
                log.info("held group message from %s dropped: %s", sender_peer_id, error)
        return True

    def forwarded_keys(
        self, conn: Connection, group_id: bytes, first_indexes: dict[str, int]
    ) -> list[bytes]:
        """The owners' shares of these sessions, exported from the given indexes."""
        shares = []
        for session_id, index in first_indexes.items():
            row = group_queries.get_inbound(conn, session_id)
            if row is None or row.group_id != group_id:
                continue
            try:
                original = decode_share(row.share)
                session = InboundGroupSession.from_pickle(row.pickle, self.vault_key)
                index = max(index, session.first_known_index)
                shares.append(encode_share(forward_share(original, session, index)))
            except MegolmError:
                continue
        return shares

    def take_forwarded_key(
        self, conn: Connection, encoded: bytes, via_device_key: bytes, now: int, effects: Effects
    ) -> bool:
        try:
            share = decode_share(encoded)
            session = open_share(share, self.vault_key, olm_sender_device_key=via_device_key)
        except MegolmError:
            return False
        owner = contact_queries.contact_for_peer(
            conn,
            peer_id_from_public_key(share.sender_device_key),
            include_self=True,
            include_group_only=True,
        )
        if owner is None:
            return False
        try:
            return self.keep_session(
                conn, share, session, owner.identity_key, encoded, now, effects
            )
        except GroupRefusal:
            return False

    # -- group messages ------------------------------------------------------------------------

    def accept_megolm(
        self,
        conn: Connection,
        sender: ContactRow,
        device: ContactDevice,
        envelope: Envelope,
        raw: bytes,
        now: int,
        effects: Effects,
    ) -> bool:
        """A group message from a member device; False if it waits for its session's key."""
        try:
            ciphertext = msgspec.msgpack.decode(envelope.body, type=MegolmCiphertext)
        except msgspec.DecodeError:
            raise GroupRefusal(DropReason.BAD_PAYLOAD) from None
        if group_queries.get_inbound(conn, ciphertext.session_id) is None:
            group_queries.hold(conn, ciphertext.session_id, device.peer_id, raw, now)
            return False
        self.open_message(
            conn,
            envelope.message_id,
            sender.identity_key,
            device.device_key,
            envelope.body,
            now,
            effects,
        )
        return True

    def open_message(
        self,
        conn: Connection,
        message_id: bytes,
        sender_identity: bytes,
        sender_device_key: bytes,
        body: bytes,
        now: int,
        effects: Effects,
    ) -> MessageRow | None:
        """Decrypt, check and store one group message (from its sender or from a member's
        history); the stored row, or None if it was here already."""
        try:
            ciphertext = msgspec.msgpack.decode(body, type=MegolmCiphertext)
        except msgspec.DecodeError:
            raise GroupRefusal(DropReason.BAD_PAYLOAD) from None
        inbound = group_queries.get_inbound(conn, ciphertext.session_id)
        if inbound is None:
            raise GroupRefusal(DropReason.UNDECRYPTABLE)
        if (inbound.sender_identity, inbound.sender_device_key) != (
            sender_identity,
            sender_device_key,
        ):
            raise GroupRefusal(DropReason.FORGED_PAYLOAD)
        group_log = self.logs.get(inbound.group_id)
        if group_log is None:
            raise GroupRefusal(DropReason.NOT_CONTACT)
        state = group_log.state
        if not state.is_member(self.me) or not state.is_member(sender_identity):
            raise GroupRefusal(DropReason.NOT_CONTACT)  # a removed member, or I left
        if group_queries.known_ids(conn, [message_id]):
            raise GroupRefusal(DropReason.UNDECRYPTABLE, duplicate=True)
        try:
            session = InboundGroupSession.from_pickle(inbound.pickle, self.vault_key)
            plaintext, index = session.decrypt(ciphertext)
        except MegolmError:
            raise GroupRefusal(DropReason.UNDECRYPTABLE) from None
        seen = SeenIndexes.from_bytes(inbound.seen)
        if not seen.check_and_record(index):
            raise GroupRefusal(DropReason.UNDECRYPTABLE, duplicate=True)  # a replay
        try:
            payload = decode_group_payload(plaintext)
        except ValueError:
            raise GroupRefusal(DropReason.BAD_PAYLOAD) from None
        if (
            payload.message_id != message_id
            or payload.group_id != inbound.group_id
            or payload.sender_identity != sender_identity
            or payload.sender_device != sender_device_key
        ):
            raise GroupRefusal(DropReason.FORGED_PAYLOAD)
        group_queries.update_seen(conn, ciphertext.session_id, seen.to_bytes())
        group_queries.store_envelope(
            conn,
            group_queries.GroupEnvelopeRow(
                message_id=message_id,
                group_id=inbound.group_id,
                sender_identity=sender_identity,
                sender_device_key=sender_device_key,
                session_id=ciphertext.session_id,
                message_index=index,
                ciphertext=body,
                sent_at=payload.sent_at_ms,
                received_at=now,
            ),
        )
        mine = sender_identity == self.me
        conversation = message_queries.conversation_id_for(conn, inbound.group_id, now, "group")
        row = message_queries.insert_message(
            conn,
            conversation,
            NewMessage(
                message_id=message_id,
                sender_identity=sender_identity,
                sender_device=inbound.sender_peer_id,
                outgoing=mine,
                kind="text",
                body=payload.body.text,
                lamport=payload.lamport,
                sent_at=payload.sent_at_ms,
                received_at=now,
                state="delivered" if mine else "unread",
            ),
        )
        if row is None:
            return None
        view = message_view(row, inbound.group_id)
        if mine:
            effects.events.append(
                GroupMessageSent(
                    at_ms=now, group_id=view.conversation_id, group_name=state.name, message=view
                )
            )
        else:
            group_queries.owe_receipt(conn, inbound.group_id, sender_identity, message_id)
            effects.receipts_owed = True
            member = state.members[sender_identity]
            person = self.person(conn, sender_identity)
            name = person.name if person is not None and not person.group_only else None
            effects.events.append(
                GroupMessageReceived(
                    at_ms=now,
                    group_id=view.conversation_id,
                    group_name=state.name,
                    sender_name=name or member.display_name,
                    message=view,
                )
            )
        return row

    def seal_message(
        self, conn: Connection, group_id: bytes, text: str, now: int, effects: Effects
    ) -> MessageRow:
        """Store my message and queue it, under my Megolm session, to every member device,
        sharing (or first rotating) the session as membership requires."""
        group_log = self.logs[group_id]
        state = group_log.state
        recipients = self.member_devices(conn, state)
        outbound = self._current_outbound(conn, group_id, recipients, now)
        session = OutboundGroupSession.from_pickle(outbound.pickle, self.vault_key)
        shared = set(outbound.shared_with)
        newcomers = [r for r in recipients if r.peer_id not in shared]
        if newcomers:
            key = GroupKey(share=encode_share(session.share(group_id, self.device_signing_key)))
            by_identity: dict[bytes, list[Recipient]] = {}
            for recipient in newcomers:
                by_identity.setdefault(recipient.identity_key, []).append(recipient)
            for identity_key, devices in by_identity.items():
                person = self.person(conn, identity_key)
                if person is not None and person.group_only:
                    self._introduce_myself(conn, group_id, identity_key, now, effects)
                queued = self._compose(conn, identity_key, key, now, devices)
                effects.kick.update(queued)
                shared.update(queued)  # a device without Olm keys gets the key at a later send
        conversation = message_queries.conversation_id_for(conn, group_id, now, "group")
        lamport = min(message_queries.next_lamport(conn, conversation), MAX_LAMPORT)
        message_id = os.urandom(MESSAGE_ID_BYTES)
        ciphertext = session.encrypt(
            encode_group_payload(
                GroupPayload(
                    message_id=message_id,
                    group_id=group_id,
                    sender_identity=self.me,
                    sender_device=self.device_key,
                    sent_at_ms=now,
                    lamport=lamport,
                    body=GroupText(text=text),
                )
            )
        )
        group_queries.save_outbound(
            conn,
            group_queries.OutboundRow(
                group_id=group_id,
                session_id=session.session_id,
                pickle=session.pickle(),
                shared_with=tuple(sorted(shared)),
                created_at=outbound.created_at,
                messages=outbound.messages + 1,
            ),
        )
        body = msgspec.msgpack.encode(ciphertext)
        group_queries.store_envelope(
            conn,
            group_queries.GroupEnvelopeRow(
                message_id=message_id,
                group_id=group_id,
                sender_identity=self.me,
                sender_device_key=self.device_key,
                session_id=session.session_id,
                message_index=ciphertext.message_index,
                ciphertext=body,
                sent_at=now,
                received_at=now,
            ),
        )
        row = message_queries.insert_message(
            conn,
            conversation,
            NewMessage(
                message_id=message_id,
                sender_identity=self.me,
                sender_device=self.peer_id,
                outgoing=True,
                kind="text",
                body=text,
                lamport=lamport,
                sent_at=now,
                received_at=now,
                state="pending",
            ),
        )
        assert row is not None
        envelope_session = MEGOLM_OUTBOX_PREFIX + session.session_id
        for recipient in recipients:
            envelope = Envelope(
                message_id=message_id,
                sender_identity=self.me,
                sender_device=self.device_key,
                recipient_device=recipient.device_key,
                olm_type=OlmType.MEGOLM,
                body=body,
            )
            self._enqueue_raw(
                conn, message_id, recipient, msgspec.msgpack.encode(envelope), envelope_session, now
            )
            effects.kick.add(recipient.peer_id)
        return row

    def _current_outbound(
        self, conn: Connection, group_id: bytes, recipients: Sequence[Recipient], now: int
    ) -> group_queries.OutboundRow:
        """My session for the group; a new one if there is none, if it is old, or if a device it
        was shared with is no longer a member device (a removal, a leave, a revoked device)."""
        current = group_queries.get_outbound(conn, group_id)
        members = {r.peer_id for r in recipients}
        if current is not None:
            session = OutboundGroupSession.from_pickle(current.pickle, self.vault_key)
            stale = set(current.shared_with) - members
            if not stale and not session.rotation_due(now - current.created_at):
                return current
        return self.rotate(conn, group_id, now)

    def rotate(self, conn: Connection, group_id: bytes, now: int) -> group_queries.OutboundRow:
        """A new outbound session, shared with nobody yet; also kept as an inbound session so
        this device can read its own messages and forward their key to members who missed
        them."""
        session = OutboundGroupSession.create(self.vault_key)
        share = session.share(group_id, self.device_signing_key)
        inbound = open_share(share, self.vault_key, olm_sender_device_key=self.device_key)
        group_queries.save_inbound(
            conn,
            group_queries.InboundRow(
                session_id=share.session_id,
                group_id=group_id,
                sender_identity=self.me,
                sender_device_key=self.device_key,
                sender_peer_id=self.peer_id,
                pickle=inbound.pickle(),
                first_index=share.first_index,
                share=encode_share(share),
                seen=SeenIndexes().to_bytes(),
                created_at=now,
            ),
        )
        row = group_queries.OutboundRow(
            group_id=group_id,
            session_id=session.session_id,
            pickle=session.pickle(),
            shared_with=(),
            created_at=now,
            messages=0,
        )
        group_queries.save_outbound(conn, row)
        return row


def stored_by(group_log: GroupLog, results: Sequence[AddResult]) -> list[SignedGroupOp]:
    """The ops to store after `add_all`: those it accepted (and released), and those it already
    held (stored again, idempotently, in case a rolled-back write left the log ahead)."""
    ids: list[bytes] = []
    for result in results:
        if isinstance(result, Accepted):
            ids += [result.op_id, *result.released]
        elif isinstance(result, Duplicate):
            ids.append(result.op_id)
    return [op for op_id in ids if (op := group_log.get(op_id)) is not None]
