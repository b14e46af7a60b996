"""Group catch-up (`/p2pid/group-sync/1`): the sans-IO machines with bytes in and bytes out, then
the trio drivers over real NetHosts on 127.0.0.1."""

from __future__ import annotations

import secrets
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager, suppress

import msgspec
import nacl.signing
import pytest
import trio
from hypothesis import given, settings
from hypothesis import strategies as st

from p2pid.groups.membership import GroupLog, op_id_of, sign_op
from p2pid.net.host import NetHost, Stream
from p2pid.protocols.framed import FramedStream
from p2pid.protocols.group_sync import (
    MAX_STRIKES,
    GroupSyncServer,
    RateLimiter,
    SyncError,
    SyncGroup,
    SyncProtocolError,
    SyncRefusedError,
    SyncReport,
    SyncRequester,
    SyncResponder,
    ops_frames,
    summarise,
    sync_group,
)
from p2pid.wire.framing import encode_varint
from p2pid.wire.group_sync import (
    MAX_FRAME_BYTES,
    MAX_HEADS,
    MAX_KNOWN,
    MAX_OPS_PER_FRAME,
    PROTOCOL_ID,
    RefusalReason,
    SyncHeads,
    SyncOps,
    SyncRequest,
    decode_message,
    encode_message,
)
from p2pid.wire.groups import (
    MAX_OP_BODY_BYTES,
    Add,
    GroupOp,
    GroupOpBody,
    Promote,
    Remove,
    Rename,
    Role,
    SignedGroupOp,
)

KEYS = [nacl.signing.SigningKey(bytes([i + 1]) * 32) for i in range(8)]
A, B, C, M, N, S = KEYS[:6]  # S: a stranger
T0 = 1_700_000_000_000
LOOPBACK = ["/ip4/127.0.0.1/tcp/0"]
NET_TIMEOUT = 10


def pk(key: nacl.signing.SigningKey) -> bytes:
    return bytes(key.verify_key)


def add(member: nacl.signing.SigningKey, name: str, role: Role = Role.MEMBER) -> Add:
    return Add(member=pk(member), role=role, display_name=name)


def family() -> GroupLog:
    """A (creator), B (admin), M and N (members)."""
    log, _ = GroupLog.create(A, "Family", "👪", T0, display_name="Ann", nonce=b"n" * 16)
    log.author_op(A, add(B, "Bob", Role.ADMIN), T0 + 1)
    log.author_op(A, add(M, "Mia"), T0 + 2)
    log.author_op(A, add(N, "Ned"), T0 + 3)
    return log


def copy_of(log: GroupLog) -> GroupLog:
    other = GroupLog.from_genesis(log.genesis)
    other.add_all(log.ops()[1:])
    assert other.heads == log.heads
    return other


def raw(
    key: nacl.signing.SigningKey, log: GroupLog, op: GroupOp, parents: list[bytes] | None = None
) -> SignedGroupOp:
    """Signed without the log's checks: what a hostile peer sends."""
    body = GroupOpBody(
        group_id=log.group_id,
        parents=sorted(parents if parents is not None else log.heads),
        author=pk(key),
        created_at=T0,
        op=op,
    )
    return sign_op(key, body)


def concurrent_edits() -> tuple[GroupLog, GroupLog]:
    """Two admins apart: each removes someone, renames, adds; B also promotes the member A
    removes."""
    a = family()
    b = copy_of(a)
    a.author_op(A, Remove(member=pk(M)), T0 + 10)
    a.author_op(A, Rename(name="Family A", avatar="A"), T0 + 11)
    a.author_op(A, add(C, "Cat"), T0 + 12)
    b.author_op(B, Remove(member=pk(N)), T0 + 10)
    b.author_op(B, Promote(member=pk(M)), T0 + 11)
    b.author_op(B, Rename(name="Family B", avatar="B"), T0 + 12)
    b.author_op(B, add(C, "Cathy"), T0 + 13)
    return a, b


def admin_removed_while_apart() -> tuple[GroupLog, GroupLog]:
    """A removes B while B, apart, removes N, renames and adds a member: B's ops are void."""
    a = family()
    b = copy_of(a)
    a.author_op(A, Rename(name="Family A"), T0 + 10)
    a.author_op(A, Remove(member=pk(B)), T0 + 11)
    b.author_op(B, Remove(member=pk(N)), T0 + 10)
    b.author_op(B, Rename(name="Bob's family"), T0 + 11)
    b.author_op(B, add(S, "Sam"), T0 + 12)
    return a, b


