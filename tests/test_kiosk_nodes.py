"""Kiosk pairing and control between real in-process nodes (real NetHosts on 127.0.0.1, real
SQLCipher stores): QR and short-code pairing, guests approved by the owner, invoke, revoke,
lockout, an expired grant (the kiosk's clock is moved past it), restart keeps revocations."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import trio

from p2pid.events import EventBus
from p2pid.home import Home
from p2pid.kiosk.routines import RoutineBook
from p2pid.kiosk.service import KioskConfig
from p2pid.kiosks import KiosksError
from p2pid.node import Node, NodeConfig
from p2pid.provision import create_home, unlock_vault_key
from p2pid.store.trio_store import TrioStore
from p2pid.wire import events

LOOPBACK = ("/ip4/127.0.0.1/tcp/0",)
ROUTINES = """
[routines.echo]
description = "Echo its argument"
command = ["/bin/echo", "{text}"]
args = [{ name = "text", kind = "string" }]
roles = ["owner", "guest"]

[routines.reboot]
description = "Owner only"
command = ["/bin/echo", "rebooting"]
roles = ["owner"]
"""


@dataclass
class Running:
    node: Node
    events: EventBus
    home: Path


@contextlib.asynccontextmanager
async def running_node(
    home: Path, name: str, kiosk: KioskConfig | None = None
) -> AsyncIterator[Running]:
    if not (home / "p2pid.db").exists():
        create_home(Home(home), name, None)
    vault_key = unlock_vault_key(Home(home))
    bus = EventBus()
    config = NodeConfig(listen_addrs=LOOPBACK, mdns_enabled=False, kiosk=kiosk)
    async with (
        TrioStore.open(Home(home).database, vault_key) as store,
        Node.running(store, vault_key, bus, config) as node,
    ):
        yield Running(node, bus, home)


def kiosk_config(**overrides: Any) -> KioskConfig:
    return KioskConfig(name="Living room TV", routines=RoutineBook.parse(ROUTINES), **overrides)


def pairable_via_loopback(person: Node, kiosk: Node) -> None:
    """Stand in for mDNS discovery: the kiosk, advertising kiosk=1, seen on the LAN."""
    from p2pid.node import _Discovered

    person._discovered[kiosk.net.peer_id] = _Discovered(
        tuple(kiosk.reachable_addrs()), kiosk.mdns_fields()
    )


async def kiosk_code(kiosk: Node) -> str:
    assert kiosk.kiosk is not None
    return (await kiosk.kiosk.status()).code


async def short_code(kiosk: Node) -> str:
    assert kiosk.kiosk is not None
    return (await kiosk.kiosk.status()).short_code


async def test_qr_pairing_makes_the_first_person_owner_and_invoke_and_revoke_work(
    tmp_path: Path,
) -> None:
    async with (
        running_node(tmp_path / "tv", "TV", kiosk_config()) as tv,
        running_node(tmp_path / "alice", "Alice") as alice,
    ):
        code = await kiosk_code(tv.node)
        paired = await alice.node.kiosks.pair(code, None)
        assert paired["role"] == "owner" and paired["kiosk_name"] == "Living room TV"
        assert {r["name"] for r in paired["routines"]} == {
            "status",
            "show-message",
            "echo",
            "reboot",
        }
        assert await kiosk_code(tv.node) != code  # rotated after the pairing
        # the old code is void now
        with pytest.raises(KiosksError, match="no longer shown"):
            await alice.node.kiosks.pair(code, None)

        result = await alice.node.kiosks.invoke("Living room TV", "echo", ["; rm -rf / $(id)"])
        assert result["ok"] and result["output"] == "; rm -rf / $(id)\n"
        status = await alice.node.kiosks.invoke("Living", "status", [])
        assert '"owner": "Alice"' in status["output"]
        listed = await alice.node.kiosks.list_kiosks()
        assert listed[0]["health"] == status["output"] and listed[0]["role"] == "owner"

        with pytest.raises(KiosksError, match="no routine named"):
            await alice.node.kiosks.invoke("Living room TV", "nope", [])
        with pytest.raises(KiosksError, match=r"argument|expects"):
            await alice.node.kiosks.invoke("Living room TV", "echo", [])

        assert tv.node.kiosk is not None
        log = await tv.node.kiosk.invocations(10)
        assert [entry["routine"] for entry in log][:2] == ["echo", "nope"]
        assert log[-1]["args"] == ["; rm -rf / $(id)"]

        grant_id = (await alice.node.kiosks.find("Living room TV")).grant_id
        assert await alice.node.kiosks.revoke("Living room TV") == {"revoked": True}
        assert await alice.node.kiosks.list_kiosks() == []
        from p2pid.protocols import kiosk_control
        from p2pid.wire.kiosk import ControlRefused, Invoke, Refusal

        reply = await kiosk_control.call(
            alice.node.net,
            tv.node.net.peer_id,
            Invoke(grant_id=grant_id, routine="status", args=[]),
        )
        assert isinstance(reply, ControlRefused) and reply.reason is Refusal.NOT_PAIRED


async def test_short_code_guest_is_approved_by_the_owner_and_limited_to_guest_routines(
    tmp_path: Path,
) -> None:
    async with (
        running_node(tmp_path / "tv", "TV", kiosk_config()) as tv,
        running_node(tmp_path / "alice", "Alice") as alice,
        running_node(tmp_path / "bob", "Bob") as bob,
        trio.open_nursery() as nursery,
    ):
        await alice.node.kiosks.pair(await kiosk_code(tv.node), None)
        pairable_via_loopback(bob.node, tv.node)
        requests = alice.events.subscribe()

        async def owner_answers() -> None:
            async for event in requests:
                if isinstance(event, events.KioskApprovalRequested):
                    assert event.person_name == "Bob"
                    assert alice.node.kiosks.approvals() == [event]
                    alice.node.kiosks.approve(event.request_id, True)
                    return

        nursery.start_soon(owner_answers)
        paired = await bob.node.kiosks.pair(None, await short_code(tv.node))
        assert paired["role"] == "guest"
        assert {r["name"] for r in paired["routines"]} == {"status", "show-message", "echo"}

        messages = tv.events.subscribe()
        shown = await bob.node.kiosks.invoke("Living room TV", "show-message", ["hello"])
        assert shown["ok"]
        event = messages.receive_nowait()
        while not isinstance(event, events.KioskMessage):
            event = messages.receive_nowait()
        assert event.text == "hello" and event.from_name == "Bob"
        with pytest.raises(KiosksError, match="owner only"):
            await bob.node.kiosks.invoke("Living room TV", "reboot", [])
        with pytest.raises(KiosksError, match="not its owner"):
            await bob.node.kiosks.guests("Living room TV")

        guests = await alice.node.kiosks.guests("Living room TV")
        assert [(g["name"], g["role"]) for g in guests] == [("Alice", "owner"), ("Bob", "guest")]
        assert await alice.node.kiosks.remove_guest("Living room TV", "Bob") == {"removed": True}
        with pytest.raises(KiosksError, match="does not know this grant"):
            await bob.node.kiosks.invoke("Living room TV", "status", [])


async def test_owner_refusal_and_offline_owner_refuse_the_guest(tmp_path: Path) -> None:
    async with (
        running_node(tmp_path / "tv", "TV", kiosk_config()) as tv,
        running_node(tmp_path / "bob", "Bob") as bob,
        trio.open_nursery() as nursery,
    ):
        async with running_node(tmp_path / "alice", "Alice") as alice:
            await alice.node.kiosks.pair(await kiosk_code(tv.node), None)
            requests = alice.events.subscribe()

            async def owner_says_no() -> None:
                async for event in requests:
                    if isinstance(event, events.KioskApprovalRequested):
                        alice.node.kiosks.approve(event.request_id, False)
                        return

            nursery.start_soon(owner_says_no)
            with pytest.raises(KiosksError, match="owner said no"):
                await bob.node.kiosks.pair(await kiosk_code(tv.node), None)
        # Alice's node is gone now
        with pytest.raises(KiosksError, match="owner is offline"):
            await bob.node.kiosks.pair(await kiosk_code(tv.node), None)
        assert await bob.node.kiosks.list_kiosks() == []


async def test_wrong_short_codes_rotate_the_code_then_lock_pairing(tmp_path: Path) -> None:
    config = kiosk_config(attempts_per_code=3, max_failures=5, lockout_s=600)
    async with (
        running_node(tmp_path / "tv", "TV", config) as tv,
        running_node(tmp_path / "mallory", "Mallory") as mallory,
    ):
        pairable_via_loopback(mallory.node, tv.node)
        first = await short_code(tv.node)
        wrong = f"{(int(first) + 1) % 1_000_000:06d}"
        for _ in range(3):
            with pytest.raises(KiosksError, match="wrong short code"):
                await mallory.node.kiosks.pair(None, wrong)
        assert await short_code(tv.node) != first  # a fresh code after three wrong ones
        for _ in range(2):
            with pytest.raises(KiosksError, match="wrong short code"):
                await mallory.node.kiosks.pair(None, wrong)
        # locked now, even with the right code
        with pytest.raises(KiosksError, match=r"locked .*try again in \d+ s"):
            await mallory.node.kiosks.pair(None, await short_code(tv.node))
        assert tv.node.kiosk is not None
        assert (await tv.node.kiosk.status()).locked_for_s > 500
        assert await mallory.node.kiosks.list_kiosks() == []
        # the QR code still works
        assert (await mallory.node.kiosks.pair(await kiosk_code(tv.node), None))["role"] == "owner"


async def test_expired_grant_and_revocation_survive_a_kiosk_restart(tmp_path: Path) -> None:
    async with running_node(tmp_path / "alice", "Alice") as alice:
        async with running_node(tmp_path / "tv", "TV", kiosk_config()) as tv:
            await alice.node.kiosks.pair(await kiosk_code(tv.node), None)
            row = await alice.node.kiosks.find("Living room TV")
            # a short-lived grant, signed by Bob's real identity key is below; here: the kiosk's
            # clock moves past Alice's grant's expiry
            assert tv.node.kiosk is not None
            tv.node.kiosk._clock_ms = lambda: row.expires_at + 1
            with pytest.raises(KiosksError, match="grant has expired"):
                await alice.node.kiosks.invoke("Living room TV", "status", [])
            tv.node.kiosk._clock_ms = lambda: row.expires_at - 10_000
            assert (await alice.node.kiosks.invoke("Living room TV", "status", []))["ok"]
            # revoke, but keep the grant id to replay it after the restart
            await alice.node.kiosks.revoke("Living room TV")
        from p2pid.protocols import kiosk_control
        from p2pid.wire.kiosk import ControlRefused, Invoke, Refusal

        async with running_node(tmp_path / "tv", "TV", kiosk_config()) as tv:
            alice.node.net.add_addrs(tv.node.net.peer_id, tv.node.reachable_addrs())
            reply = await kiosk_control.call(
                alice.node.net,
                tv.node.net.peer_id,
                Invoke(grant_id=row.grant_id, routine="status", args=[]),
            )
            assert isinstance(reply, ControlRefused) and reply.reason is Refusal.NOT_PAIRED
            assert tv.node.kiosk is not None
            status = await tv.node.kiosk.status()
            assert status.owner is None  # Alice revoked herself: the kiosk is unclaimed again


async def test_a_short_lived_grant_is_refused_once_past_its_expiry(tmp_path: Path) -> None:
    """grant_ttl_ms (a real parameter of `pair`) makes a 1.5 s grant, signed by the real key."""
    async with (
        running_node(tmp_path / "tv", "TV", kiosk_config()) as tv,
        running_node(tmp_path / "alice", "Alice") as alice,
    ):
        paired = await alice.node.kiosks.pair(await kiosk_code(tv.node), None, grant_ttl_ms=1500)
        assert (await alice.node.kiosks.invoke("Living room TV", "status", []))["ok"]
        await trio.sleep_until(trio.current_time() + (paired["expires_at_ms"] - _now_ms()) / 1000)
        with pytest.raises(KiosksError, match="grant has expired"):
            await alice.node.kiosks.invoke("Living room TV", "status", [])


def _now_ms() -> int:
    import time

    return int(time.time() * 1000)


async def test_an_expired_kiosk_code_is_refused(tmp_path: Path) -> None:
    async with (
        running_node(tmp_path / "tv", "TV", kiosk_config(code_ttl_s=1)) as tv,
        running_node(tmp_path / "alice", "Alice") as alice,
    ):
        codes = tv.events.subscribe()
        old = await kiosk_code(tv.node)
        async for event in codes:  # the kiosk rotates it when it expires
            if isinstance(event, events.KioskCode) and event.code != old:
                break
        with pytest.raises(KiosksError, match="expired"):
            await alice.node.kiosks.pair(old, None)
        assert await alice.node.kiosks.list_kiosks() == []
