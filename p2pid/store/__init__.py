"""The encrypted store: SQLCipher schema, migrations, queries and the trio adapter.

Daemon-side only (it imports trio and sqlcipher3): clients never import it.
"""

from p2pid.store.db import Connection, StoreError, WrongKeyError, open_database, savepoint
from p2pid.store.trio_store import (
    GroupCommitError,
    StoreClosedError,
    TransactionEndedError,
    TrioStore,
)

__all__ = [
    "Connection",
    "GroupCommitError",
    "StoreClosedError",
    "StoreError",
    "TransactionEndedError",
    "TrioStore",
    "WrongKeyError",
    "open_database",
    "savepoint",
]
