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
)


def check_numbering(migrations: tuple[Migration, ...]) -> None:
    """Migrations must be numbered 1, 2, 3, ... with no gap."""
    expected = list(range(1, len(migrations) + 1))
    found = [migration.version for migration in migrations]
    if found != expected:
        raise ValueError(f"migrations must be numbered {expected}, found {found}")


check_numbering(MIGRATIONS)

LATEST_SCHEMA_VERSION = MIGRATIONS[-1].version
