"""`p2pid files` / `p2pid file ...`: usage errors checked before any daemon call, the no-daemon
error, the RPC layer's parameters and error codes, the human output of every view, following a
transfer through its events (against the real RPC server and event bus, with a scripted file
service behind them), and (once the file service is in) a file end to end between two daemons."""

from __future__ import annotations

import contextlib
import importlib.util
import io
import json
import os
import re
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import msgspec
import pytest
import trio

from p2pid.cli import format_event, main
from p2pid.cli_files import (
    format_outcome,
    format_sent,
    format_settings,
    format_size,
    format_transfer,
    format_transfers,
    parse_size,
)
from p2pid.events import EventBus
from p2pid.files.errors import FilesError
from p2pid.home import Home
from p2pid.node import Node
from p2pid.rpc.client import BlockingClient
from p2pid.rpc.file_methods import file_methods
from p2pid.rpc.protocol import ErrorCode, RpcError
from p2pid.rpc.server import RpcServer
from p2pid.wire.file_views import (
    FileOffered,
    FileProgress,
    FileSettings,
    FileStateChanged,
    FileTransferView,
)
from tests.cli_helpers import DAEMON_SIDE, imported_by_cli, p2pid, p2pid_json
from tests.daemons import running_daemon
from tests.messaging_helpers import become_contacts, wait_until

TIMEOUT = 30.0
WATCHDOG = 20.0  # a scripted daemon closes every connection after this: a stuck CLI fails
T_MS = 1_700_000_000_000
BOB = "b0" * 16
GROUP_ID = "ab" * 32
MIB = 1024 * 1024

# Transfer ids the scripted file service knows.
GOOD = "a0" * 16  # accepting it: downloading, progress, complete
BAD = "ba" * 16  # accepting it: downloading, then failed (a wrong hash)
DONE = "d0" * 16  # already complete (accepted automatically): accepting it is a conflict
GONE = "9e" * 16  # cancelled: accepting it is a conflict
OTHER = "0e" * 16  # another transfer, whose events come in between
MISSING = "dead"  # no such transfer


# -- sample views -------------------------------------------------------------------------------


def transfer(transfer_id: str = GOOD, **changes: Any) -> FileTransferView:
    fields: dict[str, Any] = {
        "transfer_id": transfer_id,
        "direction": "in",
        "name": "holiday photos.zip",
        "size": 3 * MIB,
        "media_type": "application/zip",
        "state": "offered",
        "peer_id": BOB,
        "peer_name": "Bob",
        "group_id": "",
        "group_name": "",
        "bytes_done": 0,
        "path": "",
        "folder": "",
        "error": "",
        "content_hash": "c4" * 32,
        "created_at_ms": T_MS,
        "updated_at_ms": T_MS,
        "completed_at_ms": None,
    }
    return FileTransferView(**(fields | changes))


def settings_view(**changes: Any) -> FileSettings:
    fields: dict[str, Any] = {
        "folder": "/home/alice/Downloads",
        "auto_accept": "verified",
        "auto_accept_max_bytes": 25 * MIB,
    }
    return FileSettings(**(fields | changes))


def as_json(struct: Any) -> Any:
    """What a client gets for a struct the daemon returns."""
    return json.loads(msgspec.json.encode(struct))


# -- a scripted daemon: the real RPC server and event bus, a scripted `node.files` --------------


def known(reference: str) -> str:
    """The scripted transfer a prefix names (any other reference names itself)."""
    return next((t for t in (GOOD, BAD, DONE, GONE) if t.startswith(reference)), reference)


