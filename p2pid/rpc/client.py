"""Blocking JSON-RPC client for the CLI. Stdlib sockets only: no trio, no libp2p."""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType
from typing import Any

from p2pid.rpc.protocol import (
    EVENT_METHOD,
    MAX_LINE_BYTES,
    ErrorCode,
    RpcError,
    decode_message,
    request,
    result_or_raise,
)


def daemon_not_running(socket_path: Path) -> RpcError:
    return RpcError(
        ErrorCode.DAEMON_NOT_RUNNING,
        f"no daemon is running for {socket_path.parent} (start one with `p2pid daemon --detach`)",
    )


class BlockingClient:
    def __init__(self, socket_path: Path, timeout: float | None = 30.0) -> None:
        self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._socket.settimeout(timeout)
        try:
            self._socket.connect(str(socket_path))
        except (FileNotFoundError, ConnectionRefusedError):
            self._socket.close()
            raise daemon_not_running(socket_path) from None
        self._reader = self._socket.makefile("rb")
        self._next_id = 1
        self.pending_events: list[dict[str, Any]] = []

    def __enter__(self) -> BlockingClient:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Close; a thread blocked reading events from this client wakes with an error."""
        with contextlib.suppress(OSError):
            self._socket.shutdown(socket.SHUT_RDWR)
        self._reader.close()
        self._socket.close()

    def _read_message_line(self) -> bytes:
        line = self._reader.readline(MAX_LINE_BYTES + 1)
        if not line:
            raise RpcError(ErrorCode.CONNECTION_LOST, "the daemon closed the connection")
        return line

    def call(self, method: str, **params: Any) -> Any:
        request_id = self._next_id
        self._next_id += 1
        self._socket.sendall(request(request_id, method, params))
        while True:
            message = decode_message(self._read_message_line())
            if message.is_notification and message.method == EVENT_METHOD:
                self.pending_events.append(message.params or {})
                continue
            if message.id == request_id:
                return result_or_raise(message)
            if message.id is None and message.error is not None:
                result_or_raise(message)

    def next_event(self) -> dict[str, Any]:
        """The next pushed event (after `call("subscribe")`); RpcError when the daemon is gone."""
        if self.pending_events:
            return self.pending_events.pop(0)
        while True:
            message = decode_message(self._read_message_line())
            if message.is_notification and message.method == EVENT_METHOD:
                return message.params or {}

    def events(self) -> Iterator[dict[str, Any]]:
        """Subscribe and yield pushed events until the daemon closes the connection."""
        self.call("subscribe")
        while True:
            try:
                yield self.next_event()
            except RpcError:
                return
