"""End to end: real `p2pid daemon` processes driven through the real CLI, on 127.0.0.1."""

import json
import os
import signal
import stat
from pathlib import Path

from tests.cli_helpers import p2pid, p2pid_json
from tests.daemons import LOOPBACK, init_home, peer_multiaddr, running_daemon, start_daemon, status


def test_daemon_lifecycle_and_one_daemon_per_home(tmp_path: Path) -> None:
    home = tmp_path / "alice"
    created = init_home(home, "Alice")
    with running_daemon(home, "Alice") as node:
        assert node["peer_id"] == created["peer_id"]
        assert node["identity_id"] == created["identity_id"]
        assert node["name"] == "Alice" and node["mdns"] is False
        assert node["listen_addrs"][0].startswith("/ip4/127.0.0.1/tcp/")
        assert stat.S_IMODE((home / "daemon.sock").stat().st_mode) == 0o600
        second = p2pid(home, "--json", "daemon", "--detach", "--no-mdns", check=False)
        assert second.returncode == 1
        assert "already running" in json.loads(second.stdout)["error"]["message"]
        assert status(home)["pid"] == node["pid"]
    assert p2pid(home, "status", check=False).returncode == 3
    assert not (home / "daemon.sock").exists()


def test_kill_9_leaves_a_home_the_next_start_opens(tmp_path: Path) -> None:
    home = tmp_path / "alice"
    with running_daemon(home, "Alice") as first:
        os.kill(first["pid"], signal.SIGKILL)
        assert (home / "daemon.sock").exists()  # stale socket left behind
        restarted = start_daemon(home, "--listen", LOOPBACK, "--no-mdns")
        assert restarted["peer_id"] == first["peer_id"]
        assert status(home)["pid"] != first["pid"]


def test_sigterm_stops_cleanly(tmp_path: Path) -> None:
    home = tmp_path / "alice"
    with running_daemon(home, "Alice") as node:
        os.kill(node["pid"], signal.SIGTERM)
        p2pid(home, "stop", check=False)  # waits until the lock is released
        assert not (home / "daemon.sock").exists()
        log = (home / "daemon.log").read_text()
        assert "received SIGTERM" in log and "stopped" in log


def test_two_daemons_connect_ping_and_list_each_other(tmp_path: Path) -> None:
    with (
        running_daemon(tmp_path / "alice", "Alice") as alice,
        running_daemon(tmp_path / "bob", "Bob") as bob,
    ):
        connected = p2pid_json(tmp_path / "bob", "connect", peer_multiaddr(alice))
        assert connected["peer_id"] == alice["peer_id"]
        pinged = p2pid_json(tmp_path / "bob", "ping", alice["peer_id"][:12], "--count", "2")
        assert pinged["peer_id"] == alice["peer_id"]
        assert len(pinged["rtts_ms"]) == 2 and all(rtt > 0 for rtt in pinged["rtts_ms"])
        bobs_peers = p2pid_json(tmp_path / "bob", "peers")
        assert [(p["peer_id"], p["connected"]) for p in bobs_peers] == [(alice["peer_id"], True)]
        assert status(tmp_path / "alice")["connected_peers"] == [bob["peer_id"]]


def test_unreachable_peer_and_bad_address_are_clear_errors(tmp_path: Path) -> None:
    with running_daemon(tmp_path / "alice", "Alice") as alice:
        bad = p2pid(tmp_path / "alice", "--json", "connect", "/ip4/127.0.0.1/tcp/1", check=False)
        assert bad.returncode == 1 and "/p2p/" in json.loads(bad.stdout)["error"]["message"]
        unknown = p2pid(tmp_path / "alice", "--json", "ping", "12D3KooWnobody", check=False)
        assert json.loads(unknown.stdout)["error"]["code"] == 1001
        self_ping = p2pid(tmp_path / "alice", "--json", "ping", alice["peer_id"], check=False)
        assert self_ping.returncode == 1
        assert p2pid_json(tmp_path / "alice", "peers") == []


def test_demo_starts_two_connected_nodes(tmp_path: Path) -> None:
    demo = p2pid_json(tmp_path, "demo", "--once")
    alice, bob = demo["nodes"]
    assert alice["connected_peers"] == [bob["peer_id"]]
    assert demo["ping"]["peer_id"] == alice["peer_id"]


def test_unknown_mdns_interface_fails_the_start_with_the_reason(tmp_path: Path) -> None:
    home = tmp_path / "alice"
    init_home(home, "Alice")
    args = ("--json", "daemon", "--detach", "--listen", LOOPBACK, "--mdns-interface", "nosuch0")
    result = p2pid(home, *args, check=False)
    assert result.returncode == 1
    assert "nosuch0" in json.loads(result.stdout)["error"]["message"]
    assert p2pid(home, "status", check=False).returncode == 3
