"""Group invites by code: the admin's invite (a QR of kind GROUP), the admin's side of
`/p2pid/group-join/1` (admit the joiner, or keep a request for an admin to approve), the joiner's
side, and the approval of waiting requests.

A joiner who is admitted becomes a member by the admin's `add` op like any other; the welcome comes
over the join stream and, as for every added member, through the outbox."""

from __future__ import annotations

import threading
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import msgspec

from p2pid.contacts import Contacts, ContactsError, contact_record, hints_from, parse_invite_code
from p2pid.crypto.identity import identity_id_from_public_key, peer_id_from_public_key
from p2pid.crypto.invites import new_invite
from p2pid.device_sync import known_addrs
from p2pid.events import now_ms
from p2pid.groups.engine import (
    Effects,
    GroupEngine,
    GroupRefusal,
    group_hex,
)
from p2pid.groups.errors import GroupsError
from p2pid.groups.membership import GroupError
from p2pid.net.host import NetHost
from p2pid.protocols.cards import JoinedContact
from p2pid.protocols.group_join import (
    Admitted,
    GroupInviteSecret,
    GroupJoinError,
    GroupJoinInviteError,
    GroupJoinRefusedError,
    GroupJoinServer,
    GroupJoinTimeoutError,
    GroupJoinUnreachableError,
    Waiting,
    join_group,
)
from p2pid.store import contacts as contact_queries
from p2pid.store import groups as group_queries
from p2pid.store import queries
from p2pid.store.contacts import InviteRow, InviteState, RedeemResult
from p2pid.store.db import Connection
from p2pid.store.trio_store import TrioStore
from p2pid.wire.events import Event
from p2pid.wire.group_join import RefusalReason
from p2pid.wire.group_views import (
    GroupInviteCreated,
    GroupJoinRequested,
    GroupJoinRequestView,
)
from p2pid.wire.groups import Add
from p2pid.wire.invite import InviteKind, encode_invite
from p2pid.wire.messages import GroupOps
from p2pid.wire.records import ContactCard

MAX_INVITE_USES = 100
MAX_INVITE_TTL_SECONDS = 30 * 24 * 3600
MAX_PENDING_REQUESTS = 100


@dataclass(frozen=True)
class JoinedGroup:
    group_id: bytes
    admitted: bool


def _now_s() -> int:
    return now_ms() // 1000


