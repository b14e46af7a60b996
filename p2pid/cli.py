"""The command line. A client of the daemon: it never imports libp2p, trio or the store at
module level, so every command starts fast. `init`, `daemon` and `demo` import what they need
when they run."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn

from p2pid import __version__
from p2pid.errors import describe_failure
from p2pid.home import Home, default_home
from p2pid.rpc.client import BlockingClient
from p2pid.rpc.protocol import ErrorCode, RpcError

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_NO_DAEMON = 3


class UsageError(Exception):
    pass


class Parser(argparse.ArgumentParser):
    """argparse that raises instead of exiting, so errors honour --json."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{self.prog}: {message}")


class Output:
    def __init__(self, as_json: bool) -> None:
        self.as_json = as_json

    def emit(self, document: Any, human: Callable[[Any], str]) -> None:
        if self.as_json:
            print(json.dumps(document), flush=True)
        else:
            print(human(document), flush=True)

    def error(self, code: int | str, message: str) -> None:
        if self.as_json:
            print(json.dumps({"error": {"code": code, "message": message}}), flush=True)
        else:
            print(f"p2pid: error: {message}", file=sys.stderr, flush=True)


def build_parser() -> Parser:
    parser = Parser(prog="p2pid", description="A peer-to-peer identity and messaging node.")
    parser.add_argument(
        "--home", type=Path, help="node directory (default $P2PID_HOME, then the user data dir)"
    )
    parser.add_argument("--json", action="store_true", help="print one JSON document per result")
    parser.add_argument("--version", action="version", version=f"p2pid {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)

    init = commands.add_parser("init", help="create the identity in the home directory")
    init.add_argument("--name", required=True)
    init.add_argument(
        "--passphrase",
        action="store_true",
        help="protect the vault key with a passphrase (asked, or $P2PID_PASSPHRASE) "
        "instead of a 0600 key file",
    )

    daemon = commands.add_parser("daemon", help="run the node")
    daemon.add_argument("--listen", action="append", default=[], metavar="MADDR")
    daemon.add_argument("--mdns-interface", action="append", default=[], metavar="IF")
    daemon.add_argument("--no-mdns", action="store_true")
    daemon.add_argument("--detach", action="store_true", help="run in the background")

    commands.add_parser("stop", help="stop the daemon")
    commands.add_parser("status", help="identity, addresses, peers")
    commands.add_parser("peers", help="known, discovered and connected peers")
    ping = commands.add_parser("ping", help="libp2p ping a peer")
    ping.add_argument("peer", metavar="PEER", help="PeerId, unique prefix, or /p2p/ multiaddr")
    ping.add_argument("--count", type=int, default=3)
    connect = commands.add_parser("connect", help="connect to a peer by multiaddr")
    connect.add_argument(
        "addr", metavar="MADDR", help="e.g. /ip4/127.0.0.1/tcp/4001/p2p/12D3Koo..."
    )
    commands.add_parser(
        "watch", help="show incoming messages, receipts and other events as they happen"
    )
    send = commands.add_parser("send", help="send a message to a contact")
    send.add_argument("contact", metavar="CONTACT", help="name, nickname or identity id")
    send.add_argument("text", metavar="TEXT", help="the message ('-' reads it from stdin)")
    messages = commands.add_parser(
        "messages", help="a conversation's latest messages (marks them read), or search them"
    )
    messages.add_argument(
        "contact", nargs="?", metavar="CONTACT", help="the conversation (all, with --search)"
    )
    messages.add_argument("--limit", type=int, default=20, help="how many (20; at most 500)")
    messages.add_argument("--search", metavar="Q", help='full-text search (words, "phrase", pre*)')
    messages.add_argument("--before", metavar="CURSOR", help="the page before this cursor")
    messages.add_argument("--no-read", action="store_true", help="do not mark them read")
    commands.add_parser("chats", help="conversations, most recent first, with unread counts")

    invite = commands.add_parser("invite", help="show a QR invite that adds you as a contact")
    invite.add_argument("--uses", type=int, default=1, help="how many people may use it (1)")
    invite.add_argument(
        "--ttl", type=int, default=24 * 3600, metavar="SECONDS", help="lifetime (1 day)"
    )
    invite.add_argument("--png", type=Path, metavar="FILE", help="also write the QR as a PNG image")
    invite.add_argument("--no-qr", action="store_true", help="print the code only")
    invites = commands.add_parser("invites", help="list live invites (or cancel one)")
    invites.add_argument("--all", action="store_true", help="include spent, expired and cancelled")
    invites.add_argument("--cancel", metavar="INVITE_ID", help="cancel this invite")
    join = commands.add_parser("join", help="become contacts with the person whose invite this is")
    join_source = join.add_mutually_exclusive_group(required=True)
    join_source.add_argument("code", nargs="?", metavar="CODE", help="the invite text (P2PID:...)")
    join_source.add_argument(
        "--image", type=Path, metavar="FILE", help="a photo or screenshot of the QR"
    )

    commands.add_parser("contacts", help="list contacts")
    request = commands.add_parser("request", help="ask someone to become contacts (no invite)")
    request.add_argument("peer", metavar="PEER", help="PeerId, unique prefix, or /p2p/ multiaddr")
    request.add_argument("--note", default="", help="a short note (at most 280 characters)")
    requests = commands.add_parser("requests", help="contact requests waiting for you")
    requests.add_argument("--all", action="store_true", help="also accepted and declined ones")
    answer_request = requests.add_mutually_exclusive_group()
    answer_request.add_argument("--accept", type=int, metavar="ID", help="accept request ID")
    answer_request.add_argument("--decline", type=int, metavar="ID", help="decline request ID")
    contact = commands.add_parser(
        "contact", help="show, rename, remove, block or unblock a contact"
    )
    actions = contact.add_subparsers(
        dest="action", metavar="ACTION", required=True, parser_class=Parser
    )
    for action, text in (
        ("show", "fingerprint, verified state, devices, shared fields"),
        ("remove", "remove the contact"),
        ("block", "drop everything from them, silently"),
        ("unblock", "stop blocking them"),
    ):
        actions.add_parser(action, help=text).add_argument(
            "contact", metavar="CONTACT", help="identity id (or 6+ leading characters) or name"
        )
    verify = actions.add_parser(
        "verify", help="compare a short code (emoji or numbers) with them; both confirm"
    )
    verify.add_argument("contact", metavar="CONTACT")
    answer = verify.add_mutually_exclusive_group()
    answer.add_argument(
        "--yes",
        dest="matches",
        action="store_const",
        const=True,
        help="answer that the codes match without asking",
    )
    answer.add_argument(
        "--no",
        dest="matches",
        action="store_const",
        const=False,
        help="answer that the codes differ without asking",
    )
    commands.add_parser("verifications", help="verifications waiting for you")

    profile = commands.add_parser("profile", help="your profile fields and who sees each")
    fields = profile.add_subparsers(
        dest="action", metavar="ACTION", required=True, parser_class=Parser
    )
    fields.add_parser("show", help="your fields, their audience and who they are shared with")
    set_field = fields.add_parser("set", help="set a field (phone, email, address, ...)")
    set_field.add_argument("name", metavar="NAME")
    set_field.add_argument("value", metavar="VALUE")
    set_field.add_argument(
        "--audience",
        choices=("public", "contacts", "chosen", "groups"),
        default="contacts",
        help="who sees it (default: contacts); `chosen` fields go to those you share them with",
    )
    fields.add_parser("remove", help="remove a field everywhere").add_argument(
        "name", metavar="NAME"
    )
    for action, text in (
        ("share", "share a field with a contact"),
        ("revoke", "take a shared field back from a contact"),
    ):
        sharing = fields.add_parser(action, help=text)
        sharing.add_argument("name", metavar="NAME")
        sharing.add_argument("contact", metavar="CONTACT")
    rename = actions.add_parser("rename", help="set (or with no NAME clear) your nickname for them")
    rename.add_argument("contact", metavar="CONTACT")
    rename.add_argument("nickname", metavar="NAME", nargs="?")
    from p2pid.cli_devices import add_device_commands

    add_device_commands(commands)
    from p2pid.cli_kiosks import add_kiosk_commands

    add_kiosk_commands(commands)
    from p2pid.cli_groups import add_group_commands

    add_group_commands(commands)
    from p2pid.cli_files import add_file_commands

    add_file_commands(commands)
    demo = commands.add_parser(
        "demo", help="two local nodes on loopback, contacts, chatting; the TUI on one of them"
    )
    demo.add_argument("--once", action="store_true", help="show their status and exit")
    demo.add_argument("--no-tui", action="store_true", help="print their events instead")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    arguments = list(sys.argv[1:] if argv is None else argv)
    output = Output(as_json="--json" in arguments)
    try:
        args = build_parser().parse_args(arguments)
        output = Output(as_json=args.json)
        home = Home(args.home if args.home is not None else default_home())
        if args.command is None:
            if args.json:
                raise UsageError("p2pid: --json needs a COMMAND (without one, p2pid opens its TUI)")
            from p2pid.tui.app import run

            return run(home)
        return COMMANDS[args.command](home, args, output)
    except UsageError as error:
        output.error("usage", str(error))
        return EXIT_USAGE
    except RpcError as error:
        output.error(error.code, error.message)
        return EXIT_NO_DAEMON if error.code == ErrorCode.DAEMON_NOT_RUNNING else EXIT_ERROR
    except KeyboardInterrupt:
        return 130
    except Exception as error:  # every failure is one clear line (or JSON document)
        if os.environ.get("P2PID_DEBUG"):
            raise
        output.error(type(error).__name__, describe_failure(error))
        return EXIT_ERROR


def call(home: Home, method: str, **params: Any) -> Any:
    with BlockingClient(home.socket) as client:
        return client.call(method, **params)


# -- commands -------------------------------------------------------------------------------


def cmd_init(home: Home, args: argparse.Namespace, output: Output) -> int:
    from p2pid.provision import create_home

    passphrase = ask_new_passphrase() if args.passphrase else None
    created = create_home(home, args.name, passphrase)
    document = {
        "home": str(home.root),
        "name": created.name,
        "identity_id": created.identity_id,
        "peer_id": created.peer_id,
        "protection": created.protection,
    }
    output.emit(document, lambda d: format_fields(d))
    return EXIT_OK


def ask_new_passphrase() -> str:
    from getpass import getpass

    from_environment = os.environ.get("P2PID_PASSPHRASE")
    if from_environment:
        return from_environment
    if not sys.stdin.isatty():
        return sys.stdin.readline().rstrip("\n")
    first = getpass("new passphrase: ")
    if first != getpass("again: "):
        raise UsageError("the passphrases differ")
    return first


def cmd_daemon(home: Home, args: argparse.Namespace, output: Output) -> int:
    from p2pid.launcher import start_detached

    if args.detach:
        peer_id = start_detached(home, args.listen, args.mdns_interface, args.no_mdns)
        output.emit(
            {"started": True, "peer_id": peer_id, "home": str(home.root)},
            lambda d: f"p2pid daemon started for {d['home']} (peer {d['peer_id']})",
        )
        return EXIT_OK
    from p2pid import daemon

    daemon.configure_logging(sys.stderr)

    def announce(peer_id: str) -> None:
        output.emit(
            {"ready": True, "peer_id": peer_id, "home": str(home.root)},
            lambda d: f"p2pid daemon ready (peer {d['peer_id']}); Ctrl-C stops it",
        )

    daemon.run(
        daemon.options_from(home.root, args.listen, args.mdns_interface, args.no_mdns), announce
    )
    return EXIT_OK


def cmd_stop(home: Home, args: argparse.Namespace, output: Output) -> int:
    from p2pid.launcher import stop_daemon

    stop_daemon(home)
    output.emit({"stopped": True}, lambda _: "p2pid daemon stopped")
    return EXIT_OK


def cmd_status(home: Home, args: argparse.Namespace, output: Output) -> int:
    output.emit(call(home, "status"), format_status)
    return EXIT_OK


def cmd_peers(home: Home, args: argparse.Namespace, output: Output) -> int:
    output.emit(call(home, "peers"), format_peers)
    return EXIT_OK


def cmd_ping(home: Home, args: argparse.Namespace, output: Output) -> int:
    if args.count < 1:
        raise UsageError("p2pid ping: --count must be at least 1")
    result = call(home, "ping", peer=args.peer, count=args.count)
    output.emit(
        result,
        lambda r: "\n".join(f"pong from {r['peer_id']}: {rtt:.2f} ms" for rtt in r["rtts_ms"]),
    )
    return EXIT_OK


def cmd_connect(home: Home, args: argparse.Namespace, output: Output) -> int:
    result = call(home, "connect", addr=args.addr)
    output.emit(result, lambda r: f"connected to {r['peer_id']} at {r['addr']}")
    return EXIT_OK


def cmd_watch(home: Home, args: argparse.Namespace, output: Output) -> int:
    with BlockingClient(home.socket, timeout=None) as client:
        for event in client.events():
            print(json.dumps(event) if output.as_json else format_event(event), flush=True)
    return EXIT_OK


def cmd_send(home: Home, args: argparse.Namespace, output: Output) -> int:
    text = sys.stdin.read().rstrip("\n") if args.text == "-" else args.text
    if not text.strip():
        raise UsageError("p2pid send: the message is empty")
    sent = call(home, "send", contact=args.contact, text=text)
    output.emit(sent, lambda m: f"sent ({m['state']}) {m['message_id']}")
    return EXIT_OK


def cmd_messages(home: Home, args: argparse.Namespace, output: Output) -> int:
    if not 1 <= args.limit <= 500:
        raise UsageError("p2pid messages: --limit must be between 1 and 500")
    if args.search is not None:
        found = call(
            home, "messages.search", query=args.search, contact=args.contact, limit=args.limit
        )
        output.emit(found, format_search_results)
        return EXIT_OK
    if args.contact is None:
        raise UsageError("p2pid messages: name the CONTACT (or --search across all)")
    page = call(
        home,
        "messages",
        contact=args.contact,
        limit=args.limit,
        before=args.before,
        mark_read=not args.no_read,
    )
    output.emit(page, format_page)
    return EXIT_OK


def cmd_chats(home: Home, args: argparse.Namespace, output: Output) -> int:
    output.emit(call(home, "conversations"), format_conversations)
    return EXIT_OK


def cmd_invite(home: Home, args: argparse.Namespace, output: Output) -> int:
    if args.uses < 1 or args.ttl < 1:
        raise UsageError("p2pid invite: --uses and --ttl must be at least 1")
    created = call(home, "invite.create", uses=args.uses, ttl=args.ttl)
    from p2pid import qr

    version, modules = qr.qr_summary(created["code"])
    if args.png is not None:
        qr.write_png(created["code"], args.png)
    document = {**created, "qr": {"version": version, "modules": modules}}
    if args.png is not None:
        document["png"] = str(args.png)
    if output.as_json:
        output.emit(document, str)
        return EXIT_OK
    if not args.no_qr:
        print(terminal_qr(created["code"], qr.render_half_blocks, qr.render_half_blocks_plain))
    print(created["code"])
    uses = "single use" if created["uses"] == 1 else f"{created['uses']} uses"
    print(f"expires {format_time(created['expires_at'])}, {uses}, id {created['invite_id']}")
    return EXIT_OK


def terminal_qr(code: str, render: Callable[[str], str], plain: Callable[[str], str]) -> str:
    plain_lines = plain(code).split("\n")
    columns, rows = len(plain_lines[0]), len(plain_lines)
    size = shutil.get_terminal_size(fallback=(200, 100))
    if size.columns < columns or (sys.stdout.isatty() and size.lines < rows):
        return (
            f"(the QR needs {columns}x{rows} characters; this terminal is "
            f"{size.columns}x{size.lines}: enlarge it, use --png, or share the code below)"
        )
    return render(code)


def cmd_invites(home: Home, args: argparse.Namespace, output: Output) -> int:
    if args.cancel:
        call(home, "invite.cancel", invite_id=args.cancel)
        output.emit({"cancelled": args.cancel}, lambda d: f"invite {d['cancelled']} cancelled")
        return EXIT_OK
    output.emit(call(home, "invites", all=args.all), format_invites)
    return EXIT_OK


def cmd_join(home: Home, args: argparse.Namespace, output: Output) -> int:
    code = args.code
    if args.image is not None:
        from p2pid.qr import decode_image

        code = decode_image(args.image)
    contact = call(home, "join", code=code)
    output.emit(contact, lambda c: f"{c['name']} is now a verified contact\n" + format_contact(c))
    return EXIT_OK


def cmd_contacts(home: Home, args: argparse.Namespace, output: Output) -> int:
    output.emit(call(home, "contacts"), format_contacts)
    return EXIT_OK


def cmd_contact(home: Home, args: argparse.Namespace, output: Output) -> int:
    if args.action == "verify":
        return verify_contact(home, args, output)
    if args.action == "rename":
        result = call(home, "contact.rename", contact=args.contact, nickname=args.nickname)
    elif args.action == "remove":
        result = call(home, "contact.remove", contact=args.contact)
        output.emit(result, lambda _: f"removed {args.contact}")
        return EXIT_OK
    else:
        result = call(home, f"contact.{args.action}", contact=args.contact)
    output.emit(result, format_contact)
    return EXIT_OK


def verify_contact(home: Home, args: argparse.Namespace, output: Output) -> int:
    """Start (or accept) a SAS verification, show the code, ask, confirm: one blocking session."""
    with BlockingClient(home.socket, timeout=None) as client:
        view = client.call("verify.start", contact=args.contact)
        if not output.as_json:
            print(format_sas(view))
        matches = args.matches
        if matches is None:
            if not sys.stdin.isatty():
                raise UsageError("p2pid contact verify: answer with --yes or --no (no terminal)")
            reply = input(f"Does {view['name']} see the same? [y/N] ").strip().lower()
            matches = reply in ("y", "yes")
        outcome = client.call(
            "verify.confirm", verification_id=view["verification_id"], matches=matches
        )
    document = {**outcome, "emoji": view["emoji"], "decimals": view["decimals"]}
    output.emit(document, format_verification_outcome)
    return EXIT_OK if outcome["verified"] else EXIT_ERROR


def cmd_verifications(home: Home, args: argparse.Namespace, output: Output) -> int:
    output.emit(call(home, "verifications"), format_verifications)
    return EXIT_OK


def cmd_profile(home: Home, args: argparse.Namespace, output: Output) -> int:
    if args.action == "show":
        output.emit(call(home, "profile.show"), format_profile)
        return EXIT_OK
    if args.action == "set":
        result = call(home, "profile.set", name=args.name, value=args.value, audience=args.audience)
    elif args.action == "remove":
        call(home, "profile.remove", name=args.name)
        output.emit({"removed": args.name}, lambda d: f"removed {d['removed']}")
        return EXIT_OK
    else:
        result = call(home, f"profile.{args.action}", name=args.name, contact=args.contact)
    output.emit(result, lambda field: format_profile([field]))
    return EXIT_OK


def cmd_request(home: Home, args: argparse.Namespace, output: Output) -> int:
    sent = call(home, "contact.request", peer=args.peer, note=args.note)
    output.emit(
        sent, lambda d: f"request sent to {d['peer_id']}; they will see it in `p2pid requests`"
    )
    return EXIT_OK


def cmd_requests(home: Home, args: argparse.Namespace, output: Output) -> int:
    if args.accept is not None:
        answered = call(home, "request.accept", request_id=args.accept)
        output.emit(
            answered,
            lambda r: (
                f"{r['name']} is now a contact (unverified: `p2pid contact verify {r['name']}`)"
            ),
        )
    elif args.decline is not None:
        answered = call(home, "request.decline", request_id=args.decline)
        output.emit(answered, lambda r: f"declined {r['name']}'s request")
    else:
        output.emit(call(home, "requests", state=None if args.all else "pending"), format_requests)
    return EXIT_OK


def cmd_demo(home: Home, args: argparse.Namespace, output: Output) -> int:
    from p2pid.demo import run_demo

    return run_demo(once=args.once, as_json=args.json, tui=not args.no_tui)


def cmd_devices(home: Home, args: argparse.Namespace, output: Output) -> int:
    from p2pid import cli_devices

    return cli_devices.cmd_devices(home, args, output)


def cmd_device(home: Home, args: argparse.Namespace, output: Output) -> int:
    from p2pid import cli_devices

    return cli_devices.cmd_device(home, args, output)


COMMANDS: dict[str, Callable[[Home, argparse.Namespace, Output], int]] = {
    "devices": cmd_devices,
    "device": cmd_device,
    "init": cmd_init,
    "daemon": cmd_daemon,
    "stop": cmd_stop,
    "status": cmd_status,
    "peers": cmd_peers,
    "ping": cmd_ping,
    "connect": cmd_connect,
    "watch": cmd_watch,
    "send": cmd_send,
    "messages": cmd_messages,
    "chats": cmd_chats,
    "demo": cmd_demo,
    "invite": cmd_invite,
    "invites": cmd_invites,
    "join": cmd_join,
    "contacts": cmd_contacts,
    "contact": cmd_contact,
    "verifications": cmd_verifications,
    "profile": cmd_profile,
    "request": cmd_request,
    "requests": cmd_requests,
}


def cmd_kiosk_family(home: Home, args: argparse.Namespace, output: Output) -> int:
    from p2pid.cli_kiosks import KIOSK_COMMANDS

    return KIOSK_COMMANDS[args.command](home, args, output)


KIOSK_COMMAND_NAMES = (
    "kiosk",
    "pair",
    "kiosks",
    "kiosk-invoke",
    "kiosk-revoke",
    "kiosk-guests",
    "kiosk-reset",
    "kiosk-remove-guest",
    "kiosk-approvals",
    "kiosk-approve",
)
COMMANDS.update(dict.fromkeys(KIOSK_COMMAND_NAMES, cmd_kiosk_family))


def cmd_group_family(home: Home, args: argparse.Namespace, output: Output) -> int:
    from p2pid.cli_groups import GROUP_COMMANDS

    return GROUP_COMMANDS[args.command](home, args, output)


COMMANDS.update(dict.fromkeys(("groups", "group"), cmd_group_family))


def cmd_file_family(home: Home, args: argparse.Namespace, output: Output) -> int:
    from p2pid.cli_files import FILE_COMMANDS

    return FILE_COMMANDS[args.command](home, args, output)


COMMANDS.update(dict.fromkeys(("files", "file"), cmd_file_family))


# -- human output ----------------------------------------------------------------------------


def format_fields(document: dict[str, Any]) -> str:
    width = max(len(key) for key in document)
    return "\n".join(
        f"{key.replace('_', ' '):<{width}}  {value}" for key, value in document.items()
    )


def format_status(status: dict[str, Any]) -> str:
    return format_fields(
        {
            "name": status["name"],
            "identity_id": status["identity_id"],
            "peer_id": status["peer_id"],
            "listening": " ".join(status["listen_addrs"]) or "-",
            "connected": ", ".join(status["connected_peers"]) or "none",
            "discovered": ", ".join(status["discovered_peers"]) or "none",
            "mdns": "on" if status["mdns"] else "off",
            "daemon": f"pid {status['pid']}, p2pid {status['version']}",
        }
    )


def format_peers(peers: list[dict[str, Any]]) -> str:
    if not peers:
        return "no peers known yet"
    lines = []
    for peer in peers:
        state = (
            "connected" if peer["connected"] else "discovered" if peer["discovered"] else "known"
        )
        name = peer["fields"].get("name", "")
        lines.append(f"{peer['peer_id']}  {state:<10}  {name}  {' '.join(peer['addrs'])}")
    return "\n".join(lines)


def format_time(unix_seconds: int) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(unix_seconds))


