"""CLI commands for file sharing: `files` and `file ACTION ...` (send, show, accept, cancel,
settings). Clients of the daemon's `files` / `file.*` RPC methods; `file send --wait` and
`file accept` follow the transfer through its `file.progress` / `file.state` events."""

from __future__ import annotations

import argparse
import os
import re
import stat
import sys
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any, Protocol, TextIO

from p2pid.cli import EXIT_ERROR, EXIT_OK, Output, Parser, UsageError, call, format_clock
from p2pid.home import Home
from p2pid.rpc.client import BlockingClient
from p2pid.rpc.protocol import ErrorCode, RpcError
from p2pid.wire.files import MAX_FILE_SIZE

EXIT_INTERRUPTED = 130
AUTO_ACCEPT_CHOICES = ("none", "verified", "contacts")
FINAL_STATES = ("complete", "failed", "cancelled")
NAME_WIDTH = 24

_TRANSFER_ID = re.compile(r"[0-9a-fA-F]{4,32}")
_SIZE = re.compile(r"(\d+(?:\.\d*)?)\s*(?:([kmgt])(?:i?b)?|b)?", re.IGNORECASE)
_UNITS = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3, "t": 1024**4}

Command = Callable[[Home, argparse.Namespace, Output], int]


def add_file_commands(commands: Any) -> None:
    commands.add_parser("files", help="my file transfers, newest first")
    file = commands.add_parser("file", help="send, show, accept or cancel a file transfer")
    actions = file.add_subparsers(
        dest="action", metavar="ACTION", required=True, parser_class=Parser
    )
    reference = "transfer id (4+ leading hex characters)"

    send = actions.add_parser("send", help="offer a file to a contact or to a group")
    send.add_argument(
        "target", metavar="TARGET", help="a contact (name or identity id) or a group (name or id)"
    )
    send.add_argument("path", metavar="PATH", help="the file")
    send.add_argument(
        "--wait", action="store_true", help="show its progress until every recipient has it"
    )
    actions.add_parser("show", help="one transfer in full").add_argument(
        "transfer", metavar="ID", help=reference
    )
    accept = actions.add_parser("accept", help="download a file offered to me (or resume it)")
    accept.add_argument("transfer", metavar="ID", help=reference)
    accept.add_argument("--to", metavar="DIR", help="the folder (default: see `file settings`)")
    accept.add_argument(
        "--no-wait", action="store_true", help="return at once; the daemon downloads it"
    )
    actions.add_parser("cancel", help="stop a transfer (either direction)").add_argument(
        "transfer", metavar="ID", help=reference
    )
    settings = actions.add_parser("settings", help="show or change where files go, auto-accept")
    settings.add_argument("--folder", metavar="DIR", help="where accepted files go")
    settings.add_argument(
        "--auto-accept",
        choices=AUTO_ACCEPT_CHOICES,
        help="accept offers without asking: from nobody, verified contacts, or any contact",
    )
    settings.add_argument(
        "--auto-accept-max",
        metavar="SIZE",
        help="larger offers wait for `file accept` (25M, 1G, 500k or bytes)",
    )


# -- commands -------------------------------------------------------------------------------


def cmd_files(home: Home, args: argparse.Namespace, output: Output) -> int:
    output.emit(call(home, "files"), format_transfers)
    return EXIT_OK


def cmd_file(home: Home, args: argparse.Namespace, output: Output) -> int:
    return ACTIONS[args.action](home, args, output)


def _send(home: Home, args: argparse.Namespace, output: Output) -> int:
    target = args.target.strip()
    if not target:
        raise UsageError("p2pid file send: TARGET is empty")
    path = str(readable_file(args.path))
    if not args.wait:
        output.emit(call(home, "file.send", target=target, path=path), format_sent)
        return EXIT_OK
    with BlockingClient(home.socket, timeout=None) as client:
        client.call("subscribe")
        view = client.call("file.send", target=target, path=path)
        if not output.as_json:
            print(format_sent(view), flush=True)
        return _wait(client, view, output)


