"""CLI commands for my own devices: `device link|approve|revoke` and `devices`.

`device link` runs in the foreground on the NEW device (it has no identity, so no daemon yet);
the others are clients of the daemon of a linked device.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

from p2pid.cli import (
    EXIT_ERROR,
    EXIT_OK,
    Output,
    UsageError,
    call,
    format_time,
    terminal_qr,
)
from p2pid.home import Home

HISTORY_CHOICES = ("none", "all", "days")


def add_device_commands(commands: Any) -> None:
    commands.add_parser("devices", help="my devices: name, PeerId, last seen, revoked")
    device = commands.add_parser("device", help="link, approve or revoke a device of mine")
    actions = device.add_subparsers(dest="action", metavar="ACTION", required=True)
    link = actions.add_parser(
        "link", help="on a NEW device: show a code that one of my linked devices approves"
    )
    link.add_argument("--name", default=None, help="this device's name (default: host name)")
    link.add_argument("--png", type=Path, help="also write the code's QR as a PNG")
    link.add_argument("--timeout", type=float, default=600.0, help="seconds to wait (<= 600)")
    link.add_argument("--listen", action="append", default=[], metavar="MULTIADDR")
    link.add_argument("--interface", action="append", default=[], metavar="IFACE")
    link.add_argument(
        "--passphrase", action="store_true", help="protect this home with a passphrase"
    )
    link.add_argument(
        "--yes",
        action="store_true",
        help="do not ask here whether the codes match (the approving device still asks)",
    )
    approve = actions.add_parser("approve", help="link the device showing CODE to my identity")
    approve.add_argument("code", metavar="CODE", nargs="?")
    approve.add_argument("--image", type=Path, help="read the code from a QR image")
    approve.add_argument(
        "--yes", action="store_true", help="do not ask: the confirmation codes were compared"
    )
    approve.add_argument("--history", choices=HISTORY_CHOICES, default="all")
    approve.add_argument("--days", type=int, help="with --history days: how many days back")
    revoke = actions.add_parser("revoke", help="remove a device of mine (it wipes itself)")
    revoke.add_argument("device", metavar="ID", help="PeerId, unique PeerId prefix, or name")


def cmd_devices(home: Home, args: argparse.Namespace, output: Output) -> int:
    output.emit(call(home, "devices"), format_devices)
    return EXIT_OK


def cmd_device(home: Home, args: argparse.Namespace, output: Output) -> int:
    if args.action == "link":
        return _link(home, args, output)
    if args.action == "approve":
        return _approve(home, args, output)
    result = call(home, "device.revoke", device=args.device)
    output.emit(
        result,
        lambda r: (
            f"revoked {r['peer_id']}: device list version {r['version']} "
            "goes to your contacts and devices"
        ),
    )
    return EXIT_OK


def _link(home: Home, args: argparse.Namespace, output: Output) -> int:
    import platform

    import trio

    from p2pid.cli import ask_new_passphrase
    from p2pid.linking import LinkOptions, link_new_device
    from p2pid.node import DEFAULT_LISTEN
    from p2pid.protocols.device_link import ApproverInfo, LinkError
    from p2pid.provision import HomeError, require_new_home, validate_name
    from p2pid.qr import render_half_blocks, render_half_blocks_plain, write_png

    if not 0 < args.timeout <= 600:
        raise UsageError("p2pid device link: --timeout must be in (0, 600] seconds")
    try:
        device_name = validate_name(args.name or platform.node() or "device")
    except HomeError as error:
        raise UsageError(f"p2pid device link: --name: {error}") from None
    try:
        require_new_home(home)
    except HomeError as error:
        raise UsageError(f"p2pid device link: {error}; use a new --home") from None
    ask_here = not args.yes and not output.as_json and sys.stdin.isatty()

    async def confirm_here(approver: ApproverInfo) -> bool:
        question = f"Does {approver.name}'s device show {approver.confirmation}? [y/N] "
        reply = await trio.to_thread.run_sync(input, question)
        return reply.strip().lower() in ("y", "yes")

    options = LinkOptions(
        device_name=device_name,
        listen_addrs=tuple(args.listen) or DEFAULT_LISTEN,
        interfaces=tuple(args.interface) or None,
        timeout_seconds=args.timeout,
        passphrase=ask_new_passphrase() if args.passphrase else None,
        confirm=confirm_here if ask_here else None,
    )

    def report(event: dict[str, Any]) -> None:
        if event["event"] == "code" and args.png is not None:
            write_png(event["code"], args.png)
        if output.as_json:
            output.emit(event, str)
            return
        if event["event"] == "code":
            print(terminal_qr(event["code"], render_half_blocks, render_half_blocks_plain))
            print(event["code"])
            print(
                f"On a device already linked, run `p2pid device approve CODE` (or scan this); "
                f"expires {format_time(event['expires_at'])}"
            )
        elif event["event"] == "confirm":
            print(f"{event['approver']} is linking this device. Confirmation code:")
            print(f"\n    {event['confirmation']}\n")
            print("It must match the code on the approving device.")
        elif event["event"] == "refused":
            print(f"refused an attempt: {event['message']}", file=sys.stderr)
        sys.stdout.flush()

    try:
        linked = trio.run(link_new_device, home, options, report)
    except LinkError as error:
        if output.as_json:
            output.emit({"event": "error", "message": str(error)}, str)
        else:
            output.error("link", str(error))
        return EXIT_ERROR
    output.emit(
        {
            "event": "linked",
            "identity_id": linked.identity_id,
            "name": linked.name,
            "peer_id": linked.peer_id,
            "contacts": linked.contacts,
            "messages": linked.messages,
        },
        lambda d: (
            f"linked to {d['name']}: {d['contacts']} contacts, {d['messages']} messages "
            f"copied. Start it with `p2pid daemon --detach` (or just `p2pid`)."
        ),
    )
    return EXIT_OK


def _approve(home: Home, args: argparse.Namespace, output: Output) -> int:
    if (args.code is None) == (args.image is None):
        raise UsageError("p2pid device approve: give CODE or --image FILE (one of them)")
    if args.history == "days" and (args.days is None or args.days < 1):
        raise UsageError("p2pid device approve: --history days needs --days N (N >= 1)")
    if args.history != "days" and args.days is not None:
        raise UsageError("p2pid device approve: --days goes with --history days")
    if not args.yes and not sys.stdin.isatty():
        raise UsageError("p2pid device approve: compare the codes in a terminal, or pass --yes")
    code = args.code
    if args.image is not None:
        from p2pid.qr import decode_image

        code = decode_image(args.image)
    started = time.monotonic()
    pending = call(home, "device.approve", code=code)
    accept = args.yes
    if not accept:
        print(f"Linking {pending['device_name']} ({pending['device_peer_id']}).")
        print(f"\n    {pending['confirmation']}\n")
        reply = input("Does the new device show this code? [y/N] ").strip().lower()
        accept = reply in ("y", "yes")
    params: dict[str, Any] = {"link_id": pending["link_id"], "accept": accept}
    params["history"] = args.history
    if args.days is not None:
        params["days"] = args.days
    result = call(home, "device.approve.confirm", **params)
    if not accept:
        output.emit({"cancelled": True}, lambda _: "not linked: nothing changed")
        return EXIT_ERROR
    result = {
        **result,
        "confirmation": pending["confirmation"],
        "seconds": time.monotonic() - started,
    }
    output.emit(
        result,
        lambda r: (
            f"linked {r['device_name']} ({r['device_peer_id']}): "
            f"{r['contacts']} contacts and {r['messages']} messages handed over"
        ),
    )
    return EXIT_OK


def format_devices(devices: list[dict[str, Any]]) -> str:
    lines = []
    for device in devices:
        if device["revoked"]:
            state = "revoked"
        elif device["this_device"]:
            state = "this device"
        elif device["connected"]:
            state = "online"
        elif device["last_seen_ms"]:
            state = f"seen {format_time(device['last_seen_ms'] // 1000)}"
        else:
            state = "never seen"
        lines.append(f"{device['name']:<24}  {device['peer_id']}  {state}")
    return "\n".join(lines) or "no devices"
