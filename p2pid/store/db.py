"""Opening the encrypted database: SQLCipher, keyed with the raw 32-byte vault key.

The connection is a plain sqlite3-style connection in autocommit mode
(`isolation_level=None`): nothing is in a transaction unless someone says `BEGIN`
or `SAVEPOINT`. The trio adapter (`trio_store.py`) owns the transactions.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Protocol

import sqlcipher3.dbapi2 as sqlite

from p2pid.store.migrations import MIGRATIONS, Migration

VAULT_KEY_BYTES = 32
BUSY_TIMEOUT_SECONDS = 5.0

SqlParameters = Sequence[object] | Mapping[str, object]


class StoreError(Exception):
    """The store cannot be opened or used."""


class WrongKeyError(StoreError):
    """The vault key does not decrypt the database (or the file is not a p2pid database)."""


class Cursor(Protocol):
    """The part of a DB-API cursor that p2pid uses."""

    @property
    def rowcount(self) -> int: ...

    @property
    def lastrowid(self) -> int | None: ...

    def fetchone(self) -> Any: ...

    def fetchall(self) -> list[Any]: ...

    def __iter__(self) -> Iterator[Any]: ...


class Connection(Protocol):
    """The part of a sqlite3 connection that p2pid uses (sqlcipher3 and sqlite3 both fit)."""

    @property
    def in_transaction(self) -> bool: ...

    def execute(self, sql: str, parameters: SqlParameters = ..., /) -> Cursor: ...

    def executemany(self, sql: str, parameters: Iterable[SqlParameters], /) -> Cursor: ...

    def commit(self) -> None: ...

    def rollback(self) -> None: ...

    def close(self) -> None: ...


def open_database(path: Path, key: bytes, *, create: bool = False) -> Connection:
    """Open (or with `create`, create) the store at `path` and bring its schema up to date.

    Raises WrongKeyError if `key` does not open the file, StoreError for a missing
    file (without `create`), a schema newer than this code, or SQLite failures.
    """
    _check_vault_key(key)
    _ensure_file(path, create=create)
    conn = _connect(path)
    try:
        _require_sqlcipher(conn)
        _apply_key(conn, key)
        _verify_key(conn, path)
        _configure(conn)
        apply_migrations(conn)
    except sqlite.Error as exc:
        conn.close()
        raise StoreError(f"cannot open the database {path}: {exc}") from exc
    except BaseException:
        conn.close()
        raise
    return conn


@contextmanager
def savepoint(conn: Connection, name: str = "p2pid_atomic") -> Iterator[None]:
    """Run a block atomically: a transaction of its own, or nested inside the current one."""
    conn.execute(f'SAVEPOINT "{name}"')
    try:
        yield
    except BaseException:
        if conn.in_transaction:  # SQLite may already have aborted it (disk full, ...)
            conn.execute(f'ROLLBACK TO "{name}"')
            conn.execute(f'RELEASE "{name}"')
        raise
    conn.execute(f'RELEASE "{name}"')


def check_blob(value: object, size: int, label: str) -> None:
    """A key or id a query is about to store or look up must be exactly `size` bytes."""
    if not isinstance(value, bytes) or len(value) != size:
        raise ValueError(f"the {label} must be {size} bytes")


def schema_version(conn: Connection) -> int:
    return int(conn.execute("PRAGMA user_version").fetchone()[0])


def apply_migrations(conn: Connection, migrations: tuple[Migration, ...] = MIGRATIONS) -> int:
    """Apply the migrations this database has not seen; return the schema version reached."""
    latest = migrations[-1].version if migrations else 0
    current = schema_version(conn)
    if current > latest:
        raise StoreError(
            f"the database has schema version {current}, newer than this p2pid "
            f"understands ({latest}): upgrade p2pid"
        )
    for migration in migrations:
        if migration.version > current:
            _apply_migration(conn, migration)
    return schema_version(conn)


def _apply_migration(conn: Connection, migration: Migration) -> None:
    """One migration, one transaction; re-checked inside it in case another opener won."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        if schema_version(conn) < migration.version:
            for statement in migration.statements:
                conn.execute(statement)
            conn.execute(f"PRAGMA user_version = {int(migration.version)}")
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise


def _check_vault_key(key: bytes) -> None:
    if not isinstance(key, bytes) or len(key) != VAULT_KEY_BYTES:
        raise ValueError(f"the vault key must be {VAULT_KEY_BYTES} raw bytes")


def _ensure_file(path: Path, *, create: bool) -> None:
    """Refuse a missing or empty file unless creating; create it 0600 before SQLite does."""
    if path.exists():
        if not create and path.stat().st_size == 0:
            raise StoreError(f"the database {path} is empty: not an initialised p2pid store")
        return
    if not create:
        raise StoreError(f"no database at {path} (is this home directory initialised?)")
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return
    except OSError as exc:
        raise StoreError(f"cannot create the database {path}: {exc}") from exc
    os.close(fd)


def _connect(path: Path) -> Connection:
    try:
        conn: Connection = sqlite.connect(
            str(path),
            timeout=BUSY_TIMEOUT_SECONDS,
            isolation_level=None,
            check_same_thread=False,
        )
    except sqlite.Error as exc:
        raise StoreError(f"cannot open the database {path}: {exc}") from exc
    return conn


def _require_sqlcipher(conn: Connection) -> None:
    """A plain SQLite build ignores PRAGMA key and would store everything in the clear."""
    row = conn.execute("PRAGMA cipher_version").fetchone()
    if not row or not row[0]:
        raise StoreError("the sqlite library in use is not SQLCipher; refusing to store secrets")


def _apply_key(conn: Connection, key: bytes) -> None:
    # A raw key (x'...') skips SQLCipher's PBKDF2: the vault key is already random.
    conn.execute(f"PRAGMA key = \"x'{key.hex()}'\"")


def _verify_key(conn: Connection, path: Path) -> None:
    """Read the schema now: with a wrong key SQLCipher fails here, before anything is written."""
    try:
        with _sqlcipher_log_silenced(conn):
            conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
    except sqlite.DatabaseError as exc:
        raise WrongKeyError(
            f"cannot decrypt {path}: wrong vault key or not a p2pid database"
        ) from exc


@contextmanager
def _sqlcipher_log_silenced(conn: Connection) -> Iterator[None]:
    """SQLCipher logs a failed key check to stderr ("hmac check failed"); the exception
    says it better. The level is process-wide, so it is restored right after."""
    level = str(conn.execute("PRAGMA cipher_log_level").fetchone()[0])
    conn.execute("PRAGMA cipher_log_level = NONE")
    try:
        yield
    finally:
        conn.execute(f"PRAGMA cipher_log_level = {level}")


def _configure(conn: Connection) -> None:
    mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()
    if not mode or str(mode[0]).lower() != "wal":
        raise StoreError(f"cannot switch the database to WAL mode (got {mode!r})")
    conn.execute("PRAGMA synchronous = NORMAL")
    conn.execute("PRAGMA foreign_keys = ON")
    conn.execute("PRAGMA temp_store = MEMORY")
