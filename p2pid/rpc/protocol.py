"""JSON-RPC 2.0 over a stream socket, one JSON document per line. Shared by server and clients."""

from __future__ import annotations

from enum import IntEnum
from typing import Any

import msgspec

MAX_LINE_BYTES = 1 << 20
EVENT_METHOD = "event"


class ErrorCode(IntEnum):
    PARSE_ERROR = -32700
    INVALID_REQUEST = -32600
    METHOD_NOT_FOUND = -32601
    INVALID_PARAMS = -32602
    INTERNAL_ERROR = -32603
    # p2pid's own codes
    NOT_FOUND = 1001
    UNREACHABLE = 1002
    REFUSED = 1003
    TIMEOUT = 1004
    CONFLICT = 1005
    # client-side only: never sent by the daemon
    DAEMON_NOT_RUNNING = 2001
    CONNECTION_LOST = 2002


class RpcError(Exception):
    def __init__(self, code: int, message: str, data: Any = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.data = data

    def to_dict(self) -> dict[str, Any]:
        error: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.data is not None:
            error["data"] = self.data
        return error


class ErrorObject(msgspec.Struct):
    code: int
    message: str
    data: Any = None


class Message(msgspec.Struct, omit_defaults=True):
    """Any JSON-RPC 2.0 message: a request, a notification, or a response."""

    jsonrpc: str
    id: int | str | None = None
    method: str | None = None
    params: dict[str, Any] | None = None
    result: Any = msgspec.UNSET
    error: ErrorObject | None = None

    @property
    def is_request(self) -> bool:
        return self.method is not None and self.id is not None

    @property
    def is_notification(self) -> bool:
        return self.method is not None and self.id is None

    @property
    def is_response(self) -> bool:
        return self.method is None and self.id is not None


_encoder = msgspec.json.Encoder()


def decode_message(line: bytes) -> Message:
    """Strictly decode one line; raises RpcError(PARSE_ERROR | INVALID_REQUEST)."""
    try:
        document = msgspec.json.decode(line)
    except msgspec.DecodeError as error:
        raise RpcError(ErrorCode.PARSE_ERROR, f"not JSON: {error}") from None
    try:
        message = msgspec.convert(document, Message)
    except msgspec.ValidationError as error:
        raise RpcError(ErrorCode.INVALID_REQUEST, f"not a JSON-RPC message: {error}") from None
    if message.jsonrpc != "2.0":
        raise RpcError(ErrorCode.INVALID_REQUEST, 'jsonrpc must be "2.0"')
    return message


def encode_line(document: Any) -> bytes:
    return _encoder.encode(document) + b"\n"


def request(request_id: int, method: str, params: dict[str, Any] | None) -> bytes:
    return encode_line(
        {"jsonrpc": "2.0", "id": request_id, "method": method, "params": params or {}}
    )


def result_response(request_id: int | str, result: Any) -> bytes:
    return encode_line({"jsonrpc": "2.0", "id": request_id, "result": result})


def error_response(request_id: int | str | None, error: RpcError) -> bytes:
    return encode_line({"jsonrpc": "2.0", "id": request_id, "error": error.to_dict()})


def notification(method: str, params: Any) -> bytes:
    return encode_line({"jsonrpc": "2.0", "method": method, "params": params})


def result_or_raise(message: Message) -> Any:
    if message.error is not None:
        raise RpcError(message.error.code, message.error.message, message.error.data)
    if message.result is msgspec.UNSET:
        raise RpcError(ErrorCode.INVALID_REQUEST, "response has neither result nor error")
    return message.result
