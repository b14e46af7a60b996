"""The message protocol's records and its sans-IO machines: strict, bounded, fuzzed."""

from __future__ import annotations

import contextlib
import os

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from p2pid.crypto.identity import IdentityKeys
from p2pid.protocols.messaging import (
    BatchReceiver,
    BatchSender,
    DropReason,
    MessageProtocolError,
    check_header,
)
from p2pid.wire.framing import FrameDecoder, FrameTooLarge, encode_varint
from p2pid.wire.messages import (
    MAX_BATCH,
    MAX_BODY_BYTES,
    MAX_FRAME_BYTES,
    MAX_TEXT_BYTES,
    Deliver,
    DeliveryAck,
    DeliveryReceipt,
    Envelope,
    OlmType,
    Payload,
    PayloadError,
    ReadReceipt,
    Result,
    Text,
    check_text,
    decode_envelope,
    decode_payload,
    decode_stream_message,
    encode_envelope,
    encode_payload,
    encode_stream_message,
)

ALICE = IdentityKeys.generate()
BOB = IdentityKeys.generate()


def envelope(**changes: object) -> Envelope:
    fields: dict[str, object] = {
        "message_id": os.urandom(16),
        "sender_identity": ALICE.identity_public_key,
        "sender_device": ALICE.device_public_key,
        "recipient_device": BOB.device_public_key,
        "olm_type": OlmType.PRE_KEY,
        "body": b"ciphertext",
    }
    fields.update(changes)
    return Envelope(**fields)  # type: ignore[arg-type]


def payload(body: object) -> Payload:
    return Payload(
        message_id=os.urandom(16),
        sender_identity=ALICE.identity_public_key,
        recipient_identity=BOB.identity_public_key,
        sent_at_ms=1_700_000_000_000,
        lamport=7,
        body=body,  # type: ignore[arg-type]
    )


def test_envelopes_and_batches_round_trip() -> None:
    one = envelope()
    assert decode_envelope(encode_envelope(one)) == one
    batch = Deliver(envelopes=[one, envelope(olm_type=OlmType.NORMAL)])
    assert decode_stream_message(encode_stream_message(batch)) == batch
    ack = DeliveryAck(results=[Result.STORED, Result.NO_SESSION])
    assert decode_stream_message(encode_stream_message(ack)) == ack


@pytest.mark.parametrize(
    "body",
    [
        Text(text="héllo 👋"),
        DeliveryReceipt(message_ids=[os.urandom(16), os.urandom(16)]),
        ReadReceipt(up_to=os.urandom(16)),
    ],
)
def test_payloads_round_trip(body: object) -> None:
    original = payload(body)
    assert decode_payload(encode_payload(original)) == original


@pytest.mark.parametrize(
    ("changes", "complaint"),
    [
        ({"message_id": b"short"}, "message_id"),
        ({"sender_identity": b"\x00" * 31}, "sender_identity"),
        ({"recipient_device": b"\x00" * 33}, "recipient_device"),
        ({"olm_type": 3}, "olm_type"),
        ({"body": b""}, "body"),
        ({"body": b"x" * (MAX_BODY_BYTES + 1)}, "body"),
    ],
)
def test_malformed_envelopes_are_refused_with_the_field_named(
    changes: dict[str, object], complaint: str
) -> None:
    fields = msgspec.structs.asdict(envelope())
    fields.update(changes)
    with pytest.raises(msgspec.ValidationError, match=complaint):
        decode_envelope(msgspec.msgpack.encode(fields))


def test_batches_are_bounded() -> None:
    too_many = {
        "type": "deliver",
        "envelopes": [msgspec.structs.asdict(envelope())] * (MAX_BATCH + 1),
    }
    with pytest.raises(msgspec.ValidationError):
        decode_stream_message(msgspec.msgpack.encode(too_many))
    with pytest.raises(msgspec.ValidationError):
        decode_stream_message(msgspec.msgpack.encode({"type": "deliver", "envelopes": []}))
    with pytest.raises(msgspec.ValidationError):
        decode_stream_message(msgspec.msgpack.encode({"type": "ack", "results": [9]}))


