"""Megolm group sessions (vodozemac), sans-IO: the sending and receiving sessions, the replay
window, and the key-share record a sender hands each member device over Olm.

One device has one `OutboundGroupSession` per group it sends to. Its `session_key` travels to
every member device inside an Olm-encrypted `GroupSessionShare`; each of them opens an
`InboundGroupSession` from it and decrypts the sender's messages with it.

Facts this module is built around (vodozemac 0.10, see also docs in /work/shared/design.md):

- A Megolm session id *is* the session's Ed25519 signing public key (unpadded base64, 43
  characters) and every Megolm message is signed by it. A `SessionKey` (what the sender hands
  out) is itself signed by that key; vodozemac checks it. An exported key (`export_at`, for
  forwarding) is NOT signed: anyone may craft one with a real session id and a bogus ratchet. It
  cannot forge messages (those need the signing secret) but it can fail to decrypt real ones.
- The message index is inside the signed message; a message names no session and no group. The
  `MegolmCiphertext` carries the session id beside it, and the caller must bind a session to its
  group and its sender device (see `open_share`): a ciphertext of group A's session replayed into
  group B is refused only because the store says the session belongs to group A.
- Megolm does NOT reject a replayed message: `InboundGroupSession.decrypt` decrypts the same
  ciphertext as often as it is given. De-duplicate with `SeenIndexes`, one per session id, after a
  successful decrypt (the decrypt authenticates the index).
- The outbound ratchet advances at every `encrypt`: save `OutboundGroupSession.pickle()` before
  the ciphertext leaves the device. A stale pickle re-uses message keys and indexes (receivers
  then drop the new messages as replays, and re-used keys leak plaintext). Decrypting does not
  change an inbound session's pickle: save an inbound session when it is created.
- An inbound session knows nothing before its first known index: a member joining with a key at
  index k cannot read messages < k. That is how a newcomer gets current sessions only.

Rotation: `rotation_due` says when a session is old (messages or age). Rotating on a membership
change (a removal, a device revocation) is the caller's job: create a new `OutboundGroupSession`
and share it with the remaining member devices only; members who had only the old key cannot read
anything sent under the new one.
"""

from __future__ import annotations

import base64
import binascii
import struct
from dataclasses import dataclass
from typing import Annotated, Final, NamedTuple

import msgspec
import nacl.exceptions
import nacl.signing
import vodozemac

KEY_BYTES: Final = 32
SIGNATURE_BYTES: Final = 64
SESSION_ID_CHARS: Final = 43  # unpadded base64 of the 32-byte Ed25519 signing key
MAX_INDEX: Final = 2**32 - 1  # vodozemac's message index is a u32
MAX_SESSION_KEY_CHARS: Final = 512  # a SessionKey is 306 characters, an exported key 220

# What the sender device signs: it owns this Megolm session (signing key) in this group.
SESSION_CLAIM_CONTEXT: Final = b"p2pid-megolm-session-v1\0"

_SESSION_KEY_VERSION: Final = 2  # vodozemac SessionKey: signed by the session's signing key
_EXPORTED_KEY_VERSION: Final = 1  # vodozemac ExportedSessionKey: not signed

_DAY_MS: Final = 24 * 3600 * 1000

Key = Annotated[bytes, msgspec.Meta(min_length=KEY_BYTES, max_length=KEY_BYTES)]
SessionId = Annotated[str, msgspec.Meta(min_length=SESSION_ID_CHARS, max_length=SESSION_ID_CHARS)]
MessageIndex = Annotated[int, msgspec.Meta(ge=0, le=MAX_INDEX)]


# -- errors ------------------------------------------------------------------------------------


class MegolmError(Exception):
    """A Megolm message, key or pickle that cannot be used; nothing was changed."""


class UnknownSessionError(MegolmError):
    """The ciphertext belongs to another session than this one (the key may not have come yet)."""


class IndexTooOldError(MegolmError):
    """The message index is below the session's first known index: it can never be decrypted
    with this key (a late joiner, or a key exported at a later index)."""


class UndecryptableError(MegolmError):
    """Malformed, tampered (bad signature or MAC), or under a wrong ratchet: drop it."""


