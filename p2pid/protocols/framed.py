"""Length-prefixed frames over a libp2p stream: the I/O half of every p2pid protocol."""

from __future__ import annotations

from p2pid.net.host import Stream, StreamEOF, close_write
from p2pid.wire.framing import FrameDecoder, FrameError, encode_frame

READ_CHUNK = 64 * 1024


class StreamClosedEarly(FrameError):
    """The other side ended the stream before a whole frame arrived."""


class FramedStream:
    def __init__(self, stream: Stream, max_frame_bytes: int) -> None:
        self.stream = stream
        self.max_frame_bytes = max_frame_bytes
        self._decoder = FrameDecoder(max_frame_bytes)
        self._ready: list[bytes] = []

    async def send(self, payload: bytes) -> None:
        await self.stream.write(encode_frame(payload, self.max_frame_bytes))

    async def receive(self) -> bytes:
        """The next frame; FrameTooLarge as soon as an oversized length is announced."""
        frame = await self.receive_or_end()
        if frame is None:
            raise StreamClosedEarly("the stream ended before a whole frame arrived")
        return frame

    async def receive_or_end(self) -> bytes | None:
        """The next frame, or None if the other side ended the stream between frames."""
        while not self._ready:
            try:
                chunk = await self.stream.read(READ_CHUNK)
            except StreamEOF:
                chunk = b""
            if not chunk:
                if self._decoder.at_frame_boundary():
                    return None
                raise StreamClosedEarly("the stream ended before a whole frame arrived")
            self._ready.extend(self._decoder.feed(chunk))
        return self._ready.pop(0)

    async def finish(self) -> None:
        """Half-close: this side sends nothing more."""
        await close_write(self.stream)
