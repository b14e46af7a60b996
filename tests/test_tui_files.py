"""The TUI's files section (F11): the transfers with their state and progress, accepting an offer
into a folder, cancelling, opening the folder, sending a file, and the file.* events.

Snapshot tests render the screens from a ScriptedLink whose answers are built from the wire
records (FileTransferView, FileSettings) so the pictures are pixel-stable. The scripted behaviour
tests check which RPC calls the screens make, with which params, and what the events change.
"""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path
from typing import Any

import msgspec
from textual.pilot import Pilot
from textual.widgets import Input

from p2pid.home import Home
from p2pid.rpc.protocol import ErrorCode
from p2pid.sizes import human_size
from p2pid.tui.app import P2pidApp
from p2pid.tui.link import DaemonOptions
from p2pid.tui.screens.chats import ChatsScreen
from p2pid.tui.screens.contact_detail import ConfirmScreen
from p2pid.tui.screens.files import AcceptFileScreen, FilesScreen, SendFileScreen, file_problem
from p2pid.tui.widgets.file_records import human_eta, progress_bar
from p2pid.tui.widgets.file_table import FileTable
from p2pid.wire.file_views import FileSettings, FileTransferView
from p2pid.wire.group_views import GroupSummary
from tests.daemons import LOOPBACK, running_daemon
from tests.messaging_helpers import become_contacts, call
from tests.tui_fixtures import (
    AT_MS,
    NotingApp,
    QuietApp,
    ScriptedLink,
    contact,
    identity_id,
    initialised_home,
    methods,
    no_blink,
    open_modal,
    refuse,
    run_scripted,
    scenario_then,
    size_ids,
    text_of,
    until,
)

os.environ["TZ"] = "UTC"
time.tzset()

MINUTE_MS = 60_000
DOWNLOADS = "/home/alice/Downloads/p2pid"


BOB, CAROL, DAVE = (identity_id(n) for n in (1, 2, 3))
CLIMBING = "c1" * 32
OFFERED, DOWNLOADING, WAITING, COMPLETE, SENDING = (f"{n:02x}" * 16 for n in (1, 2, 3, 4, 5))


def plain(record: Any) -> Any:
    return msgspec.to_builtins(record)


def transfer(
    transfer_id: str, name: str, size: int, minutes_ago: int, **fields: Any
) -> FileTransferView:
    values: dict[str, Any] = {
        "transfer_id": transfer_id,
        "direction": "in",
        "name": name,
        "size": size,
        "media_type": "application/octet-stream",
        "state": "offered",
        "peer_id": BOB,
        "peer_name": "Bob",
        "group_id": "",
        "group_name": "",
        "bytes_done": 0,
        "path": "",
        "folder": "",
        "error": "",
        "content_hash": "ab" * 32,
        "created_at_ms": AT_MS - minutes_ago * MINUTE_MS,
        "updated_at_ms": AT_MS - minutes_ago * MINUTE_MS,
        "completed_at_ms": None,
    }
    values.update(fields)
    return FileTransferView(**values)


TRANSFERS = [
    transfer(OFFERED, "holiday-photos.zip", 184_320_000, 2, media_type="application/zip"),
    transfer(
        DOWNLOADING,
        "Climbing guide 2026.pdf",
        12_500_000,
        5,
        media_type="application/pdf",
        state="downloading",
        peer_id=CAROL,
        peer_name="Carol",
        group_id=CLIMBING,
        group_name="Climbing club",
        bytes_done=5_000_000,
        folder=DOWNLOADS,
        path=f"{DOWNLOADS}/Climbing guide 2026.pdf",
    ),
    transfer(
        WAITING,
        "dataset.tar.gz",
        2_147_483_648,
        30,
        state="waiting",
        peer_id=DAVE,
        peer_name="Dave",
        bytes_done=644_245_094,
        folder="/data/incoming",
        path="/data/incoming/dataset.tar.gz",
        error="no device that has it is reachable; retrying every 30 s",
    ),
    transfer(
        COMPLETE,
        "notes.md",
        4_213,
        60,
        media_type="text/markdown",
        state="complete",
        bytes_done=4_213,
        folder=DOWNLOADS,
        path=f"{DOWNLOADS}/notes.md",
        completed_at_ms=AT_MS - 59 * MINUTE_MS,
    ),
    transfer(
        SENDING,
        "talk-slides.pdf",
        8_400_000,
        90,
        direction="out",
        media_type="application/pdf",
        state="sending",
        peer_id="",
        peer_name="",
        group_id=CLIMBING,
        group_name="Climbing club",
        bytes_done=5_040_000,
        path="/home/alice/talks/talk-slides.pdf",
        recipients=3,
        delivered=1,
    ),
]