def format_invites(invites: list[dict[str, Any]]) -> str:
    if not invites:
        return "no live invites (make one with `p2pid invite`)"
    return "\n".join(
        f"{i['invite_id']}  {i['state']:<9}  {i['uses_left']}/{i['max_uses']} uses left  "
        f"expires {format_time(i['expires_at'])}"
        for i in invites
    )


def format_contacts(contacts: list[dict[str, Any]]) -> str:
    if not contacts:
        return "no contacts yet (`p2pid invite` shows a QR; `p2pid join CODE` uses one)"
    lines = []
    for contact in contacts:
        marks = "verified" if contact["verified"] else "unverified"
        if contact["blocked"]:
            marks += ", blocked"
        if contact["identity_changed"]:
            marks += ", IDENTITY CHANGED"
        lines.append(f"{contact['identity_id'][:12]}  {contact['name']:<20}  {marks}")
    return "\n".join(lines)


def format_contact(contact: dict[str, Any]) -> str:
    verified = f"yes ({contact['verified_by']})" if contact["verified"] else "no"
    fields = {
        "name": contact["name"],
        "display_name": contact["display_name"],
        "identity_id": contact["identity_id"],
        "fingerprint": contact["fingerprint"],
        "verified": verified,
        "blocked": "yes" if contact["blocked"] else "no",
        "devices": ", ".join(
            f"{d['name']} ({d['peer_id']}{', connected' if d['connected'] else ''})"
            for d in contact["devices"]
        ),
    }
    if contact["identity_changed"]:
        fields["warning"] = "a device of this contact presented another identity key"
    for name, value in contact["fields"].items():
        fields[f"shared {name}"] = value
    return format_fields(fields)


