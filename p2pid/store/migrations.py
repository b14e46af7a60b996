"""The schema's history: numbered migrations, oldest first.

`db.open_database` applies the ones a database has not seen, each in its own
transaction, and records the number reached in `PRAGMA user_version`. Never edit
a migration that has shipped: add a new one. Times are integer milliseconds since
the epoch.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Migration:
    version: int
    description: str
    statements: tuple[str, ...]


MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        version=1,
        description="local identity, peers and their addresses",
        statements=(
            """
            CREATE TABLE local_identity (
                id INTEGER PRIMARY KEY CHECK (id = 1),
                name TEXT NOT NULL,
                identity_seed BLOB NOT NULL,
                device_seed BLOB NOT NULL,
                olm_account TEXT NOT NULL,  -- vodozemac pickle, encrypted with the vault key
                created_at INTEGER NOT NULL
            )
            """,
            """
            CREATE TABLE peers (
                peer_id TEXT PRIMARY KEY,
                first_seen INTEGER NOT NULL,
                last_seen INTEGER NOT NULL,
                fields TEXT NOT NULL DEFAULT '{}'  -- JSON object of strings
            )
            """,
            """
            CREATE TABLE peer_addrs (
                peer_id TEXT NOT NULL REFERENCES peers ON DELETE CASCADE,
                addr TEXT NOT NULL,
                source TEXT NOT NULL,  -- mdns | manual | invite | identify
                last_seen INTEGER NOT NULL,
                last_ok INTEGER,
                PRIMARY KEY (peer_id, addr)
            )
            """,
        ),
    ),
    Migration(
        version=2,
        description="contacts, their devices, invites, contact requests and the profile",
        statements=(
            # A contact is a person: their Ed25519 identity public key. Verification: NULL
            # verified_by means unverified. device_list is the latest signed list, kept
            # verbatim; contact_devices is what it says, as the caller decoded it.
            """
            CREATE TABLE contacts (
                identity_key BLOB PRIMARY KEY
                    CHECK (typeof(identity_key) = 'blob' AND length(identity_key) = 32),
                display_name TEXT NOT NULL,
                nickname TEXT,
                verified_by TEXT CHECK (verified_by IN ('invite', 'sas')),
                verified_at INTEGER,
                device_list BLOB,
                device_list_version INTEGER NOT NULL DEFAULT 0 CHECK (device_list_version >= 0),
                added_at INTEGER NOT NULL,
                updated_at INTEGER NOT NULL,
                CHECK ((verified_by IS NULL) = (verified_at IS NULL))
            )
            """,
            """
            CREATE TABLE contact_devices (
                identity_key BLOB NOT NULL REFERENCES contacts ON DELETE CASCADE,
                peer_id TEXT NOT NULL,
                device_key BLOB NOT NULL
                    CHECK (typeof(device_key) = 'blob' AND length(device_key) = 32),
                olm_curve25519 TEXT NOT NULL,  -- base64
                olm_ed25519 TEXT NOT NULL,  -- base64
                name TEXT NOT NULL,
                created_at INTEGER NOT NULL,
                capabilities TEXT NOT NULL DEFAULT '[]' CHECK (json_type(capabilities) = 'array'),
                fallback_key TEXT,  -- base64 Curve25519
                -- JSON list of base64 Curve25519 one-time keys not claimed yet
                one_time_keys TEXT NOT NULL DEFAULT '[]' CHECK (json_type(one_time_keys) = 'array'),
                PRIMARY KEY (identity_key, peer_id)
            )
            """,
            # A device belongs to one identity only.
            "CREATE UNIQUE INDEX contact_devices_peer_id ON contact_devices (peer_id)",
            # A device that presented another identity key than the one its contact has.
            """
            CREATE TABLE identity_key_changes (
                id INTEGER PRIMARY KEY,
                peer_id TEXT NOT NULL,
                old_identity_key BLOB NOT NULL,
                new_identity_key BLOB NOT NULL,
                seen_at INTEGER NOT NULL,
                last_seen_at INTEGER NOT NULL,
                resolved_at INTEGER
            )
            """,
            """
            CREATE UNIQUE INDEX identity_key_changes_open
                ON identity_key_changes (peer_id, old_identity_key, new_identity_key)
                WHERE resolved_at IS NULL
            """,
            # Blocks are per identity, contact or not, and outlive removing the contact.
            """
            CREATE TABLE blocked_identities (
                identity_key BLOB PRIMARY KEY
                    CHECK (typeof(identity_key) = 'blob' AND length(identity_key) = 32),
                blocked_at INTEGER NOT NULL
            )
            """,
            # Invites this node made. expires_at is unix SECONDS, as in the invite itself.
            # When the last use is taken or the invite is cancelled, the secret is overwritten
            # with zero bytes and the code (which contains the secret) with ''.
            """
            CREATE TABLE invites (
                invite_id BLOB PRIMARY KEY
                    CHECK (typeof(invite_id) = 'blob' AND length(invite_id) = 16),
                kind INTEGER NOT NULL,
                secret BLOB NOT NULL CHECK (typeof(secret) = 'blob' AND length(secret) > 0),
                code TEXT NOT NULL,
                max_uses INTEGER NOT NULL CHECK (max_uses >= 1),
                uses_left INTEGER NOT NULL CHECK (uses_left BETWEEN 0 AND max_uses),
                expires_at INTEGER NOT NULL,
                created_at INTEGER NOT NULL,
                cancelled_at INTEGER
            )
            """,
            # One row per joiner: a retry by the same joiner is recognised and not charged.
            # receipt: opaque, what the inviter needs to answer that retry once the secret
            # is burnt (e.g. its welcome proof for this joiner).
            """
            CREATE TABLE invite_uses (
                invite_id BLOB NOT NULL REFERENCES invites ON DELETE CASCADE,
                joiner_identity_key BLOB NOT NULL,
                used_at INTEGER NOT NULL,
                receipt BLOB,
                PRIMARY KEY (invite_id, joiner_identity_key)
            )
            """,
            # Requests from peers without an invite. A newer pending request from the same
            # identity marks the older one 'replaced' (kept, card dropped, so rate limits
            # still count it).
            """
            CREATE TABLE contact_requests (
                id INTEGER PRIMARY KEY,
                identity_key BLOB NOT NULL
                    CHECK (typeof(identity_key) = 'blob' AND length(identity_key) = 32),
                peer_id TEXT NOT NULL,
                display_name TEXT NOT NULL,
                note TEXT NOT NULL,
                card BLOB NOT NULL,
                received_at INTEGER NOT NULL,
                state TEXT NOT NULL DEFAULT 'pending'
                    CHECK (state IN ('pending', 'accepted', 'declined', 'replaced')),
                decided_at INTEGER
            )
            """,
            """
            CREATE UNIQUE INDEX contact_requests_one_pending
                ON contact_requests (identity_key) WHERE state = 'pending'
            """,
            "CREATE INDEX contact_requests_received ON contact_requests (received_at)",
            """
            CREATE INDEX contact_requests_sender
                ON contact_requests (identity_key, received_at)
            """,
            # My profile: each field with its audience; 'chosen' fields go to the contacts
            # granted in profile_field_grants.
            """
            CREATE TABLE profile_fields (
                name TEXT PRIMARY KEY CHECK (name <> ''),
                value TEXT NOT NULL,
                audience TEXT NOT NULL
                    CHECK (audience IN ('public', 'contacts', 'chosen', 'groups')),
                updated_at INTEGER NOT NULL
            )
            """,
            """
            CREATE TABLE profile_field_grants (
                name TEXT NOT NULL REFERENCES profile_fields ON DELETE CASCADE,
                identity_key BLOB NOT NULL REFERENCES contacts ON DELETE CASCADE,
                PRIMARY KEY (name, identity_key)
            )
            """,
            "CREATE INDEX profile_field_grants_contact ON profile_field_grants (identity_key)",
            # The fields each contact shares with me: replaced as a whole on each update.
            """
            CREATE TABLE contact_fields (
                identity_key BLOB NOT NULL REFERENCES contacts ON DELETE CASCADE,
                name TEXT NOT NULL,
                value TEXT NOT NULL,
                updated_at INTEGER NOT NULL,
                PRIMARY KEY (identity_key, name)
            )
            """,
        ),
    ),
)


def check_numbering(migrations: tuple[Migration, ...]) -> None:
    """Migrations must be numbered 1, 2, 3, ... with no gap."""
    expected = list(range(1, len(migrations) + 1))
    found = [migration.version for migration in migrations]
    if found != expected:
        raise ValueError(f"migrations must be numbered {expected}, found {found}")


check_numbering(MIGRATIONS)

LATEST_SCHEMA_VERSION = MIGRATIONS[-1].version
