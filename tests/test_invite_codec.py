"""The invite codec (p2pid.wire.invite) and invite signatures (p2pid.crypto.invites)."""

from __future__ import annotations

import ast
import base64
import dataclasses
import hashlib
import struct
import sys
from collections.abc import Callable
from ipaddress import IPv4Address, IPv6Address, ip_address
from pathlib import Path

import nacl.signing
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from p2pid.crypto.invites import (
    ExpiredInviteError,
    ForgedInviteError,
    InviteError,
    new_invite,
    verify_invite,
)
from p2pid.wire import invite as invite_module
from p2pid.wire.invite import (
    INVITE_PREFIX,
    MAX_NAME_BYTES,
    QR_ALPHANUMERIC,
    SIGNATURE_CONTEXT,
    AddressHint,
    Invite,
    InviteFormatError,
    InviteKind,
    decode_invite,
    encode_invite,
    invite_body,
    invite_from_bytes,
    invite_to_bytes,
    truncate_name,
)

NOW = 1_750_000_000
IDENTITY = nacl.signing.SigningKey(bytes(range(32)))
DEVICE_KEY = bytes(nacl.signing.SigningKey(bytes(range(32, 64))).verify_key)
HINT_V4 = AddressHint(IPv4Address("192.168.1.23"), 40123)
HINT_V6 = AddressHint(IPv6Address("fd00::1234:5678:9abc"), 4001)


def make_invite(
    hints: tuple[AddressHint, ...] = (HINT_V4,), name: str = "Alice", ttl: int = 600
) -> Invite:
    return new_invite(InviteKind.CONTACT, IDENTITY, DEVICE_KEY, hints, ttl, name, NOW)


def text_of(data: bytes) -> str:
    """The text form of arbitrary bytes, as a forger would write it."""
    return INVITE_PREFIX + base64.b32encode(data).decode().rstrip("=")


def raw_invite(
    *,
    version: int = 1,
    kind: int = 1,
    flags: int = 0,
    hints: bytes = b"\x00",
    secret: bytes = b"\x10" + bytes(16),
    expires_at: int = NOW + 600,
    name: bytes = b"\x05Alice",
    signature: bytes = bytes(64),
) -> bytes:
    """The binary layout written out by hand, field by field."""
    head = bytes([version, kind, flags]) + bytes(IDENTITY.verify_key) + DEVICE_KEY
    return head + hints + secret + struct.pack(">I", expires_at) + name + signature


# Strategies for every field.

kinds = st.sampled_from(list(InviteKind))
keys = st.binary(min_size=32, max_size=32)
ports = st.integers(min_value=1, max_value=65535)
addresses = st.one_of(st.ip_addresses(v=4), st.ip_addresses(v=6))
hints_strategy = st.lists(st.builds(AddressHint, addresses, ports), max_size=4).map(tuple)
secrets = st.binary(min_size=16, max_size=32)
expiries = st.integers(min_value=0, max_value=2**32 - 1)
names = st.text(st.characters(codec="utf-8", exclude_categories=["Cc"]), max_size=40)
signatures = st.binary(min_size=64, max_size=64)
invites = st.builds(
    lambda kind, identity, device, hints, secret, expires_at, name, signature: invite_body(
        kind, identity, device, hints, secret, expires_at, name
    ).with_signature(signature),
    kinds,
    keys,
    keys,
    hints_strategy,
    secrets,
    expiries,
    names,
    signatures,
)


# Round trips.


@given(invites)
@settings(max_examples=300)
def test_every_invite_round_trips_through_text_and_bytes(invite: Invite) -> None:
    text = encode_invite(invite)
    assert decode_invite(text) == invite
    assert invite_from_bytes(invite_to_bytes(invite)) == invite
    assert set(text) <= QR_ALPHANUMERIC
    assert text.startswith(INVITE_PREFIX)


@given(invites)
def test_signed_bytes_are_the_context_and_everything_before_the_signature(invite: Invite) -> None:
    raw = invite_to_bytes(invite)
    assert invite.signed_bytes() == SIGNATURE_CONTEXT + raw[:-64]
    assert raw[-64:] == invite.signature