class GroupInvites:
    def __init__(
        self,
        *,
        store: TrioStore,
        net: NetHost,
        engine: GroupEngine,
        lock: threading.RLock,
        contacts: Contacts,
        addrs: Callable[[], list[str]],
        write: Callable[[Callable[[Connection, Effects], object]], Awaitable[Effects]],
        publish: Callable[[Event], None],
        remember_addrs: Callable[[str], Awaitable[None]],
    ) -> None:
        self._store = store
        self._net = net
        self._engine = engine
        self._lock = lock
        self._contacts = contacts
        self._addrs = addrs
        self._write = write
        self._publish = publish
        self._remember_addrs = remember_addrs
        self.server = GroupJoinServer(self, own_peer_id=net.peer_id)

    # -- the admin's side ----------------------------------------------------------------------

    async def create(
        self, group_id: bytes, uses: int, ttl_seconds: int, approval: bool
    ) -> GroupInviteCreated:
        if not 1 <= uses <= MAX_INVITE_USES:
            raise GroupsError("invalid", f"uses must be 1..{MAX_INVITE_USES}")
        if not 1 <= ttl_seconds <= MAX_INVITE_TTL_SECONDS:
            raise GroupsError("invalid", f"ttl must be 1..{MAX_INVITE_TTL_SECONDS} seconds")
        with self._lock:
            state = self._engine.logs[group_id].state
        if not state.is_admin(self._engine.me):
            raise GroupsError("refused", "only an admin of the group can invite to it")
        invite = new_invite(
            InviteKind.GROUP,
            self._engine.identity_signing_key,
            self._engine.device_key,
            hints_from(self._addrs()),
            ttl_seconds=ttl_seconds,
            name=state.name,
            now=_now_s(),
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

        def write(conn: Connection) -> None:
            contact_queries.create_invite(conn, row)
            group_queries.add_group_invite(conn, invite.invite_id, group_id, approval)

        await self._store.write(write)
        return GroupInviteCreated(
            group_id=group_hex(group_id),
            invite_id=invite.invite_id.hex(),
            code=code,
            expires_at=invite.expires_at,
            uses=uses,
            approval=approval,
        )

    async def lookup(self, invite_id: bytes) -> GroupInviteSecret | RefusalReason:
        def read(conn: Connection) -> GroupInviteSecret | RefusalReason:
            invite = contact_queries.get_invite(conn, invite_id)
            if invite is None or group_queries.get_group_invite(conn, invite_id) is None:
                return RefusalReason.UNKNOWN_INVITE
            if invite.secret is None:  # burnt: spent or cancelled
                return RefusalReason.USED_UP
            state = invite.state(_now_s())
            if state is InviteState.LIVE:
                return GroupInviteSecret(invite.secret)
            unusable = (
                RefusalReason.EXPIRED if state is InviteState.EXPIRED else RefusalReason.USED_UP
            )
            return GroupInviteSecret(invite.secret, unusable)

        return await self._store.read(read)

    async def admit(
        self, invite_id: bytes, joiner: JoinedContact
    ) -> Admitted | Waiting | RefusalReason:
        card = await self._contacts.own_card(joiner.identity_key)
        now = now_ms()
        answer: list[Admitted | Waiting | RefusalReason] = []

        def write(conn: Connection, effects: Effects) -> None:
            found = group_queries.get_group_invite(conn, invite_id)
            if found is None:
                answer.append(RefusalReason.UNKNOWN_INVITE)
                return
            group_id, approval = found
            group_log = self._engine.logs.get(group_id)
            if group_log is None or not group_log.state.is_admin(self._engine.me):
                answer.append(RefusalReason.REFUSED)
                return
            if contact_queries.is_blocked(conn, joiner.identity_key):
                answer.append(RefusalReason.REFUSED)
                return
            redeemed = contact_queries.redeem_invite(
                conn, invite_id, joiner.identity_key, now // 1000, now
            )
            if redeemed not in (RedeemResult.OK, RedeemResult.ALREADY_REDEEMED_BY_THIS_JOINER):
                expired = redeemed is RedeemResult.EXPIRED
                answer.append(RefusalReason.EXPIRED if expired else RefusalReason.USED_UP)
                return
            contact_queries.upsert_contact(conn, contact_record(joiner), now, group_only=True)
            if group_log.state.is_member(joiner.identity_key):
                answer.append(self._admitted(conn, card, group_id))
                return
            full = self._engine.cap_refusal(conn, group_id, len(joiner.devices.body.devices))
            if full is not None:
                answer.append(RefusalReason.GROUP_FULL)
                return
            if approval:
                encoded = msgspec.msgpack.encode(joiner.card)
                if len(group_queries.list_join_requests(conn)) >= MAX_PENDING_REQUESTS:
                    answer.append(RefusalReason.BUSY)
                    return
                request_id = group_queries.add_join_request(
                    conn,
                    group_id,
                    joiner.identity_key,
                    joiner.peer_id,
                    joiner.display_name[:64],
                    encoded,
                    now,
                )
                effects.events.append(
                    GroupJoinRequested(
                        at_ms=now,
                        request=self._request_view(conn, request_id),
                    )
                )
                answer.append(Waiting(card=card, group_id=group_id))
                return
            self._add_member(conn, group_id, joiner.identity_key, joiner.display_name, now, effects)
            answer.append(self._admitted(conn, card, group_id))

        await self._write(write)
        if isinstance(answer[0], Admitted | Waiting):
            await self._remember_addrs(joiner.peer_id)  # it dialled in: where it listens
        return answer[0]

    def _admitted(self, conn: Connection, card: ContactCard, group_id: bytes) -> Admitted:
        group_log = self._engine.logs[group_id]
        addrs = known_addrs(conn)
        cards = [
            c
            for key in group_log.state.members
            if key != self._engine.me and (c := self._engine.card_of(conn, key, addrs))
        ]
        ops = [msgspec.msgpack.encode(op) for op in group_log.ops()]
        return Admitted(card=card, group_id=group_id, ops=ops, cards=cards)

    def _add_member(
        self,
        conn: Connection,
        group_id: bytes,
        identity_key: bytes,
        display_name: str,
        now: int,
        effects: Effects,
    ) -> None:
        group_log = self._engine.logs[group_id]
        before = group_log.state
        try:
            signed = group_log.author_op(
                self._engine.identity_signing_key,
                Add(member=identity_key, display_name=display_name[:64] or "?"),
                now,
            )
        except GroupError as error:
            raise GroupsError("refused", str(error)) from None
        self._engine.store_ops(conn, group_log, [signed], now)
        self._engine.distribute_ops(conn, group_log, [signed], now, effects, welcome=[identity_key])
        self._engine.announce_change(conn, group_log, before, now, effects)

    def _request_view(self, conn: Connection, request_id: int) -> GroupJoinRequestView:
        row = group_queries.get_join_request(conn, request_id)
        assert row is not None
        group = group_queries.get_group(conn, row.group_id)
        return GroupJoinRequestView(
            request_id=str(row.id),
            group_id=group_hex(row.group_id),
            group_name=group.name if group else "",
            identity_id=identity_id_from_public_key(row.identity_key),
            name=row.display_name,
            requested_at_ms=row.requested_at,
        )

    async def requests(self) -> list[GroupJoinRequestView]:
        def read(conn: Connection) -> list[GroupJoinRequestView]:
            return [self._request_view(conn, r.id) for r in group_queries.list_join_requests(conn)]

        return await self._store.read(read)

    async def answer(self, request_id: str, accept: bool) -> bytes | None:
        """Approve (the group's id) or refuse (None) a waiting join request."""
        try:
            number = int(request_id)
        except ValueError:
            raise GroupsError("invalid", "a join request id is a number") from None
        now = now_ms()
        decided: list[bytes] = []

        def write(conn: Connection, effects: Effects) -> None:
            row = group_queries.get_join_request(conn, number)
            if row is None or row.state != "pending":
                raise GroupsError("not_found", f"no waiting join request {request_id}")
            if not accept:
                group_queries.set_join_request_state(conn, number, "refused")
                return
            group_log = self._engine.logs.get(row.group_id)
            if group_log is None or not group_log.state.is_admin(self._engine.me):
                raise GroupsError("refused", "only an admin of the group can let someone in")
            if not group_log.state.is_member(row.identity_key):
                person = self._engine.person(conn, row.identity_key)
                full = self._engine.cap_refusal(
                    conn, row.group_id, len(person.devices) if person else 1
                )
                if full is not None:
                    raise GroupsError("refused", full)
            group_queries.set_join_request_state(conn, number, "accepted")
            if not group_log.state.is_member(row.identity_key):
                self._add_member(
                    conn, row.group_id, row.identity_key, row.display_name, now, effects
                )
            decided.append(row.group_id)

        await self._write(write)
        return decided[0] if decided else None

    # -- the joiner's side ---------------------------------------------------------------------

    async def join(self, code: str) -> JoinedGroup:
        try:
            invite = parse_invite_code(code, InviteKind.GROUP)
        except ContactsError as error:
            raise GroupsError("invalid", str(error)) from None
        if invite.identity_key == self._engine.me:
            raise GroupsError("invalid", "this is your own group invite")
        self._net.add_addrs(
            peer_id_from_public_key(invite.device_key), [h.to_multiaddr() for h in invite.hints]
        )
        card = await self._contacts.own_card(invite.identity_key)
        try:
            outcome = await join_group(self._net, invite, self._engine.me, card)
        except GroupJoinRefusedError as error:
            raise GroupsError("refused", str(error)) from None
        except GroupJoinUnreachableError as error:
            raise GroupsError("unreachable", str(error)) from None
        except GroupJoinTimeoutError as error:
            raise GroupsError("timeout", str(error)) from None
        except (GroupJoinInviteError, GroupJoinError) as error:
            raise GroupsError("refused", str(error)) from None
        now = now_ms()

        def write(conn: Connection, effects: Effects) -> None:
            contact_queries.upsert_contact(
                conn, contact_record(outcome.inviter), now, group_only=True
            )
            hints = [h.to_multiaddr() for h in invite.hints]
            if hints:
                queries.upsert_peer_seen(conn, outcome.inviter.peer_id, hints, "invite", {}, now)
            inviter = self._engine.person(conn, outcome.inviter.identity_key)
            assert inviter is not None
            if not outcome.admitted:
                return
            welcome = GroupOps(
                group_id=outcome.group_id, ops=list(outcome.ops), cards=list(outcome.cards)
            )
            try:
                self._engine.apply_ops(conn, inviter, welcome, now, effects)
            except GroupRefusal as refusal:
                raise GroupsError("refused", f"the welcome was refused: {refusal}") from None
            if outcome.group_id not in self._engine.logs:
                raise GroupsError("refused", "the welcome does not make you a member")

        await self._write(write)
        return JoinedGroup(outcome.group_id, outcome.admitted)

    def install(self) -> None:
        self.server.install(self._net)