SETTINGS = FileSettings(folder=DOWNLOADS, auto_accept="verified", auto_accept_max_bytes=50_000_000)


CONTACTS = [contact(CAROL, "Carol"), contact(BOB, "Bob"), contact(DAVE, "Mallory", blocked=True)]
GROUPS = [
    GroupSummary(
        group_id=CLIMBING,
        name="Climbing club",
        avatar="",
        my_role="admin",
        members=4,
        unread=0,
        last_message=None,
        updated_at_ms=AT_MS,
    )
]


def view_of(transfer_id: str) -> FileTransferView:
    return next(t for t in TRANSFERS if t.transfer_id == transfer_id)


def scripted_link(**answers: Any) -> ScriptedLink:
    """Alice's daemon: accepting or cancelling changes what the next `files` lists."""
    transfers = {t.transfer_id: t for t in TRANSFERS}

    def changed(transfer_id: str, **fields: Any) -> Any:
        transfers[transfer_id] = msgspec.structs.replace(transfers[transfer_id], **fields)
        return plain(transfers[transfer_id])

    def accept(transfer: str, folder: str | None = None) -> Any:
        return changed(transfer, state="downloading", folder=folder or DOWNLOADS)

    def send(target: str, path: str) -> Any:
        sent = transfer(
            "5e" * 16,
            Path(path).name,
            Path(path).stat().st_size,
            0,
            direction="out",
            state="sending",
            peer_id=target,
            peer_name="Bob",
            path=path,
            recipients=1,
        )
        transfers[sent.transfer_id] = sent
        return plain(sent)

    return ScriptedLink(
        {
            "files": lambda: plain(sorted(transfers.values(), key=lambda t: -t.created_at_ms)),
            "file.settings": plain(SETTINGS),
            "file.accept": accept,
            "file.cancel": lambda transfer: changed(transfer, state="cancelled"),
            "file.send": send,
            "contacts": CONTACTS,
            "groups": plain(GROUPS),
            **answers,
        }
    )


def files_ready(app: P2pidApp) -> bool:
    return isinstance(app.screen, FilesScreen) and app.screen.loaded


async def open_files(pilot: Pilot[Any]) -> None:
    app = pilot.app
    assert isinstance(app, P2pidApp)
    await until(pilot, lambda: app.connected, "the link")
    await pilot.press("f11")
    await until(pilot, lambda: files_ready(app), "the files")


def table_of(app: P2pidApp) -> FileTable:
    """The files screen's table, under any dialog open over it."""
    screen = next(s for s in reversed(app.screen_stack) if isinstance(s, FilesScreen))
    return screen.query_one(FileTable)


def cell(app: P2pidApp, transfer_id: str, column: str) -> str:
    return str(table_of(app).get_cell(transfer_id, column))


def highlight(app: P2pidApp, transfer_id: str) -> None:
    table = table_of(app)
    table.move_cursor(row=table.get_row_index(transfer_id), animate=False)


def progress_event(transfer_id: str, done: int, size: int, rate: float, eta: float | None) -> Any:
    return {
        "type": "file.progress",
        "at_ms": AT_MS,
        "transfer_id": transfer_id,
        "direction": "in",
        "bytes_done": done,
        "size": size,
        "rate_bps": rate,
        "eta_s": eta,
    }


def snapshot_app(tmp_path: Path, link: ScriptedLink | None = None) -> QuietApp:
    link = link or scripted_link()
    return QuietApp(initialised_home(tmp_path / "home"), link_factory=link.factory())


