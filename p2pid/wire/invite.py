"""The invite codec: a compact, signed, versioned binary record as QR-friendly text. Sans-IO.

The text form is ``P2PID:`` followed by the record in upper-case base32 without padding. Every
character of it is in the QR alphanumeric set (0-9 A-Z space $ % * + - . / :), so a QR code
holds it in alphanumeric mode (5.5 bits per character), and the same text is the copy/paste form.

Binary layout, version 1 (integers big-endian):

====  =======================  ===========================================================
size  field                    meaning
====  =======================  ===========================================================
1     version                  1
1     kind                     InviteKind: 1 contact, 2 device link, 3 kiosk, 4 group
1     flags                    reserved, 0 in version 1
32    identity_key             the inviter's Ed25519 identity public key
32    device_key               the inviter device's Ed25519 public key (its PeerId)
1     hint count               0..4, then per hint:
1       family                 4 or 6
4/16    address                IPv4 or IPv6 address
2       port                   TCP port, 1..65535
1     secret length            16..32, then that many bytes of one-time secret
4     expires_at               unix seconds; the invite is void from that second on
1     name length              0..32, then that many bytes of UTF-8 (no control characters)
64    signature                Ed25519 by identity_key over SIGNATURE_CONTEXT + every byte
                               before the signature
====  =======================  ===========================================================

Decoding is strict: one byte string has exactly one text form and one meaning. Signing and
verifying live in ``p2pid.crypto.invites``; this module imports nothing of p2pid.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import struct
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass
from enum import IntEnum
from ipaddress import IPv4Address, IPv6Address, ip_address

INVITE_PREFIX = "P2PID:"
INVITE_VERSION = 1
SIGNATURE_CONTEXT = b"p2pid-invite-v1\0"
INVITE_ID_PERSON = b"p2pid-invite-id"

KEY_BYTES = 32
SIGNATURE_BYTES = 64
INVITE_ID_BYTES = 16
MAX_HINTS = 4
MIN_SECRET_BYTES = 16
MAX_SECRET_BYTES = 32
MAX_NAME_BYTES = 32
MAX_EXPIRES_AT = 2**32 - 1

# Every character a QR code can hold in alphanumeric mode.
QR_ALPHANUMERIC = frozenset("0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ $%*+-./:")

_FAMILY_IPV4 = 4
_FAMILY_IPV6 = 6
_ADDRESS_BYTES = {_FAMILY_IPV4: 4, _FAMILY_IPV6: 16}
_PORT = struct.Struct(">H")
_EXPIRES_AT = struct.Struct(">I")
_BASE32_ALPHABET = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZ234567")
# Lengths of an unpadded base32 string whose last group decodes to whole bytes.
_VALID_BASE32_TAIL_LENGTHS = frozenset({0, 2, 4, 5, 7})


class InviteFormatError(ValueError):
    """The text or bytes are not a well-formed invite of a version this code reads."""


class InviteKind(IntEnum):
    CONTACT = 1
    DEVICE_LINK = 2
    KIOSK = 3
    GROUP = 4


@dataclass(frozen=True)
class AddressHint:
    """A TCP address where the inviter's device may be reached."""

    ip: IPv4Address | IPv6Address
    port: int

    def __post_init__(self) -> None:
        if not isinstance(self.ip, IPv4Address | IPv6Address):
            raise ValueError(f"an address hint needs an IP address, not {self.ip!r}")
        if isinstance(self.ip, IPv6Address) and self.ip.scope_id is not None:
            raise ValueError("an address hint cannot carry an IPv6 scope id")
        if not 1 <= self.port <= 0xFFFF:
            raise ValueError(f"TCP port {self.port} is not in 1..65535")

    @property
    def family(self) -> int:
        return _FAMILY_IPV4 if isinstance(self.ip, IPv4Address) else _FAMILY_IPV6

    def to_multiaddr(self) -> str:
        return f"/ip{self.family}/{self.ip.compressed}/tcp/{self.port}"

    @classmethod
    def from_multiaddr(cls, addr: str) -> AddressHint | None:
        """The hint for ``/ip4/A/tcp/P`` or ``/ip6/A/tcp/P``; None for any other multiaddr."""
        parts = addr.split("/")
        if len(parts) != 5 or parts[0] != "" or parts[3] != "tcp":
            return None
        protocol, host, port_text = parts[1], parts[2], parts[4]
        if protocol not in ("ip4", "ip6") or not _is_canonical_port(port_text):
            return None
        try:
            ip = ip_address(host)
            hint = cls(ip, int(port_text))
        except ValueError:
            return None
        return hint if protocol == f"ip{hint.family}" else None


