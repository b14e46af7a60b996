"""mDNS discovery: the TXT codec and peer tracking offline; real zeroconf only inside namespaces.

Every test that multicasts runs its nodes as subprocesses inside a network namespace it creates
(this module is also their program: ``python -m tests.test_mdns discover|publish-raw ...``), so
mDNS never reaches this machine's real interfaces. Nodes print events as JSON lines; the tests
wait for a line with a timeout, never a fixed sleep.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import queue
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import pytest
import trio

from p2pid.net.mdns import (
    DiscoveredPeer,
    MdnsDiscovery,
    MdnsEvent,
    PeerLost,
    _BrowserHandler,
    _deliver_to_trio,
    _PeerTracker,
    decode_txt,
    encode_txt,
    normalize_peer_id,
    resolve_interfaces,
    split_txt,
)
from tests.netns import NetNs, netns, netns_unavailable_reason, requires_netns, veth_pair

REPO_ROOT = Path(__file__).resolve().parent.parent
EVENT_TIMEOUT = 15.0
"""Seconds to wait for one expected event (it normally comes within about 2 s)."""


@cache
def peer_id(label: str) -> str:
    """A real Ed25519 PeerId, the same for the same label within a test run."""
    from libp2p.crypto.ed25519 import create_new_key_pair
    from libp2p.peer.id import ID

    return str(ID.from_pubkey(create_new_key_pair().public_key))


def txt(*strings: bytes) -> bytes:
    return b"".join(bytes([len(s)]) + s for s in strings)


def dnsaddr(addr: str, peer: str) -> bytes:
    return f"dnsaddr={addr}/p2p/{peer}".encode()


# --- the TXT codec --------------------------------------------------------------------------------


def test_txt_round_trip() -> None:
    alice, bob = peer_id("alice"), peer_id("bob")
    addrs = ("/ip4/127.0.0.1/tcp/4001", "/ip4/192.168.1.2/udp/4001/quic-v1")
    fields = {"p2pid": "1", "name": "Alice ✓ = café"}

    encoded = encode_txt(alice, addrs, fields)

    assert split_txt(encoded)[0] == dnsaddr(addrs[0], alice)
    peer = decode_txt(encoded, own_peer_id=bob)
    assert peer == DiscoveredPeer(alice, addrs, fields)


def test_own_peer_id_is_ignored() -> None:
    alice = peer_id("alice")
    assert decode_txt(encode_txt(alice, ["/ip4/127.0.0.1/tcp/1"], {}), own_peer_id=alice) is None


def test_malformed_dnsaddr_strings_are_ignored() -> None:
    carol, dave = peer_id("carol"), peer_id("dave")
    record = txt(
        b"dnsaddr=garbage",
        b"dnsaddr=/ip4/127.0.0.1/tcp/1",  # no /p2p/
        b"dnsaddr=/ip4/127.0.0.1/tcp/2/p2p/notapeerid",
        b"dnsaddr=/ip4/999.0.0.1/tcp/3/p2p/" + carol.encode(),
        b"dnsaddr=/ip4/0.0.0.0/tcp/4/p2p/" + carol.encode(),  # unspecified
        b"dnsaddr=/p2p/" + carol.encode(),  # no address
        b"dnsaddr=\xff\xfe/p2p/" + carol.encode(),
        b"dnsaddr",  # boolean attribute
        dnsaddr("/ip4/127.0.0.1/tcp/5", carol),
        dnsaddr("/ip4/127.0.0.1/tcp/6", dave),  # another peer than the first valid one
        dnsaddr("/ip4/127.0.0.1/tcp/5", carol),  # repeated
        b"dnsaddr2=/ip4/127.0.0.1/tcp/7/p2p/" + carol.encode(),  # py-libp2p's numbered keys
        b"name=carol",
        b"name=second",  # RFC 6763: the first of a repeated key counts
        b"bad\x01key=x",
        b"enc=\xff",
        b"flag",
    )

    peer = decode_txt(record, own_peer_id=peer_id("alice"))

    assert peer == DiscoveredPeer(
        carol, ("/ip4/127.0.0.1/tcp/5", "/ip4/127.0.0.1/tcp/7"), {"name": "carol"}
    )


@pytest.mark.parametrize(
    "record",
    [
        b"",
        txt(b"name=x"),
        txt(b"dnsaddr=garbage"),
        b"\x40dnsaddr=truncated",
    ],
)
def test_record_without_a_valid_dnsaddr_is_no_peer(record: bytes) -> None:
    assert decode_txt(record, own_peer_id=peer_id("alice")) is None


def test_split_txt_drops_a_truncated_string() -> None:
    assert split_txt(b"\x01a\x00\x02bc\x05de") == [b"a", b"bc"]


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"": "x"}, "printable ASCII"),
        ({"a=b": "x"}, "printable ASCII"),
        ({"naïve": "x"}, "printable ASCII"),
        ({"dnsaddr": "x"}, "reserved"),
        ({"DNSADDR2": "x"}, "reserved"),
        ({"big": "x" * 300}, "over 255 bytes"),
    ],
)
def test_bad_fields_are_refused(fields: Mapping[str, str], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        encode_txt(peer_id("alice"), [], fields)


def test_py_libp2p_reads_our_record() -> None:
    """py-libp2p 0.8.1's own mDNS listener finds our PeerId and (first) address in our TXT."""
    from libp2p.discovery.mdns.listener import PeerListener
    from zeroconf import ServiceInfo

    alice = peer_id("alice")
    info = ServiceInfo(
        "_p2p._udp.local.",
        "abc._p2p._udp.local.",
        port=4001,
        properties=encode_txt(alice, ["/ip4/192.168.1.2/tcp/4001"], {"p2pid": "1"}),
        server="abc.local.",
        parsed_addresses=["192.168.1.2"],
    )
    listener = PeerListener.__new__(PeerListener)  # its parser only, no zeroconf
    peer_info = listener._extract_peer_info(info)
    assert peer_info is not None
    assert str(peer_info.peer_id) == alice
    assert [str(addr) for addr in peer_info.addrs] == ["/ip4/192.168.1.2/tcp/4001"]


