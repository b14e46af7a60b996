"""NetHost against real py-libp2p hosts on 127.0.0.1: connect, identify, ping, custom streams,
Noise-only security, guarded handlers, connection events and a clean close."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import AsyncIterator

import multiaddr
import pytest
import trio
from libp2p import new_host
from libp2p.crypto.ed25519 import create_new_key_pair
from libp2p.host.ping import PING_LENGTH
from libp2p.io.utils import read_exactly
from libp2p.peer.id import ID
from libp2p.peer.peerinfo import PeerInfo
from libp2p.security.insecure.transport import PLAINTEXT_PROTOCOL_ID, InsecureTransport

from p2pid.net import NetError, PingError, StreamOpenError
from p2pid.net.host import (
    IDENTIFY_PROTOCOL_ID,
    PING_PROTOCOL_ID,
    ConnectionEvent,
    NetHost,
    Stream,
    StreamEOF,
    StreamError,
    close_write,
    peer_id_from_seed,
    remote_peer_id,
)

LOOPBACK = ["/ip4/127.0.0.1/tcp/0"]
ECHO = "/p2pid-test/echo/1"
BROKEN = "/p2pid-test/broken/1"
STEP_TIMEOUT = 10


def seed(name: str) -> bytes:
    return hashlib.sha256(name.encode()).digest()


async def echo_until_eof(stream: Stream) -> None:
    try:
        while data := await stream.read(65536):
            await stream.write(data)
    except StreamEOF:
        pass
    await stream.close()


async def read_until_eof(stream: Stream) -> bytes:
    received = b""
    try:
        while chunk := await stream.read(65536):
            received += chunk
    except StreamEOF:
        pass
    return received


async def echo_round_trip(client: NetHost, server: NetHost, payload: bytes) -> bytes:
    stream = await client.new_stream(server.peer_id, [ECHO])
    await stream.write(payload)
    await close_write(stream)
    echoed = await read_until_eof(stream)
    await stream.close()
    return echoed


def introduce(dialer: NetHost, target: NetHost) -> None:
    dialer.add_addrs(target.peer_id, target.listen_addrs())


@pytest.fixture
async def three_hosts() -> AsyncIterator[tuple[NetHost, NetHost, NetHost]]:
    async with (
        NetHost.open(seed("alice"), LOOPBACK) as alice,
        NetHost.open(seed("bob"), LOOPBACK) as bob,
        NetHost.open(seed("carol"), LOOPBACK) as carol,
    ):
        for host in (alice, bob, carol):
            host.set_stream_handler(ECHO, echo_until_eof)
        yield alice, bob, carol


async def test_peer_id_derives_from_the_device_seed() -> None:
    async with NetHost.open(seed("alice"), LOOPBACK) as alice:
        assert alice.peer_id == peer_id_from_seed(seed("alice"))
        assert alice.peer_id.startswith("12D3KooW")  # Ed25519, identity-hashed
    async with NetHost.open(seed("alice"), LOOPBACK) as again:
        assert again.peer_id == alice.peer_id


async def test_listen_addrs_resolve_the_port_and_carry_no_peer_id() -> None:
    async with NetHost.open(seed("alice"), LOOPBACK) as alice:
        [addr] = alice.listen_addrs()
        assert addr.startswith("/ip4/127.0.0.1/tcp/")
        assert int(addr.rsplit("/", 1)[1]) > 0
        assert "/p2p/" not in addr


async def test_three_hosts_connect_identify_ping_and_echo(
    three_hosts: tuple[NetHost, NetHost, NetHost],
) -> None:
    alice, bob, carol = three_hosts
    pairs = [(alice, bob), (alice, carol), (bob, carol)]
    with trio.fail_after(STEP_TIMEOUT):
        for dialer, target in pairs:
            introduce(dialer, target)
            await dialer.connect(target.peer_id)

        assert sorted(alice.connected_peers()) == sorted([bob.peer_id, carol.peer_id])
        assert sorted(carol.connected_peers()) == sorted([alice.peer_id, bob.peer_id])

        for dialer, target in pairs:
            info = await dialer.identify(target.peer_id)
            assert info.peer_id == target.peer_id
            assert info.agent_version.startswith("py-libp2p/")
            assert {PING_PROTOCOL_ID, IDENTIFY_PROTOCOL_ID, ECHO} <= set(info.protocols)
            assert list(info.listen_addrs) == target.listen_addrs()
            assert dialer.identify_info(target.peer_id) == info

            assert 0 < await dialer.ping(target.peer_id) < 1
            assert 0 < await target.ping(dialer.peer_id) < 1  # the other way round

            payload = f"{dialer.peer_id} -> {target.peer_id}".encode() * 1000
            assert await echo_round_trip(dialer, target, payload) == payload
            assert await echo_round_trip(target, dialer, payload) == payload


async def test_repeated_pings_reuse_one_stream_and_survive_a_reconnect(
    three_hosts: tuple[NetHost, NetHost, NetHost],
) -> None:
    alice, bob, _ = three_hosts
    introduce(alice, bob)
    with trio.fail_after(STEP_TIMEOUT):
        round_trips = [await alice.ping(bob.peer_id) for _ in range(20)]
        assert all(0 < rtt < 1 for rtt in round_trips)

        events = alice.connection_events()
        await alice.disconnect(bob.peer_id)
        assert await events.receive() == ConnectionEvent(bob.peer_id, connected=False)

        assert 0 < await alice.ping(bob.peer_id) < 1  # redials, opens a new ping stream
        assert await events.receive() == ConnectionEvent(bob.peer_id, connected=True)


async def test_ping_retries_once_when_the_kept_stream_was_closed(
    three_hosts: tuple[NetHost, NetHost, NetHost],
) -> None:
    alice, bob, _ = three_hosts

    async def one_pong_then_close(stream: Stream) -> None:
        await stream.write(await read_exactly(stream, PING_LENGTH))
        await stream.close()  # like the built-in responder after 10 s idle

    bob.set_stream_handler(PING_PROTOCOL_ID, one_pong_then_close)
    introduce(alice, bob)
    with trio.fail_after(STEP_TIMEOUT):
        for _ in range(3):
            assert 0 < await alice.ping(bob.peer_id) < 1


async def test_a_wrong_pong_is_a_ping_error(
    three_hosts: tuple[NetHost, NetHost, NetHost],
) -> None:
    alice, bob, _ = three_hosts

    async def wrong_pong(stream: Stream) -> None:
        await read_exactly(stream, PING_LENGTH)
        await stream.write(bytes(PING_LENGTH))

    bob.set_stream_handler(PING_PROTOCOL_ID, wrong_pong)
    introduce(alice, bob)
    with trio.fail_after(STEP_TIMEOUT), pytest.raises(PingError, match="does not match"):
        await alice.ping(bob.peer_id)


async def test_new_stream_connects_first_and_reports_unsupported_protocols(
    three_hosts: tuple[NetHost, NetHost, NetHost],
) -> None:
    alice, bob, _ = three_hosts
    introduce(alice, bob)
    with trio.fail_after(STEP_TIMEOUT):
        stream = await alice.new_stream(bob.peer_id, ["/nobody/speaks/this", ECHO])
        assert stream.get_protocol() == ECHO
        await stream.close()

        with pytest.raises(StreamOpenError, match="/nobody/speaks/this"):
            await alice.new_stream(bob.peer_id, ["/nobody/speaks/this"])


async def test_a_plaintext_only_host_is_refused() -> None:
    key_pair = create_new_key_pair(seed("mallory"))
    mallory = new_host(
        key_pair=key_pair,
        sec_opt={PLAINTEXT_PROTOCOL_ID: InsecureTransport(key_pair)},
    )
    async with (
        NetHost.open(seed("alice"), LOOPBACK) as alice,
        NetHost.open(seed("bob"), LOOPBACK) as bob,
        mallory.run(listen_addrs=[multiaddr.Multiaddr(LOOPBACK[0])]),
    ):
        try:
            target = PeerInfo(
                ID.from_base58(alice.peer_id),
                [multiaddr.Multiaddr(addr) for addr in alice.listen_addrs()],
            )
            with trio.fail_after(STEP_TIMEOUT):
                with pytest.raises(Exception, match="unable to connect") as refused:
                    await mallory.connect(target)
                assert "failed to negotiate the secure protocol" in repr(refused.value.__cause__)
                assert alice.connected_peers() == []

                introduce(bob, alice)  # alice still serves Noise peers
                assert 0 < await bob.ping(alice.peer_id) < 1
        finally:
            with trio.CancelScope(shield=True):
                await mallory.close()


async def test_a_raising_handler_does_not_kill_the_host(
    three_hosts: tuple[NetHost, NetHost, NetHost],
    caplog: pytest.LogCaptureFixture,
) -> None:
    alice, bob, _ = three_hosts
    handler_ran = trio.Event()

    async def broken(stream: Stream) -> None:
        await stream.read(100)
        handler_ran.set()
        raise RuntimeError("handler bug")

    bob.set_stream_handler(BROKEN, broken)
    introduce(alice, bob)
    with trio.fail_after(STEP_TIMEOUT), caplog.at_level(logging.ERROR, "p2pid.net"):
        for _ in range(3):
            stream = await alice.new_stream(bob.peer_id, [BROKEN])
            await stream.write(b"trigger")
            with pytest.raises(StreamError):
                await stream.read(100)  # the guard reset the stream
            await handler_ran.wait()

        assert 0 < await alice.ping(bob.peer_id) < 1
        assert await echo_round_trip(alice, bob, b"still here") == b"still here"
        assert bob.connected_peers() == [alice.peer_id]

    failures = [r for r in caplog.records if "handler failed" in r.getMessage()]
    assert len(failures) == 3
    assert all(r.exc_info and isinstance(r.exc_info[1], RuntimeError) for r in failures)


async def test_handlers_see_the_remote_peer_id(
    three_hosts: tuple[NetHost, NetHost, NetHost],
) -> None:
    alice, bob, _ = three_hosts
    seen: list[str] = []

    async def whoami(stream: Stream) -> None:
        seen.append(remote_peer_id(stream))
        await stream.write(remote_peer_id(stream).encode())
        await stream.close()

    bob.set_stream_handler("/p2pid-test/whoami/1", whoami)
    introduce(alice, bob)
    with trio.fail_after(STEP_TIMEOUT):
        stream = await alice.new_stream(bob.peer_id, ["/p2pid-test/whoami/1"])
        assert await read_until_eof(stream) == alice.peer_id.encode()
    assert seen == [alice.peer_id]


async def test_connection_events_report_transitions_on_both_sides(
    three_hosts: tuple[NetHost, NetHost, NetHost],
) -> None:
    alice, bob, _ = three_hosts
    alice_events, bob_events = alice.connection_events(), bob.connection_events()
    introduce(alice, bob)
    with trio.fail_after(STEP_TIMEOUT):
        await alice.connect(bob.peer_id)
        await alice.connect(bob.peer_id)  # already connected: no new event
        assert await alice_events.receive() == ConnectionEvent(bob.peer_id, True)
        assert await bob_events.receive() == ConnectionEvent(alice.peer_id, True)

        await bob.disconnect(alice.peer_id)
        assert await alice_events.receive() == ConnectionEvent(bob.peer_id, False)
        assert await bob_events.receive() == ConnectionEvent(alice.peer_id, False)

    await alice_events.aclose()  # unsubscribes; later events go to the others only
    with trio.fail_after(STEP_TIMEOUT):
        await alice.connect(bob.peer_id)
        assert await bob_events.receive() == ConnectionEvent(alice.peer_id, True)


async def test_clean_close_releases_the_port() -> None:
    async with (
        NetHost.open(seed("alice"), LOOPBACK) as alice,
        NetHost.open(seed("bob"), LOOPBACK) as bob,
    ):
        introduce(alice, bob)
        with trio.fail_after(STEP_TIMEOUT):
            assert 0 < await alice.ping(bob.peer_id) < 1  # live connection and streams
        [bob_addr] = bob.listen_addrs()

    port = int(bob_addr.rsplit("/", 1)[1])
    listeners = await trio.open_tcp_listeners(port, host="127.0.0.1")
    for listener in listeners:
        await listener.aclose()
    async with NetHost.open(seed("bob"), [bob_addr]) as bob_again:
        assert bob_again.listen_addrs() == [bob_addr]


async def test_listening_on_a_taken_port_fails_clearly() -> None:
    async with NetHost.open(seed("alice"), LOOPBACK) as alice:
        [taken] = alice.listen_addrs()
        with pytest.raises(NetError, match=f"cannot listen on {taken}"):
            async with NetHost.open(seed("bob"), [taken]):
                pass


async def test_exceptions_leave_the_host_context_unwrapped() -> None:
    with pytest.raises(KeyError, match="from the body"):
        async with NetHost.open(seed("alice"), LOOPBACK):
            raise KeyError("from the body")


async def test_add_addrs_strips_our_peer_id_and_rejects_another() -> None:
    async with NetHost.open(seed("alice"), LOOPBACK) as alice:
        bob = peer_id_from_seed(seed("bob"))
        alice.add_addrs(bob, [f"/ip4/127.0.0.1/tcp/4001/p2p/{bob}", "/ip4/0.0.0.0/tcp/4002"])
        assert alice.known_addrs(bob) == ["/ip4/127.0.0.1/tcp/4001"]

        carol = peer_id_from_seed(seed("carol"))
        with pytest.raises(ValueError, match="names peer"):
            alice.add_addrs(bob, [f"/ip4/127.0.0.1/tcp/4001/p2p/{carol}"])
        with pytest.raises(ValueError, match="not a multiaddr"):
            alice.add_addrs(bob, ["127.0.0.1:4001"])
        with pytest.raises(ValueError, match="not a PeerId"):
            alice.add_addrs("bob", ["/ip4/127.0.0.1/tcp/4001"])


async def test_libp2p_logs_reach_the_p2pid_logging_tree(caplog: pytest.LogCaptureFixture) -> None:
    async with NetHost.open(seed("alice"), LOOPBACK), NetHost.open(seed("bob"), LOOPBACK):
        with caplog.at_level(logging.WARNING):
            logging.getLogger("libp2p.network.swarm").warning("from inside libp2p")
        assert len(logging.getLogger("libp2p").handlers) == 1  # installed once

    [record] = [r for r in caplog.records if r.getMessage() == "from inside libp2p"]
    assert record.name == "libp2p.network.swarm"