def _is_canonical_port(text: str) -> bool:
    return text.isascii() and text.isdigit() and str(int(text)) == text


@dataclass(frozen=True)
class UnsignedInvite:
    """Every field of an invite except the signature; `signed_bytes` is what gets signed."""

    kind: InviteKind
    identity_key: bytes
    device_key: bytes
    hints: tuple[AddressHint, ...]
    secret: bytes
    expires_at: int
    name: str

    def __post_init__(self) -> None:
        _check_fields(self)

    def signed_bytes(self) -> bytes:
        return SIGNATURE_CONTEXT + _body_bytes(self)

    def with_signature(self, signature: bytes) -> Invite:
        return Invite(
            kind=self.kind,
            identity_key=self.identity_key,
            device_key=self.device_key,
            hints=self.hints,
            secret=self.secret,
            expires_at=self.expires_at,
            name=self.name,
            signature=signature,
        )


@dataclass(frozen=True)
class Invite:
    """A decoded (or freshly signed) invite. Well-formed, but not yet verified."""

    kind: InviteKind
    identity_key: bytes
    device_key: bytes
    hints: tuple[AddressHint, ...]
    secret: bytes
    expires_at: int
    name: str
    signature: bytes

    def __post_init__(self) -> None:
        _check_fields(self)
        if len(self.signature) != SIGNATURE_BYTES:
            raise ValueError(f"a signature is {SIGNATURE_BYTES} bytes, not {len(self.signature)}")

    def signed_bytes(self) -> bytes:
        """SIGNATURE_CONTEXT + the body: exactly what the signature covers."""
        return SIGNATURE_CONTEXT + _body_bytes(self)

    @property
    def invite_id(self) -> bytes:
        """Names the invite to its inviter without sending the secret over the wire."""
        return invite_id_for_secret(self.secret)


def invite_id_for_secret(secret: bytes) -> bytes:
    return hashlib.blake2b(secret, digest_size=INVITE_ID_BYTES, person=INVITE_ID_PERSON).digest()


def invite_body(
    kind: InviteKind,
    identity_key: bytes,
    device_key: bytes,
    hints: Iterable[AddressHint],
    secret: bytes,
    expires_at: int,
    name: str,
) -> UnsignedInvite:
    """The invite to sign. A name over 32 UTF-8 bytes is cut on a character boundary."""
    return UnsignedInvite(
        kind=InviteKind(kind),
        identity_key=bytes(identity_key),
        device_key=bytes(device_key),
        hints=tuple(hints),
        secret=bytes(secret),
        expires_at=expires_at,
        name=truncate_name(name),
    )


def truncate_name(name: str, max_bytes: int = MAX_NAME_BYTES) -> str:
    """The longest prefix of `name` (whole code points) that is at most `max_bytes` in UTF-8."""
    encoded = name.encode("utf-8")
    if len(encoded) <= max_bytes:
        return name
    return encoded[:max_bytes].decode("utf-8", errors="ignore")


# Field checks, shared by both records; they raise ValueError (InviteFormatError when decoding).


