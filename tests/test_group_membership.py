"""The group membership log (p2pid.groups.membership): records, signatures, the DAG, pending
ops, deterministic replay of concurrent ops, revocation and seniority, catch-up. Sans-IO."""

from __future__ import annotations

import contextlib

import msgspec
import nacl.signing
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from p2pid.groups.membership import (
    MAX_PENDING,
    Accepted,
    Duplicate,
    GroupError,
    GroupLog,
    Pending,
    Rejected,
    changes,
    op_id_of,
    open_op,
    sign_op,
)
from p2pid.wire.groups import (
    MAX_MEMBERS,
    MAX_PARENTS,
    Add,
    Create,
    Demote,
    GroupOp,
    GroupOpBody,
    Leave,
    Promote,
    Remove,
    Rename,
    Role,
    SignedGroupOp,
    decode_op_body,
    decode_signed_op,
    decode_signed_ops,
    encode_signed_op,
    encode_signed_ops,
)

KEYS = [nacl.signing.SigningKey(bytes([i + 1]) * 32) for i in range(12)]
A, B, C, M, N, S = KEYS[:6]  # S: a sock puppet
T0 = 1_700_000_000_000
NONCE = b"n" * 16


def pk(key: nacl.signing.SigningKey) -> bytes:
    return bytes(key.verify_key)


def new_group(name: str = "Family", nonce: bytes = NONCE) -> tuple[GroupLog, SignedGroupOp]:
    return GroupLog.create(A, name, "👪", T0, display_name="Ann", nonce=nonce)


def copy_of(log: GroupLog) -> GroupLog:
    other = GroupLog.from_genesis(log.genesis)
    results = other.add_all(log.ops()[1:])
    assert all(isinstance(result, Accepted) for result in results)
    return other


def raw(
    key: nacl.signing.SigningKey,
    log: GroupLog,
    op: GroupOp,
    *,
    parents: list[bytes] | None = None,
    now: int = T0,
    group_id: bytes | None = None,
) -> SignedGroupOp:
    """An op signed without any of author_op's checks (what a hostile or stale peer sends)."""
    body = GroupOpBody(
        group_id=group_id if group_id is not None else log.group_id,
        parents=sorted(parents if parents is not None else log.heads),
        author=pk(key),
        created_at=now,
        op=op,
    )
    return sign_op(key, body)


def add(member: nacl.signing.SigningKey, name: str, role: Role = Role.MEMBER) -> Add:
    return Add(member=pk(member), role=role, display_name=name)


def family() -> GroupLog:
    """A (creator), B (admin, junior to A), M (member)."""
    log, _ = new_group()
    log.author_op(A, add(B, "Bob", Role.ADMIN), T0 + 1)
    log.author_op(A, add(M, "Mia"), T0 + 2)
    return log


def id_of(signed: SignedGroupOp) -> bytes:
    return op_id_of(signed.body)


# -- the basics ---------------------------------------------------------------------------


def test_create_makes_the_creator_the_first_admin() -> None:
    log, genesis = new_group()
    state = log.state
    assert log.group_id == id_of(genesis) == op_id_of(genesis.body)
    assert (state.name, state.avatar, state.version) == ("Family", "👪", 1)
    assert state.admins == (pk(A),)
    assert state.members[pk(A)].display_name == "Ann"
    assert state.heads == (log.group_id,)
    assert open_op(genesis).group_id is None and open_op(genesis).parents == []
    # Another log started from the shared genesis agrees.
    assert GroupLog.from_genesis(genesis).state == state
    # Same name, same millisecond, same creator: another group all the same (the nonce).
    other, _ = GroupLog.create(A, "Family", "👪", T0, display_name="Ann")
    assert other.group_id != log.group_id


def test_membership_operations_and_their_replay_elsewhere() -> None:
    log = family()
    log.author_op(A, add(N, "Ned"), T0 + 3)
    log.author_op(A, Promote(member=pk(M)), T0 + 4)
    log.author_op(M, add(S, "Sam"), T0 + 5)  # M is an admin now
    log.author_op(A, Demote(member=pk(M)), T0 + 6)
    log.author_op(B, Remove(member=pk(S)), T0 + 7)
    log.author_op(N, Leave(), T0 + 8)
    log.author_op(B, Rename(name="Clan", avatar="CL"), T0 + 9)
    state = log.state
    assert (state.name, state.avatar) == ("Clan", "CL")
    assert set(state.members) == {pk(A), pk(B), pk(M)}
    assert state.admins == (pk(A), pk(B))
    assert state.members[pk(M)].role is Role.MEMBER
    assert state.members[pk(M)].added_by == pk(A)
    assert state.members[pk(M)].added_at == T0 + 2
    assert state.version == len(log) == 10
    assert len(state.heads) == 1
    assert not log.no_effect()
    assert copy_of(log).state == state


