"""`/p2pid/group-sync/1`: a member who was offline catches up on a group's membership ops from
any member device, and hands back the ops that device lacks, in one exchange (the flow is in
p2pid.wire.group_sync).

`SyncRequester` and `SyncResponder` are sans-IO machines working against a `GroupLog`: bytes in,
bytes out, a `SyncReport` of what the exchange did to the log. Every op received goes to
`GroupLog.add` one at a time, so the log's own checks decide what is accepted; the machines only
bound the exchange:

- frames: at most MAX_FRAME_BYTES (the framing layer refuses a longer one as soon as its length
  is read), decoded strictly, in the order above;
- ops: at most MAX_OPS_PER_EXCHANGE per direction (a responder with more sends the first ones;
  the requester sees `report.complete` False and asks again);
- misbehaviour: an honest peer sends ops in an order this log can apply (ops_after), so it never
  causes a rejected or a pending op. A few are tolerated and counted; after `max_strikes` the
  machine raises SyncProtocolError and the driver resets the stream. Ops accepted before that
  stay (they are valid whoever relayed them).

The responder serves only devices its `is_member_device` callback vouches for, and the server
driver rate-limits requests per peer with a token bucket (`RateLimiter`, sans-IO too).

The drivers (`sync_group` for the requester, `GroupSyncServer` for the responder) add the stream
and the timeouts; the node supplies the logs, the member check, and stores what was accepted.
"""

from __future__ import annotations

import contextlib
import logging
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Collection, Iterable
from dataclasses import dataclass, field
from enum import Enum, auto

import msgspec
import trio

from p2pid.groups.membership import (
    Accepted,
    Duplicate,
    GroupLog,
    Pending,
    Rejected,
    op_id_of,
)
from p2pid.net.host import NetHost, Stream, StreamError, close_quietly, remote_peer_id
from p2pid.protocols.framed import FramedStream
from p2pid.wire.framing import FrameError
from p2pid.wire.group_sync import (
    MAX_FRAME_BYTES,
    MAX_HEADS,
    MAX_KNOWN,
    MAX_OPS_PER_EXCHANGE,
    MAX_OPS_PER_FRAME,
    MAX_WANT,
    PROTOCOL_ID,
    RefusalReason,
    SyncHeads,
    SyncMessage,
    SyncOps,
    SyncRefused,
    SyncRequest,
    decode_message,
    encode_message,
)
from p2pid.wire.groups import SignedGroupOp

log = logging.getLogger(__name__)

# Rejected or pending ops tolerated from one peer in one exchange before the stream is closed.
MAX_STRIKES = 16
# Ids of recent ops named in `known`; the rest of MAX_KNOWN samples older ops exponentially.
RECENT_KNOWN = 192
STEP_TIMEOUT_SECONDS = 15.0  # per frame
EXCHANGE_TIMEOUT_SECONDS = 120.0
# Requests per peer: a burst of RATE_BURST, then one every 1 / RATE_PER_SECOND seconds.
RATE_BURST = 8
RATE_PER_SECOND = 0.5
RATE_MAX_PEERS = 1024


# -- errors and results ----------------------------------------------------------------------


@dataclass
class SyncReport:
    """What one exchange did to this side's log."""

    group_id: bytes
    peer_heads: frozenset[bytes] = frozenset()
    received: int = 0  # ops the peer sent
    sent: int = 0  # ops this side sent
    accepted: list[bytes] = field(default_factory=list)  # new in the log, in a valid order
    duplicates: int = 0
    pending: int = 0  # held by the log for unknown parents (an honest peer causes none)
    rejected: int = 0
    dropped: int = 0  # pending ops the log rejected in consequence
    complete: bool = False  # this log now holds every head the peer had

    @property
    def strikes(self) -> int:
        return self.pending + self.rejected


class SyncError(Exception):
    """The exchange did not complete. `report` says what it did to the log before that (ops
    accepted before the error stay: they are valid whoever relayed them)."""

    def __init__(self, message: str, report: SyncReport | None = None) -> None:
        super().__init__(message)
        self.report = report


class SyncRefusedError(SyncError):
    def __init__(self, reason: RefusalReason, report: SyncReport | None = None) -> None:
        super().__init__(_REFUSAL_TEXT.get(reason, str(reason)), report)
        self.reason = reason


class SyncProtocolError(SyncError):
    """The peer broke the protocol: malformed, out of order, too much, or too many bad ops."""


