"""Profile pushes (`/p2pid/profile/1`): one device hands one device of a contact the complete
set of fields that contact may see now.

    sender                                        receiver (a device of a contact)
      |                                             |  remote PeerId -> contact (else: reset,
      |                                             |  nothing read, nothing stored)
      | -- snapshot(message_id, version, fields) -> |  newer than the last applied from this
      |                                             |  contact? replace its fields (commit)
      | <- ack(message_id, status, latest) -------- |

The snapshot is the whole visible set, so a field missing from it was revoked and is deleted.
Versions only grow per sending device (`SenderClock`: milliseconds since the epoch, bumped past
the last used); the receiver applies a snapshot only if its version is above the last one it
applied from that contact (`VersionBook`), so a late or replayed older snapshot changes nothing.
A `stale` ack tells the sender what the receiver holds: if that is ahead of the sender's own
clock (its clock went back across a restart, or another device of the same identity pushed
later), the sender moves its clock past it and pushes again.

`SnapshotSender`, `SnapshotReceiver`, `VersionBook` and `SenderClock` are sans-IO; the trio
drivers `push_snapshot` and `serve_profile` below add the stream.
"""

from __future__ import annotations

import contextlib
import logging
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol

import msgspec
import trio

from p2pid.net import NetError, describe_error
from p2pid.net.host import NetHost, Stream, StreamError, remote_peer_id
from p2pid.protocols.framed import FramedStream
from p2pid.wire.framing import FrameError
from p2pid.wire.profile import (
    MAX_FRAME_BYTES,
    MESSAGE_ID_BYTES,
    PROTOCOL_ID,
    AckStatus,
    ProfileAck,
    ProfileFieldError,
    ProfileSnapshot,
    check_fields,
    decode_message,
    encode_message,
)

log = logging.getLogger(__name__)

STEP_TIMEOUT_SECONDS = 10.0


class ProfileProtocolError(Exception):
    """The other side broke the protocol: malformed, out of order, or inconsistent."""


class ProfilePushError(Exception):
    """A snapshot was not acknowledged; the receiver may or may not hold it."""


def _decode(frame: bytes) -> ProfileSnapshot | ProfileAck:
    try:
        return decode_message(frame)
    except ProfileFieldError as error:
        raise ProfileProtocolError(f"refused profile snapshot: {error}") from None
    except (msgspec.DecodeError, ValueError) as error:
        raise ProfileProtocolError(f"malformed profile message: {error}") from None


def new_snapshot(fields: Mapping[str, str], version: int) -> ProfileSnapshot:
    """A snapshot with a fresh random message id; raises ProfileFieldError on a bad field."""
    check_fields(fields)
    return ProfileSnapshot(
        message_id=secrets.token_bytes(MESSAGE_ID_BYTES), version=version, fields=dict(fields)
    )


class SenderClock:
    """This device's snapshot versions: milliseconds since the epoch, never repeating or going
    back within a process, and moved past any later version a receiver reports."""

    def __init__(self, last: int = 0) -> None:
        self.last = last

    def next(self, now_ms: int) -> int:
        self.last = max(now_ms, self.last + 1)
        return self.last

    def observe(self, version: int) -> None:
        """A receiver holds `version` from this identity: later snapshots must be above it."""
        self.last = max(self.last, version)


@dataclass(frozen=True)
class Applied:
    version: int
    message_id: bytes


class VersionBook:
    """The last snapshot applied from each contact identity. In memory for now: after a restart
    the first snapshot from each contact is applied whatever its version."""

    def __init__(self) -> None:
        self._applied: dict[bytes, Applied] = {}

    def latest(self, identity_key: bytes) -> int:
        applied = self._applied.get(identity_key)
        return 0 if applied is None else applied.version

    def judge(self, identity_key: bytes, snapshot: ProfileSnapshot) -> AckStatus | None:
        """None: apply it. Otherwise the ack to give without storing anything."""
        applied = self._applied.get(identity_key)
        if applied is None or snapshot.version > applied.version:
            return None
        if (snapshot.version, snapshot.message_id) == (applied.version, applied.message_id):
            return AckStatus.DUPLICATE
        return AckStatus.STALE

    def record(self, identity_key: bytes, snapshot: ProfileSnapshot) -> None:
        """After the snapshot's fields were committed."""
        if snapshot.version > self.latest(identity_key):
            self._applied[identity_key] = Applied(snapshot.version, snapshot.message_id)

    def forget(self, identity_key: bytes) -> None:
        self._applied.pop(identity_key, None)


class SnapshotSender:
    """One push of one snapshot on one stream."""

    def __init__(self, snapshot: ProfileSnapshot) -> None:
        self.snapshot = snapshot
        self._state = "start"

    def request(self) -> bytes:
        if self._state != "start":
            raise ProfileProtocolError("the snapshot was already sent")
        self._state = "sent"
        return encode_message(self.snapshot)

    def receive_ack(self, frame: bytes) -> ProfileAck:
        if self._state != "sent":
            raise ProfileProtocolError("no ack expected now")
        self._state = "failed"
        ack = _decode(frame)
        if not isinstance(ack, ProfileAck):
            raise ProfileProtocolError(f"expected an ack, got {type(ack).__name__}")
        if ack.message_id != self.snapshot.message_id:
            raise ProfileProtocolError("the ack is for another snapshot")
        consistent = (
            ack.latest >= self.snapshot.version
            if ack.status is AckStatus.STALE
            else ack.latest == self.snapshot.version
        )
        if not consistent:
            raise ProfileProtocolError(
                f"a {ack.status} ack of version {self.snapshot.version} reports {ack.latest}"
            )
        self._state = "done"
        return ack


