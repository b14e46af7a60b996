"""Typed queries for contacts, their devices, invites, contact requests and the profile.

Plain functions over a Connection, like `queries.py`: use them through `TrioStore.read` /
`TrioStore.write`, e.g. `await store.write(partial(redeem_invite, invite_id=i, ...))`. They never
COMMIT, ROLLBACK or BEGIN; a function that writes more than one statement runs in a SAVEPOINT, so
it is atomic on a bare connection too and nests inside the writer's group transaction.

Times are integer milliseconds since the epoch (`now_ms`, `*_at`), except an invite's
`expires_at` and the `now_s` compared with it: unix seconds, as in the invite itself.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Literal, get_args

from p2pid.store.db import Connection, StoreError, check_blob, savepoint

IDENTITY_KEY_BYTES = 32
DEVICE_KEY_BYTES = 32
INVITE_ID_BYTES = 16

VerifiedBy = Literal["invite", "sas"]
VERIFIED_BY: frozenset[str] = frozenset(get_args(VerifiedBy))

Audience = Literal["public", "contacts", "chosen", "groups"]
AUDIENCES: frozenset[str] = frozenset(get_args(Audience))

RequestState = Literal["pending", "accepted", "declined", "replaced"]
REQUEST_STATES: frozenset[str] = frozenset(get_args(RequestState))
RequestDecision = Literal["accepted", "declined"]
REQUEST_DECISIONS: frozenset[str] = frozenset(get_args(RequestDecision))


# --- errors -------------------------------------------------------------------------------


class UnknownContactError(StoreError):
    """The identity key is not a contact."""


class UnknownProfileFieldError(StoreError):
    """No profile field of that name."""


class DeviceConflictError(StoreError):
    """A device (PeerId) already belongs to another contact's identity.

    Nothing was stored. This is what an identity key change looks like: record it with
    `record_identity_key_change` and let the person decide; never move the device silently.
    """

    def __init__(self, peer_id: str, owner_identity_key: bytes, claimed_by: bytes) -> None:
        super().__init__(
            f"device {peer_id} belongs to identity {owner_identity_key.hex()}, "
            f"not to {claimed_by.hex()}"
        )
        self.peer_id = peer_id
        self.owner_identity_key = owner_identity_key
        self.claimed_by = claimed_by


# --- contacts and devices -----------------------------------------------------------------


@dataclass(frozen=True)
class ContactDevice:
    """One device of a contact, as its signed device list certifies it, with its Olm prekeys.

    `peer_id` is derived from `device_key` by the caller (the store does not check it).
    """

    peer_id: str
    device_key: bytes
    olm_curve25519: str
    olm_ed25519: str
    name: str
    created_at: int
    capabilities: tuple[str, ...] = ()
    fallback_key: str | None = None
    one_time_keys: tuple[str, ...] = ()  # published and not claimed yet


@dataclass(frozen=True)
class ContactRecord:
    """What `upsert_contact` stores: a person and the devices of their device list."""

    identity_key: bytes
    display_name: str
    device_list: bytes | None  # the signed list, verbatim
    device_list_version: int
    devices: tuple[ContactDevice, ...]


class ContactUpsert(StrEnum):
    ADDED = "added"  # a new contact, with its devices
    DEVICES_UPDATED = "devices_updated"  # a newer device list replaced the devices
    DEVICES_KEPT = "devices_kept"  # an older or equal list: devices untouched (name updated)


@dataclass(frozen=True)
class ContactRow:
    identity_key: bytes
    display_name: str  # the name the contact gave themselves
    nickname: str | None  # the name I gave them
    verified_by: VerifiedBy | None
    verified_at: int | None
    blocked: bool
    device_list: bytes | None = field(repr=False)
    device_list_version: int
    added_at: int
    updated_at: int
    devices: tuple[ContactDevice, ...]  # by peer_id
    identity_key_changed: bool  # one of its devices presented another identity (unresolved)
    group_only: bool = False  # not a contact: a member of a group of mine, for its traffic only

    @property
    def verified(self) -> bool:
        return self.verified_by is not None

    @property
    def name(self) -> str:
        """What to call them: my nickname, else their display name."""
        return self.nickname if self.nickname is not None else self.display_name


@dataclass(frozen=True)
class ClaimedPrekey:
    """A key to open an Olm session with a device: a one-time key, or its fallback key."""

    key: str
    one_time: bool


@dataclass(frozen=True)
class IdentityKeyChangeRow:
    id: int
    peer_id: str
    old_identity_key: bytes
    new_identity_key: bytes
    seen_at: int  # first seen
    last_seen_at: int
    resolved_at: int | None

    @property
    def resolved(self) -> bool:
        return self.resolved_at is not None


def upsert_contact(
    conn: Connection,
    record: ContactRecord,
    now_ms: int,
    *,
    added_at: int | None = None,
    group_only: bool = False,
) -> ContactUpsert:
    """Add a contact, or update one: the display name always, the devices only from a newer list.

    `group_only` stores a new row as a group member who is not a contact. On an existing row,
    `group_only=False` makes it a contact (if it was group-only); `True` never changes the flag.

    A device list whose version is not greater than the stored one is ignored. A newer one
    replaces the devices to match it: devices not in it are deleted. A device already stored
    with the same Olm identity key keeps its stored prekeys (so a re-sent card never brings a
    claimed one-time key back; `set_device_prekeys` replaces them); new devices, or a device
    whose Olm identity key changed, take the record's prekeys.

    Raises DeviceConflictError (storing nothing) if a device belongs to another identity.
    """
    _check_record(record)
    key = record.identity_key
    with savepoint(conn, "upsert_contact"):
        row = conn.execute(
            "SELECT display_name, device_list_version FROM contacts WHERE identity_key = ?",
            (key,),
        ).fetchone()
        if row is None:
            _check_device_owners(conn, key, record.devices)
            # group_only is named only when set: a database before migration 6 takes a contact too
            flag = (", group_only", ", 1") if group_only else ("", "")
            conn.execute(
                "INSERT INTO contacts (identity_key, display_name, device_list,"
                f" device_list_version, added_at, updated_at{flag[0]})"
                f" VALUES (?, ?, ?, ?, ?, ?{flag[1]})",
                (
                    key,
                    record.display_name,
                    record.device_list,
                    record.device_list_version,
                    now_ms if added_at is None else added_at,
                    now_ms,
                ),
            )
            _replace_devices(conn, key, record.devices)
            return ContactUpsert.ADDED
        if not group_only:
            conn.execute(
                "UPDATE contacts SET group_only = 0, updated_at = ?"
                " WHERE identity_key = ? AND group_only",
                (now_ms, key),
            )
        stored_name, stored_version = str(row[0]), int(row[1])
        if record.device_list_version > stored_version:
            _check_device_owners(conn, key, record.devices)
            conn.execute(
                "UPDATE contacts SET display_name = ?, device_list = ?, device_list_version = ?,"
                " updated_at = ? WHERE identity_key = ?",
                (record.display_name, record.device_list, record.device_list_version, now_ms, key),
            )
            _replace_devices(conn, key, record.devices)
            return ContactUpsert.DEVICES_UPDATED
        if record.display_name != stored_name:
            conn.execute(
                "UPDATE contacts SET display_name = ?, updated_at = ? WHERE identity_key = ?",
                (record.display_name, now_ms, key),
            )
        return ContactUpsert.DEVICES_KEPT


def set_verified(conn: Connection, identity_key: bytes, by: VerifiedBy | None, now_ms: int) -> bool:
    """Mark a contact verified (`by` 'invite' or 'sas'), or unverified (`by` None).

    A contact verified by SAS stays so when an invite verifies it again. False if no such contact.
    """
    if by is not None and by not in VERIFIED_BY:
        raise ValueError(f"unknown verification {by!r}; expected one of {sorted(VERIFIED_BY)}")
    if by is None:
        sql = "UPDATE contacts SET verified_by = NULL, verified_at = NULL, updated_at = ?1"
    elif by == "invite":
        sql = (
            "UPDATE contacts SET"
            " verified_at = CASE WHEN verified_by = 'sas' THEN verified_at ELSE ?1 END,"
            " verified_by = CASE WHEN verified_by = 'sas' THEN 'sas' ELSE 'invite' END,"
            " updated_at = ?1"
        )
    else:
        sql = "UPDATE contacts SET verified_by = 'sas', verified_at = ?1, updated_at = ?1"
    cursor = conn.execute(sql + " WHERE identity_key = ?2", (now_ms, identity_key))
    return cursor.rowcount == 1


def get_contact(
    conn: Connection,
    identity_key: bytes,
    *,
    include_self: bool = False,
    include_group_only: bool = False,
) -> ContactRow | None:
    """The contact with this identity key. My own identity's row (my other devices) only if
    `include_self`, a group member who is not a contact only if `include_group_only`."""
    where = "WHERE c.identity_key = ?" + _hidden_rows(include_self, include_group_only)
    rows = _select_contacts(conn, where, (identity_key,))
    return rows[0] if rows else None


def contact_for_peer(
    conn: Connection,
    peer_id: str,
    *,
    include_self: bool = False,
    include_group_only: bool = False,
) -> ContactRow | None:
    """The contact one of whose devices is `peer_id` (with `include_self`, also my own row when
    it is one of my other devices; with `include_group_only`, also a group-only member)."""
    rows = _select_contacts(
        conn,
        "WHERE c.identity_key = (SELECT identity_key FROM contact_devices WHERE peer_id = ?)"
        + _hidden_rows(include_self, include_group_only),
        (peer_id,),
    )
    return rows[0] if rows else None


def _hidden_rows(include_self: bool, include_group_only: bool) -> str:
    return ("" if include_self else " AND NOT c.is_self") + (
        "" if include_group_only else " AND NOT c.group_only"
    )


def get_self(conn: Connection) -> ContactRow | None:
    """The row of my own identity: my signed device list and my devices."""
    rows = _select_contacts(conn, "WHERE c.is_self", ())
    return rows[0] if rows else None


def save_self(conn: Connection, record: ContactRecord, now_ms: int) -> ContactUpsert:
    """Store my own device list (the newest wins, as for a contact) in the row marked as mine.

    Devices that leave the list are recorded in `revoked_devices`.
    """
    before = get_self(conn)
    if before is not None and before.identity_key != record.identity_key:
        raise StoreError("the store already holds another identity's own device list")
    with savepoint(conn, "save_self"):
        outcome = upsert_contact(conn, record, now_ms)
        conn.execute(
            "UPDATE contacts SET is_self = 1 WHERE identity_key = ?", (record.identity_key,)
        )
        if before is not None and outcome is ContactUpsert.DEVICES_UPDATED:
            kept = {device.peer_id for device in record.devices}
            conn.executemany(
                "INSERT INTO revoked_devices (peer_id, name, created_at, revoked_at,"
                " device_list_version) VALUES (?, ?, ?, ?, ?) ON CONFLICT (peer_id) DO NOTHING",
                [
                    (d.peer_id, d.name, d.created_at, now_ms, record.device_list_version)
                    for d in before.devices
                    if d.peer_id not in kept
                ],
            )
    return outcome


@dataclass(frozen=True)
class RevokedDeviceRow:
    peer_id: str
    name: str
    created_at: int
    revoked_at: int
    device_list_version: int


def list_revoked_devices(conn: Connection) -> list[RevokedDeviceRow]:
    rows = conn.execute(
        "SELECT peer_id, name, created_at, revoked_at, device_list_version FROM revoked_devices"
        " ORDER BY revoked_at, peer_id"
    ).fetchall()
    return [RevokedDeviceRow(str(p), str(n), int(c), int(r), int(v)) for p, n, c, r, v in rows]


def list_contacts(conn: Connection) -> list[ContactRow]:
    """Every contact, blocked ones included, by name (case-insensitive). Not group-only rows."""
    return _by_name(_select_contacts(conn, "WHERE NOT c.is_self AND NOT c.group_only", ()))


def list_group_only(conn: Connection) -> list[ContactRow]:
    """The group members who are not contacts, by name (case-insensitive)."""
    return _by_name(_select_contacts(conn, "WHERE NOT c.is_self AND c.group_only", ()))


def list_known_people(conn: Connection) -> list[ContactRow]:
    """Contacts and group-only members (not my own row), blocked ones included, by name."""
    return _by_name(_select_contacts(conn, "WHERE NOT c.is_self", ()))


def _by_name(rows: list[ContactRow]) -> list[ContactRow]:
    return sorted(rows, key=lambda contact: (contact.name.casefold(), contact.identity_key))


def rename_contact(
    conn: Connection, identity_key: bytes, nickname: str | None, now_ms: int
) -> bool:
    """Set my nickname for a contact; None or '' clears it. False if no such contact."""
    cursor = conn.execute(
        "UPDATE contacts SET nickname = ?, updated_at = ? WHERE identity_key = ?",
        (nickname or None, now_ms, identity_key),
    )
    return cursor.rowcount == 1


def make_group_only(conn: Connection, identity_key: bytes, now_ms: int) -> bool:
    """A contact I remove who is still in a group with me: kept as a group-only person (hidden,
    their devices kept for the group's traffic). False if no such contact."""
    cursor = conn.execute(
        "UPDATE contacts SET group_only = 1, nickname = NULL, updated_at = ?"
        " WHERE identity_key = ? AND NOT is_self",
        (now_ms, identity_key),
    )
    return cursor.rowcount == 1


def remove_contact(conn: Connection, identity_key: bytes) -> bool:
    """Delete a contact with its devices, the fields they shared and my grants to them.

    A block on the identity stays. False if no such contact.
    """
    cursor = conn.execute("DELETE FROM contacts WHERE identity_key = ?", (identity_key,))
    return cursor.rowcount == 1


def set_blocked(conn: Connection, identity_key: bytes, blocked: bool, now_ms: int) -> bool:
    """Block or unblock an identity, contact or not. True if that changed anything."""
    check_blob(identity_key, IDENTITY_KEY_BYTES, "identity key")
    if blocked:
        cursor = conn.execute(
            "INSERT INTO blocked_identities (identity_key, blocked_at) VALUES (?, ?)"
            " ON CONFLICT (identity_key) DO NOTHING",
            (identity_key, now_ms),
        )
    else:
        cursor = conn.execute(
            "DELETE FROM blocked_identities WHERE identity_key = ?", (identity_key,)
        )
    return cursor.rowcount == 1


def is_blocked(conn: Connection, identity_key: bytes) -> bool:
    row = conn.execute(
        "SELECT 1 FROM blocked_identities WHERE identity_key = ?", (identity_key,)
    ).fetchone()
    return row is not None


def list_blocked(conn: Connection) -> list[bytes]:
    """Every blocked identity key, most recently blocked first."""
    rows = conn.execute(
        "SELECT identity_key FROM blocked_identities ORDER BY blocked_at DESC, identity_key"
    ).fetchall()
    return [bytes(key) for (key,) in rows]


def set_device_prekeys(
    conn: Connection, peer_id: str, one_time_keys: Sequence[str], fallback_key: str | None
) -> bool:
    """Replace the Olm prekeys stored for a device. False if no contact has that device."""
    cursor = conn.execute(
        "UPDATE contact_devices SET one_time_keys = ?, fallback_key = ? WHERE peer_id = ?",
        (_encode_list(one_time_keys), fallback_key, peer_id),
    )
    return cursor.rowcount == 1


def claim_one_time_key(conn: Connection, peer_id: str) -> ClaimedPrekey | None:
    """Take a one-time key of the device (it is removed), else its fallback key (kept).

    None if the device is unknown or has neither.
    """
    with savepoint(conn, "claim_one_time_key"):
        row = conn.execute(
            "SELECT one_time_keys, fallback_key FROM contact_devices WHERE peer_id = ?",
            (peer_id,),
        ).fetchone()
        if row is None:
            return None
        keys, fallback = _decode_list(row[0]), row[1]
        if keys:
            conn.execute(
                "UPDATE contact_devices SET one_time_keys = ? WHERE peer_id = ?",
                (_encode_list(keys[1:]), peer_id),
            )
            return ClaimedPrekey(key=keys[0], one_time=True)
    return None if fallback is None else ClaimedPrekey(key=str(fallback), one_time=False)


def record_identity_key_change(
    conn: Connection,
    peer_id: str,
    old_identity_key: bytes,
    new_identity_key: bytes,
    now_ms: int,
) -> int:
    """Flag that device `peer_id` of contact `old_identity_key` presented `new_identity_key`.

    The same unresolved change seen again updates its last_seen_at. Returns the change's id.
    """
    if old_identity_key == new_identity_key:
        raise ValueError("an identity key change needs two different keys")
    row = conn.execute(
        "INSERT INTO identity_key_changes"
        " (peer_id, old_identity_key, new_identity_key, seen_at, last_seen_at)"
        " VALUES (?, ?, ?, ?, ?)"
        " ON CONFLICT (peer_id, old_identity_key, new_identity_key) WHERE resolved_at IS NULL"
        " DO UPDATE SET last_seen_at = max(last_seen_at, excluded.last_seen_at)"
        " RETURNING id",
        (peer_id, old_identity_key, new_identity_key, now_ms, now_ms),
    ).fetchone()
    return int(row[0])


def resolve_identity_key_change(conn: Connection, change_id: int, now_ms: int) -> bool:
    """Mark a change as dealt with (the person decided). False if unknown or already resolved."""
    cursor = conn.execute(
        "UPDATE identity_key_changes SET resolved_at = ? WHERE id = ? AND resolved_at IS NULL",
        (now_ms, change_id),
    )
    return cursor.rowcount == 1


def list_identity_key_changes(
    conn: Connection, unresolved_only: bool = True
) -> list[IdentityKeyChangeRow]:
    """Identity key changes, most recently seen first."""
    where = "WHERE resolved_at IS NULL" if unresolved_only else ""
    rows = conn.execute(
        "SELECT id, peer_id, old_identity_key, new_identity_key, seen_at, last_seen_at,"
        f" resolved_at FROM identity_key_changes {where} ORDER BY last_seen_at DESC, id DESC"
    ).fetchall()
    return [
        IdentityKeyChangeRow(
            id=int(change_id),
            peer_id=str(peer_id),
            old_identity_key=bytes(old),
            new_identity_key=bytes(new),
            seen_at=int(seen_at),
            last_seen_at=int(last_seen_at),
            resolved_at=None if resolved_at is None else int(resolved_at),
        )
        for change_id, peer_id, old, new, seen_at, last_seen_at, resolved_at in rows
    ]


def _check_record(record: ContactRecord) -> None:
    check_blob(record.identity_key, IDENTITY_KEY_BYTES, "identity key")
    if record.device_list_version < 0:
        raise ValueError("a device list version is not negative")
    peer_ids = [device.peer_id for device in record.devices]
    if len(set(peer_ids)) != len(peer_ids):
        raise ValueError("the record lists a device twice")
    for device in record.devices:
        check_blob(device.device_key, DEVICE_KEY_BYTES, "device key")


def _check_device_owners(
    conn: Connection, identity_key: bytes, devices: Sequence[ContactDevice]
) -> None:
    for device in devices:
        row = conn.execute(
            "SELECT identity_key FROM contact_devices WHERE peer_id = ? AND identity_key <> ?",
            (device.peer_id, identity_key),
        ).fetchone()
        if row is not None:
            raise DeviceConflictError(device.peer_id, bytes(row[0]), identity_key)


def _replace_devices(
    conn: Connection, identity_key: bytes, devices: Sequence[ContactDevice]
) -> None:
    stored = {
        str(peer_id): str(curve)
        for peer_id, curve in conn.execute(
            "SELECT peer_id, olm_curve25519 FROM contact_devices WHERE identity_key = ?",
            (identity_key,),
        )
    }
    wanted = {device.peer_id for device in devices}
    conn.executemany(
        "DELETE FROM contact_devices WHERE identity_key = ? AND peer_id = ?",
        [(identity_key, peer_id) for peer_id in stored.keys() - wanted],
    )
    for device in devices:
        keeps_prekeys = stored.get(device.peer_id) == device.olm_curve25519
        prekeys_update = (
            ""
            if keeps_prekeys
            else ", fallback_key = excluded.fallback_key, one_time_keys = excluded.one_time_keys"
        )
        conn.execute(
            "INSERT INTO contact_devices (identity_key, peer_id, device_key, olm_curve25519,"
            " olm_ed25519, name, created_at, capabilities, fallback_key, one_time_keys)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
            " ON CONFLICT (identity_key, peer_id) DO UPDATE SET"
            " device_key = excluded.device_key, olm_curve25519 = excluded.olm_curve25519,"
            " olm_ed25519 = excluded.olm_ed25519, name = excluded.name,"
            " created_at = excluded.created_at, capabilities = excluded.capabilities"
            + prekeys_update,
            (
                identity_key,
                device.peer_id,
                device.device_key,
                device.olm_curve25519,
                device.olm_ed25519,
                device.name,
                device.created_at,
                _encode_list(device.capabilities),
                device.fallback_key,
                _encode_list(device.one_time_keys),
            ),
        )


_CONTACT_COLUMNS = (
    "c.identity_key, c.display_name, c.nickname, c.verified_by, c.verified_at,"
    " b.identity_key IS NOT NULL, c.device_list, c.device_list_version, c.added_at,"
    " c.updated_at,"
    " EXISTS (SELECT 1 FROM identity_key_changes k"
    "  WHERE k.old_identity_key = c.identity_key AND k.resolved_at IS NULL),"
    " c.group_only"
)


def _select_contacts(
    conn: Connection, where: str, parameters: tuple[object, ...]
) -> list[ContactRow]:
    rows = conn.execute(
        f"SELECT {_CONTACT_COLUMNS} FROM contacts c"
        f" LEFT JOIN blocked_identities b ON b.identity_key = c.identity_key {where}",
        parameters,
    ).fetchall()
    if not rows:
        return []
    devices = _devices_by_identity(conn, [bytes(row[0]) for row in rows])
    return [_contact_row(row, devices.get(bytes(row[0]), ())) for row in rows]


def _contact_row(row: Sequence[Any], devices: Sequence[ContactDevice]) -> ContactRow:
    (
        identity_key,
        display_name,
        nickname,
        verified_by,
        verified_at,
        blocked,
        device_list,
        device_list_version,
        added_at,
        updated_at,
        key_changed,
        group_only,
    ) = row
    return ContactRow(
        identity_key=bytes(identity_key),
        display_name=str(display_name),
        nickname=None if nickname is None else str(nickname),
        verified_by=_verified_by(verified_by),
        verified_at=None if verified_at is None else int(verified_at),
        blocked=bool(blocked),
        device_list=None if device_list is None else bytes(device_list),
        device_list_version=int(device_list_version),
        added_at=int(added_at),
        updated_at=int(updated_at),
        devices=tuple(devices),
        identity_key_changed=bool(key_changed),
        group_only=bool(group_only),
    )


def _verified_by(value: object) -> VerifiedBy | None:
    if value is None:
        return None
    if value == "invite":
        return "invite"
    if value == "sas":
        return "sas"
    raise StoreError(f"unknown verification {value!r} in the store")


def _devices_by_identity(
    conn: Connection, identity_keys: Sequence[bytes]
) -> dict[bytes, list[ContactDevice]]:
    devices: dict[bytes, list[ContactDevice]] = {}
    if len(identity_keys) == 1:
        cursor = conn.execute(
            f"SELECT {_DEVICE_COLUMNS} FROM contact_devices WHERE identity_key = ?"
            " ORDER BY peer_id",
            (identity_keys[0],),
        )
    else:
        cursor = conn.execute(
            f"SELECT {_DEVICE_COLUMNS} FROM contact_devices ORDER BY identity_key, peer_id"
        )
    for row in cursor:
        devices.setdefault(bytes(row[0]), []).append(_device(row[1:]))
    return devices


_DEVICE_COLUMNS = (
    "identity_key, peer_id, device_key, olm_curve25519, olm_ed25519, name, created_at,"
    " capabilities, fallback_key, one_time_keys"
)


def _device(row: Sequence[Any]) -> ContactDevice:
    (
        peer_id,
        device_key,
        curve,
        ed25519,
        name,
        created_at,
        capabilities,
        fallback_key,
        one_time_keys,
    ) = row
    return ContactDevice(
        peer_id=str(peer_id),
        device_key=bytes(device_key),
        olm_curve25519=str(curve),
        olm_ed25519=str(ed25519),
        name=str(name),
        created_at=int(created_at),
        capabilities=_decode_list(capabilities),
        fallback_key=None if fallback_key is None else str(fallback_key),
        one_time_keys=_decode_list(one_time_keys),
    )


# --- invites ------------------------------------------------------------------------------


class InviteState(StrEnum):
    LIVE = "live"
    CANCELLED = "cancelled"
    SPENT = "spent"
    EXPIRED = "expired"


class RedeemResult(StrEnum):
    OK = "ok"  # one use taken and recorded for this joiner
    ALREADY_REDEEMED_BY_THIS_JOINER = "already_redeemed_by_this_joiner"  # nothing charged
    UNKNOWN = "unknown"
    EXPIRED = "expired"
    CANCELLED = "cancelled"
    SPENT = "spent"


@dataclass(frozen=True)
class InviteRow:
    """An invite this node made. `secret` and `code` are None once burnt (spent or cancelled).

    The secrets stay out of repr() so they never reach a log.
    """

    invite_id: bytes
    kind: int
    secret: bytes | None = field(repr=False)
    code: str | None = field(repr=False)  # the invite's text form; it contains the secret
    max_uses: int
    uses_left: int
    expires_at: int  # unix SECONDS: the invite is void from that second on
    created_at: int
    cancelled_at: int | None = None

    def state(self, now_s: int) -> InviteState:
        if self.cancelled_at is not None:
            return InviteState.CANCELLED
        if self.uses_left <= 0:
            return InviteState.SPENT
        if now_s >= self.expires_at:
            return InviteState.EXPIRED
        return InviteState.LIVE

    def is_live(self, now_s: int) -> bool:
        return self.state(now_s) is InviteState.LIVE


@dataclass(frozen=True)
class InviteUseRow:
    invite_id: bytes
    joiner_identity_key: bytes
    used_at: int
    receipt: bytes | None = field(repr=False)


def create_invite(conn: Connection, invite: InviteRow) -> None:
    """Store a new invite: unused (uses_left == max_uses >= 1), not cancelled, with its secret."""
    check_blob(invite.invite_id, INVITE_ID_BYTES, "invite id")
    if not invite.secret or not invite.code:
        raise ValueError("a new invite needs its secret and its code")
    if invite.secret == bytes(len(invite.secret)):
        raise ValueError("an all-zero secret is the mark of a burnt invite")
    if not 1 <= invite.max_uses == invite.uses_left:
        raise ValueError("a new invite has max_uses >= 1 uses, all left")
    if invite.cancelled_at is not None:
        raise ValueError("a new invite is not cancelled")
    conn.execute(
        "INSERT INTO invites (invite_id, kind, secret, code, max_uses, uses_left, expires_at,"
        " created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        (
            invite.invite_id,
            invite.kind,
            invite.secret,
            invite.code,
            invite.max_uses,
            invite.uses_left,
            invite.expires_at,
            invite.created_at,
        ),
    )