def test_the_layout_matches_the_documented_bytes() -> None:
    invite = make_invite(hints=(HINT_V4, HINT_V6), name="Bob")
    hints = (
        b"\x02"
        + b"\x04"
        + bytes([192, 168, 1, 23])
        + struct.pack(">H", 40123)
        + b"\x06"
        + IPv6Address("fd00::1234:5678:9abc").packed
        + struct.pack(">H", 4001)
    )
    expected = raw_invite(
        hints=hints,
        secret=b"\x10" + invite.secret,
        name=b"\x03Bob",
        signature=invite.signature,
    )
    assert invite_to_bytes(invite) == expected
    assert len(expected) == 3 + 32 + 32 + 1 + 7 + 19 + 17 + 4 + 4 + 64


def test_a_signed_invite_round_trips_and_verifies() -> None:
    invite = make_invite(hints=(HINT_V4, HINT_V6))
    decoded = decode_invite(encode_invite(invite))
    assert decoded == invite
    verify_invite(decoded, NOW)
    assert len(decoded.secret) == 16
    assert decoded.identity_key == bytes(IDENTITY.verify_key)
    assert decoded.expires_at == NOW + 600


def test_lower_case_whitespace_and_line_breaks_are_accepted() -> None:
    invite = make_invite()
    text = encode_invite(invite)
    wrapped = "\n".join(text[index : index + 40] for index in range(0, len(text), 40))
    variants = [
        text.lower(),
        f"  \t{text}\n\n",
        wrapped,
        wrapped.replace("\n", "\r\n"),
        "\n".join(f"    {line}  " for line in wrapped.splitlines()),  # quoted in an email
        text[:20].lower() + text[20:],
    ]
    for variant in variants:
        assert decode_invite(variant) == invite


# Rejections.


def assert_never_a_different_valid_invite(original: Invite, data: bytes) -> None:
    try:
        decoded = decode_invite(text_of(data))
    except InviteFormatError:
        return
    assert decoded != original
    with pytest.raises(ForgedInviteError):
        verify_invite(decoded, NOW)


def test_truncation_at_every_length_is_a_format_error() -> None:
    raw = invite_to_bytes(make_invite(hints=(HINT_V4, HINT_V6)))
    for length in range(len(raw)):
        with pytest.raises(InviteFormatError):
            invite_from_bytes(raw[:length])
        with pytest.raises(InviteFormatError):
            decode_invite(text_of(raw[:length]))


def test_truncated_text_at_every_length_is_a_format_error() -> None:
    text = encode_invite(make_invite())
    for length in range(len(text)):
        with pytest.raises(InviteFormatError):
            decode_invite(text[:length])


@pytest.mark.parametrize("extra", [b"\x00", b"\xff", bytes(5), bytes(64)])
def test_trailing_bytes_are_a_format_error(extra: bytes) -> None:
    raw = invite_to_bytes(make_invite())
    with pytest.raises(InviteFormatError, match="trailing"):
        invite_from_bytes(raw + extra)
    with pytest.raises(InviteFormatError):
        decode_invite(text_of(raw + extra))


@pytest.mark.parametrize("mask", [0x01, 0x80, 0xFF])
def test_flipping_any_byte_never_yields_a_different_valid_invite(mask: int) -> None:
    original = make_invite(hints=(HINT_V4, HINT_V6), name="Zoë's phone")
    raw = invite_to_bytes(original)
    for index in range(len(raw)):
        corrupted = bytearray(raw)
        corrupted[index] ^= mask
        assert_never_a_different_valid_invite(original, bytes(corrupted))