# -- snapshots ---------------------------------------------------------------------------------


@size_ids
def test_snapshot_files(snap_compare: Any, tmp_path: Path, size: tuple[int, int]) -> None:
    """Newest first: an offer, a download at 40 % with its speed, one waiting (its error below,
    highlighted), one complete, one I send to a group (1 of 3 have it)."""
    link = scripted_link()

    async def moving(pilot: Pilot[Any]) -> None:
        app = pilot.app
        assert isinstance(app, P2pidApp)
        link.push(progress_event(DOWNLOADING, 5_000_000, 12_500_000, 3_200_000.0, 2.4))
        await until(pilot, lambda: "MB/s" in cell(app, DOWNLOADING, "speed"), "the speed")
        highlight(app, WAITING)

    run_before = scenario_then(open_files, moving)
    assert snap_compare(snapshot_app(tmp_path, link), terminal_size=size, run_before=run_before)


@size_ids
def test_snapshot_accept(snap_compare: Any, tmp_path: Path, size: tuple[int, int]) -> None:
    """The offer, and the folder prefilled with the settings folder."""

    async def accept(pilot: Pilot[Any]) -> None:
        screen = await open_modal(pilot, "a", AcceptFileScreen)
        await until(pilot, lambda: screen.prefilled, "the settings folder")
        no_blink(screen)

    run_before = scenario_then(open_files, accept)
    assert snap_compare(snapshot_app(tmp_path), terminal_size=size, run_before=run_before)


def test_snapshot_send(snap_compare: Any, tmp_path: Path) -> None:
    """Contacts (not the blocked one) then groups; a path that is not there, refused here."""

    async def send(pilot: Pilot[Any]) -> None:
        screen = await open_modal(pilot, "s", SendFileScreen)
        await until(pilot, lambda: screen.loaded, "the contacts and groups")
        no_blink(screen)
        screen.query_one("#send-path", Input).value = "/nowhere/report.pdf"
        screen.send()
        await until(pilot, lambda: "no file" in text_of(screen.query_one("#send-error")), "no")

    run_before = scenario_then(open_files, send)
    assert snap_compare(snapshot_app(tmp_path), terminal_size=(80, 24), run_before=run_before)


# -- behaviour ---------------------------------------------------------------------------------


def test_accept_sends_the_folder_typed(tmp_path: Path) -> None:
    link = scripted_link()
    accept = link.answers["file.accept"]
    link.answers["file.accept"] = refuse(ErrorCode.INVALID_PARAMS, "the folder is not writable")
    folder = os.path.expanduser("~/p2pid-in")

    async def scenario(app: NotingApp, pilot: Pilot[Any]) -> None:
        highlight(app, COMPLETE)
        await pilot.press("a")
        assert any("notes.md is complete: there is nothing to accept" in t for t in app.toasts)
        assert isinstance(app.screen, FilesScreen)

        # The settings folder, refused by the daemon: said here, the offer stays one.
        highlight(app, OFFERED)
        screen = await open_modal(pilot, "a", AcceptFileScreen)
        entry = screen.query_one("#accept-folder", Input)
        await until(pilot, lambda: entry.value == DOWNLOADS, "the settings folder")
        await pilot.press("enter")
        error = screen.query_one("#accept-error")
        await until(pilot, lambda: "not writable" in text_of(error), "the refusal")
        assert ("file.accept", {"transfer": OFFERED, "folder": DOWNLOADS}) in link.calls
        assert app.screen is screen
        assert cell(app, OFFERED, "state") == "offered"

        # Another folder, typed: accepted.
        link.answers["file.accept"] = accept
        entry.value = ""
        await pilot.press(*"~/p2pid-in", "enter")
        await until(pilot, lambda: isinstance(app.screen, FilesScreen), "accepted")
        assert ("file.accept", {"transfer": OFFERED, "folder": folder}) in link.calls
        await until(pilot, lambda: cell(app, OFFERED, "state") == "downloading", "its new state")
        assert any(f"holiday-photos.zip goes into {folder}" in t for t in app.toasts)

    run_scripted(tmp_path, link, scenario, open_section=open_files)


