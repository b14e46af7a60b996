"""The daemon's RPC methods: typed parameters in, the Node's typed records out."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import msgspec
import trio

from p2pid import __version__
from p2pid.net import NetError
from p2pid.node import Node, NodeError
from p2pid.rpc.protocol import ErrorCode, RpcError
from p2pid.rpc.server import Handler

P = TypeVar("P")
MAX_PING_COUNT = 100
PING_TIMEOUT_SECONDS = 20.0

_NODE_ERROR_CODES = {
    "invalid": ErrorCode.INVALID_PARAMS,
    "not_found": ErrorCode.NOT_FOUND,
    "unreachable": ErrorCode.UNREACHABLE,
}


class NoParams(msgspec.Struct, forbid_unknown_fields=True):
    pass


class PingParams(msgspec.Struct, forbid_unknown_fields=True):
    peer: str
    count: int = 1


class ConnectParams(msgspec.Struct, forbid_unknown_fields=True):
    addr: str


def parse_params(params: dict[str, Any], kind: type[P]) -> P:
    try:
        return msgspec.convert(params, kind)
    except msgspec.ValidationError as error:
        raise RpcError(ErrorCode.INVALID_PARAMS, f"invalid params: {error}") from None


def as_rpc_error(error: NodeError | NetError) -> RpcError:
    if isinstance(error, NodeError):
        return RpcError(_NODE_ERROR_CODES.get(error.kind, ErrorCode.INTERNAL_ERROR), str(error))
    return RpcError(ErrorCode.UNREACHABLE, str(error))


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
    }
    return {name: _translating_errors(handler) for name, handler in methods.items()}


def _translating_errors(handler: Handler) -> Handler:
    async def translated(params: dict[str, Any]) -> Any:
        try:
            return await handler(params)
        except (NodeError, NetError) as error:
            raise as_rpc_error(error) from error

    return translated
