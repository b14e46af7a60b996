"""What every group of RPC methods shares: strict parameter decoding and the error codes the
services' error kinds map to."""

from __future__ import annotations

from typing import Any, TypeVar

import msgspec

from p2pid.rpc.protocol import ErrorCode, RpcError

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
