"""Contacts: invites, joining, and the contact list. The node-side half of contact-join.

Owns this device's Olm account (one-time keys handed out in cards are marked published and the
account is saved before the card leaves) and the card this node shows to a given person.
"""

from __future__ import annotations

import logging
import platform
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from p2pid.crypto.device_list import sign_device_list
from p2pid.crypto.identity import IdentityKeys, identity_id_from_public_key
from p2pid.crypto.invites import InviteError, new_invite, verify_invite
from p2pid.crypto.olm import OlmAccount
from p2pid.device_sync import (
    fallback_prekeys,
    record_from_list,
    record_from_verified,
    split_signed_list,
)
from p2pid.events import EventBus, now_ms
from p2pid.protocols.cards import JoinedContact
from p2pid.protocols.contact_join import JoinError, PriorWelcome
from p2pid.store import contacts as contact_queries
from p2pid.store import queries
from p2pid.store.contacts import (
    ContactRecord,
    ContactRow,
    DeviceConflictError,
    InviteRow,
    InviteState,
    RedeemResult,
)
from p2pid.store.db import Connection
from p2pid.store.queries import LocalIdentityRow
from p2pid.store.trio_store import TrioStore
from p2pid.wire import events
from p2pid.wire.contact_join import RefusalReason
from p2pid.wire.invite import (
    AddressHint,
    Invite,
    InviteFormatError,
    InviteKind,
    decode_invite,
    encode_invite,
)
from p2pid.wire.records import ContactCard, DeviceEntry, DevicePrekeys, SignedDeviceList

log = logging.getLogger(__name__)

ONE_TIME_KEYS_PER_CARD = 5
MAX_INVITE_HINTS = 4
MAX_INVITE_USES = 1000
MAX_INVITE_TTL_SECONDS = 30 * 24 * 3600
DEFAULT_INVITE_TTL_SECONDS = 24 * 3600
DEVICE_CAPABILITIES = ["chat"]

_REDEEM_REFUSALS = {
    RedeemResult.UNKNOWN: RefusalReason.UNKNOWN_INVITE,
    RedeemResult.EXPIRED: RefusalReason.EXPIRED,
    RedeemResult.CANCELLED: RefusalReason.CANCELLED,
    RedeemResult.SPENT: RefusalReason.SPENT,
}


_STATE_REFUSALS = {
    InviteState.EXPIRED: RefusalReason.EXPIRED,
    InviteState.CANCELLED: RefusalReason.CANCELLED,
    InviteState.SPENT: RefusalReason.SPENT,
}


class ContactsError(Exception):
    """A contacts request that cannot be carried out; `kind` maps to an RPC error code."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


@dataclass(frozen=True)
class CreatedInvite:
    invite: Invite
    code: str
    uses: int


def now_s() -> int:
    return int(time.time())


def hints_from(addrs: Sequence[str]) -> tuple[AddressHint, ...]:
    hints = [hint for addr in addrs if (hint := AddressHint.from_multiaddr(addr)) is not None]
    return tuple(dict.fromkeys(hints))[:MAX_INVITE_HINTS]


def parse_invite_code(code: str, kind: InviteKind = InviteKind.CONTACT) -> Invite:
    """Decode and verify an invite's text; a clear ContactsError for anything wrong with it."""
    try:
        invite = decode_invite(code)
        verify_invite(invite, now_s())
    except InviteFormatError as error:
        raise ContactsError("invalid", f"not a p2pid invite: {error}") from None
    except InviteError as error:
        raise ContactsError("invalid", f"invite refused: {error}") from None
    if invite.kind is not kind:
        raise ContactsError(
            "invalid", f"this is a {invite.kind.name.lower()} invite, not a {kind.name.lower()} one"
        )
    return invite


def contact_record(contact: JoinedContact) -> ContactRecord:
    return record_from_verified(contact.devices, contact.display_name, contact.card.prekeys)


def publish_one_time_keys(
    conn: Connection, vault_key: bytes, device_key: bytes, count: int
) -> DevicePrekeys:
    """Fresh one-time keys of this device, marked published in the stored account. The account
    lives in the store only: whoever changes it (cards, inbound sessions) loads, changes and saves
    it inside one write, so no stale copy can bring a used one-time key back."""
    identity = queries.load_local_identity(conn)
    if identity is None:
        raise ContactsError("invalid", "the store holds no local identity")
    account = OlmAccount.from_pickle(identity.olm_account, vault_key)
    published = account.publish_prekeys(count, queries.load_fallback_key(conn))
    queries.update_olm_account(conn, account.pickle())
    if published.fallback_key is not None:
        queries.save_fallback_key(conn, published.fallback_key)
    return DevicePrekeys(
        device_key=device_key,
        one_time_keys=published.one_time_keys,
        fallback_key=published.fallback_key,
    )


