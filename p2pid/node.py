"""Node: composes the store, the libp2p host and discovery; the one public async API.

Everything a client can ask of the daemon is a method here; the RPC layer only translates.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field

import trio

from p2pid import __version__
from p2pid.contact_requests import ContactRequests
from p2pid.contacts import Contacts, ContactsError, parse_invite_code
from p2pid.crypto.identity import IdentityKeys, identity_id_from_public_key, peer_id_from_public_key
from p2pid.devices import Devices
from p2pid.events import EventBus, now_ms
from p2pid.files.service import Files, default_files_folder
from p2pid.groups.service import Groups
from p2pid.kiosk.service import KioskConfig, KioskService
from p2pid.kiosks import Kiosks, Pairable
from p2pid.messaging import Messaging
from p2pid.net import NetError
from p2pid.net.host import NetHost, StreamHandler
from p2pid.net.mdns import (
    DiscoveredPeer,
    MdnsDiscovery,
    all_ipv4_addresses,
    resolve_interfaces,
)
from p2pid.net.mdns import PeerLost as MdnsPeerLost
from p2pid.profile import Profile
from p2pid.protocols import contact_join, kiosk_control, kiosk_pair
from p2pid.store import contacts as contact_queries
from p2pid.store import messages as message_queries
from p2pid.store import queries
from p2pid.store.contacts import ContactRow, InviteRow
from p2pid.store.db import Connection
from p2pid.store.queries import LocalIdentityRow
from p2pid.store.trio_store import TrioStore
from p2pid.verification import Verifications
from p2pid.wire import events
from p2pid.wire.api import (
    ConnectResult,
    ContactSummary,
    DeviceSummary,
    InviteCreated,
    InviteSummary,
    NodeStatus,
    PeerSummary,
    PingResult,
)
from p2pid.wire.contact_join import PROTOCOL_ID as CONTACT_JOIN_PROTOCOL
from p2pid.wire.contact_request import PROTOCOL_ID as CONTACT_REQUEST_PROTOCOL
from p2pid.wire.devices import DeviceRevoked
from p2pid.wire.file_transfer import PROTOCOL_ID as FILE_PROTOCOL
from p2pid.wire.kiosk import APPROVAL_PROTOCOL_ID, CONTROL_PROTOCOL_ID, PAIR_PROTOCOL_ID
from p2pid.wire.messages import PROTOCOL_ID as MESSAGE_PROTOCOL
from p2pid.wire.messages import ConversationSummary, MessagePage, MessageView, MessagingStats
from p2pid.wire.profile import PROTOCOL_ID as PROFILE_PROTOCOL
from p2pid.wire.verification import PROTOCOL_ID as SAS_PROTOCOL
from p2pid.wire.verification import VerificationView

log = logging.getLogger(__name__)

UNSPECIFIED_IP4 = "/ip4/0.0.0.0/"
DEFAULT_LISTEN = ("/ip4/0.0.0.0/tcp/0",)


GREETING_CONCURRENCY = 16
GREETING_TIMEOUT_SECONDS = 10.0


class NodeError(Exception):
    """A request the node cannot carry out; `kind` maps to an RPC error code."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


@dataclass(frozen=True)
class NodeConfig:
    listen_addrs: Sequence[str] = DEFAULT_LISTEN
    mdns_enabled: bool = True
    mdns_interfaces: Sequence[str] | None = None
    kiosk: KioskConfig | None = None  # this node is a kiosk (`p2pid kiosk`)
    files_folder: str = ""  # where accepted files go by default ('' = ~/Downloads/p2pid)


@dataclass
class _Discovered:
    addrs: tuple[str, ...]
    fields: dict[str, str]
    last_seen_ms: int = field(default_factory=now_ms)


def interface_ipv4_addresses(interfaces: Sequence[str] | None) -> list[str]:
    """IPv4 addresses of the named interfaces; of all but loopback when none are named."""
    if interfaces:
        try:
            return resolve_interfaces(interfaces)
        except ValueError as error:
            raise NodeError("invalid", str(error)) from None
    addresses = all_ipv4_addresses()
    return [ip for ip in addresses if not ip.startswith("127.")] or addresses


