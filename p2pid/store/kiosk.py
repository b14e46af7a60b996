"""Kiosk queries (schema version 5): both sides of kiosk pairing.

Kiosk side: the persons paired with this kiosk (`kiosk_grants`: their signed grant and device
list; at most one owner), grant ids revoked for good (`kiosk_revoked_grants`), and the log of
every invocation (`kiosk_invocations`), and the short-code lockout (`kiosk_code_lock`: recent
wrong-code times and the end of a lock). Person side: the kiosks this person paired with
(`paired_kiosks`). Times are ms since the epoch.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from p2pid.store.db import Connection, check_blob, savepoint

GRANT_ID_BYTES = 16
KEY_BYTES = 32


@dataclass(frozen=True)
class KioskGrantRow:
    grant_id: bytes
    identity_key: bytes
    role: str
    display_name: str
    grant: bytes  # MessagePack SignedGrant
    device_list: bytes  # MessagePack SignedDeviceList
    device_list_version: int
    addrs: tuple[str, ...]
    paired_at: int
    expires_at: int


@dataclass(frozen=True)
class InvocationRow:
    at: int
    grant_id: bytes | None
    identity_key: bytes | None
    peer_id: str
    routine: str
    args: tuple[str, ...]
    ok: bool
    exit_code: int | None
    output: str
    duration_ms: float
    refused: str | None


@dataclass(frozen=True)
class PairedKioskRow:
    peer_id: str
    kiosk_identity_key: bytes
    name: str
    role: str
    grant_id: bytes
    grant: bytes
    expires_at: int
    addrs: tuple[str, ...]
    routines: str  # JSON list of routine descriptions
    paired_at: int
    last_seen: int | None
    health: str | None


_GRANT_COLUMNS = (
    "grant_id, identity_key, role, display_name, grant_record, device_list,"
    " device_list_version, addrs, paired_at, expires_at"
)


def _grant_row(row: tuple[object, ...]) -> KioskGrantRow:
    (grant_id, identity_key, role, name, grant, devices, version, addrs, paired, expires) = row
    return KioskGrantRow(
        grant_id=bytes(grant_id),  # type: ignore[call-overload]
        identity_key=bytes(identity_key),  # type: ignore[call-overload]
        role=str(role),
        display_name=str(name),
        grant=bytes(grant),  # type: ignore[call-overload]
        device_list=bytes(devices),  # type: ignore[call-overload]
        device_list_version=int(version),  # type: ignore[call-overload]
        addrs=tuple(json.loads(str(addrs))),
        paired_at=int(paired),  # type: ignore[call-overload]
        expires_at=int(expires),  # type: ignore[call-overload]
    )


# -- kiosk side --------------------------------------------------------------------------------


def save_grant(conn: Connection, row: KioskGrantRow) -> None:
    """Store a paired person. A person pairing again replaces their earlier grant, whose id is
    refused for good from then on (revoked at `row.paired_at`), in the same transaction."""
    check_blob(row.grant_id, GRANT_ID_BYTES, "grant id")
    check_blob(row.identity_key, KEY_BYTES, "identity key")
    with savepoint(conn, "save_grant"):
        conn.execute(
            "INSERT OR IGNORE INTO kiosk_revoked_grants (grant_id, revoked_at)"
            " SELECT grant_id, ? FROM kiosk_grants WHERE identity_key = ? AND grant_id != ?",
            (row.paired_at, row.identity_key, row.grant_id),
        )
        conn.execute("DELETE FROM kiosk_grants WHERE identity_key = ?", (row.identity_key,))
        conn.execute(
            f"INSERT INTO kiosk_grants ({_GRANT_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                row.grant_id,
                row.identity_key,
                row.role,
                row.display_name,
                row.grant,
                row.device_list,
                row.device_list_version,
                json.dumps(list(row.addrs)),
                row.paired_at,
                row.expires_at,
            ),
        )


def get_grant(conn: Connection, grant_id: bytes) -> KioskGrantRow | None:
    row = conn.execute(
        f"SELECT {_GRANT_COLUMNS} FROM kiosk_grants WHERE grant_id = ?", (grant_id,)
    ).fetchone()
    return _grant_row(row) if row is not None else None


def list_grants(conn: Connection) -> list[KioskGrantRow]:
    rows = conn.execute(
        f"SELECT {_GRANT_COLUMNS} FROM kiosk_grants ORDER BY role = 'guest', paired_at"
    ).fetchall()
    return [_grant_row(row) for row in rows]


def grant_for_identity(conn: Connection, identity_key: bytes) -> KioskGrantRow | None:
    """The grant this person holds now (one per person), expired or not."""
    row = conn.execute(
        f"SELECT {_GRANT_COLUMNS} FROM kiosk_grants WHERE identity_key = ?", (identity_key,)
    ).fetchone()
    return _grant_row(row) if row is not None else None


def owner_grant(conn: Connection) -> KioskGrantRow | None:
    row = conn.execute(f"SELECT {_GRANT_COLUMNS} FROM kiosk_grants WHERE role = 'owner'").fetchone()
    return _grant_row(row) if row is not None else None


def update_device_list(conn: Connection, grant_id: bytes, device_list: bytes, version: int) -> None:
    conn.execute(
        "UPDATE kiosk_grants SET device_list = ?, device_list_version = ?"
        " WHERE grant_id = ? AND device_list_version < ?",
        (device_list, version, grant_id, version),
    )


def is_revoked(conn: Connection, grant_id: bytes) -> bool:
    found = conn.execute(
        "SELECT 1 FROM kiosk_revoked_grants WHERE grant_id = ?", (grant_id,)
    ).fetchone()
    return found is not None


def revoke_grants(conn: Connection, grant_ids: list[bytes], now_ms: int) -> None:
    """Drop these grants and refuse their ids for good, in one transaction."""
    with savepoint(conn, "revoke_grants"):
        for grant_id in grant_ids:
            check_blob(grant_id, GRANT_ID_BYTES, "grant id")
            conn.execute("DELETE FROM kiosk_grants WHERE grant_id = ?", (grant_id,))
            conn.execute(
                "INSERT OR IGNORE INTO kiosk_revoked_grants (grant_id, revoked_at) VALUES (?, ?)",
                (grant_id, now_ms),
            )


def log_invocation(conn: Connection, row: InvocationRow) -> None:
    conn.execute(
        "INSERT INTO kiosk_invocations (at, grant_id, identity_key, peer_id, routine, args, ok,"
        " exit_code, output, duration_ms, refused) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (
            row.at,
            row.grant_id,
            row.identity_key,
            row.peer_id,
            row.routine,
            json.dumps(list(row.args)),
            int(row.ok),
            row.exit_code,
            row.output,
            row.duration_ms,
            row.refused,
        ),
    )


def list_invocations(conn: Connection, limit: int = 100) -> list[InvocationRow]:
    rows = conn.execute(
        "SELECT at, grant_id, identity_key, peer_id, routine, args, ok, exit_code, output,"
        " duration_ms, refused FROM kiosk_invocations ORDER BY id DESC LIMIT ?",
        (limit,),
    ).fetchall()
    return [
        InvocationRow(
            at=int(at),
            grant_id=bytes(grant_id) if grant_id is not None else None,
            identity_key=bytes(identity_key) if identity_key is not None else None,
            peer_id=str(peer_id),
            routine=str(routine),
            args=tuple(json.loads(str(args))),
            ok=bool(ok),
            exit_code=None if exit_code is None else int(exit_code),
            output=str(output),
            duration_ms=float(duration_ms),
            refused=None if refused is None else str(refused),
        )
        for (
            at,
            grant_id,
            identity_key,
            peer_id,
            routine,
            args,
            ok,
            exit_code,
            output,
            duration_ms,
            refused,
        ) in rows
    ]


@dataclass(frozen=True)
class CodeLock:
    """Short-code attempts that count as failures (times, ms) and when a lockout ends (ms)."""

    failures: tuple[int, ...] = ()
    locked_until: int = 0


def load_code_lock(conn: Connection) -> CodeLock:
    row = conn.execute("SELECT failures, locked_until FROM kiosk_code_lock WHERE id = 1").fetchone()
    if row is None:
        return CodeLock()
    failures, locked_until = row
    return CodeLock(
        failures=tuple(int(at) for at in json.loads(str(failures))),
        locked_until=int(locked_until),
    )


def save_code_lock(conn: Connection, lock: CodeLock) -> None:
    conn.execute(
        "INSERT OR REPLACE INTO kiosk_code_lock (id, failures, locked_until) VALUES (1, ?, ?)",
        (json.dumps(list(lock.failures)), lock.locked_until),
    )


# -- person side --------------------------------------------------------------------------------

_KIOSK_COLUMNS = (
    "peer_id, kiosk_identity_key, name, role, grant_id, grant_record, expires_at, addrs,"
    " routines, paired_at, last_seen, health"
)


def _kiosk_row(row: tuple[object, ...]) -> PairedKioskRow:
    (peer_id, key, name, role, grant_id, grant, expires, addrs, routines, paired, seen, health) = (
        row
    )
    return PairedKioskRow(
        peer_id=str(peer_id),
        kiosk_identity_key=bytes(key),  # type: ignore[call-overload]
        name=str(name),
        role=str(role),
        grant_id=bytes(grant_id),  # type: ignore[call-overload]
        grant=bytes(grant),  # type: ignore[call-overload]
        expires_at=int(expires),  # type: ignore[call-overload]
        addrs=tuple(json.loads(str(addrs))),
        routines=str(routines),
        paired_at=int(paired),  # type: ignore[call-overload]
        last_seen=None if seen is None else int(seen),  # type: ignore[call-overload]
        health=None if health is None else str(health),
    )


def save_paired_kiosk(conn: Connection, row: PairedKioskRow) -> None:
    check_blob(row.grant_id, GRANT_ID_BYTES, "grant id")
    check_blob(row.kiosk_identity_key, KEY_BYTES, "kiosk identity key")
    conn.execute(
        f"INSERT OR REPLACE INTO paired_kiosks ({_KIOSK_COLUMNS})"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (
            row.peer_id,
            row.kiosk_identity_key,
            row.name,
            row.role,
            row.grant_id,
            row.grant,
            row.expires_at,
            json.dumps(list(row.addrs)),
            row.routines,
            row.paired_at,
            row.last_seen,
            row.health,
        ),
    )


def list_paired_kiosks(conn: Connection) -> list[PairedKioskRow]:
    rows = conn.execute(f"SELECT {_KIOSK_COLUMNS} FROM paired_kiosks ORDER BY name").fetchall()
    return [_kiosk_row(row) for row in rows]


def delete_paired_kiosk(conn: Connection, peer_id: str) -> None:
    conn.execute("DELETE FROM paired_kiosks WHERE peer_id = ?", (peer_id,))


def paired_kiosk_for_grant(conn: Connection, grant_id: bytes) -> PairedKioskRow | None:
    row = conn.execute(
        f"SELECT {_KIOSK_COLUMNS} FROM paired_kiosks WHERE grant_id = ?", (grant_id,)
    ).fetchone()
    return _kiosk_row(row) if row is not None else None


def mark_kiosk_seen(conn: Connection, peer_id: str, now_ms: int, health: str | None) -> None:
    conn.execute(
        "UPDATE paired_kiosks SET last_seen = ?, health = coalesce(?, health) WHERE peer_id = ?",
        (now_ms, health, peer_id),
    )
