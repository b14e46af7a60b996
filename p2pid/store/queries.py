"""Typed queries: plain functions over a Connection, no I/O policy of their own.

Use them through `TrioStore.read` / `TrioStore.write`, e.g.
`await store.write(partial(mark_addr_ok, peer_id=p, addr=a, now_ms=t))`.
Functions that write more than one statement are atomic on their own (a SAVEPOINT),
so they are also safe on a bare connection.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, get_args

from p2pid.store.db import Connection, StoreError, savepoint

AddrSource = Literal["mdns", "manual", "invite", "identify"]
ADDR_SOURCES: frozenset[str] = frozenset(get_args(AddrSource))


@dataclass(frozen=True)
class LocalIdentityRow:
    """This node's identity. The secrets are kept out of repr() so they never reach a log."""

    name: str
    identity_seed: bytes = field(repr=False)
    device_seed: bytes = field(repr=False)
    olm_account: str = field(repr=False)  # vodozemac pickle
    created_at: int  # ms since the epoch


@dataclass(frozen=True)
class PeerAddrRow:
    addr: str
    source: str
    last_seen: int
    last_ok: int | None


@dataclass(frozen=True)
class PeerRow:
    peer_id: str
    first_seen: int
    last_seen: int
    fields: Mapping[str, str]
    addrs: tuple[PeerAddrRow, ...]  # best first: last dialled successfully, then last seen


def save_local_identity(conn: Connection, identity: LocalIdentityRow) -> None:
    """Store this node's identity once; a second identity is refused, never overwritten."""
    if load_local_identity(conn) is not None:
        raise StoreError("this store already holds a local identity")
    conn.execute(
        "INSERT INTO local_identity"
        " (id, name, identity_seed, device_seed, olm_account, created_at)"
        " VALUES (1, ?, ?, ?, ?, ?)",
        (
            identity.name,
            identity.identity_seed,
            identity.device_seed,
            identity.olm_account,
            identity.created_at,
        ),
    )


def load_local_identity(conn: Connection) -> LocalIdentityRow | None:
    row = conn.execute(
        "SELECT name, identity_seed, device_seed, olm_account, created_at"
        " FROM local_identity WHERE id = 1"
    ).fetchone()
    if row is None:
        return None
    name, identity_seed, device_seed, olm_account, created_at = row
    return LocalIdentityRow(
        name=str(name),
        identity_seed=bytes(identity_seed),
        device_seed=bytes(device_seed),
        olm_account=str(olm_account),
        created_at=int(created_at),
    )


def update_olm_account(conn: Connection, olm_account: str) -> None:
    """Replace the Olm account pickle (after every change to the account)."""
    cursor = conn.execute("UPDATE local_identity SET olm_account = ? WHERE id = 1", (olm_account,))
    if cursor.rowcount != 1:
        raise StoreError("no local identity to update")


def load_fallback_key(conn: Connection) -> str | None:
    """The Olm fallback key this device hands out (base64), if it has one yet."""
    row = conn.execute("SELECT olm_fallback_key FROM local_identity WHERE id = 1").fetchone()
    return None if row is None or row[0] is None else str(row[0])


def save_fallback_key(conn: Connection, fallback_key: str) -> None:
    conn.execute("UPDATE local_identity SET olm_fallback_key = ? WHERE id = 1", (fallback_key,))


def upsert_peer_seen(
    conn: Connection,
    peer_id: str,
    addrs: Sequence[str],
    source: AddrSource,
    fields: Mapping[str, str],
    now_ms: int,
) -> None:
    """Record that `peer_id` was seen at `addrs`; new `fields` are merged over the old ones."""
    if source not in ADDR_SOURCES:
        raise ValueError(
            f"unknown address source {source!r}; expected one of {sorted(ADDR_SOURCES)}"
        )
    with savepoint(conn, "upsert_peer_seen"):
        _upsert_peer(conn, peer_id, fields, now_ms)
        _upsert_addrs(conn, peer_id, addrs, source, now_ms)


def list_peers(conn: Connection) -> list[PeerRow]:
    """Every known peer, most recently seen first, each with its addresses."""
    addrs_by_peer = _addrs_by_peer(conn)
    rows = conn.execute(
        "SELECT peer_id, first_seen, last_seen, fields FROM peers ORDER BY last_seen DESC, peer_id"
    ).fetchall()
    return [
        PeerRow(
            peer_id=str(peer_id),
            first_seen=int(first_seen),
            last_seen=int(last_seen),
            fields=_decode_fields(fields),
            addrs=tuple(addrs_by_peer.get(str(peer_id), ())),
        )
        for peer_id, first_seen, last_seen, fields in rows
    ]


def mark_addr_ok(conn: Connection, peer_id: str, addr: str, now_ms: int) -> bool:
    """Record a successful connection to `addr`; False if the address is not known."""
    with savepoint(conn, "mark_addr_ok"):
        cursor = conn.execute(
            "UPDATE peer_addrs SET last_ok = ?, last_seen = max(last_seen, ?)"
            " WHERE peer_id = ? AND addr = ?",
            (now_ms, now_ms, peer_id, addr),
        )
        if cursor.rowcount == 0:
            return False
        conn.execute(
            "UPDATE peers SET last_seen = max(last_seen, ?) WHERE peer_id = ?", (now_ms, peer_id)
        )
    return True


def _upsert_peer(conn: Connection, peer_id: str, fields: Mapping[str, str], now_ms: int) -> None:
    conn.execute(
        "INSERT INTO peers (peer_id, first_seen, last_seen, fields) VALUES (?, ?, ?, ?)"
        " ON CONFLICT (peer_id) DO UPDATE SET"
        "  first_seen = min(first_seen, excluded.first_seen),"
        "  last_seen = max(last_seen, excluded.last_seen),"
        "  fields = json_patch(fields, excluded.fields)",
        (peer_id, now_ms, now_ms, _encode_fields(fields)),
    )


def _upsert_addrs(
    conn: Connection, peer_id: str, addrs: Sequence[str], source: str, now_ms: int
) -> None:
    conn.executemany(
        "INSERT INTO peer_addrs (peer_id, addr, source, last_seen) VALUES (?, ?, ?, ?)"
        " ON CONFLICT (peer_id, addr) DO UPDATE SET"
        "  source = excluded.source,"
        "  last_seen = max(last_seen, excluded.last_seen)",
        [(peer_id, addr, source, now_ms) for addr in addrs],
    )


def _addrs_by_peer(conn: Connection) -> dict[str, list[PeerAddrRow]]:
    addrs_by_peer: dict[str, list[PeerAddrRow]] = {}
    rows = conn.execute(
        "SELECT peer_id, addr, source, last_seen, last_ok FROM peer_addrs"
        " ORDER BY peer_id, last_ok DESC NULLS LAST, last_seen DESC, addr"
    )
    for peer_id, addr, source, last_seen, last_ok in rows:
        addrs_by_peer.setdefault(str(peer_id), []).append(
            PeerAddrRow(
                addr=str(addr),
                source=str(source),
                last_seen=int(last_seen),
                last_ok=None if last_ok is None else int(last_ok),
            )
        )
    return addrs_by_peer


def _encode_fields(fields: Mapping[str, str]) -> str:
    return json.dumps(dict(fields), sort_keys=True, separators=(",", ":"))


def _decode_fields(text: Any) -> dict[str, str]:
    decoded = json.loads(str(text))
    if not isinstance(decoded, dict):
        raise StoreError(f"peer fields are not a JSON object: {text!r}")
    return {str(key): str(value) for key, value in decoded.items()}
