"""What committing file bodies (offers and notices) produced, for the file service to act on once
the transaction is committed; and the refusal of a body."""

from __future__ import annotations

from dataclasses import dataclass, field

from p2pid.protocols.messaging import DropReason
from p2pid.wire.events import Event


class FileRefusal(Exception):
    """A file body this node refuses (the envelope is rejected and counted)."""

    def __init__(self, reason: DropReason, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass
class FileEffects:
    events: list[Event] = field(default_factory=list)
    offered: list[bytes] = field(default_factory=list)  # file ids new here: auto-accept?
    stopped: list[bytes] = field(default_factory=list)  # file ids cancelled: stop their tasks
    delivered: list[bytes] = field(default_factory=list)  # outgoing file ids now complete
    group_receipts_owed: bool = False  # a group offer's line owes its sender a receipt
