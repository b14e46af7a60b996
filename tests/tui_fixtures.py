"""A scripted daemon link for the TUI's snapshot tests.

Snapshots must be byte-identical run after run; a real daemon's identity ids, PeerIds and clocks
differ on every run, so these tests script the daemon's answers with fixed records (the same
shapes the RPC methods return). Behaviour is tested against real daemons in the Pilot tests.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any

from p2pid.home import Home
from p2pid.rpc.protocol import ErrorCode, RpcError

Answer = Any | Callable[..., Any]


def refuse(code: ErrorCode, message: str) -> Callable[..., Any]:
    """An answer that is the daemon's refusal: the call raises RpcError(code, message)."""

    def refused(**params: Any) -> Any:
        raise RpcError(code, message)

    return refused


class ScriptedLink:
    def __init__(self, answers: Mapping[str, Answer]) -> None:
        self.answers = dict(answers)
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()

    async def call(self, method: str, **params: Any) -> Any:
        self.calls.append((method, params))
        if method not in self.answers:
            raise RpcError(ErrorCode.METHOD_NOT_FOUND, f"unscripted method {method}")
        answer = self.answers[method]
        return answer(**params) if callable(answer) else answer

    async def events(self) -> AsyncIterator[dict[str, Any]]:
        while True:
            yield await self.queue.get()

    def push(self, event: dict[str, Any]) -> None:
        self.queue.put_nowait(event)

    async def close(self) -> None:
        pass

    def factory(self) -> Callable[[Home, str | None], Any]:
        async def open_link(home: Home, passphrase: str | None) -> ScriptedLink:
            return self

        return open_link
