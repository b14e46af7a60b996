import os
import stat
from pathlib import Path

import pytest
from libp2p.crypto.ed25519 import create_new_key_pair
from libp2p.peer.id import ID

from p2pid.crypto.identity import IdentityKeys, peer_id_from_public_key
from p2pid.crypto.vault import (
    VaultError,
    WrongPassphraseError,
    new_vault_key,
    read_key_file,
    unwrap_vault_key,
    wrap_vault_key,
    write_private_file,
)

FAST = {"opslimit": 1, "memlimit": 8192}


def test_peer_id_matches_libp2p_for_the_same_seed() -> None:
    keys = IdentityKeys.generate()
    libp2p_keys = create_new_key_pair(keys.device_seed)
    assert keys.peer_id == ID.from_pubkey(libp2p_keys.public_key).to_base58()


def test_peer_id_needs_a_32_byte_key() -> None:
    with pytest.raises(ValueError):
        peer_id_from_public_key(b"short")


def test_identity_and_device_keys_differ() -> None:
    keys = IdentityKeys.generate()
    assert keys.identity_public_key != keys.device_public_key
    assert len(keys.identity_id) == 52


def test_wrapped_vault_key_round_trips_and_rejects_a_wrong_passphrase() -> None:
    vault_key = new_vault_key()
    wrapped = wrap_vault_key(vault_key, "correct horse", **FAST)
    assert vault_key not in wrapped
    assert unwrap_vault_key(wrapped, "correct horse") == vault_key
    with pytest.raises(WrongPassphraseError):
        unwrap_vault_key(wrapped, "wrong horse")


def test_damaged_wrapped_key_is_a_clear_error() -> None:
    with pytest.raises(VaultError, match="damaged"):
        unwrap_vault_key(b'{"format": "p2pid-vault-v1"}', "x")


def test_empty_passphrase_is_refused() -> None:
    with pytest.raises(VaultError):
        wrap_vault_key(new_vault_key(), "", **FAST)


def test_key_file_is_private_and_refused_when_readable_by_others(tmp_path: Path) -> None:
    path = tmp_path / "vault.key"
    vault_key = new_vault_key()
    write_private_file(path, vault_key)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert read_key_file(path) == vault_key
    os.chmod(path, 0o644)
    with pytest.raises(VaultError, match="readable by others"):
        read_key_file(path)


def test_private_file_is_never_overwritten(tmp_path: Path) -> None:
    path = tmp_path / "vault.key"
    write_private_file(path, b"a" * 32)
    with pytest.raises(FileExistsError):
        write_private_file(path, b"b" * 32)