def get_invite(conn: Connection, invite_id: bytes) -> InviteRow | None:
    """The invite, with its secret while it has one (check `state(now_s)` before trusting it)."""
    rows = _select_invites(conn, "WHERE invite_id = ?", (invite_id,))
    return rows[0] if rows else None


def list_invites(conn: Connection, now_s: int, include_spent: bool = False) -> list[InviteRow]:
    """Live invites, newest first; with `include_spent`, every invite (cancelled, expired too)."""
    if include_spent:
        return _select_invites(conn, "", ())
    return _select_invites(
        conn,
        "WHERE cancelled_at IS NULL AND uses_left > 0 AND expires_at > ?",
        (now_s,),
    )


def cancel_invite(conn: Connection, invite_id: bytes, now_ms: int) -> bool:
    """Cancel an invite and burn its secret. False if unknown, already cancelled, or spent."""
    cursor = conn.execute(
        f"UPDATE invites SET cancelled_at = ?, {_BURN} WHERE invite_id = ?"
        " AND cancelled_at IS NULL AND uses_left > 0",
        (now_ms, invite_id),
    )
    return cursor.rowcount == 1


def burn_expired_invites(conn: Connection, now_s: int) -> int:
    """Burn the secrets of expired invites (housekeeping); returns how many were burnt."""
    cursor = conn.execute(
        f"UPDATE invites SET {_BURN} WHERE expires_at <= ? AND code <> ''", (now_s,)
    )
    return cursor.rowcount


