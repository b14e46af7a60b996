"""Kiosk ownership across expiry, logout and the owner's devices, and transport failures, between
real in-process nodes (real NetHosts on 127.0.0.1, real SQLCipher stores):

- logging out works past the grant's expiry, and the person's node forgets the kiosk only once
  the kiosk confirmed (or does not know the grant);
- an owner whose grant expired, or whose node lost the record, pairs again and stays owner;
- the owner's other device (linked for real) pairs as owner, its grant replaces the old one for
  good, and the newer device list it hands over shuts a revoked phone out;
- a kiosk that hangs up or cannot be reached gives a clear error, nothing stored.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import trio

from p2pid.contacts import parse_invite_code
from p2pid.crypto.grants import sign_grant
from p2pid.crypto.identity import peer_id_from_public_key
from p2pid.device_sync import HistoryChoice
from p2pid.events import now_ms
from p2pid.home import Home
from p2pid.kiosk.service import KioskService
from p2pid.kiosks import KiosksError
from p2pid.linking import LinkedHome, LinkOptions, link_new_device
from p2pid.net.dialer import DialPolicy
from p2pid.net.host import NetHost, Stream
from p2pid.protocols import kiosk_control, kiosk_pair
from p2pid.protocols.framed import FramedStream
from p2pid.protocols.kiosk_pair import PairRefusedError, PersonPairing
from p2pid.store import kiosk as kiosk_queries
from p2pid.store.kiosk import KioskGrantRow
from p2pid.wire import events
from p2pid.wire.invite import InviteKind
from p2pid.wire.kiosk import (
    CONTROL_PROTOCOL_ID,
    MAX_FRAME_BYTES,
    PAIR_PROTOCOL_ID,
    ControlRefused,
    InvokeResult,
    PairChallenge,
    Refusal,
    RevokeGrant,
    Role,
)
from p2pid.wire.kiosk import Invoke as InvokeRequest
from p2pid.wire.records import SignedDeviceList
from tests.test_kiosk_nodes import LOOPBACK, Running, kiosk_code, kiosk_config, running_node

DAY_MS = 24 * 3600 * 1000
STEP_TIMEOUT = 20.0
TV = "Living room TV"


def quick_dials(person: Running) -> None:
    """Give up dialling a stopped kiosk after 1 s instead of 10 (keeps the tests fast)."""
    person.node.net._dialer.policy = DialPolicy(connect_timeout=1.0, attempt_timeout=1.0)


def service(tv: Running) -> KioskService:
    assert tv.node.kiosk is not None
    return tv.node.kiosk


async def held_grant(tv: Running, person: Running) -> KioskGrantRow | None:
    identity_key = person.node.keys.identity_public_key
    return await service(tv).store.read(lambda c: kiosk_queries.grant_for_identity(c, identity_key))


async def is_revoked(tv: Running, grant_id: bytes) -> bool:
    return await service(tv).store.read(lambda c: kiosk_queries.is_revoked(c, grant_id))


async def call_as(
    net: NetHost, tv: Running, request: InvokeRequest | RevokeGrant
) -> InvokeResult | ControlRefused | object:
    net.add_addrs(tv.node.net.peer_id, tv.node.reachable_addrs())
    with trio.fail_after(STEP_TIMEOUT):
        return await kiosk_control.call(net, tv.node.net.peer_id, request)


# -- logging out past the grant's expiry -----------------------------------------------------------


async def test_an_owner_logs_out_past_the_grants_expiry_and_the_kiosk_is_free_again(
    tmp_path: Path,
) -> None:
    async with (
        running_node(tmp_path / "tv", "TV", kiosk_config()) as tv,
        running_node(tmp_path / "alice", "Alice") as alice,
        running_node(tmp_path / "bob", "Bob") as bob,
    ):
        await alice.node.kiosks.pair(await kiosk_code(tv.node), None)
        row = await alice.node.kiosks.find(TV)
        service(tv)._clock_ms = lambda: row.expires_at + 1
        with pytest.raises(KiosksError, match="grant has expired") as expired:
            await alice.node.kiosks.invoke(TV, "status", [])
        assert expired.value.reason is Refusal.GRANT_EXPIRED
        assert await alice.node.kiosks.list_kiosks() != []  # a refused invoke forgets nothing

        revoked = alice.events.subscribe()
        assert await alice.node.kiosks.revoke(TV) == {"revoked": True}
        assert await alice.node.kiosks.list_kiosks() == []
        assert isinstance(revoked.receive_nowait(), events.KioskRevoked)
        assert (await service(tv).status()).owner is None
        assert await is_revoked(tv, row.grant_id)

        # Unclaimed again: the next person becomes the owner, with no one to ask.
        service(tv)._clock_ms = now_ms
        paired = await bob.node.kiosks.pair(await kiosk_code(tv.node), None)
        assert paired["role"] == "owner"
        # Alice, back, is a guest now (Bob approves), not refused as "the owner".
        async with trio.open_nursery() as nursery:
            requests = bob.events.subscribe()

            async def bob_approves() -> None:
                async for event in requests:
                    if isinstance(event, events.KioskApprovalRequested):
                        bob.node.kiosks.approve(event.request_id, True)
                        return

            nursery.start_soon(bob_approves)
            again = await alice.node.kiosks.pair(await kiosk_code(tv.node), None)
        assert again["role"] == "guest"


async def test_an_owner_whose_grant_expired_or_whose_record_is_gone_pairs_again_as_owner(
    tmp_path: Path,
) -> None:
    async with (
        running_node(tmp_path / "tv", "TV", kiosk_config()) as tv,
        running_node(tmp_path / "alice", "Alice") as alice,
        running_node(tmp_path / "bob", "Bob") as bob,
    ):
        await alice.node.kiosks.pair(await kiosk_code(tv.node), None)
        first = await alice.node.kiosks.find(TV)
        # 31 days on: Alice's 30-day grant has expired, but she still holds the owner's place.
        service(tv)._clock_ms = lambda: now_ms() + 31 * DAY_MS
        with pytest.raises(KiosksError, match="grant has expired"):
            await alice.node.kiosks.invoke(TV, "status", [])
        async with trio.open_nursery() as nursery:
            requests = alice.events.subscribe()

            async def alice_says_no() -> None:
                async for event in requests:
                    if isinstance(event, events.KioskApprovalRequested):
                        alice.node.kiosks.approve(event.request_id, False)
                        return

            nursery.start_soon(alice_says_no)
            with pytest.raises(KiosksError, match="owner said no"):
                await bob.node.kiosks.pair(
                    await kiosk_code(tv.node), None, grant_ttl_ms=60 * DAY_MS
                )

        # Pairing again (with a grant that outlives the moved clock) keeps her the owner.
        paired = await alice.node.kiosks.pair(
            await kiosk_code(tv.node), None, grant_ttl_ms=60 * DAY_MS
        )
        assert paired["role"] == "owner"
        second = await alice.node.kiosks.find(TV)
        assert second.grant_id != first.grant_id and second.role == "owner"
        assert (await alice.node.kiosks.invoke(TV, "reboot", []))["ok"]
        # The replaced grant is refused for good, even though it was never revoked by name.
        assert await is_revoked(tv, first.grant_id)
        reply = await call_as(
            alice.node.net, tv, InvokeRequest(grant_id=first.grant_id, routine="status")
        )
        assert isinstance(reply, ControlRefused) and reply.reason is Refusal.NOT_PAIRED

        # Her node loses its record (the old bug, or a lost store): it asks to be a guest, the
        # kiosk knows her identity and pairs her as owner all the same.
        await alice.node.store.write(
            lambda c: kiosk_queries.delete_paired_kiosk(c, tv.node.net.peer_id)
        )
        paired = await alice.node.kiosks.pair(
            await kiosk_code(tv.node), None, grant_ttl_ms=60 * DAY_MS
        )
        assert paired["role"] == "owner"
        status = await service(tv).status()
        assert status.owner == "Alice" and [p["name"] for p in status.persons] == ["Alice"]
        assert await alice.node.kiosks.guests(TV) == [
            {
                "identity_id": alice.node.keys.identity_id,
                "name": "Alice",
                "role": "owner",
                "paired_at_ms": status.persons[0]["paired_at_ms"],
            }
        ]


async def test_revoke_forgets_the_kiosk_only_once_the_kiosk_confirmed(tmp_path: Path) -> None:
    async with (
        running_node(tmp_path / "alice", "Alice") as alice,
        running_node(tmp_path / "bob", "Bob") as bob,
        trio.open_nursery() as nursery,
    ):
        async with running_node(tmp_path / "tv", "TV", kiosk_config()) as tv:
            await alice.node.kiosks.pair(await kiosk_code(tv.node), None)
            requests = alice.events.subscribe()

            async def alice_approves() -> None:
                async for event in requests:
                    if isinstance(event, events.KioskApprovalRequested):
                        alice.node.kiosks.approve(event.request_id, True)
                        return

            nursery.start_soon(alice_approves)
            await bob.node.kiosks.pair(await kiosk_code(tv.node), None)

            # A kiosk that hangs up on the revoke: an error, and the kiosk is kept.
            async def hang_up(stream: Stream) -> None:
                await FramedStream(stream, MAX_FRAME_BYTES).receive()
                await stream.reset()

            tv.node.net.set_stream_handler(CONTROL_PROTOCOL_ID, hang_up)
            with pytest.raises(KiosksError, match="hung up") as hung_up:
                await bob.node.kiosks.revoke(TV)
            assert hung_up.value.kind == "unreachable"
            with pytest.raises(KiosksError, match="hung up"):
                await bob.node.kiosks.invoke(TV, "status", [])
            assert [k["name"] for k in await bob.node.kiosks.list_kiosks()] == [TV]

        # The kiosk is off: kept too, to retry.
        quick_dials(bob)
        with pytest.raises(KiosksError, match="unreachable") as unreachable:
            await bob.node.kiosks.revoke(TV)
        assert unreachable.value.kind == "unreachable"
        assert [k["name"] for k in await bob.node.kiosks.list_kiosks()] == [TV]

        async with running_node(tmp_path / "tv", "TV", kiosk_config()) as tv:
            for node in (alice, bob):
                node.node.net.add_addrs(tv.node.net.peer_id, tv.node.reachable_addrs())
            # The owner removes Bob; Bob's logout then finds a kiosk that no longer knows his
            # grant: gone either way, so his node forgets it.
            assert await alice.node.kiosks.remove_guest(TV, "Bob") == {"removed": True}
            assert await bob.node.kiosks.revoke(TV) == {"revoked": True}
            assert await bob.node.kiosks.list_kiosks() == []
            # Alice's logout is confirmed by the kiosk.
            assert await alice.node.kiosks.revoke(TV) == {"revoked": True}
            assert await alice.node.kiosks.list_kiosks() == []
            assert (await service(tv).status()).persons == []


# -- the owner's other devices and a lost phone ----------------------------------------------------


@contextlib.asynccontextmanager
async def linked_laptop(tmp_path: Path, phone: Running) -> AsyncIterator[Running]:
    """Link a new home to the phone's identity with the real drivers, then run its node."""
    home = Home(tmp_path / "laptop")
    codes: trio.MemorySendChannel[str]
    codes, code_received = trio.open_memory_channel[str](1)

    def report(event: dict[str, object]) -> None:
        if event["event"] == "code":
            codes.send_nowait(str(event["code"]))

    linked: list[LinkedHome] = []

    async def run_link() -> None:
        options = LinkOptions(device_name="laptop", listen_addrs=LOOPBACK)
        linked.append(await link_new_device(home, options, report))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(run_link)
        with trio.fail_after(STEP_TIMEOUT):
            code = await code_received.receive()
            pending = await phone.node.devices.approve(code)
            await phone.node.devices.confirm(pending.link_id, True, HistoryChoice("none"))
    assert linked[0].identity_id == phone.node.keys.identity_id
    async with running_node(home.root, "Alice") as laptop:
        yield laptop


