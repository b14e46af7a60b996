"""The person's side of kiosks: pairing with one, the kiosks paired with, invoking routines on
them, revoking, the owner's operations, and answering a kiosk's request for approval.

The kiosk never receives an identity seed: this node signs a grant with its identity (30 days by
default) and hands over its signed device list and display name.
"""

from __future__ import annotations

import base64
import json
import logging
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import msgspec
import trio

from p2pid.contacts import ContactsError, parse_invite_code
from p2pid.crypto.grants import (
    DEFAULT_GRANT_TTL_MS,
    MAX_GRANT_TTL_MS,
    grant_bytes,
    grant_from_bytes,
    open_grant,
    sign_grant,
)
from p2pid.crypto.identity import (
    IdentityKeys,
    identity_id_from_public_key,
    peer_id_from_public_key,
)
from p2pid.events import now_ms
from p2pid.net import NetError
from p2pid.net.host import NetHost
from p2pid.protocols import kiosk_control, kiosk_pair
from p2pid.protocols.kiosk_pair import PairError, PairRefusedError, PersonPairing
from p2pid.store import kiosk as kiosk_queries
from p2pid.store.kiosk import PairedKioskRow
from p2pid.store.trio_store import TrioStore
from p2pid.wire import events
from p2pid.wire.invite import InviteKind
from p2pid.wire.kiosk import (
    ApprovalRequest,
    ControlDone,
    ControlRefused,
    ControlReply,
    ControlRequest,
    GuestList,
    Invoke,
    InvokeResult,
    ListGuests,
    PairChallenge,
    Refusal,
    RemoveGuest,
    ResetKiosk,
    RevokeGrant,
    Role,
)
from p2pid.wire.records import SignedDeviceList

log = logging.getLogger(__name__)

SHORT_CODE_DIGITS = 6
APPROVAL_WAIT_SECONDS = 120.0
PAIRABLE_FIELD = "kiosk"


class KiosksError(Exception):
    """A kiosk request that cannot be carried out; `kind` maps to an RPC error code, `reason`
    is the kiosk's own reason when the kiosk refused."""

    def __init__(self, kind: str, message: str, reason: Refusal | None = None) -> None:
        super().__init__(message)
        self.kind = kind
        self.reason = reason


@dataclass(frozen=True)
class Pairable:
    """A kiosk seen on the LAN advertising `kiosk=1`."""

    peer_id: str
    name: str
    addrs: tuple[str, ...]


@dataclass
class _PendingApproval:
    record: events.KioskApprovalRequested
    answered: trio.Event
    accept: bool = False


_REFUSAL_KINDS = {
    Refusal.NOT_FOUND: "not_found",
    Refusal.UNKNOWN_ROUTINE: "not_found",
    Refusal.BAD_ARGS: "invalid",
    Refusal.OWNER_UNREACHABLE: "unreachable",
}


def _refusal_error(refusal: ControlRefused | PairRefusedError) -> KiosksError:
    reason = refusal.reason
    message = refusal.message if isinstance(refusal, ControlRefused) else str(refusal)
    return KiosksError(
        _REFUSAL_KINDS.get(reason, "refused"), f"the kiosk refused: {message}", reason
    )