def redeem_invite(
    conn: Connection,
    invite_id: bytes,
    joiner_identity_key: bytes,
    now_s: int,
    now_ms: int,
    receipt: bytes | None = None,
) -> RedeemResult:
    """Take one use of an invite for a joiner whose proof of the secret the caller checked.

    Atomic: the use is recorded and uses_left decremented together; taking the last use burns
    the secret (zero bytes) and the code (''). A joiner who already redeemed this invite gets
    ALREADY_REDEEMED_BY_THIS_JOINER whatever the invite's state now, and is not charged.
    `receipt` (opaque) is kept with the use, for answering that joiner's retries once the
    secret is gone: see `get_invite_use`.
    """
    check_blob(joiner_identity_key, IDENTITY_KEY_BYTES, "joiner identity key")
    with savepoint(conn, "redeem_invite"):
        if get_invite_use(conn, invite_id, joiner_identity_key) is not None:
            return RedeemResult.ALREADY_REDEEMED_BY_THIS_JOINER
        invite = get_invite(conn, invite_id)
        if invite is None:
            return RedeemResult.UNKNOWN
        state = invite.state(now_s)
        if state is not InviteState.LIVE:
            return RedeemResult(state.value)
        conn.execute(
            "INSERT INTO invite_uses (invite_id, joiner_identity_key, used_at, receipt)"
            " VALUES (?, ?, ?, ?)",
            (invite_id, joiner_identity_key, now_ms, receipt),
        )
        cursor = conn.execute(
            "UPDATE invites SET uses_left = uses_left - 1 WHERE invite_id = ? AND uses_left > 0",
            (invite_id,),
        )
        if cursor.rowcount != 1:
            raise StoreError("the invite changed while it was being redeemed")
        conn.execute(
            f"UPDATE invites SET {_BURN} WHERE invite_id = ? AND uses_left = 0", (invite_id,)
        )
    return RedeemResult.OK


