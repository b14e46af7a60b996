"""SAS verification (`/p2pid/sas/1`): two people compare a short code to verify each other.

For contacts not added in person (a contact request): each side then holds the other's identity
key without proof. Noise has authenticated both PeerIds; the code shows both people hold the same
identity keys and PeerIds for each other (see `p2pid.crypto.sas`).

    initiator                                            responder
      | -- start(id, commitment to its SAS key) -----------> |  a contact? else dropped;
      |                                                      |  busy? cancel(busy)
      |                                                      |  waits for its person to accept
      | <-------------------- accept(id, responder SAS key) |
      | -- key(id, initiator SAS key) ---------------------> |  checks the commitment
      |   both show the code (7 emoji, 3 numbers); each person says match or not
      | -- mac(id, MAC) | cancel(id, mismatch) ------------> |
      | <------------ mac(id, MAC) | cancel(id, mismatch) -- |
      |   a side whose person confirmed and which holds the other's valid MAC is done: verified

`Initiator` and `Responder` are sans-IO: bytes in, events out, bytes to send queued in
`data_to_send()`. A cancel, from either side, ends it with nothing verified. The trio drivers below
add the stream, the people's decisions and the deadline.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from enum import Enum
from typing import Protocol

import msgspec
import trio

from p2pid.crypto.sas import SasCode, SasError, SasExchange, SasParty, commitment_matches
from p2pid.net.host import Stream
from p2pid.protocols.framed import FramedStream
from p2pid.wire.framing import FrameTooLarge
from p2pid.wire.verification import (
    MAX_FRAME_BYTES,
    VERIFICATION_ID_BYTES,
    CancelReason,
    SasAccept,
    SasCancel,
    SasKey,
    SasMac,
    SasMessage,
    SasStart,
    decode_message,
    encode_message,
)

log = logging.getLogger(__name__)

VERIFICATION_TIMEOUT_SECONDS = 300.0  # people read and compare codes: generous
STEP_TIMEOUT_SECONDS = 15.0  # a machine's answer (the start after the stream opens, a close)


class VerificationProtocolError(Exception):
    """The other side broke the protocol: malformed, out of order, or for another verification."""


class VerificationStateError(Exception):
    """This side asked for a step its state does not allow (accept twice, confirm too early...)."""


class Phase(Enum):
    NEW = "new"
    SENT_START = "sent_start"  # initiator: waiting for accept
    REQUESTED = "requested"  # responder: waiting for its person to accept
    SENT_ACCEPT = "sent_accept"  # responder: waiting for the initiator's key
    KEYS_READY = "keys_ready"  # both: the code is shown, waiting for the people and the MACs
    OVER = "over"


@dataclass(frozen=True)
class VerificationResult:
    verified: bool
    reason: CancelReason | None = None  # why not, when not verified
    by_peer: bool = False  # the other side cancelled


# -- what the machines report ------------------------------------------------------------------


@dataclass(frozen=True)
class Requested:
    """Responder: a contact's device asks to verify."""

    verification_id: bytes


@dataclass(frozen=True)
class KeysReady:
    """Both: show this code to the person."""

    code: SasCode


@dataclass(frozen=True)
class PeerConfirmed:
    """The other person said the codes match (their MAC is held until ours confirms too)."""


@dataclass(frozen=True)
class Finished:
    result: VerificationResult


MachineEvent = Requested | KeysReady | PeerConfirmed | Finished


def new_verification_id() -> bytes:
    return os.urandom(VERIFICATION_ID_BYTES)


