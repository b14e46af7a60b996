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
    Migration(
        version=3,
        description="one-to-one conversations, messages with full-text search, the outbox, "
        "Olm sessions",
        statements=(
            # One per contact, by identity key; not a foreign key to contacts, so the history
            # outlives removing the contact. lamport: the highest Lamport clock seen or used.
            """
            CREATE TABLE conversations (
                id INTEGER PRIMARY KEY,
                peer_identity BLOB NOT NULL UNIQUE
                    CHECK (typeof(peer_identity) = 'blob' AND length(peer_identity) = 32),
                lamport INTEGER NOT NULL DEFAULT 0 CHECK (lamport >= 0),
                unread INTEGER NOT NULL DEFAULT 0 CHECK (unread >= 0),
                created_at INTEGER NOT NULL,
                updated_at INTEGER NOT NULL
            )
            """,
            "CREATE INDEX conversations_updated ON conversations (updated_at)",
            # A conversation's display order is (lamport, sent_at, message_id), ascending.
            """
            CREATE TABLE messages (
                id INTEGER PRIMARY KEY,
                conversation_id INTEGER NOT NULL REFERENCES conversations ON DELETE CASCADE,
                message_id BLOB NOT NULL UNIQUE
                    CHECK (typeof(message_id) = 'blob' AND length(message_id) = 16),
                sender_identity BLOB NOT NULL
                    CHECK (typeof(sender_identity) = 'blob' AND length(sender_identity) = 32),
                sender_device TEXT NOT NULL CHECK (sender_device <> ''),  -- a PeerId
                outgoing INTEGER NOT NULL CHECK (outgoing IN (0, 1)),
                kind TEXT NOT NULL DEFAULT 'text' CHECK (kind <> ''),
                body TEXT NOT NULL,
                lamport INTEGER NOT NULL CHECK (lamport >= 1),
                sent_at INTEGER NOT NULL,
                received_at INTEGER NOT NULL,
                state TEXT NOT NULL
                    CHECK (state IN ('pending', 'delivered', 'read', 'failed', 'unread')),
                state_at INTEGER,
                CHECK (CASE WHEN outgoing THEN state IN ('pending', 'delivered', 'read', 'failed')
                            ELSE state IN ('unread', 'read') END)
            )
            """,
            """
            CREATE INDEX messages_order
                ON messages (conversation_id, lamport, sent_at, message_id)
            """,
            # Bound mark_read and mark_read_up_to by what is left to mark, not by the history.
            "CREATE INDEX messages_unread ON messages (conversation_id) WHERE state = 'unread'",
            """
            CREATE INDEX messages_outgoing_unread
                ON messages (conversation_id, lamport, sent_at, message_id)
                WHERE outgoing = 1 AND state <> 'read'
            """,
            # Full-text search over the bodies: an external content table kept in sync by
            # triggers (https://sqlite.org/fts5.html#external_content_tables). The conversation
            # id is indexed too, as a token: a search within a conversation is then an AND of
            # two doclists, instead of a walk through every match in every conversation.
            """
            CREATE VIRTUAL TABLE messages_fts USING fts5 (
                body,
                conversation_id,
                content = 'messages',
                content_rowid = 'id',
                tokenize = 'unicode61 remove_diacritics 2'
            )
            """,
            """
            CREATE TRIGGER messages_fts_insert AFTER INSERT ON messages BEGIN
                INSERT INTO messages_fts (rowid, body, conversation_id)
                    VALUES (new.id, new.body, new.conversation_id);
            END
            """,
            """
            CREATE TRIGGER messages_fts_delete AFTER DELETE ON messages BEGIN
                INSERT INTO messages_fts (messages_fts, rowid, body, conversation_id)
                    VALUES ('delete', old.id, old.body, old.conversation_id);
            END
            """,
            """
            CREATE TRIGGER messages_fts_update AFTER UPDATE OF body, conversation_id ON messages
            BEGIN
                INSERT INTO messages_fts (messages_fts, rowid, body, conversation_id)
                    VALUES ('delete', old.id, old.body, old.conversation_id);
                INSERT INTO messages_fts (rowid, body, conversation_id)
                    VALUES (new.id, new.body, new.conversation_id);
            END
            """,
            # What is still to be sent, one row per message and recipient device, FIFO by id.
            # payload: the plaintext, kept to re-encrypt under a new session; envelope: the
            # encrypted envelope, sent as is on every retry.
            """
            CREATE TABLE outbox (
                id INTEGER PRIMARY KEY AUTOINCREMENT,
                message_id BLOB NOT NULL
                    CHECK (typeof(message_id) = 'blob' AND length(message_id) = 16),
                recipient_identity BLOB NOT NULL
                    CHECK (typeof(recipient_identity) = 'blob' AND length(recipient_identity) = 32),
                recipient_device TEXT NOT NULL CHECK (recipient_device <> ''),  -- a PeerId
                payload BLOB NOT NULL,
                envelope BLOB NOT NULL,
                session_id TEXT NOT NULL,
                created_at INTEGER NOT NULL,
                attempts INTEGER NOT NULL DEFAULT 0 CHECK (attempts >= 0),
                UNIQUE (message_id, recipient_device)
            )
            """,
            "CREATE INDEX outbox_device ON outbox (recipient_device, id)",
            # pickle: vodozemac pickle, encrypted with the vault key.
            """
            CREATE TABLE olm_sessions (
                session_id TEXT PRIMARY KEY,
                peer_curve25519 TEXT NOT NULL,  -- base64
                pickle TEXT NOT NULL,
                created_at INTEGER NOT NULL,
                last_used_at INTEGER NOT NULL
            )
            """,
            "CREATE INDEX olm_sessions_peer ON olm_sessions (peer_curve25519, last_used_at)",
            # Every envelope received (texts and receipts), to drop a retried one.
            """
            CREATE TABLE received_envelopes (
                sender_device TEXT NOT NULL,
                message_id BLOB NOT NULL,
                received_at INTEGER NOT NULL,
                PRIMARY KEY (sender_device, message_id)
            ) WITHOUT ROWID
            """,
            "CREATE INDEX received_envelopes_age ON received_envelopes (received_at)",
            # Delivery receipts owed for messages committed here, sent (coalesced) shortly after.
            """
            CREATE TABLE owed_receipts (
                identity_key BLOB NOT NULL
                    CHECK (typeof(identity_key) = 'blob' AND length(identity_key) = 32),
                message_id BLOB NOT NULL
                    CHECK (typeof(message_id) = 'blob' AND length(message_id) = 16),
                PRIMARY KEY (identity_key, message_id)
            ) WITHOUT ROWID
            """,
            # The fallback key this device hands out (base64 Curve25519), reused until it is
            # rotated: vodozemac keeps only the current and the previous one.
            "ALTER TABLE local_identity ADD COLUMN olm_fallback_key TEXT",
        ),
    ),
    Migration(
        version=4,
        description="own devices: this identity as a contact row, revoked devices",
        statements=(
            # The row of my own identity holds my signed device list and my other devices
            # (with their Olm prekeys), so copies to them travel like messages to a contact.
            # It is never listed as a contact.
            "ALTER TABLE contacts ADD COLUMN is_self INTEGER NOT NULL DEFAULT 0"
            " CHECK (is_self IN (0, 1))",
            "CREATE UNIQUE INDEX contacts_one_self ON contacts (is_self) WHERE is_self = 1",
            """
            CREATE TABLE revoked_devices (
                peer_id TEXT PRIMARY KEY,
                name TEXT NOT NULL,
                created_at INTEGER NOT NULL,
                revoked_at INTEGER NOT NULL,
                device_list_version INTEGER NOT NULL
            )
            """,
        ),
    ),
    Migration(
        version=5,
        description="kiosks: persons paired with this kiosk, revoked grants, the invocation log;"
        " the kiosks this person paired with",
        statements=(
            # Kiosk side. grant_record / device_list: MessagePack SignedGrant / SignedDeviceList.
            """
            CREATE TABLE kiosk_grants (
                grant_id BLOB PRIMARY KEY
                    CHECK (typeof(grant_id) = 'blob' AND length(grant_id) = 16),
                identity_key BLOB NOT NULL UNIQUE
                    CHECK (typeof(identity_key) = 'blob' AND length(identity_key) = 32),
                role TEXT NOT NULL CHECK (role IN ('owner', 'guest')),
                display_name TEXT NOT NULL,
                grant_record BLOB NOT NULL,
                device_list BLOB NOT NULL,
                device_list_version INTEGER NOT NULL,
                addrs TEXT NOT NULL DEFAULT '[]',  -- JSON list of multiaddrs
                paired_at INTEGER NOT NULL,
                expires_at INTEGER NOT NULL
            )
            """,
            "CREATE UNIQUE INDEX kiosk_one_owner ON kiosk_grants (role) WHERE role = 'owner'",
            """
            CREATE TABLE kiosk_revoked_grants (
                grant_id BLOB PRIMARY KEY,
                revoked_at INTEGER NOT NULL
            ) WITHOUT ROWID
            """,
            """
            CREATE TABLE kiosk_invocations (
                id INTEGER PRIMARY KEY AUTOINCREMENT,
                at INTEGER NOT NULL,
                grant_id BLOB,
                identity_key BLOB,
                peer_id TEXT NOT NULL,
                routine TEXT NOT NULL,
                args TEXT NOT NULL,  -- JSON list of strings, as received
                ok INTEGER NOT NULL CHECK (ok IN (0, 1)),
                exit_code INTEGER,
                output TEXT NOT NULL,
                duration_ms REAL NOT NULL,
                refused TEXT  -- the refusal reason, when it did not run
            )
            """,
            # The short-code lockout, so a restart does not lift it: one row.
            """
            CREATE TABLE kiosk_code_lock (
                id INTEGER PRIMARY KEY CHECK (id = 1),
                failures TEXT NOT NULL DEFAULT '[]',  -- JSON list of failure times (ms)
                locked_until INTEGER NOT NULL DEFAULT 0
            )
            """,
            # Person side.
            """
            CREATE TABLE paired_kiosks (
                peer_id TEXT PRIMARY KEY,
                kiosk_identity_key BLOB NOT NULL
                    CHECK (typeof(kiosk_identity_key) = 'blob' AND length(kiosk_identity_key) = 32),
                name TEXT NOT NULL,
                role TEXT NOT NULL CHECK (role IN ('owner', 'guest')),
                grant_id BLOB NOT NULL UNIQUE
                    CHECK (typeof(grant_id) = 'blob' AND length(grant_id) = 16),
                grant_record BLOB NOT NULL,
                expires_at INTEGER NOT NULL,
                addrs TEXT NOT NULL DEFAULT '[]',
                routines TEXT NOT NULL DEFAULT '[]',  -- JSON, as the kiosk described them
                paired_at INTEGER NOT NULL,
                last_seen INTEGER,
                health TEXT
            )
            """,
        ),
    ),
    Migration(
        version=6,
        description="groups: the membership log, Megolm sessions, envelopes kept for catch-up,"
        " per-member receipts, group invites and join requests",
        statements=(
            # A member of a group who is not my contact: a contacts row used only to encrypt
            # and decrypt group traffic, never listed as a contact.
            "ALTER TABLE contacts ADD COLUMN group_only INTEGER NOT NULL DEFAULT 0"
            " CHECK (group_only IN (0, 1))",
            # A group's conversation has peer_identity = the group id.
            "ALTER TABLE conversations ADD COLUMN kind TEXT NOT NULL DEFAULT 'direct'"
            " CHECK (kind IN ('direct', 'group'))",
            # A group is its genesis op's id.
            """
            CREATE TABLE groups (
                group_id BLOB PRIMARY KEY
                    CHECK (typeof(group_id) = 'blob' AND length(group_id) = 32),
                name TEXT NOT NULL,
                avatar TEXT NOT NULL DEFAULT '',
                my_role TEXT NOT NULL CHECK (my_role IN ('admin', 'member', 'left', 'removed')),
                version INTEGER NOT NULL DEFAULT 1,  -- ops in the log
                created_at INTEGER NOT NULL,
                updated_at INTEGER NOT NULL
            )
            """,
            # The membership log: each op verbatim (an encoded SignedGroupOp), replayed in
            # seq order.
            """
            CREATE TABLE group_ops (
                seq INTEGER PRIMARY KEY AUTOINCREMENT,
                group_id BLOB NOT NULL REFERENCES groups ON DELETE CASCADE,
                op_id BLOB NOT NULL,
                signed BLOB NOT NULL,
                received_at INTEGER NOT NULL,
                UNIQUE (group_id, op_id)
            )
            """,
            # This device's Megolm session per group. pickle: encrypted with the vault key.
            """
            CREATE TABLE group_outbound_sessions (
                group_id BLOB PRIMARY KEY REFERENCES groups ON DELETE CASCADE,
                session_id TEXT NOT NULL,
                pickle TEXT NOT NULL,
                -- JSON list of the PeerIds its key went to
                shared_with TEXT NOT NULL DEFAULT '[]' CHECK (json_type(shared_with) = 'array'),
                created_at INTEGER NOT NULL,
                messages INTEGER NOT NULL DEFAULT 0
            )
            """,
            # The Megolm sessions of the members' devices, as their keys were shared with me.
            """
            CREATE TABLE group_inbound_sessions (
                session_id TEXT PRIMARY KEY,
                group_id BLOB NOT NULL REFERENCES groups ON DELETE CASCADE,
                sender_identity BLOB NOT NULL,
                sender_device_key BLOB NOT NULL,
                sender_peer_id TEXT NOT NULL,
                pickle TEXT NOT NULL,
                first_index INTEGER NOT NULL,
                share BLOB NOT NULL,  -- the encoded GroupSessionShare as received (to forward)
                seen BLOB NOT NULL,  -- SeenIndexes.to_bytes()
                created_at INTEGER NOT NULL
            )
            """,
            "CREATE INDEX group_inbound_sessions_group ON group_inbound_sessions (group_id)",
            # Group messages as received, served to members who missed them.
            """
            CREATE TABLE group_envelopes (
                message_id BLOB PRIMARY KEY CHECK (length(message_id) = 16),
                group_id BLOB NOT NULL REFERENCES groups ON DELETE CASCADE,
                sender_identity BLOB NOT NULL,
                sender_device_key BLOB NOT NULL,
                session_id TEXT NOT NULL,
                message_index INTEGER NOT NULL,
                ciphertext BLOB NOT NULL,  -- an encoded MegolmCiphertext
                sent_at INTEGER NOT NULL,
                received_at INTEGER NOT NULL
            )
            """,
            """
            CREATE INDEX group_envelopes_order
                ON group_envelopes (group_id, sent_at, message_id)
            """,
            # Megolm envelopes waiting for their session's key.
            """
            CREATE TABLE group_held (
                id INTEGER PRIMARY KEY,
                session_id TEXT NOT NULL,
                sender_peer_id TEXT NOT NULL,
                envelope BLOB NOT NULL,
                received_at INTEGER NOT NULL
            )
            """,
            "CREATE INDEX group_held_session ON group_held (session_id)",
            # Receipts per member, for the group messages I sent.
            """
            CREATE TABLE group_receipts (
                message_id BLOB NOT NULL,
                member_identity BLOB NOT NULL,
                state TEXT NOT NULL CHECK (state IN ('delivered', 'read')),
                at INTEGER NOT NULL,
                PRIMARY KEY (message_id, member_identity)
            ) WITHOUT ROWID
            """,
            # Delivery receipts to send to a group message's sender.
            """
            CREATE TABLE group_owed_receipts (
                group_id BLOB NOT NULL,
                sender_identity BLOB NOT NULL,
                message_id BLOB NOT NULL,
                PRIMARY KEY (sender_identity, message_id)
            ) WITHOUT ROWID
            """,
            # Which group an invite (an invites row of kind 4) joins.
            """
            CREATE TABLE group_invites (
                invite_id BLOB PRIMARY KEY REFERENCES invites ON DELETE CASCADE,
                group_id BLOB NOT NULL REFERENCES groups ON DELETE CASCADE,
                approval INTEGER NOT NULL CHECK (approval IN (0, 1))
            )
            """,
            """
            CREATE TABLE group_join_requests (
                id INTEGER PRIMARY KEY,
                group_id BLOB NOT NULL REFERENCES groups ON DELETE CASCADE,
                identity_key BLOB NOT NULL,
                peer_id TEXT NOT NULL,
                display_name TEXT NOT NULL,
                card BLOB NOT NULL,  -- an encoded ContactCard
                requested_at INTEGER NOT NULL,
                state TEXT NOT NULL DEFAULT 'pending'
                    CHECK (state IN ('pending', 'accepted', 'refused')),
                UNIQUE (group_id, identity_key)
            )
            """,
        ),
    ),
    Migration(
        version=7,
        description="file transfers: offers, resume state, deliveries, settings",
        statements=(
            # One row per file offered to me (direction 'in') or by me ('out'). offer: the encoded
            # FileOffer, key included (the store is encrypted).
            """
            CREATE TABLE file_transfers (
                file_id BLOB PRIMARY KEY CHECK (length(file_id) = 16),
                direction TEXT NOT NULL CHECK (direction IN ('in', 'out')),
                offer BLOB NOT NULL,
                -- in: the sender; out: the contact it went to (NULL for a group)
                peer_identity BLOB,
                group_id BLOB,
                sender_peer_id TEXT NOT NULL DEFAULT '',  -- in: the device that offered it
                state TEXT NOT NULL CHECK (state IN ('offered', 'downloading', 'waiting',
                    'complete', 'failed', 'cancelled', 'sending')),
                -- out: the file served; in: where the file is once complete
                path TEXT NOT NULL DEFAULT '',
                path_mtime_ns INTEGER NOT NULL DEFAULT 0,  -- of `path`, to notice a changed file
                folder TEXT NOT NULL DEFAULT '',  -- in: where it goes
                part_path TEXT NOT NULL DEFAULT '',  -- in: the partial file while fetching
                bitmap BLOB NOT NULL DEFAULT x'',  -- in: chunks durable in the partial file
                -- the chunk digests (32 bytes each) the content hash names; in: once fetched
                manifest BLOB NOT NULL DEFAULT x'',
                bytes_done INTEGER NOT NULL DEFAULT 0,
                error TEXT NOT NULL DEFAULT '',
                created_at INTEGER NOT NULL,
                updated_at INTEGER NOT NULL,
                completed_at INTEGER
            )
            """,
            "CREATE INDEX file_transfers_created ON file_transfers (created_at)",
            # out: the people who reported the file complete (or cancelled it).
            """
            CREATE TABLE file_deliveries (
                file_id BLOB NOT NULL REFERENCES file_transfers ON DELETE CASCADE,
                identity_key BLOB NOT NULL,
                state TEXT NOT NULL CHECK (state IN ('complete', 'cancelled')),
                at INTEGER NOT NULL,
                PRIMARY KEY (file_id, identity_key)
            ) WITHOUT ROWID
            """,
            """
            CREATE TABLE file_settings (
                id INTEGER PRIMARY KEY CHECK (id = 1),
                folder TEXT NOT NULL DEFAULT '',  -- '' = the daemon's default folder
                auto_accept TEXT NOT NULL DEFAULT 'verified'
                    CHECK (auto_accept IN ('none', 'verified', 'contacts')),
                auto_accept_max_bytes INTEGER NOT NULL DEFAULT 26214400
                    CHECK (auto_accept_max_bytes >= 0)
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
