"""The store under trio: one connection, one thread at a time, group-committed writes.

Every use of the connection runs in `trio.to_thread.run_sync` while holding one
shared `CapacityLimiter(1)`. Writes are queued to a single writer task, which takes
everything queued, runs it in ONE transaction (a SAVEPOINT per write, so a failing
write is undone alone), commits, and only then wakes each caller with its result:
when `write()` returns, the write is durable against a crash of this process.
"""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Generic, TypeVar

import outcome
import trio

from p2pid.store.db import Connection, StoreError, open_database

T = TypeVar("T")

log = logging.getLogger(__name__)

# A bound on one transaction, so a flood of writes does not keep readers waiting long.
MAX_WRITES_PER_TRANSACTION = 1000
_WRITE_SAVEPOINT = "p2pid_write"


class StoreClosedError(StoreError):
    """The store was closed; nothing more can be submitted."""


class GroupCommitError(StoreError):
    """The transaction holding this write failed as a whole; see __cause__.

    The write was rolled back, unless the cause is a TransactionEndedError: then
    writes of the group run before the offending one may have committed.
    """


class TransactionEndedError(StoreError):
    """A write() function ended the shared group transaction (COMMIT, ROLLBACK, or
    an error after which SQLite aborts the transaction, such as a full disk)."""


@dataclass(eq=False)
class _QueuedWrite(Generic[T]):
    fn: Callable[[Connection], T]
    done: trio.Event = field(default_factory=trio.Event)
    result: outcome.Outcome[T] | None = None


@dataclass
class GroupCommitStats:
    """Counters for tests and benchmarks: writes acknowledged vs transactions committed."""

    writes: int = 0
    commits: int = 0