async def test_the_owners_other_device_pairs_as_owner_and_shuts_a_revoked_phone_out(
    tmp_path: Path,
) -> None:
    async with running_node(tmp_path / "tv", "TV", kiosk_config()) as tv:
        async with running_node(tmp_path / "phone", "Alice") as phone:
            phone_keys = phone.node.keys
            await phone.node.kiosks.pair(await kiosk_code(tv.node), None)
            phone_grant = (await phone.node.kiosks.find(TV)).grant_id
            async with linked_laptop(tmp_path, phone) as laptop:
                assert laptop.node.keys.identity_id == phone_keys.identity_id
                # An invoke from the phone carries its list, which now holds the laptop too.
                assert (await phone.node.kiosks.invoke(TV, "status", []))["ok"]
                held = await held_grant(tv, phone)
                assert held is not None and held.device_list_version == 2
                old_list: SignedDeviceList = phone.node.contacts.own_device_list

        # The phone is lost (offline); the laptop revokes it: device list version 3.
        async with running_node(tmp_path / "laptop", "Alice") as laptop:
            revoked = await laptop.node.devices.revoke(phone_keys.peer_id)
            assert revoked.version == 3

            # The laptop has no record of the kiosk and asks to be a guest: the kiosk knows the
            # identity, pairs it as owner, asks no one, and keeps the newer list.
            assert await laptop.node.kiosks.list_kiosks() == []
            paired = await laptop.node.kiosks.pair(await kiosk_code(tv.node), None)
            assert paired["role"] == "owner"
            held = await held_grant(tv, laptop)
            assert held is not None and held.role == "owner" and held.device_list_version == 3
            assert await is_revoked(tv, phone_grant)
            assert (await laptop.node.kiosks.invoke(TV, "reboot", []))["ok"]
            laptop_grant = (await laptop.node.kiosks.find(TV)).grant_id

            # Whoever holds the phone (its device key, even the identity seed) is shut out.
            async with NetHost.open(phone_keys.device_seed, LOOPBACK) as thief:
                for grant_id, reason in (
                    (phone_grant, Refusal.NOT_PAIRED),  # replaced: refused for good
                    (laptop_grant, Refusal.UNKNOWN_DEVICE),  # not on the list the kiosk holds
                ):
                    for request in (
                        InvokeRequest(grant_id=grant_id, routine="status", device_list=old_list),
                        RevokeGrant(grant_id=grant_id, device_list=old_list),
                    ):
                        reply = await call_as(thief, tv, request)
                        assert isinstance(reply, ControlRefused) and reply.reason is reason
                held = await held_grant(tv, laptop)
                assert held is not None and held.device_list_version == 3  # the old list not taken

                # Pairing again with the old list: refused, even with a grant the seed signs.
                code = await kiosk_code(tv.node)
                invite = parse_invite_code(code, InviteKind.KIOSK)
                kiosk_peer_id = peer_id_from_public_key(invite.device_key)
                thief.add_addrs(kiosk_peer_id, tv.node.reachable_addrs())
                machine = PersonPairing(
                    own_peer_id=thief.peer_id, kiosk_peer_id=kiosk_peer_id, invite=invite
                )

                async def make_request(challenge: PairChallenge) -> bytes:
                    grant = sign_grant(
                        phone_keys.identity_signing_key,
                        kiosk_identity_key=challenge.kiosk_identity_key,
                        kiosk_peer_id=kiosk_peer_id,
                        role=Role.OWNER,
                        now_ms=now_ms(),
                    )
                    return machine.request(grant, old_list, "Alice", [])

                with pytest.raises(
                    PairRefusedError, match=r"\(version 2\) is older than .*\(version 3\)"
                ):
                    await kiosk_pair.pair(thief, machine, make_request)
            held = await held_grant(tv, laptop)
            assert held is not None and held.grant_id == laptop_grant
            assert (await laptop.node.kiosks.invoke(TV, "status", []))["ok"]


