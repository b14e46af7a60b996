"""Typed queries for file transfers (migration 7): the transfers, the resume state of incoming
ones, the recipients who reported an outgoing file complete, and the file settings.

Plain functions over a Connection, like `contacts.py`: use them through `TrioStore.read` /
`TrioStore.write`. Times are integer milliseconds since the epoch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from p2pid.store.db import Connection, StoreError

DIRECTIONS: frozenset[str] = frozenset({"in", "out"})
STATES: frozenset[str] = frozenset(
    {"offered", "downloading", "waiting", "complete", "failed", "cancelled", "sending"}
)
AUTO_ACCEPT: frozenset[str] = frozenset({"none", "verified", "contacts"})
DEFAULT_AUTO_ACCEPT_MAX_BYTES = 25 * 1024 * 1024


class UnknownTransferError(StoreError):
    """No transfer has that id."""


@dataclass(frozen=True)
class TransferRow:
    file_id: bytes
    direction: str
    offer: bytes  # an encoded FileOffer
    peer_identity: bytes | None
    group_id: bytes | None
    sender_peer_id: str
    state: str
    path: str
    path_mtime_ns: int
    folder: str
    part_path: str
    bitmap: bytes
    manifest: bytes
    bytes_done: int
    error: str
    created_at: int
    updated_at: int
    completed_at: int | None


_COLUMNS = (
    "file_id, direction, offer, peer_identity, group_id, sender_peer_id, state, path, "
    "path_mtime_ns, folder, part_path, bitmap, manifest, bytes_done, error, created_at, "
    "updated_at, "
    "completed_at"
)


def _row(values: Any) -> TransferRow:
    return TransferRow(*values)


def insert_transfer(conn: Connection, row: TransferRow) -> bool:
    """False if a transfer with that file id exists (a retried offer): nothing changes."""
    if row.direction not in DIRECTIONS or row.state not in STATES:
        raise StoreError(f"bad transfer direction/state {row.direction}/{row.state}")
    cursor = conn.execute(
        f"INSERT OR IGNORE INTO file_transfers ({_COLUMNS}) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (
            row.file_id,
            row.direction,
            row.offer,
            row.peer_identity,
            row.group_id,
            row.sender_peer_id,
            row.state,
            row.path,
            row.path_mtime_ns,
            row.folder,
            row.part_path,
            row.bitmap,
            row.manifest,
            row.bytes_done,
            row.error,
            row.created_at,
            row.updated_at,
            row.completed_at,
        ),
    )
    return cursor.rowcount == 1


def get_transfer(conn: Connection, file_id: bytes) -> TransferRow | None:
    values = conn.execute(
        f"SELECT {_COLUMNS} FROM file_transfers WHERE file_id = ?", (file_id,)
    ).fetchone()
    return _row(values) if values else None


def list_transfers(conn: Connection) -> list[TransferRow]:
    """Newest first."""
    rows = conn.execute(
        f"SELECT {_COLUMNS} FROM file_transfers ORDER BY created_at DESC, file_id"
    ).fetchall()
    return [_row(values) for values in rows]


def transfers_in_state(
    conn: Connection, direction: str, states: tuple[str, ...]
) -> list[TransferRow]:
    marks = ", ".join("?" for _ in states)
    rows = conn.execute(
        f"SELECT {_COLUMNS} FROM file_transfers WHERE direction = ? AND state IN ({marks}) "
        "ORDER BY created_at",
        (direction, *states),
    ).fetchall()
    return [_row(values) for values in rows]


def update_transfer(conn: Connection, file_id: bytes, now: int, **changes: object) -> TransferRow:
    """Set the named columns (and updated_at); the row as it is now."""
    allowed = {
        "state",
        "path",
        "path_mtime_ns",
        "folder",
        "part_path",
        "bitmap",
        "manifest",
        "bytes_done",
        "error",
        "completed_at",
    }
    unknown = set(changes) - allowed
    if unknown:
        raise StoreError(f"cannot change {sorted(unknown)} of a transfer")
    state = changes.get("state")
    if state is not None and state not in STATES:
        raise StoreError(f"bad transfer state {state!r}")
    assignments = ", ".join(f"{name} = ?" for name in changes)
    cursor = conn.execute(
        f"UPDATE file_transfers SET {assignments}, updated_at = ? WHERE file_id = ?",
        (*changes.values(), now, file_id),
    )
    if cursor.rowcount != 1:
        raise UnknownTransferError(f"no transfer {file_id.hex()}")
    row = get_transfer(conn, file_id)
    assert row is not None
    return row


def record_delivery(
    conn: Connection, file_id: bytes, identity_key: bytes, state: str, now: int
) -> bool:
    """A recipient reported the file complete or cancelled; False if it was known (or no such
    outgoing transfer)."""
    cursor = conn.execute(
        "INSERT OR IGNORE INTO file_deliveries (file_id, identity_key, state, at) "
        "SELECT ?, ?, ?, ? WHERE EXISTS "
        "(SELECT 1 FROM file_transfers WHERE file_id = ? AND direction = 'out')",
        (file_id, identity_key, state, now, file_id),
    )
    return cursor.rowcount == 1


def deliveries(conn: Connection, file_id: bytes) -> dict[bytes, str]:
    rows = conn.execute(
        "SELECT identity_key, state FROM file_deliveries WHERE file_id = ?", (file_id,)
    ).fetchall()
    return {bytes(key): state for key, state in rows}


@dataclass(frozen=True)
class FileSettingsRow:
    folder: str  # '' = the daemon's default
    auto_accept: str
    auto_accept_max_bytes: int


def get_settings(conn: Connection) -> FileSettingsRow:
    values = conn.execute(
        "SELECT folder, auto_accept, auto_accept_max_bytes FROM file_settings WHERE id = 1"
    ).fetchone()
    if values is None:
        return FileSettingsRow("", "verified", DEFAULT_AUTO_ACCEPT_MAX_BYTES)
    return FileSettingsRow(*values)


def set_settings(conn: Connection, settings: FileSettingsRow) -> None:
    if settings.auto_accept not in AUTO_ACCEPT or settings.auto_accept_max_bytes < 0:
        raise StoreError("bad file settings")
    conn.execute(
        "INSERT INTO file_settings (id, folder, auto_accept, auto_accept_max_bytes) "
        "VALUES (1, ?, ?, ?) ON CONFLICT (id) DO UPDATE SET folder = excluded.folder, "
        "auto_accept = excluded.auto_accept, "
        "auto_accept_max_bytes = excluded.auto_accept_max_bytes",
        (settings.folder, settings.auto_accept, settings.auto_accept_max_bytes),
    )
