"""End to end over mDNS: two daemons in a network namespace the test creates find each other.

mDNS never leaves the namespace: its only interface is a multicast-capable loopback.
"""

import time
from pathlib import Path
from typing import Any

from p2pid.rpc.client import BlockingClient
from tests.cli_helpers import p2pid, p2pid_json
from tests.daemons import LOOPBACK, init_home, start_daemon, status
from tests.netns import netns, requires_netns

DISCOVERY_TIMEOUT = 30.0


def wait_until_discovered(home: Path, peer_id: str) -> dict[str, Any]:
    """Subscribe first, then look at the state, then wait on events: no window to miss one."""
    with BlockingClient(home / "daemon.sock", timeout=DISCOVERY_TIMEOUT) as client:
        client.call("subscribe")
        if peer_id in client.call("status")["discovered_peers"]:
            return {"type": "peer.discovered", "peer_id": peer_id}
        return wait_for_event(client, "peer.discovered", peer_id)


def wait_for_event(client: BlockingClient, kind: str, peer_id: str) -> dict[str, Any]:
    deadline = time.monotonic() + DISCOVERY_TIMEOUT
    while time.monotonic() < deadline:
        event = client.next_event()
        if event["type"] == kind and event.get("peer_id") == peer_id:
            return event
    raise AssertionError(f"no {kind} for {peer_id} within {DISCOVERY_TIMEOUT} s")


@requires_netns
def test_daemons_discover_each_other_over_mdns_and_ping(tmp_path: Path) -> None:
    alice_home, bob_home = tmp_path / "alice", tmp_path / "bob"
    alice_id = init_home(alice_home, "Alice")["peer_id"]
    bob_id = init_home(bob_home, "Bob")["peer_id"]
    mdns_on_loopback = ("--listen", LOOPBACK, "--mdns-interface", "lo")
    with netns() as ns:
        try:
            start_daemon(alice_home, *mdns_on_loopback, prefix=ns.command([]))
            start_daemon(bob_home, *mdns_on_loopback, prefix=ns.command([]))
            wait_until_discovered(alice_home, bob_id)
            wait_until_discovered(bob_home, alice_id)

            pinged = p2pid_json(alice_home, "ping", bob_id, "--count", "2")
            assert pinged["peer_id"] == bob_id and len(pinged["rtts_ms"]) == 2

            assert bob_id in status(alice_home)["discovered_peers"]
            assert alice_id in status(bob_home)["discovered_peers"]
            bob_as_seen = next(p for p in p2pid_json(alice_home, "peers") if p["peer_id"] == bob_id)
            assert bob_as_seen["discovered"] and bob_as_seen["fields"]["name"] == "Bob"
            assert bob_as_seen["addrs"][0].startswith("/ip4/127.0.0.1/tcp/")

            with BlockingClient(alice_home / "daemon.sock", timeout=DISCOVERY_TIMEOUT) as watcher:
                watcher.call("subscribe")
                p2pid(bob_home, "stop")  # Bob's goodbye packet tells Alice at once
                assert wait_for_event(watcher, "peer.lost", bob_id)
            assert bob_id not in status(alice_home)["discovered_peers"]
        finally:
            p2pid(alice_home, "stop", check=False)
            p2pid(bob_home, "stop", check=False)