def test_changing_any_character_of_the_text_never_yields_a_different_valid_invite() -> None:
    original = make_invite()
    text = encode_invite(original)
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"
    for index in range(len(INVITE_PREFIX), len(text)):
        replacement = alphabet[(alphabet.index(text[index]) + 1) % 32]
        altered = text[:index] + replacement + text[index + 1 :]
        try:
            decoded = decode_invite(altered)
        except InviteFormatError:
            continue
        with pytest.raises(ForgedInviteError):
            verify_invite(decoded, NOW)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"version": 0}, "version 0 is not supported"),
        ({"version": 2}, "version 2 is not supported"),
        ({"kind": 0}, "unknown invite kind 0"),
        ({"kind": 5}, "unknown invite kind 5"),
        ({"kind": 255}, "unknown invite kind 255"),
        ({"flags": 1}, "flags"),
        ({"flags": 0x80}, "flags"),
        ({"hints": b"\x05" + (b"\x04" + bytes(4) + b"\x00\x01") * 5}, "at most 4"),
        ({"hints": b"\x01\x05" + bytes(4) + b"\x00\x01"}, "address family 5"),
        ({"hints": b"\x01\x00" + bytes(4) + b"\x00\x01"}, "address family 0"),
        ({"hints": b"\x01\x04" + bytes(4) + b"\x00\x00"}, "port 0"),
        ({"hints": b"\x01\x06" + bytes(16) + b"\x00\x00"}, "port 0"),
        ({"secret": b"\x00"}, "secret is 0 bytes"),
        ({"secret": b"\x0f" + bytes(15)}, "secret is 15 bytes"),
        ({"secret": b"\x21" + bytes(33)}, "secret is 33 bytes"),
        ({"name": b"\x21" + b"a" * 33}, "at most 32"),
        ({"name": b"\x02\xc3\x28"}, "not valid UTF-8"),
        ({"name": b"\x01\xff"}, "not valid UTF-8"),
        ({"name": b"\x03a\x1bb"}, "control characters"),
        ({"name": b"\x02\xc2\x9b"}, "control characters"),  # U+009B, the C1 CSI
    ],
)
def test_malformed_fields_are_rejected_with_a_clear_message(
    fields: dict[str, int | bytes], message: str
) -> None:
    data = raw_invite(**fields)  # type: ignore[arg-type]
    with pytest.raises(InviteFormatError, match=message):
        invite_from_bytes(data)
    with pytest.raises(InviteFormatError, match=message):
        decode_invite(text_of(data))


def test_a_well_formed_hand_written_invite_decodes() -> None:
    invite = invite_from_bytes(raw_invite(hints=b"\x01\x04" + bytes([10, 0, 0, 1]) + b"\x0f\xa1"))
    assert invite.hints == (AddressHint(IPv4Address("10.0.0.1"), 4001),)
    assert invite.name == "Alice"
    with pytest.raises(ForgedInviteError):
        verify_invite(invite, NOW)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "must start with P2PID:"),
        ("P2PID", "must start with P2PID:"),
        ("P2P:AEAQ", "must start with P2PID:"),
        ("XP2PID:AEAQ", "must start with P2PID:"),
        ("p2pid;AEAQ", "must start with P2PID:"),
        ("P2PID:", "nothing after the prefix"),
        ("P2PID:AEAQ0", "only A-Z and 2-7"),
        ("P2PID:AEAQ1", "only A-Z and 2-7"),
        ("P2PID:AEAQ8", "only A-Z and 2-7"),
        ("P2PID:AE==", "only A-Z and 2-7"),
        ("P2PID:AEAQ AEAQ", "only A-Z and 2-7"),
        ("P2PID:AEAQÀ", "only letters, digits"),
        ("P2PID:AEA", "cut mid-byte"),
        ("P2PID:AB", "non-zero bits"),
    ],
)
def test_malformed_text_is_rejected_with_a_clear_message(text: str, message: str) -> None:
    with pytest.raises(InviteFormatError, match=message):
        decode_invite(text)


def test_a_valid_body_behind_another_prefix_is_rejected() -> None:
    code = encode_invite(make_invite()).removeprefix(INVITE_PREFIX)
    for prefix in ("", "P2P:", "P2PID1:", "P2PID::", "P2PID: ", "HTTPS://P2PID:"):
        with pytest.raises(InviteFormatError):
            decode_invite(prefix + code)


def test_format_errors_are_value_errors() -> None:
    assert issubclass(InviteFormatError, ValueError)


# Names.


