"""SAS verification of contacts: the node-side half of `/p2pid/sas/1`.

A contact added by a contact request is unverified: its identity key came without proof. Two
people compare seven emoji (or three numbers) on their devices; when both say they match and
each side's MAC checks out, each marks the other verified ('sas').

State lives in memory only (a session per verification, with trio Events the RPC calls wait on):
a daemon restart drops unfinished verifications, and the people simply start again. One
verification per contact at a time; only contacts (not blocked) can ask.

Run `run()` in the node's nursery (`await nursery.start(verifications.run)`) before `start()`:
an outgoing verification outlives the RPC call that starts it.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import trio

from p2pid.crypto.identity import IdentityKeys, identity_id_from_public_key
from p2pid.crypto.sas import SasCode, SasParty
from p2pid.events import now_ms
from p2pid.net import NetError
from p2pid.net.host import NetHost, Stream, remote_peer_id
from p2pid.protocols.framed import FramedStream
from p2pid.protocols.verification import (
    STEP_TIMEOUT_SECONDS,
    VERIFICATION_TIMEOUT_SECONDS,
    Decision,
    Initiator,
    Responder,
    VerificationProtocolError,
    VerificationResult,
    new_verification_id,
    receive_start,
    refuse,
    verify_as_initiator,
    verify_as_responder,
)
from p2pid.store import contacts as contact_queries
from p2pid.store.contacts import ContactRow
from p2pid.store.trio_store import TrioStore
from p2pid.wire.framing import FrameError
from p2pid.wire.verification import (
    MAX_FRAME_BYTES,
    PROTOCOL_ID,
    CancelReason,
    VerificationDone,
    VerificationKeysReady,
    VerificationOutcome,
    VerificationRequested,
    VerificationState,
    VerificationView,
)

if TYPE_CHECKING:
    # As in net/mdns.py: trio-typing's stubs (pulled in by libp2p) lack trio.TaskStatus.
    from trio_typing import TaskStatus

log = logging.getLogger(__name__)

FINISHED_KEPT = 64  # finished verifications remembered, so a late confirm/cancel gets the outcome
DECISION_BUFFER = 4

_FAILURE_TEXT = {
    CancelReason.MISMATCH: "the codes did not match",
    CancelReason.USER_CANCELLED: "the verification was declined or cancelled",
    CancelReason.TIMEOUT: "the verification timed out",
    CancelReason.BUSY: "a verification with this contact is already running",
    CancelReason.BAD_COMMITMENT: "the other side's key did not match its commitment",
    CancelReason.BAD_MAC: "the two sides do not hold the same keys for each other",
    CancelReason.PROTOCOL_ERROR: "the other side broke the protocol",
    CancelReason.DISCONNECTED: "the connection was lost",
}


_FAILURE_KIND = {CancelReason.TIMEOUT: "timeout", CancelReason.DISCONNECTED: "unreachable"}


class VerificationError(Exception):
    """A verification request that cannot be carried out; `kind` maps to an RPC error code:
    invalid, not_found, unreachable, refused (the other side or its person said no), timeout."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


def failure_text(reason: CancelReason | None, by_peer: bool) -> str:
    text = _FAILURE_TEXT.get(reason, "the verification failed") if reason else "not verified"
    return f"{text} (by the other side)" if by_peer else text