# --- what MdnsDiscovery advertises ---------------------------------------------------------------


def test_unspecified_addresses_are_not_advertised_and_own_suffix_is_stripped() -> None:
    alice = peer_id("alice")
    discovery = MdnsDiscovery(
        alice,
        ["/ip4/0.0.0.0/tcp/4001", f"/ip4/127.0.0.1/tcp/4001/p2p/{alice}", "/ip6/::/tcp/4001"],
        interfaces=["lo"],
    )
    assert discovery.addrs == ("/ip4/127.0.0.1/tcp/4001",)


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (lambda: {"peer_id": "QmNotAPeerId"}, "not a libp2p PeerId"),
        (lambda: {"addrs": ["garbage"]}, "not a multiaddr"),
        (lambda: {"addrs": [f"/ip4/1.2.3.4/tcp/1/p2p/{peer_id('bob')}"]}, "another peer"),
        (lambda: {"interfaces": []}, "at least one interface"),
        (lambda: {"fields": {"dnsaddr": "x"}}, "reserved"),
    ],
)
def test_bad_configuration_is_refused(
    arguments: Callable[[], dict[str, Any]], message: str
) -> None:
    defaults: dict[str, Any] = {"peer_id": peer_id("alice"), "addrs": [], "interfaces": None}
    with pytest.raises(ValueError, match=message):
        MdnsDiscovery(**(defaults | arguments()))


def test_peer_id_is_normalized() -> None:
    alice = peer_id("alice")
    assert normalize_peer_id(alice) == alice
    with pytest.raises(ValueError):
        normalize_peer_id(f"{alice}/tcp/1")


def test_resolve_interfaces() -> None:
    assert resolve_interfaces(["lo"]) == ["127.0.0.1"]
    assert resolve_interfaces(["lo", "lo"]) == ["127.0.0.1"]
    with pytest.raises(ValueError, match="unknown network interface 'no-such-if0'"):
        resolve_interfaces(["no-such-if0"])


async def test_run_with_an_unknown_interface_raises_before_touching_the_network() -> None:
    discovery = MdnsDiscovery(peer_id("alice"), [], interfaces=["no-such-if0"])
    send, _receive = trio.open_memory_channel[MdnsEvent](1)
    with pytest.raises(ValueError, match="unknown network interface"):
        await discovery.run(send)


# --- peer tracking and the hand-over to trio ------------------------------------------------------


def discovered(label: str, *addrs: str, **fields: str) -> DiscoveredPeer:
    return DiscoveredPeer(peer_id(label), addrs, fields)