def _check_fields(invite: UnsignedInvite | Invite) -> None:
    if not isinstance(invite.kind, InviteKind):
        raise ValueError(f"unknown invite kind {invite.kind!r}")
    for label, key in (("identity key", invite.identity_key), ("device key", invite.device_key)):
        if len(key) != KEY_BYTES:
            raise ValueError(f"the {label} is {KEY_BYTES} bytes, not {len(key)}")
    if len(invite.hints) > MAX_HINTS:
        raise ValueError(f"at most {MAX_HINTS} address hints, not {len(invite.hints)}")
    if not all(isinstance(hint, AddressHint) for hint in invite.hints):
        raise ValueError("address hints must be AddressHint records")
    _check_secret_length(len(invite.secret))
    if not 0 <= invite.expires_at <= MAX_EXPIRES_AT:
        raise ValueError(f"expires_at {invite.expires_at} does not fit in 32 unsigned bits")
    _check_name_bytes(invite.name.encode("utf-8"))


def _check_secret_length(length: int) -> None:
    if not MIN_SECRET_BYTES <= length <= MAX_SECRET_BYTES:
        raise ValueError(
            f"the secret is {length} bytes; it must be {MIN_SECRET_BYTES}..{MAX_SECRET_BYTES}"
        )


def _check_name_bytes(encoded: bytes) -> str:
    if len(encoded) > MAX_NAME_BYTES:
        raise ValueError(f"the name is {len(encoded)} bytes of UTF-8; at most {MAX_NAME_BYTES}")
    try:
        name = encoded.decode("utf-8")
    except UnicodeDecodeError:
        raise ValueError("the name is not valid UTF-8") from None
    if any(unicodedata.category(char) == "Cc" for char in name):
        raise ValueError("the name contains control characters")
    return name


# Binary form.


def _body_bytes(invite: UnsignedInvite | Invite) -> bytes:
    name = invite.name.encode("utf-8")
    parts = [
        bytes([INVITE_VERSION, invite.kind, 0]),
        invite.identity_key,
        invite.device_key,
        bytes([len(invite.hints)]),
        *(_hint_bytes(hint) for hint in invite.hints),
        bytes([len(invite.secret)]),
        invite.secret,
        _EXPIRES_AT.pack(invite.expires_at),
        bytes([len(name)]),
        name,
    ]
    return b"".join(parts)


def _hint_bytes(hint: AddressHint) -> bytes:
    return bytes([hint.family]) + hint.ip.packed + _PORT.pack(hint.port)


def invite_to_bytes(invite: Invite) -> bytes:
    """The binary form: the body, then the signature."""
    return _body_bytes(invite) + invite.signature


class _Reader:
    """Reads fields off the front of a byte string; running short is an InviteFormatError."""

    def __init__(self, data: bytes) -> None:
        self._data = data
        self._offset = 0

    def take(self, size: int, what: str) -> bytes:
        end = self._offset + size
        if end > len(self._data):
            raise InviteFormatError(f"invite truncated: {what} is cut short")
        chunk = self._data[self._offset : end]
        self._offset = end
        return chunk

    def u8(self, what: str) -> int:
        return self.take(1, what)[0]

    def u16(self, what: str) -> int:
        value: int = _PORT.unpack(self.take(_PORT.size, what))[0]
        return value

    def u32(self, what: str) -> int:
        value: int = _EXPIRES_AT.unpack(self.take(_EXPIRES_AT.size, what))[0]
        return value

    def expect_end(self) -> None:
        extra = len(self._data) - self._offset
        if extra:
            raise InviteFormatError(f"invite has {extra} trailing bytes after the signature")


def invite_from_bytes(data: bytes) -> Invite:
    """Decode the binary form strictly. Does not check the signature (see verify_invite)."""
    reader = _Reader(bytes(data))
    _read_header(reader)
    kind = _read_kind(reader)
    identity_key = reader.take(KEY_BYTES, "identity key")
    device_key = reader.take(KEY_BYTES, "device key")
    hints = _read_hints(reader)
    secret = _read_secret(reader)
    expires_at = reader.u32("expiry")
    name = _read_name(reader)
    signature = reader.take(SIGNATURE_BYTES, "signature")
    reader.expect_end()
    try:
        return Invite(kind, identity_key, device_key, hints, secret, expires_at, name, signature)
    except ValueError as error:  # every field was checked above; this is a safety net
        raise InviteFormatError(str(error)) from None


