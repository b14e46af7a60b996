"""`p2pid kiosk`: the headless kiosk front end. Runs the daemon in the foreground with the kiosk
role and shows, on its terminal, the pairing QR code, the short code and who paired; it can also
keep a PNG of the QR code up to date for a screen (replaced atomically on each rotation).

With --json it prints JSON lines: {"event": "ready", ...}, {"event": "code", "code", "short_code",
"expires_at"}, {"event": "paired", "name", "role", "identity_id"}, {"event": "message", "text",
"from"}.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import trio

from p2pid import qr
from p2pid.home import Home
from p2pid.kiosk.routines import RoutineBook
from p2pid.kiosk.service import KioskConfig
from p2pid.node import Node
from p2pid.wire import events


@dataclass(frozen=True)
class ConsoleOptions:
    as_json: bool
    qr_png: Path | None


def write_png_atomically(code: str, path: Path) -> None:
    temporary = path.with_name(f".{path.name}.tmp")
    qr.write_png(code, temporary)
    os.replace(temporary, path)


class Console:
    def __init__(self, options: ConsoleOptions, emit: Callable[[str], None] = print) -> None:
        self.options = options
        self._emit = emit

    def line(self, document: dict[str, Any], human: str) -> None:
        self._emit(json.dumps(document) if self.options.as_json else human)
        sys.stdout.flush()

    def attach(self, node: Node, nursery: trio.Nursery) -> None:
        receive = node.events.subscribe()
        nursery.start_soon(self.follow, node, receive)

    async def follow(self, node: Node, receive: trio.MemoryReceiveChannel[events.Event]) -> None:
        if node.kiosk is not None:  # the first code was published before we subscribed
            status = await node.kiosk.status()
            self.show_code(status.code, status.short_code, status.expires_at)
        async with receive:
            async for event in receive:
                if isinstance(event, events.KioskCode):
                    self.show_code(event.code, event.short_code, event.expires_at)
                elif isinstance(event, events.KioskPersonPaired):
                    self.line(
                        {
                            "event": "paired",
                            "name": event.name,
                            "role": event.role,
                            "identity_id": event.identity_id,
                        },
                        f"paired with {event.name} ({event.role})",
                    )
                elif isinstance(event, events.KioskMessage):
                    self.line(
                        {"event": "message", "text": event.text, "from": event.from_name},
                        f"message from {event.from_name}: {event.text}",
                    )

    def show_code(self, code: str, short_code: str, expires_at: int) -> None:
        if self.options.qr_png is not None:
            write_png_atomically(code, self.options.qr_png)
        document = {
            "event": "code",
            "code": code,
            "short_code": short_code,
            "expires_at": expires_at,
        }
        if self.options.as_json:
            self.line(document, "")
            return
        self.line(document, _terminal_qr(code))
        spaced = f"{short_code[:3]} {short_code[3:]}"
        self.line(document, f"{code}\nshort code: {spaced}   (pair with `p2pid pair`)")


def _terminal_qr(code: str) -> str:
    plain = qr.render_half_blocks_plain(code).split("\n")
    size = shutil.get_terminal_size(fallback=(200, 100))
    if size.columns < len(plain[0]):
        return "(the terminal is too narrow for the QR code: use --qr-png, or the code below)"
    return qr.render_half_blocks(code)


def kiosk_config(name: str, routines: Path | None, code_ttl_s: int) -> KioskConfig:
    book = RoutineBook.load(routines) if routines is not None else None
    return KioskConfig(name=name, routines=book, code_ttl_s=code_ttl_s)


def run_kiosk(
    home: Home,
    *,
    name: str,
    routines: Path | None,
    qr_png: Path | None,
    listen: list[str],
    interfaces: list[str],
    no_mdns: bool,
    as_json: bool,
    code_ttl_s: int,
) -> None:
    """Initialise the home (key file, unattended) if needed, then run the kiosk until stopped."""
    from p2pid import daemon
    from p2pid.provision import create_home

    config = kiosk_config(name, routines, code_ttl_s)  # a bad routines file stops us first
    if not home.is_initialised():
        create_home(home, name, None)
    daemon.configure_logging(sys.stderr)
    console = Console(ConsoleOptions(as_json=as_json, qr_png=qr_png))
    options = daemon.options_from(home.root, listen, interfaces, no_mdns)
    options = replace(options, node=replace(options.node, kiosk=config), attach=console.attach)

    def announce(peer_id: str) -> None:
        console.line(
            {"event": "ready", "peer_id": peer_id, "home": str(home.root), "name": name},
            f"kiosk {name!r} ready (peer {peer_id}); Ctrl-C stops it",
        )

    daemon.run(options, announce)
