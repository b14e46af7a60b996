"""A group's membership log: signed operations in a DAG, replayed to one state by every member.

Sans-IO: no network, no store, no clock (callers pass `now`). The records are in
p2pid.wire.groups.

Operations
----------
An operation (op) is a `GroupOpBody` signed by its author's identity key: Ed25519 over
``b"p2pid-group-op-v1\\0" + body`` (the exact MessagePack bytes). Its id is
``BLAKE2b-256(body, person=b"p2pid-group-op")``: the hash of the signed body bytes, so the same
op has the same id whatever signature bytes carry it. The genesis op is a ``Create`` with no
parents and no group id; the group's id is the genesis op's id. Every other op names the group
and 1..16 distinct parents: the ops its author knew as heads (ops nothing else cites yet). Ops
therefore form a DAG rooted at the genesis; an admin signing two ops on the same parents (a
fork) is no error, the branches simply merge when someone cites both.

    create(name, avatar, display_name, nonce)  genesis only; its author is the first admin
    add(member, role, display_name)            an admin adds an identity (as admin or member)
    remove(member)                             an admin removes a member (or themselves)
    leave()                                    any member leaves
    promote(member) / demote(member)           an admin changes a member's role
    rename(name, avatar)                       an admin renames the group

Names are 1..64 characters, avatars 0..8 (an emoji or initials), neither with control
characters; a group holds at most 500 members.

The rules of one op against a state
-----------------------------------
- The author must be a member; for every op but ``leave``, an admin.
- ``add`` of a present member, ``remove``/``promote``/``demote`` of a non-member, ``promote``
  of an admin and ``demote`` of a non-admin are invalid; so is an ``add`` past 500 members.
- Seniority: admins rank by when they (last) became admin, the creator first. An admin may
  remove or demote only admins junior to them (and any plain member, and themselves).
- The last admin cannot be removed or demoted, nor leave while other members remain (promote
  someone first); a sole member may leave.

The state is a pure function of the SET of accepted ops
-------------------------------------------------------
1. Linearisation: a topological order of the DAG, ties broken by op id bytes (Kahn's algorithm
   with a min-heap). Adding an op never reorders the others, it only inserts itself.
2. Revocation (removal wins over what the removed did concurrently): a ``remove(T)`` or
   ``demote(T)`` by someone other than T revokes every op of T that is concurrent with it
   (neither an ancestor nor a descendant): those ops have no effect (a ``demote`` spares T's
   ``leave``). A revocation is itself an admin op of its author, so revocations can revoke each
   other; which are in force is the grounded extension of that "attacks" relation (in force:
   every revocation attacking it is out; out: some revocation in force attacks it; the
   undecided remainder is not in force and the order of step 3 decides: with seniority that
   needs two admins whose rank differs between the two ops' pasts, e.g. admins promoted
   concurrently who remove each other, and step 3 then keeps the senior one).
3. Replay: from the genesis state, apply the ops in the linearised order; an op revoked in step
   2, or invalid at that point of the order (rules above), is kept in the DAG (ids and parents
   stay consistent) but has no effect. Every member computes the same result.

Acceptance into the DAG (per op, decided by its own causal past only, so deterministic)
-----------------------------------------------------------------------------------------
An op is accepted only if its signature verifies, it decodes strictly and fits the bounds, it
belongs to this group, and it is valid, by the rules above, in the state computed from its
ancestors alone (its causal past). An op citing an unknown parent is held as pending (at most
1,000; past that it is refused, not remembered, and must be sent again: catch-up in the order
`ops_after` gives never needs pending) and is accepted or rejected as soon as its parents are
all known; an op citing a rejected op is rejected. Rejections that depend on the signed body
alone are remembered (bounded), so a replay costs a dictionary lookup. The author's clock
(``created_at``) is informative only: it never decides anything.

Why revocation and seniority (beyond "author is an admin in its causal past")
------------------------------------------------------------------------------
The causal-past check stops an op that cites its author's removal, but a removed admin can
always sign ops on older parents, concurrent with the removal; op ids are hashes the author
controls (one try in two sorts before the removal, and grinding ``created_at`` does better),
so with the tie-break alone such an op would take effect. Step 2 voids every op of the removed
admin that the removal did not see. Seniority stops the removed admin from voiding the removal
in turn with a concurrent counter-removal of the remover: only one of two admins may remove the
other, so the two cannot revoke each other (except after concurrent promotions, see step 2).
The cost: a junior admin cannot remove a senior one (nor the creator); that takes the senior
admin leaving, or a new group.
"""