def test_tracker_reports_appear_change_and_loss() -> None:
    tracker = _PeerTracker()
    carol_v1 = discovered("carol", "/ip4/127.0.0.1/tcp/1")
    carol_v2 = discovered("carol", "/ip4/127.0.0.1/tcp/2")

    assert tracker.instance_seen("c1", carol_v1) == [carol_v1]
    assert tracker.instance_seen("C1", carol_v1) == []  # DNS names are case-insensitive
    assert tracker.instance_seen("c1", carol_v2) == [carol_v2]
    assert tracker.instance_gone("c1") == [PeerLost(carol_v1.peer_id)]
    assert tracker.instance_gone("c1") == []
    assert tracker.instance_gone("never-seen") == []


def test_tracker_keeps_a_peer_while_any_instance_advertises_it() -> None:
    tracker = _PeerTracker()
    old = discovered("carol", "/ip4/127.0.0.1/tcp/1")
    restarted = discovered("carol", "/ip4/127.0.0.1/tcp/2")

    assert tracker.instance_seen("old", old) == [old]
    assert tracker.instance_seen("new", restarted) == [restarted]
    assert tracker.instance_gone("old") == []
    assert tracker.instance_gone("new") == [PeerLost(old.peer_id)]


def test_tracker_loses_a_peer_whose_record_turns_invalid() -> None:
    tracker = _PeerTracker()
    carol = discovered("carol", "/ip4/127.0.0.1/tcp/1")
    tracker.instance_seen("c1", carol)
    assert tracker.instance_seen("c1", None) == [PeerLost(carol.peer_id)]


class FakeZeroconf:
    """Answers get_service_info from a dict of TXT records; a callable record runs first."""

    def __init__(self) -> None:
        self.records: dict[str, bytes | Callable[[], bytes | None]] = {}

    def get_service_info(self, type_: str, name: str, timeout: int) -> SimpleNamespace | None:
        record = self.records.get(name)
        text = record() if callable(record) else record
        return None if text is None else SimpleNamespace(text=text, name=name)


def test_browser_handler_resolves_parses_and_survives_errors() -> None:
    from zeroconf import ServiceStateChange

    carol = peer_id("carol")
    zeroconf = FakeZeroconf()
    zeroconf.records["c._p2p._udp.local."] = encode_txt(carol, ["/ip4/127.0.0.1/tcp/1"], {"n": "c"})

    def fail() -> bytes:
        raise RuntimeError("zeroconf failed")

    zeroconf.records["boom._p2p._udp.local."] = fail
    delivered: list[list[MdnsEvent]] = []
    handler = _BrowserHandler(peer_id("alice"), delivered.append)
    for name, change in [
        ("c._p2p._udp.local.", ServiceStateChange.Added),
        ("boom._p2p._udp.local.", ServiceStateChange.Added),
        ("unresolvable._p2p._udp.local.", ServiceStateChange.Added),
        ("c._p2p._udp.local.", ServiceStateChange.Removed),
    ]:
        handler(cast(Any, zeroconf), "_p2p._udp.local.", name, change)

    assert delivered == [
        [DiscoveredPeer(carol, ("/ip4/127.0.0.1/tcp/1",), {"n": "c"})],
        [PeerLost(carol)],
    ]


def test_recheck_loses_silent_services_and_finds_them_again() -> None:
    from zeroconf import ServiceStateChange

    carol = peer_id("carol")
    zeroconf = FakeZeroconf()
    record = encode_txt(carol, ["/ip4/127.0.0.1/tcp/1"], {})
    zeroconf.records["c._p2p._udp.local."] = record
    handler = _BrowserHandler(peer_id("alice"), lambda events: None)
    handler(cast(Any, zeroconf), "_p2p._udp.local.", "c._p2p._udp.local.", ServiceStateChange.Added)

    assert handler.recheck(cast(Any, zeroconf)) == []
    del zeroconf.records["c._p2p._udp.local."]  # its records expired and nobody answers
    assert handler.recheck(cast(Any, zeroconf)) == [PeerLost(carol)]
    zeroconf.records["c._p2p._udp.local."] = record
    assert handler.recheck(cast(Any, zeroconf)) == [
        DiscoveredPeer(carol, ("/ip4/127.0.0.1/tcp/1",), {})
    ]


