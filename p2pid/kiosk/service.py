"""The kiosk side of a kiosk node: its codes, who may pair, who may run what, and the log.

A kiosk is a normal p2pid home whose identity is the kiosk. This service shows a pairing QR code
(a KIOSK invite signed by the kiosk's identity) and a short numeric code, both rotated on expiry
and after each pairing; it counts short-code attempts (a fresh code after a few wrong ones, a
lockout after many, per kiosk, whatever PeerIds the attempts come from); it admits the first
person as owner (and the owner's identity again as owner, from any of its devices) and other
persons as guests once the owner's device approves, keeping one grant per person; it serves the
control protocol (invoke, revoke, the owner's operations) and logs every invocation.
"""

from __future__ import annotations

import json
import logging
import math
import os
import secrets
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import msgspec
import trio

from p2pid.contacts import hints_from
from p2pid.crypto.device_list import DeviceListError, VerifiedDeviceList, verify_device_list
from p2pid.crypto.grants import grant_bytes
from p2pid.crypto.identity import IdentityKeys, identity_id_from_public_key
from p2pid.crypto.invites import new_invite
from p2pid.events import now_ms
from p2pid.kiosk.routines import Role as RoutineRole
from p2pid.kiosk.routines import RoutineBook, RoutineError, run_routine
from p2pid.net import NetError
from p2pid.net.host import NetHost
from p2pid.protocols.kiosk_pair import (
    STREAM_ERRORS,
    AdmittedPerson,
    PairProtocolError,
    PairRefusedError,
    request_approval,
)
from p2pid.store import kiosk as kiosk_queries
from p2pid.store.kiosk import CodeLock, InvocationRow, KioskGrantRow
from p2pid.store.trio_store import TrioStore
from p2pid.wire import events
from p2pid.wire.invite import Invite, InviteKind, encode_invite
from p2pid.wire.kiosk import (
    ApprovalRequest,
    ControlDone,
    ControlRefused,
    ControlReply,
    ControlRequest,
    GuestInfo,
    GuestList,
    Invoke,
    InvokeResult,
    ListGuests,
    Refusal,
    RemoveGuest,
    ResetKiosk,
    RevokeGrant,
    Role,
)
from p2pid.wire.records import SignedDeviceList

if TYPE_CHECKING:
    from trio_typing import TaskStatus

log = logging.getLogger(__name__)

# An owner's device that cannot answer an approval request: unreachable, hung up (not a kiosk it
# owns any more, or it stopped), or it broke the protocol. The next device is asked.
_OWNER_DEVICE_GONE: tuple[type[Exception], ...] = (NetError, PairProtocolError, *STREAM_ERRORS)


@dataclass(frozen=True)
class KioskConfig:
    name: str
    routines: RoutineBook | None = None  # built-ins only when None
    code_ttl_s: int = 600
    short_code_digits: int = 6
    attempts_per_code: int = 3
    max_failures: int = 10
    failure_window_s: float = 600.0
    lockout_s: float = 600.0
    approval_timeout_s: float = 120.0


class KioskStatus(msgspec.Struct, kw_only=True):
    name: str
    code: str
    short_code: str
    expires_at: int
    owner: str | None
    persons: list[dict[str, Any]]
    locked_for_s: int


def _refused(reason: Refusal, message: str) -> ControlRefused:
    return ControlRefused(reason=reason, message=message)


