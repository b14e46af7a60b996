"""The vault key: a random 32-byte key that opens the store and the vodozemac pickles.

It is either kept in a 0600 key file (unattended devices) or sealed under a key derived from a
passphrase with Argon2id (PyNaCl pwhash) and XSalsa20-Poly1305 (PyNaCl SecretBox).
"""

from __future__ import annotations

import base64
import json
import os
import stat
from pathlib import Path

import nacl.exceptions
import nacl.pwhash
import nacl.secret
import nacl.utils

VAULT_KEY_BYTES = 32
_WRAP_FORMAT = "p2pid-vault-v1"


class VaultError(Exception):
    """The vault key cannot be had: a clear message says why."""


class WrongPassphraseError(VaultError):
    pass


def new_vault_key() -> bytes:
    return nacl.utils.random(VAULT_KEY_BYTES)


def _derive_wrapping_key(passphrase: str, salt: bytes, opslimit: int, memlimit: int) -> bytes:
    return nacl.pwhash.argon2id.kdf(
        nacl.secret.SecretBox.KEY_SIZE,
        passphrase.encode("utf-8"),
        salt,
        opslimit=opslimit,
        memlimit=memlimit,
    )


def wrap_vault_key(
    vault_key: bytes,
    passphrase: str,
    *,
    opslimit: int = nacl.pwhash.argon2id.OPSLIMIT_INTERACTIVE,
    memlimit: int = nacl.pwhash.argon2id.MEMLIMIT_INTERACTIVE,
) -> bytes:
    if not passphrase:
        raise VaultError("the passphrase is empty")
    salt = nacl.utils.random(nacl.pwhash.argon2id.SALTBYTES)
    box = nacl.secret.SecretBox(_derive_wrapping_key(passphrase, salt, opslimit, memlimit))
    document = {
        "format": _WRAP_FORMAT,
        "kdf": "argon2id",
        "opslimit": opslimit,
        "memlimit": memlimit,
        "salt": base64.b64encode(salt).decode("ascii"),
        "sealed_key": base64.b64encode(bytes(box.encrypt(vault_key))).decode("ascii"),
    }
    return json.dumps(document, indent=2).encode("utf-8")


def unwrap_vault_key(wrapped: bytes, passphrase: str) -> bytes:
    try:
        document = json.loads(wrapped)
        if document["format"] != _WRAP_FORMAT or document["kdf"] != "argon2id":
            raise VaultError(f"unknown vault format {document.get('format')!r}")
        salt = base64.b64decode(document["salt"], validate=True)
        sealed = base64.b64decode(document["sealed_key"], validate=True)
        opslimit, memlimit = int(document["opslimit"]), int(document["memlimit"])
    except (ValueError, KeyError, TypeError) as error:
        raise VaultError(f"the wrapped vault key is damaged: {error}") from error
    box = nacl.secret.SecretBox(_derive_wrapping_key(passphrase, salt, opslimit, memlimit))
    try:
        vault_key = box.decrypt(sealed)
    except nacl.exceptions.CryptoError:
        raise WrongPassphraseError("wrong passphrase") from None
    if len(vault_key) != VAULT_KEY_BYTES:
        raise VaultError("the wrapped vault key has the wrong length")
    return vault_key


def write_private_file(path: Path, data: bytes) -> None:
    """Create a file readable by its owner only; it must not exist yet."""
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "wb") as file:
        file.write(data)
        file.flush()
        os.fsync(file.fileno())


def read_private_file(path: Path) -> bytes:
    mode = path.stat().st_mode
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise VaultError(f"{path} is readable by others (mode {oct(mode & 0o777)}); chmod 600 it")
    return path.read_bytes()


def read_key_file(path: Path) -> bytes:
    vault_key = read_private_file(path)
    if len(vault_key) != VAULT_KEY_BYTES:
        raise VaultError(f"{path} does not hold a 32-byte vault key")
    return vault_key