def get_invite_use(
    conn: Connection, invite_id: bytes, joiner_identity_key: bytes
) -> InviteUseRow | None:
    """The use this joiner made of the invite, if any (look here before checking a proof:
    a retry after the last use finds the secret burnt)."""
    rows = _select_invite_uses(
        conn, "WHERE invite_id = ? AND joiner_identity_key = ?", (invite_id, joiner_identity_key)
    )
    return rows[0] if rows else None


def list_invite_uses(conn: Connection, invite_id: bytes) -> list[InviteUseRow]:
    """Who used the invite, in order of use."""
    return _select_invite_uses(conn, "WHERE invite_id = ?", (invite_id,))


_BURN = "secret = zeroblob(length(secret)), code = ''"


def _select_invites(
    conn: Connection, where: str, parameters: tuple[object, ...]
) -> list[InviteRow]:
    rows = conn.execute(
        "SELECT invite_id, kind, secret, code, max_uses, uses_left, expires_at, created_at,"
        f" cancelled_at FROM invites {where} ORDER BY created_at DESC, invite_id",
        parameters,
    ).fetchall()
    invites = []
    for (
        invite_id,
        kind,
        secret,
        code,
        max_uses,
        uses_left,
        expires_at,
        created_at,
        cancelled,
    ) in rows:
        burnt = code == ""
        invites.append(
            InviteRow(
                invite_id=bytes(invite_id),
                kind=int(kind),
                secret=None if burnt else bytes(secret),
                code=None if burnt else str(code),
                max_uses=int(max_uses),
                uses_left=int(uses_left),
                expires_at=int(expires_at),
                created_at=int(created_at),
                cancelled_at=None if cancelled is None else int(cancelled),
            )
        )
    return invites