_REFUSAL_TEXT = {
    RefusalReason.NOT_A_MEMBER: "the peer does not take this device for a member's",
    RefusalReason.UNKNOWN_GROUP: "the peer does not know this group",
    RefusalReason.TOO_MANY_REQUESTS: "the peer refuses: too many requests, try later",
}


def _decode(frame: bytes) -> SyncMessage:
    try:
        return decode_message(frame)
    except (msgspec.DecodeError, ValueError) as error:
        raise SyncProtocolError(f"malformed group-sync message: {error}") from None


# -- shared pieces ---------------------------------------------------------------------------


def summarise(group_log: GroupLog) -> tuple[list[bytes], list[bytes]]:
    """(heads, known) naming what `group_log` holds within the wire bounds: the latest
    MAX_HEADS heads, then the other heads, the most recent ops and exponentially older ones back
    to the genesis, so a peer that knows none of the heads still finds a recent common ancestor
    (at worst it sends twice what is needed)."""
    order = group_log.order()
    all_heads = group_log.heads
    latest_first = list(reversed(order))
    ranked_heads = [op_id for op_id in latest_first if op_id in all_heads]
    heads = ranked_heads[:MAX_HEADS]
    chosen = set(heads)
    known: list[bytes] = []

    def take(op_id: bytes) -> None:
        if op_id not in chosen and len(known) < MAX_KNOWN:
            chosen.add(op_id)
            known.append(op_id)

    for op_id in ranked_heads[MAX_HEADS:]:
        take(op_id)
    for op_id in latest_first[:RECENT_KNOWN]:
        take(op_id)
    step = 1
    index = RECENT_KNOWN
    while index < len(latest_first) and len(known) < MAX_KNOWN - 1:
        take(latest_first[index])
        index += step
        step *= 2
    take(order[0])  # the genesis
    return sorted(heads), known


def ops_for_peer(
    group_log: GroupLog,
    holds: Iterable[bytes],
    want: Collection[bytes] = (),
    skip: Collection[bytes] = (),
    limit: int = MAX_OPS_PER_EXCHANGE,
) -> list[SignedGroupOp]:
    """The ops a peer holding `holds` (and their ancestors) lacks, at most `limit`, in an order
    it can apply: the `want`ed ones and the ancestors it lacks of them first, ops in `skip`
    (known to be held by the peer) left out."""
    lacking = group_log.ops_after(holds)
    if skip:
        lacking = [op for op in lacking if op_id_of(op.body) not in skip]
    if want and len(lacking) > limit:
        ids = [op_id_of(op.body) for op in lacking]
        lacks = set(ids)
        first: set[bytes] = set()
        stack = [op_id for op_id in want if op_id in lacks]
        while stack:
            op_id = stack.pop()
            if op_id in first:
                continue
            first.add(op_id)
            body = group_log.body(op_id)
            if body is not None:
                stack.extend(parent for parent in body.parents if parent in lacks)
        # The closure comes first in the log's order, then the rest in that order: both keep
        # every op after its parents.
        lacking = [op for op, op_id in zip(lacking, ids, strict=True) if op_id in first] + [
            op for op, op_id in zip(lacking, ids, strict=True) if op_id not in first
        ]
    return lacking[:limit]


def ops_frames(ops: list[SignedGroupOp]) -> list[bytes]:
    """`ops` as SyncOps frames of at most MAX_OPS_PER_FRAME, the last with more=False (one empty
    frame if there are none)."""
    chunks = [ops[i : i + MAX_OPS_PER_FRAME] for i in range(0, len(ops), MAX_OPS_PER_FRAME)]
    if not chunks:
        chunks = [[]]
    return [
        encode_message(SyncOps(ops=chunk, more=index < len(chunks) - 1))
        for index, chunk in enumerate(chunks)
    ]


def refusal_frame(reason: RefusalReason) -> bytes:
    return encode_message(SyncRefused(reason=reason))