class Contacts:
    def __init__(
        self,
        *,
        store: TrioStore,
        identity: LocalIdentityRow,
        vault_key: bytes,
        events: EventBus,
    ) -> None:
        self.store = store
        self.identity = identity
        self.keys = IdentityKeys(identity.identity_seed, identity.device_seed)
        self.events = events
        self._vault_key = vault_key
        self._olm = OlmAccount.from_pickle(identity.olm_account, vault_key)  # its public keys
        self.on_contact_added: list[Callable[[bytes], None]] = []
        self._device_list: SignedDeviceList | None = None
        self._sibling_prekeys: list[DevicePrekeys] = []

    async def start(self) -> None:
        """Load my signed device list; a home from before device linking signs its first one."""
        if await self.store.read(contact_queries.get_self) is None:  # no write on every start
            await self.store.write(self._ensure_own_device_list)
        await self.reload_own_devices()

    def _ensure_own_device_list(self, conn: Connection) -> None:
        if contact_queries.get_self(conn) is not None:
            return
        this_device = DeviceEntry(
            device_key=self.keys.device_public_key,
            olm_curve25519=self._olm.curve25519,
            olm_ed25519=self._olm.ed25519,
            name=platform.node() or "device",
            created_at=self.identity.created_at,
            capabilities=DEVICE_CAPABILITIES,
        )
        signed = sign_device_list(
            self.keys.identity_signing_key, 1, self.identity.created_at, [this_device]
        )
        record = record_from_list(signed, self.keys.identity_public_key, self.identity.name, [])
        contact_queries.save_self(conn, record, now_ms())

    async def reload_own_devices(self) -> None:
        """Take my device list (and my other devices' fallback keys) from the store again."""
        mine = await self.store.read(contact_queries.get_self)
        assert mine is not None and mine.device_list is not None
        self._device_list = split_signed_list(mine.device_list)
        self._sibling_prekeys = fallback_prekeys(
            tuple(d for d in mine.devices if d.device_key != self.keys.device_public_key)
        )

    @property
    def own_device_list(self) -> SignedDeviceList:
        assert self._device_list is not None, "Contacts.start() loads it"
        return self._device_list

    # -- my card ---------------------------------------------------------------------------

    async def _publish_one_time_keys(self) -> DevicePrekeys:
        return await self.store.write(
            lambda conn: publish_one_time_keys(
                conn, self._vault_key, self.keys.device_public_key, ONE_TIME_KEYS_PER_CARD
            )
        )

    async def own_card(self, recipient_identity_key: bytes) -> ContactCard:
        fields = await self.store.read(
            lambda conn: contact_queries.fields_visible_to(conn, recipient_identity_key)
        )
        return ContactCard(
            display_name=self.identity.name,
            device_list=self.own_device_list,
            prekeys=[await self._publish_one_time_keys(), *self._sibling_prekeys],
            fields=fields,
        )

    # -- the inviter's side (ContactBook) ----------------------------------------------------

    async def is_blocked(self, identity_key: bytes) -> bool:
        return await self.store.read(lambda conn: contact_queries.is_blocked(conn, identity_key))

    async def invite_for_join(
        self, invite_id: bytes, joiner_identity_key: bytes
    ) -> bytes | PriorWelcome | RefusalReason:
        def lookup(conn: Connection) -> bytes | PriorWelcome | RefusalReason:
            use = contact_queries.get_invite_use(conn, invite_id, joiner_identity_key)
            if use is not None and use.receipt is not None:
                return PriorWelcome(use.receipt)
            invite = contact_queries.get_invite(conn, invite_id)
            if invite is None:
                return RefusalReason.UNKNOWN_INVITE
            if invite.secret is None or not invite.is_live(now_s()):
                return _STATE_REFUSALS.get(invite.state(now_s()), RefusalReason.SPENT)
            return invite.secret

        return await self.store.read(lookup)

    async def admit_joiner(
        self, invite_id: bytes, joiner: JoinedContact, welcome_proof: bytes
    ) -> RefusalReason | None:
        record = contact_record(joiner)

        def redeem_and_store(conn: Connection) -> RefusalReason | None:
            result = contact_queries.redeem_invite(
                conn, invite_id, joiner.identity_key, now_s(), now_ms(), receipt=welcome_proof
            )
            if result in _REDEEM_REFUSALS:
                return _REDEEM_REFUSALS[result]
            self._store_verified(conn, record, joiner.card.fields)
            return None

        try:
            refusal = await self.store.write(redeem_and_store)
        except DeviceConflictError as conflict:
            await self._flag_identity_change(conflict, joiner)
            return RefusalReason.BAD_CARD
        if refusal is None:
            self._announce_added(joiner)
        return refusal

    # -- the joiner's side ----------------------------------------------------------------------

    async def store_inviter(self, inviter: JoinedContact) -> None:
        record = contact_record(inviter)
        try:
            await self.store.write(
                lambda conn: self._store_verified(conn, record, inviter.card.fields)
            )
        except DeviceConflictError as conflict:
            await self._flag_identity_change(conflict, inviter)
            raise JoinError(str(self._identity_change_message(conflict))) from None
        self._announce_added(inviter)

    @staticmethod
    def _store_verified(conn: Connection, record: ContactRecord, fields: dict[str, str]) -> None:
        contact_queries.upsert_contact(conn, record, now_ms())
        contact_queries.set_verified(conn, record.identity_key, "invite", now_ms())
        contact_queries.set_contact_fields(conn, record.identity_key, fields, now_ms())

    def _identity_change_message(self, conflict: DeviceConflictError) -> str:
        return (
            f"device {conflict.peer_id} belonged to contact "
            f"{identity_id_from_public_key(conflict.owner_identity_key)} and now claims "
            f"identity {identity_id_from_public_key(conflict.claimed_by)}: not accepted, "
            "the contact is flagged"
        )

    async def _flag_identity_change(
        self, conflict: DeviceConflictError, claimant: JoinedContact
    ) -> None:
        await self.store.write(
            lambda conn: contact_queries.record_identity_key_change(
                conn, conflict.peer_id, conflict.owner_identity_key, claimant.identity_key, now_ms()
            )
        )
        log.warning("%s", self._identity_change_message(conflict))
        self.events.publish(
            events.ContactIdentityChanged(
                at_ms=now_ms(),
                identity_id=identity_id_from_public_key(conflict.owner_identity_key),
                peer_id=conflict.peer_id,
                new_identity_id=identity_id_from_public_key(claimant.identity_key),
            )
        )

    def _announce_added(self, contact: JoinedContact) -> None:
        for listener in self.on_contact_added:
            listener(contact.identity_key)
        self.events.publish(
            events.ContactAdded(
                at_ms=now_ms(),
                identity_id=identity_id_from_public_key(contact.identity_key),
                name=contact.display_name,
                verified=True,
            )
        )

    # -- invites --------------------------------------------------------------------------------

    async def create_invite(
        self, *, uses: int, ttl_seconds: int, addrs: Sequence[str]
    ) -> CreatedInvite:
        if not 1 <= uses <= MAX_INVITE_USES:
            raise ContactsError("invalid", f"uses must be 1..{MAX_INVITE_USES}")
        if not 1 <= ttl_seconds <= MAX_INVITE_TTL_SECONDS:
            raise ContactsError("invalid", f"ttl must be 1..{MAX_INVITE_TTL_SECONDS} seconds")
        invite = new_invite(
            InviteKind.CONTACT,
            self.keys.identity_signing_key,
            self.keys.device_public_key,
            hints_from(addrs),
            ttl_seconds=ttl_seconds,
            name=self.identity.name,
            now=now_s(),
        )
        code = encode_invite(invite)
        row = InviteRow(
            invite_id=invite.invite_id,
            kind=int(invite.kind),
            secret=invite.secret,
            code=code,
            max_uses=uses,
            uses_left=uses,
            expires_at=invite.expires_at,
            created_at=now_ms(),
        )
        await self.store.write(lambda conn: contact_queries.create_invite(conn, row))
        return CreatedInvite(invite=invite, code=code, uses=uses)

    async def list_invites(self, include_spent: bool) -> list[InviteRow]:
        return await self.store.read(
            lambda conn: contact_queries.list_invites(conn, now_s(), include_spent=include_spent)
        )

    async def cancel_invite(self, invite_id: bytes) -> None:
        cancelled = await self.store.write(
            lambda conn: contact_queries.cancel_invite(conn, invite_id, now_ms())
        )
        if not cancelled:
            raise ContactsError("not_found", "no live invite with that id")

    # -- the contact list -------------------------------------------------------------------------

    async def list_contacts(self) -> list[ContactRow]:
        return await self.store.read(contact_queries.list_contacts)

    async def find(self, reference: str) -> ContactRow:
        """A contact by identity id (or a unique prefix of it) or by nickname or display name."""
        contacts = await self.list_contacts()
        wanted = reference.strip()
        by_id = [
            c
            for c in contacts
            if identity_id_from_public_key(c.identity_key).startswith(wanted.lower())
        ]
        if len(wanted) >= 6 and len(by_id) == 1:
            return by_id[0]
        by_name = [
            c
            for c in contacts
            if wanted.casefold() in (c.name.casefold(), c.display_name.casefold())
        ]
        if len(by_name) == 1:
            return by_name[0]
        if len(by_name) > 1 or len(by_id) > 1:
            raise ContactsError(
                "invalid", f"{reference!r} matches several contacts; use the identity id"
            )
        raise ContactsError("not_found", f"no contact {reference!r}")

    async def fields_of(self, identity_key: bytes) -> dict[str, str]:
        return await self.store.read(
            lambda conn: contact_queries.contact_fields(conn, identity_key)
        )

    async def rename(self, identity_key: bytes, nickname: str | None) -> None:
        await self.store.write(
            lambda conn: contact_queries.rename_contact(conn, identity_key, nickname, now_ms())
        )

    async def remove(self, identity_key: bytes) -> None:
        await self.store.write(lambda conn: contact_queries.remove_contact(conn, identity_key))

    async def set_blocked(self, identity_key: bytes, blocked: bool) -> None:
        await self.store.write(
            lambda conn: contact_queries.set_blocked(conn, identity_key, blocked, now_ms())
        )
