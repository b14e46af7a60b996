"""The dial policy as pure logic, its trio driver over a scripted network, and the real thing:
NetHosts on 127.0.0.1 with dead, late and live addresses, and py-libp2p's negative cache."""

from __future__ import annotations

import contextlib
import hashlib
import logging
import random
import socket
from collections.abc import Iterator

import multiaddr
import pytest
import trio
import trio.testing
from libp2p.peer.id import ID
from libp2p.peer.peerinfo import PeerInfo

from p2pid.net import DialError
from p2pid.net.dialer import (
    AddressBook,
    DialAction,
    Dialer,
    DialPolicy,
    DialSchedule,
    GiveUp,
    TryAddress,
    Wait,
    backoff_delay,
)
from p2pid.net.host import NetHost, peer_id_from_seed

LOOPBACK = ["/ip4/127.0.0.1/tcp/0"]
STEP_TIMEOUT = 10
NO_JITTER = DialPolicy(
    initial_backoff=0.1, backoff_factor=2, max_backoff=1, jitter=0, attempt_timeout=3
)


def seed(name: str) -> bytes:
    return hashlib.sha256(name.encode()).digest()


# -- backoff ---------------------------------------------------------------------------------


def test_backoff_grows_exponentially_up_to_the_cap() -> None:
    delays = [backoff_delay(NO_JITTER, retry, random.Random(0)) for retry in range(6)]
    assert delays == pytest.approx([0.1, 0.2, 0.4, 0.8, 1.0, 1.0])


def test_backoff_jitter_stays_within_its_band_and_varies() -> None:
    policy = DialPolicy(initial_backoff=1, max_backoff=1, jitter=0.25)
    rng = random.Random(7)
    delays = [backoff_delay(policy, 0, rng) for _ in range(200)]
    assert all(0.75 <= delay <= 1.25 for delay in delays)
    assert len(set(delays)) > 100