def test_changes_between_states() -> None:
    log = family()
    before = log.state
    log.author_op(A, Remove(member=pk(M)), T0 + 3)
    log.author_op(A, add(N, "Ned", Role.ADMIN), T0 + 4)
    log.author_op(A, Demote(member=pk(B)), T0 + 5)
    diff = changes(before, log.state)
    assert diff.added == {pk(N)} and diff.removed == {pk(M)}
    assert diff.demoted == {pk(B)} and not diff.promoted and not diff.renamed
    assert changes(log.state, log.state).empty


def test_last_admin_rules() -> None:
    log = family()
    log.author_op(A, Demote(member=pk(B)), T0 + 3)
    for op in (Leave(), Demote(member=pk(A)), Remove(member=pk(A))):
        with pytest.raises(GroupError, match="last admin"):
            log.author_op(A, op, T0 + 4)
    log.author_op(B, Leave(), T0 + 5)  # a plain member leaves
    log.author_op(A, Remove(member=pk(M)), T0 + 6)
    log.author_op(A, Leave(), T0 + 7)  # the sole member may leave
    assert not log.state.members and not log.state.admins


def test_an_admin_may_step_down_or_leave_when_another_admin_remains() -> None:
    log = family()
    log.author_op(B, Demote(member=pk(B)), T0 + 3)
    log.author_op(A, Promote(member=pk(B)), T0 + 4)
    log.author_op(A, Leave(), T0 + 5)
    assert log.state.admins == (pk(B),)


def test_members_are_bounded() -> None:
    log, _ = new_group()
    for i in range(MAX_MEMBERS - 1):
        log.author_op(A, Add(member=i.to_bytes(32, "big"), display_name=f"m{i}"), T0 + i)
    assert len(log.state.members) == MAX_MEMBERS
    with pytest.raises(GroupError, match="at most"):
        log.author_op(A, add(N, "Ned"), T0)
    assert isinstance(log.add(raw(A, log, add(N, "Ned"))), Rejected)


# -- bad input ------------------------------------------------------------------------------


@pytest.mark.parametrize("op", [add(N, "Ned"), Remove(member=pk(B)), Promote(member=pk(M))])
def test_a_non_admin_cannot_change_membership(op: GroupOp) -> None:
    log = family()
    with pytest.raises(GroupError, match="only an admin"):
        log.author_op(M, op, T0 + 3)
    before = log.state
    result = log.add(raw(M, log, op))
    assert isinstance(result, Rejected) and "only an admin" in result.reason
    assert log.state == before
    # Nor can a stranger.
    assert isinstance(log.add(raw(N, log, add(S, "Sam"))), Rejected)


def test_forged_signatures_are_rejected() -> None:
    log = family()
    before = log.state
    honest = raw(A, log, add(N, "Ned"))
    forged = SignedGroupOp(
        body=honest.body, signature=M.sign(b"p2pid-group-op-v1\0" + honest.body).signature
    )
    result = log.add(forged)
    assert isinstance(result, Rejected) and "not signed" in result.reason
    assert log.state == before
    # The real op is not poisoned by the forgery of the same body.
    assert isinstance(log.add(honest), Accepted)