def test_cancel_asks_first(tmp_path: Path) -> None:
    link = scripted_link()

    async def scenario(app: NotingApp, pilot: Pilot[Any]) -> None:
        highlight(app, DOWNLOADING)
        await open_modal(pilot, "c", ConfirmScreen)
        await pilot.press("n")
        await until(pilot, lambda: isinstance(app.screen, FilesScreen), "back")
        assert "file.cancel" not in methods(link)

        await open_modal(pilot, "c", ConfirmScreen)
        await pilot.press("y")
        await until(pilot, lambda: "file.cancel" in methods(link), "the cancel")
        assert ("file.cancel", {"transfer": DOWNLOADING}) in link.calls
        await until(pilot, lambda: cell(app, DOWNLOADING, "state") == "cancelled", "cancelled")
        assert "Climbing guide 2026.pdf is cancelled." in app.toasts

        await pilot.press("c")  # nothing left to cancel
        assert isinstance(app.screen, FilesScreen)
        assert any("is cancelled already" in t for t in app.toasts)

    run_scripted(tmp_path, link, scenario, open_section=open_files)


def test_progress_events_move_the_bar(tmp_path: Path) -> None:
    link = scripted_link()

    async def scenario(app: NotingApp, pilot: Pilot[Any]) -> None:
        loads = methods(link).count("files")
        assert " 40%" in cell(app, DOWNLOADING, "progress")
        assert cell(app, DOWNLOADING, "speed") == ""
        link.push(progress_event(DOWNLOADING, 9_375_000, 12_500_000, 25_000_000.0, 125.0))
        await until(pilot, lambda: " 75%" in cell(app, DOWNLOADING, "progress"), "75 %")
        assert cell(app, DOWNLOADING, "progress").startswith("██████░░")
        assert cell(app, DOWNLOADING, "speed") == "25.0 MB/s · 3 min"

        done = msgspec.structs.replace(
            view_of(DOWNLOADING), state="complete", bytes_done=12_500_000
        )
        link.push({"type": "file.state", "at_ms": AT_MS, "transfer": plain(done)})
        await until(pilot, lambda: cell(app, DOWNLOADING, "state") == "complete", "complete")
        assert " 100%" in cell(app, DOWNLOADING, "progress")
        assert cell(app, DOWNLOADING, "speed") == ""
        assert any(f"is saved in {DOWNLOADS}" in t for t in app.toasts)
        assert methods(link).count("files") == loads  # events alone, no reload

        # A transfer this screen does not list yet: it asks the daemon again.
        link.push(progress_event("77" * 16, 1, 2, 1.0, 1.0))
        await until(pilot, lambda: methods(link).count("files") > loads, "a reload")

    run_scripted(tmp_path, link, scenario, open_section=open_files)


def test_open_folder_uses_the_opener(tmp_path: Path) -> None:
    link = scripted_link()
    opened: list[str] = []

    def opener(folder: str) -> bool:
        opened.append(folder)
        return folder != "/home/alice/talks"

    async def scenario(app: NotingApp, pilot: Pilot[Any]) -> None:
        app.open_folder = opener
        await pilot.press("o")  # the offer: no folder yet
        assert any("Not accepted yet" in t for t in app.toasts) and not opened

        highlight(app, DOWNLOADING)
        await pilot.press("o")
        await until(pilot, lambda: opened == [DOWNLOADS], "the download's folder opened")

        highlight(app, SENDING)  # the opener cannot: the path is said instead
        await pilot.press("o")
        await until(pilot, lambda: "/home/alice/talks" in app.toasts, "the folder said")
        assert opened == [DOWNLOADS, "/home/alice/talks"]

    run_scripted(tmp_path, link, scenario, open_section=open_files)


