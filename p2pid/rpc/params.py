"""What every group of RPC methods shares: strict parameter decoding and the error codes the
services' error kinds map to."""

from __future__ import annotations

from typing import Any, TypeVar

import msgspec
import trio

from p2pid.net import NetError, describe_error
from p2pid.rpc.protocol import ErrorCode, RpcError
from p2pid.rpc.server import Handler

P = TypeVar("P")

NODE_ERROR_CODES = {
    "invalid": ErrorCode.INVALID_PARAMS,
    "not_found": ErrorCode.NOT_FOUND,
    "unreachable": ErrorCode.UNREACHABLE,
    "refused": ErrorCode.REFUSED,
    "timeout": ErrorCode.TIMEOUT,
    "conflict": ErrorCode.CONFLICT,
}


class NoParams(msgspec.Struct, forbid_unknown_fields=True):
    pass


def parse_params(params: dict[str, Any], kind: type[P]) -> P:
    try:
        return msgspec.convert(params, kind)
    except msgspec.ValidationError as error:
        raise RpcError(ErrorCode.INVALID_PARAMS, f"invalid params: {error}") from None


def translating(handler: Handler, kinded: type[Exception], timeout_message: str) -> Handler:
    """The handler, with a service's errors (`kinded`, which carry a `kind`), network errors and
    timeouts raised as RPC errors."""

    async def translated(params: dict[str, Any]) -> Any:
        try:
            return await handler(params)
        except kinded as error:
            kind = getattr(error, "kind", "")
            raise RpcError(
                NODE_ERROR_CODES.get(kind, ErrorCode.INTERNAL_ERROR), str(error)
            ) from error
        except NetError as error:
            raise RpcError(ErrorCode.UNREACHABLE, describe_error(error)) from error
        except trio.TooSlowError as error:
            raise RpcError(ErrorCode.TIMEOUT, timeout_message) from error

    return translated
