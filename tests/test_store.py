"""The store: SQLCipher files in tmp_path, real threads, a real SIGKILL. No mocks."""

from __future__ import annotations

import os
import signal
import sqlite3
import stat
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path

import pytest
import sqlcipher3.dbapi2 as sqlcipher
import trio
import trio.testing

from p2pid.store import (
    Connection,
    GroupCommitError,
    StoreClosedError,
    StoreError,
    TransactionEndedError,
    TrioStore,
    WrongKeyError,
    open_database,
)
from p2pid.store.db import apply_migrations, schema_version
from p2pid.store.migrations import LATEST_SCHEMA_VERSION, MIGRATIONS, Migration, check_numbering
from p2pid.store.queries import (
    LocalIdentityRow,
    list_peers,
    load_local_identity,
    mark_addr_ok,
    save_local_identity,
    update_olm_account,
    upsert_peer_seen,
)

WRITER_PROC = Path(__file__).with_name("store_writer_proc.py")
MARKER = "PLAINTEXT-MARKER-7f3a9c"


@pytest.fixture
def key() -> bytes:
    return os.urandom(32)


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "p2pid.db"


@pytest.fixture
def conn(db_path: Path, key: bytes) -> Iterator[Connection]:
    connection = open_database(db_path, key, create=True)
    yield connection
    connection.close()


def add_peer(peer_id: str, conn: Connection) -> None:
    upsert_peer_seen(conn, peer_id, [f"/ip4/127.0.0.1/tcp/1/{peer_id}"], "manual", {}, 1)


def peer_ids(conn: Connection) -> set[str]:
    return {peer.peer_id for peer in list_peers(conn)}


def table_names(conn: Connection) -> set[str]:
    rows = conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'").fetchall()
    return {str(name) for (name,) in rows}


def an_identity(name: str = "alice", olm_account: str = "pickle") -> LocalIdentityRow:
    return LocalIdentityRow(
        name=name,
        identity_seed=b"\x01" * 32,
        device_seed=b"\x02" * 32,
        olm_account=olm_account,
        created_at=1_700_000_000_000,
    )


def snapshot_files(directory: Path) -> dict[str, tuple[bytes, int]]:
    return {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in sorted(directory.iterdir())}


# --- opening and migrations -------------------------------------------------------------


def test_fresh_database_gets_every_migration(conn: Connection) -> None:
    assert schema_version(conn) == LATEST_SCHEMA_VERSION
    assert {"local_identity", "peers", "peer_addrs"} <= table_names(conn)


def test_connection_settings(conn: Connection) -> None:
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.execute("PRAGMA synchronous").fetchone()[0] == 1  # NORMAL
    assert conn.execute("PRAGMA foreign_keys").fetchone()[0] == 1
    assert conn.in_transaction is False


def test_reopening_keeps_data_and_applies_nothing_twice(db_path: Path, key: bytes) -> None:
    first = open_database(db_path, key, create=True)
    add_peer("kept", first)
    first.close()

    again = open_database(db_path, key)
    assert schema_version(again) == LATEST_SCHEMA_VERSION
    assert apply_migrations(again) == LATEST_SCHEMA_VERSION
    assert peer_ids(again) == {"kept"}
    again.close()


def test_database_from_the_future_is_refused(db_path: Path, key: bytes) -> None:
    conn = open_database(db_path, key, create=True)
    conn.execute(f"PRAGMA user_version = {LATEST_SCHEMA_VERSION + 1}")
    conn.close()

    with pytest.raises(StoreError, match="newer than this p2pid"):
        open_database(db_path, key)


def test_a_failing_migration_is_rolled_back_whole(conn: Connection) -> None:
    broken = Migration(
        version=LATEST_SCHEMA_VERSION + 1,
        description="half done",
        statements=("CREATE TABLE half_done (x INTEGER)", "THIS IS NOT SQL"),
    )
    with pytest.raises(sqlcipher.OperationalError):
        apply_migrations(conn, (*MIGRATIONS, broken))

    assert schema_version(conn) == LATEST_SCHEMA_VERSION
    assert "half_done" not in table_names(conn)
    assert conn.in_transaction is False


