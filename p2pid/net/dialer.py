"""Dialing peers: every known address, best first, retried with backoff until a deadline.

The policy (address ranking, backoff schedule, when to give up) is sans-IO: ``AddressBook``
and ``DialSchedule`` take the time as an argument and return decisions. ``Dialer`` is the
thin trio driver that carries those decisions out through an ``AddressDialer``.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import trio

from p2pid.net import DialError, describe_error

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class DialPolicy:
    """How hard to try: backoff between rounds over all addresses, and per-attempt limits."""

    initial_backoff: float = 0.05
    backoff_factor: float = 2.0
    max_backoff: float = 2.0
    jitter: float = 0.25  # each delay is scaled by a random factor in [1 - jitter, 1 + jitter]
    attempt_timeout: float = 5.0
    connect_timeout: float = 10.0
    max_addrs_per_peer: int = 32

    def __post_init__(self) -> None:
        if not 0 <= self.jitter < 1:
            raise ValueError("jitter must be in [0, 1)")
        if self.initial_backoff < 0 or self.max_backoff < self.initial_backoff:
            raise ValueError("backoff bounds must satisfy 0 <= initial <= max")
        if self.backoff_factor < 1:
            raise ValueError("backoff_factor must be >= 1")
        if self.attempt_timeout <= 0 or self.connect_timeout <= 0:
            raise ValueError("timeouts must be positive")
        if self.max_addrs_per_peer < 1:
            raise ValueError("max_addrs_per_peer must be >= 1")


def backoff_delay(policy: DialPolicy, retry: int, rng: random.Random) -> float:
    """The pause before retry number ``retry`` (0 = the pause after the first full round)."""
    base = min(policy.initial_backoff * policy.backoff_factor**retry, policy.max_backoff)
    return base * rng.uniform(1 - policy.jitter, 1 + policy.jitter)


# -- the address book ----------------------------------------------------------------------


@dataclass
class AddressRecord:
    addr: str
    seen_at: float
    last_success_at: float | None = None
    consecutive_failures: int = 0

    def dial_rank(self) -> tuple[int, float, float]:
        """Lower dials first: last dial succeeded (latest first), untried (newest first),
        then failing (fewest consecutive failures first)."""
        if self.consecutive_failures == 0 and self.last_success_at is not None:
            return (0, -self.last_success_at, 0.0)
        if self.consecutive_failures == 0:
            return (1, -self.seen_at, 0.0)
        return (2, float(self.consecutive_failures), -self.seen_at)


class AddressBook:
    """The addresses announced for each peer, with their dial history; over
    ``max_addrs_per_peer`` the worst-ranked one is dropped."""

    def __init__(self, max_addrs_per_peer: int) -> None:
        self._max_addrs_per_peer = max_addrs_per_peer
        self._records: dict[str, dict[str, AddressRecord]] = {}

    def add(self, peer_id: str, addrs: Iterable[str], now: float) -> list[str]:
        """Remember ``addrs``; return those that were not known before."""
        records = self._records.setdefault(peer_id, {})
        new_addrs = []
        for addr in addrs:
            record = records.get(addr)
            if record is None:
                records[addr] = AddressRecord(addr, seen_at=now)
                new_addrs.append(addr)
            else:
                record.seen_at = now
        self._evict_worst(records)
        return [addr for addr in new_addrs if addr in records]

    def dial_order(self, peer_id: str) -> list[str]:
        records = self._records.get(peer_id, {}).values()
        return [record.addr for record in sorted(records, key=AddressRecord.dial_rank)]

    def record_success(self, peer_id: str, addr: str, now: float) -> None:
        record = self._records.get(peer_id, {}).get(addr)
        if record is not None:
            record.last_success_at = now
            record.consecutive_failures = 0

    def record_failure(self, peer_id: str, addr: str) -> None:
        record = self._records.get(peer_id, {}).get(addr)
        if record is not None:
            record.consecutive_failures += 1

    def forget(self, peer_id: str) -> None:
        self._records.pop(peer_id, None)

    def peers(self) -> list[str]:
        return list(self._records)

    def _evict_worst(self, records: dict[str, AddressRecord]) -> None:
        while len(records) > self._max_addrs_per_peer:
            worst = max(records.values(), key=AddressRecord.dial_rank)
            del records[worst.addr]


# -- one connect() call as a state machine ---------------------------------------------------


@dataclass(frozen=True)
class TryAddress:
    addr: str
    timeout: float


@dataclass(frozen=True)
class Wait:
    seconds: float


@dataclass(frozen=True)
class GiveUp:
    reason: str


DialAction = TryAddress | Wait | GiveUp


@dataclass
class DialSchedule:
    """Rounds over the peer's addresses (in the book's current order), with a backoff pause
    between rounds, until the deadline. Feed it the time and the address order; do what it
    says; report failures back."""

    policy: DialPolicy
    deadline: float
    rng: random.Random
    failures: list[tuple[str, str]] = field(default_factory=list, init=False)
    _completed_rounds: int = field(default=0, init=False)
    _tried_this_round: set[str] = field(default_factory=set, init=False)
    _resume_at: float | None = field(default=None, init=False)

    def next_action(self, now: float, ordered_addrs: Sequence[str]) -> DialAction:
        if not ordered_addrs:
            return GiveUp("no known address")
        if now >= self.deadline:
            return GiveUp("deadline reached")
        if self._resume_at is not None:
            if now < self._resume_at:
                return Wait(self._resume_at - now)
            self._start_round()
        untried = [addr for addr in ordered_addrs if addr not in self._tried_this_round]
        if untried:
            self._tried_this_round.add(untried[0])
            return TryAddress(untried[0], min(self.policy.attempt_timeout, self.deadline - now))
        return self._finish_round(now)

    def record_failure(self, addr: str, error: str) -> None:
        self.failures.append((addr, error))

    def resume_now(self) -> None:
        """Cut a backoff pause short (new addresses, a connection): the backoff keeps growing."""
        if self._resume_at is not None:
            self._start_round()

    def _finish_round(self, now: float) -> DialAction:
        delay = backoff_delay(self.policy, self._completed_rounds, self.rng)
        self._completed_rounds += 1
        if now + delay >= self.deadline:
            return GiveUp("deadline reached")
        self._resume_at = now + delay
        return Wait(delay)

    def _start_round(self) -> None:
        self._resume_at = None
        self._tried_this_round.clear()


# -- the trio driver -------------------------------------------------------------------------


class AddressDialer(Protocol):
    """What the Dialer needs from the host: one dial of one address, and a liveness check."""

    def is_connected(self, peer_id: str) -> bool: ...

    async def dial_address(self, peer_id: str, addr: str) -> None: ...


class Dialer:
    """Connects to peers through every address it was given, retrying until a deadline."""

    def __init__(
        self,
        transport: AddressDialer,
        policy: DialPolicy | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self._transport = transport
        self.policy = policy or DialPolicy()
        self._rng = rng or random.Random()
        self._book = AddressBook(self.policy.max_addrs_per_peer)
        self._peer_locks: dict[str, trio.Lock] = {}
        self._news: dict[str, trio.Event] = {}

    def add_addrs(self, peer_id: str, addrs: Iterable[str]) -> None:
        if self._book.add(peer_id, addrs, trio.current_time()):
            self._wake(peer_id)

    def peer_connected(self, peer_id: str) -> None:
        """Tell a connect() pausing between rounds that the peer got connected (inbound)."""
        self._wake(peer_id)

    def known_addrs(self, peer_id: str) -> list[str]:
        """The peer's addresses in the order they would be dialled."""
        return self._book.dial_order(peer_id)

    def forget(self, peer_id: str) -> None:
        self._book.forget(peer_id)

    async def connect(self, peer_id: str) -> None:
        """Return once connected to ``peer_id``; raise DialError after the policy's
        connect_timeout (wrap in a trio cancel scope to give up sooner)."""
        if self._transport.is_connected(peer_id):
            return
        started_at = trio.current_time()
        deadline = started_at + self.policy.connect_timeout
        async with self._lock_for(peer_id):
            schedule = DialSchedule(self.policy, deadline, self._rng)
            while not self._transport.is_connected(peer_id):
                action = schedule.next_action(trio.current_time(), self.known_addrs(peer_id))
                if isinstance(action, GiveUp):
                    elapsed = trio.current_time() - started_at
                    reason = f"{action.reason} after {elapsed:.1f} s"
                    raise DialError(peer_id, reason, schedule.failures)
                if isinstance(action, Wait):
                    await self._pause(peer_id, action.seconds, schedule)
                elif await self._attempt(peer_id, action, schedule):
                    return

    async def _attempt(self, peer_id: str, action: TryAddress, schedule: DialSchedule) -> bool:
        error = "timed out"
        with trio.move_on_after(action.timeout):
            try:
                await self._transport.dial_address(peer_id, action.addr)
            except Exception as exc:
                error = describe_error(exc)
            else:
                self._book.record_success(peer_id, action.addr, trio.current_time())
                return True
        logger.debug("dial %s at %s failed: %s", peer_id, action.addr, error)
        self._book.record_failure(peer_id, action.addr)
        schedule.record_failure(action.addr, error)
        return False

    async def _pause(self, peer_id: str, seconds: float, schedule: DialSchedule) -> None:
        news = self._news.setdefault(peer_id, trio.Event())
        with trio.move_on_after(seconds):
            await news.wait()
            schedule.resume_now()

    def _wake(self, peer_id: str) -> None:
        news = self._news.pop(peer_id, None)
        if news is not None:
            news.set()

    def _lock_for(self, peer_id: str) -> trio.Lock:
        return self._peer_locks.setdefault(peer_id, trio.Lock())
