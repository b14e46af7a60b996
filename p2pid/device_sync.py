"""Copying what one device of mine knows to another: contacts, blocks, profile fields and
message history, as the records of `p2pid.wire.device_link`. Store-level and synchronous: the
callers run these inside one read or one write.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from p2pid.crypto.device_list import DeviceListError, VerifiedDeviceList, verify_device_list
from p2pid.crypto.identity import identity_id_from_public_key, peer_id_from_public_key
from p2pid.store import contacts as contact_queries
from p2pid.store import messages as message_queries
from p2pid.store import queries
from p2pid.store.contacts import ContactDevice, ContactRecord, ContactRow, DeviceConflictError
from p2pid.store.db import Connection, StoreError, savepoint
from p2pid.store.messages import NewMessage
from p2pid.wire.device_link import (
    MAX_SYNC_BATCH_BYTES,
    MAX_SYNC_CONTACTS,
    MAX_SYNC_MESSAGES,
    ContactSnapshot,
    MessageCopy,
    ProfileFieldCopy,
    SyncBatch,
    SyncEnd,
)
from p2pid.wire.records import DevicePrekeys, SignedDeviceList

log = logging.getLogger(__name__)

SIGNATURE_BYTES = 64
MAX_SNAPSHOT_NAME = 64  # ContactSnapshot.display_name; a contact's card is not bounded
EXPORT_PAGE = 1000
_STATES_OUT = frozenset({"pending", "delivered", "read", "failed"})
_STATES_IN = frozenset({"unread", "read"})


class SyncError(ValueError):
    """A copied record that must not be stored; the message says why."""


def split_signed_list(blob: bytes) -> SignedDeviceList:
    """A device list as the store keeps it (body then signature) back into its record."""
    return SignedDeviceList(body=blob[:-SIGNATURE_BYTES], signature=blob[-SIGNATURE_BYTES:])


def join_signed_list(signed: SignedDeviceList) -> bytes:
    return signed.body + signed.signature


def record_from_list(
    signed: SignedDeviceList, identity_key: bytes, display_name: str, prekeys: list[DevicePrekeys]
) -> ContactRecord:
    """A device list, verified, as the store's record with the prekeys given for its devices.
    Raises DeviceListError."""
    return record_from_verified(verify_device_list(signed, identity_key), display_name, prekeys)


def record_from_verified(
    verified: VerifiedDeviceList, display_name: str, prekeys: Sequence[DevicePrekeys]
) -> ContactRecord:
    by_key = {p.device_key: p for p in prekeys}
    devices = []
    for entry in verified.body.devices:
        keys = by_key.get(entry.device_key)
        devices.append(
            ContactDevice(
                peer_id=peer_id_from_public_key(entry.device_key),
                device_key=entry.device_key,
                olm_curve25519=entry.olm_curve25519,
                olm_ed25519=entry.olm_ed25519,
                name=entry.name,
                created_at=entry.created_at,
                capabilities=tuple(entry.capabilities),
                fallback_key=keys.fallback_key if keys else None,
                one_time_keys=tuple(keys.one_time_keys) if keys else (),
            )
        )
    return ContactRecord(
        identity_key=verified.body.identity_key,
        display_name=display_name,
        device_list=join_signed_list(verified.signed),
        device_list_version=verified.body.version,
        devices=tuple(devices),
    )


def fallback_prekeys(devices: tuple[ContactDevice, ...]) -> list[DevicePrekeys]:
    """Only fallback keys: one-time keys are for one device to claim, never to copy."""
    return [
        DevicePrekeys(device_key=d.device_key, fallback_key=d.fallback_key)
        for d in devices
        if d.fallback_key is not None
    ]


def known_addrs(conn: Connection) -> dict[str, list[str]]:
    """Where each known peer was last seen listening (at most 16 addresses each)."""
    return {peer.peer_id: [a.addr for a in peer.addrs][:16] for peer in queries.list_peers(conn)}


def contact_snapshot(
    conn: Connection, contact: ContactRow, addrs: dict[str, list[str]] | None = None
) -> ContactSnapshot | None:
    """The contact as a copy for another device of mine; `addrs` is `known_addrs(conn)`, read
    here if not given (pass it when snapshotting many contacts)."""
    if contact.device_list is None:
        return None
    if addrs is None:
        addrs = known_addrs(conn)
    return ContactSnapshot(
        identity_key=contact.identity_key,
        display_name=contact.display_name[:MAX_SNAPSHOT_NAME]
        or identity_id_from_public_key(contact.identity_key)[:12],
        nickname=contact.nickname,
        verified_by=contact.verified_by,
        verified_at=contact.verified_at,
        blocked=contact.blocked,
        device_list=split_signed_list(contact.device_list),
        prekeys=fallback_prekeys(contact.devices),
        fields=contact_queries.contact_fields(conn, contact.identity_key),
        addrs={d.peer_id: addrs[d.peer_id] for d in contact.devices if addrs.get(d.peer_id)},
        added_at=contact.added_at,
    )


def import_contact(conn: Connection, snapshot: ContactSnapshot, now: int) -> None:
    """Store a contact copied from another device of mine. Raises SyncError (nothing stored)."""
    try:
        record = record_from_list(
            snapshot.device_list,
            snapshot.identity_key,
            snapshot.display_name,
            list(snapshot.prekeys),
        )
    except DeviceListError as error:
        raise SyncError(f"a copied contact's device list is refused: {error}") from None
    try:
        with savepoint(conn, "import_contact"):
            contact_queries.upsert_contact(conn, record, now, added_at=snapshot.added_at)
            contact_queries.rename_contact(conn, snapshot.identity_key, snapshot.nickname, now)
            contact_queries.set_blocked(conn, snapshot.identity_key, snapshot.blocked, now)
            if snapshot.verified_by == "invite":
                contact_queries.set_verified(
                    conn, snapshot.identity_key, "invite", snapshot.verified_at or now
                )
            elif snapshot.verified_by == "sas":
                contact_queries.set_verified(
                    conn, snapshot.identity_key, "sas", snapshot.verified_at or now
                )
            if snapshot.fields:
                contact_queries.set_contact_fields(
                    conn, snapshot.identity_key, snapshot.fields, now
                )
            for peer_id, addrs in snapshot.addrs.items():
                if any(d.peer_id == peer_id for d in record.devices):
                    queries.upsert_peer_seen(conn, peer_id, addrs, "manual", {}, now)
    except DeviceConflictError as error:
        raise SyncError(f"a copied contact claims another identity's device: {error}") from None


@dataclass(frozen=True)
class HistoryChoice:
    """Which messages move to a new device: none, all, or those of the last `days`."""

    mode: str  # none | all | days
    days: int | None = None

    def since_ms(self, now: int) -> int | None:
        if self.mode == "none":
            return None
        if self.mode == "all":
            return 0
        return now - (self.days or 0) * 24 * 3600 * 1000


def export_batches(
    conn: Connection, choice: HistoryChoice, now: int, addrs: dict[str, list[str]] | None = None
) -> tuple[list[SyncBatch], SyncEnd]:
    """Everything a new device of mine gets, as bounded batches (read in one snapshot); `addrs`
    as in `contact_snapshot`."""
    if addrs is None:
        addrs = known_addrs(conn)
    contacts = [
        snapshot
        for row in contact_queries.list_contacts(conn)
        if (snapshot := contact_snapshot(conn, row, addrs)) is not None
    ]
    profile = profile_copies(conn)
    batches = [
        SyncBatch(contacts=contacts[start : start + MAX_SYNC_CONTACTS])
        for start in range(0, len(contacts), MAX_SYNC_CONTACTS)
    ]
    batches.append(SyncBatch(blocked=contact_queries.list_blocked(conn), profile=profile))
    count = 0
    since = choice.since_ms(now)
    if since is not None:
        for messages in _message_batches(conn, since):
            batches.append(SyncBatch(messages=messages))
            count += len(messages)
    return batches, SyncEnd(contacts=len(contacts), messages=count)


def _message_batches(conn: Connection, since: int) -> Iterator[list[MessageCopy]]:
    batch: list[MessageCopy] = []
    size = 0
    after = 0
    while True:
        rows = message_queries.messages_since(conn, since, after, EXPORT_PAGE)
        if not rows:
            break
        after = rows[-1].rowid
        for row in rows:
            if row.kind != "text":
                continue
            copy = MessageCopy(
                conversation_with=row.peer_identity,
                message_id=row.message_id,
                sender_identity=row.sender_identity,
                sender_device=row.sender_device,
                outgoing=row.outgoing,
                body=row.body,
                lamport=row.lamport,
                sent_at=row.sent_at,
                received_at=row.received_at,
                state=row.state,
            )
            size += len(row.body.encode()) + 200
            batch.append(copy)
            if len(batch) >= MAX_SYNC_MESSAGES or size >= MAX_SYNC_BATCH_BYTES // 2:
                yield batch
                batch, size = [], 0
    if batch:
        yield batch


def import_batch(conn: Connection, batch: SyncBatch, now: int) -> None:
    for snapshot in batch.contacts:
        try:
            import_contact(conn, snapshot, now)
        except SyncError as error:
            log.warning("skipped a copied contact: %s", error)
    for identity_key in batch.blocked:
        contact_queries.set_blocked(conn, identity_key, True, now)
    if batch.profile:
        replace_profile(conn, batch.profile, now)
    for message in batch.messages:
        import_message(conn, message, now)


def profile_copies(conn: Connection) -> list[ProfileFieldCopy]:
    return [
        ProfileFieldCopy(
            name=row.name, value=row.value, audience=row.audience, granted_to=list(row.granted_to)
        )
        for row in contact_queries.list_profile_fields(conn)
    ]


def replace_profile(conn: Connection, fields: Sequence[ProfileFieldCopy], now: int) -> None:
    """Make my profile fields (values, audiences, grants) exactly these."""
    wanted = {field.name: field for field in fields}
    for row in contact_queries.list_profile_fields(conn):
        if row.name not in wanted:
            contact_queries.remove_profile_field(conn, row.name)
            continue
        for identity_key in set(row.granted_to) - set(wanted[row.name].granted_to):
            contact_queries.revoke_field_grant(conn, row.name, identity_key)
    for field in fields:
        try:
            audience = contact_queries.parse_audience(field.audience)
        except StoreError:
            continue
        contact_queries.set_profile_field(conn, field.name, field.value, audience, now)
        for identity_key in field.granted_to:
            if contact_queries.get_contact(conn, identity_key) is not None:
                contact_queries.grant_field(conn, field.name, identity_key)


def import_message(conn: Connection, message: MessageCopy, now: int) -> None:
    states = _STATES_OUT if message.outgoing else _STATES_IN
    if message.state not in states:
        raise SyncError(f"a copied message has the unknown state {message.state!r}")
    conversation = message_queries.conversation_id_for(conn, message.conversation_with, now)
    message_queries.insert_message(
        conn,
        conversation,
        NewMessage(
            message_id=message.message_id,
            sender_identity=message.sender_identity,
            sender_device=message.sender_device,
            outgoing=message.outgoing,
            kind="text",
            body=message.body,
            lamport=message.lamport,
            sent_at=message.sent_at,
            received_at=message.received_at,
            state=message.state,
        ),
    )