def test_migrations_must_be_numbered_without_gaps() -> None:
    first, *_ = MIGRATIONS
    with pytest.raises(ValueError, match="numbered"):
        check_numbering((first, Migration(3, "gap", ())))


def test_missing_file_is_refused_without_create(db_path: Path, key: bytes) -> None:
    with pytest.raises(StoreError, match="no database"):
        open_database(db_path, key)
    assert not db_path.exists()


def test_database_files_are_private(conn: Connection, db_path: Path) -> None:
    add_peer("p", conn)  # the WAL and its index exist while the connection is open
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in db_path.parent.iterdir()}
    assert modes == {name: 0o600 for name in ("p2pid.db", "p2pid.db-wal", "p2pid.db-shm")}


def test_key_must_be_32_bytes(db_path: Path) -> None:
    with pytest.raises(ValueError, match="32"):
        open_database(db_path, b"short", create=True)


# --- encryption at rest -----------------------------------------------------------------


def test_wrong_key_is_refused_and_the_file_untouched(db_path: Path, key: bytes) -> None:
    conn = open_database(db_path, key, create=True)
    add_peer("someone", conn)
    conn.close()
    before = snapshot_files(db_path.parent)

    with pytest.raises(WrongKeyError, match="wrong vault key"):
        open_database(db_path, os.urandom(32))

    assert snapshot_files(db_path.parent) == before


def test_a_file_that_is_not_a_database_is_refused(db_path: Path, key: bytes) -> None:
    db_path.write_bytes(b"hello, not a database" * 100)
    with pytest.raises(WrongKeyError, match="not a p2pid database"):
        open_database(db_path, key)


def test_a_copied_store_reveals_nothing(db_path: Path, key: bytes) -> None:
    conn = open_database(db_path, key, create=True)
    save_local_identity(conn, an_identity(name=MARKER, olm_account=MARKER))
    upsert_peer_seen(conn, MARKER, [f"/dns4/{MARKER}"], "invite", {"name": MARKER}, 1)

    # While open the data pages sit in the WAL file: check it too.
    files = {p.name: p.read_bytes() for p in db_path.parent.iterdir()}
    conn.close()
    files |= {p.name: p.read_bytes() for p in db_path.parent.iterdir()}

    assert any(name.endswith("-wal") for name in files)
    for name, data in files.items():
        assert MARKER.encode() not in data, name
        assert b"SQLite format 3" not in data, name
        assert (b"\x01" * 32) not in data, name
    with pytest.raises(sqlite3.DatabaseError), sqlite3.connect(db_path) as plain:
        plain.execute("SELECT * FROM sqlite_master").fetchall()


# --- queries ----------------------------------------------------------------------------


def test_local_identity_round_trip(conn: Connection) -> None:
    assert load_local_identity(conn) is None
    save_local_identity(conn, an_identity())
    assert load_local_identity(conn) == an_identity()

    update_olm_account(conn, "newer pickle")
    loaded = load_local_identity(conn)
    assert loaded is not None
    assert loaded.olm_account == "newer pickle"


def test_a_second_local_identity_is_refused(conn: Connection) -> None:
    save_local_identity(conn, an_identity("alice"))
    with pytest.raises(StoreError, match="already"):
        save_local_identity(conn, an_identity("mallory"))
    assert load_local_identity(conn) == an_identity("alice")


def test_identity_secrets_stay_out_of_repr() -> None:
    identity = an_identity(olm_account=MARKER)
    assert MARKER not in repr(identity)
    assert repr(b"\x01" * 32) not in repr(identity)