def _read_header(reader: _Reader) -> None:
    version = reader.u8("version")
    if version != INVITE_VERSION:
        raise InviteFormatError(
            f"invite version {version} is not supported (this p2pid reads version "
            f"{INVITE_VERSION}); the inviter may need an older p2pid, or this one an update"
        )


def _read_kind(reader: _Reader) -> InviteKind:
    kind_value = reader.u8("kind")
    try:
        kind = InviteKind(kind_value)
    except ValueError:
        raise InviteFormatError(f"unknown invite kind {kind_value}") from None
    flags = reader.u8("flags")
    if flags != 0:
        raise InviteFormatError(f"invite flags are {flags:#04x}; version 1 requires 0")
    return kind


def _read_hints(reader: _Reader) -> tuple[AddressHint, ...]:
    count = reader.u8("hint count")
    if count > MAX_HINTS:
        raise InviteFormatError(f"invite has {count} address hints; at most {MAX_HINTS}")
    return tuple(_read_hint(reader, index) for index in range(count))


def _read_hint(reader: _Reader, index: int) -> AddressHint:
    what = f"address hint {index + 1}"
    family = reader.u8(what)
    if family not in _ADDRESS_BYTES:
        raise InviteFormatError(f"{what} has address family {family}; expected 4 or 6")
    packed = reader.take(_ADDRESS_BYTES[family], what)
    port = reader.u16(what)
    if port == 0:
        raise InviteFormatError(f"{what} has TCP port 0")
    ip = IPv4Address(packed) if family == _FAMILY_IPV4 else IPv6Address(packed)
    return AddressHint(ip, port)


def _read_secret(reader: _Reader) -> bytes:
    length = reader.u8("secret length")
    try:
        _check_secret_length(length)
    except ValueError as error:
        raise InviteFormatError(str(error)) from None
    return reader.take(length, "secret")


def _read_name(reader: _Reader) -> str:
    length = reader.u8("name length")
    if length > MAX_NAME_BYTES:
        raise InviteFormatError(f"the name is {length} bytes of UTF-8; at most {MAX_NAME_BYTES}")
    try:
        return _check_name_bytes(reader.take(length, "name"))
    except ValueError as error:
        raise InviteFormatError(str(error)) from None


# Text form.


def encode_invite(invite: Invite) -> str:
    """The text form: the prefix and the binary form in upper-case unpadded base32."""
    return INVITE_PREFIX + base64.b32encode(invite_to_bytes(invite)).decode("ascii").rstrip("=")


def decode_invite(text: str) -> Invite:
    """Decode the text form strictly. Accepts lower case, surrounding whitespace and line breaks
    (with the whitespace around them) inside the code; nothing else. Does not check the signature.
    """
    return invite_from_bytes(_base32_payload(text))


def _base32_payload(text: str) -> bytes:
    joined = "".join(line.strip() for line in text.strip().splitlines())
    if not joined.isascii():
        raise InviteFormatError("an invite code contains only letters, digits and ':'")
    code = joined.upper()
    if not code.startswith(INVITE_PREFIX):
        raise InviteFormatError(f"not a p2pid invite: the code must start with {INVITE_PREFIX}")
    return _decode_base32(code.removeprefix(INVITE_PREFIX))


def _decode_base32(encoded: str) -> bytes:
    if not encoded:
        raise InviteFormatError("invite truncated: nothing after the prefix")
    if not set(encoded) <= _BASE32_ALPHABET:
        raise InviteFormatError("invite is not valid base32: it may hold only A-Z and 2-7")
    if len(encoded) % 8 not in _VALID_BASE32_TAIL_LENGTHS:
        raise InviteFormatError("invite is not valid base32: its length is cut mid-byte")
    padded = encoded + "=" * (-len(encoded) % 8)
    try:
        data = base64.b32decode(padded)
    except binascii.Error as error:
        raise InviteFormatError(f"invite is not valid base32: {error}") from None
    if base64.b32encode(data).decode("ascii") != padded:
        raise InviteFormatError("invite is not valid base32: non-zero bits after the last byte")
    return data