class _Intake:
    """Feeds the ops of one direction of an exchange to the log, one by one, within bounds."""

    def __init__(self, group_log: GroupLog, report: SyncReport, max_ops: int, max_strikes: int):
        self._log = group_log
        self._report = report
        self._max_ops = max_ops
        self._max_strikes = max_strikes
        self.seen: set[bytes] = set()  # ids of the ops the peer sent: it holds them
        self.done = False

    def feed(self, message: SyncOps) -> None:
        if self.done:
            raise SyncProtocolError("ops after the last frame", self._report)
        report = self._report
        if report.received + len(message.ops) > self._max_ops:
            raise SyncProtocolError(
                f"the peer sent more than {self._max_ops} ops in one exchange", report
            )
        report.received += len(message.ops)
        for signed in message.ops:
            result = self._log.add(signed)
            self.seen.add(result.op_id)
            if isinstance(result, Accepted):
                report.accepted.append(result.op_id)
                report.accepted.extend(result.released)
                report.dropped += len(result.dropped)
            elif isinstance(result, Duplicate):
                report.duplicates += 1
            elif isinstance(result, Pending):
                report.pending += 1
            elif isinstance(result, Rejected):
                report.rejected += 1
                report.dropped += len(result.dropped)
                log.debug("rejected a synced op %s: %s", result.op_id.hex()[:16], result.reason)
            if report.strikes > self._max_strikes:
                raise SyncProtocolError(
                    f"the peer sent {report.rejected} rejected and {report.pending} unplaceable"
                    " ops",
                    report,
                )
        if not message.more:
            self.done = True


# -- the requester ---------------------------------------------------------------------------


class _RequesterState(Enum):
    START = auto()
    REQUESTED = auto()
    RECEIVING = auto()
    RECEIVED = auto()
    DONE = auto()


class SyncRequester:
    """The side that asks: `request()`, then `receive(frame)` until it returns True, then send
    `push()`'s frames and end the stream. `report` says what the log got."""

    def __init__(
        self,
        group_log: GroupLog,
        *,
        max_ops: int = MAX_OPS_PER_EXCHANGE,
        max_strikes: int = MAX_STRIKES,
    ) -> None:
        self.log = group_log
        self.report = SyncReport(group_id=group_log.group_id)
        self._intake = _Intake(group_log, self.report, max_ops, max_strikes)
        self._max_ops = max_ops
        self._peer_holds: list[bytes] = []
        self._state = _RequesterState.START

    def _expect(self, state: _RequesterState) -> None:
        if self._state is not state:
            raise SyncProtocolError(f"group sync out of order: {self._state.name.lower()}")

    def request(self) -> bytes:
        self._expect(_RequesterState.START)
        self._state = _RequesterState.REQUESTED
        heads, known = summarise(self.log)
        want = sorted(self.log.missing())[:MAX_WANT]
        return encode_message(
            SyncRequest(group_id=self.log.group_id, heads=heads, known=known, want=want)
        )

    def receive(self, frame: bytes) -> bool:
        """Take a frame of the responder's; True once its last ops frame is in. Raises
        SyncRefusedError, or SyncProtocolError (then close the stream)."""
        if self._state is _RequesterState.REQUESTED:
            message = _decode(frame)
            if isinstance(message, SyncRefused):
                self._state = _RequesterState.DONE
                raise SyncRefusedError(message.reason, self.report)
            if not isinstance(message, SyncHeads):
                raise SyncProtocolError(f"expected heads, got {type(message).__name__}")
            self.report.peer_heads = frozenset(message.heads)
            self._peer_holds = list(message.heads) + list(message.known)
            self._state = _RequesterState.RECEIVING
            return False
        self._expect(_RequesterState.RECEIVING)
        message = _decode(frame)
        if not isinstance(message, SyncOps):
            raise SyncProtocolError(f"expected ops, got {type(message).__name__}", self.report)
        self._intake.feed(message)
        if self._intake.done:
            self._state = _RequesterState.RECEIVED
            self.report.complete = all(head in self.log for head in self.report.peer_heads)
            return True
        return False

    def push(self) -> list[bytes]:
        """The frames of the ops the responder lacks (by the heads and ids it named)."""
        self._expect(_RequesterState.RECEIVED)
        self._state = _RequesterState.DONE
        ops = ops_for_peer(self.log, self._peer_holds, skip=self._intake.seen, limit=self._max_ops)
        self.report.sent = len(ops)
        return ops_frames(ops)


# -- the responder ---------------------------------------------------------------------------


@dataclass(frozen=True)
class SyncGroup:
    """What the node hands the responder for a group it is in."""

    log: GroupLog
    is_member_device: Callable[[str], bool]  # PeerId -> is it a device of a current member?


GroupLookup = Callable[[bytes], SyncGroup | None]


class _ResponderState(Enum):
    START = auto()
    RECEIVING = auto()
    DONE = auto()