class InvalidShareError(MegolmError):
    """A key share that must not be trusted or cannot be imported."""


# -- records -----------------------------------------------------------------------------------


class MegolmCiphertext(msgspec.Struct, frozen=True, kw_only=True):
    """A Megolm message and the session it belongs to. `message_index` repeats the index signed
    inside `body` so a store can de-duplicate before decrypting; decrypt refuses a mismatch."""

    session_id: SessionId
    message_index: MessageIndex
    body: bytes  # vodozemac MegolmMessage bytes: version, index, AES ciphertext, MAC, signature


class GroupSessionShare(msgspec.Struct, frozen=True, kw_only=True, tag="group-key"):
    """A Megolm session key for one group, sent to one member device inside an Olm payload.

    The Olm session authenticates the device that sent it. `session_id` is the Megolm session's
    Ed25519 signing key, which signs every message of the session: a member that accepts the
    share binds the session to (group_id, sender_device_key) and refuses messages under it that
    claim another group or sender. `signature` is the sender device's Ed25519 key (its libp2p key)
    over SESSION_CLAIM_CONTEXT + (group_id, session_id, sender_device_key); it does not cover the
    key itself, so it stays valid when a member forwards the key exported at a later index.
    """

    group_id: Key
    session_id: SessionId
    session_key: Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_SESSION_KEY_CHARS)]
    first_index: MessageIndex  # the first index the key decrypts
    sender_device_key: Key  # Ed25519 device key of the session's owner
    signature: Annotated[bytes, msgspec.Meta(min_length=64, max_length=64)] | None = None


class Decrypted(NamedTuple):
    plaintext: bytes
    message_index: int


@dataclass(frozen=True)
class RotationPolicy:
    max_messages: int = 100
    max_age_ms: int = 7 * _DAY_MS


DEFAULT_ROTATION: Final = RotationPolicy()


def rotation_due(messages: int, age_ms: int, policy: RotationPolicy = DEFAULT_ROTATION) -> bool:
    """Whether a session that sent `messages` messages and was created `age_ms` ago should be
    replaced. Membership changes force a rotation regardless: the caller's job."""
    return messages >= policy.max_messages or age_ms >= policy.max_age_ms


# -- sessions ----------------------------------------------------------------------------------


class OutboundGroupSession:
    """This device's sending session for one group. Save `pickle()` after every `encrypt`,
    before the ciphertext is sent."""

    def __init__(self, session: vodozemac.GroupSession, vault_key: bytes) -> None:
        self._session = session
        self._vault_key = vault_key

    @classmethod
    def create(cls, vault_key: bytes) -> OutboundGroupSession:
        _check_vault_key(vault_key)
        return cls(vodozemac.GroupSession(), vault_key)

    @classmethod
    def from_pickle(cls, pickle: str, vault_key: bytes) -> OutboundGroupSession:
        try:
            return cls(vodozemac.GroupSession.from_pickle(pickle, vault_key), vault_key)
        except (vodozemac.PickleException, ValueError) as error:
            raise MegolmError(f"unreadable outbound Megolm session: {error}") from None

    def pickle(self) -> str:
        return self._session.pickle(self._vault_key)

    @property
    def session_id(self) -> str:
        return self._session.session_id

    @property
    def signing_key(self) -> bytes:
        """The session's Ed25519 signing public key (the session id, decoded)."""
        return _signing_key(self._session.session_id)

    @property
    def message_index(self) -> int:
        """The index the next message gets; also the number of messages sent so far."""
        return self._session.message_index

    @property
    def session_key(self) -> str:
        """The key at the current index (base64, signed by the session): members that get it now
        read this and later messages only."""
        return self._session.session_key.to_base64()

    def encrypt(self, plaintext: bytes) -> MegolmCiphertext:
        message = self._session.encrypt(plaintext)
        return MegolmCiphertext(
            session_id=self._session.session_id,
            message_index=message.message_index(),
            body=message.to_bytes(),
        )

    def rotation_due(self, age_ms: int, policy: RotationPolicy = DEFAULT_ROTATION) -> bool:
        return rotation_due(self.message_index, age_ms, policy)

    def share(
        self, group_id: bytes, device_signing_key: nacl.signing.SigningKey
    ) -> GroupSessionShare:
        """The share of the current key, signed by this device. It is the same record for every
        member device: encode it once and Olm-encrypt it per device."""
        sender_device_key = bytes(device_signing_key.verify_key)
        return GroupSessionShare(
            group_id=group_id,
            session_id=self.session_id,
            session_key=self.session_key,
            first_index=self.message_index,
            sender_device_key=sender_device_key,
            signature=sign_session_claim(
                device_signing_key, group_id, self.session_id, sender_device_key
            ),
        )