def test_recheck_result_is_dropped_when_the_browser_changed_the_service_meanwhile() -> None:
    from zeroconf import ServiceStateChange

    carol = peer_id("carol")
    name = "c._p2p._udp.local."
    zeroconf = FakeZeroconf()
    delivered: list[list[MdnsEvent]] = []
    handler = _BrowserHandler(peer_id("alice"), delivered.append)
    zeroconf.records[name] = encode_txt(carol, ["/ip4/127.0.0.1/tcp/1"], {})
    handler(cast(Any, zeroconf), "_p2p._udp.local.", name, ServiceStateChange.Added)

    def removed_while_resolving() -> bytes:
        handler(cast(Any, zeroconf), "_p2p._udp.local.", name, ServiceStateChange.Removed)
        return encode_txt(carol, ["/ip4/127.0.0.1/tcp/1"], {})

    zeroconf.records[name] = removed_while_resolving
    assert handler.recheck(cast(Any, zeroconf)) == []  # not resurrected by the stale answer
    assert delivered[-1] == [PeerLost(carol)]


async def test_events_from_a_foreign_thread_reach_trio_and_are_dropped_after_close() -> None:
    send, receive = trio.open_memory_channel[MdnsEvent](10)
    token = trio.lowlevel.current_trio_token()
    lost = PeerLost(peer_id("carol"))

    threading.Thread(target=_deliver_to_trio, args=(token, send, [lost])).start()
    assert await receive.receive() == lost
    await receive.aclose()
    delivered_without_error = threading.Event()

    def deliver_after_close() -> None:
        _deliver_to_trio(token, send, [lost])
        delivered_without_error.set()

    worker = threading.Thread(target=deliver_after_close)
    worker.start()
    await trio.to_thread.run_sync(worker.join)
    # a stopped receiver does not raise into zeroconf's thread
    assert delivered_without_error.is_set()