def format_sas(view: dict[str, Any]) -> str:
    symbols = "  ".join(f"{symbol:^8}" for symbol, _ in view["emoji"])
    names = "  ".join(f"{name:^8}" for _, name in view["emoji"])
    numbers = "  ".join(str(number) for number in view["decimals"])
    return (
        f"Compare with {view['name']}'s screen:\n\n  {symbols}\n  {names}\n\n"
        f"  or the numbers  {numbers}\n"
    )


def format_verification_outcome(outcome: dict[str, Any]) -> str:
    if outcome["verified"]:
        return f"{outcome['name']} is verified"
    side = " (by them)" if outcome.get("by_peer") else ""
    return f"{outcome['name']} is NOT verified: {outcome.get('reason') or 'cancelled'}{side}"


def format_verifications(views: list[dict[str, Any]]) -> str:
    if not views:
        return "no verifications waiting"
    return "\n".join(
        f"{v['verification_id'][:8]}  {v['name']}  {'asks you' if v['incoming'] else 'you asked'}"
        f"  ({v['state']}; answer with `p2pid contact verify {v['name']}`)"
        for v in views
    )


def format_profile(fields: list[dict[str, Any]]) -> str:
    if not fields:
        return "no profile fields (add one: p2pid profile set phone '+1 555 0100')"
    lines = []
    for field in fields:
        audience = field["audience"]
        if field["granted_to"]:
            audience += f" + shared with {len(field['granted_to'])}"
        lines.append(f"{field['name']:<12}  {field['value']}  ({audience})")
    return "\n".join(lines)


