"""This device's vodozemac Olm account: its identity keys and the prekeys it publishes."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, cast

import vodozemac


@dataclass(frozen=True)
class PublishedPrekeys:
    one_time_keys: list[str]  # base64 Curve25519
    fallback_key: str | None


class OlmAccount:
    """Pickled with the vault key; the caller saves `pickle()` after every change."""

    def __init__(self, account: vodozemac.Account, vault_key: bytes) -> None:
        self._account = account
        self._vault_key = vault_key
        # vodozemac's type stubs leave out the fallback-key methods the binding has.
        self._with_fallback = cast(Any, account)

    @classmethod
    def from_pickle(cls, pickle: str, vault_key: bytes) -> OlmAccount:
        return cls(vodozemac.Account.from_pickle(pickle, vault_key), vault_key)

    @classmethod
    def create(cls, vault_key: bytes) -> OlmAccount:
        return cls(vodozemac.Account(), vault_key)

    def pickle(self) -> str:
        return self._account.pickle(self._vault_key)

    @property
    def curve25519(self) -> str:
        return self._account.curve25519_key.to_base64()

    @property
    def ed25519(self) -> str:
        return self._account.ed25519_key.to_base64()

    def publish_prekeys(self, one_time_key_count: int) -> PublishedPrekeys:
        """Fresh one-time keys (and a fallback key if there is none), marked published."""
        self._account.generate_one_time_keys(one_time_key_count)
        if not self._with_fallback.fallback_key:
            self._with_fallback.generate_fallback_key()
        one_time_keys = [key.to_base64() for key in self._account.one_time_keys.values()]
        fallback = [key.to_base64() for key in self._with_fallback.fallback_key.values()]
        self._account.mark_keys_as_published()
        return PublishedPrekeys(one_time_keys, fallback[0] if fallback else None)