class ScriptedFiles:
    """Records what the RPC layer hands it; accepting or sending (with --wait) publishes, from a
    task of its own, the events a real transfer would."""

    def __init__(self, bus: EventBus) -> None:
        self.bus = bus
        self.calls: list[tuple[str, tuple[Any, ...]]] = []
        self.nursery: trio.Nursery | None = None

    def _publish(self, *events: Any) -> None:
        for event in events:
            self.bus.publish(event)

    def _later(self, *events: Any) -> None:
        async def publish() -> None:
            for event in events:
                await trio.lowlevel.checkpoint()
                self.bus.publish(event)

        assert self.nursery is not None
        self.nursery.start_soon(publish)

    async def list_transfers(self) -> list[FileTransferView]:
        self.calls.append(("list_transfers", ()))
        return [transfer()]

    async def show(self, reference: str) -> FileTransferView:
        self.calls.append(("show", (reference,)))
        transfer_id = known(reference)
        if transfer_id == MISSING:
            raise FilesError("not_found", f"no transfer {transfer_id!r}")
        if transfer_id == DONE:
            return transfer(DONE, state="complete", folder="/srv", path="/srv/x", bytes_done=1)
        return transfer(transfer_id, state="cancelled" if transfer_id == GONE else "offered")

    async def send(self, target: str, path: str) -> FileTransferView:
        self.calls.append(("send", (target, path)))
        if target == "Nobody":
            raise FilesError("not_found", "no contact or group 'Nobody'")
        name = Path(path).name
        sending = transfer(OTHER, direction="out", name=name, state="sending", path=path)
        self._later(
            FileProgress(
                at_ms=T_MS,
                transfer_id=OTHER,
                direction="out",
                bytes_done=MIB,
                size=3 * MIB,
                rate_bps=MIB,
                eta_s=2.0,
            ),
            FileStateChanged(
                at_ms=T_MS,
                transfer=transfer(
                    OTHER,
                    direction="out",
                    name=name,
                    state="complete",
                    path=path,
                    bytes_done=3 * MIB,
                    delivered=1,
                ),
            ),
        )
        return sending

    async def accept(self, reference: str, folder: str | None) -> FileTransferView:
        self.calls.append(("accept", (reference, folder)))
        transfer_id = known(reference)
        where = folder or "/home/alice/Downloads"
        if transfer_id == DONE:
            raise FilesError("conflict", "this file is already complete")
        if transfer_id == GONE:
            raise FilesError("conflict", "this transfer was cancelled")
        downloading = transfer(transfer_id, state="downloading", folder=where)
        # An event already on its way when the accept returns: the CLI must not miss it.
        self._publish(FileStateChanged(at_ms=T_MS, transfer=downloading))
        if transfer_id == BAD:
            failed = transfer(BAD, state="failed", folder=where, error="the content hash differs")
            self._later(FileStateChanged(at_ms=T_MS, transfer=failed))
            return downloading
        self._later(
            FileStateChanged(at_ms=T_MS, transfer=transfer(OTHER, state="complete")),
            FileProgress(
                at_ms=T_MS,
                transfer_id=OTHER,
                direction="in",
                bytes_done=9,
                size=9,
                rate_bps=1.0,
                eta_s=None,
            ),
            FileProgress(
                at_ms=T_MS,
                transfer_id=transfer_id,
                direction="in",
                bytes_done=2 * MIB,
                size=3 * MIB,
                rate_bps=MIB,
                eta_s=1.0,
            ),
            FileStateChanged(
                at_ms=T_MS,
                transfer=transfer(
                    transfer_id,
                    state="complete",
                    folder=where,
                    bytes_done=3 * MIB,
                    path=f"{where}/holiday photos.zip",
                    completed_at_ms=T_MS,
                ),
            ),
        )
        return downloading

    async def cancel(self, transfer_id: str) -> FileTransferView:
        self.calls.append(("cancel", (transfer_id,)))
        return transfer(transfer_id, state="cancelled")

    async def settings(self) -> FileSettings:
        self.calls.append(("settings", ()))
        return settings_view()

    async def set_settings(
        self, folder: str | None, auto_accept: str | None, auto_accept_max_bytes: int | None
    ) -> FileSettings:
        self.calls.append(("set_settings", (folder, auto_accept, auto_accept_max_bytes)))
        if auto_accept_max_bytes is not None:
            return settings_view(auto_accept_max_bytes=auto_accept_max_bytes)
        return settings_view()


@contextlib.contextmanager
def scripted_daemon(home: Path) -> Iterator[ScriptedFiles]:
    """The daemon's RPC server for `home`, in a thread, with `file_methods` over ScriptedFiles."""
    home.mkdir(parents=True, exist_ok=True)
    bus = EventBus()
    files = ScriptedFiles(bus)
    ready = threading.Event()
    handles: dict[str, Any] = {}

    async def serve() -> None:
        handles["token"] = trio.lowlevel.current_trio_token()
        handles["stop"] = stop = trio.Event()
        with trio.move_on_after(WATCHDOG):
            async with trio.open_nursery() as nursery:
                files.nursery = nursery
                methods = file_methods(cast(Node, SimpleNamespace(files=files)))
                await nursery.start(RpcServer(methods, bus).serve, Home(home).socket)
                ready.set()
                await stop.wait()
                nursery.cancel_scope.cancel()

    thread = threading.Thread(target=trio.run, args=(serve,), daemon=True)
    thread.start()
    assert ready.wait(10), "the scripted daemon did not start"
    try:
        yield files
    finally:
        with contextlib.suppress(trio.RunFinishedError):
            trio.from_thread.run_sync(handles["stop"].set, trio_token=handles["token"])
        thread.join(10)