def test_offers_toast_anywhere_and_show_at_once(tmp_path: Path) -> None:
    link = scripted_link()
    in_group = transfer("98" * 16, "minutes.txt", 2_400, -1, group_name="Climbing club")
    offer = transfer("99" * 16, "report.pdf", 2_400_000, -2, peer_name="Carol", peer_id=CAROL)
    link.answers["files"] = plain([in_group, *TRANSFERS])

    async def scenario(app: NotingApp, pilot: Pilot[Any]) -> None:
        await until(pilot, lambda: app.connected, "the link")
        link.push({"type": "file.offered", "at_ms": AT_MS, "transfer": plain(in_group)})
        await until(
            pilot,
            lambda: "offers minutes.txt (2.4 kB) in Climbing club: F11 to accept" in app.toasts,
            "the toast in the chats",
        )
        await open_files(pilot)
        assert table_of(app).lists(in_group.transfer_id)

        loads = methods(link).count("files")
        link.push({"type": "file.offered", "at_ms": AT_MS, "transfer": plain(offer)})
        await until(pilot, lambda: table_of(app).lists(offer.transfer_id), "the offer listed")
        assert table_of(app).get_row_index(offer.transfer_id) == 0  # the newest
        assert "offers report.pdf (2.4 MB): F11 to accept" in app.toasts
        assert methods(link).count("files") == loads  # the event alone

    async def stay(pilot: Pilot[Any]) -> None:
        pass

    run_scripted(tmp_path, link, scenario, open_section=stay)


def test_send_checks_the_path_then_sends(tmp_path: Path) -> None:
    link = scripted_link()
    report = tmp_path / "report.pdf"
    report.write_bytes(b"%PDF-1.7 " * 100)

    async def scenario(app: NotingApp, pilot: Pilot[Any]) -> None:
        screen = await open_modal(pilot, "s", SendFileScreen)
        await until(pilot, lambda: screen.loaded, "the contacts and groups")
        await pilot.press("down", "enter")  # Bob, Carol, the club: Carol
        entry = screen.query_one("#send-path", Input)
        await until(pilot, lambda: entry.has_focus, "the path focused")
        entry.value = str(tmp_path)
        await pilot.press("enter")
        error = screen.query_one("#send-error")
        assert "is a folder" in text_of(error)
        entry.value = str(tmp_path / "missing.pdf")
        await pilot.press("enter")
        assert "There is no file at" in text_of(error)
        assert "file.send" not in methods(link)

        entry.value = str(report)
        await pilot.press("enter")
        await until(pilot, lambda: isinstance(app.screen, FilesScreen), "sent")
        assert ("file.send", {"target": CAROL, "path": str(report)}) in link.calls
        table = table_of(app)
        await until(pilot, lambda: table.selected_id == "5e" * 16, "the new row highlighted")
        assert cell(app, "5e" * 16, "state") == "sending 0/1"

        # To the group: its id is the target.
        screen = await open_modal(pilot, "s", SendFileScreen)
        await until(pilot, lambda: screen.loaded, "the contacts and groups")
        await pilot.press("down", "down", "enter")
        screen.query_one("#send-path", Input).value = str(report)
        await pilot.press("enter")
        await until(pilot, lambda: isinstance(app.screen, FilesScreen), "sent")
        assert ("file.send", {"target": CLIMBING, "path": str(report)}) in link.calls

    run_scripted(tmp_path, link, scenario, open_section=open_files)


def test_formatting() -> None:
    assert human_size(999) == "999 B" and human_size(4_213) == "4.2 kB"
    assert human_size(184_320_000) == "184 MB" and human_size(2_147_483_648) == "2.1 GB"
    assert human_eta(None) == "" and human_eta(2.4) == "3 s" and human_eta(61) == "2 min"
    assert human_eta(3_700) == "1 h 2 min"
    assert str(progress_bar(0, 0, "complete")).endswith("100%")
    assert str(progress_bar(1, 3, "downloading")) == "██░░░░░░  33%"
    assert file_problem("/") == "/ is a folder: pick a file in it."


# -- against real daemons ----------------------------------------------------------------------


