"""Records the daemon returns and pushes about groups: what the RPC methods `groups`, `group.*`
answer and the `group.*` events. Identities are shown as identity ids, groups as the hex of their
32-byte id (the genesis op's id)."""

from __future__ import annotations

import msgspec

from p2pid.wire.events import Event
from p2pid.wire.messages import MessageView


class GroupMemberView(msgspec.Struct, kw_only=True):
    identity_id: str
    name: str  # my nickname for them if they are a contact, else the name the group gives them
    role: str  # "admin" | "member"
    is_me: bool
    is_contact: bool
    devices: int  # devices of theirs the group's messages go to
    added_by: str  # identity id of the admin who added them (the creator: themselves)
    added_at_ms: int


class GroupSummary(msgspec.Struct, kw_only=True):
    group_id: str  # hex
    name: str
    avatar: str
    my_role: str  # "admin" | "member" | "left" | "removed"
    members: int
    unread: int
    last_message: MessageView | None
    updated_at_ms: int


class GroupView(msgspec.Struct, kw_only=True):
    group_id: str
    name: str
    avatar: str
    my_role: str
    members: list[GroupMemberView]  # admins first (most senior first), then by name
    version: int  # ops in the membership log
    created_at_ms: int


class GroupReceiptView(msgspec.Struct, kw_only=True):
    identity_id: str
    name: str
    state: str  # "pending" | "delivered" | "read"
    at_ms: int | None


class GroupMessageReceipts(msgspec.Struct, kw_only=True):
    group_id: str
    message_id: str
    receipts: list[GroupReceiptView]  # one per other member


class GroupInviteCreated(msgspec.Struct, kw_only=True):
    group_id: str
    invite_id: str
    code: str
    expires_at: int  # unix seconds
    uses: int
    approval: bool  # an admin approves each joiner


class GroupJoinResult(msgspec.Struct, kw_only=True):
    """What scanning a group invite did: joined, or waiting for an admin to approve."""

    state: str  # "joined" | "waiting"
    group: GroupView | None


class GroupJoinRequestView(msgspec.Struct, kw_only=True):
    request_id: str
    group_id: str
    group_name: str
    identity_id: str
    name: str
    requested_at_ms: int


class GroupSyncResult(msgspec.Struct, kw_only=True):
    group_id: str
    ops: int  # membership ops learned
    messages: int  # messages fetched


# -- events ------------------------------------------------------------------------------------


class GroupChanged(Event, tag="group.changed"):
    """A group was created, joined, renamed, or its members or roles changed (or I left or was
    removed: my_role tells)."""

    group_id: str
    name: str
    my_role: str
    added: list[str]  # identity ids
    removed: list[str]


class GroupMessageReceived(Event, tag="group.message_received"):
    group_id: str
    group_name: str
    sender_name: str
    message: MessageView


class GroupMessageSent(Event, tag="group.message_sent"):
    """A message I sent to the group, from this device or another of mine."""

    group_id: str
    group_name: str
    message: MessageView


class GroupMessageStateChanged(Event, tag="group.message_state_changed"):
    group_id: str
    message_ids: list[str]
    state: str  # the message's overall state: delivered (one member has it) | read (all read)


class GroupJoinRequested(Event, tag="group.join_requested"):
    request: GroupJoinRequestView