class SnapshotReceiver:
    """One snapshot from one contact (`identity_key`, already checked by the caller) on one
    stream: `receive` says whether to store it; after the commit, `applied` gives the ack."""

    def __init__(self, identity_key: bytes, versions: VersionBook) -> None:
        self.identity_key = identity_key
        self.versions = versions
        self._snapshot: ProfileSnapshot | None = None
        self._state = "start"

    def receive(self, frame: bytes) -> ProfileSnapshot | bytes:
        """The snapshot to store (then call `applied`), or the ack to send at once because the
        snapshot is stale or a duplicate: nothing to store."""
        if self._state != "start":
            raise ProfileProtocolError("a snapshot was already received on this stream")
        self._state = "failed"
        message = _decode(frame)
        if not isinstance(message, ProfileSnapshot):
            raise ProfileProtocolError(f"expected a snapshot, got {type(message).__name__}")
        status = self.versions.judge(self.identity_key, message)
        if status is None:
            self._snapshot = message
            self._state = "storing"
            return message
        self._state = "done"
        return encode_message(
            ProfileAck(
                message_id=message.message_id,
                status=status,
                latest=self.versions.latest(self.identity_key),
            )
        )

    def applied(self) -> bytes:
        """The snapshot's fields are committed: record its version, return the ack."""
        if self._state != "storing" or self._snapshot is None:
            raise ProfileProtocolError("no snapshot is being stored")
        self._state = "done"
        self.versions.record(self.identity_key, self._snapshot)
        return encode_message(
            ProfileAck(
                message_id=self._snapshot.message_id,
                status=AckStatus.APPLIED,
                latest=self._snapshot.version,
            )
        )


# -- trio drivers ----------------------------------------------------------------------------


async def push_snapshot(net: NetHost, peer_id: str, snapshot: ProfileSnapshot) -> ProfileAck:
    """Push one snapshot to one device and wait for its ack (STEP_TIMEOUT_SECONDS at most).
    Opens a stream, which connects first if needed. Raises ProfilePushError."""
    sender = SnapshotSender(snapshot)
    try:
        with trio.fail_after(STEP_TIMEOUT_SECONDS):
            stream = await net.new_stream(peer_id, [PROTOCOL_ID])
            try:
                framed = FramedStream(stream, MAX_FRAME_BYTES)
                await framed.send(sender.request())
                return sender.receive_ack(await framed.receive())
            finally:
                with contextlib.suppress(Exception):
                    await stream.close()
    except trio.TooSlowError:
        raise ProfilePushError(f"{peer_id} did not acknowledge the profile in time") from None
    except (NetError, StreamError, FrameError, ProfileProtocolError) as error:
        raise ProfilePushError(
            f"profile push to {peer_id} failed: {describe_error(error)}"
        ) from error


class ProfileInbox(Protocol):
    """What the receiving side needs of the node."""

    versions: VersionBook

    async def sender_identity(self, peer_id: str) -> bytes | None:
        """The identity key of the contact owning device `peer_id`; None for a non-contact or a
        blocked contact."""
        ...

    def receive_lock(self, identity_key: bytes) -> trio.Lock:
        """Held from judging a snapshot of this contact to recording it."""
        ...

    async def store_fields(self, identity_key: bytes, fields: dict[str, str]) -> None:
        """Replace the contact's fields with `fields` and commit."""
        ...


async def serve_profile(stream: Stream, inbox: ProfileInbox) -> None:
    """The receiver's stream handler (registered guarded by NetHost)."""
    peer_id = remote_peer_id(stream)
    identity_key = await inbox.sender_identity(peer_id)
    if identity_key is None:
        log.info("dropped a profile push from %s: not a contact, or blocked", peer_id)
        await stream.reset()
        return
    framed = FramedStream(stream, MAX_FRAME_BYTES)
    receiver = SnapshotReceiver(identity_key, inbox.versions)
    try:
        with trio.fail_after(STEP_TIMEOUT_SECONDS):
            frame = await framed.receive()
        async with inbox.receive_lock(identity_key):
            outcome = receiver.receive(frame)
            if isinstance(outcome, ProfileSnapshot):
                await inbox.store_fields(identity_key, dict(outcome.fields))
                outcome = receiver.applied()
    except (FrameError, ProfileProtocolError, trio.TooSlowError) as error:
        log.info("refused a profile push from %s: %s", peer_id, describe_error(error))
        await stream.reset()
        return
    with trio.fail_after(STEP_TIMEOUT_SECONDS):
        await framed.send(outcome)
    await stream.close()