class InboundGroupSession:
    """A member's receiving session for one sender device's Megolm session. Decrypting does not
    change it; save `pickle()` when it is created or replaced."""

    def __init__(self, session: vodozemac.InboundGroupSession, vault_key: bytes) -> None:
        self._session = session
        self._vault_key = vault_key

    @classmethod
    def from_session_key(cls, session_key: str, vault_key: bytes) -> InboundGroupSession:
        """From a key the session's owner handed out (signed) or an exported (forwarded) key."""
        _check_vault_key(vault_key)
        try:
            version = _key_version(session_key)
            if version == _SESSION_KEY_VERSION:
                session = vodozemac.InboundGroupSession(vodozemac.SessionKey(session_key))
            elif version == _EXPORTED_KEY_VERSION:
                session = vodozemac.InboundGroupSession.import_session(
                    vodozemac.ExportedSessionKey(session_key)
                )
            else:
                raise MegolmError(f"unknown Megolm session key version {version}")
        except (vodozemac.SessionKeyDecodeException, ValueError) as error:
            raise MegolmError(f"unusable Megolm session key: {error}") from None
        return cls(session, vault_key)

    @classmethod
    def from_pickle(cls, pickle: str, vault_key: bytes) -> InboundGroupSession:
        try:
            return cls(vodozemac.InboundGroupSession.from_pickle(pickle, vault_key), vault_key)
        except (vodozemac.PickleException, ValueError) as error:
            raise MegolmError(f"unreadable inbound Megolm session: {error}") from None

    def pickle(self) -> str:
        return self._session.pickle(self._vault_key)

    @property
    def session_id(self) -> str:
        return self._session.session_id

    @property
    def signing_key(self) -> bytes:
        return _signing_key(self._session.session_id)

    @property
    def first_known_index(self) -> int:
        return self._session.first_known_index

    def export_at(self, index: int) -> str:
        """The key from `index` on (base64, unsigned), to forward to a device that should read
        messages from `index` but nothing before it."""
        _check_index(index)
        if index < self.first_known_index:
            raise IndexTooOldError(
                f"cannot export at {index}: the first known index is {self.first_known_index}"
            )
        exported = self._session.export_at(index)
        if exported is None:
            raise IndexTooOldError(f"cannot export at {index}")
        return exported.to_base64()

    def decrypt(self, ciphertext: MegolmCiphertext) -> Decrypted:
        """The plaintext and its (authenticated) index. A replay decrypts again: check the
        index with the session's `SeenIndexes` before accepting the message."""
        if ciphertext.session_id != self._session.session_id:
            raise UnknownSessionError(f"the message belongs to session {ciphertext.session_id}")
        try:
            message = vodozemac.MegolmMessage.from_bytes(ciphertext.body)
            index = message.message_index()
        except (vodozemac.DecodeException, ValueError) as error:
            raise UndecryptableError(f"malformed Megolm message: {error}") from None
        if index != ciphertext.message_index:
            raise UndecryptableError("the message's index differs from the one it claims")
        if index < self._session.first_known_index:
            raise IndexTooOldError(
                f"message index {index} is below the first known index "
                f"{self._session.first_known_index}"
            )
        try:
            decrypted = self._session.decrypt(message)
        except (vodozemac.MegolmDecryptionException, ValueError) as error:
            raise UndecryptableError(f"cannot decrypt: {error}") from None
        return Decrypted(decrypted.plaintext, decrypted.message_index)