def test_peer_sightings_merge_fields_and_addresses(conn: Connection) -> None:
    upsert_peer_seen(conn, "p", ["/ip4/10.0.0.1/tcp/1"], "mdns", {"name": "a", "v": "1"}, 100)
    upsert_peer_seen(conn, "p", ["/ip4/10.0.0.2/tcp/1"], "identify", {"v": "2"}, 200)

    [peer] = list_peers(conn)
    assert (peer.first_seen, peer.last_seen) == (100, 200)
    assert peer.fields == {"name": "a", "v": "2"}
    assert [(a.addr, a.source) for a in peer.addrs] == [
        ("/ip4/10.0.0.2/tcp/1", "identify"),
        ("/ip4/10.0.0.1/tcp/1", "mdns"),
    ]


def test_an_address_that_worked_comes_first(conn: Connection) -> None:
    upsert_peer_seen(conn, "p", ["/ip4/10.0.0.1/tcp/1", "/ip4/10.0.0.2/tcp/1"], "mdns", {}, 100)

    assert mark_addr_ok(conn, "p", "/ip4/10.0.0.1/tcp/1", 150)
    assert not mark_addr_ok(conn, "p", "/ip4/10.9.9.9/tcp/1", 150)

    [peer] = list_peers(conn)
    assert peer.last_seen == 150
    assert [(a.addr, a.last_ok) for a in peer.addrs] == [
        ("/ip4/10.0.0.1/tcp/1", 150),
        ("/ip4/10.0.0.2/tcp/1", None),
    ]


def test_unknown_address_source_is_refused(conn: Connection) -> None:
    with pytest.raises(ValueError, match="source"):
        upsert_peer_seen(conn, "p", [], "carrier-pigeon", {}, 1)  # type: ignore[arg-type]


def test_deleting_a_peer_deletes_its_addresses(conn: Connection) -> None:
    add_peer("p", conn)
    conn.execute("DELETE FROM peers WHERE peer_id = 'p'")
    assert conn.execute("SELECT count(*) FROM peer_addrs").fetchone()[0] == 0


# --- the trio adapter -------------------------------------------------------------------


class Gate:
    """Holds the writer (a write blocked in its thread) so further writes pile up behind it;
    the gate's own write commits alone when released."""

    def __init__(self) -> None:
        self._release = threading.Event()

    def _block(self, conn: Connection) -> None:
        self._release.wait()

    async def hold(self, store: TrioStore, nursery: trio.Nursery) -> None:
        nursery.start_soon(store.write, self._block)
        await trio.testing.wait_all_tasks_blocked()

    def release(self) -> None:
        self._release.set()


async def write_and_record(
    store: TrioStore, fn: Callable[[Connection], object], results: dict[str, object], name: str
) -> None:
    try:
        results[name] = await store.write(fn)
    except Exception as exc:
        results[name] = exc


async def test_many_producers_all_land_in_fewer_transactions(db_path: Path, key: bytes) -> None:
    producers, writes_each = 50, 20

    async def produce(store: TrioStore, producer: int) -> None:
        for n in range(writes_each):
            await store.write(partial(add_peer, f"{producer}-{n}"))

    async with TrioStore.open(db_path, key, create=True) as store:
        async with trio.open_nursery() as nursery:
            for producer in range(producers):
                nursery.start_soon(produce, store, producer)
        stored = await store.read(peer_ids)

    assert len(stored) == producers * writes_each
    assert store.stats.writes == producers * writes_each
    assert store.stats.commits < store.stats.writes // 5


async def test_writes_queued_together_commit_together(db_path: Path, key: bytes) -> None:
    gate = Gate()
    async with TrioStore.open(db_path, key, create=True) as store:
        async with trio.open_nursery() as nursery:
            await gate.hold(store, nursery)
            for n in range(100):
                nursery.start_soon(store.write, partial(add_peer, f"p{n}"))
            await trio.testing.wait_all_tasks_blocked()
            gate.release()
        assert store.stats.commits == 2  # the gate's, then one for all the others
        assert store.stats.writes == 101
        assert len(await store.read(peer_ids)) == 100


