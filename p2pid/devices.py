"""My own devices, as a linked device sees them: listing, approving a new one (the approver's
half of the device link), revoking one. Any linked device can do all of it; none is special.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import trio

from p2pid.contacts import Contacts, publish_one_time_keys
from p2pid.crypto.device_link import verify_link_invite
from p2pid.crypto.device_list import MAX_DEVICES, sign_device_list, verify_device_list
from p2pid.crypto.identity import IdentityKeys, peer_id_from_public_key
from p2pid.crypto.invites import InviteError
from p2pid.device_sync import (
    HistoryChoice,
    export_batches,
    fallback_prekeys,
    known_addrs,
    record_from_list,
    split_signed_list,
)
from p2pid.events import now_ms
from p2pid.messaging import Messaging
from p2pid.net import NetError
from p2pid.net.host import NetHost
from p2pid.protocols.device_link import (
    LinkApprover,
    LinkError,
    OpenLink,
    cancel_link,
    finish_link,
    open_link,
)
from p2pid.store import contacts as contact_queries
from p2pid.store import messages as message_queries
from p2pid.store import queries
from p2pid.store.contacts import ContactDevice, ContactRow
from p2pid.store.db import Connection
from p2pid.store.trio_store import TrioStore
from p2pid.wire.device_link import LinkSecrets, SyncBatch, SyncEnd
from p2pid.wire.devices import (
    DeviceLinked,
    DeviceRevoked,
    LinkConfirmation,
    LinkResult,
    OwnDevicesChanged,
    OwnDeviceView,
    RevokeResult,
)
from p2pid.wire.events import Event
from p2pid.wire.invite import InviteFormatError, InviteKind, decode_invite
from p2pid.wire.messages import DeviceListUpdate
from p2pid.wire.records import DeviceEntry, DevicePrekeys, SignedDeviceList

log = logging.getLogger(__name__)

PENDING_LINK_SECONDS = 300.0
SIBLING_ONE_TIME_KEYS = 10
HISTORY_MODES = ("none", "all", "days")
MAX_HISTORY_DAYS = 36500


class DevicesError(Exception):
    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


@dataclass
class _PendingLink:
    link: OpenLink
    cancel_scope: trio.CancelScope
    hints: list[str]


class Devices:
    def __init__(
        self,
        *,
        store: TrioStore,
        net: NetHost,
        keys: IdentityKeys,
        identity_name: str,
        vault_key: bytes,
        contacts: Contacts,
        messaging: Messaging,
        publish: Callable[[Event], None],
        addrs: Callable[[], list[str]],
        nursery: trio.Nursery,
    ) -> None:
        self._store = store
        self._net = net
        self._keys = keys
        self._name = identity_name
        self._vault_key = vault_key
        self._contacts = contacts
        self._messaging = messaging
        self._publish = publish
        self._addrs = addrs
        self._nursery = nursery
        self._pending: dict[str, _PendingLink] = {}
        self._busy = trio.Lock()

    # -- listing ---------------------------------------------------------------------------

    async def list_devices(self) -> list[OwnDeviceView]:
        def read(
            conn: Connection,
        ) -> tuple[ContactRow | None, list[contact_queries.RevokedDeviceRow], dict[str, int]]:
            seen = {peer.peer_id: peer.last_seen for peer in queries.list_peers(conn)}
            return contact_queries.get_self(conn), contact_queries.list_revoked_devices(conn), seen

        mine, revoked, seen = await self._store.read(read)
        connected = set(self._net.connected_peers())
        views = []
        for device in mine.devices if mine else ():
            this = device.device_key == self._keys.device_public_key
            views.append(
                OwnDeviceView(
                    peer_id=device.peer_id,
                    name=device.name,
                    this_device=this,
                    connected=this or device.peer_id in connected,
                    last_seen_ms=now_ms() if this else seen.get(device.peer_id),
                    linked_at_ms=device.created_at,
                    revoked=False,
                )
            )
        for row in revoked:
            views.append(
                OwnDeviceView(
                    peer_id=row.peer_id,
                    name=row.name,
                    this_device=False,
                    connected=False,
                    last_seen_ms=seen.get(row.peer_id),
                    linked_at_ms=row.created_at,
                    revoked=True,
                )
            )
        return views

    # -- approving a new device ------------------------------------------------------------

    async def approve(self, code: str) -> LinkConfirmation:
        """Run the link with the device showing `code` up to the confirmation codes."""
        try:
            invite = decode_invite(code)
        except InviteFormatError as error:
            raise DevicesError("invalid", f"not a p2pid code: {error}") from None
        if invite.kind is not InviteKind.DEVICE_LINK:
            raise DevicesError(
                "invalid", f"this is a {invite.kind.name.lower()} code, not a device-link one"
            )
        try:
            verify_link_invite(invite, int(time.time()))
        except InviteError as error:
            raise DevicesError("invalid", f"code refused: {error}") from None
        new_peer_id = peer_id_from_public_key(invite.device_key)
        mine = await self._store.read(contact_queries.get_self)
        if mine is not None and any(d.peer_id == new_peer_id for d in mine.devices):
            raise DevicesError("conflict", "this device is already linked")
        if mine is not None and len(mine.devices) >= MAX_DEVICES:
            raise DevicesError("refused", f"an identity holds at most {MAX_DEVICES} devices")
        hints = [hint.to_multiaddr() for hint in invite.hints]
        self._net.add_addrs(new_peer_id, hints)
        approver = LinkApprover(
            invite,
            own_peer_id=self._net.peer_id,
            identity_key=self._keys.identity_public_key,
            identity_name=self._name,
        )
        try:
            link = await open_link(self._net, approver)
        except LinkError as error:
            raise DevicesError("refused", str(error)) from None
        except NetError as error:
            raise DevicesError("unreachable", f"cannot reach the new device: {error}") from None
        except trio.TooSlowError:
            raise DevicesError("timeout", "the new device did not answer in time") from None
        link_id = os.urandom(8).hex()
        scope = trio.CancelScope()
        self._pending[link_id] = _PendingLink(link=link, cancel_scope=scope, hints=hints)
        self._nursery.start_soon(self._expire_link, link_id, scope)
        return LinkConfirmation(
            link_id=link_id,
            confirmation=link.device.confirmation,
            device_name=link.device.name,
            device_peer_id=link.device.peer_id,
        )

    async def _expire_link(self, link_id: str, scope: trio.CancelScope) -> None:
        with scope:
            await trio.sleep(PENDING_LINK_SECONDS)
            pending = self._pending.pop(link_id, None)
            if pending is not None:
                await cancel_link(pending.link, "the approval timed out")

    async def confirm(
        self, link_id: str, accept: bool, history: HistoryChoice
    ) -> LinkResult | None:
        pending = self._pending.pop(link_id, None)
        if pending is None:
            raise DevicesError("not_found", f"no device link {link_id!r} is waiting")
        pending.cancel_scope.cancel()
        link = pending.link
        if not accept:
            await cancel_link(link, "the codes did not match or the person refused")
            return None
        async with self._busy:
            return await self._complete(link, history, pending.hints)

    async def _complete(
        self, link: OpenLink, history: HistoryChoice, hints: list[str]
    ) -> LinkResult:
        device = link.device
        mine = await self._store.read(contact_queries.get_self)
        assert mine is not None and mine.device_list is not None
        current = verify_device_list(
            split_signed_list(mine.device_list), self._keys.identity_public_key
        )
        entry = DeviceEntry(
            device_key=device.prekeys.device_key,
            olm_curve25519=device.olm_curve25519,
            olm_ed25519=device.olm_ed25519,
            name=device.name,
            created_at=now_ms(),
            capabilities=list(current.body.devices[0].capabilities),
        )
        signed = sign_device_list(
            self._keys.identity_signing_key,
            current.body.version + 1,
            now_ms(),
            [*current.body.devices, entry],
        )
        own_prekeys, batches, end, sibling_addrs = await self._store.write(
            lambda conn: self._prepare_handover(conn, mine, history)
        )
        secrets = LinkSecrets(
            identity_seed=self._keys.identity_seed,
            identity_name=self._name,
            device_list=signed,
            sibling_prekeys=[own_prekeys, *fallback_prekeys(self._siblings(mine))],
            sibling_addrs=sibling_addrs,
        )
        try:
            await finish_link(link, secrets, batches, end)
        except LinkError as error:
            raise DevicesError("refused", str(error)) from None
        except (NetError, trio.TooSlowError) as error:
            raise DevicesError("unreachable", f"the link broke off: {error}") from None
        await self._adopt(signed, [device.prekeys], removed=(), addrs={device.peer_id: hints})
        await self._store.write(
            lambda conn: queries.upsert_peer_seen(
                conn, device.peer_id, hints, "invite", {}, now_ms()
            )
        )
        self._publish(DeviceLinked(at_ms=now_ms(), peer_id=device.peer_id, name=device.name))
        return LinkResult(
            device_peer_id=device.peer_id,
            device_name=device.name,
            contacts=end.contacts,
            messages=end.messages,
        )

    def _siblings(self, mine: ContactRow) -> tuple[ContactDevice, ...]:
        return tuple(d for d in mine.devices if d.device_key != self._keys.device_public_key)

    def _prepare_handover(
        self, conn: Connection, mine: ContactRow, history: HistoryChoice
    ) -> tuple[DevicePrekeys, list[SyncBatch], SyncEnd, dict[str, list[str]]]:
        prekeys = publish_one_time_keys(
            conn, self._vault_key, self._keys.device_public_key, SIBLING_ONE_TIME_KEYS
        )
        addrs = known_addrs(conn)
        batches, end = export_batches(conn, history, now_ms(), addrs)
        sibling_addrs = {
            d.peer_id: addrs[d.peer_id] for d in self._siblings(mine) if d.peer_id in addrs
        }
        sibling_addrs[self._net.peer_id] = self._addrs()[:16]
        return prekeys, batches, end, sibling_addrs

    async def _adopt(
        self,
        signed: SignedDeviceList,
        new_prekeys: Sequence[DevicePrekeys],
        removed: Sequence[ContactDevice],
        addrs: dict[str, list[str]] | None = None,
    ) -> None:
        """Commit my new device list, then queue it to every contact and my other devices."""

        def write(conn: Connection) -> list[DevicePrekeys]:
            mine = contact_queries.get_self(conn)
            assert mine is not None
            record = record_from_list(
                signed, self._keys.identity_public_key, mine.display_name, list(new_prekeys)
            )
            contact_queries.save_self(conn, record, now_ms())
            for device in removed:  # what waited for it stays unsent; the notice follows
                message_queries.drop_outbox_for_device(conn, device.peer_id)
            updated = contact_queries.get_self(conn)
            assert updated is not None
            return fallback_prekeys(updated.devices)

        prekeys = await self._store.write(write)
        await self._contacts.reload_own_devices()
        await self._messaging.publish_device_list(
            DeviceListUpdate(device_list=signed, prekeys=prekeys, addrs=addrs or {}),
            also_to=removed,
        )
        version = verify_device_list(signed, self._keys.identity_public_key).body.version
        self._publish(OwnDevicesChanged(at_ms=now_ms(), version=version))

    # -- revoking ----------------------------------------------------------------------------

    async def revoke(self, reference: str) -> RevokeResult:
        async with self._busy:
            mine = await self._store.read(contact_queries.get_self)
            assert mine is not None and mine.device_list is not None
            device = _find_device(mine.devices, reference)
            if device.device_key == self._keys.device_public_key:
                raise DevicesError(
                    "refused", "this is the device you are using: revoke it from another device"
                )
            current = verify_device_list(
                split_signed_list(mine.device_list), self._keys.identity_public_key
            )
            remaining = [d for d in current.body.devices if d.device_key != device.device_key]
            signed = sign_device_list(
                self._keys.identity_signing_key, current.body.version + 1, now_ms(), remaining
            )
            await self._adopt(signed, [], removed=[device])
            self._publish(DeviceRevoked(at_ms=now_ms(), peer_id=device.peer_id, name=device.name))
            return RevokeResult(peer_id=device.peer_id, version=current.body.version + 1)


def _find_device(devices: Sequence[ContactDevice], reference: str) -> ContactDevice:
    reference = reference.strip()
    if not reference:
        raise DevicesError("invalid", "name a device: its PeerId, a unique PeerId prefix or name")
    exact = [d for d in devices if reference in (d.peer_id, d.name)]
    matches = exact or [d for d in devices if d.peer_id.startswith(reference)]
    if not matches:
        raise DevicesError("not_found", f"no device of yours matches {reference!r}")
    if len(matches) > 1:
        raise DevicesError("invalid", f"{reference!r} matches {len(matches)} devices; be precise")
    return matches[0]