STATE_MARKS = {"pending": "·", "delivered": "✓", "read": "✓✓", "failed": "✗", "unread": "•"}


def format_clock(ms: int) -> str:
    return format_time(ms // 1000)


def format_message(message: dict[str, Any], name: str) -> str:
    author = "me" if message["outgoing"] else name
    mark = STATE_MARKS.get(message["state"], message["state"])
    return f"{format_clock(message['sent_at_ms'])}  {mark:<2} {author}: {message['text']}"


def format_page(page: dict[str, Any]) -> str:
    if not page["messages"]:
        return f"no messages with {page['name']} yet (p2pid send {page['name']!r} TEXT)"
    lines = [format_message(message, page["name"]) for message in page["messages"]]
    if page["before"]:
        lines.insert(0, f"(older: p2pid messages {page['name']!r} --before {page['before']})")
    return "\n".join(lines)


def format_search_results(found: list[dict[str, Any]]) -> str:
    if not found:
        return "nothing found"
    return "\n".join(
        f"{m['conversation_id'][:12]}  {format_message(m, m['sender_id'][:12])}" for m in found
    )


def format_conversations(conversations: list[dict[str, Any]]) -> str:
    if not conversations:
        return "no conversations yet (p2pid send CONTACT TEXT)"
    lines = []
    for chat in conversations:
        last = chat["last_message"]
        preview = (("me: " if last["outgoing"] else "") + last["text"])[:60] if last else ""
        unread = f"({chat['unread']} unread)" if chat["unread"] else ""
        lines.append(f"{chat['name']:<20} {unread:<12} {preview}")
    return "\n".join(lines)


def format_event(event: dict[str, Any]) -> str:
    kind = event.get("type", "?")
    clock = time.strftime("%H:%M:%S", time.localtime(event.get("at_ms", 0) / 1000))
    if kind == "message.received":
        message = event["message"]
        return f"{clock}  {event['name']}: {message['text']}"
    if kind == "message.state":
        ids = ", ".join(message_id[:8] for message_id in event["message_ids"][:5])
        more = f" and {len(event['message_ids']) - 5} more" if len(event["message_ids"]) > 5 else ""
        return f"{clock}  {event['state']}: {ids}{more}"
    if kind.startswith("group."):
        from p2pid.cli_groups import format_group_event

        line = format_group_event(event, clock)
        if line is not None:
            return line
    if kind.startswith("file."):
        from p2pid.cli_files import format_file_event

        line = format_file_event(event, clock)
        if line is not None:
            return line
    details = {k: v for k, v in event.items() if k not in ("type", "at_ms")}
    return f"{clock}  {kind}  {json.dumps(details, ensure_ascii=False)}"


def format_requests(requests: list[dict[str, Any]]) -> str:
    if not requests:
        return "no contact requests"
    return "\n".join(
        f"{r['request_id']:>4}  {r['name']:<20}  {r['state']:<9}  {r['note']}" for r in requests
    )
