"""asyncio JSON-RPC client for the TUI: concurrent calls, pushed events on a queue."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path
from typing import Any

from p2pid.rpc.client import daemon_not_running
from p2pid.rpc.protocol import (
    EVENT_METHOD,
    MAX_LINE_BYTES,
    ErrorCode,
    RpcError,
    decode_message,
    request,
    result_or_raise,
)


class AsyncClient:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader = reader
        self._writer = writer
        self._next_id = 1
        self._waiting: dict[int, asyncio.Future[Any]] = {}
        self.events: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._read_task = asyncio.create_task(self._read_loop())

    @classmethod
    async def connect(cls, socket_path: Path) -> AsyncClient:
        try:
            reader, writer = await asyncio.open_unix_connection(
                str(socket_path), limit=MAX_LINE_BYTES
            )
        except (FileNotFoundError, ConnectionRefusedError):
            raise daemon_not_running(socket_path) from None
        return cls(reader, writer)

    async def call(self, method: str, **params: Any) -> Any:
        request_id = self._next_id
        self._next_id += 1
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._waiting[request_id] = future
        try:
            self._writer.write(request(request_id, method, params))
            await self._writer.drain()
            return await future
        finally:  # a caller cancelled while waiting leaves nothing behind for the late answer
            self._waiting.pop(request_id, None)

    async def subscribe(self) -> None:
        await self.call("subscribe")

    async def close(self) -> None:
        self._read_task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._read_task
        self._writer.close()
        with contextlib.suppress(ConnectionError):
            await self._writer.wait_closed()

    async def _read_loop(self) -> None:
        lost = RpcError(ErrorCode.CONNECTION_LOST, "the daemon closed the connection")
        try:
            while line := await self._reader.readline():
                message = decode_message(line)
                if message.is_notification and message.method == EVENT_METHOD:
                    self.events.put_nowait(message.params or {})
                elif isinstance(message.id, int) and message.id in self._waiting:
                    future = self._waiting.pop(message.id)
                    if future.done():
                        continue
                    try:
                        future.set_result(result_or_raise(message))
                    except RpcError as error:
                        future.set_exception(error)
        except (ConnectionError, RpcError) as error:
            lost = error if isinstance(error, RpcError) else lost
        finally:
            for future in self._waiting.values():
                if not future.done():
                    future.set_exception(lost)
            self._waiting.clear()
