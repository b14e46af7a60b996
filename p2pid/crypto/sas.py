"""Short authentication strings (vodozemac `Sas`): the codes two people compare, and the MACs.

Each side draws an ephemeral Curve25519 key; vodozemac's `Sas` does the Diffie-Hellman and
derives, with HKDF over an info string, 42 bits shown as seven emoji (Matrix's table) and 39 bits
shown as three four-digit numbers. The info string binds the code to the verification id and to
both sides' identity keys, PeerIds and SAS keys, initiator first, so both derive the same string,
and two people who see the same code know they hold the same keys for each other.

After both people confirm, each side sends a MAC (vodozemac's HKDF-HMAC-SHA-256 under the shared
secret) over both identity keys, bound to its direction: a side that holds another identity key
for either person, or another shared secret, cannot produce or accept it.

The initiator commits to its SAS key (a BLAKE2b hash) before it sees the responder's, so nobody in
the middle can choose keys after seeing the other's to make two different codes collide.
"""

from __future__ import annotations

from dataclasses import dataclass

import nacl.bindings
import nacl.encoding
import nacl.hash
import vodozemac

from p2pid.crypto.identity import identity_id_from_public_key

SAS_INFO_PREFIX = "P2PID_SAS_V1"
MAC_INFO_PREFIX = "P2PID_SAS_MAC_V1"
COMMITMENT_PERSON = b"p2pid-sas-commit"  # exactly 16 bytes, BLAKE2b's personalisation size
COMMITMENT_BYTES = 32
SAS_EMOJI_COUNT = 7

# The SAS emoji of the Matrix specification (data-definitions/sas-emoji.json): index -> (emoji,
# English name). Identical tables let a person compare codes with any client using them.
EMOJI: tuple[tuple[str, str], ...] = (
    ("\U0001f436", "Dog"),  # 0
    ("\U0001f431", "Cat"),  # 1
    ("\U0001f981", "Lion"),  # 2
    ("\U0001f40e", "Horse"),  # 3
    ("\U0001f984", "Unicorn"),  # 4
    ("\U0001f437", "Pig"),  # 5
    ("\U0001f418", "Elephant"),  # 6
    ("\U0001f430", "Rabbit"),  # 7
    ("\U0001f43c", "Panda"),  # 8
    ("\U0001f413", "Rooster"),  # 9
    ("\U0001f427", "Penguin"),  # 10
    ("\U0001f422", "Turtle"),  # 11
    ("\U0001f41f", "Fish"),  # 12
    ("\U0001f419", "Octopus"),  # 13
    ("\U0001f98b", "Butterfly"),  # 14
    ("\U0001f337", "Flower"),  # 15
    ("\U0001f333", "Tree"),  # 16
    ("\U0001f335", "Cactus"),  # 17
    ("\U0001f344", "Mushroom"),  # 18
    ("\U0001f30f", "Globe"),  # 19
    ("\U0001f319", "Moon"),  # 20
    ("\u2601\ufe0f", "Cloud"),  # 21
    ("\U0001f525", "Fire"),  # 22
    ("\U0001f34c", "Banana"),  # 23
    ("\U0001f34e", "Apple"),  # 24
    ("\U0001f353", "Strawberry"),  # 25
    ("\U0001f33d", "Corn"),  # 26
    ("\U0001f355", "Pizza"),  # 27
    ("\U0001f382", "Cake"),  # 28
    ("\u2764\ufe0f", "Heart"),  # 29
    ("\U0001f600", "Smiley"),  # 30
    ("\U0001f916", "Robot"),  # 31
    ("\U0001f3a9", "Hat"),  # 32
    ("\U0001f453", "Glasses"),  # 33
    ("\U0001f527", "Spanner"),  # 34
    ("\U0001f385", "Santa"),  # 35
    ("\U0001f44d", "Thumbs Up"),  # 36
    ("\u2602\ufe0f", "Umbrella"),  # 37
    ("\u231b", "Hourglass"),  # 38
    ("\u23f0", "Clock"),  # 39
    ("\U0001f381", "Gift"),  # 40
    ("\U0001f4a1", "Light Bulb"),  # 41
    ("\U0001f4d5", "Book"),  # 42
    ("\u270f\ufe0f", "Pencil"),  # 43
    ("\U0001f4ce", "Paperclip"),  # 44
    ("\u2702\ufe0f", "Scissors"),  # 45
    ("\U0001f512", "Lock"),  # 46
    ("\U0001f511", "Key"),  # 47
    ("\U0001f528", "Hammer"),  # 48
    ("\u260e\ufe0f", "Telephone"),  # 49
    ("\U0001f3c1", "Flag"),  # 50
    ("\U0001f682", "Train"),  # 51
    ("\U0001f6b2", "Bicycle"),  # 52
    ("\u2708\ufe0f", "Aeroplane"),  # 53
    ("\U0001f680", "Rocket"),  # 54
    ("\U0001f3c6", "Trophy"),  # 55
    ("\u26bd", "Ball"),  # 56
    ("\U0001f3b8", "Guitar"),  # 57
    ("\U0001f3ba", "Trumpet"),  # 58
    ("\U0001f514", "Bell"),  # 59
    ("\u2693", "Anchor"),  # 60
    ("\U0001f3a7", "Headphones"),  # 61
    ("\U0001f4c1", "Folder"),  # 62
    ("\U0001f4cc", "Pin"),  # 63
)


class SasError(ValueError):
    """A SAS key, MAC or commitment that cannot be accepted."""