def test_every_single_bit_flip_is_rejected() -> None:
    log = family()
    before = log.state
    honest = raw(A, log, add(N, "Ned"))
    for bit in range(len(honest.body) * 8):
        body = bytearray(honest.body)
        body[bit // 8] ^= 1 << (bit % 8)
        result = log.add(SignedGroupOp(body=bytes(body), signature=honest.signature))
        assert isinstance(result, Rejected), bit
    assert log.state == before
    assert isinstance(log.add(honest), Accepted)


def test_an_op_of_another_group_is_rejected() -> None:
    log = family()
    other, other_genesis = new_group(nonce=b"o" * 16)
    foreign = other.author_op(A, add(N, "Ned"), T0 + 3)
    for signed in (foreign, other_genesis):
        result = log.add(signed)
        assert isinstance(result, Rejected) and "another group" in result.reason
    assert pk(N) not in log.state.members


def test_malformed_and_oversized_ops_are_rejected() -> None:
    log = family()
    for bad in (
        Rename(name="x" * 65),
        Rename(name=""),
        Rename(name="ok", avatar="123456789"),
        Rename(name="bell\x07"),
        Rename(name="\u202eevil"),
    ):
        with pytest.raises(GroupError, match="invalid operation"):
            log.author_op(A, bad, T0 + 3)
        result = log.add(raw(A, log, bad))  # signed anyway by a hostile admin's client
        assert isinstance(result, Rejected) and "malformed" in result.reason
    oversized = SignedGroupOp(body=b"\x80" * 4096, signature=b"\0" * 64)
    assert isinstance(log.add(oversized), Rejected)
    short_signature = SignedGroupOp(body=raw(A, log, Leave()).body, signature=b"\0" * 63)
    assert isinstance(log.add(short_signature), Rejected)
    with pytest.raises(GroupError):
        log.author_op(A, Add(member=b"short", display_name="x"), T0)
    assert log.state.name == "Family" and not log.no_effect()


def test_structural_rules_are_rejected() -> None:
    log = family()
    head = sorted(log.heads)
    cases = {
        "genesis": raw(A, log, Create(name="x", display_name="x", nonce=NONCE)),
        "1..16 parents": raw(A, log, Rename(name="x"), parents=[]),
        "each parent once": sign_op(
            A,
            GroupOpBody(
                group_id=log.group_id,
                parents=head + head,
                author=pk(A),
                created_at=T0,
                op=Rename(name="x"),
            ),
        ),
    }
    for reason, signed in cases.items():
        result = log.add(signed)
        assert isinstance(result, Rejected) and reason in result.reason
    with pytest.raises(GroupError):
        log.author_op(A, Create(name="x", display_name="x", nonce=NONCE), T0)
    with pytest.raises(GroupError, match="not the genesis"):
        GroupLog.from_genesis(log.ops()[1])


def test_a_replayed_op_is_a_duplicate_and_changes_nothing() -> None:
    log = family()
    signed = log.author_op(A, Remove(member=pk(M)), T0 + 3)
    before = log.state
    for _ in range(3):
        assert log.add(signed) == Duplicate(id_of(signed))
        assert log.add(log.genesis) == Duplicate(log.group_id)
    assert log.state == before and log.state.version == 4
    # A re-add needs a new op (a new id), not the old one again.
    old_add = log.ops()[2]
    assert log.add(old_add) == Duplicate(id_of(old_add))
    assert pk(M) not in log.state.members


# -- pending ops -----------------------------------------------------------------------------


def test_ops_arriving_before_their_parents_wait_and_then_apply() -> None:
    source = family()
    for i in range(4):
        source.author_op(A, Rename(name=f"name {i}"), T0 + 10 + i)
    ops = source.ops()[1:]
    log = GroupLog.from_genesis(source.genesis)
    for signed in reversed(ops[1:]):
        result = log.add(signed)
        assert isinstance(result, Pending)
    assert log.add(ops[-1]) == Pending(id_of(ops[-1]), frozenset({id_of(ops[-2])}))
    assert log.missing() == {id_of(ops[0])}
    assert log.pending_count == len(ops) - 1
    result = log.add(ops[0])
    assert isinstance(result, Accepted)
    assert result.released == tuple(id_of(signed) for signed in ops[1:])
    assert log.state == source.state and log.pending_count == 0 and not log.missing()


def test_pending_ops_are_bounded() -> None:
    log = family()
    for i in range(MAX_PENDING):
        result = log.add(raw(A, log, Rename(name="x"), parents=[i.to_bytes(32, "big")]))
        assert isinstance(result, Pending)
    result = log.add(raw(A, log, Rename(name="y"), parents=[b"\xff" * 32]))
    assert isinstance(result, Rejected) and "too many pending" in result.reason
    assert log.pending_count == MAX_PENDING and len(log.missing()) == MAX_PENDING
    # Ops whose parents are known still go in.
    assert isinstance(log.add(raw(A, log, Rename(name="z"))), Accepted)


def test_a_pending_op_citing_a_rejected_op_is_dropped() -> None:
    log = family()
    bad = raw(M, log, add(N, "Ned"))  # M is no admin
    elsewhere = b"\x07" * 32  # a parent nobody has
    child = raw(A, log, Rename(name="later"), parents=[id_of(bad), elsewhere])
    grandchild = raw(A, log, Rename(name="later still"), parents=[id_of(child)])
    assert isinstance(log.add(grandchild), Pending)
    assert isinstance(log.add(child), Pending)
    assert log.missing() == {id_of(bad), elsewhere}
    result = log.add(bad)
    assert isinstance(result, Rejected)
    assert set(result.dropped) == {id_of(child), id_of(grandchild)}
    assert log.pending_count == 0 and not log.missing()
    again = log.add(child)
    assert isinstance(again, Rejected) and "rejected operation" in again.reason
    late = raw(A, log, Rename(name="x"), parents=[id_of(bad)])
    assert isinstance(log.add(late), Rejected)


# -- catch-up ------------------------------------------------------------------------------


def test_ops_after_gives_a_lagging_log_exactly_what_it_lacks() -> None:
    source = family()
    lagging = copy_of(source)
    for i in range(6):
        source.author_op(A, add(KEYS[6 + i], f"k{i}"), T0 + 10 + i)
    sent = source.ops_after(lagging.heads)
    assert {id_of(signed) for signed in sent} == set(source.order()) - set(lagging.order())
    assert sent == source.ops()[len(lagging) :]
    results = lagging.add_all(sent)
    assert all(isinstance(result, Accepted) for result in results)
    assert lagging.state == source.state
    assert source.ops_after(source.heads) == []
    assert source.ops_after(set()) == source.ops()


def test_ops_after_with_a_fork_on_each_side() -> None:
    source = family()
    lagging = copy_of(source)
    for i in range(3):
        source.author_op(A, add(KEYS[6 + i], f"k{i}"), T0 + 10 + i)
    own = lagging.author_op(B, Rename(name="Bobs"), T0 + 20)
    # The lagging log's head is unknown to the source: ignored, so everything is sent...
    assert source.ops_after(lagging.heads) == source.ops()
    # ...unless the peer names more of what it holds (its recent ops, or all of them).
    sent = source.ops_after(lagging.order())
    assert {id_of(signed) for signed in sent} == set(source.order()) - set(lagging.order())
    assert all(isinstance(result, Accepted) for result in lagging.add_all(sent))
    back = lagging.ops_after(source.heads)
    assert back == [own]
    assert isinstance(source.add(own), Accepted)
    assert source.state == lagging.state and len(source.state.heads) == 2
    merge = source.author_op(A, Rename(name="Merged"), T0 + 30)
    assert source.ops_after(lagging.heads) == [merge]
    assert lagging.ops_after(source.heads) == lagging.ops()  # the merge is unknown there


def test_a_log_citing_more_than_16_heads_merges_in_two_steps() -> None:
    log = family()
    base = sorted(log.heads)
    forks = [raw(A, log, Rename(name=f"fork {i}"), parents=base) for i in range(MAX_PARENTS + 4)]
    assert all(isinstance(log.add(signed), Accepted) for signed in forks)
    assert len(log.heads) == MAX_PARENTS + 4
    first = log.author_op(A, Rename(name="merge"), T0 + 50)
    assert len(open_op(first).parents) == MAX_PARENTS
    assert len(log.heads) == 5
    log.author_op(A, Rename(name="merged"), T0 + 51)
    assert len(log.heads) == 1 and log.state.name == "merged"
    assert copy_of(log).state == log.state


# -- concurrency -----------------------------------------------------------------------------


def test_rename_against_rename_is_decided_by_the_order() -> None:
    log = family()
    other = copy_of(log)
    first = log.author_op(A, Rename(name="Ann's"), T0 + 3)
    second = other.author_op(B, Rename(name="Bob's"), T0 + 3)
    log.add(second)
    other.add(first)
    assert log.state == other.state
    order = log.order()
    later = max((first, second), key=lambda signed: order.index(id_of(signed)))
    rename = open_op(later).op
    assert isinstance(rename, Rename) and log.state.name == rename.name


def test_add_against_remove_of_the_same_member_is_deterministic() -> None:
    log = family()
    other = copy_of(log)
    removal = log.author_op(A, Remove(member=pk(M)), T0 + 3)
    readd = log.author_op(A, add(M, "Mia again"), T0 + 4)
    concurrent = other.author_op(B, Remove(member=pk(M)), T0 + 3)
    finals = []
    for ops in ([removal, readd, concurrent], [concurrent, readd, removal]):
        fresh = copy_of(family())
        fresh.add_all(ops)
        assert fresh.pending_count == 0
        finals.append(fresh)
    assert finals[0].state == finals[1].state
    order = finals[0].order()
    present = order.index(id_of(concurrent)) < order.index(id_of(readd))
    assert (pk(M) in finals[0].state.members) is present
    assert id_of(removal) != id_of(concurrent)


def test_a_junior_admin_cannot_remove_a_senior_one() -> None:
    log = family()
    other = copy_of(log)
    with pytest.raises(GroupError, match="more senior"):
        other.author_op(B, Remove(member=pk(A)), T0 + 3)
    counter = raw(B, other, Remove(member=pk(A)))
    removal = log.author_op(A, Remove(member=pk(B)), T0 + 3)
    for target in (log, other):
        result = target.add(counter)
        assert isinstance(result, Rejected) and "more senior" in result.reason
    other.add(removal)
    assert log.state == other.state
    assert set(log.state.members) == {pk(A), pk(M)}


def test_two_admins_promoted_concurrently_who_remove_each_other() -> None:
    log, _ = new_group()
    log.author_op(A, add(B, "Bob"), T0 + 1)
    log.author_op(A, add(C, "Cat"), T0 + 2)
    base = sorted(log.heads)
    promote_b = raw(A, log, Promote(member=pk(B)), parents=base)  # A forks
    promote_c = raw(A, log, Promote(member=pk(C)), parents=base)
    b_view, c_view = copy_of(log), copy_of(log)
    b_view.add(promote_b)
    c_view.add(promote_c)
    b_removes_c = b_view.author_op(B, Remove(member=pk(C)), T0 + 3)
    c_removes_b = c_view.author_op(C, Remove(member=pk(B)), T0 + 3)
    everything = [promote_b, promote_c, b_removes_c, c_removes_b]
    states = []
    for ops in (everything, everything[::-1], [c_removes_b, promote_b, b_removes_c, promote_c]):
        fresh = copy_of(log)
        fresh.add_all(ops)
        assert fresh.pending_count == 0
        states.append(fresh.state)
        order = fresh.order()
    assert states[0] == states[1] == states[2]
    # The one promoted first in the order is the senior; the senior stays, the other goes.
    senior = B if order.index(id_of(promote_b)) < order.index(id_of(promote_c)) else C
    junior = C if senior is B else B
    assert states[0].is_admin(pk(senior)) and not states[0].is_member(pk(junior))


def test_a_removed_admins_later_ops_have_no_effect() -> None:
    log = family()
    before_removal = sorted(log.heads)
    removal = log.author_op(A, Remove(member=pk(B)), T0 + 10)
    expected = log.state
    # Citing the removal: rejected outright (B is not a member in the op's own past).
    citing = raw(B, log, add(S, "Sam"))
    result = log.add(citing)
    assert isinstance(result, Rejected) and "not a member" in result.reason
    # Not citing it: "concurrent" ops on the old heads, with many ids (some sort before the
    # removal's, so the tie-break alone would apply them). They go in the DAG, to no effect.
    stale_ops: list[GroupOp] = [
        add(S, "Sam", Role.ADMIN),
        Rename(name="Bob's now"),
        Promote(member=pk(M)),
        Remove(member=pk(M)),
        Demote(member=pk(B)),
    ]
    stale = [
        raw(B, log, op, parents=before_removal, now=T0 + 11 + i)
        for i in range(4)
        for op in stale_ops
    ]
    assert any(id_of(signed) < id_of(removal) for signed in stale)
    # A sock puppet the stale add made admin (in its own past) adds someone: no effect either;
    # citing the removal too, it is not even a member in its own past.
    puppet_add = stale[0]
    readd = raw(S, log, add(N, "Ned"), parents=[id_of(puppet_add)], now=T0 + 30)
    puppet_citing = raw(S, log, add(B, "Bob"), parents=[id_of(puppet_add), id_of(removal)])
    # B also tries to remove A in return: refused, A is senior.
    counter = raw(B, log, Remove(member=pk(A)), parents=before_removal, now=T0 + 31)
    assert isinstance(log.add(counter), Rejected)
    for signed in [*stale, readd]:
        assert isinstance(log.add(signed), Accepted)
    result = log.add(puppet_citing)
    assert isinstance(result, Rejected) and "not a member" in result.reason
    no_effect = log.no_effect()
    assert all("revoked" in no_effect[id_of(signed)] for signed in stale)
    assert id_of(readd) in no_effect
    state = log.state
    assert (state.name, state.avatar, dict(state.members), state.admins) == (
        expected.name,
        expected.avatar,
        dict(expected.members),
        expected.admins,
    )
    # The same, delivered before the removal to a log that had not seen it yet.
    fresh = copy_of(family())
    fresh.add_all([*stale, readd, counter])
    assert fresh.state.is_admin(pk(S)) and fresh.state.name == "Bob's now"  # B was admin then
    fresh.add(removal)
    assert fresh.state == state


def test_a_demotion_voids_concurrent_admin_ops_but_not_a_leave() -> None:
    log = family()
    other = copy_of(log)
    demotion = log.author_op(A, Demote(member=pk(B)), T0 + 3)
    stale_add = other.author_op(B, add(N, "Ned"), T0 + 3)
    stale_leave = other.author_op(B, Leave(), T0 + 4)
    log.add_all([stale_add, stale_leave])
    other.add(demotion)
    assert log.state == other.state
    assert not log.state.is_member(pk(N)) and not log.state.is_member(pk(B))
    assert (
        id_of(stale_leave) not in log.no_effect()
        or "revoked" not in (log.no_effect()[id_of(stale_leave)])
    )


def test_a_removal_by_a_revoked_admin_does_not_void_its_targets_ops() -> None:
    """A (senior) removes B; B concurrently removes M: B's removal is out, so M's concurrent
    ops (a rename, as an admin) stand."""
    log = family()
    log.author_op(A, Promote(member=pk(M)), T0 + 3)
    base = sorted(log.heads)
    removal = raw(A, log, Remove(member=pk(B)), parents=base, now=T0 + 4)
    b_removes_m = raw(B, log, Remove(member=pk(M)), parents=base, now=T0 + 4)
    m_renames = raw(M, log, Rename(name="Mia's"), parents=base, now=T0 + 4)
    log.add_all([b_removes_m, m_renames, removal])
    assert set(log.state.members) == {pk(A), pk(M)}
    assert log.state.name == "Mia's"
    assert "revoked" in log.no_effect()[id_of(b_removes_m)]


# -- convergence: the same set of ops, any order, the same state -------------------------------

POOL = KEYS[:8]
OP_KINDS = ["add", "add_admin", "remove", "promote", "demote", "rename", "leave"]


def make_op(kind: str, target: nacl.signing.SigningKey, n: int) -> GroupOp:
    if kind == "add":
        return add(target, f"p{n}")
    if kind == "add_admin":
        return add(target, f"p{n}", Role.ADMIN)
    if kind == "remove":
        return Remove(member=pk(target))
    if kind == "promote":
        return Promote(member=pk(target))
    if kind == "demote":
        return Demote(member=pk(target))
    if kind == "rename":
        return Rename(name=f"name {n}", avatar=str(n % 10))
    return Leave()


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(st.data())
def test_any_delivery_order_gives_the_same_state(data: st.DataObject) -> None:
    origin, genesis = new_group()
    origin.author_op(A, add(B, "Bob", Role.ADMIN), T0)
    origin.author_op(A, add(C, "Cat", Role.ADMIN), T0)
    replicas = {0: origin, 1: copy_of(origin), 2: copy_of(origin)}
    authors = {0: A, 1: B, 2: C}
    steps = data.draw(st.integers(4, 24), label="steps")
    for step in range(steps):
        who = data.draw(st.integers(0, 2), label="replica")
        if data.draw(st.integers(0, 3), label="sync?") == 0:
            source = replicas[data.draw(st.integers(0, 2), label="from")]
            replicas[who].add_all(source.ops_after(replicas[who].heads))
            continue
        kind = data.draw(st.sampled_from(OP_KINDS), label="kind")
        target = data.draw(st.sampled_from(POOL), label="target")
        with contextlib.suppress(GroupError):
            replicas[who].author_op(authors[who], make_op(kind, target, step), T0 + step)
    # Everyone's ops, merged in a valid order: every honest op is accepted.
    reference = GroupLog.from_genesis(genesis)
    for replica in replicas.values():
        for result in reference.add_all(replica.ops()):
            assert isinstance(result, Accepted | Duplicate), result
    ops = reference.ops()[1:]
    for _ in range(3):
        shuffled = data.draw(st.permutations(ops), label="delivery")
        log = GroupLog.from_genesis(genesis)
        for result in log.add_all(shuffled):
            assert isinstance(result, Accepted | Pending), result
        assert log.pending_count == 0
        assert log.state == reference.state
        assert log.order() == reference.order()
        assert dict(log.no_effect()) == dict(reference.no_effect())
    # Replicas that sync with everyone converge to the same state too.
    for replica in replicas.values():
        replica.add_all(reference.ops_after(replica.heads))
        assert replica.state == reference.state
    # The state holds the invariants whatever the history.
    state = reference.state
    assert set(state.admins) <= set(state.members)
    assert state.admins or len(state.members) <= 1 or not state.members
    assert all(state.members[key].role is Role.ADMIN for key in state.admins)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_hostile_ops_on_any_parents_in_any_order(data: st.DataObject) -> None:
    """Ops by anyone (members, strangers, removed admins) on any earlier ops: acceptance and
    the state depend on the set alone, never on the delivery order."""
    base = family()
    base.author_op(A, add(C, "Cat", Role.ADMIN), T0 + 3)
    reference = copy_of(base)
    every_id = reference.order()
    hostile: list[SignedGroupOp] = []
    for i in range(data.draw(st.integers(3, 24), label="ops")):
        author = data.draw(st.sampled_from([A, B, C, A, B, C, M, N]), label="author")
        kind = data.draw(st.sampled_from([*OP_KINDS, "remove", "demote"]), label="kind")
        target = data.draw(st.sampled_from(POOL), label="target")
        # Mostly on accepted ops (forks, stale heads), sometimes on rejected ones.
        known = reference.order() if data.draw(st.integers(0, 9), label="sane?") else every_id
        parents = data.draw(
            st.lists(st.sampled_from(known), min_size=1, max_size=3, unique=True), label="parents"
        )
        signed = raw(author, base, make_op(kind, target, i), parents=parents, now=T0 + i)
        hostile.append(signed)
        every_id.append(id_of(signed))
        reference.add(signed)  # parents before children
    assert reference.pending_count == 0
    for _ in range(3):
        log = copy_of(base)
        log.add_all(data.draw(st.permutations(hostile), label="delivery"))
        assert log.pending_count == 0
        assert log.order() == reference.order()
        assert log.state == reference.state
        assert dict(log.no_effect()) == dict(reference.no_effect())


# -- wire ------------------------------------------------------------------------------------


def test_wire_round_trip_and_strict_decoding() -> None:
    log = family()
    ops = log.ops()
    assert decode_signed_ops(encode_signed_ops(ops)) == ops
    assert decode_signed_op(encode_signed_op(ops[1])) == ops[1]
    body = decode_op_body(ops[1].body)
    assert isinstance(body.op, Add) and body.op.member == pk(B)
    bad_bodies = [
        msgspec.msgpack.encode({"author": pk(A), "created_at": 1, "op": {"type": "explode"}}),
        msgspec.msgpack.encode({"author": pk(A)[:31], "created_at": 1, "op": {"type": "leave"}}),
        msgspec.msgpack.encode({"author": pk(A), "created_at": -1, "op": {"type": "leave"}}),
        msgspec.msgpack.encode({"author": pk(A), "op": {"type": "leave"}}),
        msgspec.msgpack.encode(
            {"author": pk(A), "created_at": 1, "parents": [b"x" * 32] * 17, "op": {"type": "leave"}}
        ),
    ]
    for data in bad_bodies:
        with pytest.raises(msgspec.DecodeError):
            decode_op_body(data)
    with pytest.raises(msgspec.DecodeError):
        decode_signed_op(msgspec.msgpack.encode({"body": b"x", "signature": b"short"}))
    # Unknown fields are ignored (a later minor version may add optional ones).
    extended = msgspec.msgpack.encode(
        {"author": pk(A), "created_at": 1, "op": {"type": "leave"}, "future": 1}
    )
    assert decode_op_body(extended).op == Leave()
