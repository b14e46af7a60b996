"""End to end through daemons and the CLI: a contact request, SAS verification, profile fields."""

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from p2pid.rpc.client import BlockingClient
from tests.cli_helpers import p2pid, p2pid_json
from tests.daemons import peer_multiaddr, running_daemon

EVENT_TIMEOUT = 30.0


def wait_for_event(client: BlockingClient, kind: str) -> dict[str, Any]:
    deadline = time.monotonic() + EVENT_TIMEOUT
    while time.monotonic() < deadline:
        event = client.next_event()
        if event["type"] == kind:
            return event
    raise AssertionError(f"no {kind} within {EVENT_TIMEOUT} s")


def verify_in_background(home: Path, contact: str) -> subprocess.Popen[str]:
    """`contact verify CONTACT --yes` as a process: it blocks until the other side answers."""
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "p2pid",
            "--home",
            str(home),
            "--json",
            "contact",
            "verify",
            contact,
            "--yes",
        ],
        stdout=subprocess.PIPE,
        text=True,
        stdin=subprocess.DEVNULL,
    )


def subscribed(home: Path) -> BlockingClient:
    client = BlockingClient(home / "daemon.sock", timeout=EVENT_TIMEOUT)
    client.call("subscribe")
    return client


def test_request_then_sas_then_profile_fields(tmp_path: Path) -> None:
    alice_home, bob_home = tmp_path / "alice", tmp_path / "bob"
    with running_daemon(alice_home, "Alice") as alice, running_daemon(bob_home, "Bob") as bob:
        # Bob knows Alice's address but holds no invite: he asks.
        with subscribed(alice_home) as alice_events:
            sent = p2pid_json(bob_home, "request", peer_multiaddr(alice), "--note", "from the club")
            assert sent["peer_id"] == alice["peer_id"]
            received = wait_for_event(alice_events, "contact_request.received")
        assert received["name"] == "Bob" and received["note"] == "from the club"
        [pending] = p2pid_json(alice_home, "requests")
        assert pending["state"] == "pending"

        with subscribed(bob_home) as bob_events:
            p2pid_json(alice_home, "requests", "--accept", str(pending["request_id"]))
            wait_for_event(bob_events, "contact_request.accepted")
        [bob_at_alice] = p2pid_json(alice_home, "contacts")
        [alice_at_bob] = p2pid_json(bob_home, "contacts")
        assert bob_at_alice["identity_id"] == bob["identity_id"] and not bob_at_alice["verified"]
        assert alice_at_bob["identity_id"] == alice["identity_id"] and not alice_at_bob["verified"]

        # SAS: Alice starts and waits; Bob answers the request she sent; both say the codes match.
        with subscribed(bob_home) as bob_events:
            alice_side = verify_in_background(alice_home, "Bob")
            wait_for_event(bob_events, "verification.requested")
        bob_side = p2pid_json(bob_home, "contact", "verify", "Alice", "--yes")
        alice_out, _ = alice_side.communicate(timeout=EVENT_TIMEOUT)
        alice_result = json.loads(alice_out)
        assert bob_side["verified"] and alice_result["verified"]
        assert bob_side["emoji"] == alice_result["emoji"] and len(bob_side["emoji"]) == 7
        assert bob_side["decimals"] == alice_result["decimals"]
        assert p2pid_json(alice_home, "contact", "show", "Bob")["verified_by"] == "sas"
        assert p2pid_json(bob_home, "contact", "show", "Alice")["verified_by"] == "sas"

        # Profile: a contacts field reaches Bob; a chosen field only once shared, gone on revoke.
        with subscribed(bob_home) as bob_events:
            p2pid_json(alice_home, "profile", "set", "phone", "+1 555 0100")
            wait_for_event(bob_events, "contact.profile_updated")
            assert p2pid_json(bob_home, "contact", "show", "Alice")["fields"] == {
                "phone": "+1 555 0100"
            }
            p2pid_json(
                alice_home, "profile", "set", "email", "a@example.org", "--audience", "chosen"
            )
            p2pid_json(alice_home, "profile", "share", "email", "Bob")
            wait_for_event(bob_events, "contact.profile_updated")
            assert (
                p2pid_json(bob_home, "contact", "show", "Alice")["fields"]["email"]
                == "a@example.org"
            )
            p2pid_json(alice_home, "profile", "revoke", "email", "Bob")
            wait_for_event(bob_events, "contact.profile_updated")
        assert p2pid_json(bob_home, "contact", "show", "Alice")["fields"] == {
            "phone": "+1 555 0100"
        }
        shown = {f["name"]: f for f in p2pid_json(alice_home, "profile", "show")}
        assert shown["email"]["audience"] == "chosen" and shown["email"]["granted_to"] == []


def test_mismatch_verifies_nobody_and_bad_profile_input_is_refused(tmp_path: Path) -> None:
    alice_home, bob_home = tmp_path / "alice", tmp_path / "bob"
    with running_daemon(alice_home, "Alice"), running_daemon(bob_home, "Bob"):
        p2pid_json(bob_home, "join", p2pid_json(alice_home, "invite")["code"])
        with subscribed(bob_home) as bob_events:
            alice_side = verify_in_background(alice_home, "Bob")
            wait_for_event(bob_events, "verification.requested")
        bob_side = p2pid(bob_home, "--json", "contact", "verify", "Alice", "--no", check=False)
        alice_out, _ = alice_side.communicate(timeout=EVENT_TIMEOUT)
        assert bob_side.returncode == 1 and alice_side.returncode == 1
        assert json.loads(bob_side.stdout)["verified"] is False
        assert json.loads(alice_out)["reason"] == "mismatch"
        # Verified by the invite before; a mismatch does not take that back, nor add 'sas'.
        assert p2pid_json(alice_home, "contact", "show", "Bob")["verified_by"] == "invite"

        for bad in (["name", "Alice"], ["Phone", "1"], ["phone", "x" * 1001], ["phone", "a\x07"]):
            result = p2pid(alice_home, "--json", "profile", "set", *bad, check=False)
            assert result.returncode == 1, bad
        assert p2pid_json(alice_home, "profile", "show") == []