async def test_a_failing_write_is_undone_alone(db_path: Path, key: bytes) -> None:
    def add_then_fail(conn: Connection) -> None:
        add_peer("half-written", conn)
        raise RuntimeError("boom")

    results: dict[str, object] = {}
    gate = Gate()
    async with TrioStore.open(db_path, key, create=True) as store:
        async with trio.open_nursery() as nursery:
            await gate.hold(store, nursery)
            for name in ("before", "after"):
                nursery.start_soon(write_and_record, store, partial(add_peer, name), results, name)
                await trio.testing.wait_all_tasks_blocked()
                nursery.start_soon(write_and_record, store, add_then_fail, results, f"{name}-boom")
                await trio.testing.wait_all_tasks_blocked()
            gate.release()
        stored = await store.read(peer_ids)

    assert store.stats.commits == 2  # the gate's, then one for all the others
    assert stored == {"before", "after"}
    assert results["before"] is None and results["after"] is None
    for failed in ("before-boom", "after-boom"):
        assert isinstance(results[failed], RuntimeError)


async def test_a_constraint_violation_fails_only_its_caller(db_path: Path, key: bytes) -> None:
    async with TrioStore.open(db_path, key, create=True) as store:
        await store.write(partial(save_local_identity, identity=an_identity("alice")))
        with pytest.raises(StoreError, match="already"):
            await store.write(partial(save_local_identity, identity=an_identity("bob")))
        await store.write(partial(add_peer, "still-fine"))
        assert await store.read(peer_ids) == {"still-fine"}


async def test_write_returns_only_after_commit(db_path: Path, key: bytes) -> None:
    async with TrioStore.open(db_path, key, create=True) as store:
        await store.write(partial(add_peer, "committed"))
        other = open_database(db_path, key)  # a second connection sees only committed data
        try:
            assert peer_ids(other) == {"committed"}
        finally:
            other.close()


async def run_writes_then_close(
    db_path: Path, key: bytes, gate: Gate, results: dict[str, object], cancel_the_block: bool
) -> None:
    """Submit writes from outside the store's block, then leave (or cancel) the block."""
    async with trio.open_nursery() as outside:
        with trio.CancelScope() as block_scope:
            async with TrioStore.open(db_path, key, create=True) as store:
                await gate.hold(store, outside)
                for n in range(20):
                    fn = partial(add_peer, f"queued-{n}")
                    outside.start_soon(write_and_record, store, fn, results, f"queued-{n}")
                await trio.testing.wait_all_tasks_blocked()
                assert store.stats.commits == 0
                gate.release()
                if cancel_the_block:
                    block_scope.cancel()
                    await trio.sleep_forever()
        assert block_scope.cancelled_caught == cancel_the_block


@pytest.mark.parametrize("cancel_the_block", [False, True])
async def test_closing_commits_what_was_already_submitted(
    db_path: Path, key: bytes, cancel_the_block: bool
) -> None:
    results: dict[str, object] = {}
    gate = Gate()
    with trio.fail_after(10):  # a writer that stopped early leaves the writes hanging
        await run_writes_then_close(db_path, key, gate, results, cancel_the_block)

    assert results == {f"queued-{n}": None for n in range(20)}
    reopened = open_database(db_path, key)
    try:
        assert peer_ids(reopened) == {f"queued-{n}" for n in range(20)}
    finally:
        reopened.close()


async def test_a_closed_store_refuses_calls(db_path: Path, key: bytes) -> None:
    async with TrioStore.open(db_path, key, create=True) as store:
        pass
    with pytest.raises(StoreClosedError):
        await store.write(partial(add_peer, "late"))
    with pytest.raises(StoreClosedError):
        await store.read(peer_ids)


