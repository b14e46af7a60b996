"""The identity root and the device key, as the design's key model lays them out.

The identity root (an Ed25519 seed) is the person; its public key is their id. Each device has
its own Ed25519 seed, from which libp2p derives the device's PeerId, and its own Olm account.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass

import base58
import nacl.signing
import nacl.utils

SEED_BYTES = 32
# libp2p PublicKey protobuf: field 1 (KeyType) = Ed25519 (1), field 2 (Data) = 32 bytes.
_ED25519_PUBKEY_PROTOBUF_PREFIX = bytes([0x08, 0x01, 0x12, 0x20])
# Keys of 42 bytes or less are embedded in the PeerId with the identity multihash (code 0).
_IDENTITY_MULTIHASH_PREFIX = bytes([0x00, len(_ED25519_PUBKEY_PROTOBUF_PREFIX) + 32])


def new_seed() -> bytes:
    return nacl.utils.random(SEED_BYTES)


def identity_id_from_public_key(public_key: bytes) -> str:
    """The person's id: their identity public key in lower-case unpadded base32."""
    return base64.b32encode(public_key).decode("ascii").rstrip("=").lower()


def peer_id_from_public_key(public_key: bytes) -> str:
    """The libp2p PeerId of an Ed25519 public key (identity multihash, base58btc)."""
    if len(public_key) != 32:
        raise ValueError("an Ed25519 public key is 32 bytes")
    multihash = _IDENTITY_MULTIHASH_PREFIX + _ED25519_PUBKEY_PROTOBUF_PREFIX + public_key
    return base58.b58encode(multihash).decode("ascii")


@dataclass(frozen=True)
class IdentityKeys:
    """The secret seeds of one device of one identity."""

    identity_seed: bytes
    device_seed: bytes

    def __post_init__(self) -> None:
        if len(self.identity_seed) != SEED_BYTES or len(self.device_seed) != SEED_BYTES:
            raise ValueError("identity and device seeds are 32 bytes each")

    @classmethod
    def generate(cls) -> IdentityKeys:
        return cls(identity_seed=new_seed(), device_seed=new_seed())

    @property
    def identity_signing_key(self) -> nacl.signing.SigningKey:
        return nacl.signing.SigningKey(self.identity_seed)

    @property
    def identity_public_key(self) -> bytes:
        return bytes(self.identity_signing_key.verify_key)

    @property
    def identity_id(self) -> str:
        return identity_id_from_public_key(self.identity_public_key)

    @property
    def device_public_key(self) -> bytes:
        return bytes(nacl.signing.SigningKey(self.device_seed).verify_key)

    @property
    def peer_id(self) -> str:
        return peer_id_from_public_key(self.device_public_key)
