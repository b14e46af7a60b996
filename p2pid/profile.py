"""Profile: my fields, who may see each, and keeping every contact's copy up to date. The
node-side half of `/p2pid/profile/1`, both roles.

Audiences (a field has one): 'public' (anyone; today every contact), 'contacts' (every contact
not blocked), 'chosen' (the contacts it was shared with), 'groups' (stored, not sent to plain
contacts yet). Grants are kept whatever the audience and count while it is 'chosen'.

Propagation is best effort and derived, not queued: a contact device is pending while what it
last acknowledged (kept in memory) differs from what its contact may see now. After any change
`propagate()` pushes to every pending device that is connected; the node calls
`push_pending(peer_id)` when a device connects. A restart forgets what was acknowledged, so each
device gets one snapshot the first time it connects afterwards: changes made while it was away,
revocations included, always arrive. Blocked contacts get nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, get_args

import trio

from p2pid.crypto.identity import identity_id_from_public_key
from p2pid.events import now_ms
from p2pid.net.host import NetHost, Stream
from p2pid.protocols.profile import (
    ProfilePushError,
    SenderClock,
    VersionBook,
    new_snapshot,
    push_snapshot,
    serve_profile,
)
from p2pid.store import contacts as contact_queries
from p2pid.store.contacts import Audience, ProfileFieldRow
from p2pid.store.db import Connection
from p2pid.store.trio_store import TrioStore
from p2pid.wire.profile import (
    MAX_FIELDS,
    AckStatus,
    ContactProfileUpdated,
    ProfileAck,
    ProfileDelivered,
    ProfileFieldError,
    ProfileFieldSummary,
    check_audience,
    check_field_name,
    check_field_value,
)

log = logging.getLogger(__name__)

# Audiences under which every contact sees a field: no single contact can be left out.
_EVERY_CONTACT: Mapping[str, str] = {"public": "everyone", "contacts": "every contact"}


class ProfileError(Exception):
    """A profile request that cannot be carried out; `kind` maps to an RPC error code
    ('invalid' or 'not_found'). Nothing was changed."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


@dataclass(frozen=True)
class PushReport:
    """What one round of pushes did, by PeerId of contact devices."""

    delivered: tuple[str, ...]  # acknowledged the set their contact may see now
    pending: tuple[str, ...]  # still to get it: not connected, or the push failed


def field_summary(row: ProfileFieldRow) -> ProfileFieldSummary:
    return ProfileFieldSummary(
        name=row.name,
        value=row.value,
        audience=row.audience,
        granted_to=[identity_id_from_public_key(key) for key in row.granted_to],
        updated_at_ms=row.updated_at,
    )


def _audience(value: str) -> Audience:
    check_audience(value)
    for audience in get_args(Audience):
        if value == audience:
            result: Audience = audience
            return result
    raise ProfileFieldError(f"unknown audience {value!r}")  # the store and the wire disagree


def _field_row(conn: Connection, name: str) -> ProfileFieldRow | None:
    return next(
        (row for row in contact_queries.list_profile_fields(conn) if row.name == name), None
    )


def _require_field(conn: Connection, name: str) -> ProfileFieldRow:
    row = _field_row(conn, name)
    if row is None:
        raise ProfileError("not_found", f"no profile field {name!r} (set it first)")
    return row


def _sendable(fields: Mapping[str, str]) -> dict[str, str]:
    """The fields a snapshot may carry: any the store holds that the wire refuses (set by an
    older version, say) are left out rather than holding back the whole profile."""
    sendable: dict[str, str] = {}
    for name, value in sorted(fields.items()):
        try:
            check_field_name(name)
            check_field_value(name, value)
        except ProfileFieldError as error:
            log.warning("profile field not sent: %s", error)
            continue
        if len(sendable) < MAX_FIELDS:
            sendable[name] = value
    return sendable