class _SasMachine:
    """What both roles share: the code, the people's confirmations, the MACs, cancelling."""

    def __init__(self, *, we: SasParty, they: SasParty) -> None:
        self.we = we
        self.they = they
        self.phase = Phase.NEW
        self.result: VerificationResult | None = None
        self.confirmed = False  # our person said the codes match; our MAC is queued
        self._exchange: SasExchange | None = None
        self._their_mac: str | None = None
        self._outbox: list[bytes] = []

    # -- state ---------------------------------------------------------------------------------

    @property
    def verification_id(self) -> bytes | None:
        return None if self._exchange is None else self._exchange.verification_id

    @property
    def code(self) -> SasCode | None:
        return None if self._exchange is None else self._exchange.code

    @property
    def peer_confirmed(self) -> bool:
        return self._their_mac is not None

    @property
    def finished(self) -> bool:
        return self.result is not None

    def data_to_send(self) -> list[bytes]:
        """Frames to send, in order; each is returned once."""
        frames, self._outbox = self._outbox, []
        return frames

    # -- input from the other side -------------------------------------------------------------

    def receive(self, frame: bytes) -> MachineEvent | None:
        """Feed one frame. Raises VerificationProtocolError (the verification is then over,
        with a cancel queued when there is an id to cancel)."""
        if self.result is not None:
            raise VerificationProtocolError("the verification is already over")
        try:
            message = decode_message(frame)
        except (msgspec.DecodeError, ValueError) as error:
            raise self._protocol_error(f"malformed SAS message: {error}") from None
        if self._exchange is None:
            return self._receive_first(message)
        if message.verification_id != self._exchange.verification_id:
            raise self._protocol_error("a message for another verification")
        if isinstance(message, SasCancel):
            return self._finish(False, message.reason, by_peer=True)
        if isinstance(message, SasMac):
            return self._receive_mac(message)
        return self._receive_step(message)

    def _receive_first(self, message: SasMessage) -> MachineEvent | None:
        raise self._protocol_error(f"unexpected {type(message).__name__}")

    def _receive_step(self, message: SasMessage) -> MachineEvent | None:
        raise self._protocol_error(f"unexpected {type(message).__name__} in {self.phase.value}")

    def _receive_mac(self, message: SasMac) -> MachineEvent | None:
        if self.phase is not Phase.KEYS_READY or self._their_mac is not None:
            raise self._protocol_error(f"unexpected mac in {self.phase.value}")
        self._their_mac = message.mac
        if not self.confirmed:
            return PeerConfirmed()
        return self._check_their_mac()

    def _keys_ready(self, their_public_key: bytes) -> KeysReady:
        assert self._exchange is not None
        try:
            code = self._exchange.establish(their_public_key)
        except SasError as error:
            raise self._protocol_error(str(error)) from None
        self.phase = Phase.KEYS_READY
        return KeysReady(code)

    # -- input from this side's person ---------------------------------------------------------

    def confirm(self, matches: bool) -> MachineEvent | None:
        """Our person compared the codes. A match queues our MAC (and finishes if the other's
        valid MAC is already here); a mismatch cancels."""
        if self.result is not None or self.phase is not Phase.KEYS_READY or self.confirmed:
            raise VerificationStateError("there is no code waiting for a confirmation")
        if not matches:
            return self.cancel(CancelReason.MISMATCH)
        if self._their_mac is not None:
            return self._check_their_mac(send_ours=True)
        self.confirmed = True
        self._send_mac()
        return None

    def cancel(self, reason: CancelReason) -> Finished:
        """End it here, telling the other side why; nothing gets verified."""
        if self.result is not None:
            raise VerificationStateError("the verification is already over")
        if self._exchange is not None:
            self._send(SasCancel(verification_id=self._exchange.verification_id, reason=reason))
        return self._finish(False, reason, by_peer=False)

    def abandon(self, reason: CancelReason) -> Finished:
        """End it without a word (the stream is gone)."""
        if self.result is not None:
            raise VerificationStateError("the verification is already over")
        return self._finish(False, reason, by_peer=False)

    # -- internals -----------------------------------------------------------------------------

    def _check_their_mac(self, *, send_ours: bool = False) -> Finished:
        assert self._exchange is not None and self._their_mac is not None
        try:
            self._exchange.verify_mac(self._their_mac)
        except SasError:
            return self.cancel(CancelReason.BAD_MAC)
        if send_ours:
            self.confirmed = True
            self._send_mac()
        return self._finish(True, None, by_peer=False)

    def _send_mac(self) -> None:
        assert self._exchange is not None
        self._send(SasMac(verification_id=self._exchange.verification_id, mac=self._exchange.mac()))

    def _send(self, message: SasMessage) -> None:
        self._outbox.append(encode_message(message))

    def _finish(self, verified: bool, reason: CancelReason | None, *, by_peer: bool) -> Finished:
        self.phase = Phase.OVER
        self.result = VerificationResult(verified=verified, reason=reason, by_peer=by_peer)
        return Finished(self.result)

    def _protocol_error(self, text: str) -> VerificationProtocolError:
        if self.result is None:
            self.cancel(CancelReason.PROTOCOL_ERROR)
        return VerificationProtocolError(text)


