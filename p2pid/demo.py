"""`p2pid demo`: two nodes with temporary homes on 127.0.0.1, to try p2pid alone.

mDNS is off; the second node is handed the first's address directly. They become contacts (Bob
uses Alice's invite), Bob writes first and answers whatever Alice writes. In a terminal the TUI
opens on Alice's home; otherwise (or with --no-tui) the nodes' events are printed. Quitting stops
both nodes and deletes their homes.
"""

from __future__ import annotations

import contextlib
import json
import sys
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from p2pid.home import Home
from p2pid.launcher import start_detached, stop_daemon
from p2pid.provision import create_home
from p2pid.rpc.client import BlockingClient

DEMO_NODES = ("Alice", "Bob")
LOOPBACK = "/ip4/127.0.0.1/tcp/0"


@contextlib.contextmanager
def demo_nodes(root: Path) -> Iterator[list[Home]]:
    homes = [Home(root / name.lower()) for name in DEMO_NODES]
    started: list[Home] = []
    try:
        for name, home in zip(DEMO_NODES, homes, strict=True):
            create_home(home, name, passphrase=None)
            start_detached(home, listen=[LOOPBACK], no_mdns=True)
            started.append(home)
        yield homes
    finally:
        for home in started:
            with contextlib.suppress(Exception):
                stop_daemon(home)


def call(home: Home, method: str, **params: Any) -> Any:
    with BlockingClient(home.socket) as client:
        return client.call(method, **params)


def connect_pair(first: Home, second: Home) -> dict[str, Any]:
    first_status = call(first, "status")
    address = f"{first_status['listen_addrs'][0]}/p2p/{first_status['peer_id']}"
    call(second, "connect", addr=address)
    return dict(call(second, "ping", peer=first_status["peer_id"], count=3))


def make_contacts(alice: Home, bob: Home) -> None:
    code = call(alice, "invite.create", uses=1, ttl=600)["code"]
    call(bob, "join", code=code)
    call(bob, "send", contact="Alice", text=GREETING)


GREETING = "Hi Alice! I am Bob, a second node on this machine. Write to me: I answer."


def answer_alice(bob: Home) -> None:
    """Bob's side of the demo: echo every message he receives, so both directions show."""
    with contextlib.suppress(Exception), BlockingClient(bob.socket, timeout=None) as client:
        for event in client.events():
            if event.get("type") == "message.received":
                text = str(event["message"]["text"])
                with BlockingClient(bob.socket) as replier:
                    replier.call("send", contact="Alice", text=f"You wrote: {text}")


def show(homes: list[Home], ping: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title="p2pid demo: two nodes on 127.0.0.1")
    for column in ("node", "identity", "peer id", "listening", "connected to"):
        table.add_column(column, overflow="fold")
    for home in homes:
        status = call(home, "status")
        table.add_row(
            status["name"],
            status["identity_id"][:16] + "…",
            status["peer_id"],
            "\n".join(status["listen_addrs"]),
            "\n".join(status["connected_peers"]) or "-",
        )
    console = Console()
    console.print(table)
    rtts = ", ".join(f"{rtt:.2f} ms" for rtt in ping["rtts_ms"])
    console.print(f"Bob pinged Alice: {rtts}")
    console.print(f"Try: .venv/bin/p2pid --home {homes[0].root} status")
    console.print("Events follow; Ctrl-C stops both nodes and deletes their homes.")


def watch_all(homes: list[Home]) -> None:
    def follow(home: Home) -> None:
        with contextlib.suppress(Exception), BlockingClient(home.socket, timeout=None) as client:
            for event in client.events():
                print(f"[{home.root.name}] {json.dumps(event)}", flush=True)

    threads = [threading.Thread(target=follow, args=(home,), daemon=True) for home in homes]
    for thread in threads:
        thread.start()
    threading.Event().wait()


def run_demo(*, once: bool, as_json: bool, tui: bool) -> int:
    with tempfile.TemporaryDirectory(prefix="p2pid-demo-") as root, demo_nodes(Path(root)) as homes:
        alice, bob = homes
        ping = connect_pair(alice, bob)
        make_contacts(alice, bob)
        if as_json:
            statuses = [call(home, "status") for home in homes]
            print(json.dumps({"nodes": statuses, "ping": ping}), flush=True)
        elif not (tui and sys.stdout.isatty()):
            show(homes, ping)
        if once:
            return 0
        threading.Thread(target=answer_alice, args=(bob,), daemon=True).start()
        if tui and sys.stdout.isatty() and not as_json:
            from p2pid.tui.app import P2pidApp
            from p2pid.tui.link import DaemonOptions

            P2pidApp(alice, daemon=DaemonOptions(listen=[LOOPBACK], no_mdns=True)).run()
        else:
            watch_all(homes)
    return 0
