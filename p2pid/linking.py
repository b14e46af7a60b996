"""`p2pid device link`: the new device's side of linking, run in the foreground before the home
has an identity. It shows a device-link code, waits for one of my linked devices to approve it,
and creates the home from what that device hands over (identity, device list, history).

The home is written only once everything arrived, in one transaction; the key file comes last,
as in `p2pid init`, so an interrupted link leaves no half-made identity behind.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import nacl.signing
import trio

from p2pid.contacts import hints_from
from p2pid.crypto.device_link import LinkOffer, new_link_offer
from p2pid.crypto.device_list import DeviceListError
from p2pid.crypto.identity import IdentityKeys, new_seed
from p2pid.crypto.olm import OlmAccount, PublishedPrekeys
from p2pid.crypto.vault import new_vault_key
from p2pid.device_sync import SyncError, import_batch, record_from_list
from p2pid.home import Home
from p2pid.net.host import NetHost, Stream
from p2pid.node import expand_unspecified, interface_ipv4_addresses
from p2pid.protocols.device_link import ApproverInfo, Granted, LinkError, LinkNewDevice, serve_link
from p2pid.provision import require_new_home, store_vault_key, validate_name
from p2pid.store import contacts as contact_queries
from p2pid.store import messages as message_queries
from p2pid.store import queries
from p2pid.store.db import StoreError, open_database, savepoint
from p2pid.store.queries import LocalIdentityRow
from p2pid.wire.device_link import LINK_PROTOCOL, SyncBatch, SyncEnd
from p2pid.wire.invite import encode_invite
from p2pid.wire.records import DevicePrekeys

log = logging.getLogger(__name__)

LINK_CODE_TTL_SECONDS = 600
ONE_TIME_KEYS_FOR_SIBLINGS = 20

Report = Callable[[dict[str, Any]], None]


@dataclass(frozen=True)
class LinkOptions:
    device_name: str
    listen_addrs: Sequence[str]
    interfaces: Sequence[str] | None = None
    timeout_seconds: float = LINK_CODE_TTL_SECONDS
    passphrase: str | None = None
    # Asks the person on this device whether the codes match; None: both screens show the code
    # and the approving device's person decides.
    confirm: Callable[[ApproverInfo], Awaitable[bool]] | None = None


@dataclass(frozen=True)
class LinkedHome:
    identity_id: str
    name: str
    peer_id: str
    contacts: int
    messages: int


class _NewDevice:
    """The keys of the device being linked, kept in memory until the home is written."""

    def __init__(self, device_name: str) -> None:
        self.name = validate_name(device_name)
        self.vault_key = new_vault_key()
        self.device_seed = new_seed()
        self.account = OlmAccount.create(self.vault_key)
        self.published: PublishedPrekeys = self.account.publish_prekeys(
            ONE_TIME_KEYS_FOR_SIBLINGS, None
        )
        self.signing_key = nacl.signing.SigningKey(self.device_seed)

    @property
    def prekeys(self) -> DevicePrekeys:
        return DevicePrekeys(
            device_key=bytes(self.signing_key.verify_key),
            one_time_keys=self.published.one_time_keys,
            fallback_key=self.published.fallback_key,
        )

    def machine(self, offer: LinkOffer, own_peer_id: str) -> LinkNewDevice:
        return LinkNewDevice(
            offer,
            own_peer_id=own_peer_id,
            device_name=self.name,
            olm_curve25519=self.account.curve25519,
            olm_ed25519=self.account.ed25519,
            prekeys=self.prekeys,
        )


def write_linked_home(
    home: Home,
    device: _NewDevice,
    granted: Granted,
    batches: Sequence[SyncBatch],
    passphrase: str | None,
) -> LinkedHome:
    """Create the home in one transaction, then its key: the new device is now mine."""
    require_new_home(home)
    secrets = granted.secrets
    keys = IdentityKeys(identity_seed=secrets.identity_seed, device_seed=device.device_seed)
    now = int(time.time() * 1000)
    home.ensure_private_dir()
    connection = open_database(home.database, device.vault_key, create=True)
    written = False
    try:
        with savepoint(connection):
            queries.save_local_identity(
                connection,
                LocalIdentityRow(
                    name=secrets.identity_name,
                    identity_seed=keys.identity_seed,
                    device_seed=keys.device_seed,
                    olm_account=device.account.pickle(),
                    created_at=now,
                ),
            )
            if device.published.fallback_key is not None:
                queries.save_fallback_key(connection, device.published.fallback_key)
            record = record_from_list(
                secrets.device_list,
                keys.identity_public_key,
                secrets.identity_name,
                list(secrets.sibling_prekeys),
            )
            contact_queries.save_self(connection, record, now)
            for peer_id, addrs in secrets.sibling_addrs.items():
                if peer_id != keys.peer_id and addrs:
                    queries.upsert_peer_seen(connection, peer_id, addrs, "invite", {}, now)
            with message_queries.search_index_deferred(connection):
                for batch in batches:
                    import_batch(connection, batch, now)
            contacts = len(contact_queries.list_contacts(connection))
            messages = int(connection.execute("SELECT count(*) FROM messages").fetchone()[0])
        written = True
    except (StoreError, SyncError, DeviceListError, ValueError) as error:
        raise LinkError(f"could not store what the approver sent: {error}") from None
    finally:
        connection.close()
        if not written:  # nothing half-made stays behind: the home can be linked or created
            home.wipe_identity()
    store_vault_key(home, device.vault_key, passphrase)
    return LinkedHome(
        identity_id=keys.identity_id,
        name=secrets.identity_name,
        peer_id=keys.peer_id,
        contacts=contacts,
        messages=messages,
    )


async def link_new_device(home: Home, options: LinkOptions, report: Report) -> LinkedHome:
    """Show a code, wait for an approval, write the home. Raises HomeError or LinkError."""
    require_new_home(home)
    device = _NewDevice(options.device_name)
    async with NetHost.open(device.device_seed, options.listen_addrs) as net:
        addrs = expand_unspecified(net.listen_addrs(), interface_ipv4_addresses(options.interfaces))
        offer = new_link_offer(
            device.signing_key,
            hints_from(addrs),
            LINK_CODE_TTL_SECONDS,
            device.name,
            int(time.time()),
        )
        machine = device.machine(offer, net.peer_id)
        outcome: list[LinkedHome] = []
        failure: list[str] = []
        finished = trio.Event()
        busy = trio.Lock()

        async def confirm(approver: ApproverInfo) -> bool:
            report(
                {
                    "event": "confirm",
                    "confirmation": approver.confirmation,
                    "approver": approver.name,
                }
            )
            return True if options.confirm is None else await options.confirm(approver)

        async def commit(granted: Granted, batches: list[SyncBatch], end: SyncEnd) -> None:
            linked = await trio.to_thread.run_sync(
                write_linked_home, home, device, granted, batches, options.passphrase
            )
            outcome.append(linked)

        async def handle(stream: Stream) -> None:
            if busy.locked() or finished.is_set():
                await stream.reset()
                return
            async with busy:
                try:
                    if await serve_link(stream, machine, confirm, commit):
                        finished.set()
                    else:
                        failure.append("the link was refused on this device")
                        finished.set()
                except (LinkError, trio.TooSlowError) as error:
                    report({"event": "refused", "message": str(error)})
                    if machine.spent:
                        failure.append(str(error))
                        finished.set()

        net.set_stream_handler(LINK_PROTOCOL, handle)
        report(
            {
                "event": "code",
                "code": encode_invite(offer.invite),
                "expires_at": offer.invite.expires_at,
                "peer_id": net.peer_id,
            }
        )
        timeout = min(options.timeout_seconds, offer.invite.expires_at - time.time())
        with trio.move_on_after(timeout):
            await finished.wait()
    if outcome:
        return outcome[0]
    if failure:
        raise LinkError(f"{failure[0]}; nothing was linked: run the command again for a new code")
    if machine.void:
        raise LinkError("too many wrong attempts: this code is void; run the command again")
    raise LinkError("no device approved the link in time; run the command again")