@pytest.mark.parametrize(
    "bad",
    [
        {"jitter": 1.0},
        {"initial_backoff": 2.0, "max_backoff": 1.0},
        {"backoff_factor": 0.5},
        {"attempt_timeout": 0},
        {"max_addrs_per_peer": 0},
    ],
)
def test_policy_rejects_nonsense(bad: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        DialPolicy(**bad)  # type: ignore[arg-type]


# -- address ranking -------------------------------------------------------------------------


def test_untried_addresses_dial_newest_first() -> None:
    book = AddressBook(max_addrs_per_peer=8)
    assert book.add("peer", ["/a"], now=1) == ["/a"]
    assert book.add("peer", ["/b", "/a"], now=2) == ["/b"]  # only the new one is new
    assert book.dial_order("peer") == ["/a", "/b"]  # /a was seen again at t=2, after /b


def test_the_most_recently_successful_address_dials_first() -> None:
    book = AddressBook(max_addrs_per_peer=8)
    book.add("peer", ["/old", "/mid", "/new"], now=1)
    book.record_success("peer", "/old", now=2)
    book.record_success("peer", "/mid", now=3)
    assert book.dial_order("peer") == ["/mid", "/old", "/new"]


def test_failing_addresses_dial_last_fewest_failures_first() -> None:
    book = AddressBook(max_addrs_per_peer=8)
    book.add("peer", ["/flaky", "/dead", "/untried"], now=1)
    book.record_success("peer", "/flaky", now=2)
    book.record_failure("peer", "/flaky")
    for _ in range(3):
        book.record_failure("peer", "/dead")
    assert book.dial_order("peer") == ["/untried", "/flaky", "/dead"]

    book.record_success("peer", "/dead", now=3)  # a success clears the failure count
    assert book.dial_order("peer") == ["/dead", "/untried", "/flaky"]


def test_the_book_keeps_the_best_addresses_when_full() -> None:
    book = AddressBook(max_addrs_per_peer=2)
    book.add("peer", ["/good", "/dead"], now=1)
    book.record_success("peer", "/good", now=2)
    book.record_failure("peer", "/dead")
    assert book.add("peer", ["/fresh"], now=3) == ["/fresh"]
    assert book.dial_order("peer") == ["/good", "/fresh"]


def test_peers_are_kept_apart_and_forgettable() -> None:
    book = AddressBook(max_addrs_per_peer=8)
    book.add("p1", ["/x"], now=1)
    book.add("p2", ["/y"], now=1)
    book.forget("p1")
    assert book.peers() == ["p2"]
    assert book.dial_order("p1") == []


# -- one connect() as a schedule -------------------------------------------------------------


def schedule(deadline: float = 10, policy: DialPolicy = NO_JITTER) -> DialSchedule:
    return DialSchedule(policy, deadline=deadline, rng=random.Random(0))


def assert_wait(action: DialAction, seconds: float) -> None:
    assert isinstance(action, Wait)
    assert action.seconds == pytest.approx(seconds)


def test_a_round_tries_each_address_once_then_backs_off() -> None:
    plan = schedule()
    addrs = ["/a", "/b"]
    assert plan.next_action(0.0, addrs) == TryAddress("/a", timeout=3)
    plan.record_failure("/a", "refused")
    assert plan.next_action(0.1, addrs) == TryAddress("/b", timeout=3)
    plan.record_failure("/b", "refused")
    assert_wait(plan.next_action(0.2, addrs), 0.1)
    assert_wait(plan.next_action(0.25, addrs), 0.05)  # still pausing
    assert plan.next_action(0.31, addrs) == TryAddress("/a", timeout=3)  # round two
    assert plan.next_action(0.4, addrs) == TryAddress("/b", timeout=3)
    assert_wait(plan.next_action(0.5, addrs), 0.2)  # doubled
    assert plan.failures == [("/a", "refused"), ("/b", "refused")]


def test_addresses_learned_mid_round_join_the_round() -> None:
    plan = schedule()
    assert plan.next_action(0, ["/a"]) == TryAddress("/a", timeout=3)
    assert plan.next_action(0, ["/a", "/late"]) == TryAddress("/late", timeout=3)


def test_resume_now_cuts_the_pause_short() -> None:
    plan = schedule()
    assert isinstance(plan.next_action(0, ["/a"]), TryAddress)
    assert isinstance(plan.next_action(0, ["/a"]), Wait)
    plan.resume_now()
    assert plan.next_action(0.01, ["/new", "/a"]) == TryAddress("/new", timeout=3)


def test_attempts_never_outlive_the_deadline() -> None:
    plan = schedule(deadline=2)
    assert plan.next_action(1.5, ["/a"]) == TryAddress("/a", timeout=0.5)


def test_gives_up_at_the_deadline_or_when_the_pause_would_cross_it() -> None:
    assert schedule(deadline=1).next_action(1, ["/a"]) == GiveUp("deadline reached")

    plan = schedule(deadline=1)
    assert isinstance(plan.next_action(0.95, ["/a"]), TryAddress)
    assert plan.next_action(0.95, ["/a"]) == GiveUp("deadline reached")  # 0.95 + 0.1 > 1


def test_gives_up_at_once_without_addresses() -> None:
    assert schedule().next_action(0, []) == GiveUp("no known address")


# -- the trio driver over a scripted network -------------------------------------------------


class ScriptedNetwork:
    """Addresses in ``live`` accept after DIAL_LATENCY, the rest refuse after it."""

    DIAL_LATENCY = 0.01

    def __init__(self, live: set[str]) -> None:
        self.live = live
        self.connected: set[str] = set()
        self.dials: list[str] = []
        self.refused = trio.Event()

    def is_connected(self, peer_id: str) -> bool:
        return peer_id in self.connected

    async def dial_address(self, peer_id: str, addr: str) -> None:
        self.dials.append(addr)
        await trio.sleep(self.DIAL_LATENCY)  # simulated network latency
        if addr not in self.live:
            self.refused.set()
            raise OSError(f"connection to {addr} refused")
        self.connected.add(peer_id)


async def test_concurrent_connects_share_one_dial(autojump_clock: trio.testing.MockClock) -> None:
    network = ScriptedNetwork(live={"/live"})
    dialer = Dialer(network, NO_JITTER, random.Random(0))
    dialer.add_addrs("peer", ["/live"])
    async with trio.open_nursery() as nursery:
        for _ in range(5):
            nursery.start_soon(dialer.connect, "peer")
    assert network.dials == ["/live"]


async def test_retries_until_the_deadline_then_says_what_failed(
    autojump_clock: trio.testing.MockClock,
) -> None:
    network = ScriptedNetwork(live=set())
    policy = DialPolicy(initial_backoff=0.1, max_backoff=1, jitter=0, connect_timeout=5)
    dialer = Dialer(network, policy, random.Random(0))
    dialer.add_addrs("peer", ["/a", "/b"])
    started = trio.current_time()
    with pytest.raises(DialError) as error:
        await dialer.connect("peer")
    assert 4 <= trio.current_time() - started <= 5
    assert len(network.dials) > 10
    assert error.value.peer_id == "peer"
    message = str(error.value)
    assert message.startswith("cannot connect to peer: deadline reached after ")
    assert "/a: connection to /a refused" in message
    assert "/b: connection to /b refused" in message


async def test_a_new_address_ends_the_backoff_pause(
    autojump_clock: trio.testing.MockClock,
) -> None:
    network = ScriptedNetwork(live={"/live"})
    policy = DialPolicy(initial_backoff=5, max_backoff=5, jitter=0, connect_timeout=60)
    dialer = Dialer(network, policy, random.Random(0))
    dialer.add_addrs("peer", ["/dead"])
    started = trio.current_time()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(dialer.connect, "peer")
        await network.refused.wait()
        dialer.add_addrs("peer", ["/live"])
    assert trio.current_time() - started < 1
    assert network.dials == ["/dead", "/live"]
    assert dialer.known_addrs("peer") == ["/live", "/dead"]


async def test_an_inbound_connection_ends_the_backoff_pause(
    autojump_clock: trio.testing.MockClock,
) -> None:
    network = ScriptedNetwork(live=set())
    policy = DialPolicy(initial_backoff=5, max_backoff=5, jitter=0, connect_timeout=60)
    dialer = Dialer(network, policy, random.Random(0))
    dialer.add_addrs("peer", ["/dead"])
    started = trio.current_time()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(dialer.connect, "peer")
        await network.refused.wait()
        network.connected.add("peer")  # the peer dialled us
        dialer.peer_connected("peer")
    assert trio.current_time() - started < 1


# -- real hosts on 127.0.0.1 -----------------------------------------------------------------


@contextlib.contextmanager
def reserved_port() -> Iterator[socket.socket]:
    """A bound, not listening, socket: dials to its port are refused, nobody else takes it."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        yield sock


def tcp_addr(sock: socket.socket) -> str:
    return f"/ip4/127.0.0.1/tcp/{sock.getsockname()[1]}"


@contextlib.contextmanager
def event_on_log(logger_name: str, fragment: str) -> Iterator[trio.Event]:
    """An event set when ``logger_name`` logs a message containing ``fragment``."""
    seen = trio.Event()

    class SetOnMatch(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if fragment in record.getMessage():
                seen.set()

    logger = logging.getLogger(logger_name)
    handler, previous_level = SetOnMatch(), logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    try:
        yield seen
    finally:
        logger.removeHandler(handler)
        logger.setLevel(previous_level)


async def test_a_peer_that_comes_up_late_is_reached_within_the_deadline() -> None:
    bob_id = peer_id_from_seed(seed("bob"))
    async with NetHost.open(seed("alice"), LOOPBACK) as alice:
        events = alice.connection_events()
        with reserved_port() as reservation, event_on_log("p2pid.net.dialer", "failed") as failed:
            bob_addr = tcp_addr(reservation)
            alice.add_addrs(bob_id, [bob_addr])
            async with trio.open_nursery() as nursery:
                nursery.start_soon(alice.connect, bob_id)
                with trio.fail_after(STEP_TIMEOUT):
                    await failed.wait()  # bob is down: at least one dial was refused
                reservation.close()
                async with NetHost.open(seed("bob"), [bob_addr]):
                    with trio.fail_after(STEP_TIMEOUT):
                        assert await events.receive() == (bob_id, True)
                    assert alice.connected_peers() == [bob_id]


async def test_libp2p_negative_cache_does_not_block_our_dials() -> None:
    bob_id = peer_id_from_seed(seed("bob"))
    async with NetHost.open(seed("alice"), LOOPBACK) as alice:
        with reserved_port() as reservation:
            bob_addr = tcp_addr(reservation)
            # libp2p's own dial path fails while bob is down and caches the failure for 60 s
            libp2p_host = alice._host  # white box: the precondition this test is about
            bob_info = PeerInfo(ID.from_base58(bob_id), [multiaddr.Multiaddr(bob_addr)])
            with pytest.raises(Exception, match="unable to connect"):
                await libp2p_host.connect(bob_info)
            reservation.close()

        async with NetHost.open(seed("bob"), [bob_addr]):
            with pytest.raises(Exception, match="negative cache"):
                await libp2p_host.connect(bob_info)  # bob is up, libp2p still refuses

            alice.add_addrs(bob_id, [bob_addr])
            with trio.fail_after(STEP_TIMEOUT):
                await alice.connect(bob_id)
                assert 0 < await alice.ping(bob_id) < 1


async def test_a_dead_address_is_skipped_for_a_live_one(caplog: pytest.LogCaptureFixture) -> None:
    async with (
        NetHost.open(seed("alice"), LOOPBACK) as alice,
        NetHost.open(seed("bob"), LOOPBACK) as bob,
    ):
        [live] = bob.listen_addrs()
        with reserved_port() as reservation, caplog.at_level(logging.DEBUG, "p2pid.net.dialer"):
            dead = tcp_addr(reservation)
            alice.add_addrs(bob.peer_id, [live])
            alice.add_addrs(bob.peer_id, [dead])  # newest: tried first
            assert alice.known_addrs(bob.peer_id) == [dead, live]
            with trio.fail_after(STEP_TIMEOUT):
                await alice.connect(bob.peer_id)

        assert alice.connected_peers() == [bob.peer_id]
        assert alice.known_addrs(bob.peer_id) == [live, dead]  # the success now leads
        failures = [r.getMessage() for r in caplog.records if r.name == "p2pid.net.dialer"]
        assert len(failures) == 1
        assert dead in failures[0]


async def test_dial_error_names_every_address_tried() -> None:
    bob_id = peer_id_from_seed(seed("bob"))
    policy = DialPolicy(connect_timeout=0.5)
    async with NetHost.open(seed("alice"), LOOPBACK, dial_policy=policy) as alice:
        with reserved_port() as first, reserved_port() as second:
            dead_addrs = [tcp_addr(first), tcp_addr(second)]
            alice.add_addrs(bob_id, dead_addrs)
            with trio.fail_after(STEP_TIMEOUT), pytest.raises(DialError) as error:
                await alice.connect(bob_id)
    message = str(error.value)
    assert f"cannot connect to {bob_id}: deadline reached" in message
    assert all(addr in message for addr in dead_addrs)
    assert "fail to open connection" in message


async def test_connecting_without_addresses_fails_at_once() -> None:
    bob_id = peer_id_from_seed(seed("bob"))
    async with NetHost.open(seed("alice"), LOOPBACK) as alice:
        with trio.fail_after(1), pytest.raises(DialError, match="no known address"):
            await alice.connect(bob_id)
