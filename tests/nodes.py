"""Real in-process nodes for tests: a NetHost on 127.0.0.1, a real SQLCipher store, mDNS off."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import trio

from p2pid.events import EventBus
from p2pid.home import Home
from p2pid.node import Node, NodeConfig
from p2pid.provision import create_home, unlock_vault_key
from p2pid.store.trio_store import TrioStore
from p2pid.wire.events import Event

LOOPBACK = ("/ip4/127.0.0.1/tcp/0",)
WAIT_SECONDS = 30.0
T = TypeVar("T")


@dataclass
class Running:
    name: str
    node: Node
    events: trio.MemoryReceiveChannel[Event]
    home: Path


@contextlib.asynccontextmanager
async def running_node(
    home: Path, name: str, *, auto_accept: str | None = None
) -> AsyncIterator[Running]:
    """The node of `home` (created on first use), files going to `home/downloads`;
    `auto_accept`: the file auto-accept rule to set before the test sees the node."""
    if not (home / "p2pid.db").exists():
        create_home(Home(home), name, None)
    vault_key = unlock_vault_key(Home(home))
    bus = EventBus()
    config = NodeConfig(
        listen_addrs=LOOPBACK, mdns_enabled=False, files_folder=str(home / "downloads")
    )
    async with (
        TrioStore.open(Home(home).database, vault_key) as store,
        Node.running(store, vault_key, bus, config) as node,
    ):
        if auto_accept is not None:
            await node.files.set_settings(None, auto_accept, None)
        yield Running(name, node, bus.subscribe(), home)


@contextlib.asynccontextmanager
async def running_nodes(
    tmp_path: Path, *names: str, auto_accept: str | None = None
) -> AsyncIterator[list[Running]]:
    async with contextlib.AsyncExitStack() as stack:
        yield [
            await stack.enter_async_context(
                running_node(tmp_path / name.lower(), name, auto_accept=auto_accept)
            )
            for name in names
        ]


async def eventually(
    probe: Callable[[], Awaitable[T]],
    done: Callable[[T], bool],
    seconds: float = WAIT_SECONDS,
    *,
    ignore: tuple[type[Exception], ...] = (),
) -> T:
    """Poll `probe` until `done` holds: the condition is the nodes' committed state, which no
    single event announces (several devices and transactions take part). A probe raising one of
    `ignore` counts as not done yet."""
    with trio.fail_after(seconds):
        while True:
            try:
                value = await probe()
            except ignore:
                pass
            else:
                if done(value):
                    return value
            await trio.sleep(0.05)


async def befriend(a: Running, b: Running) -> None:
    """b joins a's invite; returns once a holds b as a contact."""
    invite = await a.node.create_invite(1, 600)
    await b.node.join(invite.code)
    await eventually(lambda: a.node.contact(b.name), lambda c: c is not None)


async def group_of(admin: Running, name: str, *members: Running) -> str:
    """A group `admin` creates with `members` (each befriended first); its id, once every member
    holds it."""
    for member in members:
        await befriend(admin, member)
    names = [member.name for member in members]
    group = (await admin.node.groups.create(name, name[0], names)).group_id
    for member in members:
        await eventually(
            member.node.groups.list_groups,
            lambda groups: any(g.group_id == group for g in groups),
        )
    return group
