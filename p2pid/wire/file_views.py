"""Records the daemon returns and pushes about file transfers: what the RPC methods `files`,
`file.*` answer and the `file.*` events. A transfer is named by the hex of its 16-byte file id."""

from __future__ import annotations

import msgspec

from p2pid.wire.events import Event

# Incoming: offered -> (accepted ->) downloading <-> waiting -> complete | failed | cancelled
# Outgoing: sending (serving chunks to whoever may fetch) -> complete (every recipient has it)
#           | cancelled
TRANSFER_STATES = (
    "offered",  # incoming, not accepted yet
    "downloading",  # incoming, fetching chunks now
    "waiting",  # incoming, accepted; no source reachable now (retried), or paused by an error
    "complete",  # incoming: hash checked, moved into place; outgoing: every recipient has it
    "failed",  # incoming: stopped for good (a wrong hash, a refused file); see `error`
    "cancelled",  # by either side
    "sending",  # outgoing, offered and served
)


class FileTransferView(msgspec.Struct, kw_only=True):
    transfer_id: str  # hex of the file id
    direction: str  # "in" | "out"
    name: str  # the (safe) file name
    size: int
    media_type: str
    state: str  # one of TRANSFER_STATES
    peer_id: str  # identity id of the other person (in: the sender; out: the contact), or ""
    peer_name: str  # what I call them
    group_id: str  # hex of the group, "" for a one-to-one transfer
    group_name: str
    bytes_done: int  # in: verified bytes on disk; out: bytes the recipients fetched
    path: str  # out: the source; in: where the file is (complete) or will be (accepted), or ""
    folder: str  # in: the folder it goes to, "" until accepted
    error: str  # why it failed or is waiting, "" if nothing is wrong
    content_hash: str  # hex: BLAKE3 (derive-key mode) of the chunk digests
    created_at_ms: int
    updated_at_ms: int
    completed_at_ms: int | None
    recipients: int = 0  # out: people it was offered to (the contact, or the other members)
    delivered: int = 0  # out: recipients (people) that reported it complete


class FileSettings(msgspec.Struct, kw_only=True):
    folder: str  # where accepted files go unless `--to` says otherwise
    auto_accept: str  # "none" | "verified" (verified contacts) | "contacts" (any contact)
    auto_accept_max_bytes: int  # larger offers wait for `file accept`


# -- events ------------------------------------------------------------------------------------


class FileOffered(Event, tag="file.offered"):
    """Someone offered me a file (it may have been accepted automatically: see `transfer`)."""

    transfer: FileTransferView


class FileProgress(Event, tag="file.progress"):
    """A transfer moved: published at most a few times a second per transfer."""

    transfer_id: str
    direction: str
    bytes_done: int
    size: int
    rate_bps: float  # bytes per second over the last few seconds
    eta_s: float | None  # None while the rate is unknown


class FileStateChanged(Event, tag="file.state"):
    """A transfer changed state (accepted, complete, failed, cancelled, waiting...)."""

    transfer: FileTransferView
