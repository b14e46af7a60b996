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

    def publish_prekeys(
        self, one_time_key_count: int, current_fallback_key: str | None
    ) -> PublishedPrekeys:
        """Fresh one-time keys, marked published, and the fallback key: the current one, or a
        new one if there is none (vodozemac lists a fallback key only until it is published,
        so the caller keeps the current one and passes it back)."""
        self._account.generate_one_time_keys(one_time_key_count)
        fallback_key = current_fallback_key
        if fallback_key is None:
            self._with_fallback.generate_fallback_key()
            [fallback_key] = [key.to_base64() for key in self._with_fallback.fallback_key.values()]
        one_time_keys = [key.to_base64() for key in self._account.one_time_keys.values()]
        self._account.mark_keys_as_published()
        return PublishedPrekeys(one_time_keys, fallback_key)

    def open_outbound(self, peer_curve25519: str, peer_prekey: str) -> OlmSession:
        """A session with a device, from its identity key and a one-time or fallback key."""
        try:
            session = self._account.create_outbound_session(
                vodozemac.Curve25519PublicKey.from_base64(peer_curve25519),
                vodozemac.Curve25519PublicKey.from_base64(peer_prekey),
            )
        except (vodozemac.KeyException, ValueError) as error:
            raise OlmError(f"cannot open a session: {error}") from None
        return OlmSession(session, self._vault_key)

    def open_inbound(
        self, peer_curve25519: str, ciphertext: OlmCiphertext
    ) -> tuple[OlmSession, bytes]:
        """The session a device opened with this pre-key message, and its plaintext. Consumes the
        one-time key it used: the caller saves the account's pickle with the session's."""
        if ciphertext.olm_type != 0:
            raise OlmError("only a pre-key message opens a session")
        try:
            message = _pre_key_message(ciphertext.body)
            session, plaintext = self._account.create_inbound_session(
                vodozemac.Curve25519PublicKey.from_base64(peer_curve25519), message
            )
        except (
            vodozemac.DecodeException,
            vodozemac.KeyException,
            vodozemac.SessionCreationException,
            vodozemac.OlmDecryptionException,
            ValueError,
        ) as error:
            raise OlmError(f"cannot open the session: {error}") from None
        return OlmSession(session, self._vault_key), plaintext


class OlmError(Exception):
    """A session cannot be created or a message cannot be decrypted; nothing was changed."""


@dataclass(frozen=True)
class OlmCiphertext:
    olm_type: int  # 0: a pre-key message (opens a session), 1: a normal message
    body: bytes


class OlmSession:
    """One Olm session with one device; the caller saves `pickle()` after every encrypt/decrypt."""

    def __init__(self, session: vodozemac.Session, vault_key: bytes) -> None:
        self._session = session
        self._vault_key = vault_key

    @classmethod
    def from_pickle(cls, pickle: str, vault_key: bytes) -> OlmSession:
        try:
            return cls(vodozemac.Session.from_pickle(pickle, vault_key), vault_key)
        except vodozemac.PickleException as error:
            raise OlmError(f"unreadable Olm session: {error}") from None

    @property
    def session_id(self) -> str:
        return self._session.session_id

    def pickle(self) -> str:
        return self._session.pickle(self._vault_key)

    def encrypt(self, plaintext: bytes) -> OlmCiphertext:
        olm_type, body = self._session.encrypt(plaintext).to_parts()
        return OlmCiphertext(olm_type, body)

    def decrypt(self, ciphertext: OlmCiphertext) -> bytes:
        try:
            message = vodozemac.AnyOlmMessage.from_parts(ciphertext.olm_type, ciphertext.body)
            return self._session.decrypt(message)
        except (vodozemac.OlmDecryptionException, vodozemac.DecodeException) as error:
            raise OlmError(f"cannot decrypt: {error}") from None

    def matches(self, ciphertext: OlmCiphertext) -> bool:
        """Whether a pre-key message belongs to this session (it is not a new session)."""
        if ciphertext.olm_type != 0:
            return False
        try:
            message = _pre_key_message(ciphertext.body)
        except vodozemac.DecodeException:
            return False
        return bool(self._session.session_matches(message))


def _pre_key_message(body: bytes) -> vodozemac.PreKeyMessage:
    message = vodozemac.AnyOlmMessage.from_parts(0, body).to_pre_key()
    if message is None:
        raise vodozemac.DecodeException("not a pre-key message")
    return message
