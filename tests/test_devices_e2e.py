"""Linking my own devices end to end: real daemons, the real CLI, the new device's
`p2pid device link` as a subprocess.

Alice has a contact, Bob, and a history with him. She links a laptop: it gets her identity,
Bob and the history; Bob's messages reach both devices; what either device sends shows on the
other. Then she revokes the laptop: it wipes itself, and Bob stops writing to it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.cli_helpers import p2pid, p2pid_json
from tests.daemons import LOOPBACK, running_daemon, start_daemon
from tests.messaging_helpers import (
    LineReader,
    become_contacts,
    call,
    fixed_listen,
    free_port,
    wait_until,
)

TIMEOUT = 30.0


def start_link(home: Path, name: str, *extra: str) -> LineReader:
    """`p2pid device link --json` on a new home; its JSON lines are read as they come."""
    env = {k: v for k, v in os.environ.items() if k != "P2PID_HOME"}
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "p2pid",
            "--home",
            str(home),
            "--json",
            "device",
            "link",
            "--name",
            name,
            "--listen",
            LOOPBACK,
            *extra,
        ],
        stdout=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
        env=env,
    )
    return LineReader(process)


def next_json(reader: LineReader, event: str) -> dict[str, Any]:
    match = reader.wait_for(rf'\{{"event": "{event}".*', TIMEOUT)
    assert match is not None, reader.lines
    return dict(json.loads(match.group(0)))


def link(alice: Path, laptop: Path, *approve: str) -> dict[str, Any]:
    reader = start_link(laptop, "laptop")
    try:
        code = next_json(reader, "code")["code"]
        approved = p2pid_json(alice, "device", "approve", code, "--yes", *approve)
        confirm = next_json(reader, "confirm")
        assert confirm["confirmation"] == approved["confirmation"]
        linked = next_json(reader, "linked")
        assert reader.process.wait(timeout=TIMEOUT) == 0
        return {"approved": approved, "linked": linked}
    finally:
        reader.close()


def bodies(home: Path, contact: str) -> list[tuple[bool, str]]:
    page = call(home, "messages", contact=contact, limit=500, mark_read=False)
    return [(m["outgoing"], m["text"]) for m in page["messages"]]


def test_link_sync_copies_and_revoke(tmp_path: Path) -> None:
    alice, bob, laptop = tmp_path / "alice", tmp_path / "bob", tmp_path / "laptop"
    with running_daemon(alice, "Alice"), running_daemon(bob, "Bob"):
        become_contacts(alice, bob)
        p2pid_json(alice, "send", "Bob", "before the laptop")
        wait_until(lambda: bodies(bob, "Alice"), TIMEOUT, "Bob has Alice's first message")
        p2pid_json(bob, "send", "Alice", "hello Alice")
        wait_until(lambda: len(bodies(alice, "Bob")) == 2, TIMEOUT, "Alice has Bob's answer")

        result = link(alice, laptop)
        assert result["linked"]["contacts"] == 1
        assert result["linked"]["messages"] == 2
        assert result["approved"]["messages"] == 2
        alice_status = call(alice, "status")
        start_daemon(laptop, "--listen", LOOPBACK, "--no-mdns")
        try:
            laptop_status = call(laptop, "status")
            assert laptop_status["identity_id"] == alice_status["identity_id"]
            assert laptop_status["peer_id"] != alice_status["peer_id"]
            assert bodies(laptop, "Bob") == [(True, "before the laptop"), (False, "hello Alice")]
            devices = {d["name"]: d for d in call(alice, "devices")}
            assert set(devices) >= {"laptop"} and len(devices) == 2
            # Bob learns Alice's new device list, then writes to both of her devices.
            bob_sees = lambda: [  # noqa: E731
                c for c in call(bob, "contacts") if c["name"] == "Alice" and len(c["devices"]) == 2
            ]
            wait_until(bob_sees, TIMEOUT, "Bob has Alice's two devices")
            p2pid_json(bob, "send", "Alice", "to both")
            for home in (alice, laptop):
                wait_until(
                    lambda h=home: (False, "to both") in bodies(h, "Bob"),
                    TIMEOUT,
                    f"{home.name} got Bob's message",
                )
            # Reading on one device reads on the other.
            unread = lambda: next(  # noqa: E731
                c["unread"] for c in call(laptop, "conversations") if c["name"] == "Bob"
            )
            assert unread() >= 1
            call(alice, "messages", contact="Bob")  # marks the conversation read
            wait_until(lambda: unread() == 0, TIMEOUT, "the laptop shows Bob's messages read")
            # What one device sends shows on the other as sent.
            p2pid_json(laptop, "send", "Bob", "from the laptop")
            wait_until(
                lambda: (True, "from the laptop") in bodies(alice, "Bob"),
                TIMEOUT,
                "Alice's phone shows what the laptop sent",
            )
            wait_until(
                lambda: (False, "from the laptop") in bodies(bob, "Alice"),
                TIMEOUT,
                "Bob got the laptop's message",
            )
            # Renaming a contact on one device renames it on the other.
            p2pid_json(laptop, "contact", "rename", "Bob", "Bobby")
            wait_until(
                lambda: [c for c in call(alice, "contacts") if c["nickname"] == "Bobby"],
                TIMEOUT,
                "the rename reached Alice's phone",
            )
            # So does a profile field set on one device, which Bob then sees too.
            call(laptop, "profile.set", name="phone", value="+1 555 0100", audience="contacts")
            wait_until(
                lambda: [f for f in call(alice, "profile.show") if f["name"] == "phone"],
                TIMEOUT,
                "the profile field reached Alice's phone",
            )
            wait_until(
                lambda: [
                    c for c in call(bob, "contacts") if c["fields"].get("phone") == "+1 555 0100"
                ],
                TIMEOUT,
                "Bob sees the field",
            )
            # Revoke: the laptop wipes its identity and stops; Bob drops the device.
            revoked = p2pid_json(alice, "device", "revoke", "laptop")
            assert revoked["version"] == 3
            wait_until(lambda: not (laptop / "p2pid.db").exists(), TIMEOUT, "the laptop wiped")
            assert not (laptop / "vault.key").exists()
            wait_until(
                lambda: [
                    c
                    for c in call(bob, "contacts")
                    if c["name"] == "Alice" and len(c["devices"]) == 1
                ],
                TIMEOUT,
                "Bob dropped the revoked device",
            )
            listed = {d["name"]: d for d in call(alice, "devices")}
            assert listed["laptop"]["revoked"] is True
        finally:
            p2pid(laptop, "stop", check=False)


def test_bad_link_codes_change_nothing(tmp_path: Path) -> None:
    alice = tmp_path / "alice"
    with running_daemon(alice, "Alice"):
        invite = p2pid_json(alice, "invite")["code"]
        before = [(d["peer_id"], d["revoked"]) for d in call(alice, "devices")]
        cases = {
            "not-a-code": "not a p2pid code",
            invite: "not a device-link one",
            invite[:-4] + ("AAAA" if not invite.endswith("AAAA") else "BBBB"): "",
        }
        for code, message in cases.items():
            failed = p2pid(alice, "--json", "device", "approve", code, "--yes", check=False)
            assert failed.returncode == 1, failed.stdout
            assert message.lower() in json.loads(failed.stdout)["error"]["message"].lower()
        usage = p2pid(alice, "--json", "device", "approve", "--yes", check=False)
        assert usage.returncode == 2
        bad_history = p2pid(
            alice, "--json", "device", "approve", "X", "--history", "days", check=False
        )
        assert bad_history.returncode == 2
        assert [(d["peer_id"], d["revoked"]) for d in call(alice, "devices")] == before
        refused = p2pid(alice, "--json", "device", "revoke", "nonexistent", check=False)
        assert refused.returncode == 1
        this = call(alice, "devices")[0]["peer_id"]
        refused = p2pid(alice, "--json", "device", "revoke", this, check=False)
        assert "another device" in json.loads(refused.stdout)["error"]["message"]


@pytest.mark.parametrize("history", ["none", "days"])
def test_history_choice(tmp_path: Path, history: str) -> None:
    alice, bob, laptop = tmp_path / "alice", tmp_path / "bob", tmp_path / "laptop"
    with running_daemon(alice, "Alice"), running_daemon(bob, "Bob"):
        become_contacts(alice, bob)
        p2pid_json(alice, "send", "Bob", "recent")
        extra = ("--history", "none") if history == "none" else ("--history", "days", "--days", "1")
        result = link(alice, laptop, *extra)
        assert result["linked"]["contacts"] == 1
        assert result["linked"]["messages"] == (0 if history == "none" else 1)


def alice_devices_at_bob(bob: Path) -> int:
    return next(len(c["devices"]) for c in call(bob, "contacts") if c["name"] == "Alice")


def test_a_device_revoked_while_offline_reads_nothing_new_and_wipes_when_told(
    tmp_path: Path,
) -> None:
    alice, bob, laptop = tmp_path / "alice", tmp_path / "bob", tmp_path / "laptop"
    # The laptop keeps its port across restarts, so Alice's outbox finds it again.
    laptop_listen = fixed_listen(free_port())
    with running_daemon(bob, "Bob"):
        with running_daemon(alice, "Alice"):
            become_contacts(alice, bob)
            link(alice, laptop)
            start_daemon(laptop, *laptop_listen)
            wait_until(lambda: alice_devices_at_bob(bob) == 2, TIMEOUT, "Bob has the laptop")
            p2pid(laptop, "stop")
            p2pid_json(alice, "device", "revoke", "laptop")
            wait_until(lambda: alice_devices_at_bob(bob) == 1, TIMEOUT, "Bob dropped the laptop")
            p2pid_json(bob, "send", "Alice", "after the revocation")
            wait_until(
                lambda: (False, "after the revocation") in bodies(alice, "Bob"),
                TIMEOUT,
                "Alice's remaining device got it",
            )
        # Alice is offline: nobody can tell the laptop yet. It still holds the keys, and
        # gets nothing new; what it sends, Bob refuses.
        start_daemon(laptop, *laptop_listen)
        try:
            p2pid_json(laptop, "send", "Bob", "from a revoked device")
            wait_until(
                lambda: call(bob, "messages.stats")["dropped"].get("not_contact", 0) >= 1,
                TIMEOUT,
                "Bob refused the revoked device",
            )
            assert (False, "from a revoked device") not in bodies(bob, "Alice")
            assert (False, "after the revocation") not in bodies(laptop, "Bob")
            # Alice comes back: her outbox tells the laptop, which wipes its identity.
            with running_daemon(alice, "Alice"):
                wait_until(lambda: not (laptop / "p2pid.db").exists(), TIMEOUT, "the laptop wiped")
                assert not (laptop / "vault.key").exists()
        finally:
            p2pid(laptop, "stop", check=False)


def test_a_refused_approval_ends_the_link_and_creates_nothing(tmp_path: Path) -> None:
    alice, laptop = tmp_path / "alice", tmp_path / "laptop"
    with running_daemon(alice, "Alice"):
        reader = start_link(laptop, "laptop")
        try:
            code = next_json(reader, "code")["code"]
            # Without a terminal to compare the codes in, approve refuses before it dials.
            no_terminal = p2pid(alice, "--json", "device", "approve", code, check=False)
            assert no_terminal.returncode == 2, no_terminal.stdout
            pending = call(alice, "device.approve", code=code)
            assert next_json(reader, "confirm")["confirmation"] == pending["confirmation"]
            assert call(alice, "device.approve.confirm", link_id=pending["link_id"], accept=False)
            error = next_json(reader, "error")
            assert "refused" in error["message"] or "stopped" in error["message"]
            assert reader.process.wait(timeout=TIMEOUT) == 1
        finally:
            reader.close()
        assert not (laptop / "p2pid.db").exists()
        assert len(call(alice, "devices")) == 1
    bad_name = p2pid(tmp_path / "other", "--json", "device", "link", "--name", "\x07", check=False)
    assert bad_name.returncode == 2