# -- key shares --------------------------------------------------------------------------------


def sign_session_claim(
    device_signing_key: nacl.signing.SigningKey,
    group_id: bytes,
    session_id: str,
    sender_device_key: bytes,
) -> bytes:
    claim = _session_claim(group_id, session_id, sender_device_key)
    return bytes(device_signing_key.sign(claim).signature)


def open_share(
    share: GroupSessionShare, vault_key: bytes, *, olm_sender_device_key: bytes
) -> InboundGroupSession:
    """The inbound session a share carries, checked: the signature if there is one; a share whose
    session owner is not the device whose Olm session delivered it (a forwarded key) must carry
    the owner's signature; the key must produce the session id and first index it claims.

    Left to the caller: that `share.group_id` is a group both devices belong to, that the sender
    device is a current member device, storing the session under (group_id, sender_device_key,
    session_id), and, when it already holds the session, keeping the key with the lower first
    index only if that key came from the owner (a forwarded exported key is not signed and may
    hold a bogus ratchet).

    The claim signature proves the device claims the session, not that it created it: a member
    holding a key can sign a claim of its own over someone else's session id. Two defences, both
    the caller's: the first binding of a session id wins (a share that binds a known session id
    to another group or device is refused), and every group message's plaintext names its group
    and sender device, which the Megolm signature covers, and must match the session's binding.
    """
    if share.signature is not None:
        try:
            nacl.signing.VerifyKey(share.sender_device_key).verify(
                _session_claim(share.group_id, share.session_id, share.sender_device_key),
                share.signature,
            )
        except (nacl.exceptions.BadSignatureError, nacl.exceptions.ValueError, ValueError):
            raise InvalidShareError("the share is not signed by its sender device") from None
    elif share.sender_device_key != olm_sender_device_key:
        raise InvalidShareError("a forwarded share needs its sender device's signature")
    try:
        session = InboundGroupSession.from_session_key(share.session_key, vault_key)
    except MegolmError as error:
        raise InvalidShareError(str(error)) from None
    if session.session_id != share.session_id:
        raise InvalidShareError("the key belongs to another session than the share names")
    if session.first_known_index != share.first_index:
        raise InvalidShareError(
            f"the key starts at index {session.first_known_index}, not {share.first_index}"
        )
    return session


def forward_share(
    original: GroupSessionShare, session: InboundGroupSession, index: int
) -> GroupSessionShare:
    """The owner's share re-issued with the key exported at `index` (to share history from
    `index` on with a device that joined later). It keeps the owner's signature, required for a
    forwarded share."""
    if original.signature is None:
        raise InvalidShareError("only a signed share can be forwarded")
    if session.session_id != original.session_id:
        raise InvalidShareError("the session is not the one the share names")
    return msgspec.structs.replace(
        original, session_key=session.export_at(index), first_index=index
    )


_share_decoder: msgspec.msgpack.Decoder[GroupSessionShare] = msgspec.msgpack.Decoder(
    GroupSessionShare
)


def encode_share(share: GroupSessionShare) -> bytes:
    return msgspec.msgpack.encode(share)


def decode_share(data: bytes) -> GroupSessionShare:
    try:
        return _share_decoder.decode(data)
    except msgspec.DecodeError as error:
        raise InvalidShareError(f"malformed group key share: {error}") from None


# -- replay protection -------------------------------------------------------------------------