from __future__ import annotations

import heapq
from collections import OrderedDict, deque
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, replace
from types import MappingProxyType

import msgspec
import nacl.encoding
import nacl.exceptions
import nacl.hash
import nacl.signing
import nacl.utils

from p2pid.wire.groups import (
    GROUP_OP_CONTEXT,
    MAX_MEMBERS,
    MAX_OP_BODY_BYTES,
    MAX_PARENTS,
    NONCE_BYTES,
    OP_ID_PERSON,
    SIGNATURE_BYTES,
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
    encode_op_body,
)

MAX_PENDING = 1000
MAX_REMEMBERED_REJECTIONS = 10_000
_CLOSED_STATES_CACHED = 64


class GroupError(ValueError):
    """An op this log refuses to author, or a genesis it cannot start from; says why."""


# -- results and states --------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Member:
    role: Role
    display_name: str
    added_by: bytes  # identity key of the admin whose op added them (the creator: themselves)
    added_at: int  # ms, that op's created_at (the author's clock)


@dataclass(frozen=True, slots=True)
class GroupState:
    group_id: bytes
    name: str
    avatar: str
    members: Mapping[bytes, Member]  # identity key -> member (read-only)
    admins: tuple[bytes, ...]  # most senior first
    heads: tuple[bytes, ...]  # ids of the ops nothing cites yet, sorted
    version: int  # how many ops the log holds (effective or not); grows with every accepted op

    def is_member(self, identity_key: bytes) -> bool:
        return identity_key in self.members

    def is_admin(self, identity_key: bytes) -> bool:
        member = self.members.get(identity_key)
        return member is not None and member.role is Role.ADMIN


@dataclass(frozen=True, slots=True)
class MembershipChanges:
    added: frozenset[bytes]
    removed: frozenset[bytes]  # removed or left: rotate group sessions away from them
    promoted: frozenset[bytes]
    demoted: frozenset[bytes]
    renamed: bool

    @property
    def empty(self) -> bool:
        return not (self.added or self.removed or self.promoted or self.demoted or self.renamed)


def changes(before: GroupState, after: GroupState) -> MembershipChanges:
    """What differs between two states of one group (e.g. before and after a sync)."""
    old, new = set(before.members), set(after.members)
    kept = old & new
    return MembershipChanges(
        added=frozenset(new - old),
        removed=frozenset(old - new),
        promoted=frozenset(k for k in kept if after.is_admin(k) and not before.is_admin(k)),
        demoted=frozenset(k for k in kept if before.is_admin(k) and not after.is_admin(k)),
        renamed=(before.name, before.avatar) != (after.name, after.avatar),
    )


@dataclass(frozen=True, slots=True)
class Accepted:
    op_id: bytes
    released: tuple[bytes, ...] = ()  # pending ops accepted in consequence, in a valid order
    dropped: tuple[bytes, ...] = ()  # pending ops rejected in consequence


@dataclass(frozen=True, slots=True)
class Duplicate:
    op_id: bytes


@dataclass(frozen=True, slots=True)
class Pending:
    op_id: bytes
    missing: frozenset[bytes]  # parents not in the log yet (some may be pending themselves)


@dataclass(frozen=True, slots=True)
class Rejected:
    op_id: bytes
    reason: str
    dropped: tuple[bytes, ...] = ()  # pending ops that cited it, rejected with it


AddResult = Accepted | Duplicate | Pending | Rejected


# -- signing and opening -------------------------------------------------------------------


def op_id_of(body: bytes) -> bytes:
    """The id of an op: BLAKE2b-256 of its signed body bytes."""
    return nacl.hash.blake2b(
        body, digest_size=32, person=OP_ID_PERSON.ljust(16, b"\0"), encoder=nacl.encoding.RawEncoder
    )


