"""End to end: a `p2pid kiosk` process and two people's daemons in a network namespace with mDNS
on (its loopback only). The owner pairs by the QR PNG, the guest by the short code found over
mDNS and the owner approves; allowed / owner-only / shell-injection invocations; wrong short
codes; removal survives a kiosk restart; revoke."""

from __future__ import annotations

import json
import queue
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from p2pid.rpc.client import BlockingClient
from p2pid.rpc.protocol import RpcError
from tests.cli_helpers import p2pid, p2pid_json
from tests.daemons import LOOPBACK, init_home, start_daemon
from tests.netns import NetNs, netns, requires_netns
from tests.test_mdns_e2e import wait_until_discovered

TIMEOUT = 30.0
ROUTINES = """
[routines.echo]
command = ["/bin/echo", "{text}"]
args = [{ name = "text", kind = "string" }]
roles = ["owner", "guest"]

[routines.reboot]
command = ["/bin/echo", "rebooting"]
roles = ["owner"]
"""
MDNS = ("--listen", LOOPBACK, "--mdns-interface", "lo")


class KioskProcess:
    """`p2pid --json kiosk ...` in the namespace; its JSON lines read on a thread."""

    def __init__(self, ns: NetNs, home: Path, routines: Path, png: Path) -> None:
        argv = [sys.executable, "-m", "p2pid", "--home", str(home), "--json", "kiosk"]
        argv += ["--name", "Living room TV", "--routines", str(routines), "--qr-png", str(png)]
        self.process = ns.popen([*argv, *MDNS], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        self.lines: queue.Queue[dict[str, Any]] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.put(json.loads(line))

    def next_event(self, kind: str) -> dict[str, Any]:
        deadline = time.monotonic() + TIMEOUT
        while True:
            event = self.lines.get(timeout=max(0.1, deadline - time.monotonic()))
            if event["event"] == kind:
                return event

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=TIMEOUT)


def next_approval(client: BlockingClient) -> dict[str, Any]:
    deadline = time.monotonic() + TIMEOUT
    while time.monotonic() < deadline:
        event = client.next_event()
        if event["type"] == "kiosk.approval_requested":
            return event
    raise AssertionError("no approval request")


@requires_netns
def test_kiosk_owner_guest_invoke_lockout_restart_revoke(tmp_path: Path) -> None:
    tv, alice, bob = tmp_path / "tv", tmp_path / "alice", tmp_path / "bob"
    routines, png = tmp_path / "routines.toml", tmp_path / "qr.png"
    routines.write_text(ROUTINES)
    init_home(alice, "Alice")
    init_home(bob, "Bob")
    with netns() as ns:
        kiosk = KioskProcess(ns, tv, routines, png)
        try:
            kiosk_id = kiosk.next_event("ready")["peer_id"]
            first = kiosk.next_event("code")
            start_daemon(alice, *MDNS, prefix=ns.command([]))
            start_daemon(bob, *MDNS, prefix=ns.command([]))

            # the owner scans the PNG on the kiosk's screen
            owner = p2pid_json(alice, "pair", "--image", str(png))
            assert owner["role"] == "owner" and owner["kiosk_peer_id"] == kiosk_id
            assert kiosk.next_event("paired")["name"] == "Alice"
            second = kiosk.next_event("code")
            assert second["short_code"] != first["short_code"] and second["code"] != first["code"]
            refused = p2pid(alice, "pair", first["code"], check=False)  # a used code
            assert refused.returncode == 1 and "no longer shown" in refused.stderr

            # the guest types the short code; the kiosk is found over mDNS; the owner approves
            wait_until_discovered(bob, kiosk_id)
            with BlockingClient(alice / "daemon.sock", timeout=TIMEOUT) as watcher:
                watcher.call("subscribe")
                guest_pairing = subprocess.Popen(
                    [
                        sys.executable,
                        "-m",
                        "p2pid",
                        "--home",
                        str(bob),
                        "--json",
                        "pair",
                        "--short-code",
                        second["short_code"],
                    ],
                    stdout=subprocess.PIPE,
                    text=True,
                )
                request = next_approval(watcher)
                assert request["person_name"] == "Bob" and request["kiosk_peer_id"] == kiosk_id
                p2pid(alice, "kiosk-approve", request["request_id"], "--yes")
                out, _ = guest_pairing.communicate(timeout=TIMEOUT)
            assert guest_pairing.returncode == 0, out
            assert json.loads(out)["role"] == "guest"
            assert kiosk.next_event("paired")["role"] == "guest"

            injected = p2pid_json(bob, "kiosk-invoke", "Living", "echo", "; rm -rf / $(id) `x`")
            assert injected["ok"] and injected["output"] == "; rm -rf / $(id) `x`\n"
            owner_only = p2pid(bob, "kiosk-invoke", "Living", "reboot", check=False)
            assert owner_only.returncode == 1 and "owner only" in owner_only.stderr
            assert p2pid_json(alice, "kiosk-invoke", "Living", "reboot")["ok"]
            shown = p2pid_json(bob, "kiosk-invoke", "Living", "show-message", "hi")
            assert shown["ok"] and kiosk.next_event("message")["text"] == "hi"
            kiosks = p2pid_json(bob, "kiosks")
            assert kiosks[0]["online"] and kiosks[0]["role"] == "guest"

            # wrong short codes: a fresh code after 3, locked after 10
            with BlockingClient(tv / "daemon.sock", timeout=TIMEOUT) as kiosk_rpc:
                code_now = kiosk_rpc.call("kiosk.status")["short_code"]
            wrong = f"{(int(code_now) + 1) % 1_000_000:06d}"
            with BlockingClient(bob / "daemon.sock", timeout=TIMEOUT) as client:
                messages = []
                for _ in range(11):
                    try:
                        client.call("pair", short_code=wrong)
                    except RpcError as error:
                        messages.append(error.message)
            assert all("wrong short code" in m for m in messages[:10]), messages
            assert "locked" in messages[10] and "try again in" in messages[10]

            # the owner removes the guest; the removal holds after a kiosk restart
            guests = p2pid_json(alice, "kiosk-guests", "Living")
            assert {g["name"] for g in guests} == {"Alice", "Bob"}
            p2pid(alice, "kiosk-remove-guest", "Living", "Bob")
            kiosk.stop()
            kiosk = KioskProcess(ns, tv, routines, png)
            assert kiosk.next_event("ready")["peer_id"] == kiosk_id
            removed = p2pid(bob, "kiosk-invoke", "Living", "status", check=False)
            assert removed.returncode == 1 and "does not know this grant" in removed.stderr
            assert p2pid_json(alice, "kiosk-invoke", "Living", "status")["ok"]

            p2pid(alice, "kiosk-revoke", "Living")
            assert p2pid_json(alice, "kiosks") == []
        finally:
            kiosk.process.kill()
            p2pid(alice, "stop", check=False)
            p2pid(bob, "stop", check=False)