def test_bob_accepts_alices_file_in_his_tui(tmp_path: Path) -> None:
    """Alice's daemon offers Bob a file; Bob's TUI shows the offer live, he accepts it into a
    folder of his choice, the row reaches complete, and the file there is Alice's, byte for
    byte; the offer is a line of his conversation with Alice."""
    alice, bob = tmp_path / "alice", tmp_path / "bob"
    source = tmp_path / "alice-files" / "field notes.bin"
    source.parent.mkdir()
    source.write_bytes(os.urandom(3 * 1024 * 1024 + 12_345))  # four chunks, the last short
    folder, default = tmp_path / "bob-files", tmp_path / "Downloads"
    folder.mkdir()
    default.mkdir()

    async def scenario(app: NotingApp, pilot: Pilot[Any]) -> None:
        await open_files(pilot)
        assert table_of(app).row_count == 0
        sent = await asyncio.to_thread(call, alice, "file.send", target="Bob", path=str(source))
        transfer_id = sent["transfer_id"]
        table = table_of(app)
        await until(pilot, lambda: table.lists(transfer_id), "the offer listed")
        assert cell(app, transfer_id, "state") == "offered"
        assert any("offers field notes.bin" in toast for toast in app.toasts)

        screen = await open_modal(pilot, "a", AcceptFileScreen)
        entry = screen.query_one("#accept-folder", Input)
        await until(pilot, lambda: entry.value == str(default), "the settings folder")
        entry.value = str(folder)
        await pilot.press("enter")
        await until(pilot, lambda: isinstance(app.screen, FilesScreen), "accepted")
        await until(pilot, lambda: cell(app, transfer_id, "state") == "complete", "complete")
        assert " 100%" in cell(app, transfer_id, "progress")
        received = folder / "field notes.bin"
        assert received.read_bytes() == source.read_bytes()
        assert any(f"field notes.bin is saved in {folder}" in toast for toast in app.toasts)

        # The offer is also a line of Bob's conversation with Alice.
        line = "📎 field notes.bin (3.2 MB)"
        await pilot.press("f2")
        await until(pilot, lambda: isinstance(app.screen, ChatsScreen), "the chats")
        chats = app.screen
        assert isinstance(chats, ChatsScreen)
        await until(
            pilot,
            lambda: any(e.preview == line for e in chats.conversations.entries),
            "the line as Alice's preview",
        )
        chats.conversations.highlight(
            next(e.conversation_id for e in chats.conversations.entries if e.preview == line)
        )
        await pilot.press("enter")
        await until(
            pilot, lambda: chats.message_log.message(transfer_id) is not None, "the line shown"
        )
        shown = chats.message_log.message(transfer_id)
        assert shown is not None and shown.text == line and not shown.outgoing
        assert shown.kind == "file"

        # Ctrl+F there: the file is saved already, so it says where.
        await pilot.press("ctrl+f")
        await until(
            pilot,
            lambda: any(f"field notes.bin is complete in {folder}" in t for t in app.toasts),
            "where the file is",
        )
        # A second file offered in the conversation: Ctrl+F opens the accept dialog for it.
        again = await asyncio.to_thread(call, alice, "file.send", target="Bob", path=str(source))
        await until(
            pilot,
            lambda: chats.message_log.message(again["transfer_id"]) is not None,
            "the second line",
        )
        await pilot.press("ctrl+f")
        await until(pilot, lambda: isinstance(app.screen, AcceptFileScreen), "the accept dialog")
        dialog = app.screen
        assert isinstance(dialog, AcceptFileScreen)
        assert dialog.transfer.transfer_id == again["transfer_id"]
        await pilot.press("escape")
        await until(pilot, lambda: isinstance(app.screen, ChatsScreen), "back in the chat")

    with running_daemon(alice, "Alice"), running_daemon(bob, "Bob"):
        become_contacts(alice, bob)
        call(bob, "file.settings.set", folder=str(default), auto_accept="none")

        async def main() -> None:
            options = DaemonOptions(listen=[LOOPBACK], no_mdns=True)
            app = NotingApp(Home(bob), daemon=options)
            async with app.run_test(size=(100, 40)) as pilot:
                await scenario(app, pilot)

        asyncio.run(main())