@given(names)
def test_truncated_names_are_the_longest_prefix_within_32_bytes(name: str) -> None:
    cut = truncate_name(name)
    assert name.startswith(cut)
    assert len(cut.encode()) <= MAX_NAME_BYTES
    if cut != name:
        assert len((cut + name[len(cut)]).encode()) > MAX_NAME_BYTES


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("x" * 32, "x" * 32),
        ("x" * 33, "x" * 32),
        ("é" * 20, "é" * 16),  # 2 bytes each
        ("x" + "é" * 16, "x" + "é" * 15),  # the 16th é would straddle byte 32
        ("€" * 11, "€" * 10),  # 3 bytes each: 30 bytes
        ("😀" * 9, "😀" * 8),  # 4 bytes each
        ("abc" + "😀" * 8, "abc" + "😀" * 7),
    ],
)
def test_names_are_cut_on_character_boundaries(name: str, expected: str) -> None:
    assert truncate_name(name) == expected
    invite = make_invite(name=name)
    assert invite.name == expected
    decoded = decode_invite(encode_invite(invite))
    assert decoded.name == expected
    verify_invite(decoded, NOW)


def test_an_invite_record_refuses_a_name_over_32_bytes_or_with_control_characters() -> None:
    invite = make_invite()
    with pytest.raises(ValueError, match="at most 32"):
        dataclasses.replace(invite, name="x" * 33)
    with pytest.raises(ValueError, match="control"):
        invite_body(InviteKind.CONTACT, bytes(32), bytes(32), (), bytes(16), 0, "evil\x1b[2J")


# Signatures and expiry.


def test_a_tampered_field_is_a_forged_invite() -> None:
    invite = make_invite(hints=(HINT_V4,))
    other_key = bytes(nacl.signing.SigningKey(bytes(32)).verify_key)
    tampered = [
        dataclasses.replace(invite, name="Mallory"),
        dataclasses.replace(invite, expires_at=invite.expires_at + 3600),
        dataclasses.replace(invite, hints=(AddressHint(IPv4Address("6.6.6.6"), 40123),)),
        dataclasses.replace(invite, hints=()),
        dataclasses.replace(invite, device_key=other_key),
        dataclasses.replace(invite, identity_key=other_key),
        dataclasses.replace(invite, kind=InviteKind.DEVICE_LINK),
        dataclasses.replace(invite, secret=bytes(16)),
        dataclasses.replace(invite, signature=bytes(64)),
    ]
    for candidate in tampered:
        with pytest.raises(ForgedInviteError):
            verify_invite(candidate, NOW)


def test_an_invite_signed_by_another_key_is_forged() -> None:
    mallory = nacl.signing.SigningKey.generate()
    forged = new_invite(InviteKind.CONTACT, mallory, DEVICE_KEY, (), 600, "Alice", NOW)
    forged = dataclasses.replace(forged, identity_key=bytes(IDENTITY.verify_key))
    with pytest.raises(ForgedInviteError, match="signature"):
        verify_invite(forged, NOW)


def test_expiry_is_exclusive_and_checked_after_the_signature() -> None:
    invite = make_invite(ttl=600)
    verify_invite(invite, NOW)
    verify_invite(invite, NOW + 599)
    for late in (NOW + 600, NOW + 10_000):
        with pytest.raises(ExpiredInviteError, match="expired at") as caught:
            verify_invite(invite, late)
        assert caught.value.reason == str(caught.value)
    forged_and_expired = dataclasses.replace(invite, name="Mallory")
    with pytest.raises(ForgedInviteError):
        verify_invite(forged_and_expired, NOW + 10_000)
    assert issubclass(ForgedInviteError, InviteError)
    assert issubclass(ExpiredInviteError, InviteError)


def test_new_invites_have_fresh_secrets_and_ids() -> None:
    first, second = make_invite(), make_invite()
    assert first.secret != second.secret
    assert first.invite_id != second.invite_id
    assert len(first.invite_id) == 16
    expected = hashlib.blake2b(first.secret, digest_size=16, person=b"p2pid-invite-id").digest()
    assert first.invite_id == expected
    assert first.secret not in first.invite_id