@dataclass(frozen=True)
class SasParty:
    """One side of a verification: an identity and the device (PeerId) speaking for it."""

    identity_key: bytes
    peer_id: str

    def __post_init__(self) -> None:
        if len(self.identity_key) != 32:
            raise ValueError("an identity key is 32 bytes")
        if not self.peer_id or "|" in self.peer_id:
            raise ValueError(f"not a PeerId: {self.peer_id!r}")

    @property
    def identity_id(self) -> str:
        return identity_id_from_public_key(self.identity_key)


@dataclass(frozen=True)
class SasCode:
    """What both people compare: seven emoji or, equivalently, three numbers."""

    emoji_indices: tuple[int, ...]
    decimals: tuple[int, int, int]

    @property
    def emoji(self) -> tuple[tuple[str, str], ...]:
        """(symbol, name) for each of the seven."""
        return tuple(EMOJI[index] for index in self.emoji_indices)


def _key_base64(public_key: bytes) -> str:
    try:
        return vodozemac.Curve25519PublicKey.from_bytes(public_key).to_base64()
    except vodozemac.KeyException as error:
        raise SasError(f"not a Curve25519 key: {error}") from None


def sas_info(
    verification_id: bytes,
    *,
    initiator: SasParty,
    initiator_key: bytes,
    responder: SasParty,
    responder_key: bytes,
) -> str:
    """The HKDF info string both sides derive the code with: initiator first, then responder.

    Every part comes from an alphabet without '|' (hex, base32, base58, base64), so the string
    parses back to one tuple only.
    """
    return "|".join(
        (
            SAS_INFO_PREFIX,
            verification_id.hex(),
            initiator.identity_id,
            initiator.peer_id,
            _key_base64(initiator_key),
            responder.identity_id,
            responder.peer_id,
            _key_base64(responder_key),
        )
    )


def mac_info(verification_id: bytes, *, sender: SasParty, receiver: SasParty) -> str:
    """The MAC's info: bound to the verification and to its direction (sender first)."""
    return "|".join(
        (
            MAC_INFO_PREFIX,
            verification_id.hex(),
            sender.identity_id,
            sender.peer_id,
            receiver.identity_id,
            receiver.peer_id,
        )
    )


def mac_input(*, sender: SasParty, receiver: SasParty) -> str:
    """What the MAC covers: both identity keys, the sender's first."""
    return f"{sender.identity_id}|{receiver.identity_id}"


def key_commitment(verification_id: bytes, public_key: bytes) -> bytes:
    """BLAKE2b-256 (personalised) over the verification id and the initiator's SAS key."""
    return nacl.hash.blake2b(
        len(verification_id).to_bytes(2, "big") + verification_id + public_key,
        digest_size=COMMITMENT_BYTES,
        person=COMMITMENT_PERSON,
        encoder=nacl.encoding.RawEncoder,
    )


def commitment_matches(commitment: bytes, verification_id: bytes, public_key: bytes) -> bool:
    expected = key_commitment(verification_id, public_key)
    return len(commitment) == len(expected) and nacl.bindings.sodium_memcmp(expected, commitment)


class SasExchange:
    """One side of one SAS: an ephemeral key, then (once) the other's key, the code and MACs."""

    def __init__(
        self, verification_id: bytes, *, we: SasParty, they: SasParty, we_initiate: bool
    ) -> None:
        self.verification_id = verification_id
        self.we = we
        self.they = they
        self.we_initiate = we_initiate
        self._sas = vodozemac.Sas()
        self.public_key = self._sas.public_key.to_bytes()
        self._established: vodozemac.EstablishedSas | None = None
        self.code: SasCode | None = None

    def commitment(self) -> bytes:
        return key_commitment(self.verification_id, self.public_key)

    def establish(self, their_public_key: bytes) -> SasCode:
        """The code, from the other side's SAS key; SasError if the key is unusable."""
        if self._established is not None:
            raise SasError("the SAS is already established")
        try:
            their_key = vodozemac.Curve25519PublicKey.from_bytes(their_public_key)
            established = self._sas.diffie_hellman(their_key)
        except (vodozemac.KeyException, vodozemac.SasException) as error:
            raise SasError(f"unusable SAS key: {error}") from None
        if self.we_initiate:
            info = sas_info(
                self.verification_id,
                initiator=self.we,
                initiator_key=self.public_key,
                responder=self.they,
                responder_key=their_public_key,
            )
        else:
            info = sas_info(
                self.verification_id,
                initiator=self.they,
                initiator_key=their_public_key,
                responder=self.we,
                responder_key=self.public_key,
            )
        sas_bytes = established.bytes(info)
        first, second, third = sas_bytes.decimals
        self._established = established
        self.code = SasCode(
            emoji_indices=tuple(sas_bytes.emoji_indices)[:SAS_EMOJI_COUNT],
            decimals=(first, second, third),
        )
        return self.code

    def _shared(self) -> vodozemac.EstablishedSas:
        if self._established is None:
            raise SasError("the SAS is not established yet")
        return self._established

    def mac(self) -> str:
        """This side's MAC over both identity keys, to send once our person confirmed."""
        return self._shared().calculate_mac(
            mac_input(sender=self.we, receiver=self.they),
            mac_info(self.verification_id, sender=self.we, receiver=self.they),
        )

    def verify_mac(self, tag: str) -> None:
        """Raises SasError unless `tag` is the other side's MAC over the keys we hold."""
        try:
            self._shared().verify_mac(
                mac_input(sender=self.they, receiver=self.we),
                mac_info(self.verification_id, sender=self.they, receiver=self.we),
                tag,
            )
        except vodozemac.SasException as error:
            raise SasError(f"the MAC does not match: {error}") from None