def _select_invite_uses(
    conn: Connection, where: str, parameters: tuple[object, ...]
) -> list[InviteUseRow]:
    rows = conn.execute(
        "SELECT invite_id, joiner_identity_key, used_at, receipt FROM invite_uses"
        f" {where} ORDER BY used_at, joiner_identity_key",
        parameters,
    ).fetchall()
    return [
        InviteUseRow(
            invite_id=bytes(invite_id),
            joiner_identity_key=bytes(joiner),
            used_at=int(used_at),
            receipt=None if receipt is None else bytes(receipt),
        )
        for invite_id, joiner, used_at, receipt in rows
    ]


# --- contact requests ---------------------------------------------------------------------


@dataclass(frozen=True)
class ContactRequestRow:
    id: int
    identity_key: bytes
    peer_id: str
    display_name: str
    note: str
    card: bytes = field(repr=False)  # the sender's card, verbatim (b'' once replaced)
    received_at: int
    state: RequestState
    decided_at: int | None


def add_contact_request(
    conn: Connection,
    identity_key: bytes,
    peer_id: str,
    display_name: str,
    note: str,
    card: bytes,
    now_ms: int,
) -> int:
    """Store a pending request; returns its id.

    A pending request from the same identity is replaced: it becomes 'replaced' (its card
    dropped) and still counts in `count_requests_since`. The caller checks blocks and rate limits.
    """
    check_blob(identity_key, IDENTITY_KEY_BYTES, "identity key")
    with savepoint(conn, "add_contact_request"):
        conn.execute(
            "UPDATE contact_requests SET state = 'replaced', decided_at = ?, card = X''"
            " WHERE identity_key = ? AND state = 'pending'",
            (now_ms, identity_key),
        )
        cursor = conn.execute(
            "INSERT INTO contact_requests"
            " (identity_key, peer_id, display_name, note, card, received_at, state)"
            " VALUES (?, ?, ?, ?, ?, ?, 'pending')",
            (identity_key, peer_id, display_name, note, card, now_ms),
        )
        request_id = cursor.lastrowid
    if request_id is None:
        raise StoreError("the contact request got no id")
    return request_id


