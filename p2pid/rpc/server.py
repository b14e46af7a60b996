"""The daemon's JSON-RPC 2.0 server on a Unix socket (trio).

The socket is created 0600 inside the 0700 home, and every connection's peer uid (SO_PEERCRED)
must be the daemon's own. Requests on one connection run concurrently; `subscribe` turns on
pushed `event` notifications for that connection.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket as stdlib_socket
import struct
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgspec
import trio

from p2pid.events import EventBus
from p2pid.rpc.protocol import (
    EVENT_METHOD,
    MAX_LINE_BYTES,
    ErrorCode,
    RpcError,
    decode_message,
    error_response,
    notification,
    result_response,
)

if TYPE_CHECKING:
    # trio-typing's stubs (a libp2p dependency) shadow trio's own annotations for mypy.
    from trio_typing import TaskStatus

log = logging.getLogger(__name__)

Handler = Callable[[dict[str, Any]], Awaitable[Any]]


def peer_uid(sock: trio.socket.SocketType) -> int:
    credentials = sock.getsockopt(
        stdlib_socket.SOL_SOCKET, stdlib_socket.SO_PEERCRED, struct.calcsize("3i")
    )
    _pid, uid, _gid = struct.unpack("3i", credentials)
    return int(uid)


async def bind_private_unix_socket(path: Path) -> trio.socket.SocketType:
    """Bind a listening socket readable and writable by its owner only (umask 0o177)."""
    sock = trio.socket.socket(stdlib_socket.AF_UNIX, stdlib_socket.SOCK_STREAM)
    previous_umask = os.umask(0o177)
    try:
        await sock.bind(str(path))
    finally:
        os.umask(previous_umask)
    sock.listen(64)
    return sock


class _Connection:
    def __init__(self, server: RpcServer, stream: trio.SocketStream) -> None:
        self.server = server
        self.stream = stream
        self.send_lock = trio.Lock()
        self.subscribed = False

    async def send(self, data: bytes) -> None:
        async with self.send_lock:
            await self.stream.send_all(data)

    async def serve(self) -> None:
        uid = peer_uid(self.stream.socket)
        if uid != self.server.allowed_uid:
            log.warning("refused an RPC connection from uid %d", uid)
            refusal = RpcError(ErrorCode.REFUSED, f"uid {uid} may not use this daemon")
            await self.send(error_response(None, refusal))
            return
        async with trio.open_nursery() as nursery:
            buffer = bytearray()
            async for chunk in self.stream:
                buffer += chunk
                while (end := buffer.find(b"\n")) >= 0:
                    line = bytes(buffer[:end])
                    del buffer[: end + 1]
                    if line.strip():
                        nursery.start_soon(self.dispatch, line, nursery)
                if len(buffer) > MAX_LINE_BYTES:
                    too_long = RpcError(ErrorCode.PARSE_ERROR, "request line too long")
                    await self.send(error_response(None, too_long))
                    break
            nursery.cancel_scope.cancel()

    async def dispatch(self, line: bytes, nursery: trio.Nursery) -> None:
        request_id: int | str | None = None
        try:
            message = decode_message(line)
            request_id = message.id
            if not message.is_request or message.method is None:
                raise RpcError(ErrorCode.INVALID_REQUEST, "expected a request with an id")
            result = await self.call(message.method, message.params or {}, nursery)
            response = result_response(message.id or 0, msgspec.to_builtins(result))
        except RpcError as error:
            response = error_response(request_id, error)
        except Exception as error:
            log.exception("RPC method failed")
            response = error_response(request_id, RpcError(ErrorCode.INTERNAL_ERROR, str(error)))
        with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
            await self.send(response)

    async def call(self, method: str, params: dict[str, Any], nursery: trio.Nursery) -> Any:
        if method == "subscribe":
            if not self.subscribed:
                self.subscribed = True
                nursery.start_soon(self.forward_events, self.server.events.subscribe())
            return {"subscribed": True}
        handler = self.server.methods.get(method)
        if handler is None:
            raise RpcError(ErrorCode.METHOD_NOT_FOUND, f"no method {method!r}")
        return await handler(params)

    async def forward_events(self, events: trio.MemoryReceiveChannel[Any]) -> None:
        with events:
            async for event in events:
                await self.send(notification(EVENT_METHOD, msgspec.to_builtins(event)))


class RpcServer:
    def __init__(
        self, methods: Mapping[str, Handler], events: EventBus, *, allowed_uid: int | None = None
    ) -> None:
        self.methods = methods
        self.events = events
        self.allowed_uid = os.getuid() if allowed_uid is None else allowed_uid

    async def serve(
        self,
        socket_path: Path,
        *,
        task_status: TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Serve until cancelled. The caller holds the home's lock, so any socket file is stale."""
        socket_path.unlink(missing_ok=True)  # noqa: ASYNC240 - one unlink at start-up
        listener = trio.SocketListener(await bind_private_unix_socket(socket_path))
        try:
            async with listener, trio.open_nursery() as nursery:
                task_status.started()
                while True:
                    stream = await listener.accept()
                    nursery.start_soon(self._serve_connection, stream)
        finally:
            socket_path.unlink(missing_ok=True)  # noqa: ASYNC240

    async def _serve_connection(self, stream: trio.SocketStream) -> None:
        async with stream:
            try:
                await _Connection(self, stream).serve()
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                pass
            except Exception:
                log.exception("RPC connection failed")
