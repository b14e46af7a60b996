"""The TUI's line to the daemon: RPC calls and the stream of pushed events.

`DaemonLink` is the real thing (the asyncio RPC client over the home's socket, starting the daemon
for that home if none runs). `Link` is what screens depend on, so snapshot tests can script one
with fixed data: a real daemon's ids and clocks differ on every run.
"""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from p2pid.home import Home
from p2pid.rpc.aio_client import AsyncClient
from p2pid.rpc.protocol import ErrorCode, RpcError


class Link(Protocol):
    async def call(self, method: str, **params: Any) -> Any: ...

    def events(self) -> AsyncIterator[dict[str, Any]]: ...

    async def close(self) -> None: ...


class DaemonLink:
    def __init__(self, client: AsyncClient) -> None:
        self._client = client

    @classmethod
    async def open(
        cls, home: Home, passphrase: str | None = None, daemon: DaemonOptions | None = None
    ) -> DaemonLink:
        """Connect to the home's daemon, starting it first if none runs; subscribed to events."""
        try:
            client = await AsyncClient.connect(home.socket)
        except RpcError as error:
            if error.code != ErrorCode.DAEMON_NOT_RUNNING:
                raise
            await asyncio.to_thread(_start_daemon, home, passphrase, daemon or DaemonOptions())
            client = await AsyncClient.connect(home.socket)
        await client.subscribe()
        return cls(client)

    async def call(self, method: str, **params: Any) -> Any:
        return await self._client.call(method, **params)

    async def events(self) -> AsyncIterator[dict[str, Any]]:
        while True:
            yield await self._client.events.get()

    async def close(self) -> None:
        await self._client.close()


@dataclass(frozen=True)
class DaemonOptions:
    """How the TUI starts a daemon when none runs (tests keep it on loopback, mDNS off)."""

    listen: Sequence[str] = ()
    no_mdns: bool = False


def _start_daemon(home: Home, passphrase: str | None, options: DaemonOptions) -> str:
    from p2pid.launcher import start_detached

    return start_detached(home, options.listen, (), options.no_mdns, passphrase=passphrase)


async def create_identity(home: Home, name: str, passphrase: str | None) -> dict[str, Any]:
    """`p2pid init` in a subprocess: the TUI never opens the store itself."""
    command = [sys.executable, "-m", "p2pid", "--home", str(home.root), "--json", "init"]
    command += ["--name", name]
    environment = dict(os.environ)
    if passphrase:
        command.append("--passphrase")
        environment["P2PID_PASSPHRASE"] = passphrase
    process = await asyncio.create_subprocess_exec(
        *command,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=environment,
    )
    out, err = await process.communicate()
    import json

    document: dict[str, Any] = json.loads(out or b"{}") if out else {}
    if process.returncode != 0:
        error = document.get("error", {}).get("message") or err.decode().strip()
        raise RpcError(ErrorCode.INVALID_PARAMS, error or "init failed")
    return document