class TrioStore:
    def __init__(
        self,
        conn: Connection,
        limiter: trio.CapacityLimiter,
        submit: trio.MemorySendChannel[_QueuedWrite[Any]],
        reader: Connection,
    ) -> None:
        self._conn = conn
        self._limiter = limiter
        self._submit = submit
        # Reads have a connection of their own: in WAL mode they run alongside the writer's
        # group commits, and its prepared statements stay cached (toggling query_only on a
        # shared connection would throw them away at every read).
        self._reader = reader
        self._read_limiter = trio.CapacityLimiter(1)
        self._closed = False  # no new calls accepted
        self._connection_closed = False  # only touched while holding the limiter
        self._reader_closed = False  # only touched while holding the read limiter
        self.stats = GroupCommitStats()

    @classmethod
    @contextlib.asynccontextmanager
    async def open(
        cls, path: Path, key: bytes, *, create: bool = False
    ) -> AsyncIterator[TrioStore]:
        """Open the store for the duration of the block.

        On leaving the block, every write already submitted is committed (and its
        caller woken) before the connection closes, even if the block is cancelled.
        """
        limiter = trio.CapacityLimiter(1)
        opener = partial(open_database, path, key, create=create)
        conn = await trio.to_thread.run_sync(opener, limiter=limiter)
        try:
            reader = await trio.to_thread.run_sync(partial(open_reader, path, key))
        except BaseException:
            conn.close()
            raise
        submit, queue = trio.open_memory_channel[_QueuedWrite[Any]](math.inf)
        store = cls(conn, limiter, submit, reader)
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(store._run_writer, queue)
                try:
                    yield store
                finally:
                    store._closed = True
                    submit.close()  # the writer drains what is queued, then returns
        finally:
            with trio.CancelScope(shield=True):
                await trio.to_thread.run_sync(store._close_reader, limiter=store._read_limiter)
                await trio.to_thread.run_sync(store._close_connection, limiter=limiter)

    async def read(self, fn: Callable[[Connection], T]) -> T:
        """Run `fn(conn)` in a worker thread; it sees only committed data and may not write."""
        self._check_open()
        return await trio.to_thread.run_sync(self._run_read, fn, limiter=self._read_limiter)

    async def write(self, fn: Callable[[Connection], T]) -> T:
        """Run `fn(conn)` in the next group transaction; return once that transaction committed.

        If `fn` raises, its changes are rolled back and the exception is raised here;
        the other writes of the group still commit. If the caller is cancelled while
        waiting, the write still runs and may commit.
        """
        self._check_open()
        queued: _QueuedWrite[T] = _QueuedWrite(fn)
        try:
            self._submit.send_nowait(queued)
        except trio.ClosedResourceError:
            raise StoreClosedError("the store is closed") from None
        await queued.done.wait()
        assert queued.result is not None
        return queued.result.unwrap()

    def _check_open(self) -> None:
        if self._closed:
            raise StoreClosedError("the store is closed")

    def _close_connection(self) -> None:
        self._connection_closed = True
        self._conn.close()

    def _close_reader(self) -> None:
        self._reader_closed = True
        self._reader.close()

    def _run_read(self, fn: Callable[[Connection], T]) -> T:
        if self._reader_closed:
            raise StoreClosedError("the store is closed")
        self._reader.execute("BEGIN")  # one snapshot for all of fn's statements
        try:
            return fn(self._reader)
        finally:
            if self._reader.in_transaction:
                self._reader.execute("ROLLBACK")

    async def _run_writer(self, queue: trio.MemoryReceiveChannel[_QueuedWrite[Any]]) -> None:
        # Shielded: leaving TrioStore.open closes the channel, and what was queued
        # by then must still commit, even when the block was cancelled.
        with trio.CancelScope(shield=True):
            async for first in queue:
                async with self._limiter:
                    batch = _take_queued(first, queue, MAX_WRITES_PER_TRANSACTION)
                    await trio.to_thread.run_sync(self._commit_batch, batch)
                for queued in batch:
                    queued.done.set()

    def _commit_batch(self, batch: list[_QueuedWrite[Any]]) -> None:
        """In a worker thread: one transaction for the whole batch, then COMMIT."""
        try:
            self._conn.execute("BEGIN IMMEDIATE")
            for queued in batch:
                queued.result = self._run_one_write(queued.fn)
            self._conn.execute("COMMIT")
        except BaseException as exc:
            self._rollback_quietly()
            for queued in batch:
                queued.result = outcome.Error(_group_failure(exc))
            return
        self.stats.commits += 1
        self.stats.writes += len(batch)

    def _run_one_write(self, fn: Callable[[Connection], T]) -> outcome.Outcome[T]:
        self._conn.execute(f"SAVEPOINT {_WRITE_SAVEPOINT}")
        result = outcome.capture(fn, self._conn)
        if not self._conn.in_transaction:
            raise TransactionEndedError(_transaction_ended_message(result))
        if isinstance(result, outcome.Error):
            self._conn.execute(f"ROLLBACK TO {_WRITE_SAVEPOINT}")
        self._conn.execute(f"RELEASE {_WRITE_SAVEPOINT}")
        return result

    def _rollback_quietly(self) -> None:
        if self._conn.in_transaction:
            # The original failure is what the callers need to see.
            with contextlib.suppress(Exception):
                self._conn.execute("ROLLBACK")


def open_reader(path: Path, key: bytes) -> Connection:
    """A second connection to an open store, for reads only."""
    reader = open_database(path, key)
    reader.execute("PRAGMA query_only = ON")
    return reader


def _take_queued(
    first: _QueuedWrite[Any], queue: trio.MemoryReceiveChannel[_QueuedWrite[Any]], limit: int
) -> list[_QueuedWrite[Any]]:
    batch = [first]
    while len(batch) < limit:
        try:
            batch.append(queue.receive_nowait())
        except (trio.WouldBlock, trio.EndOfChannel):
            break
    return batch


def _transaction_ended_message(result: outcome.Outcome[Any]) -> str:
    if isinstance(result, outcome.Error):
        return f"the group transaction was aborted by SQLite after a write failed: {result.error!r}"
    return (
        "a write() function committed or rolled back the group transaction; "
        "use p2pid.store.db.savepoint() for atomic blocks instead"
    )


def _group_failure(cause: BaseException) -> GroupCommitError:
    error = GroupCommitError(f"the group transaction failed: {cause}")
    error.__cause__ = cause
    return error
