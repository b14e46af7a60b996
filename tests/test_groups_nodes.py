"""Groups between real in-process nodes (real NetHosts on 127.0.0.1, real SQLCipher stores):
create, send, membership changes, rotation on removal, members who are not contacts, catch-up
from another member, bad input from members."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import pytest
import trio

from p2pid.events import EventBus
from p2pid.groups.errors import GroupsError
from p2pid.home import Home
from p2pid.node import Node, NodeConfig
from p2pid.provision import create_home, unlock_vault_key
from p2pid.store.trio_store import TrioStore
from p2pid.wire.events import Event
from p2pid.wire.group_views import GroupSummary

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
async def running_node(home: Path, name: str) -> AsyncIterator[Running]:
    if not (home / "p2pid.db").exists():
        create_home(Home(home), name, None)
    vault_key = unlock_vault_key(Home(home))
    bus = EventBus()
    config = NodeConfig(listen_addrs=LOOPBACK, mdns_enabled=False)
    async with (
        TrioStore.open(Home(home).database, vault_key) as store,
        Node.running(store, vault_key, bus, config) as node,
    ):
        yield Running(name, node, bus.subscribe(), home)


@contextlib.asynccontextmanager
async def running_nodes(tmp_path: Path, *names: str) -> AsyncIterator[list[Running]]:
    async with contextlib.AsyncExitStack() as stack:
        yield [
            await stack.enter_async_context(running_node(tmp_path / name.lower(), name))
            for name in names
        ]


async def befriend(a: Running, b: Running) -> None:
    invite = await a.node.create_invite(1, 600)
    await b.node.join(invite.code)
    await eventually(lambda: a.node.contact(b.name), lambda c: c is not None)


async def eventually(
    probe: Callable[[], Awaitable[T]], done: Callable[[T], bool], seconds: float = WAIT_SECONDS
) -> T:
    """Poll `probe` until `done` holds: the condition is the nodes' committed state, which no
    single event announces (several devices and transactions take part)."""
    with trio.fail_after(seconds):
        while True:
            try:
                value = await probe()
            except GroupsError:
                value = None  # type: ignore[assignment]
            else:
                if done(value):
                    return value
            await trio.sleep(0.05)


async def group_of(who: Running, name: str) -> GroupSummary | None:
    return next((g for g in await who.node.groups.list_groups() if g.name == name), None)


async def texts(who: Running, group: str) -> list[str]:
    page = await who.node.groups.messages(group, 500, None)
    return [m.text for m in page.messages]


async def test_a_group_of_three_chats_and_a_removed_member_reads_nothing_new(
    tmp_path: Path,
) -> None:
    async with running_nodes(tmp_path, "Alice", "Bob", "Carol") as (alice, bob, carol):
        await befriend(alice, bob)
        await befriend(alice, carol)
        view = await alice.node.groups.create("Family", "F", ["Bob", "Carol"])
        assert {m.name for m in view.members} == {"Alice", "Bob", "Carol"}
        assert view.my_role == "admin"
        group = view.group_id
        for member in (bob, carol):
            joined = await eventually(lambda m=member: group_of(m, "Family"), bool)
            assert joined is not None and joined.my_role == "member" and joined.members == 3

        await alice.node.groups.send(group, "hello family")
        for member in (bob, carol):
            await eventually(lambda m=member: texts(m, group), lambda t: t == ["hello family"])
        # Carol is not Bob's contact, yet they read each other.
        await carol.node.groups.send(group, "hi from carol")
        await eventually(lambda: texts(bob, group), lambda t: "hi from carol" in t)
        assert await bob.node.contact_list() == [await bob.node.contact("Alice")]

        await alice.node.groups.remove(group, "Carol")
        await eventually(
            lambda: group_of(carol, "Family"), lambda g: g is not None and g.my_role == "removed"
        )
        await eventually(lambda: bob.node.groups.show(group), lambda v: len(v.members) == 2)
        await alice.node.groups.send(group, "after carol left")
        await eventually(lambda: texts(bob, group), lambda t: "after carol left" in t)
        assert "after carol left" not in await texts(carol, group)
        with pytest.raises(GroupsError, match="no longer a member"):
            await carol.node.groups.send(group, "still here?")