@pytest.mark.parametrize("secret_bytes", [16, 24, 32])
def test_secret_length_is_chosen_by_the_caller(secret_bytes: int) -> None:
    invite = new_invite(
        InviteKind.KIOSK, IDENTITY, DEVICE_KEY, (), 60, "", NOW, secret_bytes=secret_bytes
    )
    assert len(decode_invite(encode_invite(invite)).secret) == secret_bytes


@pytest.mark.parametrize(
    "call",
    [
        lambda: new_invite(InviteKind.CONTACT, IDENTITY, DEVICE_KEY, (), 0, "", NOW),
        lambda: new_invite(InviteKind.CONTACT, IDENTITY, DEVICE_KEY, (), -5, "", NOW),
        lambda: new_invite(InviteKind.CONTACT, IDENTITY, DEVICE_KEY, (), 2**32, "", NOW),
        lambda: new_invite(InviteKind.CONTACT, IDENTITY, DEVICE_KEY, (), 60, "", NOW, 15),
        lambda: new_invite(InviteKind.CONTACT, IDENTITY, DEVICE_KEY, (), 60, "", NOW, 33),
        lambda: new_invite(InviteKind.CONTACT, IDENTITY, b"short", (), 60, "", NOW),
        lambda: new_invite(InviteKind.CONTACT, IDENTITY, DEVICE_KEY, (HINT_V4,) * 5, 60, "", NOW),
        lambda: new_invite(9, IDENTITY, DEVICE_KEY, (), 60, "", NOW),  # type: ignore[arg-type]
    ],
)
def test_new_invite_refuses_what_cannot_be_encoded(call: Callable[[], Invite]) -> None:
    with pytest.raises(ValueError):
        call()


# Address hints.


@given(st.builds(AddressHint, addresses, ports))
def test_address_hints_round_trip_through_multiaddrs(hint: AddressHint) -> None:
    assert AddressHint.from_multiaddr(hint.to_multiaddr()) == hint


def test_address_hint_multiaddrs() -> None:
    assert HINT_V4.to_multiaddr() == "/ip4/192.168.1.23/tcp/40123"
    assert HINT_V6.to_multiaddr() == "/ip6/fd00::1234:5678:9abc/tcp/4001"
    assert AddressHint.from_multiaddr("/ip6/::1/tcp/1") == AddressHint(ip_address("::1"), 1)


@pytest.mark.parametrize(
    "addr",
    [
        "",
        "/ip4/1.2.3.4",
        "/ip4/1.2.3.4/tcp",
        "/ip4/1.2.3.4/udp/5",
        "/ip4/1.2.3.4/tcp/0",
        "/ip4/1.2.3.4/tcp/65536",
        "/ip4/1.2.3.4/tcp/05",
        "/ip4/1.2.3.4/tcp/+5",
        "/ip4/1.2.3.4/tcp/\u0665",  # ARABIC-INDIC DIGIT FIVE
        "/ip4/1.2.3.4/tcp/5/",
        "/ip4/1.2.3.4/tcp/5/p2p/12D3KooWExample",
        "/ip4/1.2.3.4/udp/5/quic-v1",
        "/ip4/::1/tcp/5",
        "/ip6/1.2.3.4/tcp/5",
        "/ip4/01.2.3.4/tcp/5",
        "/ip4/1.2.3/tcp/5",
        "/ip6/fe80::1%eth0/tcp/5",
        "/dns4/example.com/tcp/5",
        "ip4/1.2.3.4/tcp/5",
    ],
)
def test_only_plain_tcp_multiaddrs_become_hints(addr: str) -> None:
    assert AddressHint.from_multiaddr(addr) is None


def test_address_hints_refuse_bad_ports_and_scoped_addresses() -> None:
    for port in (0, -1, 65536):
        with pytest.raises(ValueError):
            AddressHint(IPv4Address("1.2.3.4"), port)
    with pytest.raises(ValueError, match="scope"):
        AddressHint(IPv6Address("fe80::1%eth0"), 5)


# Layering.


def test_the_codec_imports_only_the_standard_library() -> None:
    tree = ast.parse(Path(invite_module.__file__).read_text())
    imported: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            imported.add(node.module.split(".")[0])
    assert imported <= sys.stdlib_module_names | {"__future__"}
