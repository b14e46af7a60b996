"""RPC methods for my own devices: list, approve a new one, revoke one."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, Literal

import msgspec
import trio

from p2pid.device_sync import HistoryChoice
from p2pid.devices import MAX_HISTORY_DAYS, DevicesError
from p2pid.node import Node
from p2pid.rpc.params import NODE_ERROR_CODES, NoParams, parse_params
from p2pid.rpc.protocol import ErrorCode, RpcError
from p2pid.rpc.server import Handler


class ApproveParams(msgspec.Struct, forbid_unknown_fields=True):
    code: str


class ConfirmParams(msgspec.Struct, forbid_unknown_fields=True):
    link_id: str
    accept: bool
    history: Literal["none", "all", "days"] = "all"
    days: int | None = None


class RevokeParams(msgspec.Struct, forbid_unknown_fields=True):
    device: str


def history_choice(history: str, days: int | None) -> HistoryChoice:
    if history == "days":
        if days is None or not 1 <= days <= MAX_HISTORY_DAYS:
            raise RpcError(
                ErrorCode.INVALID_PARAMS,
                f"history 'days' needs days between 1 and {MAX_HISTORY_DAYS}",
            )
        return HistoryChoice("days", days)
    if days is not None:
        raise RpcError(ErrorCode.INVALID_PARAMS, "days goes only with history 'days'")
    return HistoryChoice(history)


def device_methods(node: Node) -> dict[str, Handler]:
    async def devices(params: dict[str, Any]) -> Any:
        parse_params(params, NoParams)
        return await node.devices.list_devices()

    async def approve(params: dict[str, Any]) -> Any:
        return await node.devices.approve(parse_params(params, ApproveParams).code)

    async def confirm(params: dict[str, Any]) -> Any:
        request = parse_params(params, ConfirmParams)
        choice = history_choice(request.history, request.days)
        result = await node.devices.confirm(request.link_id, request.accept, choice)
        return result if result is not None else {"cancelled": True}

    async def revoke(params: dict[str, Any]) -> Any:
        return await node.devices.revoke(parse_params(params, RevokeParams).device)

    methods: dict[str, Callable[[dict[str, Any]], Awaitable[Any]]] = {
        "devices": devices,
        "device.approve": approve,
        "device.approve.confirm": confirm,
        "device.revoke": revoke,
    }
    return {name: _translating(handler) for name, handler in methods.items()}


def _translating(handler: Handler) -> Handler:
    async def translated(params: dict[str, Any]) -> Any:
        try:
            return await handler(params)
        except DevicesError as error:
            raise RpcError(
                NODE_ERROR_CODES.get(error.kind, ErrorCode.INTERNAL_ERROR), str(error)
            ) from error
        except trio.TooSlowError as error:
            raise RpcError(ErrorCode.TIMEOUT, "the other device did not answer in time") from error

    return translated
