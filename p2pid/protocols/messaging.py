"""`/p2pid/msg/1`: batches of envelopes one way, one acknowledgement per batch the other.

Sans-IO machines (`BatchSender`, `BatchReceiver`, `check_header`) and thin trio drivers
(`DeliveryLink` for the sending device, `serve_messages` for the receiving one). The receiver
commits what it accepts before it acknowledges; the sender keeps a batch in its outbox until the
acknowledgement names a final result for each envelope.
"""

from __future__ import annotations

from collections.abc import Sequence
from enum import StrEnum
from typing import Protocol

import msgspec
import trio

from p2pid.crypto.identity import peer_id_from_public_key
from p2pid.net.host import NetHost, Stream, close_quietly, remote_peer_id
from p2pid.protocols.framed import FramedStream
from p2pid.wire.framing import FrameError
from p2pid.wire.messages import (
    MAX_FRAME_BYTES,
    PROTOCOL_ID,
    Deliver,
    DeliveryAck,
    Envelope,
    Result,
    decode_stream_message,
    encode_stream_message,
)

ACK_TIMEOUT_SECONDS = 20.0
OPEN_TIMEOUT_SECONDS = 10.0


class MessageProtocolError(Exception):
    """The other side broke the protocol; the stream is closed."""


class DropReason(StrEnum):
    """Why a receiver refused an envelope (counted per reason)."""

    MALFORMED = "malformed"  # a frame that does not decode: the stream is closed
    MISADDRESSED = "misaddressed"  # for another device
    FORGED_SENDER = "forged_sender"  # the sender device is not the stream's authenticated peer
    NOT_CONTACT = "not_contact"  # the device belongs to no contact of mine (or another identity)
    BLOCKED = "blocked"  # a blocked contact: acknowledged as stored, then dropped
    UNDECRYPTABLE = "undecryptable"  # no session decrypts it: tampered, replayed or state lost
    BAD_PAYLOAD = "bad_payload"  # decrypted, but not a payload p2pid accepts
    FORGED_PAYLOAD = "forged_payload"  # the payload's ids disagree with the envelope's


# -- sans-IO -----------------------------------------------------------------------------------


def check_header(
    envelope: Envelope, *, receiver_device: bytes, remote_peer: str
) -> DropReason | None:
    """What the header alone says: addressed to this device, from the stream's own peer."""
    if envelope.recipient_device != receiver_device:
        return DropReason.MISADDRESSED
    if peer_id_from_public_key(envelope.sender_device) != remote_peer:
        return DropReason.FORGED_SENDER
    return None


class BatchSender:
    """One batch in flight at a time; its acknowledgement must answer every envelope."""

    def __init__(self) -> None:
        self._in_flight: int | None = None

    def send(self, envelopes: Sequence[Envelope]) -> bytes:
        if self._in_flight is not None:
            raise MessageProtocolError("a batch is already waiting for its acknowledgement")
        frame = encode_stream_message(Deliver(envelopes=list(envelopes)))
        self._in_flight = len(envelopes)
        return frame

    def receive_ack(self, frame: bytes) -> list[Result]:
        if self._in_flight is None:
            raise MessageProtocolError("an acknowledgement for no batch")
        try:
            message = decode_stream_message(frame)
        except msgspec.DecodeError as error:
            raise MessageProtocolError(f"malformed acknowledgement: {error}") from None
        if not isinstance(message, DeliveryAck):
            raise MessageProtocolError("expected an acknowledgement, got a batch")
        if len(message.results) != self._in_flight:
            raise MessageProtocolError(
                f"the acknowledgement answers {len(message.results)} envelopes, "
                f"the batch held {self._in_flight}"
            )
        self._in_flight = None
        return list(message.results)


class BatchReceiver:
    """Batches in, one acknowledgement out for each before the next batch."""

    def __init__(self) -> None:
        self._unanswered: int | None = None

    def receive(self, frame: bytes) -> Deliver:
        if self._unanswered is not None:
            raise MessageProtocolError("a new batch before the last one was acknowledged")
        try:
            message = decode_stream_message(frame)
        except msgspec.DecodeError as error:
            raise MessageProtocolError(f"malformed batch: {error}") from None
        if not isinstance(message, Deliver):
            raise MessageProtocolError("expected a batch, got an acknowledgement")
        self._unanswered = len(message.envelopes)
        return message

    def acknowledge(self, results: Sequence[Result]) -> bytes:
        if self._unanswered is None or len(results) != self._unanswered:
            raise ValueError("acknowledge exactly the envelopes of the batch received")
        self._unanswered = None
        return encode_stream_message(DeliveryAck(results=list(results)))


# -- trio drivers ------------------------------------------------------------------------------


class DeliveryLink:
    """A long-lived stream to one device, carrying one batch at a time."""

    def __init__(self, stream: Stream) -> None:
        self._framed = FramedStream(stream, MAX_FRAME_BYTES)
        self._sender = BatchSender()

    @classmethod
    async def open(cls, net: NetHost, peer_id: str) -> DeliveryLink:
        with trio.fail_after(OPEN_TIMEOUT_SECONDS):
            return cls(await net.new_stream(peer_id, [PROTOCOL_ID]))

    async def deliver(self, envelopes: Sequence[Envelope]) -> list[Result]:
        with trio.fail_after(ACK_TIMEOUT_SECONDS):
            await self._framed.send(self._sender.send(envelopes))
            try:
                frame = await self._framed.receive()
            except FrameError as error:
                raise MessageProtocolError(f"no acknowledgement: {error}") from None
        return self._sender.receive_ack(frame)

    async def aclose(self) -> None:
        await close_quietly(self._framed.stream)


class MessageInbox(Protocol):
    async def accept(self, peer_id: str, envelopes: list[Envelope]) -> list[Result]:
        """Commit what is acceptable and say, per envelope, what became of it."""
        ...

    def count_drop(self, peer_id: str, reason: DropReason, count: int) -> None: ...


async def serve_messages(stream: Stream, inbox: MessageInbox) -> None:
    """Answer batches until the sender ends the stream or breaks the protocol."""
    peer_id = remote_peer_id(stream)
    framed = FramedStream(stream, MAX_FRAME_BYTES)
    receiver = BatchReceiver()
    try:
        while True:
            try:
                frame = await framed.receive_or_end()
            except FrameError:
                inbox.count_drop(peer_id, DropReason.MALFORMED, 1)
                return
            if frame is None:
                return
            try:
                batch = receiver.receive(frame)
            except MessageProtocolError:
                inbox.count_drop(peer_id, DropReason.MALFORMED, 1)
                return
            results = await inbox.accept(peer_id, batch.envelopes)
            await framed.send(receiver.acknowledge(results))
    finally:
        await close_quietly(stream)
