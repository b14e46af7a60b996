"""Creating a node's home and unlocking it. Synchronous: `p2pid init` and the daemon use it.

This is the one place the CLI touches key material and the store directly: there is no daemon to
ask before an identity exists.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from getpass import getpass

from p2pid.crypto.identity import IdentityKeys
from p2pid.crypto.olm import OlmAccount
from p2pid.crypto.vault import (
    VaultError,
    new_vault_key,
    read_key_file,
    read_private_file,
    unwrap_vault_key,
    wrap_vault_key,
    write_private_file,
)
from p2pid.home import Home
from p2pid.store import queries
from p2pid.store.db import open_database, savepoint
from p2pid.store.queries import LocalIdentityRow

PASSPHRASE_ENV = "P2PID_PASSPHRASE"
MAX_NAME_LENGTH = 64


class HomeError(Exception):
    """The home directory cannot be used as asked; the message says why."""


@dataclass(frozen=True)
class CreatedIdentity:
    name: str
    identity_id: str
    peer_id: str
    protection: str  # "passphrase" | "key-file"


def validate_name(name: str) -> str:
    name = name.strip()
    if not name:
        raise HomeError("the name is empty")
    if len(name) > MAX_NAME_LENGTH:
        raise HomeError(f"the name is longer than {MAX_NAME_LENGTH} characters")
    if any(not character.isprintable() for character in name):
        raise HomeError("the name holds control characters")
    return name


def require_new_home(home: Home) -> None:
    """HomeError unless the home holds no identity (not even a half-made store)."""
    if home.is_initialised() or home.database.exists():
        raise HomeError(f"{home.root} already holds an identity")


def store_vault_key(home: Home, vault_key: bytes, passphrase: str | None) -> None:
    """Write the vault key, in a key file or wrapped by the passphrase. Written last: a home is
    initialised only once its store and its key both exist."""
    if passphrase is None:
        write_private_file(home.key_file, vault_key)
    else:
        write_private_file(home.wrapped_key, wrap_vault_key(vault_key, passphrase))


def create_home(home: Home, name: str, passphrase: str | None) -> CreatedIdentity:
    """Create the identity, device key, Olm account and vault key in a new home."""
    name = validate_name(name)
    require_new_home(home)
    home.ensure_private_dir()
    vault_key = new_vault_key()
    keys = IdentityKeys.generate()
    olm_account = OlmAccount.create(vault_key)
    connection = open_database(home.database, vault_key, create=True)
    try:
        identity = LocalIdentityRow(
            name=name,
            identity_seed=keys.identity_seed,
            device_seed=keys.device_seed,
            olm_account=olm_account.pickle(),
            created_at=int(time.time() * 1000),
        )
        with savepoint(connection):
            queries.save_local_identity(connection, identity)
    finally:
        connection.close()
    store_vault_key(home, vault_key, passphrase)
    return CreatedIdentity(
        name=name,
        identity_id=keys.identity_id,
        peer_id=keys.peer_id,
        protection="key-file" if passphrase is None else "passphrase",
    )


def unlock_vault_key(home: Home, passphrase: str | None = None) -> bytes:
    """The vault key of an initialised home, from its key file or its passphrase."""
    if not home.is_initialised():
        raise HomeError(f"{home.root} holds no identity: run `p2pid init --name NAME` first")
    if home.key_file.exists():
        return read_key_file(home.key_file)
    if passphrase is None:
        passphrase = os.environ.get(PASSPHRASE_ENV)
    if passphrase is None:
        if not os.isatty(0):
            raise VaultError(
                f"this home is passphrase-protected: set {PASSPHRASE_ENV} or run in a terminal"
            )
        passphrase = getpass("p2pid passphrase: ")
    return unwrap_vault_key(read_private_file(home.wrapped_key), passphrase)