def _show(home: Home, args: argparse.Namespace, output: Output) -> int:
    transfer = checked_transfer_id("show", args.transfer)
    output.emit(call(home, "file.show", transfer=transfer), format_transfer)
    return EXIT_OK


def _accept(home: Home, args: argparse.Namespace, output: Output) -> int:
    transfer = checked_transfer_id("accept", args.transfer)
    folder = None if args.to is None else str(writable_folder("accept", "--to", args.to))
    with BlockingClient(home.socket, timeout=None) as client:
        if args.no_wait:
            view = accept_transfer(client, transfer, folder)
            output.emit(view, format_accepted)
            return exit_code(view)
        # Subscribed before accepting: no event of this transfer can slip past.
        client.call("subscribe")
        return _wait(client, accept_transfer(client, transfer, folder), output)


def accept_transfer(client: BlockingClient, transfer: str, folder: str | None) -> dict[str, Any]:
    """`file.accept`; a transfer that is already complete (accepted automatically, say) is
    answered with its view rather than the daemon's conflict."""
    try:
        view: dict[str, Any] = client.call("file.accept", transfer=transfer, folder=folder)
    except RpcError as error:
        if error.code != ErrorCode.CONFLICT:
            raise
        view = client.call("file.show", transfer=transfer)
        if view["state"] != "complete" or view["direction"] != "in":
            raise
    return view


def _cancel(home: Home, args: argparse.Namespace, output: Output) -> int:
    transfer = checked_transfer_id("cancel", args.transfer)
    view = call(home, "file.cancel", transfer=transfer)
    output.emit(view, lambda v: f"cancelled {v['name']} ({v['transfer_id'][:8]})")
    return EXIT_OK


def _settings(home: Home, args: argparse.Namespace, output: Output) -> int:
    changes: dict[str, Any] = {}
    if args.folder is not None:
        changes["folder"] = str(writable_folder("settings", "--folder", args.folder))
    if args.auto_accept is not None:
        changes["auto_accept"] = args.auto_accept
    if args.auto_accept_max is not None:
        size = parse_size(args.auto_accept_max)
        if size is None:
            raise UsageError(
                f"p2pid file settings: --auto-accept-max {args.auto_accept_max!r} is not a size "
                "(25M, 1G, 500k or a number of bytes)"
            )
        changes["auto_accept_max_bytes"] = size
    settings = (
        call(home, "file.settings.set", **changes) if changes else call(home, "file.settings")
    )
    output.emit(settings, format_settings)
    return EXIT_OK


ACTIONS: dict[str, Command] = {
    "send": _send,
    "show": _show,
    "accept": _accept,
    "cancel": _cancel,
    "settings": _settings,
}

FILE_COMMANDS: dict[str, Command] = {"files": cmd_files, "file": cmd_file}


# -- following a transfer -------------------------------------------------------------------


class Reporter(Protocol):
    def state(self, view: dict[str, Any]) -> None: ...
    def progress(self, event: dict[str, Any]) -> None: ...
    def close(self) -> None: ...


def follow(client: BlockingClient, view: dict[str, Any], reporter: Reporter) -> dict[str, Any]:
    """Feed the reporter this transfer's events (the client is subscribed) until its state is
    final; the final view."""
    current = view
    reporter.state(current)
    while current["state"] not in FINAL_STATES:
        event = client.next_event()
        kind = event.get("type")
        if kind == "file.state" and _same_transfer(event["transfer"], current):
            current = event["transfer"]
            reporter.state(current)
        elif kind == "file.progress" and _same_transfer(event, current):
            reporter.progress(event)
    return current


def _same_transfer(candidate: dict[str, Any], view: dict[str, Any]) -> bool:
    return bool(
        candidate["transfer_id"] == view["transfer_id"]
        and candidate["direction"] == view["direction"]
    )


