"""Where a node's files live. Stdlib only: the CLI imports this on every command."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

HOME_ENV = "P2PID_HOME"


def default_home() -> Path:
    env = os.environ.get(HOME_ENV)
    if env:
        return Path(env).expanduser()
    from platformdirs import user_data_dir

    return Path(user_data_dir("p2pid", appauthor=False))


@dataclass(frozen=True)
class Home:
    """The files of one node. The directory is 0700; every secret in it is 0600."""

    root: Path

    @property
    def database(self) -> Path:
        return self.root / "p2pid.db"

    @property
    def key_file(self) -> Path:
        """Key-file mode: the raw 32-byte vault key."""
        return self.root / "vault.key"

    @property
    def wrapped_key(self) -> Path:
        """Passphrase mode: the vault key sealed under an Argon2id-derived key."""
        return self.root / "vault.wrapped"

    @property
    def socket(self) -> Path:
        return self.root / "daemon.sock"

    @property
    def lock(self) -> Path:
        return self.root / "daemon.lock"

    @property
    def log(self) -> Path:
        return self.root / "daemon.log"

    def is_initialised(self) -> bool:
        return self.database.exists() and (self.key_file.exists() or self.wrapped_key.exists())

    def wipe_identity(self) -> None:
        """Delete the key and the store (with its WAL files): what a revoked device must not
        keep. The directory stays."""
        for path in (
            self.key_file,
            self.wrapped_key,
            self.database,
            self.database.with_name(self.database.name + "-wal"),
            self.database.with_name(self.database.name + "-shm"),
        ):
            path.unlink(missing_ok=True)

    def ensure_private_dir(self) -> None:
        self.root.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(self.root, 0o700)