def expand_unspecified(addrs: Sequence[str], interface_ips: Sequence[str]) -> list[str]:
    """'/ip4/0.0.0.0/tcp/P' -> one '/ip4/<ip>/tcp/P' per interface address."""
    expanded: list[str] = []
    for addr in addrs:
        if addr.startswith(UNSPECIFIED_IP4):
            rest = addr.removeprefix(UNSPECIFIED_IP4)
            expanded += [f"/ip4/{ip}/{rest}" for ip in interface_ips]
        else:
            expanded.append(addr)
    return list(dict.fromkeys(expanded))


def split_peer_multiaddr(addr: str) -> tuple[str, str]:
    """'/ip4/1.2.3.4/tcp/5/p2p/Qm..' -> ('/ip4/1.2.3.4/tcp/5', 'Qm..')."""
    transport, separator, peer_id = addr.rpartition("/p2p/")
    if not separator or not transport or not peer_id or "/" in peer_id:
        raise NodeError("invalid", f"{addr!r} is not a multiaddr ending in /p2p/<PeerId>")
    return transport, peer_id


class Node:
    def __init__(
        self,
        *,
        store: TrioStore,
        identity: LocalIdentityRow,
        vault_key: bytes,
        net: NetHost,
        events: EventBus,
        config: NodeConfig,
        nursery: trio.Nursery,
    ) -> None:
        self.store = store
        self.identity = identity
        self.keys = IdentityKeys(identity.identity_seed, identity.device_seed)
        self.net = net
        self.events = events
        self.config = config
        self.started_at_ms = now_ms()
        self._nursery = nursery
        self._discovered: dict[str, _Discovered] = {}
        self._interface_ips = interface_ipv4_addresses(config.mdns_interfaces)
        self.contacts = Contacts(store=store, identity=identity, vault_key=vault_key, events=events)
        self.verifications = Verifications(
            store=store, net=net, keys=self.keys, publish=events.publish
        )
        self.profile = Profile(
            store=store, net=net, identity_name=identity.name, publish=events.publish
        )
        self.requests = ContactRequests(
            store=store,
            net=net,
            contacts=self.contacts,
            publish=events.publish,
            addrs=self.reachable_addrs,
        )
        self.messaging = Messaging(
            store=store, net=net, keys=self.keys, vault_key=vault_key, publish=events.publish
        )
        self.groups = Groups(
            store=store,
            net=net,
            keys=self.keys,
            vault_key=vault_key,
            messaging=self.messaging,
            publish=events.publish,
            display_name=lambda: self.identity.name,
            addrs=self.reachable_addrs,
            contacts=self.contacts,
            remember_addrs=self._remember_contact_addrs,
        )
        self.messaging.groups = self.groups
        self.files = Files(
            store=store,
            net=net,
            messaging=self.messaging,
            groups=self.groups,
            contacts=self.contacts,
            publish=events.publish,
            default_folder=config.files_folder or default_files_folder(),
            addrs=self.reachable_addrs,
        )
        self.messaging.files = self.files
        self.kiosks = Kiosks(
            store=store,
            net=net,
            keys=self.keys,
            display_name=identity.name,
            device_list=lambda: self.contacts.own_device_list,
            addrs=self.reachable_addrs,
            pairable=self.pairable_kiosks,
            publish=events.publish,
        )
        self.kiosk: KioskService | None = None
        if config.kiosk is not None:
            self.kiosk = KioskService(
                store=store,
                net=net,
                keys=self.keys,
                config=config.kiosk,
                publish=events.publish,
                addrs=self.reachable_addrs,
            )
        self.devices = Devices(
            store=store,
            net=net,
            keys=self.keys,
            identity_name=identity.name,
            vault_key=vault_key,
            contacts=self.contacts,
            messaging=self.messaging,
            publish=events.publish,
            addrs=self.reachable_addrs,
            nursery=nursery,
        )
        # Set once a device list of mine without this device arrived: the daemon stops and
        # wipes the identity.
        self.revoked = trio.Event()
        self.messaging.on_revoked = self._on_revoked
        # My other devices get a copy of every contact I add or verify.
        self.contacts.on_contact_added.append(
            lambda identity_key: nursery.start_soon(self.messaging.copy_contact, identity_key)
        )
        self.profile.on_changed.append(self.messaging.copy_profile)
        self.messaging.on_profile_copied = lambda: nursery.start_soon(self.profile.propagate)
        self.verifications.on_verified.append(
            lambda identity_key: nursery.start_soon(self.messaging.copy_contact, identity_key)
        )
        # A new contact gets the fields it may see now, pushed as a snapshot.
        self.contacts.on_contact_added.append(
            lambda _identity_key: nursery.start_soon(self.profile.propagate)
        )
        # ... and where its devices listen is kept, for its outbox after a restart.
        self.contacts.on_contact_added.append(
            lambda identity_key: nursery.start_soon(self._remember_devices_of, identity_key)
        )

    def _serve_protocols(self) -> None:
        handlers: dict[str, StreamHandler] = {
            CONTACT_JOIN_PROTOCOL: lambda stream: contact_join.serve_join(
                stream, self.net, self.contacts
            ),
            CONTACT_REQUEST_PROTOCOL: self.requests.serve,
            SAS_PROTOCOL: self.verifications.serve,
            PROFILE_PROTOCOL: self.profile.serve,
            MESSAGE_PROTOCOL: self.messaging.serve,
            FILE_PROTOCOL: self.files.serve,
            APPROVAL_PROTOCOL_ID: lambda stream: kiosk_pair.serve_approval(stream, self.kiosks),
        }
        if self.kiosk is not None:
            kiosk = self.kiosk
            handlers[PAIR_PROTOCOL_ID] = lambda stream: kiosk_pair.serve_pair(
                stream, self.net, kiosk
            )
            handlers[CONTROL_PROTOCOL_ID] = lambda stream: kiosk_control.serve_control(
                stream, kiosk
            )
        for protocol_id, handler in handlers.items():
            self.net.set_stream_handler(protocol_id, handler)

    def _mdns_discovery(self) -> MdnsDiscovery:
        return MdnsDiscovery(
            self.net.peer_id,
            self.reachable_addrs(),
            interfaces=self.config.mdns_interfaces,
            fields=self.mdns_fields(),
        )

    def mdns_fields(self) -> dict[str, str]:
        fields = {"p2pid": "1", "name": self.identity.name}
        if self.config.kiosk is not None:  # pairable by short code
            fields |= {"kiosk": "1", "kiosk_name": self.config.kiosk.name[:64]}
        return fields

    def pairable_kiosks(self) -> list[Pairable]:
        return [
            Pairable(peer_id, seen.fields.get("kiosk_name") or "", seen.addrs)
            for peer_id, seen in self._discovered.items()
            if seen.fields.get("kiosk") == "1"
        ]

    @classmethod
    @contextlib.asynccontextmanager
    async def running(
        cls, store: TrioStore, vault_key: bytes, events: EventBus, config: NodeConfig
    ) -> AsyncIterator[Node]:
        identity = await store.read(queries.load_local_identity)
        if identity is None:
            raise NodeError("invalid", "the store holds no local identity")
        async with (
            NetHost.open(identity.device_seed, config.listen_addrs) as net,
            trio.open_nursery() as nursery,
        ):
            node = cls(
                store=store,
                identity=identity,
                vault_key=vault_key,
                net=net,
                events=events,
                config=config,
                nursery=nursery,
            )
            await node.contacts.start()
            await nursery.start(node.verifications.run)
            await nursery.start(node.messaging.run)
            await nursery.start(node.groups.run)
            await nursery.start(node.files.run)
            if node.kiosk is not None:
                await nursery.start(node.kiosk.run)
            node._serve_protocols()
            await node._load_known_addresses()
            nursery.start_soon(node._greet_known_devices)
            nursery.start_soon(node._forward_connection_events)
            if config.mdns_enabled:
                nursery.start_soon(node._run_discovery, node._mdns_discovery())
            yield node
            nursery.cancel_scope.cancel()

    async def _greet_known_devices(self) -> None:
        """Connect to my contacts', fellow group members' and my own devices at start: they
        learn where this device listens now (identify) and hand over what waited for it."""

        def devices(conn: Connection) -> list[str]:
            rows = contact_queries.list_known_people(conn)  # fellow group members too
            mine = contact_queries.get_self(conn)
            return [
                d.peer_id
                for row in [*rows, *([mine] if mine else [])]
                if not row.blocked
                for d in row.devices
                if d.peer_id != self.net.peer_id
            ]

        limiter = trio.CapacityLimiter(GREETING_CONCURRENCY)

        async def greet(peer_id: str) -> None:
            async with limiter:
                with trio.move_on_after(GREETING_TIMEOUT_SECONDS):
                    with contextlib.suppress(NetError):
                        await self.net.connect(peer_id)

        async with trio.open_nursery() as nursery:
            for peer_id in await self.store.read(devices):
                nursery.start_soon(greet, peer_id)

    async def _load_known_addresses(self) -> None:
        for peer in await self.store.read(queries.list_peers):
            self.net.add_addrs(peer.peer_id, [row.addr for row in peer.addrs])

    # -- discovery -------------------------------------------------------------------------

    def reachable_addrs(self) -> list[str]:
        """The listen addresses, with 0.0.0.0 replaced by the addresses peers can dial."""
        return expand_unspecified(self.net.listen_addrs(), self._interface_ips)

    async def _run_discovery(self, discovery: MdnsDiscovery) -> None:
        send, receive = trio.open_memory_channel[DiscoveredPeer | MdnsPeerLost](256)
        async with trio.open_nursery() as nursery:
            # Not awaited with start(): registering probes the name for ~1.6 s first.
            nursery.start_soon(discovery.run, send)
            async with receive:
                async for found in receive:
                    if isinstance(found, DiscoveredPeer):
                        await self._on_discovered(found)
                    else:
                        self._on_lost(found.peer_id)

    async def _on_discovered(self, peer: DiscoveredPeer) -> None:
        self._discovered[peer.peer_id] = _Discovered(peer.addrs, dict(peer.fields))
        self.net.add_addrs(peer.peer_id, peer.addrs)
        self.messaging.kick(peer.peer_id)
        await self.store.write(
            lambda connection: queries.upsert_peer_seen(
                connection, peer.peer_id, peer.addrs, "mdns", peer.fields, now_ms()
            )
        )
        self.events.publish(
            events.PeerDiscovered(
                at_ms=now_ms(),
                peer_id=peer.peer_id,
                addrs=list(peer.addrs),
                fields=dict(peer.fields),
            )
        )

    def _on_lost(self, peer_id: str) -> None:
        if self._discovered.pop(peer_id, None) is not None:
            self.events.publish(events.PeerLost(at_ms=now_ms(), peer_id=peer_id))

    async def _forward_connection_events(self) -> None:
        async for peer_id, connected in self.net.connection_events():
            event: events.Event
            if connected:
                event = events.PeerConnected(at_ms=now_ms(), peer_id=peer_id)
                self._nursery.start_soon(self.profile.push_pending, peer_id)
                self.messaging.kick(peer_id)
                self._nursery.start_soon(self._remember_contact_addrs, peer_id)
                self._nursery.start_soon(self.groups.on_connected, peer_id)
                self.files.on_connected(peer_id)
            else:
                event = events.PeerDisconnected(at_ms=now_ms(), peer_id=peer_id)
            self.events.publish(event)

    def _on_revoked(self) -> None:
        if not self.revoked.is_set():
            log.warning("another device of mine revoked this one: wiping the identity")
            self.events.publish(
                DeviceRevoked(
                    at_ms=now_ms(),
                    peer_id=self.net.peer_id,
                    name=self.identity.name,
                    this_device=True,
                )
            )
            self.revoked.set()

    async def _remember_devices_of(self, identity_key: bytes) -> None:
        contact = await self.store.read(
            lambda conn: contact_queries.get_contact(conn, identity_key)
        )
        for device in contact.devices if contact else ():
            if self.net.is_connected(device.peer_id):
                await self._remember_contact_addrs(device.peer_id)

    async def _remember_contact_addrs(self, peer_id: str) -> None:
        """Keep where a contact's (or fellow group member's) device listens, so its outbox can
        reach it after a restart."""
        if (
            await self.store.read(
                lambda conn: contact_queries.contact_for_peer(
                    conn, peer_id, include_self=True, include_group_only=True
                )
            )
            is None
        ):
            return
        try:
            info = await self.net.identify(peer_id)
        except NetError:
            return
        addrs = [addr for addr in info.listen_addrs if not addr.startswith(UNSPECIFIED_IP4)]
        if addrs:
            self.net.add_addrs(peer_id, addrs)
            await self.store.write(
                lambda conn: queries.upsert_peer_seen(
                    conn, peer_id, addrs, "identify", {}, now_ms()
                )
            )

    # -- the public API ----------------------------------------------------------------------

    def status(self) -> NodeStatus:
        return NodeStatus(
            name=self.identity.name,
            identity_id=self.keys.identity_id,
            peer_id=self.net.peer_id,
            listen_addrs=self.reachable_addrs(),
            connected_peers=sorted(self.net.connected_peers()),
            discovered_peers=sorted(self._discovered),
            mdns=self.config.mdns_enabled,
            pid=os.getpid(),
            version=__version__,
            started_at_ms=self.started_at_ms,
        )

    async def peers(self) -> list[PeerSummary]:
        stored = {peer.peer_id: peer for peer in await self.store.read(queries.list_peers)}
        connected = set(self.net.connected_peers())
        summaries = []
        for peer_id in sorted(stored.keys() | connected | self._discovered.keys()):
            row = stored.get(peer_id)
            seen = self._discovered.get(peer_id)
            addrs = list(seen.addrs) if seen else [a.addr for a in row.addrs] if row else []
            summaries.append(
                PeerSummary(
                    peer_id=peer_id,
                    addrs=addrs,
                    connected=peer_id in connected,
                    discovered=seen is not None,
                    last_seen_ms=seen.last_seen_ms if seen else row.last_seen if row else None,
                    fields=seen.fields if seen else dict(row.fields) if row else {},
                )
            )
        return summaries

    async def resolve_peer(self, peer: str) -> str:
        """A PeerId, a /p2p/ multiaddr (remembered), or an unambiguous prefix of a known PeerId."""
        if "/" in peer:
            transport, peer_id = split_peer_multiaddr(peer)
            self.net.add_addrs(peer_id, [transport])
            return peer_id
        known = {summary.peer_id for summary in await self.peers()}
        if peer in known:
            return peer
        matches = [peer_id for peer_id in known if peer_id.startswith(peer)]
        if len(matches) == 1:
            return matches[0]
        if len(matches) > 1:
            raise NodeError("invalid", f"{peer!r} matches {len(matches)} peers; give more of it")
        raise NodeError("not_found", f"no known peer {peer!r} (give its /p2p/ multiaddr)")

    async def connect(self, addr: str) -> ConnectResult:
        transport, peer_id = split_peer_multiaddr(addr)
        if peer_id == self.net.peer_id:
            raise NodeError("invalid", "that is this node's own address")
        self.net.add_addrs(peer_id, [transport])
        await self.net.connect(peer_id)
        await self.store.write(
            lambda connection: queries.upsert_peer_seen(
                connection, peer_id, [transport], "manual", {}, now_ms()
            )
        )
        return ConnectResult(peer_id=peer_id, addr=transport)

    async def ping(self, peer: str, count: int) -> PingResult:
        peer_id = await self.resolve_peer(peer)
        if peer_id == self.net.peer_id:
            raise NodeError("invalid", "cannot ping this node itself")
        rtts = []
        for _ in range(count):
            rtts.append(round(await self.net.ping(peer_id) * 1000, 3))
        return PingResult(peer_id=peer_id, rtts_ms=rtts)

    # -- contacts ------------------------------------------------------------------------------

    async def create_invite(self, uses: int, ttl_seconds: int) -> InviteCreated:
        created = await self.contacts.create_invite(
            uses=uses, ttl_seconds=ttl_seconds, addrs=self.reachable_addrs()
        )
        return InviteCreated(
            invite_id=created.invite.invite_id.hex(),
            code=created.code,
            expires_at=created.invite.expires_at,
            uses=created.uses,
        )

    async def invites(self, include_spent: bool) -> list[InviteSummary]:
        now = int(time.time())
        return [invite_summary(row, now) for row in await self.contacts.list_invites(include_spent)]

    async def cancel_invite(self, invite_id: str) -> None:
        try:
            raw_id = bytes.fromhex(invite_id)
        except ValueError:
            raise NodeError("invalid", f"{invite_id!r} is not an invite id") from None
        await self.contacts.cancel_invite(raw_id)

    async def join(self, code: str) -> ContactSummary:
        """Join the inviter of a contact invite: both become verified contacts."""
        invite = parse_invite_code(code)
        if invite.identity_key == self.keys.identity_public_key:
            raise ContactsError("invalid", "this is your own invite")
        inviter_peer_id = peer_id_from_public_key(invite.device_key)
        hints = [hint.to_multiaddr() for hint in invite.hints]
        self.net.add_addrs(inviter_peer_id, hints)
        inviter = await contact_join.join(
            self.net, invite, self.contacts, self.keys.identity_public_key
        )
        await self.store.write(
            lambda conn: queries.upsert_peer_seen(
                conn, inviter_peer_id, hints, "invite", {}, now_ms()
            )
        )
        return await self.contact(identity_id_from_public_key(inviter.identity_key))

    async def contact_list(self) -> list[ContactSummary]:
        return [await self._summary(row) for row in await self.contacts.list_contacts()]

    async def contact(self, reference: str) -> ContactSummary:
        return await self._summary(await self.contacts.find(reference))

    async def rename_contact(self, reference: str, nickname: str | None) -> ContactSummary:
        row = await self.contacts.find(reference)
        await self.contacts.rename(row.identity_key, nickname)
        await self.messaging.copy_contact(row.identity_key)
        return await self.contact(identity_id_from_public_key(row.identity_key))

    async def remove_contact(self, reference: str) -> None:
        identity_key = (await self.contacts.find(reference)).identity_key
        if self.groups.shares_a_group_with(identity_key):  # the groups still need their devices
            await self.store.write(
                lambda conn: contact_queries.make_group_only(conn, identity_key, now_ms())
            )
            await self.messaging.copy_contact(identity_key, removed=True)
            return
        await self.contacts.remove(identity_key)
        await self.messaging.copy_contact(identity_key, removed=True)
        await self.store.write(
            lambda conn: message_queries.drop_outbox_for_identity(conn, identity_key)
        )

    async def block_contact(self, reference: str, blocked: bool) -> ContactSummary:
        row = await self.contacts.find(reference)
        await self.contacts.set_blocked(row.identity_key, blocked)
        if blocked:  # nothing more goes to them, queued messages and receipts included
            await self.store.write(
                lambda conn: message_queries.drop_outbox_for_identity(conn, row.identity_key)
            )
        await self.messaging.copy_contact(row.identity_key)
        return await self.contact(identity_id_from_public_key(row.identity_key))

    async def _summary(self, row: ContactRow) -> ContactSummary:
        connected = set(self.net.connected_peers())
        identity_id = identity_id_from_public_key(row.identity_key)
        return ContactSummary(
            identity_id=identity_id,
            fingerprint=fingerprint(identity_id),
            name=row.name,
            display_name=row.display_name,
            nickname=row.nickname,
            verified=row.verified,
            verified_by=row.verified_by,
            blocked=row.blocked,
            identity_changed=row.identity_key_changed,
            devices=[
                DeviceSummary(peer_id=d.peer_id, name=d.name, connected=d.peer_id in connected)
                for d in row.devices
            ],
            fields=await self.contacts.fields_of(row.identity_key),
            added_at_ms=row.added_at,
        )

    async def start_verification(self, reference: str) -> VerificationView:
        """Accept this contact's pending verification of us, or start one with them."""
        contact = await self.contacts.find(reference)
        identity_id = identity_id_from_public_key(contact.identity_key)
        for pending in self.verifications.pending():
            if pending.identity_id == identity_id and pending.incoming:
                return await self.verifications.accept(pending.verification_id)
        return await self.verifications.start(contact.identity_key)

    # -- messages ------------------------------------------------------------------------------

    async def send(self, reference: str, text: str) -> MessageView:
        return await self.messaging.send_text(await self.contacts.find(reference), text)

    async def messages(
        self, reference: str, limit: int, before: str | None, mark_read: bool
    ) -> MessagePage:
        contact = await self.contacts.find(reference)
        page = await self.messaging.page(contact.identity_key, contact.name, limit, before)
        if mark_read and page.unread:
            await self.messaging.mark_read(contact)
        return page

    async def search_messages(
        self, query: str, reference: str | None, limit: int
    ) -> list[MessageView]:
        identity_key = (await self.contacts.find(reference)).identity_key if reference else None
        return await self.messaging.search(query, identity_key, limit)

    async def conversations(self) -> list[ConversationSummary]:
        names = {row.identity_key: row.name for row in await self.contacts.list_contacts()}
        return await self.messaging.conversations(names)

    async def mark_read(self, reference: str) -> int:
        return await self.messaging.mark_read(await self.contacts.find(reference))

    async def message_stats(self) -> MessagingStats:
        return await self.messaging.stats()


def fingerprint(identity_id: str) -> str:
    """The identity id in groups of four, to read aloud or compare side by side."""
    return " ".join(identity_id[i : i + 4] for i in range(0, len(identity_id), 4))


def invite_summary(row: InviteRow, now_s: int) -> InviteSummary:
    return InviteSummary(
        invite_id=row.invite_id.hex(),
        state=row.state(now_s).value,
        uses_left=row.uses_left,
        max_uses=row.max_uses,
        expires_at=row.expires_at,
        created_at_ms=row.created_at,
        code=row.code,
    )