def test_netns_tests_say_why_they_cannot_run(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    assert "root" in (netns_unavailable_reason() or "")
    monkeypatch.setattr("shutil.which", lambda name: None)
    assert "`ip` tool" in (netns_unavailable_reason() or "")


# --- real nodes inside network namespaces ---------------------------------------------------------


class NodeProcess:
    """A subprocess (this module's ``main``) inside a namespace that prints JSON-line events."""

    def __init__(self, ns: NetNs, label: str, argv: Sequence[str]) -> None:
        self.label = label
        self.events: list[dict[str, Any]] = []
        self._stderr: list[str] = []
        self._lines: queue.Queue[dict[str, Any] | None] = queue.Queue()
        self.process = ns.popen(
            [sys.executable, "-m", "tests.test_mdns", *argv],
            cwd=REPO_ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            bufsize=1,
        )
        threading.Thread(target=self._read_stdout, daemon=True).start()
        threading.Thread(target=self._read_stderr, daemon=True).start()

    def _read_stdout(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self._lines.put(json.loads(line))
        self._lines.put(None)

    def _read_stderr(self) -> None:
        assert self.process.stderr is not None
        self._stderr.extend(self.process.stderr)

    def wait_for(
        self, what: str, predicate: Callable[[dict[str, Any]], bool], timeout: float = EVENT_TIMEOUT
    ) -> dict[str, Any]:
        """The first event (already seen or coming) that matches; AssertionError on timeout."""
        for event in self.events:
            if predicate(event):
                return event
        deadline = time.monotonic() + timeout
        while (remaining := deadline - time.monotonic()) > 0:
            try:
                line = self._lines.get(timeout=remaining)
            except queue.Empty:
                break
            if line is None:  # it exited; leave the marker for the next wait
                self._lines.put(None)
                break
            self.events.append(line)
            if predicate(line):
                return line
        raise AssertionError(
            f"{self.label}: no {what} within {timeout} s; events: {self.events}; "
            f"stderr: {''.join(self._stderr)[-3000:]}"
        )

    def send(self, line: str) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(line + "\n")
        self.process.stdin.flush()

    def stop(self, timeout: float = EVENT_TIMEOUT) -> None:
        """Close its stdin (it then says goodbye and exits) and read the rest of its events."""
        assert self.process.stdin is not None
        self.process.stdin.close()
        self.wait_for("exit", lambda event: event["event"] == "stopped", timeout)
        assert self.process.wait(timeout) == 0, "".join(self._stderr)

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()

    def assert_no_event_for(
        self, seconds: float, what: str, predicate: Callable[[dict[str, Any]], bool]
    ) -> None:
        """A deliberate wait, for a negative check: no such event within ``seconds``."""
        try:
            event = self.wait_for(what, predicate, seconds)
        except AssertionError:
            return
        raise AssertionError(f"{self.label}: unexpected {what}: {event}")

    def saw(self, label: str) -> bool:
        return any(event.get("peer_id") == peer_id(label) for event in self.events)


@dataclass
class Nodes:
    ns: NetNs
    started: list[NodeProcess]

    def discover(
        self,
        label: str,
        addrs: Sequence[str],
        *,
        interface: str = "lo",
        fields: Mapping[str, str] | None = None,
        ns: NetNs | None = None,
        ttl: int = 120,
        recheck_interval: float = 30.0,
    ) -> NodeProcess:
        argv = ["discover", "--peer-id", peer_id(label), "--interface", interface]
        argv += [f"--ttl={ttl}", f"--recheck-interval={recheck_interval}"]
        argv += [f"--addr={addr}" for addr in addrs]
        argv += [f"--field={key}={value}" for key, value in (fields or {}).items()]
        return self._start(label, argv, ns)

    def publish_raw(self, label: str, services: Mapping[str, bytes]) -> NodeProcess:
        """Register services with exactly these TXT records (wire form), bypassing MdnsDiscovery."""
        spec = json.dumps({name: record.hex() for name, record in services.items()})
        return self._start(label, ["publish-raw", spec], None)

    def _start(self, label: str, argv: list[str], ns: NetNs | None) -> NodeProcess:
        node = NodeProcess(ns or self.ns, label, argv)
        self.started.append(node)
        return node


@contextlib.contextmanager
def nodes_in(ns: NetNs) -> Iterator[Nodes]:
    nodes = Nodes(ns, [])
    try:
        yield nodes
    finally:
        for node in nodes.started:
            node.kill()


def discovered_event(label: str) -> Callable[[dict[str, Any]], bool]:
    return lambda event: event["event"] == "discovered" and event["peer_id"] == peer_id(label)


def lost_event(label: str) -> Callable[[dict[str, Any]], bool]:
    return lambda event: event["event"] == "lost" and event["peer_id"] == peer_id(label)


@pytest.fixture
def namespace() -> Iterator[NetNs]:
    """A throwaway network namespace (the tests that take it are marked requires_netns)."""
    with netns() as ns:
        yield ns


@requires_netns
def test_two_nodes_see_each_other_with_addresses_and_fields(namespace: NetNs) -> None:
    with nodes_in(namespace) as nodes:
        alice = nodes.discover(
            "alice",
            ["/ip4/127.0.0.1/tcp/4001", "/ip4/0.0.0.0/tcp/4001"],
            fields={"p2pid": "1", "name": "Alice ✓"},
        )
        bob = nodes.discover(
            "bob", [f"/ip4/127.0.0.1/tcp/4002/p2p/{peer_id('bob')}"], fields={"p2pid": "1"}
        )

        bob_at_alice = alice.wait_for("bob", discovered_event("bob"))
        alice_at_bob = bob.wait_for("alice", discovered_event("alice"))

        assert bob_at_alice["addrs"] == ["/ip4/127.0.0.1/tcp/4002"]
        assert bob_at_alice["fields"] == {"p2pid": "1"}
        assert alice_at_bob["addrs"] == ["/ip4/127.0.0.1/tcp/4001"]
        assert alice_at_bob["fields"] == {"p2pid": "1", "name": "Alice ✓"}
        alice.stop()
        bob.stop()
        assert not alice.saw("alice")
        assert not bob.saw("bob")


@requires_netns
def test_a_stopped_node_is_lost_at_the_other(namespace: NetNs) -> None:
    with nodes_in(namespace) as nodes:
        alice = nodes.discover("alice", ["/ip4/127.0.0.1/tcp/4001"])
        bob = nodes.discover("bob", ["/ip4/127.0.0.1/tcp/4002"])
        alice.wait_for("bob", discovered_event("bob"))
        bob.wait_for("started", lambda event: event["event"] == "started")

        stopped_at = time.monotonic()
        bob.stop()
        alice.wait_for("bob lost", lost_event("bob"), timeout=5)
        print(f"PeerLost observed {time.monotonic() - stopped_at:.2f} s after the stop began")


@requires_netns
def test_a_vanished_node_is_lost_when_its_records_expire(namespace: NetNs) -> None:
    with nodes_in(namespace) as nodes:
        alice = nodes.discover("alice", ["/ip4/127.0.0.1/tcp/4001"], recheck_interval=1)
        bob = nodes.discover("bob", ["/ip4/127.0.0.1/tcp/4002"], ttl=2)
        alice.wait_for("bob", discovered_event("bob"))
        bob.wait_for("started", lambda event: event["event"] == "started")
        # bob's records expire every 2 s at alice; he stays as long as he answers her rechecks
        alice.assert_no_event_for(5, "bob lost", lost_event("bob"))

        killed_at = time.monotonic()
        bob.kill()  # no goodbye
        alice.wait_for("bob lost", lost_event("bob"), timeout=20)
        print(f"PeerLost observed {time.monotonic() - killed_at:.2f} s after the kill")


@requires_netns
def test_new_addresses_reach_the_other_node(namespace: NetNs) -> None:
    with nodes_in(namespace) as nodes:
        alice = nodes.discover("alice", ["/ip4/127.0.0.1/tcp/4001"])
        bob = nodes.discover("bob", ["/ip4/127.0.0.1/tcp/4002"])
        alice.wait_for("bob", discovered_event("bob"))
        bob.wait_for("started", lambda event: event["event"] == "started")

        bob.send("update /ip4/127.0.0.1/tcp/5002 /ip4/127.0.0.1/udp/5002/quic-v1")

        moved = ["/ip4/127.0.0.1/tcp/5002", "/ip4/127.0.0.1/udp/5002/quic-v1"]
        alice.wait_for(
            "bob's new addresses",
            lambda event: discovered_event("bob")(event) and event["addrs"] == moved,
        )


@requires_netns
def test_malformed_and_own_records_on_the_lan_are_ignored(namespace: NetNs) -> None:
    alice_id, carol, dave, mallory = (peer_id(x) for x in ("alice", "carol", "dave", "mallory"))
    with nodes_in(namespace) as nodes:
        publisher = nodes.publish_raw(
            "raw",
            {
                "malformed": txt(
                    b"dnsaddr=garbage",
                    b"dnsaddr=/ip4/127.0.0.1/tcp/1",
                    b"dnsaddr=/ip4/0.0.0.0/tcp/1/p2p/" + mallory.encode(),
                    b"name=mallory",
                ),
                "claims-alice": txt(dnsaddr("/ip4/127.0.0.1/tcp/9", alice_id)),
                "mixed": txt(
                    b"dnsaddr=/ip4/127.0.0.1/tcp/2/p2p/notapeerid",
                    dnsaddr("/ip4/127.0.0.1/tcp/5", carol),
                    dnsaddr("/ip4/127.0.0.1/tcp/6", dave),
                    b"name=carol",
                ),
            },
        )
        publisher.wait_for("registration", lambda event: event["event"] == "registered")
        alice = nodes.discover("alice", ["/ip4/127.0.0.1/tcp/4001"])

        carol_at_alice = alice.wait_for("carol", discovered_event("carol"))
        assert carol_at_alice["addrs"] == ["/ip4/127.0.0.1/tcp/5"]
        assert carol_at_alice["fields"] == {"name": "carol"}
        # a node that registers after the raw records were sent is a barrier: once alice
        # reports it, she has handled everything the publisher announced before.
        nodes.discover("bob", ["/ip4/127.0.0.1/tcp/4002"])
        alice.wait_for("bob", discovered_event("bob"))
        alice.stop()
        assert not any(alice.saw(label) for label in ("alice", "dave", "mallory"))


@requires_netns
def test_a_node_on_all_interfaces_meets_a_node_on_lo(namespace: NetNs) -> None:
    with nodes_in(namespace) as nodes:
        alice = nodes.discover("alice", ["/ip4/127.0.0.1/tcp/4001"], interface="all")
        bob = nodes.discover("bob", ["/ip4/127.0.0.1/tcp/4002"])
        alice.wait_for("bob", discovered_event("bob"))
        bob.wait_for("alice", discovered_event("alice"))


@requires_netns
def test_nodes_are_heard_only_on_their_interfaces() -> None:
    """Nodes on lo and nodes on a veth between two namespaces never hear of each other."""
    with netns() as left, netns() as right, nodes_in(left) as nodes:
        veth_pair(left, right, "10.77.0.1/24", "10.77.0.2/24")
        on_lo = [nodes.discover(x, ["/ip4/127.0.0.1/tcp/4001"]) for x in ("alice", "bob")]
        carol = nodes.discover("carol", ["/ip4/10.77.0.1/tcp/4001"], interface="p2pa")
        dave = nodes.discover("dave", ["/ip4/10.77.0.2/tcp/4001"], interface="p2pb", ns=right)

        on_lo[0].wait_for("bob", discovered_event("bob"))
        on_lo[1].wait_for("alice", discovered_event("alice"))
        carol.wait_for("dave", discovered_event("dave"))
        dave.wait_for("carol", discovered_event("carol"))
        for node in nodes.started:
            node.stop()

        for node in on_lo:
            assert not node.saw("carol") and not node.saw("dave"), node.events
        for node in (carol, dave):
            assert not node.saw("alice") and not node.saw("bob"), node.events


# --- the node program run inside the namespaces ---------------------------------------------------


def _emit(event: Mapping[str, Any]) -> None:
    print(json.dumps(event), flush=True)


def _event_json(event: MdnsEvent) -> dict[str, Any]:
    if isinstance(event, PeerLost):
        return {"event": "lost", "peer_id": event.peer_id}
    return {
        "event": "discovered",
        "peer_id": event.peer_id,
        "addrs": list(event.addrs),
        "fields": dict(event.fields),
    }


async def _print_events(receive: trio.MemoryReceiveChannel[MdnsEvent]) -> None:
    async for event in receive:
        _emit(_event_json(event))


async def _stdin_lines() -> AsyncIterator[str]:
    """Lines from stdin, read without blocking trio, until EOF."""
    stream = trio.lowlevel.FdStream(os.dup(sys.stdin.fileno()))
    buffer = b""
    async with stream:
        while chunk := await stream.receive_some():
            buffer += chunk
            *lines, buffer = buffer.split(b"\n")
            for line in lines:
                yield line.decode()


async def _discover(args: argparse.Namespace) -> None:
    fields = dict(field.split("=", 1) for field in args.field)
    discovery = MdnsDiscovery(
        args.peer_id,
        args.addr,
        interfaces=None if args.interface == ["all"] else args.interface,
        fields=fields,
        ttl=args.ttl,
        recheck_interval=args.recheck_interval,
    )
    send, receive = trio.open_memory_channel[MdnsEvent](100)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_print_events, receive)
        await nursery.start(discovery.run, send)
        _emit({"event": "started"})
        async for line in _stdin_lines():
            command, *addrs = line.split()
            if command == "update":
                await discovery.update(addrs=addrs)
                _emit({"event": "updated"})
        nursery.cancel_scope.cancel()
    _emit({"event": "stopped"})


def _publish_raw(spec: str) -> None:
    from zeroconf import IPVersion, ServiceInfo, Zeroconf

    zeroconf = Zeroconf(interfaces=["127.0.0.1"], ip_version=IPVersion.V4Only)
    services = [
        ServiceInfo(
            "_p2p._udp.local.",
            f"{name}._p2p._udp.local.",
            port=4001,
            properties=bytes.fromhex(record),
            server=f"{name}.local.",
            parsed_addresses=["127.0.0.1"],
        )
        for name, record in json.loads(spec).items()
    ]
    with ThreadPoolExecutor(len(services)) as pool:  # each registration probes for ~1.6 s
        list(pool.map(zeroconf.register_service, services))
    _emit({"event": "registered"})
    sys.stdin.read()
    zeroconf.close()
    _emit({"event": "stopped"})


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m tests.test_mdns")
    commands = parser.add_subparsers(dest="command", required=True)
    discover = commands.add_parser("discover", help="run MdnsDiscovery, print its events")
    discover.add_argument("--peer-id", required=True)
    discover.add_argument("--addr", action="append", default=[])
    discover.add_argument("--field", action="append", default=[], help="KEY=VALUE")
    discover.add_argument("--interface", action="append", required=True, help='a name, or "all"')
    discover.add_argument("--ttl", type=int, default=120, help="seconds our records live")
    discover.add_argument("--recheck-interval", type=float, default=30.0)
    raw = commands.add_parser("publish-raw", help="register services with raw TXT records")
    raw.add_argument("spec", help='JSON {"instance": "<TXT wire form in hex>"}')
    args = parser.parse_args(argv)
    if args.command == "discover":
        trio.run(_discover, args)
    else:
        _publish_raw(args.spec)


if __name__ == "__main__":
    main()