class KioskService:
    def __init__(
        self,
        *,
        store: TrioStore,
        net: NetHost,
        keys: IdentityKeys,
        config: KioskConfig,
        publish: Callable[[events.Event], None],
        addrs: Callable[[], list[str]],
        clock_ms: Callable[[], int] = now_ms,
    ) -> None:
        self.store = store
        self.net = net
        self.keys = keys
        self.config = config
        self.book = config.routines or RoutineBook.builtins_only()
        self._publish = publish
        self._addrs = addrs
        self._clock_ms = clock_ms
        self.own_identity_key = keys.identity_public_key
        self.started_at = time.monotonic()
        self._invite: Invite | None = None
        self._code = ""
        self._short_code = ""
        self._code_attempts = 0
        # Wrong short-code attempts (times, ms) and the end of a lockout (ms), kept in the store
        # too (`kiosk_code_lock`) so that a restart does not lift a lock.
        self._failures: deque[int] = deque()
        self._locked_until = 0
        self._code_lock_write = trio.Lock()
        self._has_owner = False
        self._rotate_now = trio.Event()
        self._admit_lock = trio.Lock()

    @property
    def kiosk_name(self) -> str:
        return self.config.name

    def now_ms(self) -> int:
        return self._clock_ms()

    # -- codes -----------------------------------------------------------------------------

    async def run(self, *, task_status: TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Show fresh codes now and whenever they expire or someone paired."""
        self._has_owner = await self.store.read(kiosk_queries.owner_grant) is not None
        saved = await self.store.read(kiosk_queries.load_code_lock)
        self._failures = deque(saved.failures)
        self._locked_until = saved.locked_until
        self._rotate()
        task_status.started()
        while True:
            assert self._invite is not None
            with trio.move_on_after(max(0.0, self._invite.expires_at - time.time())):
                await self._rotate_now.wait()
            self._rotate_now = trio.Event()
            self._rotate()

    def _rotate(self, short_code_only: bool = False) -> None:
        if not short_code_only or self._invite is None:
            self._invite = new_invite(
                InviteKind.KIOSK,
                self.keys.identity_signing_key,
                self.keys.device_public_key,
                hints_from(self._addrs()),
                self.config.code_ttl_s,
                self.config.name,
                int(time.time()),
            )
            self._code = encode_invite(self._invite)
        digits = self.config.short_code_digits
        self._short_code = f"{secrets.randbelow(10**digits):0{digits}d}"
        self._code_attempts = 0
        self._publish(
            events.KioskCode(
                at_ms=now_ms(),
                code=self._code,
                short_code=self._short_code,
                expires_at=self._invite.expires_at,
            )
        )

    def rotate_soon(self) -> None:
        self._rotate_now.set()

    # -- the pairing desk (protocols.kiosk_pair.PairingDesk) ----------------------------------

    def has_owner_now(self) -> bool:
        return self._has_owner

    def locked_for(self) -> float:
        return max(0.0, (self._locked_until - self.now_ms()) / 1000)

    async def begin_code_attempt(self) -> str:
        now = self.now_ms()
        locked_for = (self._locked_until - now) / 1000
        if locked_for > 0:
            raise PairRefusedError(
                Refusal.LOCKED,
                f"short-code pairing is locked after too many wrong codes, "
                f"try again in {math.ceil(locked_for)} s (or scan the QR code)",
            )
        window_ms = self.config.failure_window_s * 1000
        while self._failures and self._failures[0] <= now - window_ms:
            self._failures.popleft()
        code = self._short_code
        self._failures.append(now)  # a failure until its confirmation checks out
        self._code_attempts += 1
        if len(self._failures) >= self.config.max_failures:
            self._locked_until = now + round(self.config.lockout_s * 1000)
            log.warning("short-code pairing locked for %s s", self.config.lockout_s)
        if self._code_attempts >= self.config.attempts_per_code:
            self._rotate(short_code_only=True)
        await self._save_code_lock()  # stored before the challenge reveals anything
        return code

    async def code_attempt_succeeded(self) -> None:
        if self._failures:
            self._failures.pop()
            await self._save_code_lock()

    async def _save_code_lock(self) -> None:
        async with self._code_lock_write:
            # Taken once the lock is held: the last write stores the latest state.
            state = CodeLock(failures=tuple(self._failures), locked_until=self._locked_until)
            await self.store.write(lambda c: kiosk_queries.save_code_lock(c, state))

    def invite_secret(self, invite_id: bytes) -> bytes:
        invite = self._invite
        if invite is None or invite.invite_id != invite_id:
            raise PairRefusedError(
                Refusal.UNKNOWN_CODE,
                "this kiosk code is no longer shown (it was used or has expired): scan the new one",
            )
        if time.time() >= invite.expires_at:
            raise PairRefusedError(Refusal.EXPIRED, "this kiosk code has expired")
        return invite.secret

    async def admit(self, person: AdmittedPerson) -> tuple[Role, list[dict[str, object]]]:
        """The kiosk decides the role from the identity: the first person, or the owner's
        identity from any of its devices, is the owner; anyone else is a guest once the owner
        approves. The grant's role is only what the person asked for. A person's new grant
        replaces (and revokes for good) their earlier one, and their device list is kept only
        if it is not older than the one held."""
        async with self._admit_lock:
            grant = person.grant.body
            if await self.store.read(lambda c: kiosk_queries.is_revoked(c, grant.grant_id)):
                raise PairRefusedError(Refusal.BAD_GRANT, "this grant was revoked: sign a new one")
            owner = await self.store.read(kiosk_queries.owner_grant)
            is_owner = owner is None or owner.identity_key == grant.identity_key
            expected = Role.OWNER if is_owner else Role.GUEST
            held = await self.store.read(
                lambda c: kiosk_queries.grant_for_identity(c, grant.identity_key)
            )
            version = person.devices.body.version
            if held is not None and version < held.device_list_version:
                raise PairRefusedError(
                    Refusal.BAD_GRANT,
                    f"this device's list of your devices (version {version}) is older than the "
                    f"one the kiosk holds (version {held.device_list_version}): let this device "
                    "catch up with your other devices, or pair from one of them",
                )
            if owner is not None and not is_owner:
                await self._ask_owner(owner, person)
            row = KioskGrantRow(
                grant_id=grant.grant_id,
                identity_key=grant.identity_key,
                role=expected.value,
                display_name=person.display_name,
                grant=grant_bytes(person.grant.signed),
                device_list=msgspec.msgpack.encode(person.devices.signed),
                device_list_version=person.devices.body.version,
                addrs=tuple(f"{addr}/p2p/{person.peer_id}" for addr in person.addrs[:8]),
                paired_at=self.now_ms(),
                expires_at=grant.expires_at_ms,
            )
            await self.store.write(lambda c: kiosk_queries.save_grant(c, row))
            self._has_owner = True
        self.rotate_soon()
        self._publish(
            events.KioskPersonPaired(
                at_ms=now_ms(),
                identity_id=identity_id_from_public_key(grant.identity_key),
                name=person.display_name,
                role=expected.value,
            )
        )
        return expected, self.book.describe(RoutineRole(expected.value))

    async def _ask_owner(self, owner: KioskGrantRow, person: AdmittedPerson) -> None:
        request = ApprovalRequest(
            owner_grant_id=owner.grant_id,
            person_name=person.display_name,
            person_identity_key=person.identity_key,
        )
        for addr in owner.addrs:
            transport, _, peer_id = addr.rpartition("/p2p/")
            self.net.add_addrs(peer_id, [transport])
        devices = _devices(owner)
        peer_ids = devices.peer_ids() if devices else []
        timeout = self.config.approval_timeout_s
        for peer_id in peer_ids:
            try:
                accepted = await request_approval(self.net, peer_id, request, timeout)
            except trio.TooSlowError:
                raise PairRefusedError(
                    Refusal.NOT_APPROVED,
                    f"the kiosk's owner did not answer within {timeout:g} s",
                ) from None
            except _OWNER_DEVICE_GONE as error:
                # the device hung up: not a kiosk it owns (any more), or it stopped
                log.info("owner device %s: %s", peer_id, error)
                continue
            if not accepted:
                raise PairRefusedError(Refusal.NOT_APPROVED, "the kiosk's owner said no")
            return
        raise PairRefusedError(
            Refusal.OWNER_UNREACHABLE,
            "the kiosk's owner is offline, so no one can approve a new guest: "
            "ask them to start p2pid and retry",
        )

    # -- the control desk (protocols.kiosk_control.ControlDesk) -----------------------------

    async def handle(self, peer_id: str, request: ControlRequest) -> ControlReply:
        row, refusal = await self._grant_for(peer_id, request)
        if isinstance(request, Invoke):
            reply = await self._invoke(peer_id, row, request) if refusal is None else refusal
            await self._log(peer_id, row, request, reply)
            return reply
        if refusal is not None or row is None:
            return refusal or _refused(Refusal.NOT_PAIRED, "not paired")
        if isinstance(request, RevokeGrant):
            await self._revoke([row.grant_id])
            log.info("%s logged out (%s)", row.display_name, row.role)
            return ControlDone()
        if row.role != Role.OWNER.value:
            return _refused(Refusal.NOT_ALLOWED, "only the kiosk's owner can do that")
        if isinstance(request, ListGuests):
            persons = await self.store.read(kiosk_queries.list_grants)
            return GuestList(
                guests=[
                    GuestInfo(
                        identity_key=p.identity_key,
                        name=p.display_name,
                        role=Role(p.role),
                        paired_at_ms=p.paired_at,
                    )
                    for p in persons
                ]
            )
        if isinstance(request, RemoveGuest):
            guests = [
                p
                for p in await self.store.read(kiosk_queries.list_grants)
                if p.identity_key == request.guest_identity_key and p.role == Role.GUEST.value
            ]
            if not guests:
                return _refused(Refusal.NOT_FOUND, "no such guest on this kiosk")
            await self._revoke([guest.grant_id for guest in guests])
            return ControlDone()
        assert isinstance(request, ResetKiosk)
        await self.reset()
        return ControlDone()

    async def _grant_for(
        self, peer_id: str, request: ControlRequest
    ) -> tuple[KioskGrantRow | None, ControlRefused | None]:
        grant_id = request.grant_id
        not_paired = _refused(
            Refusal.NOT_PAIRED,
            "this kiosk does not know this grant (revoked, reset or never paired)",
        )
        if len(grant_id) != 16:
            return None, not_paired
        row = await self.store.read(lambda c: kiosk_queries.get_grant(c, grant_id))
        if row is None or await self.store.read(lambda c: kiosk_queries.is_revoked(c, grant_id)):
            return None, not_paired
        # Who speaks first: only a device on the person's newest signed list acts on the grant.
        devices = _devices(row)
        newer = request.device_list if isinstance(request, (Invoke, RevokeGrant)) else None
        if newer is not None:
            devices = await self._take_newer_devices(row, newer) or devices
        if devices is None or devices.device_for_peer(peer_id) is None:
            return row, _refused(
                Refusal.UNKNOWN_DEVICE, "this device is not one of the paired person's devices"
            )
        # Logging out needs no live grant, only one of the person's devices.
        if not isinstance(request, RevokeGrant) and self.now_ms() >= row.expires_at:
            return row, _refused(Refusal.GRANT_EXPIRED, "the grant has expired: pair again")
        return row, None

    async def _take_newer_devices(
        self, row: KioskGrantRow, signed: SignedDeviceList
    ) -> VerifiedDeviceList | None:
        """The list, stored, if it is the person's and newer than the one held; else None
        (an older or equal list is never taken: the one held decides)."""
        try:
            devices = verify_device_list(signed, row.identity_key)
        except DeviceListError:
            return None
        if devices.body.version <= row.device_list_version:
            return None
        encoded = msgspec.msgpack.encode(signed)
        await self.store.write(
            lambda c: kiosk_queries.update_device_list(
                c, row.grant_id, encoded, devices.body.version
            )
        )
        return devices

    async def _invoke(
        self, peer_id: str, row: KioskGrantRow | None, request: Invoke
    ) -> ControlReply:
        assert row is not None
        try:
            routine = self.book.get(request.routine)
        except RoutineError as error:
            return _refused(Refusal.UNKNOWN_ROUTINE, str(error))
        if not routine.allows(RoutineRole(row.role)):
            roles = " or ".join(sorted(str(role) for role in routine.roles))
            return _refused(
                Refusal.NOT_ALLOWED, f"{routine.name!r} is for the {roles} only, not a {row.role}"
            )
        try:
            result = await run_routine(
                routine, request.args, builtins=self._builtins(row.display_name)
            )
        except RoutineError as error:
            return _refused(Refusal.BAD_ARGS, str(error))
        return InvokeResult(
            ok=result.ok,
            exit_code=result.exit_code,
            output=result.output,
            duration_ms=result.duration_ms,
        )

    def _builtins(self, from_name: str) -> dict[str, Callable[[list[str]], Any]]:
        async def status(_args: list[str]) -> str:
            return await self.health()

        async def show_message(args: list[str]) -> str:
            text = args[0] if args else ""
            self._publish(events.KioskMessage(at_ms=now_ms(), text=text, from_name=from_name))
            return f"shown on {self.config.name}"

        return {"status": status, "show-message": show_message}

    async def health(self) -> str:
        persons = await self.store.read(kiosk_queries.list_grants)
        owner = next((p.display_name for p in persons if p.role == Role.OWNER.value), None)
        return json.dumps(
            {
                "name": self.config.name,
                "ok": True,
                "uptime_s": round(time.monotonic() - self.started_at),
                "owner": owner,
                "guests": sum(p.role == Role.GUEST.value for p in persons),
                "pid": os.getpid(),
            }
        )

    async def _log(
        self, peer_id: str, row: KioskGrantRow | None, request: Invoke, reply: ControlReply
    ) -> None:
        refused = reply if isinstance(reply, ControlRefused) else None
        result = reply if isinstance(reply, InvokeResult) else None
        entry = InvocationRow(
            at=now_ms(),
            grant_id=request.grant_id if row is not None else None,
            identity_key=row.identity_key if row is not None else None,
            peer_id=peer_id,
            routine=request.routine,
            args=tuple(request.args),
            ok=result.ok if result else False,
            exit_code=result.exit_code if result else None,
            output=result.output if result else (refused.message if refused else ""),
            duration_ms=result.duration_ms if result else 0.0,
            refused=refused.reason.value if refused else None,
        )
        await self.store.write(lambda c: kiosk_queries.log_invocation(c, entry))
        log.info(
            "invocation by %s: %s %r -> %s",
            row.display_name if row else peer_id,
            request.routine,
            request.args,
            entry.refused or ("ok" if entry.ok else "failed"),
        )

    async def _revoke(self, grant_ids: list[bytes]) -> None:
        await self.store.write(lambda c: kiosk_queries.revoke_grants(c, grant_ids, now_ms()))
        self._has_owner = await self.store.read(kiosk_queries.owner_grant) is not None

    async def reset(self) -> None:
        """Forget the owner and the guests (their grants are refused for good), new codes."""
        persons = await self.store.read(kiosk_queries.list_grants)
        await self._revoke([p.grant_id for p in persons])
        self.rotate_soon()

    # -- for the kiosk's own RPC clients -----------------------------------------------------

    async def status(self) -> KioskStatus:
        assert self._invite is not None
        persons = await self.store.read(kiosk_queries.list_grants)
        return KioskStatus(
            name=self.config.name,
            code=self._code,
            short_code=self._short_code,
            expires_at=self._invite.expires_at,
            owner=next((p.display_name for p in persons if p.role == Role.OWNER.value), None),
            persons=[
                {
                    "identity_id": identity_id_from_public_key(p.identity_key),
                    "name": p.display_name,
                    "role": p.role,
                    "paired_at_ms": p.paired_at,
                    "expires_at_ms": p.expires_at,
                }
                for p in persons
            ],
            locked_for_s=math.ceil(self.locked_for()),
        )

    async def invocations(self, limit: int) -> list[dict[str, Any]]:
        rows = await self.store.read(lambda c: kiosk_queries.list_invocations(c, limit))
        return [
            {
                "at_ms": r.at,
                "identity_id": identity_id_from_public_key(r.identity_key)
                if r.identity_key
                else None,
                "peer_id": r.peer_id,
                "routine": r.routine,
                "args": list(r.args),
                "ok": r.ok,
                "exit_code": r.exit_code,
                "output": r.output,
                "refused": r.refused,
            }
            for r in rows
        ]


def _devices(row: KioskGrantRow) -> VerifiedDeviceList | None:
    try:
        signed = msgspec.msgpack.decode(row.device_list, type=SignedDeviceList)
        return verify_device_list(signed, row.identity_key)
    except (msgspec.DecodeError, DeviceListError):
        return None
