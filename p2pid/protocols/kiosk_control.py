"""Kiosk control (`/p2pid/kiosk/1`): one request and one reply per stream.

The person's device sends a request naming its grant (invoke a routine, revoke the grant, or an
owner's operation); the kiosk checks the grant against the device speaking (Noise authenticated
its PeerId) and answers with a result, a guest list, done, or a refusal. The codec is sans-IO
(`ControlClient` / `decode_control_request`); `call` and `serve_control` are its trio drivers.
"""

from __future__ import annotations

import logging
from typing import Protocol

import msgspec
import trio

from p2pid.net.host import NetHost, Stream, remote_peer_id
from p2pid.protocols.framed import FramedStream
from p2pid.wire.kiosk import (
    CONTROL_PROTOCOL_ID,
    MAX_FRAME_BYTES,
    ControlRefused,
    ControlReply,
    ControlRequest,
    KioskWireError,
    Refusal,
    decode_control_reply,
    decode_control_request,
    encode,
)

log = logging.getLogger(__name__)

STEP_TIMEOUT_SECONDS = 15.0
# A routine may run for up to 300 s (routines.MAX_TIMEOUT_S); the reply waits that long.
REPLY_TIMEOUT_SECONDS = 310.0


class ControlError(Exception):
    """The kiosk answered nothing usable."""


class ControlClient:
    """Sans-IO: the person's side of one request."""

    def __init__(self, request: ControlRequest) -> None:
        self.request = request

    def request_bytes(self) -> bytes:
        return encode(self.request)

    @staticmethod
    def receive_reply(frame: bytes) -> ControlReply:
        try:
            return decode_control_reply(frame)
        except (msgspec.DecodeError, KioskWireError, ValueError) as error:
            raise ControlError(f"malformed kiosk reply: {error}") from None


def parse_request(frame: bytes) -> ControlRequest | ControlRefused:
    """Sans-IO: the kiosk's side. A malformed request becomes a refusal to send back."""
    try:
        return decode_control_request(frame)
    except (msgspec.DecodeError, KioskWireError, ValueError) as error:
        return ControlRefused(reason=Refusal.PROTOCOL, message=f"malformed request: {error}")


class ControlDesk(Protocol):
    async def handle(self, peer_id: str, request: ControlRequest) -> ControlReply: ...


async def serve_control(stream: Stream, desk: ControlDesk) -> None:
    framed = FramedStream(stream, MAX_FRAME_BYTES)
    with trio.fail_after(STEP_TIMEOUT_SECONDS):
        parsed = parse_request(await framed.receive())
    reply = (
        parsed
        if isinstance(parsed, ControlRefused)
        else await desk.handle(remote_peer_id(stream), parsed)
    )
    with trio.fail_after(STEP_TIMEOUT_SECONDS):
        await framed.send(encode(reply))
    await stream.close()


async def call(net: NetHost, kiosk_peer_id: str, request: ControlRequest) -> ControlReply:
    client = ControlClient(request)
    stream = await net.new_stream(kiosk_peer_id, [CONTROL_PROTOCOL_ID])
    framed = FramedStream(stream, MAX_FRAME_BYTES)
    try:
        with trio.fail_after(STEP_TIMEOUT_SECONDS):
            await framed.send(client.request_bytes())
        with trio.fail_after(REPLY_TIMEOUT_SECONDS):
            return client.receive_reply(await framed.receive())
    finally:
        await stream.close()