def sign_op(signing_key: nacl.signing.SigningKey, body: GroupOpBody) -> SignedGroupOp:
    """Encode and sign `body` as it is, without any check (GroupLog.author_op checks first)."""
    encoded = encode_op_body(body)
    return SignedGroupOp(
        body=encoded, signature=signing_key.sign(GROUP_OP_CONTEXT + encoded).signature
    )


def open_op(signed: SignedGroupOp) -> GroupOpBody:
    """Check sizes, decode strictly and verify the author's signature; GroupError if not."""
    if len(signed.body) > MAX_OP_BODY_BYTES:
        raise GroupError(f"the operation is over {MAX_OP_BODY_BYTES} bytes")
    if len(signed.signature) != SIGNATURE_BYTES:
        raise GroupError("malformed signature")
    try:
        body = decode_op_body(signed.body)
    except msgspec.DecodeError as error:
        raise GroupError(f"malformed operation: {error}") from None
    try:
        nacl.signing.VerifyKey(body.author).verify(GROUP_OP_CONTEXT + signed.body, signed.signature)
    except (nacl.exceptions.BadSignatureError, nacl.exceptions.ValueError, ValueError):
        raise GroupError("the operation is not signed by its author") from None
    return body


# -- replay (pure functions of a set of ops) -----------------------------------------------


@dataclass(frozen=True, slots=True)
class _Node:
    op_id: bytes
    signed: SignedGroupOp
    body: GroupOpBody


@dataclass(slots=True)
class _Work:
    """A state under construction. Objects held by a log's caches are never mutated."""

    name: str
    avatar: str
    members: dict[bytes, Member]
    ranks: dict[bytes, int]  # admin -> position of the op that made them admin (lower: senior)

    def copy(self) -> _Work:
        return _Work(self.name, self.avatar, dict(self.members), dict(self.ranks))


def _genesis_work(body: GroupOpBody) -> _Work:
    assert isinstance(body.op, Create)
    creator = Member(Role.ADMIN, body.op.display_name, body.author, body.created_at)
    return _Work(body.op.name, body.op.avatar, {body.author: creator}, {body.author: 0})


def _check(work: _Work, body: GroupOpBody) -> str | None:
    """Why `body` is invalid in state `work`, or None if it is valid there."""
    op, author = body.op, body.author
    if isinstance(op, Create):
        return "only the genesis creates the group"
    if author not in work.members:
        return "the author is not a member"
    if isinstance(op, Leave):
        if author in work.ranks and len(work.ranks) == 1 and len(work.members) > 1:
            return "the last admin cannot leave while others remain (promote someone first)"
        return None
    if author not in work.ranks:
        return "only an admin may change the group"
    if isinstance(op, Rename):
        return None
    if isinstance(op, Add):
        if op.member in work.members:
            return "already a member"
        if len(work.members) >= MAX_MEMBERS:
            return f"a group holds at most {MAX_MEMBERS} members"
        return None
    target = op.member
    if target not in work.members:
        return "not a member"
    if isinstance(op, Promote):
        return "already an admin" if target in work.ranks else None
    if target in work.ranks:  # remove or demote an admin
        if len(work.ranks) == 1:
            return "the last admin cannot be removed or demoted"
        if target != author and work.ranks[target] < work.ranks[author]:
            return "only a more senior admin may remove or demote an admin"
    elif isinstance(op, Demote):
        return "not an admin"
    return None


def _apply(work: _Work, body: GroupOpBody, position: int) -> None:
    """Apply a valid op (checked by _check) at `position` of the order being replayed."""
    op = body.op
    if isinstance(op, Add):
        work.members[op.member] = Member(op.role, op.display_name, body.author, body.created_at)
        if op.role is Role.ADMIN:
            work.ranks[op.member] = position
    elif isinstance(op, Remove | Leave):
        gone = body.author if isinstance(op, Leave) else op.member
        del work.members[gone]
        work.ranks.pop(gone, None)
    elif isinstance(op, Promote):
        work.members[op.member] = replace(work.members[op.member], role=Role.ADMIN)
        work.ranks[op.member] = position
    elif isinstance(op, Demote):
        work.members[op.member] = replace(work.members[op.member], role=Role.MEMBER)
        del work.ranks[op.member]
    elif isinstance(op, Rename):
        work.name, work.avatar = op.name, op.avatar