SCENARIOS = {"concurrent edits": concurrent_edits, "admin removed": admin_removed_while_apart}


def union_of(*logs: GroupLog) -> GroupLog:
    merged = GroupLog.from_genesis(logs[0].genesis)
    for _ in logs:  # enough passes for any order
        for log in logs:
            merged.add_all(log.ops()[1:])
    return merged


def everyone(_peer_id: str) -> bool:
    return True


def lookup_for(
    log: GroupLog, is_member: Callable[[str], bool] = everyone
) -> Callable[[bytes], SyncGroup | None]:
    return lambda group_id: SyncGroup(log, is_member) if group_id == log.group_id else None


def exchange(
    requester_log: GroupLog, responder_log: GroupLog, **limits: int
) -> tuple[SyncReport, SyncReport]:
    """One exchange, bytes passed by hand."""
    requester = SyncRequester(requester_log, **limits)
    responder = SyncResponder("peer", lookup_for(responder_log), **limits)
    frames = responder.receive_request(requester.request())
    done = [requester.receive(frame) for frame in frames]
    assert done[-1] and not any(done[:-1])
    pushed = [responder.receive(frame) for frame in requester.push()]
    assert pushed[-1] and not any(pushed[:-1])
    assert responder.report is not None
    return requester.report, responder.report


def same(a: GroupLog, b: GroupLog) -> None:
    assert a.heads == b.heads
    assert a.state == b.state
    assert set(a.order()) == set(b.order())


# -- wire --------------------------------------------------------------------------------------


def test_a_frame_of_the_largest_ops_fits() -> None:
    big = SignedGroupOp(body=b"x" * MAX_OP_BODY_BYTES, signature=b"s" * 64)
    frame = encode_message(SyncOps(ops=[big] * MAX_OPS_PER_FRAME, more=True))
    assert len(frame) <= MAX_FRAME_BYTES
    assert decode_message(frame) == SyncOps(ops=[big] * MAX_OPS_PER_FRAME, more=True)


@pytest.mark.parametrize(
    "message",
    [
        SyncRequest(group_id=b"g" * 32, heads=[b"h" * 32] * (MAX_HEADS + 1)),
        SyncRequest(group_id=b"g" * 32, heads=[], want=[b"w" * 32] * 257),
        SyncRequest(group_id=b"g" * 31, heads=[]),
        SyncHeads(heads=[], known=[b"k" * 32] * (MAX_KNOWN + 1)),
        SyncOps(ops=[SignedGroupOp(body=b"", signature=b"s" * 64)] * 513, more=False),
        SyncOps(ops=[SignedGroupOp(body=b"x" * 2049, signature=b"s" * 64)], more=False),
        SyncOps(ops=[SignedGroupOp(body=b"", signature=b"s" * 63)], more=False),
    ],
)
def test_decoding_enforces_the_bounds(message: SyncRequest | SyncHeads | SyncOps) -> None:
    with pytest.raises(msgspec.DecodeError):
        decode_message(encode_message(message))


def test_decoding_refuses_unknown_tags_and_reasons() -> None:
    for value in ({"type": "nope"}, {"type": "refused", "reason": "bored"}, [1, 2], b"\xc1"):
        data = value if isinstance(value, bytes) else msgspec.msgpack.encode(value)
        with pytest.raises(msgspec.DecodeError):
            decode_message(data)


# -- the machines ---------------------------------------------------------------------------


@pytest.mark.parametrize("scenario", SCENARIOS)
@pytest.mark.parametrize("direction", ["a asks b", "b asks a"])
def test_diverged_logs_converge_in_one_exchange(scenario: str, direction: str) -> None:
    a, b = SCENARIOS[scenario]()
    expected = union_of(a, b)
    requester, responder = (a, b) if direction == "a asks b" else (b, a)
    asked, answered = exchange(requester, responder)
    same(a, b)
    same(a, expected)
    assert asked.complete and answered.complete
    assert asked.strikes == answered.strikes == 0
    # Each side got exactly the ops it lacked, nothing twice.
    assert asked.duplicates == answered.duplicates == 0
    assert len(asked.accepted) == asked.received == answered.sent
    assert len(answered.accepted) == answered.received == asked.sent
    # A second exchange has nothing left to move.
    again, again_answered = exchange(requester, responder)
    assert again.received == again_answered.received == 0