def test_text_must_be_some_and_bounded() -> None:
    assert check_text("hi") == "hi"
    for bad in ["", "   \n", "x" * (MAX_TEXT_BYTES + 1), "\ud800"]:
        with pytest.raises(PayloadError):
            check_text(bad)
    oversized = encode_payload(payload(Text(text="é" * (MAX_TEXT_BYTES // 2 + 1))))
    with pytest.raises(PayloadError, match="over the maximum"):
        decode_payload(oversized)
    with pytest.raises(msgspec.ValidationError):
        decode_payload(
            msgspec.msgpack.encode(
                {**msgspec.structs.asdict(payload(Text(text="x"))), "lamport": 0}
            )
        )


@given(st.binary(max_size=512))
def test_arbitrary_bytes_decode_or_fail_cleanly(data: bytes) -> None:
    for decode in (decode_stream_message, decode_envelope, decode_payload):
        with contextlib.suppress(msgspec.DecodeError, PayloadError):
            decode(data)


def test_the_header_must_name_this_device_and_the_streams_peer() -> None:
    good = envelope()
    receiver, remote = BOB.device_public_key, ALICE.peer_id
    assert check_header(good, receiver_device=receiver, remote_peer=remote) is None
    misaddressed = envelope(recipient_device=ALICE.device_public_key)
    assert check_header(misaddressed, receiver_device=receiver, remote_peer=remote) == (
        DropReason.MISADDRESSED
    )
    forged = envelope(sender_device=BOB.device_public_key)
    assert check_header(forged, receiver_device=receiver, remote_peer=remote) == (
        DropReason.FORGED_SENDER
    )


def test_sender_and_receiver_machines_pair_batches_with_acks() -> None:
    sender, receiver = BatchSender(), BatchReceiver()
    batch = [envelope(), envelope()]
    frame = sender.send(batch)
    with pytest.raises(MessageProtocolError, match="already waiting"):
        sender.send(batch)
    assert receiver.receive(frame).envelopes == batch
    with pytest.raises(MessageProtocolError, match="before the last one was acknowledged"):
        receiver.receive(frame)
    with pytest.raises(ValueError, match="exactly"):
        receiver.acknowledge([Result.STORED])
    ack = receiver.acknowledge([Result.STORED, Result.DUPLICATE])
    assert sender.receive_ack(ack) == [Result.STORED, Result.DUPLICATE]
    with pytest.raises(MessageProtocolError, match="for no batch"):
        sender.receive_ack(ack)


@pytest.mark.parametrize(
    "reply",
    [
        b"\xc1",
        encode_stream_message(DeliveryAck(results=[Result.STORED])),  # one result for two
        encode_stream_message(Deliver(envelopes=[envelope()])),  # a batch, not an ack
    ],
    ids=["not-msgpack", "one-result-for-two", "a-batch"],
)
def test_the_sender_refuses_acks_that_do_not_fit(reply: bytes) -> None:
    sender = BatchSender()
    sender.send([envelope(), envelope()])
    with pytest.raises(MessageProtocolError):
        sender.receive_ack(reply)


def test_the_receiver_refuses_what_is_not_a_batch() -> None:
    for frame in [
        b"",
        b"\x93\x01\x02",
        encode_stream_message(DeliveryAck(results=[Result.STORED])),
    ]:
        with pytest.raises(MessageProtocolError):
            BatchReceiver().receive(frame)


def test_a_full_batch_fits_a_frame_and_an_oversized_frame_is_refused_on_its_length() -> None:
    biggest = Deliver(
        envelopes=[envelope(body=b"x" * MAX_BODY_BYTES)] * (MAX_FRAME_BYTES // MAX_BODY_BYTES - 1)
    )
    assert len(encode_stream_message(biggest)) <= MAX_FRAME_BYTES
    decoder = FrameDecoder(MAX_FRAME_BYTES)
    with pytest.raises(FrameTooLarge):
        decoder.feed(encode_varint(MAX_FRAME_BYTES + 1))  # no payload needed to refuse it