def _wait(client: BlockingClient, view: dict[str, Any], output: Output) -> int:
    reporter = _reporter(view, output.as_json)
    try:
        final = follow(client, view, reporter)
    except KeyboardInterrupt:
        reporter.close()
        output.error(
            "interrupted",
            f"stopped waiting; {view['name']} goes on in the daemon "
            f"(p2pid files; p2pid file cancel {view['transfer_id'][:8]})",
        )
        return EXIT_INTERRUPTED
    reporter.close()
    output.emit(final, format_outcome)
    return exit_code(final)


def _reporter(view: dict[str, Any], as_json: bool) -> Reporter:
    if as_json:
        return QuietReporter()
    if sys.stderr.isatty():
        return BarReporter(view)
    return LineReporter(sys.stderr)


class QuietReporter:
    def state(self, view: dict[str, Any]) -> None:
        pass

    def progress(self, event: dict[str, Any]) -> None:
        pass

    def close(self) -> None:
        pass


class LineReporter:
    """One line per state change, for logs and pipes."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream
        self._last = ""

    def state(self, view: dict[str, Any]) -> None:
        line = format_state_line(view)
        if line != self._last:
            print(line, file=self._stream, flush=True)
            self._last = line

    def progress(self, event: dict[str, Any]) -> None:
        pass

    def close(self) -> None:
        pass


class BarReporter:
    """A rich progress bar on stderr (a terminal): bytes, the daemon's rate and time left; state
    changes printed above it."""

    def __init__(self, view: dict[str, Any]) -> None:
        from rich.console import Console
        from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn

        self._progress = Progress(
            TextColumn("{task.description}", markup=False),
            BarColumn(),
            DownloadColumn(binary_units=True),
            TextColumn("{task.fields[rate]}", markup=False),
            TextColumn("{task.fields[eta]}", markup=False),
            console=Console(stderr=True),
        )
        self._task = self._progress.add_task(
            f"{_arrow(view)} {_short_name(view['name'])}",
            total=max(view["size"], 1),
            completed=min(view["bytes_done"], view["size"]),
            rate="",
            eta="",
        )
        self._state = ""
        self._progress.start()

    def state(self, view: dict[str, Any]) -> None:
        complete = view["state"] == "complete"
        done = view["size"] if complete else view["bytes_done"]
        self._progress.update(self._task, completed=min(done, max(view["size"], 1)))
        if complete:
            self._progress.update(self._task, eta=format_eta(0))
        if view["state"] != self._state:
            self._state = view["state"]
            self._progress.console.print(format_state_line(view), markup=False, highlight=False)

    def progress(self, event: dict[str, Any]) -> None:
        total = max(event["size"], 1)
        self._progress.update(
            self._task,
            total=total,
            completed=min(event["bytes_done"], total),
            rate=f"{format_size(int(event['rate_bps']))}/s" if event["rate_bps"] > 0 else "",
            eta=format_eta(event["eta_s"]),
        )

    def close(self) -> None:
        self._progress.stop()


def format_eta(seconds: float | None) -> str:
    if seconds is None:
        return "-:--:--"
    whole = max(0, round(seconds))
    return f"{whole // 3600}:{whole // 60 % 60:02}:{whole % 60:02}"


# -- argument checks ----------------------------------------------------------------------------


def checked_transfer_id(action: str, text: str) -> str:
    if not _TRANSFER_ID.fullmatch(text):
        raise UsageError(f"p2pid file {action}: ID is 4 to 32 hex characters (see `p2pid files`)")
    return text.lower()


def readable_file(text: str) -> Path:
    """PATH as an absolute path to a regular file this user can read, else a usage error."""
    path = Path(text).expanduser().absolute()
    try:
        mode = path.stat().st_mode
    except (FileNotFoundError, NotADirectoryError):
        raise UsageError(f"p2pid file send: {text}: no such file") from None
    except OSError as error:
        raise UsageError(f"p2pid file send: {text}: {error.strerror}") from None
    if stat.S_ISDIR(mode):
        raise UsageError(
            f"p2pid file send: {text} is a directory (send its files, or an archive of it)"
        )
    if not stat.S_ISREG(mode):
        raise UsageError(f"p2pid file send: {text} is not a regular file")
    try:
        with path.open("rb"):
            pass
    except OSError as error:
        raise UsageError(f"p2pid file send: {text}: cannot read it ({error.strerror})") from None
    return path


def writable_folder(action: str, option: str, text: str) -> Path:
    """DIR as an absolute path to an existing directory this user can write to."""
    path = Path(text).expanduser().absolute()
    if not path.exists():
        raise UsageError(f"p2pid file {action}: {option} {text}: no such directory")
    if not path.is_dir():
        raise UsageError(f"p2pid file {action}: {option} {text} is not a directory")
    if not os.access(path, os.W_OK | os.X_OK):
        raise UsageError(f"p2pid file {action}: {option} {text}: cannot write there")
    return path


def parse_size(text: str) -> int | None:
    """Bytes from `25M`, `1.5G`, `500k`, `700KiB`, `1024` (binary units); None if not a size
    (or larger than the largest file)."""
    match = _SIZE.fullmatch(text.strip())
    if match is None:
        return None
    number, unit = match.groups()
    size = int(Decimal(number) * _UNITS[(unit or "").lower()])
    return size if size <= MAX_FILE_SIZE else None


def exit_code(view: dict[str, Any]) -> int:
    return EXIT_ERROR if view["state"] in ("failed", "cancelled") else EXIT_OK


# -- human output ----------------------------------------------------------------------------


def format_size(size: int) -> str:
    if size < 1024:
        return f"{size} B"
    value = float(size)
    for unit in ("KiB", "MiB", "GiB", "TiB"):
        value /= 1024
        if round(value, 1) < 1024 or unit == "TiB":
            break
    return f"{value:.1f} {unit}"


def percent(view: dict[str, Any]) -> int:
    if view["state"] == "complete":
        return 100
    if view["size"] <= 0:
        return 0
    return min(100, int(view["bytes_done"]) * 100 // int(view["size"]))


def _arrow(view: dict[str, Any]) -> str:
    return "→" if view["direction"] == "out" else "←"


def _short_name(name: str, width: int = NAME_WIDTH) -> str:
    """The name, shortened in the middle so that its extension shows."""
    return name if len(name) <= width else name[: width - 9] + "…" + name[-8:]


def _person(view: dict[str, Any]) -> str:
    return str(view["peer_name"] or view["peer_id"][:12] or "?")


def counterpart(view: dict[str, Any]) -> str:
    """`from Bob`, `from Bob in Hikers`, `to Bob`, `to group Hikers`."""
    if view["direction"] == "in":
        place = f" in {view['group_name']}" if view["group_id"] else ""
        return f"from {_person(view)}{place}"
    if view["group_id"]:
        return f"to group {view['group_name']}"
    return f"to {_person(view)}"


def _delivery(view: dict[str, Any]) -> str:
    if view["direction"] != "out" or not view["group_id"]:
        return ""
    return f", {view['delivered']} got it"


def format_transfers(views: list[dict[str, Any]]) -> str:
    if not views:
        return "no file transfers yet (p2pid file send CONTACT PATH)"
    lines = [
        f"{v['transfer_id'][:8]}  {_arrow(v)}  {_short_name(v['name']):<{NAME_WIDTH}}  "
        f"{format_size(v['size']):>9}  {v['state']:<11}  {percent(v):>3}%  "
        f"{counterpart(v)}{_delivery(v)}"
        for v in views
    ]
    if any(v["direction"] == "in" and v["state"] == "offered" for v in views):
        lines.append("(accept an offer: p2pid file accept ID [--to DIR])")
    return "\n".join(lines)


def format_transfer(view: dict[str, Any]) -> str:
    direction = "incoming" if view["direction"] == "in" else "outgoing"
    state = f"{view['state']} ({view['error']})" if view["error"] else view["state"]
    fields = {
        "name": view["name"],
        "transfer_id": view["transfer_id"],
        "direction": f"{direction}, {counterpart(view)}",
        "size": f"{format_size(view['size'])} ({view['size']} bytes)",
        "type": view["media_type"] or "-",
        "state": state,
        "progress": f"{percent(view)}% ({format_size(view['bytes_done'])})",
        "path": view["path"] or "-",
    }
    if view["direction"] == "in":
        fields["folder"] = view["folder"] or "-"
    else:
        devices = f"{view['recipients']} device{'' if view['recipients'] == 1 else 's'}"
        fields["recipients"] = f"{devices}, {view['delivered']} got it"
    fields["content_hash"] = view["content_hash"]
    fields["created"] = format_clock(view["created_at_ms"])
    if view["completed_at_ms"] is not None:
        fields["completed"] = format_clock(view["completed_at_ms"])
    width = max(len(key) for key in fields)
    return "\n".join(f"{key.replace('_', ' '):<{width}}  {value}" for key, value in fields.items())


def format_sent(view: dict[str, Any]) -> str:
    return (
        f"offered {view['name']} ({format_size(view['size'])}) {counterpart(view)}, "
        f"id {view['transfer_id']}"
    )


def format_accepted(view: dict[str, Any]) -> str:
    where = f" into {view['folder']}" if view["folder"] else ""
    return (
        f"accepted {view['name']} ({format_size(view['size'])}) {counterpart(view)}{where}: "
        f"{view['state']} (p2pid file show {view['transfer_id'][:8]})"
    )


def format_state_line(view: dict[str, Any]) -> str:
    detail = f": {view['error']}" if view["error"] else ""
    return f"{view['name']} ({view['transfer_id'][:8]}) {view['state']}{detail}"


def format_outcome(view: dict[str, Any]) -> str:
    if view["state"] != "complete":
        return format_state_line(view)
    size = format_size(view["size"])
    if view["direction"] == "in":
        return f"received {view['name']} ({size}) {counterpart(view)}: {view['path']}"
    return f"delivered {view['name']} ({size}) {counterpart(view)}"


def format_settings(settings: dict[str, Any]) -> str:
    auto_accept = {
        "none": "off (every offer waits for `p2pid file accept`)",
        "verified": "from verified contacts",
        "contacts": "from any contact",
    }.get(settings["auto_accept"], settings["auto_accept"])
    limit = settings["auto_accept_max_bytes"]
    return "\n".join(
        [
            f"folder       {settings['folder']}",
            f"auto accept  {auto_accept}",
            f"larger than  {format_size(limit)} ({limit} bytes): always asked",
        ]
    )


def format_file_event(event: dict[str, Any], clock: str) -> str | None:
    """The `watch` line of a file event, or None for one this version does not know."""
    kind = event["type"]
    if kind == "file.offered":
        view = event["transfer"]
        offer = f"{clock}  {_person(view)} offers {view['name']} ({format_size(view['size'])})" + (
            f" in {view['group_name']}" if view["group_id"] else ""
        )
        if view["state"] == "offered":
            return f"{offer}: p2pid file accept {view['transfer_id'][:8]}"
        return f"{offer}: accepted automatically ({view['state']})"
    if kind == "file.progress":
        rate = f", {format_size(int(event['rate_bps']))}/s" if event["rate_bps"] > 0 else ""
        share = min(100, event["bytes_done"] * 100 // event["size"]) if event["size"] > 0 else 0
        return (
            f"{clock}  {_arrow(event)} {event['transfer_id'][:8]} {share}% "
            f"({format_size(event['bytes_done'])} of {format_size(event['size'])}{rate})"
        )
    if kind == "file.state":
        return f"{clock}  {_arrow(event['transfer'])} {format_state_line(event['transfer'])}"
    return None
