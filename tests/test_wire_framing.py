import pytest
from hypothesis import given
from hypothesis import strategies as st

from p2pid.wire.framing import (
    FrameDecoder,
    FrameError,
    FrameTooLarge,
    decode_varint,
    encode_frame,
    encode_varint,
)


@given(st.integers(min_value=0, max_value=2**63))
def test_varint_round_trips(value: int) -> None:
    encoded = encode_varint(value)
    assert decode_varint(encoded) == (value, len(encoded))


def test_varint_known_bytes() -> None:
    assert encode_varint(0) == b"\x00"
    assert encode_varint(127) == b"\x7f"
    assert encode_varint(300) == b"\xac\x02"


def test_incomplete_varint_waits_for_more() -> None:
    assert decode_varint(b"\xac") is None


def test_non_minimal_and_overlong_varints_are_refused() -> None:
    with pytest.raises(FrameError, match="non-minimal"):
        decode_varint(b"\x81\x00")
    with pytest.raises(FrameError, match="longer than 10"):
        decode_varint(b"\xff" * 11)


@given(st.lists(st.binary(max_size=300), max_size=20), st.integers(min_value=1, max_value=17))
def test_frames_survive_any_split(payloads: list[bytes], chunk: int) -> None:
    stream = b"".join(encode_frame(payload, 300) for payload in payloads)
    decoder = FrameDecoder(max_size=300)
    decoded: list[bytes] = []
    for start in range(0, len(stream), chunk):
        decoded += decoder.feed(stream[start : start + chunk])
    assert decoded == payloads
    assert decoder.at_frame_boundary()


def test_oversized_frame_is_refused_from_its_header_alone() -> None:
    decoder = FrameDecoder(max_size=1024)
    header_only = encode_varint(1 << 30)
    with pytest.raises(FrameTooLarge):
        decoder.feed(header_only)
    assert decoder.buffered == len(header_only)  # nothing of the payload was waited for


def test_encoder_refuses_oversized_payload() -> None:
    with pytest.raises(FrameTooLarge):
        encode_frame(b"x" * 11, max_size=10)


def test_truncated_stream_is_not_at_a_frame_boundary() -> None:
    decoder = FrameDecoder(max_size=100)
    assert decoder.feed(encode_frame(b"hello", 100)[:-1]) == []
    assert not decoder.at_frame_boundary()
