"""The JSON-RPC server on a real Unix socket, with the blocking and the asyncio clients."""

import asyncio
import json
import os
import shutil
import socket
import stat
import subprocess
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import trio

from p2pid.events import EventBus
from p2pid.rpc.aio_client import AsyncClient
from p2pid.rpc.client import BlockingClient
from p2pid.rpc.protocol import ErrorCode, RpcError, decode_message
from p2pid.rpc.server import RpcServer
from p2pid.wire.events import PeerConnected, decode_event


async def echo(params: dict[str, Any]) -> Any:
    return params


async def fail(params: dict[str, Any]) -> Any:
    raise RpcError(ErrorCode.NOT_FOUND, "nothing here")


async def crash(params: dict[str, Any]) -> Any:
    raise RuntimeError("boom")


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[tuple[Path, EventBus]]:
    home = tmp_path / "home"
    home.mkdir(mode=0o700)
    path = home / "daemon.sock"
    bus = EventBus()
    methods = {"echo": echo, "fail": fail, "crash": crash}
    async with trio.open_nursery() as nursery:
        await nursery.start(RpcServer(methods, bus).serve, path)
        yield path, bus
        nursery.cancel_scope.cancel()


async def test_socket_is_private(server: tuple[Path, EventBus]) -> None:
    path, _ = server
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700


async def test_blocking_client_calls_and_gets_errors(server: tuple[Path, EventBus]) -> None:
    path, _ = server

    def session() -> tuple[Any, RpcError, RpcError, RpcError]:
        with BlockingClient(path) as client:
            result = client.call("echo", a=1, b=["x"])
            errors = []
            for method in ("fail", "crash", "nope"):
                try:
                    client.call(method)
                except RpcError as error:
                    errors.append(error)
            return result, errors[0], errors[1], errors[2]

    result, not_found, internal, unknown = await trio.to_thread.run_sync(session)
    assert result == {"a": 1, "b": ["x"]}
    assert not_found.code == ErrorCode.NOT_FOUND
    assert internal.code == ErrorCode.INTERNAL_ERROR and "boom" in internal.message
    assert unknown.code == ErrorCode.METHOD_NOT_FOUND


async def test_malformed_lines_get_errors_and_the_connection_survives(
    server: tuple[Path, EventBus],
) -> None:
    path, _ = server

    def session() -> list[dict[str, Any]]:
        with socket.socket(socket.AF_UNIX) as sock:
            sock.connect(str(path))
            reader = sock.makefile("rb")
            replies = []
            for line in (
                b"{not json\n",
                b'{"jsonrpc": "1.0", "id": 1, "method": "echo"}\n',
                b'{"jsonrpc": "2.0", "id": 2, "method": 5}\n',
                b'{"jsonrpc": "2.0", "id": 3, "method": "echo", "params": {"k": 1}}\n',
            ):
                sock.sendall(line)
                replies.append(json.loads(reader.readline()))
            return replies

    parse, version, wrong_type, ok = await trio.to_thread.run_sync(session)
    assert parse["error"]["code"] == ErrorCode.PARSE_ERROR
    assert version["error"]["code"] == ErrorCode.INVALID_REQUEST
    assert wrong_type["error"]["code"] == ErrorCode.INVALID_REQUEST
    assert ok == {"jsonrpc": "2.0", "id": 3, "result": {"k": 1}}


async def test_asyncio_client_gets_results_and_pushed_events(server: tuple[Path, EventBus]) -> None:
    path, bus = server
    subscribed = trio.Event()
    token = trio.lowlevel.current_trio_token()

    async def tui_like_session() -> tuple[Any, dict[str, Any]]:
        client = await AsyncClient.connect(path)
        results = await asyncio.gather(client.call("echo", n=1), client.call("echo", n=2))
        await client.subscribe()
        trio.from_thread.run_sync(subscribed.set, trio_token=token)
        event = await asyncio.wait_for(client.events.get(), timeout=10)
        await client.close()
        return results, event

    async with trio.open_nursery() as nursery:
        outcome: list[Any] = []

        async def run_client() -> None:
            outcome.append(await trio.to_thread.run_sync(asyncio.run, tui_like_session()))

        nursery.start_soon(run_client)
        with trio.fail_after(10):
            await subscribed.wait()
        bus.publish(PeerConnected(at_ms=1, peer_id="12D3KooWexample"))
    results, event = outcome[0]
    assert results == [{"n": 1}, {"n": 2}]
    assert decode_event(event) == PeerConnected(at_ms=1, peer_id="12D3KooWexample")


async def test_missing_daemon_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(RpcError) as caught:
        BlockingClient(tmp_path / "daemon.sock")
    assert caught.value.code == ErrorCode.DAEMON_NOT_RUNNING


NOBODY = 65534
SYSTEM_PYTHON = (
    "/usr/bin/python3"  # the venv's interpreter lives under /root, out of nobody's reach
)
CONNECT_AS_NOBODY = """
import socket, sys
s = socket.socket(socket.AF_UNIX)
try:
    s.connect(sys.argv[1])
except PermissionError:
    print("permission-denied"); raise SystemExit
print(s.makefile("rb").readline().decode().strip())
"""


def connect_as_nobody(path: Path) -> str:
    return subprocess.run(
        [SYSTEM_PYTHON, "-c", CONNECT_AS_NOBODY, str(path)],
        user=NOBODY,
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    ).stdout.strip()


@pytest.mark.skipif(
    os.geteuid() != 0 or not os.path.exists(SYSTEM_PYTHON),
    reason="needs root and a system python to run a client as another uid",
)
async def test_another_uid_is_refused() -> None:
    outer = Path(tempfile.mkdtemp(prefix="p2pid-uid-"))  # under /tmp, reachable by any uid
    home = outer / "home"
    home.mkdir(mode=0o700)
    path = home / "daemon.sock"
    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(RpcServer({"echo": echo}, EventBus()).serve, path)
            os.chmod(outer, 0o711)
            assert await trio.to_thread.run_sync(connect_as_nobody, path) == "permission-denied"
            # Past the file permissions, SO_PEERCRED still refuses the other uid.
            os.chmod(home, 0o711)
            os.chmod(path, 0o666)
            reply = await trio.to_thread.run_sync(connect_as_nobody, path)
            nursery.cancel_scope.cancel()
    finally:
        shutil.rmtree(outer)
    message = decode_message(reply.encode())
    assert message.error is not None and message.error.code == ErrorCode.REFUSED
