"""End to end: two daemons become verified contacts through a QR invite written as PNG."""

import json
from pathlib import Path

from p2pid.qr import decode_image
from tests.cli_helpers import p2pid, p2pid_json
from tests.daemons import running_daemon


def error_of(home: Path, *args: str) -> dict[str, object]:
    result = p2pid(home, "--json", *args, check=False)
    assert result.returncode != 0, result.stdout
    return dict(json.loads(result.stdout)["error"])


def test_invite_png_join_and_verified_contacts_both_ways(tmp_path: Path) -> None:
    alice_home, bob_home, carol_home = tmp_path / "alice", tmp_path / "bob", tmp_path / "carol"
    with (
        running_daemon(alice_home, "Alice") as alice,
        running_daemon(bob_home, "Bob") as bob,
        running_daemon(carol_home, "Carol"),
    ):
        png = tmp_path / "invite.png"
        invite = p2pid_json(alice_home, "invite", "--png", str(png))
        assert invite["code"].startswith("P2PID:") and invite["uses"] == 1
        assert invite["qr"]["version"] <= 10
        assert decode_image(png) == invite["code"]  # as a phone camera would read it

        joined = p2pid_json(bob_home, "join", "--image", str(png))
        assert joined["name"] == "Alice"
        assert joined["verified"] and joined["verified_by"] == "invite"
        assert [d["peer_id"] for d in joined["devices"]] == [alice["peer_id"]]
        assert joined["identity_id"] == alice["identity_id"]

        [bob_at_alice] = p2pid_json(alice_home, "contacts")
        assert bob_at_alice["identity_id"] == bob["identity_id"]
        assert bob_at_alice["verified"] and bob_at_alice["devices"][0]["peer_id"] == bob["peer_id"]

        # The secret is burnt: a second person cannot use the single-use invite.
        spent = error_of(carol_home, "join", invite["code"])
        assert "used up" in str(spent["message"])
        assert p2pid_json(carol_home, "contacts") == []
        assert p2pid_json(alice_home, "invites") == []
        [used] = p2pid_json(alice_home, "invites", "--all")
        assert used["state"] == "spent" and used["code"] is None

        renamed = p2pid_json(alice_home, "contact", "rename", "Bob", "Bobby")
        assert renamed["name"] == "Bobby" and renamed["display_name"] == "Bob"
        shown = p2pid_json(alice_home, "contact", "show", bob["identity_id"][:8])
        assert shown["nickname"] == "Bobby"
        assert shown["fingerprint"].replace(" ", "") == bob["identity_id"]


def test_bad_invites_are_refused_and_change_nothing(tmp_path: Path) -> None:
    alice_home, bob_home = tmp_path / "alice", tmp_path / "bob"
    with running_daemon(alice_home, "Alice"), running_daemon(bob_home, "Bob"):
        code = p2pid_json(alice_home, "invite", "--uses", "2")["code"]
        forged = code[:-12] + ("A" if code[-12] != "A" else "B") + code[-11:]
        assert "invite" in str(error_of(bob_home, "join", forged)["message"])
        garbage = error_of(bob_home, "join", "P2PID:NOTBASE32!")
        assert "not a p2pid invite" in str(garbage["message"])
        assert "own invite" in str(error_of(alice_home, "join", code)["message"])

        [live] = p2pid_json(alice_home, "invites")
        assert live["uses_left"] == 2
        p2pid_json(alice_home, "invites", "--cancel", live["invite_id"])
        assert "cancelled" in str(error_of(bob_home, "join", code)["message"])
        assert p2pid_json(bob_home, "contacts") == []
        assert p2pid_json(alice_home, "contacts") == []

        not_an_image = tmp_path / "photo.png"
        not_an_image.write_text("not an image")
        assert error_of(bob_home, "join", "--image", str(not_an_image))


def test_blocked_joiner_is_dropped(tmp_path: Path) -> None:
    alice_home, bob_home = tmp_path / "alice", tmp_path / "bob"
    with running_daemon(alice_home, "Alice"), running_daemon(bob_home, "Bob"):
        p2pid_json(bob_home, "join", p2pid_json(alice_home, "invite")["code"])
        p2pid_json(alice_home, "contact", "block", "Bob")
        p2pid_json(bob_home, "contact", "remove", "Alice")
        again = error_of(bob_home, "join", p2pid_json(alice_home, "invite")["code"])
        assert again
        assert p2pid_json(bob_home, "contacts") == []
        [bob_at_alice] = p2pid_json(alice_home, "contacts")
        assert bob_at_alice["blocked"]