class SyncResponder:
    """The side that answers, for one stream from `peer_id`: `receive_request(frame)` gives the
    frames to send (a refusal, or heads and ops); then `receive(frame)` until it returns True."""

    def __init__(
        self,
        peer_id: str,
        lookup: GroupLookup,
        *,
        max_ops: int = MAX_OPS_PER_EXCHANGE,
        max_strikes: int = MAX_STRIKES,
    ) -> None:
        self.peer_id = peer_id
        self._lookup = lookup
        self._max_ops = max_ops
        self._max_strikes = max_strikes
        self.refused: RefusalReason | None = None
        self.report: SyncReport | None = None
        self._intake: _Intake | None = None
        self._log: GroupLog | None = None
        self._state = _ResponderState.START

    def receive_request(self, frame: bytes) -> list[bytes]:
        if self._state is not _ResponderState.START:
            raise SyncProtocolError("a second request on one stream")
        self._state = _ResponderState.DONE
        request = _decode(frame)
        if not isinstance(request, SyncRequest):
            raise SyncProtocolError(f"expected a request, got {type(request).__name__}")
        group = self._lookup(request.group_id)
        if group is None:
            self.refused = RefusalReason.UNKNOWN_GROUP
        elif not group.is_member_device(self.peer_id):
            self.refused = RefusalReason.NOT_A_MEMBER
        if group is None or self.refused is not None:
            return [refusal_frame(self.refused or RefusalReason.UNKNOWN_GROUP)]
        group_log = self._log = group.log
        self.report = SyncReport(group_id=group_log.group_id)
        self.report.peer_heads = frozenset(request.heads)
        self._intake = _Intake(group_log, self.report, self._max_ops, self._max_strikes)
        heads, known = summarise(group_log)
        ops = ops_for_peer(
            group_log, list(request.heads) + list(request.known), request.want, limit=self._max_ops
        )
        self.report.sent = len(ops)
        self._state = _ResponderState.RECEIVING
        return [encode_message(SyncHeads(heads=heads, known=known)), *ops_frames(ops)]

    def receive(self, frame: bytes) -> bool:
        """Take a frame of the ops the requester pushes back; True after its last one."""
        if self._state is not _ResponderState.RECEIVING or self._intake is None:
            raise SyncProtocolError("no ops expected now")
        message = _decode(frame)
        if not isinstance(message, SyncOps):
            raise SyncProtocolError(f"expected ops, got {type(message).__name__}", self.report)
        self._intake.feed(message)
        if self._intake.done:
            self._state = _ResponderState.DONE
            assert self.report is not None
            assert self._log is not None
            self.report.complete = all(head in self._log for head in self.report.peer_heads)
            return True
        return False


# -- rate limiting ----------------------------------------------------------------------------


class RateLimiter:
    """A token bucket per key (PeerId): `burst` requests at once, refilled at `rate` per second.
    Sans-IO: callers pass `now` (seconds, monotonic). Remembers at most `max_keys` keys (the
    least recently seen are forgotten, i.e. get a full bucket back)."""

    def __init__(
        self,
        rate: float = RATE_PER_SECOND,
        burst: int = RATE_BURST,
        max_keys: int = RATE_MAX_PEERS,
    ) -> None:
        self.rate = rate
        self.burst = burst
        self.max_keys = max_keys
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()  # tokens, at

    def allow(self, key: str, now: float) -> bool:
        tokens, at = self._buckets.pop(key, (float(self.burst), now))
        tokens = min(float(self.burst), tokens + max(0.0, now - at) * self.rate)
        allowed = tokens >= 1.0
        if allowed:
            tokens -= 1.0
        self._buckets[key] = (tokens, now)
        while len(self._buckets) > self.max_keys:
            self._buckets.popitem(last=False)
        return allowed


# -- trio drivers ----------------------------------------------------------------------------

# The stream broke or carried something that is not a frame.
_BROKEN = (StreamError, FrameError)


