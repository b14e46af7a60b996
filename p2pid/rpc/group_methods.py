"""RPC methods for groups: `groups` and `group.*` (create and change groups, messages, receipts,
catching up, invites and join requests)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated, Any

import msgspec

from p2pid.contacts import DEFAULT_INVITE_TTL_SECONDS, MAX_INVITE_TTL_SECONDS, MAX_INVITE_USES
from p2pid.groups.errors import GroupsError
from p2pid.messaging import DEFAULT_PAGE, MAX_PAGE
from p2pid.node import Node
from p2pid.rpc.params import NoParams, parse_params, translating
from p2pid.rpc.server import Handler

PageLimit = Annotated[int, msgspec.Meta(ge=1, le=MAX_PAGE)]
InviteUses = Annotated[int, msgspec.Meta(ge=1, le=MAX_INVITE_USES)]
InviteTtl = Annotated[int, msgspec.Meta(ge=1, le=MAX_INVITE_TTL_SECONDS)]


class CreateParams(msgspec.Struct, forbid_unknown_fields=True):
    name: str
    avatar: str = ""
    members: list[str] = []


class GroupParams(msgspec.Struct, forbid_unknown_fields=True):
    group: str


class AddParams(msgspec.Struct, forbid_unknown_fields=True):
    group: str
    contact: str


class MemberParams(msgspec.Struct, forbid_unknown_fields=True):
    group: str
    member: str


class RenameParams(msgspec.Struct, forbid_unknown_fields=True):
    group: str
    name: str
    avatar: str | None = None  # None: keep the avatar


class SendParams(msgspec.Struct, forbid_unknown_fields=True):
    group: str
    text: str


class MessagesParams(msgspec.Struct, forbid_unknown_fields=True):
    group: str
    limit: PageLimit = DEFAULT_PAGE
    before: str | None = None


class ReceiptsParams(msgspec.Struct, forbid_unknown_fields=True):
    group: str
    message_id: str


class InviteParams(msgspec.Struct, forbid_unknown_fields=True):
    group: str
    uses: InviteUses = 1
    ttl: InviteTtl = DEFAULT_INVITE_TTL_SECONDS
    approval: bool = False


class JoinParams(msgspec.Struct, forbid_unknown_fields=True):
    code: str


class AnswerParams(msgspec.Struct, forbid_unknown_fields=True):
    request_id: str
    accept: bool


def group_methods(node: Node) -> dict[str, Handler]:
    async def groups(params: dict[str, Any]) -> Any:
        parse_params(params, NoParams)
        return await node.groups.list_groups()

    async def create(params: dict[str, Any]) -> Any:
        request = parse_params(params, CreateParams)
        return await node.groups.create(request.name, request.avatar, request.members)

    async def show(params: dict[str, Any]) -> Any:
        return await node.groups.show(parse_params(params, GroupParams).group)

    async def add(params: dict[str, Any]) -> Any:
        request = parse_params(params, AddParams)
        return await node.groups.add(request.group, request.contact)

    async def remove(params: dict[str, Any]) -> Any:
        request = parse_params(params, MemberParams)
        return await node.groups.remove(request.group, request.member)

    async def leave(params: dict[str, Any]) -> Any:
        return await node.groups.leave(parse_params(params, GroupParams).group)

    async def promote(params: dict[str, Any]) -> Any:
        request = parse_params(params, MemberParams)
        return await node.groups.promote(request.group, request.member)

    async def demote(params: dict[str, Any]) -> Any:
        request = parse_params(params, MemberParams)
        return await node.groups.demote(request.group, request.member)

    async def rename(params: dict[str, Any]) -> Any:
        request = parse_params(params, RenameParams)
        return await node.groups.rename(request.group, request.name, request.avatar)

    async def send(params: dict[str, Any]) -> Any:
        request = parse_params(params, SendParams)
        return await node.groups.send(request.group, request.text)

    async def messages(params: dict[str, Any]) -> Any:
        request = parse_params(params, MessagesParams)
        return await node.groups.messages(request.group, request.limit, request.before)

    async def read(params: dict[str, Any]) -> Any:
        return {"read": await node.groups.mark_read(parse_params(params, GroupParams).group)}

    async def receipts(params: dict[str, Any]) -> Any:
        request = parse_params(params, ReceiptsParams)
        return await node.groups.receipts(request.group, request.message_id)

    async def sync(params: dict[str, Any]) -> Any:
        return await node.groups.sync(parse_params(params, GroupParams).group)

    async def invite(params: dict[str, Any]) -> Any:
        request = parse_params(params, InviteParams)
        return await node.groups.create_invite(
            request.group, request.uses, request.ttl, request.approval
        )

    async def join(params: dict[str, Any]) -> Any:
        return await node.groups.join(parse_params(params, JoinParams).code)

    async def requests(params: dict[str, Any]) -> Any:
        parse_params(params, NoParams)
        return await node.groups.join_requests()

    async def approve(params: dict[str, Any]) -> Any:
        request = parse_params(params, AnswerParams)
        view = await node.groups.answer_join(request.request_id, request.accept)
        return view if view is not None else {"refused": True}

    methods: dict[str, Callable[[dict[str, Any]], Awaitable[Any]]] = {
        "groups": groups,
        "group.create": create,
        "group.show": show,
        "group.add": add,
        "group.remove": remove,
        "group.leave": leave,
        "group.promote": promote,
        "group.demote": demote,
        "group.rename": rename,
        "group.send": send,
        "group.messages": messages,
        "group.read": read,
        "group.receipts": receipts,
        "group.sync": sync,
        "group.invite": invite,
        "group.join": join,
        "group.requests": requests,
        "group.approve": approve,
    }
    return {
        name: translating(handler, GroupsError, "no member answered in time")
        for name, handler in methods.items()
    }