class Profile:
    def __init__(
        self,
        *,
        store: TrioStore,
        net: NetHost,
        identity_name: str,
        publish: Callable[[Any], None],
    ) -> None:
        self.store = store
        self.net = net
        self.identity_name = identity_name
        self.publish = publish
        self.versions = VersionBook()  # receiving: the last snapshot applied per contact
        self.clock = SenderClock()  # sending: this device's snapshot versions
        self._acknowledged: dict[str, dict[str, str]] = {}  # PeerId -> the fields it holds
        self._push_locks: dict[str, trio.Lock] = {}
        self._receive_locks: dict[bytes, trio.Lock] = {}
        # Called after I changed my fields or who sees them (my other devices get a copy).
        self.on_changed: list[Callable[[], Awaitable[None]]] = []

    # -- my fields (RPC) ----------------------------------------------------------------------

    async def show(self) -> list[ProfileFieldSummary]:
        """My fields by name, each with its audience and the contacts it is shared with."""
        rows = await self.store.read(contact_queries.list_profile_fields)
        return [field_summary(row) for row in rows]

    async def set(self, name: str, value: str, audience: str) -> ProfileFieldSummary:
        """Add or change a field (value and audience); its grants are kept. Then propagate."""
        name = self._check_name(name)
        try:
            check_field_value(name, value)
            checked = _audience(audience)
        except ProfileFieldError as error:
            raise ProfileError("invalid", str(error)) from None

        def write(conn: Connection) -> ProfileFieldRow:
            names = {row.name for row in contact_queries.list_profile_fields(conn)}
            if name not in names and len(names) >= MAX_FIELDS:
                raise ProfileError(
                    "invalid", f"a profile holds at most {MAX_FIELDS} fields; remove one first"
                )
            contact_queries.set_profile_field(conn, name, value, checked, now_ms())
            return _require_field(conn, name)

        row = await self.store.write(write)
        await self._changed()
        return field_summary(row)

    async def _changed(self) -> None:
        for listener in self.on_changed:
            await listener()
        await self.propagate()

    async def remove(self, name: str) -> None:
        """Delete a field and its grants; every contact that held it deletes it too."""
        name = self._check_name(name)
        if not await self.store.write(
            lambda conn: contact_queries.remove_profile_field(conn, name)
        ):
            raise ProfileError("not_found", f"no profile field {name!r}")
        await self._changed()

    async def share(self, name: str, identity_key: bytes) -> ProfileFieldSummary:
        """Grant a field to one contact. A 'chosen' field is then sent to them. A 'groups' field
        becomes 'chosen' (plain contacts cannot see group fields). A 'public' or 'contacts' field
        is already theirs: the grant is recorded and counts if the field is narrowed to
        'chosen' later."""
        name = self._check_name(name)
        identity_id = identity_id_from_public_key(identity_key)

        def write(conn: Connection) -> ProfileFieldRow:
            row = _require_field(conn, name)
            contact = contact_queries.get_contact(conn, identity_key)
            if contact is None:
                raise ProfileError("not_found", f"no contact {identity_id}")
            if contact.blocked:
                raise ProfileError(
                    "invalid", f"{contact.name} is blocked: unblock them before sharing"
                )
            if row.audience == "groups":
                contact_queries.set_profile_field(conn, name, row.value, "chosen", now_ms())
            contact_queries.grant_field(conn, name, identity_key)
            return _require_field(conn, name)

        row = await self.store.write(write)
        await self._changed()
        return field_summary(row)

    async def revoke(self, name: str, identity_key: bytes) -> ProfileFieldSummary:
        """Take a 'chosen' (or 'groups') field back from one contact: their node deletes it and
        gets no later updates of it. Refused for 'public' and 'contacts' fields, which every
        contact sees: narrow the audience to 'chosen' first."""
        name = self._check_name(name)
        identity_id = identity_id_from_public_key(identity_key)

        def write(conn: Connection) -> ProfileFieldRow:
            row = _require_field(conn, name)
            if row.audience in _EVERY_CONTACT:
                raise ProfileError(
                    "invalid",
                    f"{name!r} is shown to {_EVERY_CONTACT[row.audience]} (audience "
                    f"{row.audience!r}): to hide it from one contact, set its audience to "
                    "'chosen' and share it with those who should see it",
                )
            if not contact_queries.revoke_field_grant(conn, name, identity_key):
                raise ProfileError("not_found", f"{name!r} is not shared with {identity_id}")
            return _require_field(conn, name)

        row = await self.store.write(write)
        await self._changed()
        return field_summary(row)

    def _check_name(self, name: str) -> str:
        if name == "name":
            raise ProfileError(
                "invalid",
                f"'name' is your display name ({self.identity_name!r}), not a profile field: "
                "contacts get it in your card",
            )
        try:
            return check_field_name(name)
        except ProfileFieldError as error:
            raise ProfileError("invalid", str(error)) from None

    # -- sending -------------------------------------------------------------------------------

    async def propagate(self) -> PushReport:
        """Push to every connected contact device whose contact's visible set is not what it
        last acknowledged; the others stay pending. Never raises for a failed push."""
        return await self.push_pending()

    async def push_pending(self, peer_id: str | None = None) -> PushReport:
        """Bring pending devices up to date: the one device `peer_id` (call it when that peer
        connects; a non-contact is ignored), or every contact device (None)."""
        delivered: list[str] = []
        pending: list[str] = []
        devices = await self._devices(peer_id)
        async with trio.open_nursery() as nursery:
            for identity_key, device in devices:
                nursery.start_soon(self._push_device, identity_key, device, delivered, pending)
        return PushReport(delivered=tuple(sorted(delivered)), pending=tuple(sorted(pending)))

    async def pending(self) -> list[str]:
        """PeerIds of the contact devices that do not hold (as far as this process knows) the
        set their contact may see now: never pushed to since the start, or changed since."""

        def visible_sets(conn: Connection) -> dict[bytes, dict[str, str]]:
            return {
                contact.identity_key: contact_queries.fields_visible_to(conn, contact.identity_key)
                for contact in contact_queries.list_contacts(conn)
                if not contact.blocked
            }

        devices = await self._devices(None)
        visible = await self.store.read(visible_sets)
        return sorted(
            device
            for identity_key, device in devices
            if identity_key in visible
            and self._acknowledged.get(device) != _sendable(visible[identity_key])
        )

    async def _devices(self, peer_id: str | None) -> list[tuple[bytes, str]]:
        """(identity key, PeerId) of the devices of contacts not blocked: all, or `peer_id`."""
        if peer_id is None:
            contacts = await self.store.read(contact_queries.list_contacts)
            current = {device.peer_id for contact in contacts for device in contact.devices}
            for gone in self._acknowledged.keys() - current:
                del self._acknowledged[gone]
        else:
            contact = await self.store.read(
                lambda conn: contact_queries.contact_for_peer(conn, peer_id)
            )
            contacts = [] if contact is None else [contact]
        return [
            (contact.identity_key, device.peer_id)
            for contact in contacts
            if not contact.blocked
            for device in contact.devices
            if peer_id is None or device.peer_id == peer_id
        ]

    async def _push_device(
        self, identity_key: bytes, peer_id: str, delivered: list[str], pending: list[str]
    ) -> None:
        async with self._push_locks.setdefault(peer_id, trio.Lock()):
            visible = _sendable(
                await self.store.read(
                    lambda conn: contact_queries.fields_visible_to(conn, identity_key)
                )
            )
            if self._acknowledged.get(peer_id) == visible:
                return
            if not self._is_connected(peer_id):
                pending.append(peer_id)
                return
            try:
                ack = await self._push(peer_id, visible)
                if ack.status is AckStatus.STALE:
                    # The device holds a later version from this identity than our clock gives
                    # (the clock went back across a restart, or another of our devices pushed).
                    self.clock.observe(ack.latest)
                    ack = await self._push(peer_id, visible)
                if ack.status is AckStatus.STALE:
                    raise ProfilePushError(f"{peer_id} still holds a later profile snapshot")
            except ProfilePushError as error:
                log.info("profile not delivered, kept pending: %s", error)
                pending.append(peer_id)
                return
            except Exception:  # best effort: one device's failure never fails the change
                log.warning("profile push to %s failed, kept pending", peer_id, exc_info=True)
                pending.append(peer_id)
                return
            self._acknowledged[peer_id] = visible
            delivered.append(peer_id)
            self.publish(
                ProfileDelivered(
                    at_ms=now_ms(),
                    identity_id=identity_id_from_public_key(identity_key),
                    peer_id=peer_id,
                    version=ack.latest,
                )
            )

    async def _push(self, peer_id: str, fields: dict[str, str]) -> ProfileAck:
        snapshot = new_snapshot(fields, self.clock.next(now_ms()))
        return await push_snapshot(self.net, peer_id, snapshot)

    def _is_connected(self, peer_id: str) -> bool:
        try:
            return self.net.is_connected(peer_id)
        except ValueError:  # not a PeerId: nothing can be pushed to it
            return False

    # -- receiving (ProfileInbox) ----------------------------------------------------------------

    async def serve(self, stream: Stream) -> None:
        """The `/p2pid/profile/1` stream handler."""
        await serve_profile(stream, self)

    async def sender_identity(self, peer_id: str) -> bytes | None:
        contact = await self.store.read(
            lambda conn: contact_queries.contact_for_peer(conn, peer_id)
        )
        if contact is None or contact.blocked:
            return None
        return contact.identity_key

    def receive_lock(self, identity_key: bytes) -> trio.Lock:
        return self._receive_locks.setdefault(identity_key, trio.Lock())

    async def store_fields(self, identity_key: bytes, fields: dict[str, str]) -> None:
        def replace(conn: Connection) -> tuple[dict[str, str], bool]:
            before = contact_queries.contact_fields(conn, identity_key)
            return before, contact_queries.set_contact_fields(conn, identity_key, fields, now_ms())

        before, changed = await self.store.write(replace)
        if changed:
            self.publish(
                ContactProfileUpdated(
                    at_ms=now_ms(),
                    identity_id=identity_id_from_public_key(identity_key),
                    fields=dict(fields),
                    removed=sorted(before.keys() - fields.keys()),
                )
            )