class Initiator(_SasMachine):
    """The side that asks: it draws the id and commits to its SAS key first."""

    def __init__(
        self, *, we: SasParty, they: SasParty, verification_id: bytes | None = None
    ) -> None:
        super().__init__(we=we, they=they)
        self._exchange = SasExchange(
            verification_id or new_verification_id(), we=we, they=they, we_initiate=True
        )

    def start(self) -> None:
        """Queue the start message."""
        if self.phase is not Phase.NEW or self._exchange is None:
            raise VerificationStateError("already started")
        self.phase = Phase.SENT_START
        self._send(
            SasStart(
                verification_id=self._exchange.verification_id,
                commitment=self._exchange.commitment(),
            )
        )

    def _receive_step(self, message: SasMessage) -> MachineEvent | None:
        if self.phase is not Phase.SENT_START or not isinstance(message, SasAccept):
            return super()._receive_step(message)
        ready = self._keys_ready(message.public_key)
        assert self._exchange is not None
        self._send(
            SasKey(
                verification_id=self._exchange.verification_id,
                public_key=self._exchange.public_key,
            )
        )
        return ready


class Responder(_SasMachine):
    """The side asked: its person accepts (or not), then it checks the initiator's commitment."""

    def __init__(self, *, we: SasParty, they: SasParty) -> None:
        super().__init__(we=we, they=they)
        self._commitment: bytes | None = None

    def receive_start(self, frame: bytes) -> Requested:
        """The first frame of the stream, which must be a start."""
        if self.phase is not Phase.NEW:
            raise VerificationStateError("the start was already received")
        event = self.receive(frame)
        assert isinstance(event, Requested)
        return event

    def _receive_first(self, message: SasMessage) -> MachineEvent | None:
        if not isinstance(message, SasStart):
            return super()._receive_first(message)
        self._exchange = SasExchange(
            message.verification_id, we=self.we, they=self.they, we_initiate=False
        )
        self._commitment = message.commitment
        self.phase = Phase.REQUESTED
        return Requested(message.verification_id)

    def accept(self) -> None:
        """Our person accepted: queue our SAS key."""
        if self.result is not None or self.phase is not Phase.REQUESTED:
            raise VerificationStateError("there is no request waiting to be accepted")
        assert self._exchange is not None
        self.phase = Phase.SENT_ACCEPT
        self._send(
            SasAccept(
                verification_id=self._exchange.verification_id,
                public_key=self._exchange.public_key,
            )
        )

    def _receive_step(self, message: SasMessage) -> MachineEvent | None:
        if self.phase is not Phase.SENT_ACCEPT or not isinstance(message, SasKey):
            return super()._receive_step(message)
        assert self._exchange is not None and self._commitment is not None
        if not commitment_matches(
            self._commitment, self._exchange.verification_id, message.public_key
        ):
            return self.cancel(CancelReason.BAD_COMMITMENT)
        return self._keys_ready(message.public_key)


SasMachine = Initiator | Responder


# -- trio drivers ------------------------------------------------------------------------------


class Decision(Enum):
    """What this side's person says, in the order the verification allows."""

    ACCEPT = "accept"  # responder: go ahead
    MATCH = "match"
    MISMATCH = "mismatch"
    CANCEL = "cancel"


class Observer(Protocol):
    """What the driver tells the node while it runs (the end is the driver's return value)."""

    def keys_ready(self, code: SasCode) -> None: ...

    def peer_confirmed(self) -> None: ...


async def verify_as_initiator(
    stream: Stream,
    machine: Initiator,
    decisions: trio.MemoryReceiveChannel[Decision],
    observer: Observer,
    *,
    deadline: float,
) -> VerificationResult:
    """Run one verification on a stream just opened to the contact's device; closes it."""
    machine.start()
    return await _Exchange(FramedStream(stream, MAX_FRAME_BYTES), machine, observer).run(
        decisions, deadline
    )


async def receive_start(framed: FramedStream, machine: Responder) -> Requested:
    """The responder's first step: the start frame, within STEP_TIMEOUT_SECONDS.

    Raises VerificationProtocolError, trio.TooSlowError or a stream error."""
    with trio.fail_after(STEP_TIMEOUT_SECONDS):
        return machine.receive_start(await framed.receive())


async def verify_as_responder(
    framed: FramedStream,
    machine: Responder,
    decisions: trio.MemoryReceiveChannel[Decision],
    observer: Observer,
    *,
    deadline: float,
) -> VerificationResult:
    """Run the rest of a verification whose start was received; closes the stream."""
    return await _Exchange(framed, machine, observer).run(decisions, deadline)