async def test_read_functions_cannot_write(db_path: Path, key: bytes) -> None:
    async with TrioStore.open(db_path, key, create=True) as store:
        with pytest.raises(sqlcipher.OperationalError, match="readonly"):
            await store.read(partial(add_peer, "sneaky"))
        await store.write(partial(add_peer, "proper"))
        assert await store.read(peer_ids) == {"proper"}


async def test_a_write_that_commits_by_itself_is_reported(db_path: Path, key: bytes) -> None:
    def commit_behind_the_stores_back(conn: Connection) -> None:
        add_peer("rogue", conn)
        conn.commit()

    async with TrioStore.open(db_path, key, create=True) as store:
        with pytest.raises(GroupCommitError) as caught:
            await store.write(commit_behind_the_stores_back)
        assert isinstance(caught.value.__cause__, TransactionEndedError)
        await store.write(partial(add_peer, "after"))
        assert "after" in await store.read(peer_ids)


async def test_wrong_key_through_the_adapter(db_path: Path, key: bytes) -> None:
    async with TrioStore.open(db_path, key, create=True):
        pass
    with pytest.raises(WrongKeyError):
        async with TrioStore.open(db_path, os.urandom(32)):
            pass


# --- durability under a crash -----------------------------------------------------------

ACKS_BEFORE_KILL = 2000


class LineReader:
    """Complete lines from a trio receive stream; a line cut short by a kill is dropped."""

    def __init__(self, stream: trio.abc.ReceiveStream) -> None:
        self._stream = stream
        self._pending = b""

    async def read_lines(self) -> list[str] | None:
        """The next complete lines, or None at end of stream."""
        data = await self._stream.receive_some()
        if not data:
            return None
        *lines, self._pending = (self._pending + data).split(b"\n")
        return [line.decode() for line in lines]


async def test_acknowledged_writes_survive_sigkill(db_path: Path, key: bytes) -> None:
    open_database(db_path, key, create=True).close()
    stderr_path = db_path.with_name("writer.stderr")
    acked: list[str] = []
    with stderr_path.open("wb") as stderr:
        process = await trio.lowlevel.open_process(
            [sys.executable, str(WRITER_PROC), str(db_path), "--producers", "32"],
            stdout=subprocess.PIPE,
            stderr=stderr,
            env={**os.environ, "STORE_WRITER_KEY": key.hex()},
        )
        try:
            assert process.stdout is not None
            reader = LineReader(process.stdout)
            with trio.fail_after(60):
                while len(acked) < ACKS_BEFORE_KILL and (lines := await reader.read_lines()):
                    acked += lines
                process.kill()
                while (lines := await reader.read_lines()) is not None:
                    acked += lines  # printed (so committed) before the kill landed
                await process.wait()
        finally:
            if process.returncode is None:
                process.kill()
                await process.wait()

    assert process.returncode == -signal.SIGKILL, stderr_path.read_text()
    assert len(acked) >= ACKS_BEFORE_KILL
    reopened = open_database(db_path, key)
    try:
        missing = set(acked) - peer_ids(reopened)
    finally:
        reopened.close()
    assert not missing, f"{len(missing)} acknowledged writes lost, e.g. {sorted(missing)[:5]}"


async def test_reads_do_not_wait_for_the_writer_and_see_only_committed_data(
    db_path: Path, key: bytes
) -> None:
    gate = Gate()
    async with TrioStore.open(db_path, key, create=True) as store:
        await store.write(partial(add_peer, "committed"))
        async with trio.open_nursery() as nursery:
            await gate.hold(store, nursery)  # the writer is busy in a transaction
            nursery.start_soon(store.write, partial(add_peer, "queued"))
            with trio.fail_after(5):
                assert await store.read(peer_ids) == {"committed"}
            gate.release()
        assert await store.read(peer_ids) == {"committed", "queued"}
        with pytest.raises(sqlcipher.OperationalError, match="readonly"):
            await store.read(partial(add_peer, "sneaky"))