def list_contact_requests(
    conn: Connection, state: RequestState | None = "pending"
) -> list[ContactRequestRow]:
    """Requests in `state` (None: all), newest first."""
    if state is None:
        return _select_requests(conn, "", ())
    if state not in REQUEST_STATES:
        raise ValueError(f"unknown request state {state!r}; expected one of {REQUEST_STATES}")
    return _select_requests(conn, "WHERE state = ?", (state,))


def get_contact_request(conn: Connection, request_id: int) -> ContactRequestRow | None:
    rows = _select_requests(conn, "WHERE id = ?", (request_id,))
    return rows[0] if rows else None


def set_contact_request_state(
    conn: Connection, request_id: int, state: RequestDecision, now_ms: int
) -> bool:
    """Accept or decline a pending request. False if unknown or no longer pending."""
    if state not in REQUEST_DECISIONS:
        raise ValueError(f"a request is decided {sorted(REQUEST_DECISIONS)}, not {state!r}")
    cursor = conn.execute(
        "UPDATE contact_requests SET state = ?, decided_at = ? WHERE id = ? AND state = 'pending'",
        (state, now_ms, request_id),
    )
    return cursor.rowcount == 1


def count_requests_since(conn: Connection, since_ms: int, identity_key: bytes | None = None) -> int:
    """Requests received at or after `since_ms` (every state), from one identity or from all."""
    if identity_key is None:
        row = conn.execute(
            "SELECT count(*) FROM contact_requests WHERE received_at >= ?", (since_ms,)
        ).fetchone()
    else:
        row = conn.execute(
            "SELECT count(*) FROM contact_requests WHERE identity_key = ? AND received_at >= ?",
            (identity_key, since_ms),
        ).fetchone()
    return int(row[0])