# -- transport failures while pairing ------------------------------------------------------------


async def test_a_kiosk_that_hangs_up_or_is_gone_gives_a_clear_pairing_error(
    tmp_path: Path,
) -> None:
    async with running_node(tmp_path / "alice", "Alice") as alice:
        async with running_node(tmp_path / "tv", "TV", kiosk_config()) as tv:

            async def read_hello_then_close(stream: Stream) -> None:
                await FramedStream(stream, MAX_FRAME_BYTES).receive()
                await stream.close()

            async def read_hello_then_reset(stream: Stream) -> None:
                await FramedStream(stream, MAX_FRAME_BYTES).receive()
                await stream.reset()

            for handler in (read_hello_then_close, read_hello_then_reset):
                tv.node.net.set_stream_handler(PAIR_PROTOCOL_ID, handler)
                with pytest.raises(KiosksError, match="hung up before answering") as hung_up:
                    await alice.node.kiosks.pair(await kiosk_code(tv.node), None)
                assert hung_up.value.kind == "refused"
            code = await kiosk_code(tv.node)
        assert await alice.node.kiosks.list_kiosks() == []
        # The kiosk has stopped: its code still parses, but nothing answers there.
        quick_dials(alice)
        with pytest.raises(KiosksError, match="cannot reach the kiosk") as gone:
            await alice.node.kiosks.pair(code, None)
        assert gone.value.kind == "unreachable"
        assert await alice.node.kiosks.list_kiosks() == []


async def test_a_kiosk_gone_for_good_can_be_forgotten_here(tmp_path: Path) -> None:
    async with running_node(tmp_path / "alice", "Alice") as alice:
        async with running_node(tmp_path / "tv", "TV", kiosk_config()) as tv:
            await alice.node.kiosks.pair(await kiosk_code(tv.node), None)
        quick_dials(alice)
        with pytest.raises(KiosksError, match="unreachable"):
            await alice.node.kiosks.revoke(TV)  # without --forget: kept, to retry
        assert [k["name"] for k in await alice.node.kiosks.list_kiosks()] == [TV]
        forgotten = await alice.node.kiosks.revoke(TV, forget=True)
        assert forgotten == {"revoked": False, "forgotten": True}
        assert await alice.node.kiosks.list_kiosks() == []