class SeenIndexes:
    """The message indexes accepted under one Megolm session: the highest index seen and a bitmap
    of the `window` indexes ending at it (bit i: index `high - i`).

    `check_and_record(index)` is True once per index. An index at or below `high - window`
    (before the window) is refused as a replay-or-too-old even if it was never seen: the window
    cannot tell, and accepting it could accept a replay. With the default window (1024) and
    rotation every 100 messages, a session's whole life fits in the window; a message that comes
    over 1024 indexes late is dropped. Serialised (`to_bytes`, 11 + window/8 bytes) with the
    message it accepted, in one transaction.
    """

    _HEADER: Final = struct.Struct(">BHQ")  # version, window bytes, high + 1 (0: nothing seen)
    _VERSION: Final = 1
    DEFAULT_WINDOW: Final = 1024
    MAX_WINDOW: Final = 8 * 8192

    def __init__(self, window: int = DEFAULT_WINDOW) -> None:
        if window % 8 or not 8 <= window <= self.MAX_WINDOW:
            raise ValueError(f"the window is a multiple of 8 in 8..{self.MAX_WINDOW}")
        self._window = window
        self._mask = (1 << window) - 1
        self._high = -1  # nothing seen
        self._bits = 0

    @property
    def window(self) -> int:
        return self._window

    @property
    def high(self) -> int | None:
        """The highest index accepted, or None."""
        return None if self._high < 0 else self._high

    def would_accept(self, index: int) -> bool:
        """Whether `check_and_record(index)` would return True; records nothing."""
        _check_index(index)
        if index > self._high:
            return True
        offset = self._high - index
        return offset < self._window and not self._bits >> offset & 1

    def check_and_record(self, index: int) -> bool:
        """True and recorded if `index` is new; False for a replay or an index too old to tell."""
        if not self.would_accept(index):
            return False
        if index > self._high:
            shift = index - self._high
            self._bits = ((self._bits << shift) | 1) & self._mask if shift < self._window else 1
            self._high = index
        else:
            self._bits |= 1 << (self._high - index)
        return True

    def to_bytes(self) -> bytes:
        size = self._window // 8
        return self._HEADER.pack(self._VERSION, size, self._high + 1) + self._bits.to_bytes(
            size, "big"
        )

    @classmethod
    def from_bytes(cls, data: bytes) -> SeenIndexes:
        header = cls._HEADER.size
        if len(data) < header:
            raise MegolmError("malformed replay window: too short")
        version, size, next_index = cls._HEADER.unpack_from(data)
        if version != cls._VERSION:
            raise MegolmError(f"malformed replay window: version {version}")
        if len(data) != header + size:
            raise MegolmError("malformed replay window: wrong length")
        try:
            seen = cls(size * 8)
        except ValueError as error:
            raise MegolmError(f"malformed replay window: {error}") from None
        bits = int.from_bytes(data[header:], "big")
        if (
            next_index > MAX_INDEX + 1
            or (next_index == 0) != (bits == 0)
            or (bits and not bits & 1)
            or bits >> next_index  # a bit for an index below 0
        ):
            raise MegolmError("malformed replay window: inconsistent")
        seen._high = next_index - 1
        seen._bits = bits
        return seen

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, SeenIndexes):
            return NotImplemented
        return (self._window, self._high, self._bits) == (other._window, other._high, other._bits)

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return (
            f"SeenIndexes(window={self._window}, high={self.high}, seen={self._bits.bit_count()})"
        )


# -- helpers -----------------------------------------------------------------------------------


def _check_vault_key(vault_key: bytes) -> None:
    if len(vault_key) != KEY_BYTES:
        raise MegolmError("the vault key is 32 bytes")


def _check_index(index: int) -> None:
    if not 0 <= index <= MAX_INDEX:
        raise ValueError(f"a Megolm message index is in 0..{MAX_INDEX}")


def _b64decode(text: str) -> bytes:
    return base64.b64decode(text + "=" * (-len(text) % 4), validate=True)


def _signing_key(session_id: str) -> bytes:
    return _b64decode(session_id)


def is_forwarded(share: GroupSessionShare) -> bool:
    """Whether the share carries an exported key (forwarded by a member), not the owner's own."""
    return _key_version(share.session_key) == _EXPORTED_KEY_VERSION


def _key_version(session_key: str) -> int:
    try:
        raw = _b64decode(session_key)
    except (binascii.Error, ValueError):
        raise MegolmError("the Megolm session key is not base64") from None
    if not raw:
        raise MegolmError("the Megolm session key is empty")
    return raw[0]


def _session_claim(group_id: bytes, session_id: str, sender_device_key: bytes) -> bytes:
    return SESSION_CLAIM_CONTEXT + msgspec.msgpack.encode((group_id, session_id, sender_device_key))