def test_concurrent_edits_resolve_the_same_on_both_sides() -> None:
    a, b = concurrent_edits()
    exchange(a, b)
    state = a.state
    assert not state.is_member(pk(N))  # removed by B
    assert not state.is_member(pk(M))  # A's removal; B's concurrent promote is void
    assert state.members[pk(C)].display_name in {"Cat", "Cathy"}
    assert state.name in {"Family A", "Family B"}


def test_a_removed_admins_concurrent_ops_stay_void_after_sync() -> None:
    a, b = admin_removed_while_apart()
    exchange(b, a)
    for log in (a, b):
        assert not log.state.is_member(pk(B))
        assert log.state.is_member(pk(N))
        assert not log.state.is_member(pk(S))
        assert log.state.name == "Family A"


def test_a_lagging_member_fetches_the_missing_parents_of_pending_ops() -> None:
    ahead = family()
    lagging = copy_of(ahead)
    ops = [ahead.author_op(A, Rename(name=f"Family {i}"), T0 + 10 + i) for i in range(6)]
    # The last op came straight from its author (the outbox): its parents are unknown here.
    lagging.add(ops[-1])
    assert lagging.pending_count == 1 and len(lagging.missing()) == 1
    requester = SyncRequester(lagging)
    request = decode_message(requester.request())
    assert isinstance(request, SyncRequest) and request.want == sorted(lagging.missing())
    asked, _ = exchange(lagging, ahead)
    same(lagging, ahead)
    assert lagging.pending_count == 0
    assert asked.duplicates == 1  # the op it held pending, released by its parents
    assert asked.strikes == 0


def test_wanted_ops_come_first_when_the_exchange_is_capped() -> None:
    ahead = family()
    lagging = copy_of(ahead)
    # Two branches: a long one of renames, then a short one the lagging member has a child of.
    fork = sorted(ahead.heads)
    for i in range(20):
        ahead.author_op(A, Rename(name=f"Long {i}"), T0 + 10 + i)
    short = raw(A, ahead, Rename(name="Short"), parents=fork)
    ahead.add(short)
    child = raw(A, ahead, Rename(name="Child"), parents=sorted(ahead.heads))
    lagging.add(child)
    assert lagging.pending_count == 1
    # Capped at 3 ops, without `want` the responder would send the first 3 of the long branch.
    asked, _ = exchange(lagging, ahead, max_ops=3)
    assert not asked.complete
    assert asked.received == 3 and op_id_of(short.body) in asked.accepted
    # More exchanges finish the job.
    while not asked.complete:
        asked, _ = exchange(lagging, ahead, max_ops=3)
    same(lagging, ahead)


def test_summaries_stay_in_bounds_and_name_old_ancestors() -> None:
    log = family()
    for i in range(600):
        log.author_op(A, Rename(name=f"F{i}"), T0 + 10 + i)
    forks = [raw(A, log, Rename(name=f"fork {i}")) for i in range(20)]  # 20 concurrent heads
    log.add_all(forks)
    heads, known = summarise(log)
    assert len(heads) == MAX_HEADS and len(known) <= MAX_KNOWN
    assert set(heads) | set(known) >= log.heads  # every head is named
    order = log.order()
    assert order[0] in known  # the genesis
    positions = sorted(order.index(op_id) for op_id in known)
    # Beyond the recent ones, samples get exponentially sparser back to the genesis.
    assert positions[0] == 0 and positions[1] < len(order) // 2


def test_the_requester_is_refused_for_an_unknown_group_or_as_a_non_member() -> None:
    log = family()
    other = copy_of(log)
    responder = SyncResponder("mallory", lookup_for(log, lambda peer: peer != "mallory"))
    requester = SyncRequester(other)
    [frame] = responder.receive_request(requester.request())
    assert responder.refused is RefusalReason.NOT_A_MEMBER
    with pytest.raises(SyncRefusedError) as refused:
        requester.receive(frame)
    assert refused.value.reason is RefusalReason.NOT_A_MEMBER

    stranger_group, _ = GroupLog.create(S, "Other", "", T0, display_name="Sam")
    responder = SyncResponder("bob", lookup_for(log))
    [frame] = responder.receive_request(SyncRequester(stranger_group).request())
    assert responder.refused is RefusalReason.UNKNOWN_GROUP


def forged_ops(log: GroupLog, count: int) -> list[SignedGroupOp]:
    """Half signed by a stranger on real parents, half claiming A with a bad signature."""
    ops = []
    for i in range(count):
        if i % 2:
            ops.append(raw(S, log, Rename(name=f"mine {i}")))
        else:
            good = raw(A, log, Rename(name=f"forged {i}"))
            ops.append(SignedGroupOp(body=good.body, signature=bytes(64)))
    return ops