@pytest.fixture
def home(tmp_path: Path) -> Path:
    return tmp_path / "home"


@pytest.fixture
def cli(home: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> Any:
    """`main()` in this process on `home`: (exit code, stdout, stderr)."""

    def run(*args: str) -> tuple[int, str, str]:
        monkeypatch.setattr(sys, "stdin", io.StringIO(""))
        code = main(["--home", str(home), *args])
        captured = capsys.readouterr()
        return code, captured.out, captured.err

    return run


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The current directory, with a file `report.pdf`, a folder `inbox` and a folder `dir`."""
    place = tmp_path / "cwd"
    (place / "inbox").mkdir(parents=True)
    (place / "dir").mkdir()
    (place / "report.pdf").write_bytes(b"%PDF-1.7 not really\n")
    monkeypatch.chdir(place)
    return place


# -- usage errors ---------------------------------------------------------------------------

USAGE_ERRORS = [
    (["files", "extra"], "unrecognized arguments: extra"),
    (["file"], "the following arguments are required: ACTION"),
    (["file", "frobnicate"], "invalid choice: 'frobnicate'"),
    (["file", "send"], "p2pid file send: the following arguments are required: TARGET, PATH"),
    (["file", "send", "Bob"], "p2pid file send: the following arguments are required: PATH"),
    (["file", "send", "  ", "report.pdf"], "p2pid file send: TARGET is empty"),
    (["file", "send", "Bob", "missing.txt"], "p2pid file send: missing.txt: no such file"),
    (["file", "send", "Bob", "report.pdf/x"], "p2pid file send: report.pdf/x: no such file"),
    (["file", "send", "Bob", "dir"], "p2pid file send: dir is a directory"),
    (["file", "send", "Bob", "/dev/null"], "p2pid file send: /dev/null is not a regular file"),
    (["file", "send", "Bob", "report.pdf", "--wait", "x"], "unrecognized arguments: x"),
    (["file", "show"], "p2pid file show: the following arguments are required: ID"),
    (["file", "show", "abc"], "p2pid file show: ID is 4 to 32 hex characters"),
    (["file", "show", "xyz1"], "p2pid file show: ID is 4 to 32 hex characters"),
    (["file", "show", "a" * 33], "p2pid file show: ID is 4 to 32 hex characters"),
    (["file", "accept"], "p2pid file accept: the following arguments are required: ID"),
    (["file", "accept", "nope"], "p2pid file accept: ID is 4 to 32 hex characters"),
    (["file", "accept", "abcd", "--to"], "argument --to: expected one argument"),
    (["file", "accept", "abcd", "--to", "missing"], "--to missing: no such directory"),
    (["file", "accept", "abcd", "--to", "report.pdf"], "--to report.pdf is not a directory"),
    (["file", "cancel"], "p2pid file cancel: the following arguments are required: ID"),
    (["file", "cancel", "ab"], "p2pid file cancel: ID is 4 to 32 hex characters"),
    (["file", "settings", "--folder", "missing"], "--folder missing: no such directory"),
    (["file", "settings", "--folder", "report.pdf"], "--folder report.pdf is not a directory"),
    (["file", "settings", "--auto-accept", "maybe"], "invalid choice: 'maybe'"),
    (["file", "settings", "--auto-accept-max", "lots"], "--auto-accept-max 'lots' is not a size"),
    (["file", "settings", "--auto-accept-max", "25X"], "--auto-accept-max '25X' is not a size"),
    (["file", "settings", "--auto-accept-max", "-1"], "--auto-accept-max '-1' is not a size"),
    (["file", "settings", "--auto-accept-max", "9999999T"], "is not a size"),
]


@pytest.mark.usefixtures("workdir")
@pytest.mark.parametrize(("args", "message"), USAGE_ERRORS)
def test_bad_arguments_are_json_usage_errors(cli: Any, args: list[str], message: str) -> None:
    code, out, err = cli("--json", *args)
    assert code == 2
    error = json.loads(out)["error"]
    assert error["code"] == "usage"
    assert message in error["message"]
    assert err == ""


@pytest.mark.usefixtures("workdir")
@pytest.mark.parametrize(("args", "message"), USAGE_ERRORS)
def test_bad_arguments_in_text_go_to_stderr(cli: Any, args: list[str], message: str) -> None:
    code, out, err = cli(*args)
    assert (code, out) == (2, "")
    assert err.startswith("p2pid: error: ")
    assert message in err


@pytest.mark.usefixtures("workdir")
def test_usage_errors_never_reach_the_daemon(cli: Any, home: Path) -> None:
    with scripted_daemon(home) as files:
        for args, _ in USAGE_ERRORS:
            assert cli("--json", *args)[0] == 2
        assert files.calls == []
        # The same daemon answers a good command: the checks above were all local.
        assert cli("--json", "file", "show", "abcd")[0] == 0
        assert files.calls == [("show", ("abcd",))]


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads and writes everything")
def test_unreadable_file_and_unwritable_folder(cli: Any, workdir: Path) -> None:
    (workdir / "report.pdf").chmod(0)
    (workdir / "inbox").chmod(0o500)
    code, out, _ = cli("--json", "file", "send", "Bob", "report.pdf")
    assert code == 2 and "report.pdf: cannot read it" in json.loads(out)["error"]["message"]
    code, out, _ = cli("--json", "file", "accept", "abcd", "--to", "inbox")
    assert code == 2 and "--to inbox: cannot write there" in json.loads(out)["error"]["message"]


def test_usage_errors_through_the_real_command(tmp_path: Path) -> None:
    result = p2pid(tmp_path, "--json", "file", "send", "Bob", str(tmp_path), check=False)
    assert result.returncode == 2
    assert "is a directory" in json.loads(result.stdout)["error"]["message"]
    assert not (tmp_path / "p2pid.db").exists()


@pytest.mark.parametrize(
    ("text", "size"),
    [
        ("0", 0),
        ("1024", 1024),
        ("500k", 500 * 1024),
        ("500K", 500 * 1024),
        ("25M", 25 * MIB),
        ("25 MiB", 25 * MIB),
        ("25mb", 25 * MIB),
        ("1G", 1024**3),
        ("1.5G", 1536 * MIB),
        ("1T", 1024**4),
        ("700B", 700),
    ],
)
def test_sizes(text: str, size: int) -> None:
    assert parse_size(text) == size


@pytest.mark.parametrize("text", ["", "M", "-5", "1e6", "5 X", "1..5M", "0x10", "1025G"])
def test_not_sizes(text: str) -> None:
    assert parse_size(text) is None


# -- no daemon ------------------------------------------------------------------------------

DAEMON_CALLS = [
    ["files"],
    ["file", "send", "Bob", "report.pdf"],
    ["file", "send", "Hikers", "report.pdf", "--wait"],
    ["file", "show", "abcd"],
    ["file", "accept", "ABCD", "--to", "inbox"],
    ["file", "accept", "abcd", "--no-wait"],
    ["file", "cancel", "abcd"],
    ["file", "settings"],
    ["file", "settings", "--folder", "inbox", "--auto-accept", "none", "--auto-accept-max", "1G"],
]


@pytest.mark.usefixtures("workdir")
@pytest.mark.parametrize("args", DAEMON_CALLS)
def test_without_a_daemon_every_command_is_the_no_daemon_error(cli: Any, args: list[str]) -> None:
    code, out, _ = cli("--json", *args)
    assert code == 3
    assert json.loads(out)["error"]["code"] == ErrorCode.DAEMON_NOT_RUNNING


def test_file_commands_never_import_the_daemon_side(tmp_path: Path) -> None:
    out, imported = imported_by_cli(
        tmp_path, "--json", "file", "show", "abcd", watched=(*DAEMON_SIDE, "rich")
    )
    assert json.loads(out)["error"]["code"] == ErrorCode.DAEMON_NOT_RUNNING
    assert imported == []


# -- what the daemon is asked -------------------------------------------------------------------


def test_paths_and_folders_go_to_the_daemon_absolute(cli: Any, home: Path, workdir: Path) -> None:
    with scripted_daemon(home) as files:
        code, out, _ = cli("--json", "file", "send", "Bob", "report.pdf")
        assert code == 0 and json.loads(out)["state"] == "sending"
        assert cli("file", "send", "Bob", "./dir/../report.pdf")[0] == 0
        code, out, _ = cli("--json", "file", "accept", "ABCD", "--to", "inbox", "--no-wait")
        assert code == 0 and json.loads(out)["state"] == "downloading"
        assert cli("--json", "file", "accept", "abcd", "--no-wait")[0] == 0
        code, out, _ = cli(
            "--json", "file", "settings", "--folder", "inbox", "--auto-accept", "contacts",
            "--auto-accept-max", "25M",
        )  # fmt: skip
        assert code == 0 and json.loads(out)["auto_accept_max_bytes"] == 25 * MIB
        assert cli("file", "settings", "--auto-accept", "none")[0] == 0
        assert cli("--json", "file", "settings")[0] == 0
        assert cli("--json", "file", "cancel", "abcd")[0] == 0
        assert cli("--json", "files")[0] == 0
    assert files.calls == [
        ("send", ("Bob", str(workdir / "report.pdf"))),
        ("send", ("Bob", str(workdir / "dir/../report.pdf"))),
        ("accept", ("abcd", str(workdir / "inbox"))),
        ("accept", ("abcd", None)),
        ("set_settings", (str(workdir / "inbox"), "contacts", 25 * MIB)),
        ("set_settings", (None, "none", None)),
        ("settings", ()),
        ("cancel", ("abcd",)),
        ("list_transfers", ()),
    ]


def test_daemon_errors_keep_their_codes(cli: Any, home: Path, workdir: Path) -> None:
    with scripted_daemon(home):
        code, out, _ = cli("--json", "file", "show", MISSING)
        assert code == 1
        assert json.loads(out)["error"] == {
            "code": ErrorCode.NOT_FOUND,
            "message": f"no transfer {MISSING!r}",
        }
        code, out, err = cli("file", "send", "Nobody", "report.pdf", "--wait")
        assert (code, out) == (1, "")
        assert err == "p2pid: error: no contact or group 'Nobody'\n"


# -- following a transfer -----------------------------------------------------------------------


def test_accept_waits_until_complete_one_json_document(cli: Any, home: Path) -> None:
    with scripted_daemon(home) as files:
        code, out, err = cli("--json", "file", "accept", GOOD[:8])
    assert code == 0 and err == ""
    final = json.loads(out)  # one document: the final view, not another transfer's
    assert (final["transfer_id"], final["state"]) == (GOOD, "complete")
    assert final["path"] == "/home/alice/Downloads/holiday photos.zip"
    assert files.calls == [("accept", (GOOD[:8], None))]


def test_accept_without_a_terminal_prints_a_line_per_state(cli: Any, home: Path) -> None:
    with scripted_daemon(home):
        code, out, err = cli("file", "accept", GOOD)
    assert code == 0
    assert err.splitlines() == [
        f"holiday photos.zip ({GOOD[:8]}) downloading",
        f"holiday photos.zip ({GOOD[:8]}) complete",
    ]
    assert out == (
        "received holiday photos.zip (3.0 MiB) from Bob: /home/alice/Downloads/holiday photos.zip\n"
    )


def test_a_failed_transfer_exits_1(cli: Any, home: Path) -> None:
    with scripted_daemon(home):
        code, out, err = cli("file", "accept", BAD)
        assert code == 1
        assert out == f"holiday photos.zip ({BAD[:8]}) failed: the content hash differs\n"
        assert err.splitlines()[-1] == out.strip()
        code, out, _ = cli("--json", "file", "accept", BAD)
        assert code == 1 and json.loads(out)["state"] == "failed"


def test_accepting_a_file_already_complete_shows_it(cli: Any, home: Path) -> None:
    with scripted_daemon(home) as files:
        code, out, _ = cli("--json", "file", "accept", DONE)
        assert code == 0 and json.loads(out)["state"] == "complete"
        code, out, _ = cli("file", "accept", DONE[:6], "--no-wait")
        assert code == 0 and "complete" in out
        code, out, err = cli("file", "accept", GONE)
        assert (code, out) == (1, "")
        assert err == "p2pid: error: this transfer was cancelled\n"
    assert [name for name, _ in files.calls] == ["accept", "show"] * 3


def test_send_wait_follows_the_outgoing_transfer(cli: Any, home: Path, workdir: Path) -> None:
    with scripted_daemon(home):
        code, out, err = cli("file", "send", "Bob", "report.pdf", "--wait")
    assert code == 0
    lines = out.splitlines()
    assert lines[0] == f"offered report.pdf (3.0 MiB) to Bob, id {OTHER}"
    assert lines[1] == "delivered report.pdf (3.0 MiB) to Bob"
    assert err.splitlines() == [
        f"report.pdf ({OTHER[:8]}) sending",
        f"report.pdf ({OTHER[:8]}) complete",
    ]


def test_ctrl_c_stops_waiting_not_the_transfer(
    cli: Any, home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def interrupted(client: BlockingClient) -> dict[str, Any]:
        raise KeyboardInterrupt

    with scripted_daemon(home) as files:
        monkeypatch.setattr(BlockingClient, "next_event", interrupted)
        code, out, err = cli("file", "accept", GOOD)
        assert code == 130
        assert "stopped waiting; holiday photos.zip goes on in the daemon" in err
        assert f"p2pid file cancel {GOOD[:8]}" in err
        code, out, _ = cli("--json", "file", "accept", GOOD)
        assert code == 130 and json.loads(out)["error"]["code"] == "interrupted"
    assert [name for name, _ in files.calls] == ["accept", "accept"]  # nothing cancelled


def test_on_a_terminal_a_progress_bar_goes_to_stderr(
    home: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    terminal = Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    monkeypatch.setenv("COLUMNS", "120")
    with scripted_daemon(home):
        code = main(["--home", str(home), "file", "accept", GOOD])
    assert code == 0
    drawn = re.sub(r"\x1b\[[0-9;?]*[a-zA-Z]", "", terminal.getvalue())  # without colours
    assert "← holiday photos.zip" in drawn
    assert "3.0/3.0 MiB 1.0 MiB/s 0:00:00" in drawn
    assert f"holiday photos.zip ({GOOD[:8]}) complete" in drawn
    assert capsys.readouterr().out.startswith("received holiday photos.zip")


# -- the RPC methods ----------------------------------------------------------------------------


class FakeFiles:
    """Records what the RPC layer hands the service; the transfer `dead` does not exist."""

    def __init__(self, error: FilesError | None = None) -> None:
        self.calls: list[tuple[str, tuple[Any, ...]]] = []
        self.error = error

    def __getattr__(self, name: str) -> Any:
        async def method(*args: Any) -> Any:
            self.calls.append((name, args))
            if self.error is not None:
                raise self.error
            if name in ("settings", "set_settings"):
                return settings_view()
            return [transfer()] if name == "list_transfers" else transfer()

        return method


def methods_over(fake: FakeFiles) -> Any:
    return file_methods(cast(Node, SimpleNamespace(files=fake)))


async def test_rpc_methods_hand_typed_arguments_to_the_service() -> None:
    fake = FakeFiles()
    methods = methods_over(fake)
    assert set(methods) == {
        "files",
        *(f"file.{name}" for name in ("send", "show", "accept", "cancel", "settings")),
        "file.settings.set",
    }
    assert await methods["files"]({}) == [transfer()]
    assert await methods["file.send"]({"target": "Bob", "path": "/tmp/a"}) == transfer()
    await methods["file.show"]({"transfer": "abcd"})
    await methods["file.accept"]({"transfer": "abcd"})
    await methods["file.accept"]({"transfer": "abcd", "folder": "/tmp/in"})
    await methods["file.accept"]({"transfer": "abcd", "folder": None})
    await methods["file.cancel"]({"transfer": "abcd"})
    assert await methods["file.settings"]({}) == settings_view()
    await methods["file.settings.set"]({})
    await methods["file.settings.set"](
        {"folder": "/tmp/in", "auto_accept": "contacts", "auto_accept_max_bytes": 0}
    )
    assert fake.calls == [
        ("list_transfers", ()),
        ("send", ("Bob", "/tmp/a")),
        ("show", ("abcd",)),
        ("accept", ("abcd", None)),
        ("accept", ("abcd", "/tmp/in")),
        ("accept", ("abcd", None)),
        ("cancel", ("abcd",)),
        ("settings", ()),
        ("set_settings", (None, None, None)),
        ("set_settings", ("/tmp/in", "contacts", 0)),
    ]


@pytest.mark.parametrize(
    ("method", "params"),
    [
        ("files", {"all": True}),
        ("file.send", {"target": "Bob"}),
        ("file.send", {"target": "Bob", "path": ""}),
        ("file.send", {"target": "Bob", "path": "/x" * 3000}),
        ("file.send", {"target": "Bob", "path": "/a", "wait": True}),
        ("file.show", {}),
        ("file.show", {"transfer": 7}),
        ("file.accept", {"transfer": "abcd", "to": "/tmp"}),
        ("file.accept", {"transfer": "abcd", "folder": 3}),
        ("file.cancel", {"transfer": ""}),
        ("file.settings", {"folder": "/tmp"}),
        ("file.settings.set", {"auto_accept": "everyone"}),
        ("file.settings.set", {"auto_accept_max_bytes": -1}),
        ("file.settings.set", {"auto_accept_max_bytes": 2**40 + 1}),
        ("file.settings.set", {"auto_accept_max_bytes": "25M"}),
        ("file.settings.set", {"folder": ""}),
    ],
)
async def test_rpc_methods_refuse_bad_params(method: str, params: dict[str, Any]) -> None:
    fake = FakeFiles()
    with pytest.raises(RpcError) as raised:
        await methods_over(fake)[method](params)
    assert raised.value.code == ErrorCode.INVALID_PARAMS
    assert fake.calls == []


@pytest.mark.parametrize(
    ("kind", "code"),
    [
        ("invalid", ErrorCode.INVALID_PARAMS),
        ("not_found", ErrorCode.NOT_FOUND),
        ("refused", ErrorCode.REFUSED),
        ("unreachable", ErrorCode.UNREACHABLE),
        ("conflict", ErrorCode.CONFLICT),
        ("something new", ErrorCode.INTERNAL_ERROR),
    ],
)
async def test_rpc_methods_map_service_errors_to_codes(kind: str, code: int) -> None:
    methods = methods_over(FakeFiles(FilesError(kind, "it went wrong")))
    with pytest.raises(RpcError) as raised:
        await methods["file.cancel"]({"transfer": "abcd"})
    assert (raised.value.code, raised.value.message) == (code, "it went wrong")


# -- human output -------------------------------------------------------------------------------


def test_sizes_for_people() -> None:
    assert [format_size(n) for n in (0, 1023, 1024, 1536, 3 * MIB, 1024**3 - 1, 5 * 1024**4)] == [
        "0 B", "1023 B", "1.0 KiB", "1.5 KiB", "3.0 MiB", "1.0 GiB", "5.0 TiB"
    ]  # fmt: skip


def test_files_table() -> None:
    views = [
        transfer(GOOD, state="downloading", bytes_done=MIB),
        transfer(
            OTHER,
            direction="out",
            name="a rather long name for a file.tar.gz",
            size=700,
            state="sending",
            peer_id="",
            peer_name="",
            group_id=GROUP_ID,
            group_name="Hikers",
            recipients=4,
            delivered=1,
        ),
        transfer(DONE, state="offered", group_id=GROUP_ID, group_name="Hikers"),
        transfer(BAD, state="complete", size=0),
    ]
    lines = format_transfers(as_json(views)).split("\n")
    assert lines[0] == (
        f"{GOOD[:8]}  ←  holiday photos.zip          3.0 MiB  downloading   33%  from Bob"
    )
    assert lines[1].split() == [
        OTHER[:8], "→", "a", "rather", "long", "n…e.tar.gz", "700", "B", "sending",
        "0%", "to", "group", "Hikers,", "1", "got", "it",
    ]  # fmt: skip
    assert lines[2].endswith("offered        0%  from Bob in Hikers")
    assert lines[3].endswith("0 B  complete     100%  from Bob")
    assert lines[4] == "(accept an offer: p2pid file accept ID [--to DIR])"
    assert format_transfers([]).startswith("no file transfers yet")
    assert len(format_transfers(as_json(views[:1])).split("\n")) == 1


def test_file_show() -> None:
    incoming = transfer(
        state="waiting", bytes_done=MIB, folder="/srv/in", path="/srv/in/holiday photos.zip",
        error="no source reachable; retrying",
    )  # fmt: skip
    fields = dict(line.split("  ", 1) for line in format_transfer(as_json(incoming)).split("\n"))
    assert {key.strip(): value.strip() for key, value in fields.items()} == {
        "name": "holiday photos.zip",
        "transfer id": GOOD,
        "direction": "incoming, from Bob",
        "size": f"3.0 MiB ({3 * MIB} bytes)",
        "type": "application/zip",
        "state": "waiting (no source reachable; retrying)",
        "progress": "33% (1.0 MiB)",
        "path": "/srv/in/holiday photos.zip",
        "folder": "/srv/in",
        "content hash": "c4" * 32,
        "created": fields["created"].strip(),
    }
    outgoing = transfer(
        direction="out", state="complete", group_id=GROUP_ID, group_name="Hikers", recipients=3,
        delivered=2, path="/home/alice/x.zip", completed_at_ms=T_MS,
    )  # fmt: skip
    text = format_transfer(as_json(outgoing))
    assert "outgoing, to group Hikers" in text
    assert "recipients    3 devices, 2 got it" in text
    assert "progress      100%" in text
    assert "completed" in text and "folder" not in text


def test_one_line_summaries() -> None:
    out = transfer(direction="out", state="sending", group_id=GROUP_ID, group_name="Hikers")
    assert format_sent(as_json(out)) == (
        f"offered holiday photos.zip (3.0 MiB) to group Hikers, id {GOOD}"
    )
    done = transfer(state="complete", path="/srv/in/holiday photos.zip")
    assert format_outcome(as_json(done)) == (
        "received holiday photos.zip (3.0 MiB) from Bob: /srv/in/holiday photos.zip"
    )
    cancelled = transfer(state="cancelled", error="cancelled by Bob")
    assert format_outcome(as_json(cancelled)) == (
        f"holiday photos.zip ({GOOD[:8]}) cancelled: cancelled by Bob"
    )


def test_settings() -> None:
    assert format_settings(as_json(settings_view())).split("\n") == [
        "folder       /home/alice/Downloads",
        "auto accept  from verified contacts",
        f"larger than  25.0 MiB ({25 * MIB} bytes): always asked",
    ]
    off = format_settings(as_json(settings_view(auto_accept="none")))
    assert "auto accept  off (every offer waits for `p2pid file accept`)" in off


def test_watch_shows_file_events_readably() -> None:
    events = [
        FileOffered(at_ms=T_MS, transfer=transfer()),
        FileOffered(
            at_ms=T_MS,
            transfer=transfer(state="downloading", group_id=GROUP_ID, group_name="Hikers"),
        ),
        FileProgress(
            at_ms=T_MS,
            transfer_id=GOOD,
            direction="in",
            bytes_done=MIB,
            size=4 * MIB,
            rate_bps=2 * MIB,
            eta_s=1.5,
        ),
        FileProgress(
            at_ms=T_MS,
            transfer_id=GOOD,
            direction="out",
            bytes_done=0,
            size=0,
            rate_bps=0.0,
            eta_s=None,
        ),
        FileStateChanged(at_ms=T_MS, transfer=transfer(state="failed", error="disk full")),
    ]
    lines = [format_event(msgspec.to_builtins(event))[10:] for event in events]
    assert lines == [
        f"Bob offers holiday photos.zip (3.0 MiB): p2pid file accept {GOOD[:8]}",
        "Bob offers holiday photos.zip (3.0 MiB) in Hikers: accepted automatically (downloading)",
        f"← {GOOD[:8]} 25% (1.0 MiB of 4.0 MiB, 2.0 MiB/s)",
        f"→ {GOOD[:8]} 0% (0 B of 0 B)",
        f"← holiday photos.zip ({GOOD[:8]}) failed: disk full",
    ]
    unknown = format_event({"type": "file.future", "at_ms": T_MS, "transfer_id": GOOD})
    assert unknown.endswith(f'file.future  {{"transfer_id": "{GOOD}"}}')


# -- end to end, through real daemons -----------------------------------------------------------

SERVICE_READY = importlib.util.find_spec("p2pid.files.service") is not None


@pytest.mark.skipif(not SERVICE_READY, reason="the file service (p2pid.files.service) is not in")
def test_a_file_through_daemons(tmp_path: Path) -> None:
    alice, bob = tmp_path / "alice", tmp_path / "bob"
    source = tmp_path / "outbox" / "notes.bin"
    source.parent.mkdir()
    source.write_bytes(os.urandom(3 * MIB + 12345))
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    with running_daemon(alice, "Alice"), running_daemon(bob, "Bob"):
        become_contacts(alice, bob)
        settings = p2pid_json(bob, "file", "settings", "--auto-accept", "none")
        assert settings["auto_accept"] == "none"
        sent = p2pid_json(alice, "file", "send", "Bob", str(source))
        assert (sent["direction"], sent["name"], sent["size"]) == (
            "out",
            "notes.bin",
            3 * MIB + 12345,
        )
        transfer_id = sent["transfer_id"]

        def offered() -> dict[str, Any] | None:
            return next(
                (t for t in p2pid_json(bob, "files") if t["transfer_id"] == transfer_id), None
            )

        offer = wait_until(offered, TIMEOUT, "Bob sees the offer")
        assert (offer["direction"], offer["state"], offer["peer_name"]) == (
            "in",
            "offered",
            "Alice",
        )
        done = p2pid_json(bob, "file", "accept", transfer_id[:8], "--to", str(inbox))
        assert done["state"] == "complete"
        assert Path(done["path"]) == inbox / "notes.bin"
        assert (inbox / "notes.bin").read_bytes() == source.read_bytes()

        def delivered() -> dict[str, Any] | None:
            view = p2pid_json(alice, "file", "show", transfer_id)
            return view if view["state"] == "complete" else None

        assert wait_until(delivered, TIMEOUT, "Alice learns Bob has it")["delivered"] == 1
        listing = p2pid(alice, "files").stdout
        assert f"{transfer_id[:8]}  →  notes.bin" in listing and "complete" in listing
