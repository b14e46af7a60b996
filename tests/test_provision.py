import stat
from pathlib import Path

import pytest

from p2pid.crypto.vault import VaultError, WrongPassphraseError
from p2pid.home import Home
from p2pid.provision import HomeError, create_home, unlock_vault_key
from p2pid.store import queries
from p2pid.store.db import WrongKeyError, open_database


def test_key_file_home_has_identity_device_and_olm_account(tmp_path: Path) -> None:
    home = Home(tmp_path / "node")
    created = create_home(home, "Alice", passphrase=None)
    assert stat.S_IMODE(home.root.stat().st_mode) == 0o700
    assert stat.S_IMODE(home.key_file.stat().st_mode) == 0o600
    connection = open_database(home.database, unlock_vault_key(home))
    identity = queries.load_local_identity(connection)
    connection.close()
    assert identity is not None and identity.name == "Alice"
    assert created.protection == "key-file"
    assert created.peer_id.startswith("12D3KooW")
    assert identity.identity_seed != identity.device_seed
    assert "Alice" not in repr(identity.identity_seed)


def test_passphrase_home_unlocks_only_with_the_passphrase(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = Home(tmp_path / "node")
    create_home(home, "Bob", passphrase="s3cret phrase")
    assert not home.key_file.exists()
    vault_key = unlock_vault_key(home, "s3cret phrase")
    open_database(home.database, vault_key).close()
    with pytest.raises(WrongPassphraseError):
        unlock_vault_key(home, "guess")
    monkeypatch.delenv("P2PID_PASSPHRASE", raising=False)
    monkeypatch.setattr("os.isatty", lambda fd: False)
    with pytest.raises(VaultError, match="P2PID_PASSPHRASE"):
        unlock_vault_key(home)


def test_a_second_init_is_refused_and_changes_nothing(tmp_path: Path) -> None:
    home = Home(tmp_path / "node")
    create_home(home, "Alice", passphrase=None)
    before = home.database.read_bytes(), home.key_file.read_bytes()
    with pytest.raises(HomeError, match="already holds"):
        create_home(home, "Mallory", passphrase=None)
    assert (home.database.read_bytes(), home.key_file.read_bytes()) == before


@pytest.mark.parametrize("name", ["", "   ", "x" * 65, "bell\x07"])
def test_bad_names_are_refused_before_anything_is_written(tmp_path: Path, name: str) -> None:
    home = Home(tmp_path / "node")
    with pytest.raises(HomeError):
        create_home(home, name, passphrase=None)
    assert not home.root.exists()


def test_another_homes_key_does_not_open_the_store(tmp_path: Path) -> None:
    first, second = Home(tmp_path / "a"), Home(tmp_path / "b")
    create_home(first, "A", passphrase=None)
    create_home(second, "B", passphrase=None)
    with pytest.raises(WrongKeyError):
        open_database(first.database, unlock_vault_key(second))


def test_uninitialised_home_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(HomeError, match="p2pid init"):
        unlock_vault_key(Home(tmp_path / "empty"))