def test_forged_ops_are_rejected_and_the_exchange_stops_after_the_limit() -> None:
    victim = family()
    before = (victim.heads, victim.state, len(victim))
    requester = SyncRequester(victim)
    requester.request()
    requester.receive(encode_message(SyncHeads(heads=list(victim.heads))))
    with pytest.raises(SyncProtocolError, match="rejected") as error:
        for frame in ops_frames(forged_ops(victim, 100)):
            requester.receive(frame)
    assert error.value.report is not None
    assert error.value.report.rejected == MAX_STRIKES + 1
    assert (victim.heads, victim.state, len(victim)) == before


def test_a_few_bad_ops_are_counted_not_fatal() -> None:
    ahead = family()
    lagging = copy_of(ahead)
    good = ahead.author_op(A, Rename(name="Renamed"), T0 + 10)
    requester = SyncRequester(lagging)
    requester.request()
    requester.receive(encode_message(SyncHeads(heads=list(ahead.heads))))
    [frame] = ops_frames([*forged_ops(lagging, 3), good])
    assert requester.receive(frame)
    assert requester.report.rejected == 3 and requester.report.accepted == [ahead.order()[-1]]
    assert lagging.state.name == "Renamed"


def test_frames_out_of_order_are_protocol_errors() -> None:
    log = family()
    requester = SyncRequester(log)
    with pytest.raises(SyncProtocolError):
        requester.receive(encode_message(SyncHeads(heads=[])))  # before the request
    requester.request()
    with pytest.raises(SyncProtocolError, match="expected heads"):
        requester.receive(ops_frames([])[0])
    requester = SyncRequester(log)
    requester.request()
    requester.receive(encode_message(SyncHeads(heads=[])))
    assert requester.receive(ops_frames([])[0])
    with pytest.raises(SyncProtocolError):
        requester.receive(ops_frames([])[0])  # after the last frame

    responder = SyncResponder("peer", lookup_for(log))
    with pytest.raises(SyncProtocolError, match="expected a request"):
        responder.receive_request(ops_frames([])[0])
    with pytest.raises(SyncProtocolError):
        responder.receive(ops_frames([])[0])


def test_a_peer_sending_more_than_the_exchange_allows_is_cut_off() -> None:
    ahead = family()
    for i in range(10):
        ahead.author_op(A, Rename(name=f"F{i}"), T0 + 10 + i)
    lagging = GroupLog.from_genesis(ahead.genesis)
    requester = SyncRequester(lagging, max_ops=5)
    requester.request()
    requester.receive(encode_message(SyncHeads(heads=list(ahead.heads))))
    with pytest.raises(SyncProtocolError, match="more than 5"):
        requester.receive(ops_frames(ahead.ops()[1:])[0])


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_fuzzed_frames_raise_only_protocol_errors(data: bytes) -> None:
    log = family()
    responder = SyncResponder("peer", lookup_for(log))
    with suppress(SyncProtocolError):
        responder.receive_request(data)
    requester = SyncRequester(log)
    requester.request()
    try:
        requester.receive(data)
        requester.receive(data)
    except (SyncProtocolError, SyncRefusedError):
        pass
    assert len(log) == 4


def test_the_rate_limiter_refills_over_time() -> None:
    limiter = RateLimiter(rate=0.5, burst=2, max_keys=2)
    assert [limiter.allow("p", 0.0) for _ in range(3)] == [True, True, False]
    assert not limiter.allow("p", 1.0)  # half a token
    assert limiter.allow("p", 2.1)
    assert limiter.allow("q", 2.1)
    limiter.allow("r", 2.1)  # evicts "p", the least recently seen
    assert limiter.allow("p", 2.1) and limiter.allow("p", 2.1)


# -- over the network ------------------------------------------------------------------------


@asynccontextmanager
async def two_hosts() -> AsyncIterator[tuple[NetHost, NetHost]]:
    async with (
        NetHost.open(secrets.token_bytes(32), LOOPBACK) as asker,
        NetHost.open(secrets.token_bytes(32), LOOPBACK) as answerer,
    ):
        asker.add_addrs(answerer.peer_id, answerer.listen_addrs())
        answerer.add_addrs(asker.peer_id, asker.listen_addrs())
        yield asker, answerer