async def refuse(
    framed: FramedStream, machine: Responder, reason: CancelReason | None = None
) -> None:
    """End a verification before it runs: cancel it with `reason` (e.g. busy) unless the machine
    already ended it (a bad start queues its own cancel), send what is queued, close."""
    if reason is not None and not machine.finished:
        machine.cancel(reason)
    exchange = _Exchange(framed, machine, None)
    with trio.move_on_after(STEP_TIMEOUT_SECONDS):
        await exchange.flush()
    await exchange.close()


class _Exchange:
    """One stream, one machine: a reader task and a task applying the person's decisions."""

    def __init__(
        self, framed: FramedStream, machine: SasMachine, observer: Observer | None
    ) -> None:
        self.framed = framed
        self.machine = machine
        self.observer = observer
        self._send_lock = trio.Lock()

    async def run(
        self, decisions: trio.MemoryReceiveChannel[Decision], deadline: float
    ) -> VerificationResult:
        with trio.move_on_at(deadline):
            await self.flush()
            if not self.machine.finished:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(self._read, nursery.cancel_scope)
                    nursery.start_soon(self._decide, decisions, nursery.cancel_scope)
        if self.machine.result is None:
            log.info("SAS verification timed out")
            self.machine.cancel(CancelReason.TIMEOUT)
        with trio.move_on_after(STEP_TIMEOUT_SECONDS):
            await self.flush()
        await self.close()
        assert self.machine.result is not None
        return self.machine.result

    async def flush(self) -> None:
        """Send what the machine queued. A broken stream ends the verification (disconnected)."""
        async with self._send_lock:
            frames = self.machine.data_to_send()
            try:
                for frame in frames:
                    await self.framed.send(frame)
            except Exception as error:  # any failure of the stream: py-libp2p raises many kinds
                log.info("SAS stream broke while sending: %r", error)
                if not self.machine.finished:
                    self.machine.abandon(CancelReason.DISCONNECTED)

    async def close(self) -> None:
        with trio.move_on_after(STEP_TIMEOUT_SECONDS):
            try:
                await self.framed.stream.close()
            except Exception as error:
                log.debug("closing a SAS stream failed: %r", error)

    async def _read(self, done: trio.CancelScope) -> None:
        while not self.machine.finished:
            try:
                frame = await self.framed.receive()
            except FrameTooLarge as error:
                log.info("SAS frame over the maximum: %s", error)
                self.machine.cancel(CancelReason.PROTOCOL_ERROR)
                break
            except Exception as error:  # the stream ended or broke
                if not self.machine.finished:
                    log.info("SAS stream ended early: %r", error)
                    self.machine.abandon(CancelReason.DISCONNECTED)
                break
            try:
                event = self.machine.receive(frame)
            except VerificationProtocolError as error:
                log.info("SAS verification broken by the other side: %s", error)
                break
            finally:
                await self.flush()
            self._notify(event)
        await self.flush()
        done.cancel()

    async def _decide(
        self, decisions: trio.MemoryReceiveChannel[Decision], done: trio.CancelScope
    ) -> None:
        async for decision in decisions:
            if self.machine.finished:
                break
            try:
                event = self._apply(decision)
            except VerificationStateError as error:
                log.info("ignored %s: %s", decision.value, error)
                continue
            await self.flush()
            self._notify(event)
            if self.machine.finished:
                break
        else:  # the node let go of the decisions: give up
            if not self.machine.finished:
                self.machine.cancel(CancelReason.USER_CANCELLED)
                await self.flush()
        done.cancel()

    def _apply(self, decision: Decision) -> MachineEvent | None:
        if decision is Decision.ACCEPT:
            if not isinstance(self.machine, Responder):
                raise VerificationStateError("only the responder accepts")
            self.machine.accept()
            return None
        if decision is Decision.MATCH:
            return self.machine.confirm(True)
        if decision is Decision.MISMATCH:
            return self.machine.confirm(False)
        return self.machine.cancel(CancelReason.USER_CANCELLED)

    def _notify(self, event: MachineEvent | None) -> None:
        if self.observer is None:
            return
        if isinstance(event, KeysReady):
            self.observer.keys_ready(event.code)
        elif isinstance(event, PeerConfirmed):
            self.observer.peer_confirmed()