def prune_contact_requests(conn: Connection, before_ms: int) -> int:
    """Delete requests no longer pending that were received before `before_ms` (keep it older
    than any rate-limit window). Returns how many were deleted."""
    cursor = conn.execute(
        "DELETE FROM contact_requests WHERE state <> 'pending' AND received_at < ?", (before_ms,)
    )
    return cursor.rowcount


def _select_requests(
    conn: Connection, where: str, parameters: tuple[object, ...]
) -> list[ContactRequestRow]:
    rows = conn.execute(
        "SELECT id, identity_key, peer_id, display_name, note, card, received_at, state,"
        f" decided_at FROM contact_requests {where} ORDER BY received_at DESC, id DESC",
        parameters,
    ).fetchall()
    return [
        ContactRequestRow(
            id=int(request_id),
            identity_key=bytes(identity_key),
            peer_id=str(peer_id),
            display_name=str(display_name),
            note=str(note),
            card=bytes(card),
            received_at=int(received_at),
            state=_request_state(state),
            decided_at=None if decided_at is None else int(decided_at),
        )
        for (
            request_id,
            identity_key,
            peer_id,
            display_name,
            note,
            card,
            received_at,
            state,
            decided_at,
        ) in rows
    ]


def _request_state(value: object) -> RequestState:
    for state in get_args(RequestState):
        if value == state:
            result: RequestState = state
            return result
    raise StoreError(f"unknown request state {value!r} in the store")


# --- profile ------------------------------------------------------------------------------


@dataclass(frozen=True)
class ProfileFieldRow:
    name: str
    value: str
    audience: Audience
    updated_at: int
    granted_to: tuple[bytes, ...]  # identity keys; they see it while audience == 'chosen'


def set_profile_field(
    conn: Connection, name: str, value: str, audience: Audience, now_ms: int
) -> None:
    """Add or change one of my fields. Grants are kept across audience changes: they apply
    whenever the audience is 'chosen'."""
    if not name:
        raise ValueError("a profile field needs a name")
    if audience not in AUDIENCES:
        raise ValueError(f"unknown audience {audience!r}; expected one of {sorted(AUDIENCES)}")
    conn.execute(
        "INSERT INTO profile_fields (name, value, audience, updated_at) VALUES (?, ?, ?, ?)"
        " ON CONFLICT (name) DO UPDATE SET value = excluded.value,"
        " audience = excluded.audience, updated_at = excluded.updated_at",
        (name, value, audience, now_ms),
    )