def _linearise(nodes: Mapping[bytes, _Node], ids: Collection[bytes]) -> list[bytes]:
    """Kahn's algorithm over `ids` (closed under parents), ties broken by the smallest op id."""
    waiting: dict[bytes, int] = {}
    children: dict[bytes, list[bytes]] = {}
    for op_id in ids:
        parents = nodes[op_id].body.parents
        waiting[op_id] = len(parents)
        for parent in parents:
            children.setdefault(parent, []).append(op_id)
    ready = [op_id for op_id, count in waiting.items() if count == 0]
    heapq.heapify(ready)
    order: list[bytes] = []
    while ready:
        op_id = heapq.heappop(ready)
        order.append(op_id)
        for child in children.get(op_id, ()):
            waiting[child] -= 1
            if waiting[child] == 0:
                heapq.heappush(ready, child)
    return order


@dataclass(slots=True)
class _Replay:
    order: list[bytes]
    work: _Work
    no_effect: dict[bytes, str]  # op id -> why it has no effect


def _replay(nodes: Mapping[bytes, _Node], order: list[bytes]) -> _Replay:
    """Steps 2 and 3 of the module docstring over `order` (a linearisation from the genesis)."""
    bodies = [nodes[op_id].body for op_id in order]
    # Revocations: remove/demote of someone else, by target.
    revocations: dict[bytes, list[tuple[int, bool]]] = {}
    for index, body in enumerate(bodies):
        op = body.op
        if isinstance(op, Remove | Demote) and op.member != body.author:
            revocations.setdefault(op.member, []).append((index, isinstance(op, Remove)))
    in_force: dict[bytes, list[tuple[int, bool]]] = {}
    ancestors: list[int] = []  # bit j of ancestors[i]: order[j] is an ancestor of order[i]
    if revocations.keys() & {body.author for body in bodies[1:]}:
        position = {op_id: index for index, op_id in enumerate(order)}
        for body in bodies:
            bits = 0
            for parent in body.parents:
                j = position[parent]
                bits |= ancestors[j] | (1 << j)
            ancestors.append(bits)
        in_force = _revocations_in_force(bodies, revocations, ancestors)

    def concurrent(i: int, j: int) -> bool:
        return i != j and not (ancestors[i] >> j) & 1 and not (ancestors[j] >> i) & 1

    work = _genesis_work(bodies[0])
    no_effect: dict[bytes, str] = {}
    for index in range(1, len(order)):
        body = bodies[index]
        revoked = any(
            (is_remove or not isinstance(body.op, Leave)) and concurrent(by, index)
            for by, is_remove in in_force.get(body.author, ())
        )
        reason = (
            "revoked by a concurrent removal or demotion of its author"
            if revoked
            else _check(work, body)
        )
        if reason is not None:
            no_effect[order[index]] = reason
            continue
        _apply(work, body, index)
    return _Replay(order, work, no_effect)


def _revocations_in_force(
    bodies: list[GroupOpBody],
    revocations: dict[bytes, list[tuple[int, bool]]],
    ancestors: list[int],
) -> dict[bytes, list[tuple[int, bool]]]:
    """The grounded extension: revocation Q attacks revocation R if Q revokes R's author and
    the two are concurrent."""

    def concurrent(i: int, j: int) -> bool:
        return i != j and not (ancestors[i] >> j) & 1 and not (ancestors[j] >> i) & 1

    attackers: dict[int, list[int]] = {}
    for revs in revocations.values():
        for index, _ in revs:
            author = bodies[index].author
            attackers[index] = [q for q, _ in revocations.get(author, ()) if concurrent(q, index)]
    label: dict[int, bool] = {}  # True: in force; False: out; absent: undecided
    changed = True
    while changed:
        changed = False
        for index, attacked_by in attackers.items():
            if index in label:
                continue
            if all(label.get(q) is False for q in attacked_by):
                label[index] = True
                changed = True
            elif any(label.get(q) is True for q in attacked_by):
                label[index] = False
                changed = True
    in_force: dict[bytes, list[tuple[int, bool]]] = {}
    for target, revs in revocations.items():
        kept = [(index, is_remove) for index, is_remove in revs if label.get(index) is True]
        if kept:
            in_force[target] = kept
    return in_force


# -- the log -------------------------------------------------------------------------------