class Served:
    """A GroupSyncServer over one log, remembering the reports it handed to the node."""

    def __init__(self, log: GroupLog) -> None:
        self.reports: list[SyncReport] = []
        self.finished = trio.Event()
        self.server = GroupSyncServer(lookup_for(log), on_accepted=self.stored)

    async def stored(self, report: SyncReport) -> None:
        self.reports.append(report)

    async def handle(self, stream: Stream) -> None:
        try:
            await self.server.handle(stream)
        finally:
            self.finished.set()


@pytest.mark.parametrize("scenario", SCENARIOS)
@pytest.mark.parametrize("direction", ["a asks b", "b asks a"])
async def test_diverged_nodes_converge_over_the_network(scenario: str, direction: str) -> None:
    a, b = SCENARIOS[scenario]()
    requester_log, responder_log = (a, b) if direction == "a asks b" else (b, a)
    async with two_hosts() as (asker, answerer):
        served = Served(responder_log)
        answerer.set_stream_handler(PROTOCOL_ID, served.handle)
        with trio.fail_after(NET_TIMEOUT):
            report = await sync_group(asker, answerer.peer_id, requester_log)
            await served.finished.wait()
    same(a, b)
    same(a, union_of(a, b))
    assert report.complete and report.accepted and report.sent
    [stored] = served.reports
    assert len(stored.accepted) == report.sent and stored.complete


async def test_a_lagging_node_fetches_missing_parents_over_the_network() -> None:
    ahead = family()
    lagging = copy_of(ahead)
    ops = [ahead.author_op(A, Rename(name=f"Family {i}"), T0 + 10 + i) for i in range(5)]
    lagging.add(ops[-1])
    async with two_hosts() as (asker, answerer):
        GroupSyncServer(lookup_for(ahead)).install(answerer)
        with trio.fail_after(NET_TIMEOUT):
            report = await sync_group(asker, answerer.peer_id, lagging)
    same(lagging, ahead)
    assert lagging.pending_count == 0 and len(report.accepted) == 5


async def test_a_non_member_device_is_refused_over_the_network() -> None:
    log = family()
    other = copy_of(log)
    log.author_op(A, Rename(name="Secret plans"), T0 + 10)
    async with two_hosts() as (asker, answerer):
        GroupSyncServer(lookup_for(log, lambda peer: peer != asker.peer_id)).install(answerer)
        with trio.fail_after(NET_TIMEOUT), pytest.raises(SyncRefusedError) as refused:
            await sync_group(asker, answerer.peer_id, other)
        assert refused.value.reason is RefusalReason.NOT_A_MEMBER
    assert other.state.name == "Family"


async def test_too_many_requests_are_refused_over_the_network() -> None:
    log = family()
    async with two_hosts() as (asker, answerer):
        GroupSyncServer(lookup_for(log), limiter=RateLimiter(rate=0.001, burst=2)).install(answerer)
        with trio.fail_after(NET_TIMEOUT):
            for _ in range(2):
                await sync_group(asker, answerer.peer_id, copy_of(log))
            with pytest.raises(SyncRefusedError) as refused:
                await sync_group(asker, answerer.peer_id, copy_of(log))
        assert refused.value.reason is RefusalReason.TOO_MANY_REQUESTS


async def read_until_closed(framed: FramedStream) -> list[bytes]:
    """Frames until the server ends or resets the stream."""
    frames: list[bytes] = []
    with trio.fail_after(NET_TIMEOUT):
        while True:
            try:
                frame = await framed.receive_or_end()
            except Exception:
                return frames
            if frame is None:
                return frames
            frames.append(frame)


@pytest.mark.parametrize(
    "payload",
    [
        pytest.param(encode_varint(MAX_FRAME_BYTES + 1) + b"x" * 100, id="oversized"),
        pytest.param(encode_varint(5) + b"\xc1\xc1\xc1\xc1\xc1", id="malformed"),
        pytest.param(encode_varint(3) + b"abc", id="trailing bytes"),
        pytest.param(encode_varint(100) + b"x" * 10, id="cut short"),
    ],
)
async def test_bad_frames_close_the_stream(payload: bytes) -> None:
    log = family()
    before = (log.heads, len(log))
    async with two_hosts() as (asker, answerer):
        served = Served(log)
        answerer.set_stream_handler(PROTOCOL_ID, served.handle)
        stream = await asker.new_stream(answerer.peer_id, [PROTOCOL_ID])
        await stream.write(payload)
        framed = FramedStream(stream, MAX_FRAME_BYTES)
        await framed.finish()
        assert await read_until_closed(framed) == []
        with trio.fail_after(NET_TIMEOUT):
            await served.finished.wait()
        await stream.close()
    assert (log.heads, len(log)) == before and served.reports == []