@dataclass(eq=False)
class _Session:
    """One verification, as the node and its RPC callers see it. The driver's Observer."""

    verification_id: bytes
    identity_key: bytes
    name: str
    incoming: bool
    publish: Callable[[Any], None]
    peer_id: str | None = None
    state: VerificationState = VerificationState.WAITING
    code: SasCode | None = None
    peer_confirmed_: bool = False
    outcome: VerificationOutcome | None = None
    started_at_ms: int = field(default_factory=now_ms)
    progressed: trio.Event = field(default_factory=trio.Event)  # the code is ready, or it ended
    finished: trio.Event = field(default_factory=trio.Event)

    decisions: trio.MemorySendChannel[Decision] = field(init=False)
    decisions_in: trio.MemoryReceiveChannel[Decision] = field(init=False)

    def __post_init__(self) -> None:
        self.decisions, self.decisions_in = trio.open_memory_channel[Decision](DECISION_BUFFER)

    @property
    def id_hex(self) -> str:
        return self.verification_id.hex()

    @property
    def identity_id(self) -> str:
        return identity_id_from_public_key(self.identity_key)

    def decide(self, decision: Decision) -> None:
        try:
            self.decisions.send_nowait(decision)
        except (trio.WouldBlock, trio.BrokenResourceError, trio.ClosedResourceError):
            raise VerificationError("invalid", "this verification takes no more answers") from None

    # -- Observer ------------------------------------------------------------------------------

    def keys_ready(self, code: SasCode) -> None:
        self.code = code
        self.state = VerificationState.KEYS_READY
        self.publish(
            VerificationKeysReady(
                at_ms=now_ms(),
                verification_id=self.id_hex,
                identity_id=self.identity_id,
                name=self.name,
                incoming=self.incoming,
                emoji=[(symbol, name) for symbol, name in code.emoji],
                decimals=list(code.decimals),
            )
        )
        self.progressed.set()

    def peer_confirmed(self) -> None:
        self.peer_confirmed_ = True

    # -- views ---------------------------------------------------------------------------------

    def view(self) -> VerificationView:
        return VerificationView(
            verification_id=self.id_hex,
            identity_id=self.identity_id,
            name=self.name,
            incoming=self.incoming,
            state=self.state,
            emoji=[] if self.code is None else [(s, n) for s, n in self.code.emoji],
            decimals=[] if self.code is None else list(self.code.decimals),
            peer_confirmed=self.peer_confirmed_,
            started_at_ms=self.started_at_ms,
        )

    def failure(self) -> VerificationError:
        """Why a verification that ended before its code was ready did not happen."""
        reason = self.outcome.reason if self.outcome else None
        by_peer = self.outcome.by_peer if self.outcome else False
        kind = _FAILURE_KIND.get(reason, "refused") if reason else "refused"
        return VerificationError(
            kind, f"verification with {self.name}: {failure_text(reason, by_peer)}"
        )