class GroupLog:
    """One group's ops as this member knows them, and the state they replay to.

    Build one with `create` (a new group) or `from_genesis` (a group someone shares), feed it
    ops with `add` (from peers, in any order), author ops with `author_op`.
    """

    def __init__(self, genesis: _Node) -> None:
        self._group_id = genesis.op_id
        self._genesis = genesis
        self._nodes: dict[bytes, _Node] = {genesis.op_id: genesis}
        self._heads: set[bytes] = {genesis.op_id}
        self._pending: dict[bytes, _Node] = {}
        self._waiting: dict[bytes, set[bytes]] = {}  # missing parent -> pending ops citing it
        self._rejected: OrderedDict[bytes, str] = OrderedDict()
        # Everyone the log ever added: an op by anyone else is invalid in any causal past, so it
        # is rejected before any replay (a stranger cannot make this log do real work).
        self._ever_added: set[bytes] = {genesis.body.author}
        work = _genesis_work(genesis.body)
        self._current: _Replay | None = _Replay([genesis.op_id], work, {})
        self._state: GroupState | None = None
        # op id -> (state of the op's causal past with the op applied, how many ops that holds)
        self._closed: OrderedDict[bytes, tuple[_Work, int]] = OrderedDict(
            {genesis.op_id: (work, 1)}
        )

    # construction

    @classmethod
    def create(
        cls,
        signing_key: nacl.signing.SigningKey,
        name: str,
        avatar: str,
        now: int,
        *,
        display_name: str,
        nonce: bytes | None = None,
    ) -> tuple[GroupLog, SignedGroupOp]:
        """A new group with the key's identity as its first admin; returns the genesis op."""
        op = Create(
            name=name,
            avatar=avatar,
            display_name=display_name,
            nonce=nonce if nonce is not None else nacl.utils.random(NONCE_BYTES),
        )
        body = GroupOpBody(author=bytes(signing_key.verify_key), created_at=now, op=op)
        _validate_encoding(body)
        signed = sign_op(signing_key, body)
        return cls.from_genesis(signed), signed

    @classmethod
    def from_genesis(cls, signed: SignedGroupOp) -> GroupLog:
        """A log holding only the group's genesis op (checked); GroupError if it is not one."""
        body = open_op(signed)
        if not isinstance(body.op, Create) or body.group_id is not None or body.parents:
            raise GroupError("not the genesis of a group")
        return cls(_Node(op_id_of(signed.body), signed, body))

    # reading

    @property
    def group_id(self) -> bytes:
        return self._group_id

    @property
    def genesis(self) -> SignedGroupOp:
        return self._genesis.signed

    @property
    def heads(self) -> frozenset[bytes]:
        return frozenset(self._heads)

    @property
    def state(self) -> GroupState:
        if self._state is None:
            replay = self._replayed()
            work = replay.work
            self._state = GroupState(
                group_id=self._group_id,
                name=work.name,
                avatar=work.avatar,
                members=MappingProxyType(dict(work.members)),
                admins=tuple(sorted(work.ranks, key=work.ranks.__getitem__)),
                heads=tuple(sorted(self._heads)),
                version=len(self._nodes),
            )
        return self._state

    def __len__(self) -> int:
        return len(self._nodes)

    def __contains__(self, op_id: object) -> bool:
        return op_id in self._nodes

    def get(self, op_id: bytes) -> SignedGroupOp | None:
        node = self._nodes.get(op_id)
        return node.signed if node is not None else None

    def body(self, op_id: bytes) -> GroupOpBody | None:
        node = self._nodes.get(op_id)
        return node.body if node is not None else None

    def order(self) -> list[bytes]:
        """Every op id in the linearised order (the genesis first)."""
        return list(self._replayed().order)

    def ops(self) -> list[SignedGroupOp]:
        """Every op in the linearised order: a valid order to store or to send."""
        return [self._nodes[op_id].signed for op_id in self._replayed().order]

    def no_effect(self) -> Mapping[bytes, str]:
        """Ops in the log that have no effect on the state, and why."""
        return MappingProxyType(self._replayed().no_effect)

    def ops_after(self, known_heads: Iterable[bytes]) -> list[SignedGroupOp]:
        """What a peer holding `known_heads` (and their ancestors) lacks, in an order it can
        apply as is.

        Ids this log does not hold are ignored: a peer whose heads are all unknown here (it
        wrote ops of its own) gets everything, unless it names more of what it holds (its recent
        op ids, or all of them: 32 bytes each)."""
        known = [op_id for op_id in known_heads if op_id in self._nodes]
        have = self._ancestors(known)
        return [self._nodes[op_id].signed for op_id in self._replayed().order if op_id not in have]

    def missing(self) -> set[bytes]:
        """Ids that pending ops cite and nobody has given this log yet: ask peers for them."""
        return {
            parent
            for node in self._pending.values()
            for parent in node.body.parents
            if parent not in self._nodes and parent not in self._pending
        }

    @property
    def pending_count(self) -> int:
        return len(self._pending)

    # writing

    def add(self, signed: SignedGroupOp) -> AddResult:
        """Take an op from anyone, in any order; see the module docstring for what is checked."""
        op_id = op_id_of(signed.body)
        if op_id in self._nodes:
            return Duplicate(op_id)
        held = self._pending.get(op_id)
        if held is not None:
            return Pending(op_id, self._unknown_parents(held))
        known_reason = self._rejected.get(op_id)
        if known_reason is not None:
            return Rejected(op_id, known_reason)
        try:
            body = open_op(signed)
        except GroupError as error:
            return Rejected(op_id, str(error))
        if body.group_id != self._group_id:
            return Rejected(op_id, "the operation belongs to another group")
        # From here on the reasons depend on the signed body only: remembered.
        if isinstance(body.op, Create):
            return self._reject(op_id, "only the genesis creates the group")
        if not body.parents:
            return self._reject(op_id, "an operation names 1..16 parents")
        if len(set(body.parents)) != len(body.parents):
            return self._reject(op_id, "an operation names each parent once")
        if any(parent in self._rejected for parent in body.parents):
            return self._reject(op_id, "it cites a rejected operation")
        node = _Node(op_id, signed, body)
        unknown = self._unknown_parents(node)
        if not unknown and body.author not in self._ever_added:
            return self._reject(op_id, "the author is not a member")
        if unknown:
            if len(self._pending) >= MAX_PENDING:
                return Rejected(op_id, "too many pending operations")
            self._pending[op_id] = node
            for parent in unknown:
                self._waiting.setdefault(parent, set()).add(op_id)
            return Pending(op_id, unknown)
        reason = self._accept(node)
        if reason is not None:
            return self._reject(op_id, reason)
        released, dropped = self._release(op_id)
        return Accepted(op_id, released, dropped)

    def add_all(self, ops: Iterable[SignedGroupOp]) -> list[AddResult]:
        return [self.add(signed) for signed in ops]

    def author_op(
        self, signing_key: nacl.signing.SigningKey, op: GroupOp, now: int
    ) -> SignedGroupOp:
        """Sign `op` on the current heads, append it to this log and return it (to send).

        GroupError, before anything is signed, if the op is malformed or invalid here."""
        if isinstance(op, Create):
            raise GroupError("only the genesis creates the group")
        replay = self._replayed()
        if len(self._heads) <= MAX_PARENTS:
            parents = sorted(self._heads)
        else:  # cite the latest heads; a later op cites the rest
            position = {op_id: index for index, op_id in enumerate(replay.order)}
            parents = sorted(sorted(self._heads, key=position.__getitem__)[-MAX_PARENTS:])
        body = GroupOpBody(
            group_id=self._group_id,
            parents=parents,
            author=bytes(signing_key.verify_key),
            created_at=now,
            op=op,
        )
        _validate_encoding(body)
        reason = _check(replay.work, body)
        if reason is None and len(parents) < len(self._heads):
            reason = _check(self._causal_work(body)[0], body)
        if reason is not None:
            raise GroupError(reason)
        signed = sign_op(signing_key, body)
        result = self.add(signed)
        if not isinstance(result, Accepted):  # pragma: no cover - checked above
            raise GroupError(f"the log refused its own operation: {result}")
        return signed

    # internals

    def _replayed(self) -> _Replay:
        if self._current is None:
            order = _linearise(self._nodes, self._nodes.keys())
            self._current = _replay(self._nodes, order)
        return self._current

    def _ancestors(self, op_ids: Iterable[bytes]) -> set[bytes]:
        """`op_ids` and all their ancestors (all in the log)."""
        seen: set[bytes] = set()
        stack = list(op_ids)
        while stack:
            op_id = stack.pop()
            if op_id not in seen:
                seen.add(op_id)
                stack.extend(self._nodes[op_id].body.parents)
        return seen

    def _unknown_parents(self, node: _Node) -> frozenset[bytes]:
        return frozenset(parent for parent in node.body.parents if parent not in self._nodes)

    def _causal_work(self, body: GroupOpBody) -> tuple[_Work, int]:
        """The state of the op's causal past (its ancestors alone) and how many ops that is."""
        if self._heads.issubset(body.parents):  # every op in the log is an ancestor
            replay = self._replayed()
            return replay.work, len(replay.order)
        if len(body.parents) == 1 and body.parents[0] in self._closed:
            self._closed.move_to_end(body.parents[0])
            return self._closed[body.parents[0]]
        past = self._ancestors(body.parents)
        replay = _replay(self._nodes, _linearise(self._nodes, past))
        return replay.work, len(past)

    def _accept(self, node: _Node) -> str | None:
        """Put a node whose parents are all known into the DAG if it is valid in its causal
        past; else return why not."""
        body = node.body
        work, size = self._causal_work(body)
        reason = _check(work, body)
        if reason is not None:
            return reason
        closed = work.copy()
        _apply(closed, body, size)
        extends_all = self._heads.issubset(body.parents)
        self._nodes[node.op_id] = node
        if isinstance(body.op, Add):
            self._ever_added.add(body.op.member)
        self._heads.difference_update(body.parents)
        self._heads.add(node.op_id)
        self._state = None
        if extends_all and self._current is not None:
            # The new op comes after every other in the order and is concurrent with none.
            self._current.order.append(node.op_id)
            self._current.work = closed
        else:
            self._current = None
        self._closed[node.op_id] = (closed, size + 1)
        while len(self._closed) > _CLOSED_STATES_CACHED:
            self._closed.popitem(last=False)
        return None

    def _release(self, op_id: bytes) -> tuple[tuple[bytes, ...], tuple[bytes, ...]]:
        """Accept (or reject) the pending ops that were waiting for `op_id`, transitively."""
        released: list[bytes] = []
        dropped: list[bytes] = []
        queue = deque([op_id])
        while queue:
            for child in sorted(self._waiting.pop(queue.popleft(), ())):
                node = self._pending.get(child)
                if node is None or self._unknown_parents(node):
                    continue
                self._unpend(child)
                reason = self._accept(node)
                if reason is None:
                    released.append(child)
                    queue.append(child)
                else:
                    dropped.append(child)
                    dropped.extend(self._reject(child, reason).dropped)
        return tuple(released), tuple(dropped)

    def _reject(self, op_id: bytes, reason: str) -> Rejected:
        """Remember a rejection that depends on the signed body alone; drop what cites it."""
        self._remember(op_id, reason)
        dropped: list[bytes] = []
        stack = [op_id]
        while stack:
            for child in sorted(self._waiting.pop(stack.pop(), ())):
                if child in self._pending:
                    self._unpend(child)
                    self._remember(child, "it cites a rejected operation")
                    dropped.append(child)
                    stack.append(child)
        return Rejected(op_id, reason, tuple(dropped))

    def _unpend(self, op_id: bytes) -> None:
        """Take an op out of pending, and out of the waiting lists of its other parents."""
        node = self._pending.pop(op_id)
        for parent in node.body.parents:
            waiting = self._waiting.get(parent)
            if waiting is not None:
                waiting.discard(op_id)
                if not waiting:
                    del self._waiting[parent]

    def _remember(self, op_id: bytes, reason: str) -> None:
        self._rejected[op_id] = reason
        while len(self._rejected) > MAX_REMEMBERED_REJECTIONS:
            self._rejected.popitem(last=False)


def _validate_encoding(body: GroupOpBody) -> None:
    """The bounds a receiver's strict decoder enforces, checked before signing."""
    try:
        decode_op_body(encode_op_body(body))
    except (msgspec.DecodeError, msgspec.EncodeError, TypeError) as error:
        raise GroupError(f"invalid operation: {error}") from None
