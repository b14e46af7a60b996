"""Length-prefixed frames (unsigned LEB128 varint length, then the payload). Sans-IO.

A decoder is fed whatever bytes arrive and returns whole frames; a frame whose declared length is
over the protocol's maximum is refused as soon as its length prefix is read, before its payload.
"""

from __future__ import annotations

MAX_VARINT_BYTES = 10  # enough for any 64-bit length


class FrameError(ValueError):
    """The byte stream is not a valid sequence of frames; the stream must be closed."""


class FrameTooLarge(FrameError):
    pass


def encode_varint(value: int) -> bytes:
    if value < 0:
        raise ValueError("a varint is unsigned")
    out = bytearray()
    while True:
        low_bits = value & 0x7F
        value >>= 7
        if value:
            out.append(low_bits | 0x80)
        else:
            out.append(low_bits)
            return bytes(out)


def decode_varint(data: bytes | bytearray, offset: int = 0) -> tuple[int, int] | None:
    """(value, bytes used) of the varint at offset, or None if it is not complete yet."""
    value = 0
    for index in range(MAX_VARINT_BYTES):
        if offset + index >= len(data):
            return None
        byte = data[offset + index]
        value |= (byte & 0x7F) << (7 * index)
        if not byte & 0x80:
            if index > 0 and byte == 0:
                raise FrameError("non-minimal varint length")
            return value, index + 1
    raise FrameError("varint length longer than 10 bytes")


def encode_frame(payload: bytes, max_size: int) -> bytes:
    if len(payload) > max_size:
        raise FrameTooLarge(f"frame of {len(payload)} bytes is over the maximum {max_size}")
    return encode_varint(len(payload)) + payload


class FrameDecoder:
    """Feed bytes in, get whole frames out."""

    def __init__(self, max_size: int) -> None:
        self.max_size = max_size
        self._buffer = bytearray()
        self._expected: int | None = None

    @property
    def buffered(self) -> int:
        return len(self._buffer)

    def feed(self, data: bytes) -> list[bytes]:
        self._buffer += data
        frames: list[bytes] = []
        while True:
            if self._expected is None:
                header = decode_varint(self._buffer)
                if header is None:
                    return frames
                length, used = header
                if length > self.max_size:
                    raise FrameTooLarge(
                        f"frame of {length} bytes announced, the maximum is {self.max_size}"
                    )
                del self._buffer[:used]
                self._expected = length
            if len(self._buffer) < self._expected:
                return frames
            frames.append(bytes(self._buffer[: self._expected]))
            del self._buffer[: self._expected]
            self._expected = None

    def at_frame_boundary(self) -> bool:
        """True when the stream may end here without cutting a frame short."""
        return self._expected is None and not self._buffer
