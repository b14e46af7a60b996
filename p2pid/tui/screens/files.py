"""Files (F11): the files sent to me and by me, newest first, with their state and a progress bar
that the daemon's file.progress events move; from here accepting an offer into a folder,
cancelling a transfer, opening the folder a file is in, and sending a file to a contact or group.

Offers and state changes (file.offered, file.state) carry the whole transfer: its row changes at
once, without asking the daemon again.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import msgspec
from rich.text import Text
from textual import on, work
from textual.app import ComposeResult, SystemCommand
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.css.query import NoMatches
from textual.screen import ModalScreen, Screen
from textual.widgets import Button, DataTable, Footer, Input, Label, OptionList, Static
from textual.widgets.option_list import Option

from p2pid.sizes import human_size
from p2pid.tui.screens.base import ListingScreen
from p2pid.tui.screens.contact_detail import ConfirmScreen
from p2pid.tui.widgets.contact_records import BAD, decode_list
from p2pid.tui.widgets.file_records import (
    ACCEPTABLE_STATES,
    FINISHED_STATES,
    clean,
    folder_of,
    with_whom,
)
from p2pid.tui.widgets.file_table import FileTable
from p2pid.tui.widgets.group_records import CallFailed, group_call, group_call_as, group_label
from p2pid.tui.widgets.message_log import ChatMessage
from p2pid.wire.api import ContactSummary
from p2pid.wire.file_views import (
    FileOffered,
    FileProgress,
    FileSettings,
    FileStateChanged,
    FileTransferView,
)
from p2pid.wire.group_views import GroupSummary

if TYPE_CHECKING:
    from p2pid.tui.app import P2pidApp

Opener = Callable[[str], bool]


def open_folder(folder: str) -> bool:
    """Show a folder in the desktop's file manager (`open` on macOS, `xdg-open` elsewhere),
    without waiting for it; False when the folder or the program is not here."""
    program = shutil.which("open" if sys.platform == "darwin" else "xdg-open")
    if program is None or not os.path.isdir(folder):
        return False
    try:
        subprocess.Popen(
            [program, folder],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
    except OSError:
        return False
    return True


def local_path(text: str) -> str:
    """What was typed as a path, absolute (a relative one is relative to where the TUI runs)."""
    return os.path.abspath(os.path.expanduser(text.strip()))


def file_problem(path: str) -> str | None:
    """Why `path` is not a file this machine can send, or None."""
    target = Path(path)
    if target.is_dir():
        return f"{path} is a folder: pick a file in it."
    if not target.exists():
        return f"There is no file at {path}."
    if not target.is_file():
        return f"{path} is not a regular file."
    if not os.access(target, os.R_OK):
        return f"{path} cannot be read."
    return None


OFFERS_LOOKED_AT = 10  # Ctrl+F in a conversation: its newest file lines asked about


async def accept_from_conversation(screen: Screen[Any], messages: Sequence[ChatMessage]) -> None:
    """Ctrl+F in a conversation: the newest file offered in it that waits to be accepted, in
    the accept dialog; or, if none waits, what became of the newest one."""
    offered = sorted(
        (m for m in messages if m.kind == "file" and not m.outgoing),
        key=lambda m: m.order,
        reverse=True,
    )
    if not offered:
        screen.notify("No file was offered to you in this conversation.", title="Files")
        return
    newest: FileTransferView | None = None
    for line in offered[:OFFERS_LOOKED_AT]:
        try:
            transfer = await group_call_as(
                _app(screen), FileTransferView, "file.show", transfer=line.message_id
            )
        except CallFailed:
            return
        newest = newest or transfer
        if transfer.state in ACCEPTABLE_STATES:
            screen.app.push_screen(AcceptFileScreen(transfer))
            return
    assert newest is not None
    where = f" in {newest.folder}" if newest.state == "complete" and newest.folder else ""
    screen.notify(f"{clean(newest.name)} is {newest.state}{where}.", title="Files")


def _app(screen: Screen[Any]) -> P2pidApp:
    from p2pid.tui.app import P2pidApp

    assert isinstance(screen.app, P2pidApp)
    return screen.app


def detail_text(transfer: FileTransferView | None) -> Text:
    """The highlighted transfer in full: its name, with whom, where the file is, what is wrong."""
    if transfer is None:
        return Text("")
    text = Text(clean(transfer.name), style="bold")
    text.append(f"  {human_size(transfer.size)}  {clean(transfer.media_type)}")
    who = with_whom(transfer)
    text.append(f"\n{'from' if transfer.direction == 'in' else 'to'} {who}")
    if transfer.direction == "out" and transfer.recipients:
        text.append(f", {transfer.delivered} of {transfer.recipients} have it")
    folder = folder_of(transfer)
    if transfer.direction == "out" or transfer.state == "complete":
        text.append(f"\n{transfer.path}" if transfer.path else "")
    elif folder:
        text.append(f"\ninto {folder}")
    else:
        text.append("\nnot accepted yet: a accepts it into a folder")
    if transfer.error and transfer.state not in FINISHED_STATES:
        text.append(f"\n⚠ {clean(transfer.error)}", style=BAD)
    return text


class FilesScreen(ListingScreen[FileTransferView]):
    SUB_TITLE = "Files"
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("a", "accept", "Accept"),
        Binding("c", "cancel_transfer", "Cancel"),
        Binding("o", "open_folder", "Open folder"),
        Binding("s", "send", "Send a file"),
        Binding("r", "refresh", "Refresh"),
    ]

    METHOD = "files"

    def __init__(self) -> None:
        super().__init__(FileTransferView, FileTable)

    def compose_body(self) -> ComposeResult:
        yield FileTable(id="files")
        yield Static("Connecting to the daemon…", id="files-empty", classes="hint")
        yield Static("", id="files-detail")
        yield Static(
            "a accepts · c cancels · o opens the folder · s sends a file · r refreshes",
            id="files-keys",
            classes="hint",
        )

    @property
    def table(self) -> FileTable:
        return self.query_one(FileTable)

    def show(self, transfers: list[FileTransferView]) -> None:
        self.table.show(transfers)
        self._shown()

    def _shown(self) -> None:
        """Say what the table cannot: that it is empty, and the highlighted one in full."""
        count = self.table.row_count
        empty = self.query_one("#files-empty", Static)
        empty.update(
            ""
            if count
            else "No files yet. s sends one to a contact or a group; files offered to you show "
            "here."
        )
        empty.display = not count
        detail = self.query_one("#files-detail", Static)
        detail.update(detail_text(self.selected()))
        detail.display = bool(count)

    @on(DataTable.RowHighlighted, "#files")
    def _highlighted(self) -> None:
        self._shown()

    async def on_daemon_event(self, event: dict[str, Any]) -> None:
        kind = event.get("type")
        try:
            if kind == "file.progress":
                if not self.table.moved(msgspec.convert(event, FileProgress)):
                    self.reload()
            elif kind == "file.offered":
                self.put(msgspec.convert(event, FileOffered).transfer)
            elif kind == "file.state":
                self.put(msgspec.convert(event, FileStateChanged).transfer)
        except msgspec.ValidationError:
            self.reload()
        except NoMatches:
            return

    def put(self, transfer: FileTransferView | None) -> None:
        """Show a transfer as the daemon last described it."""
        if transfer is None:
            return
        try:
            self.table.put(transfer)
            self._shown()
        except NoMatches:
            return

    # -- actions -------------------------------------------------------------------------------

    def action_refresh(self) -> None:
        if self.ready():
            self.reload()

    def action_accept(self, transfer: FileTransferView | None = None) -> None:
        transfer = transfer or self.selected()
        if transfer is None or not self.ready():
            return
        if transfer.direction != "in" or transfer.state not in ACCEPTABLE_STATES:
            self.notify(f"{clean(transfer.name)} is {transfer.state}: there is nothing to accept.")
            return
        self.app.push_screen(AcceptFileScreen(transfer), callback=self.put)

    def action_cancel_transfer(self, transfer: FileTransferView | None = None) -> None:
        transfer = transfer or self.selected()
        if transfer is None or not self.ready():
            return
        name = clean(transfer.name)
        if transfer.state in FINISHED_STATES:
            self.notify(f"{name} is {transfer.state} already.")
            return
        who = with_whom(transfer)
        body = (
            f"{who} is told, and the transfer stops for good: to get the file, a new offer "
            "is needed."
            if transfer.direction == "in"
            else f"Nobody can fetch it from you any more; {who} is told."
        )

        def answered(yes: bool | None) -> None:
            if yes:
                self._cancel(transfer)

        self.app.push_screen(
            ConfirmScreen(f"Cancel {name}?", body, "Yes, cancel it"), callback=answered
        )

    @work(group="files-cancel")
    async def _cancel(self, transfer: FileTransferView) -> None:
        try:
            view = await group_call_as(
                self.p2pid, FileTransferView, "file.cancel", transfer=transfer.transfer_id
            )
        except CallFailed:
            return
        self.notify(f"{clean(view.name)} is cancelled.", title="Files")
        self.put(view)

    def action_open_folder(self, transfer: FileTransferView | None = None) -> None:
        transfer = transfer or self.selected()
        if transfer is None:
            return
        folder = folder_of(transfer)
        if not folder:
            self.notify("Not accepted yet: a accepts it into a folder.")
            return
        self._open(folder)

    @work(group="files-open")
    async def _open(self, folder: str) -> None:
        if not await asyncio.to_thread(self.p2pid.open_folder, folder):
            self.notify(folder, title="The folder")

    def action_send(self) -> None:
        if self.ready():
            self.app.push_screen(SendFileScreen(), callback=self._sent)

    def _sent(self, transfer: FileTransferView | None) -> None:
        if transfer is not None:
            self.put(transfer)
            self.table.move_cursor(row=self.table.get_row_index(transfer.transfer_id))

    def commands(self) -> Iterable[SystemCommand]:
        yield SystemCommand("Send a file", "to a contact or a group (s)", self.action_send)
        for transfer in self.records:
            name = clean(transfer.name)
            if transfer.direction == "in" and transfer.state in ACCEPTABLE_STATES:
                yield SystemCommand(
                    f"Accept {name}",
                    f"from {with_whom(transfer)}, {human_size(transfer.size)}",
                    lambda transfer=transfer: self.action_accept(transfer),
                )
            if transfer.state not in FINISHED_STATES:
                yield SystemCommand(
                    f"Cancel {name}",
                    f"{transfer.state}, with {with_whom(transfer)}",
                    lambda transfer=transfer: self.action_cancel_transfer(transfer),
                )


# -- accepting ---------------------------------------------------------------------------------


class AcceptFileScreen(ModalScreen[FileTransferView | None]):
    """The folder an offered file goes into (prefilled: the one it was accepted into, or the
    settings folder): `file.accept`. Dismissed with the accepted transfer, or None."""

    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "later", "Later")]

    def __init__(self, transfer: FileTransferView) -> None:
        super().__init__()
        self.transfer = transfer
        self.prefilled = False

    def compose(self) -> ComposeResult:
        transfer = self.transfer
        offer = Text(clean(transfer.peer_name) or "Someone", style="bold")
        offer.append(" offers ")
        offer.append(clean(transfer.name), style="bold")
        offer.append(f" ({human_size(transfer.size)}, {clean(transfer.media_type)})")
        if transfer.group_name:
            offer.append(f" in {clean(transfer.group_name)}")
        offer.append(".")
        if transfer.state != "offered":
            offer.append(f"\nIt is {transfer.state}", style=BAD)
            offer.append(f": {clean(transfer.error)}" if transfer.error else "", style=BAD)
            offer.append(". Accepting again retries now.", style=BAD)
        with Vertical(id="accept-dialog", classes="dialog"):
            yield Static("Accept a file", classes="title")
            yield Static(offer, id="accept-offer")
            yield Label("Save it in the folder")
            yield Input(placeholder="~/Downloads", id="accept-folder")
            yield Static(
                "The file is checked against its hash before it shows in the folder. Enter "
                "accepts; Escape leaves it for later.",
                classes="hint",
            )
            yield Static("", id="accept-error", classes="error", markup=False)
            with Horizontal(classes="buttons"):
                yield Button("Accept", variant="primary", id="accept-go")
                yield Button("Later", id="accept-later")
        yield Footer()

    def on_mount(self) -> None:
        self.query_one("#accept-folder", Input).focus()
        self._prefill()

    @work(exclusive=True, group="accept-prefill")
    async def _prefill(self) -> None:
        folder = self.transfer.folder
        if not folder:
            try:
                folder = (await group_call_as(_app(self), FileSettings, "file.settings")).folder
            except CallFailed:
                folder = ""
        try:
            entry = self.query_one("#accept-folder", Input)
        except NoMatches:
            return
        if not entry.value:
            entry.value = folder
            entry.cursor_position = len(folder)
        self.prefilled = True

    @on(Input.Submitted, "#accept-folder")
    @on(Button.Pressed, "#accept-go")
    def accept(self) -> None:
        typed = self.query_one("#accept-folder", Input).value
        self._accept(local_path(typed) if typed.strip() else None)

    @work(exclusive=True, group="accept-go")
    async def _accept(self, folder: str | None) -> None:
        params: dict[str, Any] = {"transfer": self.transfer.transfer_id}
        if folder is not None:
            params["folder"] = folder
        try:
            view = await group_call_as(_app(self), FileTransferView, "file.accept", **params)
        except CallFailed as failure:
            self.query_one("#accept-error", Static).update(str(failure))
            return
        self.notify(f"{clean(view.name)} goes into {view.folder or folder}.", title="Files")
        self.dismiss(view)

    @on(Button.Pressed, "#accept-later")
    def action_later(self) -> None:
        self.dismiss(None)


# -- sending -----------------------------------------------------------------------------------


class SendFileScreen(ModalScreen[FileTransferView | None]):
    """A contact or a group, and the path of a file here: `file.send` once the file is found.
    Dismissed with the new transfer, or None."""

    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "cancel", "Cancel")]

    def __init__(self) -> None:
        super().__init__()
        self.loaded = False

    def compose(self) -> ComposeResult:
        with Vertical(id="send-dialog", classes="dialog"):
            yield Static("Send a file", classes="title")
            yield Label("To (Enter picks, then type the file's path)")
            yield OptionList(id="send-targets")
            yield Static("", id="send-empty", classes="hint")
            yield Label("File")
            yield Input(placeholder="~/Documents/report.pdf", id="send-path")
            yield Static("", id="send-error", classes="error", markup=False)
            with Horizontal(classes="buttons"):
                yield Button("Send", variant="primary", id="send-go")
                yield Button("Cancel", id="send-cancel")
        yield Footer()

    def on_mount(self) -> None:
        self.query_one("#send-targets", OptionList).focus()
        self._load()

    @work(exclusive=True, group="send-targets")
    async def _load(self) -> None:
        app = _app(self)
        try:
            contacts = decode_list(ContactSummary, await group_call(app, "contacts"))
            groups = decode_list(GroupSummary, await group_call(app, "groups"))
        except (CallFailed, msgspec.ValidationError):
            return
        options = [
            Option(clean(c.name), id=c.identity_id)
            for c in sorted(contacts, key=lambda c: c.name.casefold())
            if not c.blocked
        ] + [
            Option(f"{group_label(g.name, g.avatar)}  (group, {g.members})", id=g.group_id)
            for g in sorted(groups, key=lambda g: g.name.casefold())
            if g.my_role in ("admin", "member")
        ]
        try:
            picker = self.query_one("#send-targets", OptionList)
            empty = self.query_one("#send-empty", Static)
        except NoMatches:
            return
        picker.clear_options()
        picker.add_options(options)
        if options:
            picker.highlighted = 0
        picker.display = bool(options)
        empty.update("" if options else "No contacts or groups to send to yet.")
        empty.display = not options
        self.loaded = True

    @on(OptionList.OptionSelected, "#send-targets")
    def _picked(self) -> None:
        self.query_one("#send-path", Input).focus()

    def target(self) -> str | None:
        picker = self.query_one("#send-targets", OptionList)
        if picker.highlighted is None or not picker.option_count:
            return None
        return picker.get_option_at_index(picker.highlighted).id

    @on(Input.Submitted, "#send-path")
    @on(Button.Pressed, "#send-go")
    def send(self) -> None:
        error = self.query_one("#send-error", Static)
        target = self.target()
        if target is None:
            error.update("Pick a contact or a group to send to.")
            return
        typed = self.query_one("#send-path", Input).value
        if not typed.strip():
            error.update("Type the path of the file to send.")
            return
        path = local_path(typed)
        problem = file_problem(path)
        if problem is not None:
            error.update(problem)
            return
        error.update("")
        self._send(target, path)

    @work(exclusive=True, group="send-go")
    async def _send(self, target: str, path: str) -> None:
        try:
            view = await group_call_as(
                _app(self), FileTransferView, "file.send", target=target, path=path
            )
        except CallFailed as failure:
            self.query_one("#send-error", Static).update(str(failure))
            return
        self.notify(f"{clean(view.name)} is offered to {with_whom(view)}.", title="Files")
        self.dismiss(view)

    @on(Button.Pressed, "#send-cancel")
    def action_cancel(self) -> None:
        self.dismiss(None)
