"""One group's chat: a header (the group, its members, my role), the message log with each
sender's name, and the composer (`group.send`). Showing the group marks it read (`group.read`),
as does a message arriving while the reader looks. Ctrl+R shows, for one of my messages, which
member has it and who read it (`group.receipts`); Ctrl+G the members. The group.* events keep it
live; an event arriving while the screen is torn down touches nothing.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar

import msgspec
from rich.text import Text
from textual import on, work
from textual.app import ComposeResult, SystemCommand
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.content import Content
from textual.css.query import NoMatches
from textual.screen import ModalScreen
from textual.widgets import DataTable, Footer, OptionList, Static
from textual.widgets.option_list import Option

from p2pid.tui.screens.base import SectionScreen
from p2pid.tui.screens.files import accept_from_conversation
from p2pid.tui.screens.group_members import GroupMembersScreen
from p2pid.tui.widgets.composer import Composer
from p2pid.tui.widgets.contact_records import DIM, GOOD, format_time
from p2pid.tui.widgets.group_message_log import GroupChatMessage, GroupMessageLog
from p2pid.tui.widgets.group_records import (
    CallFailed,
    cut,
    group_call,
    group_call_as,
    group_label,
    is_active,
)
from p2pid.tui.widgets.message_log import MARKS, clock_time, one_line, printable
from p2pid.wire.group_views import GroupMessageReceipts, GroupView
from p2pid.wire.messages import MessagePage, MessageView

if TYPE_CHECKING:
    from p2pid.tui.app import P2pidApp

PAGE = 50
RECEIPT_STYLES = {"pending": DIM, "delivered": "", "read": GOOD}
_GONE = {
    "left": "You left this group: its history stays, nothing new comes.",
    "removed": "An admin removed you from this group: its history stays, nothing new comes.",
}


class GroupChatScreen(SectionScreen):
    AUTO_FOCUS: ClassVar[str | None] = "#group-composer"  # typing goes to the composer at once
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "back", "Groups"),
        Binding("ctrl+g", "members", "Members"),
        Binding("ctrl+r", "receipts", "Receipts"),
        Binding("ctrl+f", "accept_file", "Accept file"),
    ]

    def __init__(self, group_id: str, name: str, avatar: str = "") -> None:
        super().__init__()
        self.group_id = group_id
        self.group_name, self.avatar = name, avatar
        self.my_role = ""
        self.members = 0
        self.loaded = False  # the newest page is shown
        self._before: str | None = None
        self._arrived_while_loading: list[GroupChatMessage] = []
        self._send_lock = asyncio.Lock()

    def compose_body(self) -> ComposeResult:
        with Vertical(id="group-chat"):
            yield Static(id="group-header")
            yield GroupMessageLog(id="group-log")
            yield Composer(id="group-composer", placeholder="loading…")

    @property
    def message_log(self) -> GroupMessageLog:
        return self.query_one("#group-log", GroupMessageLog)

    @property
    def composer(self) -> Composer:
        return self.query_one("#group-composer", Composer)

    def on_mount(self) -> None:
        super().on_mount()
        self.watch(self.app, "app_focus", self._app_focus_changed, init=False)
        self.message_log.show_group([], has_more=False, placeholder="loading…")
        self.composer.read_only = True
        self._show_header()
        self.composer.focus()

    def _alive(self) -> bool:
        return self.is_attached and not self._pruning and self.is_running

    # -- loading -----------------------------------------------------------------------------

    async def on_connected(self) -> None:
        self.loaded = False
        self._load()

    @work(exclusive=True, group="group-chat-load")
    async def _load(self) -> None:
        app = self.p2pid
        try:
            view = await group_call_as(app, GroupView, "group.show", group=self.group_id)
            if not self._alive():
                return
            self._apply_group(view)
            page = await group_call_as(
                app, MessagePage, "group.messages", group=self.group_id, limit=PAGE
            )
        except CallFailed:
            if self._alive() and not self.loaded:
                self.message_log.show_group([], has_more=False, placeholder="could not load")
            return
        if not self._alive():
            return
        messages = [GroupChatMessage.from_view(_plain(m)) for m in page.messages]
        first_unread = next(
            (m.message_id for m in messages if not m.outgoing and m.state == "unread"), None
        )
        self._before = page.before
        log = self.message_log
        log.show_group(
            messages,
            has_more=page.before is not None,
            first_unread=first_unread,
            placeholder="No messages in this group yet. Say hello!",
        )
        for message in self._arrived_while_loading:
            log.add(message)
        self._arrived_while_loading = []
        self.loaded = True
        if first_unread is not None or page.unread:
            self._read_if_viewing()

    @work(exclusive=True, group="group-chat-show")
    async def _reload_group(self) -> None:
        try:
            view = await group_call_as(self.p2pid, GroupView, "group.show", group=self.group_id)
        except CallFailed:
            return
        if self._alive():
            self._apply_group(view)

    def _apply_group(self, view: GroupView) -> None:
        self.group_name, self.avatar, self.my_role = view.name, view.avatar, view.my_role
        self.members = len(view.members)
        self.message_log.set_authors({m.identity_id: m.name for m in view.members})
        composer = self.composer
        composer.read_only = not is_active(view.my_role)
        composer.placeholder = (
            f"Message {printable(view.name)}  (Enter: send; Shift+Enter or Ctrl+J: new line)"
            if is_active(view.my_role)
            else _GONE.get(view.my_role, "You cannot write here.")
        )
        self._show_header()

    @on(GroupMessageLog.OlderWanted)
    def _older_wanted(self) -> None:
        self.action_older()

    def action_older(self) -> None:
        log = self.message_log
        if self._before is None or log.loading_older or not self.loaded:
            return
        log.set_loading_older(True)
        self._load_older(self._before)

    @work(exclusive=True, group="group-chat-older")
    async def _load_older(self, before: str) -> None:
        try:
            page = await group_call_as(
                self.p2pid,
                MessagePage,
                "group.messages",
                group=self.group_id,
                limit=PAGE,
                before=before,
            )
        except CallFailed:
            if self._alive():
                self.message_log.set_loading_older(False)
            return
        if not self._alive():
            return
        self._before = page.before
        self.message_log.prepend(
            [GroupChatMessage.from_view(_plain(m)) for m in page.messages],
            has_more=page.before is not None,
        )

    # -- reading -----------------------------------------------------------------------------

    def _viewing(self) -> bool:
        return self._alive() and self.is_current and self.app.app_focus

    def _app_focus_changed(self, focused: bool) -> None:
        if focused and self.loaded:
            self._read_if_viewing()

    def _read_if_viewing(self) -> None:
        if self._viewing() and self.p2pid.connected:
            self._mark_read()

    @work(exclusive=True, group="group-chat-read")
    async def _mark_read(self) -> None:
        try:
            await group_call(self.p2pid, "group.read", group=self.group_id)
        except CallFailed:
            return

    def on_screen_resume(self) -> None:
        self.p2pid.viewing_conversation = self.group_id
        if self.loaded:
            self._read_if_viewing()

    def on_screen_suspend(self) -> None:
        if self.p2pid.viewing_conversation == self.group_id:
            self.p2pid.viewing_conversation = None

    def on_unmount(self) -> None:
        if self.p2pid.viewing_conversation == self.group_id:
            self.p2pid.viewing_conversation = None

    # -- live events -------------------------------------------------------------------------

    async def on_daemon_event(self, event: dict[str, Any]) -> None:
        if not self._alive() or event.get("group_id") != self.group_id:
            return
        kind = event.get("type")
        if kind in ("group.message_received", "group.message_sent"):
            incoming = kind == "group.message_received"
            view = event["message"]
            if incoming and event.get("sender_name"):
                self.message_log.set_authors({str(view["sender_id"]): str(event["sender_name"])})
            self._add(GroupChatMessage.from_view(view))
            if incoming and self.loaded:
                self._read_if_viewing()
        elif kind == "group.message_state_changed":
            ids = [str(message_id) for message_id in event.get("message_ids", ())]
            state = str(event["state"])
            self.message_log.set_state(ids, state)
            for message in self._arrived_while_loading:
                if message.message_id in ids:
                    message.state = state
        elif kind == "group.changed":
            self._reload_group()

    def _add(self, message: GroupChatMessage) -> None:
        if self.loaded:
            self.message_log.add(message)
        else:
            self._arrived_while_loading.append(message)

    # -- the header --------------------------------------------------------------------------

    def _show_header(self) -> None:
        self.sub_title = group_label(self.group_name, self.avatar)
        header = self.query_one("#group-header", Static)
        parts: list[str | Content | tuple[str, str]] = [
            (group_label(self.group_name, self.avatar), "bold")
        ]
        if self.my_role:
            people = "member" if self.members == 1 else "members"
            parts.append((f"  {self.members} {people}", "$text-muted"))
            if is_active(self.my_role):
                parts.append((f"  you are {self.my_role}", "$text-success"))
            else:
                gone = "  you left" if self.my_role == "left" else "  you were removed"
                parts.append((gone, "$text-warning"))
        header.update(Content.assemble(*parts))

    # -- sending -----------------------------------------------------------------------------

    @on(Composer.Submitted, "#group-composer")
    def _submitted(self, submitted: Composer.Submitted) -> None:
        self._send(submitted.text)

    @on(Composer.ScrollLog)
    def _scroll_log(self, scroll: Composer.ScrollLog) -> None:
        if scroll.direction < 0:
            self.message_log.action_page_up_or_older()
        else:
            self.message_log.action_page_down()

    @work(group="group-chat-send")
    async def _send(self, text: str) -> None:
        async with self._send_lock:  # one at a time, in the order typed
            try:
                view = await group_call(self.p2pid, "group.send", group=self.group_id, text=text)
            except CallFailed:
                if self._alive() and not self.composer.text:
                    self.composer.text = text  # not sent: give it back
                return
        if self._alive():
            self._add(GroupChatMessage.from_view(view))

    # -- actions -----------------------------------------------------------------------------

    def action_back(self) -> None:
        self.app.pop_screen()

    def action_members(self) -> None:
        self.app.push_screen(GroupMembersScreen(self.group_id, self.group_name))

    def action_receipts(self) -> None:
        mine = [
            m
            for m in reversed(self.message_log.messages)
            if m.outgoing and isinstance(m, GroupChatMessage)
        ]
        if not mine:
            self.notify("None of your messages to this group is loaded here.")
            return
        self.app.push_screen(ReceiptsScreen(self.group_id, self.group_name, mine))

    def action_write(self) -> None:
        self.composer.focus()

    def action_accept_file(self) -> None:
        self._accept_file(list(self.message_log.messages))

    @work(exclusive=True, group="group-accept-file")
    async def _accept_file(self, messages: list[GroupChatMessage]) -> None:
        await accept_from_conversation(self, messages)

    def commands(self) -> Iterable[SystemCommand]:
        yield SystemCommand("Back to the groups", "the list (Escape)", self.action_back)
        yield SystemCommand("Group members", "roles, devices, admin actions", self.action_members)
        yield SystemCommand(
            "Receipts of my messages", "who has each, who read it", self.action_receipts
        )
        yield SystemCommand("Older messages", "load the page before", self.action_older)
        yield SystemCommand("Write a message", "focus the input box", self.action_write)
        yield SystemCommand(
            "Accept a file", "the newest offered here (Ctrl+F)", self.action_accept_file
        )


def _plain(view: MessageView) -> Mapping[str, Any]:
    """A MessageView record as the mapping ChatMessage.from_view reads."""
    return msgspec.structs.asdict(view)


# -- receipts ----------------------------------------------------------------------------------


def _message_option(message: GroupChatMessage) -> Option:
    mark = MARKS.get(message.state, "?")
    label = f"{clock_time(message.sent_at_ms)} {mark:2} {cut(one_line(message.text), 40)}"
    return Option(label, id=message.message_id)


class ReceiptsScreen(ModalScreen[None]):
    """My messages on the left (newest first); for the highlighted one, each other member:
    pending, delivered (and when) or read (and when)."""

    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "close", "Close")]

    def __init__(self, group_id: str, group_name: str, mine: Sequence[GroupChatMessage]) -> None:
        super().__init__()
        self.group_id, self.group_name = group_id, group_name
        self.mine = list(mine)
        self.shown: GroupMessageReceipts | None = None

    @property
    def p2pid(self) -> P2pidApp:
        from p2pid.tui.app import P2pidApp

        assert isinstance(self.app, P2pidApp)
        return self.app

    def compose(self) -> ComposeResult:
        with Vertical(id="receipts-dialog", classes="dialog"):
            yield Static(f"Receipts in {printable(self.group_name)}", classes="title", markup=False)
            with Horizontal(id="receipts-body"):
                yield OptionList(*map(_message_option, self.mine), id="receipt-messages")
                with Vertical(id="receipts-side"):
                    yield Static("", id="receipts-summary", markup=False)
                    yield DataTable[str | Text](
                        id="receipts", cursor_type="row", zebra_stripes=True
                    )
        yield Footer()

    def on_mount(self) -> None:
        table = self.query_one("#receipts", DataTable)
        table.add_column("Member", key="name")
        table.add_column("State", key="state")
        table.add_column("When", key="when")
        options = self.query_one("#receipt-messages", OptionList)
        options.highlighted = 0
        options.focus()
        self.p2pid.daemon_events.subscribe(self, self._daemon_event)

    def _daemon_event(self, event: dict[str, Any]) -> None:
        if (
            event.get("type") == "group.message_state_changed"
            and event.get("group_id") == self.group_id
            and self.shown is not None
            and self.shown.message_id in event.get("message_ids", ())
            and self.is_attached
        ):
            self._load(self.shown.message_id)

    @on(OptionList.OptionHighlighted, "#receipt-messages")
    def _highlighted(self, highlighted: OptionList.OptionHighlighted) -> None:
        if highlighted.option.id is not None:
            self._load(highlighted.option.id)

    @work(exclusive=True, group="receipts-load")
    async def _load(self, message_id: str) -> None:
        try:
            receipts = await group_call_as(
                self.p2pid,
                GroupMessageReceipts,
                "group.receipts",
                group=self.group_id,
                message_id=message_id,
            )
        except CallFailed:
            return
        try:
            table = self.query_one("#receipts", DataTable)
            summary = self.query_one("#receipts-summary", Static)
        except NoMatches:
            return
        self.shown = receipts
        table.clear()
        for receipt in receipts.receipts:
            table.add_row(
                Text(cut(printable(receipt.name), 20), style="bold"),
                Text(receipt.state, style=RECEIPT_STYLES.get(receipt.state, "")),
                "" if receipt.at_ms is None else format_time(receipt.at_ms),
                key=receipt.identity_id,
            )
        summary.update(_summary(receipts))

    def action_close(self) -> None:
        self.dismiss(None)


def _summary(receipts: GroupMessageReceipts) -> str:
    everyone = len(receipts.receipts)
    if not everyone:
        return "Nobody else is in the group."
    read = sum(r.state == "read" for r in receipts.receipts)
    delivered = sum(r.state == "delivered" for r in receipts.receipts)
    waiting = everyone - read - delivered
    return f"Read by {read} of {everyone}; delivered to {delivered} more; {waiting} waiting."