def remove_profile_field(conn: Connection, name: str) -> bool:
    """Delete one of my fields and its grants. False if there was none."""
    cursor = conn.execute("DELETE FROM profile_fields WHERE name = ?", (name,))
    return cursor.rowcount == 1


def list_profile_fields(conn: Connection) -> list[ProfileFieldRow]:
    """My fields by name, each with the contacts it is granted to."""
    grants: dict[str, list[bytes]] = {}
    for name, identity_key in conn.execute(
        "SELECT name, identity_key FROM profile_field_grants ORDER BY name, identity_key"
    ):
        grants.setdefault(str(name), []).append(bytes(identity_key))
    rows = conn.execute(
        "SELECT name, value, audience, updated_at FROM profile_fields ORDER BY name"
    ).fetchall()
    return [
        ProfileFieldRow(
            name=str(name),
            value=str(value),
            audience=parse_audience(audience),
            updated_at=int(updated_at),
            granted_to=tuple(grants.get(str(name), ())),
        )
        for name, value, audience, updated_at in rows
    ]


def grant_field(conn: Connection, name: str, identity_key: bytes) -> bool:
    """Let a contact see a 'chosen' field. True if newly granted.

    Raises UnknownProfileFieldError or UnknownContactError.
    """
    with savepoint(conn, "grant_field"):
        if conn.execute("SELECT 1 FROM profile_fields WHERE name = ?", (name,)).fetchone() is None:
            raise UnknownProfileFieldError(f"no profile field {name!r}")
        _require_contact(conn, identity_key)
        cursor = conn.execute(
            "INSERT INTO profile_field_grants (name, identity_key) VALUES (?, ?)"
            " ON CONFLICT (name, identity_key) DO NOTHING",
            (name, identity_key),
        )
    return cursor.rowcount == 1


def revoke_field_grant(conn: Connection, name: str, identity_key: bytes) -> bool:
    """False if there was no such grant."""
    cursor = conn.execute(
        "DELETE FROM profile_field_grants WHERE name = ? AND identity_key = ?",
        (name, identity_key),
    )
    return cursor.rowcount == 1


def fields_visible_to(conn: Connection, identity_key: bytes | None) -> dict[str, str]:
    """My fields the identity may see: 'public' ones, plus, for a contact that is not blocked,
    'contacts' ones and the 'chosen' ones granted to it. None means anyone (public only).
    'groups' fields are never visible to a contact as such."""
    rows = conn.execute(
        "SELECT f.name, f.value FROM profile_fields f WHERE f.audience = 'public'"
        " OR (EXISTS (SELECT 1 FROM contacts c WHERE c.identity_key = ?1 AND NOT c.is_self"
        "             AND NOT c.group_only)"
        "     AND NOT EXISTS (SELECT 1 FROM blocked_identities b WHERE b.identity_key = ?1)"
        "     AND (f.audience = 'contacts'"
        "          OR (f.audience = 'chosen' AND EXISTS (SELECT 1 FROM profile_field_grants g"
        "              WHERE g.name = f.name AND g.identity_key = ?1))))"
        " ORDER BY f.name",
        (identity_key,),
    ).fetchall()
    return {str(name): str(value) for name, value in rows}


def set_contact_fields(
    conn: Connection, identity_key: bytes, fields: Mapping[str, str], now_ms: int
) -> bool:
    """Replace the whole set of fields a contact shares with me: a field missing from `fields`
    was revoked and is deleted. Unchanged fields keep their updated_at. True if anything changed.

    Raises UnknownContactError.
    """
    with savepoint(conn, "set_contact_fields"):
        _require_contact(conn, identity_key)
        stored = contact_fields(conn, identity_key)
        revoked = stored.keys() - fields.keys()
        changed = {name: value for name, value in fields.items() if stored.get(name) != value}
        conn.executemany(
            "DELETE FROM contact_fields WHERE identity_key = ? AND name = ?",
            [(identity_key, name) for name in revoked],
        )
        conn.executemany(
            "INSERT INTO contact_fields (identity_key, name, value, updated_at)"
            " VALUES (?, ?, ?, ?) ON CONFLICT (identity_key, name) DO UPDATE SET"
            " value = excluded.value, updated_at = excluded.updated_at",
            [(identity_key, name, value, now_ms) for name, value in changed.items()],
        )
    return bool(revoked or changed)


def contact_fields(conn: Connection, identity_key: bytes) -> dict[str, str]:
    """The fields a contact shares with me, by name."""
    rows = conn.execute(
        "SELECT name, value FROM contact_fields WHERE identity_key = ? ORDER BY name",
        (identity_key,),
    ).fetchall()
    return {str(name): str(value) for name, value in rows}


def parse_audience(value: object) -> Audience:
    for audience in get_args(Audience):
        if value == audience:
            result: Audience = audience
            return result
    raise StoreError(f"unknown audience {value!r} in the store")


def _require_contact(conn: Connection, identity_key: bytes) -> None:
    row = conn.execute(
        "SELECT 1 FROM contacts WHERE identity_key = ? AND NOT is_self AND NOT group_only",
        (identity_key,),
    ).fetchone()
    if row is None:
        raise UnknownContactError(f"no contact with identity key {bytes(identity_key).hex()}")


# --- shared helpers -----------------------------------------------------------------------


def _encode_list(items: Iterable[str]) -> str:
    values = list(items)
    if not all(isinstance(item, str) for item in values):
        raise ValueError("expected a list of strings")
    return json.dumps(values, separators=(",", ":"))


def _decode_list(text: object) -> tuple[str, ...]:
    decoded = json.loads(str(text))
    if not isinstance(decoded, list):
        raise StoreError(f"expected a JSON list in the store, got {text!r}")
    return tuple(str(item) for item in decoded)