class Verifications:
    """SAS verifications with contacts, for the node to expose over RPC."""

    def __init__(
        self,
        *,
        store: TrioStore,
        net: NetHost,
        keys: IdentityKeys,
        publish: Callable[[Any], None],
        timeout_seconds: float = VERIFICATION_TIMEOUT_SECONDS,
    ) -> None:
        self.store = store
        self.net = net
        self.keys = keys
        self.publish = publish
        self.timeout_seconds = timeout_seconds
        self._sessions: dict[bytes, _Session] = {}  # running, by verification id
        self._active: dict[bytes, _Session] = {}  # running, by the contact's identity key
        self._finished: OrderedDict[bytes, _Session] = OrderedDict()
        self._nursery: trio.Nursery | None = None
        # Called with the contact's identity key once a verification is stored.
        self.on_verified: list[Callable[[bytes], None]] = []

    @property
    def _us(self) -> SasParty:
        return SasParty(identity_key=self.keys.identity_public_key, peer_id=self.net.peer_id)

    async def run(self, *, task_status: TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Own the tasks of outgoing verifications until cancelled (with the node)."""
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                task_status.started()
                await trio.sleep_forever()
        finally:
            self._nursery = None

    # -- the RPC side --------------------------------------------------------------------------

    async def start(self, identity_key: bytes) -> VerificationView:
        """Ask a contact to verify; returns once its person accepted and the code is ready.

        Raises VerificationError: not a contact, blocked, busy, unreachable, declined, timeout.
        """
        nursery = self._nursery
        if nursery is None:
            raise VerificationError("unreachable", "verifications are not running")
        contact = await self.store.read(
            lambda conn: contact_queries.get_contact(conn, identity_key)
        )
        if contact is None:
            raise VerificationError("not_found", "no such contact")
        if contact.blocked:
            raise VerificationError("invalid", f"{contact.name} is blocked")
        if identity_key in self._active:
            raise VerificationError(
                "invalid", f"a verification with {contact.name} is already running"
            )
        deadline = trio.current_time() + self.timeout_seconds
        session = _Session(
            verification_id=new_verification_id(),
            identity_key=identity_key,
            name=contact.name,
            incoming=False,
            publish=self.publish,
        )
        self._register(session)
        try:
            stream, peer_id = await self._open_stream(contact)
        except BaseException:
            self._end(session, VerificationResult(False, CancelReason.DISCONNECTED))
            raise
        session.peer_id = peer_id
        machine = Initiator(
            we=self._us,
            they=SasParty(identity_key, peer_id),
            verification_id=session.verification_id,
        )
        nursery.start_soon(self._run_outgoing, session, stream, machine, deadline)
        try:
            await session.progressed.wait()
        except BaseException:
            # The caller gave up waiting (a client went away): so does the verification, or
            # the contact would stay busy until the other person answers or it times out.
            if session.outcome is None:
                session.decide(Decision.CANCEL)
            raise
        if session.code is None:
            raise session.failure()
        return session.view()

    def pending(self) -> list[VerificationView]:
        """Incoming verifications not finished yet: to accept, or to confirm."""
        return [s.view() for s in self._sessions.values() if s.incoming]

    def view(self, verification_id: str) -> VerificationView:
        return self._session(verification_id).view()

    async def accept(self, verification_id: str) -> VerificationView:
        """Accept an incoming verification; returns once the code is ready."""
        session = self._session(verification_id)
        if not session.incoming or session.state is not VerificationState.REQUESTED:
            raise VerificationError("invalid", "this verification is not waiting to be accepted")
        session.state = VerificationState.WAITING
        session.decide(Decision.ACCEPT)
        await session.progressed.wait()
        if session.code is None:
            raise session.failure()
        return session.view()

    async def confirm(self, verification_id: str, matches: bool) -> VerificationOutcome:
        """This person compared the codes. Returns once it is over: both confirmed and the other
        side's MAC checked (verified), or cancelled (a mismatch, here or there)."""
        session = self._session(verification_id)
        if session.outcome is None:
            if session.state is VerificationState.CONFIRMED and matches:
                pass  # a retried confirmation: wait for the same end
            elif session.state is not VerificationState.KEYS_READY:
                raise VerificationError("invalid", "there is no code waiting for a confirmation")
            else:
                if matches:
                    session.state = VerificationState.CONFIRMED
                session.decide(Decision.MATCH if matches else Decision.MISMATCH)
        await session.finished.wait()
        assert session.outcome is not None
        return session.outcome

    async def cancel(self, verification_id: str) -> VerificationOutcome:
        """Decline an incoming request, or give up on a running verification."""
        session = self._session(verification_id)
        if session.outcome is None:
            session.decide(Decision.CANCEL)
        await session.finished.wait()
        assert session.outcome is not None
        return session.outcome

    # -- the network side ----------------------------------------------------------------------

    async def serve(self, stream: Stream) -> None:
        """The `/p2pid/sas/1` stream handler (registered guarded by NetHost)."""
        peer_id = remote_peer_id(stream)
        contact = await self.store.read(
            lambda conn: contact_queries.contact_for_peer(conn, peer_id)
        )
        if contact is None or contact.blocked:
            log.info("dropped a SAS verification from %s: not a contact", peer_id)
            await stream.reset()
            return
        framed = FramedStream(stream, MAX_FRAME_BYTES)
        machine = Responder(we=self._us, they=SasParty(contact.identity_key, peer_id))
        try:
            requested = await receive_start(framed, machine)
        except (VerificationProtocolError, FrameError, trio.TooSlowError) as error:
            log.info("refused a SAS start from %s: %s", peer_id, error)
            await refuse(framed, machine)
            return
        deadline = trio.current_time() + self.timeout_seconds
        vid = requested.verification_id
        if contact.identity_key in self._active or vid in self._sessions or vid in self._finished:
            log.info("refused a SAS verification from %s: busy", peer_id)
            await refuse(framed, machine, CancelReason.BUSY)
            return
        session = _Session(
            verification_id=vid,
            identity_key=contact.identity_key,
            name=contact.name,
            incoming=True,
            publish=self.publish,
            peer_id=peer_id,
            state=VerificationState.REQUESTED,
        )
        self._register(session)
        self.publish(
            VerificationRequested(
                at_ms=now_ms(),
                verification_id=session.id_hex,
                identity_id=session.identity_id,
                name=session.name,
            )
        )
        result = VerificationResult(False, CancelReason.PROTOCOL_ERROR)
        try:
            result = await verify_as_responder(
                framed, machine, session.decisions_in, session, deadline=deadline
            )
        finally:
            await self._finish(session, result)

    # -- internals -----------------------------------------------------------------------------

    def _session(self, verification_id: str) -> _Session:
        try:
            raw = bytes.fromhex(verification_id)
        except ValueError:
            raise VerificationError(
                "invalid", f"{verification_id!r} is not a verification id"
            ) from None
        session = self._sessions.get(raw) or self._finished.get(raw)
        if session is None:
            raise VerificationError("not_found", f"no verification {verification_id}")
        return session

    def _register(self, session: _Session) -> None:
        self._sessions[session.verification_id] = session
        self._active[session.identity_key] = session

    async def _open_stream(self, contact: ContactRow) -> tuple[Stream, str]:
        """A stream to one of the contact's devices, connected ones first."""
        devices = sorted(contact.devices, key=lambda d: not self.net.is_connected(d.peer_id))
        if not devices:
            raise VerificationError("unreachable", f"{contact.name} has no known device")
        errors: list[str] = []
        for device in devices:
            try:
                return await self.net.new_stream(device.peer_id, [PROTOCOL_ID]), device.peer_id
            except NetError as error:
                errors.append(str(error))
        raise VerificationError(
            "unreachable", f"cannot reach any device of {contact.name}: {'; '.join(errors)}"
        )

    async def _run_outgoing(
        self, session: _Session, stream: Stream, machine: Initiator, deadline: float
    ) -> None:
        result = VerificationResult(False, CancelReason.PROTOCOL_ERROR)
        try:
            result = await verify_as_initiator(
                stream, machine, session.decisions_in, session, deadline=deadline
            )
        except Exception:
            log.exception("SAS verification with %s failed", session.peer_id)
            with trio.move_on_after(STEP_TIMEOUT_SECONDS):
                try:
                    await stream.reset()
                except Exception as error:
                    log.debug("resetting a SAS stream failed: %r", error)
        finally:
            await self._finish(session, result)

    async def _finish(self, session: _Session, result: VerificationResult) -> None:
        """Store a success (commit first), then tell the callers and the event subscribers."""
        try:
            if result.verified:
                stored = await self.store.write(
                    lambda conn: contact_queries.set_verified(
                        conn, session.identity_key, "sas", now_ms()
                    )
                )
                if not stored:
                    log.info("contact %s was removed during its verification", session.name)
                    result = VerificationResult(False, CancelReason.USER_CANCELLED)
                for listener in self.on_verified if stored else ():
                    listener(session.identity_key)
        except Exception:  # not stored, so not verified; the tasks around us carry on
            log.exception("could not store the verification of %s", session.name)
            result = VerificationResult(False, None)
        finally:
            self._end(session, result)

    def _end(self, session: _Session, result: VerificationResult) -> None:
        session.outcome = VerificationOutcome(
            verification_id=session.id_hex,
            identity_id=session.identity_id,
            name=session.name,
            verified=result.verified,
            reason=result.reason,
            by_peer=result.by_peer,
        )
        session.state = (
            VerificationState.VERIFIED if result.verified else VerificationState.CANCELLED
        )
        session.decisions.close()
        self._sessions.pop(session.verification_id, None)
        if self._active.get(session.identity_key) is session:
            del self._active[session.identity_key]
        self._finished[session.verification_id] = session
        while len(self._finished) > FINISHED_KEPT:
            self._finished.popitem(last=False)
        log.info(
            "SAS verification with %s: %s",
            session.name,
            "verified" if result.verified else failure_text(result.reason, result.by_peer),
        )
        self.publish(
            VerificationDone(
                at_ms=now_ms(),
                verification_id=session.id_hex,
                identity_id=session.identity_id,
                name=session.name,
                verified=result.verified,
                reason=result.reason,
                by_peer=result.by_peer,
            )
        )
        session.progressed.set()
        session.finished.set()