class Kiosks:
    def __init__(
        self,
        *,
        store: TrioStore,
        net: NetHost,
        keys: IdentityKeys,
        display_name: str,
        device_list: Callable[[], SignedDeviceList],
        addrs: Callable[[], list[str]],
        pairable: Callable[[], list[Pairable]],
        publish: Callable[[events.Event], None],
    ) -> None:
        self.store = store
        self.net = net
        self.keys = keys
        self.display_name = display_name
        self._device_list = device_list
        self._addrs = addrs
        self._pairable = pairable
        self._publish = publish
        self._approvals: dict[str, _PendingApproval] = {}

    # -- pairing -----------------------------------------------------------------------------

    async def pair(
        self,
        code: str | None,
        short_code: str | None,
        kiosk: str | None = None,
        grant_ttl_ms: int = DEFAULT_GRANT_TTL_MS,
    ) -> dict[str, Any]:
        if (code is None) == (short_code is None):
            raise KiosksError("invalid", "give the kiosk's QR code or its short code (one)")
        if not 0 < grant_ttl_ms <= MAX_GRANT_TTL_MS:
            raise KiosksError("invalid", "a grant lives from 1 ms to 366 days")
        if code is not None:
            try:
                invite = parse_invite_code(code, InviteKind.KIOSK)
            except ContactsError as error:
                raise KiosksError(error.kind, str(error)) from None
            kiosk_peer_id = peer_id_from_public_key(invite.device_key)
            self.net.add_addrs(kiosk_peer_id, [hint.to_multiaddr() for hint in invite.hints])
            machine = PersonPairing(
                own_peer_id=self.net.peer_id, kiosk_peer_id=kiosk_peer_id, invite=invite
            )
        else:
            assert short_code is not None
            digits = short_code.replace(" ", "").replace("-", "")
            if len(digits) != SHORT_CODE_DIGITS or not digits.isdigit() or not digits.isascii():
                raise KiosksError("invalid", f"a short code is {SHORT_CODE_DIGITS} digits")
            target = self._pick_pairable(kiosk)
            self.net.add_addrs(target.peer_id, target.addrs)
            kiosk_peer_id = target.peer_id
            machine = PersonPairing(
                own_peer_id=self.net.peer_id, kiosk_peer_id=kiosk_peer_id, short_code=digits
            )
        if kiosk_peer_id == self.net.peer_id:
            raise KiosksError("invalid", "this is this node's own kiosk code")
        known = await self._row_for_peer(kiosk_peer_id)
        grant_holder: list[bytes] = []

        async def make_request(challenge: PairChallenge) -> bytes:
            # Only a wish: the kiosk decides (its owner's identity pairs as owner from any of
            # its devices, with or without a record here).
            owner_again = known is not None and known.role == Role.OWNER.value
            role = Role.GUEST if challenge.has_owner and not owner_again else Role.OWNER
            grant = sign_grant(
                self.keys.identity_signing_key,
                kiosk_identity_key=challenge.kiosk_identity_key,
                kiosk_peer_id=kiosk_peer_id,
                role=role,
                now_ms=now_ms(),
                ttl_ms=grant_ttl_ms,
            )
            grant_holder.append(grant_bytes(grant))
            return machine.request(
                grant, self._device_list(), self.display_name[:64], self._addrs()[:8]
            )

        try:
            accepted = await kiosk_pair.pair(self.net, machine, make_request)
        except PairRefusedError as refusal:
            raise _refusal_error(refusal) from None
        except PairError as error:
            raise KiosksError("refused", f"pairing failed: {error}") from None
        except trio.TooSlowError:
            raise KiosksError("timeout", "the kiosk did not answer in time") from None
        except NetError as error:
            raise KiosksError(
                "unreachable", f"cannot reach the kiosk: {error}; nothing was paired"
            ) from None
        except kiosk_pair.STREAM_ERRORS as error:
            raise KiosksError(
                "refused",
                f"the kiosk hung up before answering ({error}); nothing was paired: "
                "try again with the code now on its screen",
            ) from None
        body = open_grant(grant_from_bytes(grant_holder[-1])).body
        routines = [msgspec.to_builtins(routine) for routine in accepted.routines]
        row = PairedKioskRow(
            peer_id=kiosk_peer_id,
            kiosk_identity_key=body.kiosk_identity_key,
            name=accepted.kiosk_name,
            role=accepted.role.value,
            grant_id=body.grant_id,
            grant=grant_holder[-1],
            expires_at=body.expires_at_ms,
            addrs=tuple(self.net.known_addrs(kiosk_peer_id)[:8]),
            routines=json.dumps(routines),
            paired_at=now_ms(),
            last_seen=now_ms(),
            health=None,
        )
        await self.store.write(lambda c: kiosk_queries.save_paired_kiosk(c, row))
        self._publish(
            events.KioskPaired(at_ms=now_ms(), peer_id=kiosk_peer_id, name=row.name, role=row.role)
        )
        return {
            "kiosk_peer_id": kiosk_peer_id,
            "kiosk_name": row.name,
            "role": row.role,
            "expires_at_ms": row.expires_at,
            "routines": routines,
        }

    def _pick_pairable(self, kiosk: str | None) -> Pairable:
        found = self._pairable()
        if kiosk is not None:
            found = [
                k for k in found if k.peer_id.startswith(kiosk) or k.name.lower() == kiosk.lower()
            ]
        if not found:
            raise KiosksError(
                "not_found",
                "no pairable kiosk discovered nearby (mDNS): is it on this network? "
                "Scan its QR code instead",
            )
        if len(found) > 1:
            names = ", ".join(f"{k.name} ({k.peer_id[:12]})" for k in found)
            raise KiosksError(
                "invalid", f"{len(found)} kiosks are pairable nearby: {names}; name one"
            )
        return found[0]

    # -- paired kiosks ------------------------------------------------------------------------

    async def _row_for_peer(self, peer_id: str) -> PairedKioskRow | None:
        rows = await self.store.read(kiosk_queries.list_paired_kiosks)
        return next((row for row in rows if row.peer_id == peer_id), None)

    async def find(self, reference: str) -> PairedKioskRow:
        rows = await self.store.read(kiosk_queries.list_paired_kiosks)
        exact = [r for r in rows if reference in (r.peer_id, r.name)]
        matches = exact or [
            r
            for r in rows
            if r.peer_id.startswith(reference) or r.name.lower().startswith(reference.lower())
        ]
        if len(matches) == 1:
            return matches[0]
        if matches:
            raise KiosksError("invalid", f"{reference!r} matches {len(matches)} kiosks")
        raise KiosksError("not_found", f"no paired kiosk {reference!r} (see `p2pid kiosks`)")

    async def list_kiosks(self) -> list[dict[str, Any]]:
        rows = await self.store.read(kiosk_queries.list_paired_kiosks)
        discovered = {k.peer_id for k in self._pairable()}
        return [
            {
                "peer_id": row.peer_id,
                "name": row.name,
                "role": row.role,
                "online": self.net.is_connected(row.peer_id) or row.peer_id in discovered,
                "last_seen_ms": row.last_seen,
                "health": row.health,
                "expires_at_ms": row.expires_at,
                "routines": json.loads(row.routines),
            }
            for row in rows
        ]

    async def _call(self, row: PairedKioskRow, request: ControlRequest) -> ControlReply:
        self.net.add_addrs(row.peer_id, row.addrs)
        try:
            reply = await kiosk_control.call(self.net, row.peer_id, request)
        except (NetError, kiosk_control.ControlError) as error:
            raise KiosksError("unreachable", f"{row.name} is unreachable: {error}") from None
        except kiosk_pair.STREAM_ERRORS as error:
            raise KiosksError(
                "unreachable", f"{row.name} hung up before answering: {error}"
            ) from None
        except trio.TooSlowError:
            raise KiosksError("timeout", f"{row.name} did not answer in time") from None
        health = None
        if (
            isinstance(request, Invoke)
            and request.routine == "status"
            and isinstance(reply, InvokeResult)
        ):
            health = reply.output[:512]
        await self.store.write(
            lambda c: kiosk_queries.mark_kiosk_seen(c, row.peer_id, now_ms(), health)
        )
        if isinstance(reply, ControlRefused):
            if reply.reason is Refusal.NOT_PAIRED:
                log.info("%s no longer honours our grant: %s", row.name, reply.message)
            raise _refusal_error(reply)
        return reply

    async def invoke(self, reference: str, routine: str, args: list[str]) -> dict[str, Any]:
        row = await self.find(reference)
        request = Invoke(
            grant_id=row.grant_id, routine=routine, args=args, device_list=self._device_list()
        )
        reply = await self._call(row, request)
        if not isinstance(reply, InvokeResult):
            raise KiosksError("refused", "the kiosk answered something else than a result")
        return {
            "ok": reply.ok,
            "exit_code": reply.exit_code,
            "output": reply.output,
            "duration_ms": reply.duration_ms,
        }

    async def revoke(self, reference: str, *, forget: bool = False) -> dict[str, bool]:
        """Log out. The kiosk honours it even past the grant's expiry; this node forgets the
        kiosk only once the kiosk confirmed, or said it does not know the grant (gone either
        way). Unreachable: kept, to retry, unless `forget` (a kiosk gone for good)."""
        row = await self.find(reference)
        request = RevokeGrant(grant_id=row.grant_id, device_list=self._device_list())
        try:
            reply = await self._call(row, request)
        except KiosksError as error:
            if forget and error.kind == "unreachable":
                await self._forget(row)
                return {"revoked": False, "forgotten": True}
            if error.reason is not Refusal.NOT_PAIRED:
                raise
            reply = ControlDone()
        if not isinstance(reply, ControlDone):
            raise KiosksError("refused", "the kiosk answered something else than done")
        await self._forget(row)
        return {"revoked": True}

    async def _forget(self, row: PairedKioskRow) -> None:
        await self.store.write(lambda c: kiosk_queries.delete_paired_kiosk(c, row.peer_id))
        self._publish(events.KioskRevoked(at_ms=now_ms(), peer_id=row.peer_id))

    async def _owner_row(self, reference: str) -> PairedKioskRow:
        row = await self.find(reference)
        if row.role != Role.OWNER.value:
            raise KiosksError("refused", f"you are a guest of {row.name}, not its owner")
        return row

    async def guests(self, reference: str) -> list[dict[str, Any]]:
        row = await self._owner_row(reference)
        reply = await self._call(row, ListGuests(grant_id=row.grant_id))
        if not isinstance(reply, GuestList):
            raise KiosksError("refused", "the kiosk answered something else than a list")
        return [
            {
                "identity_id": identity_id_from_public_key(guest.identity_key),
                "name": guest.name,
                "role": guest.role.value,
                "paired_at_ms": guest.paired_at_ms,
            }
            for guest in reply.guests
        ]

    async def remove_guest(self, reference: str, guest: str) -> dict[str, bool]:
        row = await self._owner_row(reference)
        matches = [
            g
            for g in await self.guests(reference)
            if g["role"] == Role.GUEST.value
            and (g["identity_id"].startswith(guest.lower()) or g["name"] == guest)
        ]
        if len(matches) != 1:
            kind = "not_found" if not matches else "invalid"
            raise KiosksError(kind, f"{guest!r} matches {len(matches)} guests of {row.name}")
        identity_key = _identity_key(matches[0]["identity_id"])
        await self._call(row, RemoveGuest(grant_id=row.grant_id, guest_identity_key=identity_key))
        return {"removed": True}

    async def reset(self, reference: str) -> dict[str, bool]:
        row = await self._owner_row(reference)
        await self._call(row, ResetKiosk(grant_id=row.grant_id))
        await self._forget(row)
        return {"reset": True}

    # -- approvals (protocols.kiosk_pair.ApprovalDesk) ----------------------------------------

    async def ask_owner(self, kiosk_peer_id: str, request: ApprovalRequest) -> bool | None:
        row = await self._row_for_peer(kiosk_peer_id)
        if row is None or row.role != Role.OWNER.value or row.grant_id != request.owner_grant_id:
            log.info("an approval request from %s, which this node does not own", kiosk_peer_id)
            return None
        request_id = secrets.token_hex(4)
        record = events.KioskApprovalRequested(
            at_ms=now_ms(),
            request_id=request_id,
            kiosk_peer_id=kiosk_peer_id,
            kiosk_name=row.name,
            person_name=request.person_name,
            person_identity_id=identity_id_from_public_key(request.person_identity_key),
        )
        pending = _PendingApproval(record=record, answered=trio.Event())
        self._approvals[request_id] = pending
        self._publish(record)
        try:
            with trio.move_on_after(APPROVAL_WAIT_SECONDS):
                await pending.answered.wait()
        finally:
            del self._approvals[request_id]
        return pending.accept

    def approvals(self) -> list[events.KioskApprovalRequested]:
        return [pending.record for pending in self._approvals.values()]

    def approve(self, request_id: str, accept: bool) -> dict[str, bool]:
        pending = self._approvals.get(request_id)
        if pending is None:
            raise KiosksError("not_found", f"no pending kiosk approval {request_id!r}")
        pending.accept = accept
        pending.answered.set()
        return {"accepted": accept}


def _identity_key(identity_id: str) -> bytes:
    padded = identity_id.upper() + "=" * (-len(identity_id) % 8)
    return base64.b32decode(padded)
