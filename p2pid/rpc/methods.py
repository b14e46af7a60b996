"""The daemon's RPC methods: typed parameters in, the Node's typed records out."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import msgspec
import trio

from p2pid import __version__
from p2pid.contacts import DEFAULT_INVITE_TTL_SECONDS, ContactsError
from p2pid.crypto.grants import DEFAULT_GRANT_TTL_MS
from p2pid.kiosks import KiosksError
from p2pid.messaging import DEFAULT_PAGE, MessagingError
from p2pid.net import NetError, describe_error
from p2pid.node import Node, NodeError
from p2pid.profile import ProfileError
from p2pid.protocols.contact_join import JoinError
from p2pid.rpc.device_methods import device_methods
from p2pid.rpc.file_methods import file_methods
from p2pid.rpc.group_methods import group_methods
from p2pid.rpc.params import NODE_ERROR_CODES, NoParams, parse_params
from p2pid.rpc.protocol import ErrorCode, RpcError
from p2pid.rpc.server import Handler
from p2pid.verification import VerificationError

MAX_NICKNAME_LENGTH = 64
MAX_PING_COUNT = 100
PING_TIMEOUT_SECONDS = 20.0


class PingParams(msgspec.Struct, forbid_unknown_fields=True):
    peer: str
    count: int = 1


class ConnectParams(msgspec.Struct, forbid_unknown_fields=True):
    addr: str


class InviteParams(msgspec.Struct, forbid_unknown_fields=True):
    uses: int = 1
    ttl: int = DEFAULT_INVITE_TTL_SECONDS


class InvitesParams(msgspec.Struct, forbid_unknown_fields=True):
    all: bool = False


class InviteIdParams(msgspec.Struct, forbid_unknown_fields=True):
    invite_id: str


class JoinParams(msgspec.Struct, forbid_unknown_fields=True):
    code: str


class ContactParams(msgspec.Struct, forbid_unknown_fields=True):
    contact: str


class VerifyParams(msgspec.Struct, forbid_unknown_fields=True):
    contact: str


class VerificationParams(msgspec.Struct, forbid_unknown_fields=True):
    verification_id: str


class ConfirmParams(msgspec.Struct, forbid_unknown_fields=True):
    verification_id: str
    matches: bool


class FieldParams(msgspec.Struct, forbid_unknown_fields=True):
    name: str


class SetFieldParams(msgspec.Struct, forbid_unknown_fields=True):
    name: str
    value: str
    audience: str = "contacts"


class ShareParams(msgspec.Struct, forbid_unknown_fields=True):
    name: str
    contact: str


class RequestParams(msgspec.Struct, forbid_unknown_fields=True):
    peer: str
    note: str = ""


class RequestsParams(msgspec.Struct, forbid_unknown_fields=True):
    state: str | None = "pending"


class RequestIdParams(msgspec.Struct, forbid_unknown_fields=True):
    request_id: int


class RenameParams(msgspec.Struct, forbid_unknown_fields=True):
    contact: str
    nickname: str | None


class SendParams(msgspec.Struct, forbid_unknown_fields=True):
    contact: str
    text: str


class MessagesParams(msgspec.Struct, forbid_unknown_fields=True):
    contact: str
    limit: int = DEFAULT_PAGE
    before: str | None = None
    mark_read: bool = True


class SearchParams(msgspec.Struct, forbid_unknown_fields=True):
    query: str
    contact: str | None = None
    limit: int = DEFAULT_PAGE


class PairParams(msgspec.Struct, forbid_unknown_fields=True):
    code: str | None = None
    short_code: str | None = None
    kiosk: str | None = None  # which pairable kiosk, when several are nearby
    grant_ttl_ms: int = DEFAULT_GRANT_TTL_MS


class KioskParams(msgspec.Struct, forbid_unknown_fields=True):
    kiosk: str


class KioskRevokeParams(msgspec.Struct, forbid_unknown_fields=True):
    kiosk: str
    forget: bool = False  # forget it here even if the kiosk cannot be reached


class KioskInvokeParams(msgspec.Struct, forbid_unknown_fields=True):
    kiosk: str
    routine: str
    args: list[str] = []


class RemoveGuestParams(msgspec.Struct, forbid_unknown_fields=True):
    kiosk: str
    guest: str


class ApproveParams(msgspec.Struct, forbid_unknown_fields=True):
    request_id: str
    accept: bool


class KioskLogParams(msgspec.Struct, forbid_unknown_fields=True):
    limit: int = 100


def as_rpc_error(error: Exception) -> RpcError:
    if isinstance(
        error,
        NodeError | ContactsError | VerificationError | ProfileError | MessagingError | KiosksError,
    ):
        return RpcError(NODE_ERROR_CODES.get(error.kind, ErrorCode.INTERNAL_ERROR), str(error))
    if isinstance(error, JoinError):
        return RpcError(ErrorCode.REFUSED, f"join failed: {error}")
    if isinstance(error, trio.TooSlowError):
        return RpcError(ErrorCode.TIMEOUT, "the other side did not answer in time")
    return RpcError(
        ErrorCode.UNREACHABLE, describe_error(error) if isinstance(error, NetError) else str(error)
    )


def daemon_methods(node: Node, request_stop: Callable[[], None]) -> dict[str, Handler]:
    async def version(params: dict[str, Any]) -> dict[str, str]:
        parse_params(params, NoParams)
        return {"version": __version__}

    async def status(params: dict[str, Any]) -> Any:
        parse_params(params, NoParams)
        return node.status()

    async def peers(params: dict[str, Any]) -> Any:
        parse_params(params, NoParams)
        return await node.peers()

    async def ping(params: dict[str, Any]) -> Any:
        request = parse_params(params, PingParams)
        if not 1 <= request.count <= MAX_PING_COUNT:
            raise RpcError(ErrorCode.INVALID_PARAMS, f"count must be 1..{MAX_PING_COUNT}")
        with trio.move_on_after(PING_TIMEOUT_SECONDS):
            return await node.ping(request.peer, request.count)
        raise RpcError(
            ErrorCode.TIMEOUT, f"no answer from {request.peer} in {PING_TIMEOUT_SECONDS} s"
        )

    async def connect(params: dict[str, Any]) -> Any:
        return await node.connect(parse_params(params, ConnectParams).addr)

    async def invite_create(params: dict[str, Any]) -> Any:
        request = parse_params(params, InviteParams)
        return await node.create_invite(request.uses, request.ttl)

    async def invites(params: dict[str, Any]) -> Any:
        return await node.invites(parse_params(params, InvitesParams).all)

    async def invite_cancel(params: dict[str, Any]) -> Any:
        await node.cancel_invite(parse_params(params, InviteIdParams).invite_id)
        return {"cancelled": True}

    async def join(params: dict[str, Any]) -> Any:
        return await node.join(parse_params(params, JoinParams).code)

    async def contacts(params: dict[str, Any]) -> Any:
        parse_params(params, NoParams)
        return await node.contact_list()

    async def contact_show(params: dict[str, Any]) -> Any:
        return await node.contact(parse_params(params, ContactParams).contact)

    async def contact_rename(params: dict[str, Any]) -> Any:
        request = parse_params(params, RenameParams)
        nickname = request.nickname.strip() if request.nickname is not None else None
        if nickname is not None and not 1 <= len(nickname) <= MAX_NICKNAME_LENGTH:
            raise RpcError(
                ErrorCode.INVALID_PARAMS, f"a nickname is 1..{MAX_NICKNAME_LENGTH} characters"
            )
        return await node.rename_contact(request.contact, nickname)

    async def contact_remove(params: dict[str, Any]) -> Any:
        await node.remove_contact(parse_params(params, ContactParams).contact)
        return {"removed": True}

    async def contact_block(params: dict[str, Any]) -> Any:
        return await node.block_contact(parse_params(params, ContactParams).contact, True)

    async def contact_unblock(params: dict[str, Any]) -> Any:
        return await node.block_contact(parse_params(params, ContactParams).contact, False)

    async def verify_start(params: dict[str, Any]) -> Any:
        return await node.start_verification(parse_params(params, VerifyParams).contact)

    async def verifications(params: dict[str, Any]) -> Any:
        parse_params(params, NoParams)
        return node.verifications.pending()

    async def verify_confirm(params: dict[str, Any]) -> Any:
        request = parse_params(params, ConfirmParams)
        return await node.verifications.confirm(request.verification_id, request.matches)

    async def verify_cancel(params: dict[str, Any]) -> Any:
        verification_id = parse_params(params, VerificationParams).verification_id
        return await node.verifications.cancel(verification_id)

    async def profile_show(params: dict[str, Any]) -> Any:
        parse_params(params, NoParams)
        return await node.profile.show()

    async def profile_set(params: dict[str, Any]) -> Any:
        request = parse_params(params, SetFieldParams)
        return await node.profile.set(request.name, request.value, request.audience)

    async def profile_remove(params: dict[str, Any]) -> Any:
        await node.profile.remove(parse_params(params, FieldParams).name)
        return {"removed": True}

    async def profile_share(params: dict[str, Any]) -> Any:
        request = parse_params(params, ShareParams)
        contact = await node.contacts.find(request.contact)
        return await node.profile.share(request.name, contact.identity_key)

    async def profile_revoke(params: dict[str, Any]) -> Any:
        request = parse_params(params, ShareParams)
        contact = await node.contacts.find(request.contact)
        return await node.profile.revoke(request.name, contact.identity_key)

    async def contact_request(params: dict[str, Any]) -> Any:
        request = parse_params(params, RequestParams)
        peer_id = await node.resolve_peer(request.peer)
        return {"request_id": await node.requests.send(peer_id, request.note), "peer_id": peer_id}

    async def requests(params: dict[str, Any]) -> Any:
        return await node.requests.list(parse_params(params, RequestsParams).state)

    async def request_accept(params: dict[str, Any]) -> Any:
        return await node.requests.accept(parse_params(params, RequestIdParams).request_id)

    async def request_decline(params: dict[str, Any]) -> Any:
        return await node.requests.decline(parse_params(params, RequestIdParams).request_id)

    async def send(params: dict[str, Any]) -> Any:
        request = parse_params(params, SendParams)
        return await node.send(request.contact, request.text)

    async def messages(params: dict[str, Any]) -> Any:
        request = parse_params(params, MessagesParams)
        return await node.messages(
            request.contact, request.limit, request.before, request.mark_read
        )

    async def messages_search(params: dict[str, Any]) -> Any:
        request = parse_params(params, SearchParams)
        return await node.search_messages(request.query, request.contact, request.limit)

    async def messages_read(params: dict[str, Any]) -> Any:
        return {"read": await node.mark_read(parse_params(params, ContactParams).contact)}

    async def conversations(params: dict[str, Any]) -> Any:
        parse_params(params, NoParams)
        return await node.conversations()

    async def messages_stats(params: dict[str, Any]) -> Any:
        parse_params(params, NoParams)
        return await node.message_stats()

    async def pair(params: dict[str, Any]) -> Any:
        request = parse_params(params, PairParams)
        return await node.kiosks.pair(
            request.code, request.short_code, request.kiosk, request.grant_ttl_ms
        )

    async def kiosks(params: dict[str, Any]) -> Any:
        parse_params(params, NoParams)
        return await node.kiosks.list_kiosks()

    async def kiosk_invoke(params: dict[str, Any]) -> Any:
        request = parse_params(params, KioskInvokeParams)
        return await node.kiosks.invoke(request.kiosk, request.routine, request.args)

    async def kiosk_revoke(params: dict[str, Any]) -> Any:
        request = parse_params(params, KioskRevokeParams)
        return await node.kiosks.revoke(request.kiosk, forget=request.forget)

    async def kiosk_guests(params: dict[str, Any]) -> Any:
        return await node.kiosks.guests(parse_params(params, KioskParams).kiosk)

    async def kiosk_remove_guest(params: dict[str, Any]) -> Any:
        request = parse_params(params, RemoveGuestParams)
        return await node.kiosks.remove_guest(request.kiosk, request.guest)

    async def kiosk_reset(params: dict[str, Any]) -> Any:
        return await node.kiosks.reset(parse_params(params, KioskParams).kiosk)

    async def kiosk_approvals(params: dict[str, Any]) -> Any:
        parse_params(params, NoParams)
        return node.kiosks.approvals()

    async def kiosk_approve(params: dict[str, Any]) -> Any:
        request = parse_params(params, ApproveParams)
        return node.kiosks.approve(request.request_id, request.accept)

    async def kiosk_status(params: dict[str, Any]) -> Any:
        """Kiosk side: its codes, owner and guests (for `p2pid kiosk` front ends)."""
        parse_params(params, NoParams)
        if node.kiosk is None:
            raise RpcError(ErrorCode.NOT_FOUND, "this node is not a kiosk (see `p2pid kiosk`)")
        return await node.kiosk.status()

    async def kiosk_log(params: dict[str, Any]) -> Any:
        """Kiosk side: the latest invocations, newest first."""
        request = parse_params(params, KioskLogParams)
        if node.kiosk is None:
            raise RpcError(ErrorCode.NOT_FOUND, "this node is not a kiosk (see `p2pid kiosk`)")
        return await node.kiosk.invocations(max(1, min(request.limit, 1000)))

    async def stop(params: dict[str, Any]) -> dict[str, bool]:
        parse_params(params, NoParams)
        request_stop()
        return {"stopping": True}

    methods: dict[str, Callable[[dict[str, Any]], Awaitable[Any]]] = {
        "version": version,
        "status": status,
        "peers": peers,
        "ping": ping,
        "connect": connect,
        "stop": stop,
        "invite.create": invite_create,
        "invites": invites,
        "invite.cancel": invite_cancel,
        "join": join,
        "contacts": contacts,
        "contact.show": contact_show,
        "contact.rename": contact_rename,
        "contact.remove": contact_remove,
        "contact.block": contact_block,
        "contact.unblock": contact_unblock,
        "verify.start": verify_start,
        "verifications": verifications,
        "verify.confirm": verify_confirm,
        "verify.cancel": verify_cancel,
        "profile.show": profile_show,
        "profile.set": profile_set,
        "profile.remove": profile_remove,
        "profile.share": profile_share,
        "profile.revoke": profile_revoke,
        "contact.request": contact_request,
        "requests": requests,
        "request.accept": request_accept,
        "request.decline": request_decline,
        "send": send,
        "messages": messages,
        "messages.search": messages_search,
        "messages.read": messages_read,
        "messages.stats": messages_stats,
        "conversations": conversations,
        "pair": pair,
        "kiosks": kiosks,
        "kiosk.invoke": kiosk_invoke,
        "kiosk.revoke": kiosk_revoke,
        "kiosk.guests": kiosk_guests,
        "kiosk.remove_guest": kiosk_remove_guest,
        "kiosk.reset": kiosk_reset,
        "kiosk.approvals": kiosk_approvals,
        "kiosk.approve": kiosk_approve,
        "kiosk.status": kiosk_status,
        "kiosk.log": kiosk_log,
    }
    translated = {name: _translating_errors(handler) for name, handler in methods.items()}
    return translated | device_methods(node) | group_methods(node) | file_methods(node)


def _translating_errors(handler: Handler) -> Handler:
    async def translated(params: dict[str, Any]) -> Any:
        try:
            return await handler(params)
        except (
            NodeError,
            NetError,
            ContactsError,
            VerificationError,
            ProfileError,
            JoinError,
            MessagingError,
            KiosksError,
            trio.TooSlowError,
        ) as error:
            raise as_rpc_error(error) from error

    return translated