async def sync_group(
    net: NetHost,
    peer_id: str,
    group_log: GroupLog,
    *,
    max_ops: int = MAX_OPS_PER_EXCHANGE,
    max_strikes: int = MAX_STRIKES,
) -> SyncReport:
    """Catch up on `group_log` from the member device `peer_id` (its addresses already given to
    the dialer) and hand it back what it lacks. Raises SyncRefusedError, SyncProtocolError, or
    SyncError (the stream broke, a timeout); each carries the report of what was done so far.
    Store `report.accepted` (the log holds them) whatever happens. A peer that cannot be reached
    raises DialError or StreamOpenError (p2pid.net) before anything is exchanged."""
    requester = SyncRequester(group_log, max_ops=max_ops, max_strikes=max_strikes)
    stream = await net.new_stream(peer_id, [PROTOCOL_ID])
    framed = FramedStream(stream, MAX_FRAME_BYTES)
    try:
        with trio.fail_after(EXCHANGE_TIMEOUT_SECONDS):
            with trio.fail_after(STEP_TIMEOUT_SECONDS):
                await framed.send(requester.request())
            done = False
            while not done:
                with trio.fail_after(STEP_TIMEOUT_SECONDS):
                    done = requester.receive(await framed.receive())
            for frame in requester.push():
                with trio.fail_after(STEP_TIMEOUT_SECONDS):
                    await framed.send(frame)
            await framed.finish()
        # The responder closes once it has taken our ops; it resets if it refused them.
        with trio.move_on_after(STEP_TIMEOUT_SECONDS):
            try:
                await framed.receive_or_end()
            except _BROKEN as error:
                log.info("group sync: %s did not take our ops: %r", peer_id, error)
        return requester.report
    except SyncRefusedError:
        raise
    except SyncError as error:
        log.info("group sync with %s failed: %s", peer_id, error)
        await _reset_quietly(stream)
        error.report = requester.report
        raise
    except _BROKEN as error:
        await _reset_quietly(stream)
        raise SyncError(f"group sync with {peer_id} broke off: {error}", requester.report) from None
    except trio.TooSlowError:
        await _reset_quietly(stream)
        raise SyncError(f"group sync with {peer_id} timed out", requester.report) from None
    finally:
        await close_quietly(stream)


AcceptedCallback = Callable[[SyncReport], Awaitable[None]]


class GroupSyncServer:
    """The responder's stream handler: `net.set_stream_handler(PROTOCOL_ID, server.handle)`.

    `lookup(group_id)` gives the group's log and member check (None: not a group of ours);
    `on_accepted(report)`, if given, runs after an exchange that put ops into a log (even one cut
    short: what was accepted stays), to store them."""

    def __init__(
        self,
        lookup: GroupLookup,
        *,
        on_accepted: AcceptedCallback | None = None,
        limiter: RateLimiter | None = None,
        clock: Callable[[], float] = trio.current_time,
        max_ops: int = MAX_OPS_PER_EXCHANGE,
        max_strikes: int = MAX_STRIKES,
    ) -> None:
        self._lookup = lookup
        self._on_accepted = on_accepted
        self.limiter = limiter or RateLimiter()
        self._clock = clock
        self._max_ops = max_ops
        self._max_strikes = max_strikes

    def install(self, net: NetHost) -> None:
        net.set_stream_handler(PROTOCOL_ID, self.handle)

    async def handle(self, stream: Stream) -> None:
        peer_id = remote_peer_id(stream)
        responder = SyncResponder(
            peer_id, self._lookup, max_ops=self._max_ops, max_strikes=self._max_strikes
        )
        try:
            await self._serve(stream, peer_id, responder)
        finally:
            await close_quietly(stream)
            report = responder.report
            if report is not None and report.accepted and self._on_accepted is not None:
                await self._on_accepted(report)

    async def _serve(self, stream: Stream, peer_id: str, responder: SyncResponder) -> None:
        framed = FramedStream(stream, MAX_FRAME_BYTES)
        if not self.limiter.allow(peer_id, self._clock()):
            log.info("group sync: refused %s, too many requests", peer_id)
            with trio.move_on_after(STEP_TIMEOUT_SECONDS), contextlib.suppress(*_BROKEN):
                await framed.send(refusal_frame(RefusalReason.TOO_MANY_REQUESTS))
            return
        try:
            with trio.fail_after(EXCHANGE_TIMEOUT_SECONDS):
                with trio.fail_after(STEP_TIMEOUT_SECONDS):
                    frames = responder.receive_request(await framed.receive())
                for frame in frames:
                    with trio.fail_after(STEP_TIMEOUT_SECONDS):
                        await framed.send(frame)
                if responder.refused is not None:
                    log.info("group sync: refused %s: %s", peer_id, responder.refused)
                    return
                done = False
                while not done:
                    with trio.fail_after(STEP_TIMEOUT_SECONDS):
                        done = responder.receive(await framed.receive())
        except (SyncError, *_BROKEN, trio.TooSlowError) as error:
            log.info("group sync from %s closed: %r", peer_id, error)
            await _reset_quietly(stream)


async def _reset_quietly(stream: Stream) -> None:
    with trio.CancelScope(shield=True), contextlib.suppress(Exception):
        await stream.reset()