async def test_a_requester_pushing_forged_ops_is_cut_off_and_the_log_unchanged() -> None:
    log = family()
    before = (log.heads, log.state, len(log))
    async with two_hosts() as (asker, answerer):
        served = Served(log)
        answerer.set_stream_handler(PROTOCOL_ID, served.handle)
        stream = await asker.new_stream(answerer.peer_id, [PROTOCOL_ID])
        framed = FramedStream(stream, MAX_FRAME_BYTES)
        requester = SyncRequester(copy_of(log))
        await framed.send(requester.request())
        with trio.fail_after(NET_TIMEOUT):
            while not requester.receive(await framed.receive()):
                pass
        with trio.fail_after(NET_TIMEOUT):
            for frame in ops_frames(forged_ops(log, 40) * 10):
                try:
                    await framed.send(frame)
                except Exception:
                    break
            assert await read_until_closed(framed) == []
            await served.finished.wait()
        await stream.close()
    assert (log.heads, log.state, len(log)) == before and served.reports == []


async def test_a_responder_streaming_forged_ops_is_cut_off_and_the_log_unchanged() -> None:
    victim = family()
    before = (victim.heads, victim.state, len(victim))

    async def forger(stream: Stream) -> None:
        framed = FramedStream(stream, MAX_FRAME_BYTES)
        await framed.receive()
        await framed.send(encode_message(SyncHeads(heads=list(victim.heads))))
        forged = forged_ops(victim, 40)
        for _ in range(20):
            await framed.send(encode_message(SyncOps(ops=forged, more=True)))
        await stream.close()

    async with two_hosts() as (asker, answerer):
        answerer.set_stream_handler(PROTOCOL_ID, forger)
        with trio.fail_after(NET_TIMEOUT), pytest.raises(SyncProtocolError) as error:
            await sync_group(asker, answerer.peer_id, victim)
    report = error.value.report
    assert report is not None and report.rejected == MAX_STRIKES + 1 and not report.accepted
    assert (victim.heads, victim.state, len(victim)) == before


async def test_a_responder_vanishing_mid_exchange_is_a_sync_error_with_its_report() -> None:
    ahead = family()
    lagging = copy_of(ahead)
    good = ahead.author_op(A, Rename(name="Renamed"), T0 + 10)

    async def vanishing(stream: Stream) -> None:
        framed = FramedStream(stream, MAX_FRAME_BYTES)
        await framed.receive()
        await framed.send(encode_message(SyncHeads(heads=list(ahead.heads))))
        await framed.send(encode_message(SyncOps(ops=[good], more=True)))
        await stream.reset()

    async with two_hosts() as (asker, answerer):
        answerer.set_stream_handler(PROTOCOL_ID, vanishing)
        with trio.fail_after(NET_TIMEOUT), pytest.raises(SyncError, match="broke off") as error:
            await sync_group(asker, answerer.peer_id, lagging)
    # What came before the break stays, and the report says so (for the node to store).
    assert error.value.report is not None and error.value.report.accepted == [op_id_of(good.body)]
    assert not error.value.report.complete
    same(lagging, ahead)


async def test_an_exchange_of_2500_ops_is_quick() -> None:
    ahead, _ = GroupLog.create(A, "Big", "", T0, display_name="Ann", nonce=b"b" * 16)
    members = [nacl.signing.SigningKey(i.to_bytes(4, "big") * 8) for i in range(1, 251)]
    for i, key in enumerate(members):
        ahead.author_op(A, add(key, f"m{i}"), T0 + i)
    while len(ahead) < 2501:
        ahead.author_op(A, Rename(name=f"Big {len(ahead)}"), T0 + len(ahead))
    lagging = GroupLog.from_genesis(ahead.genesis)
    async with two_hosts() as (asker, answerer):
        served = Served(ahead)
        answerer.set_stream_handler(PROTOCOL_ID, served.handle)
        started = time.perf_counter()
        with trio.fail_after(NET_TIMEOUT):
            report = await sync_group(asker, answerer.peer_id, lagging)
        elapsed = time.perf_counter() - started
    print(f"\ngroup sync: {report.received} ops in {elapsed * 1000:.0f} ms")
    same(lagging, ahead)
    assert report.received == 2500 and len(report.accepted) == 2500
    assert elapsed < 5.0
