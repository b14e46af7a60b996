"""Groups (F10): my groups (name, my role, members, unread, last message); from here a new group,
joining one by its invite code, the join requests admins answer, and opening a group's chat.

The list follows the daemon's group.* events. Enter opens the group chat (screens/group_chat.py)
on this section's screen stack; m opens its members (screens/group_members.py).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, ClassVar

import msgspec
from rich.text import Text
from textual import on, work
from textual.app import ComposeResult, SystemCommand
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.css.query import NoMatches
from textual.screen import ModalScreen
from textual.widgets import Button, DataTable, Footer, Input, Label, SelectionList, Static

from p2pid.tui.screens.base import ListingScreen
from p2pid.tui.screens.group_chat import GroupChatScreen
from p2pid.tui.screens.group_members import GroupMembersScreen
from p2pid.tui.widgets.contact_records import decode_list, format_time
from p2pid.tui.widgets.group_records import (
    CallFailed,
    group_call,
    group_call_as,
    group_label,
    short_identity,
)
from p2pid.tui.widgets.group_tables import GroupTable
from p2pid.tui.widgets.invite_join_input import JoinInput, read_code, read_join_input
from p2pid.tui.widgets.message_log import printable
from p2pid.wire.api import ContactSummary
from p2pid.wire.group_views import (
    GroupJoinRequestView,
    GroupJoinResult,
    GroupSummary,
    GroupView,
)

if TYPE_CHECKING:
    from p2pid.tui.app import P2pidApp

GROUP_EVENTS = frozenset(
    {
        "group.changed",
        "group.message_received",
        "group.message_sent",
        "group.message_state_changed",
        "group.join_requested",
    }
)
NAME_MAX = 64
AVATAR_MAX = 16


def _app(screen: ModalScreen[Any]) -> P2pidApp:
    from p2pid.tui.app import P2pidApp

    assert isinstance(screen.app, P2pidApp)
    return screen.app


class GroupsScreen(ListingScreen[GroupSummary]):
    SUB_TITLE = "Groups"
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("n", "new_group", "New group"),
        Binding("j", "join", "Join by code"),
        Binding("r", "requests", "Join requests"),
        Binding("m", "members", "Members"),
    ]

    METHOD = "groups"
    RELOAD_ON = GROUP_EVENTS

    def __init__(self) -> None:
        super().__init__(GroupSummary, GroupTable)
        self.requests: list[GroupJoinRequestView] = []

    def compose_body(self) -> ComposeResult:
        yield Static(
            "Enter opens the highlighted group; n makes a new one, j joins one with its invite "
            "code, m shows its members.",
            id="groups-intro",
            classes="hint",
            markup=False,
        )
        yield Static("", id="groups-requests", markup=False)
        yield GroupTable(id="groups")
        yield Static("Connecting to the daemon…", id="groups-empty", classes="hint")

    async def fetch(self) -> list[GroupSummary] | None:
        try:
            groups = await group_call_as(self.p2pid, list[GroupSummary], "groups")
            self.requests = await group_call_as(
                self.p2pid, list[GroupJoinRequestView], "group.requests"
            )
        except CallFailed:
            return None
        return groups

    def show(self, groups: list[GroupSummary]) -> None:
        self.query_one(GroupTable).show(groups)
        empty = self.query_one("#groups-empty", Static)
        empty.update(
            ""
            if groups
            else "No groups yet: n makes one with some of your contacts, j joins one with the "
            "code an admin gave you."
        )
        empty.display = not groups
        waiting = self.query_one("#groups-requests", Static)
        count = len(self.requests)
        people = "person asks" if count == 1 else "people ask"
        waiting.update(f"{count} {people} to join your groups: r answers." if count else "")
        waiting.display = bool(count)

    # -- actions -------------------------------------------------------------------------------

    @on(DataTable.RowSelected, "#groups")
    def _row_selected(self) -> None:
        self.action_open()

    def action_open(self, group: GroupSummary | None = None) -> None:
        group = group or self.selected()
        if group is not None:
            self.app.push_screen(GroupChatScreen(group.group_id, group.name, group.avatar))

    def action_members(self) -> None:
        group = self.selected()
        if group is not None:
            self.app.push_screen(GroupMembersScreen(group.group_id, group.name))

    def action_new_group(self) -> None:
        if not self.ready():
            return

        def created(view: GroupView | None) -> None:
            self.reload()
            if view is not None:
                self.app.push_screen(GroupChatScreen(view.group_id, view.name, view.avatar))

        self.app.push_screen(NewGroupScreen(), callback=created)

    def action_join(self) -> None:
        if self.ready():
            self.app.push_screen(JoinGroupScreen(), callback=self._joined)

    def _joined(self, view: GroupView | None) -> None:
        self.reload()
        if view is not None:
            self.app.push_screen(GroupChatScreen(view.group_id, view.name, view.avatar))

    def action_requests(self) -> None:
        if self.ready():
            self.app.push_screen(JoinRequestsScreen(), callback=lambda _: self.reload())

    def commands(self) -> Iterable[SystemCommand]:
        yield SystemCommand("New group", "name it and pick members (n)", self.action_new_group)
        yield SystemCommand("Join a group", "with its invite code (j)", self.action_join)
        yield SystemCommand("Group join requests", "approve or refuse (r)", self.action_requests)
        for group in self.records:
            yield SystemCommand(
                f"Open group {group.name}",
                f"{group.members} members, you are {group.my_role}",
                lambda group=group: self.action_open(group),
            )


# -- a new group -------------------------------------------------------------------------------


class NewGroupScreen(ModalScreen[GroupView | None]):
    """A name, an optional avatar (an emoji, say) and the contacts to add: `group.create`.
    Dismissed with the new group, or None."""

    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "cancel", "Cancel")]

    def __init__(self) -> None:
        super().__init__()
        self.contacts: list[ContactSummary] = []

    def compose(self) -> ComposeResult:
        with Vertical(id="new-group-dialog", classes="dialog"):
            yield Static("New group", classes="title")
            with Horizontal(id="new-group-fields"):
                with Vertical(id="new-group-name-box"):
                    yield Label("Name")
                    yield Input(placeholder="Climbing club", max_length=NAME_MAX, id="group-name")
                with Vertical(id="new-group-avatar-box"):
                    yield Label("Avatar")
                    yield Input(placeholder="🧗", max_length=AVATAR_MAX, id="group-avatar")
            yield Label("Members (space picks; you can add more later)")
            yield SelectionList[str](id="group-contacts")
            yield Static("", id="new-group-error", classes="error")
            with Horizontal(classes="buttons"):
                yield Button("Create", variant="primary", id="new-group-create")
                yield Button("Cancel", id="new-group-cancel")
        yield Footer()

    def on_mount(self) -> None:
        self.query_one("#group-name", Input).focus()
        self._load_contacts()

    @work(exclusive=True, group="new-group-contacts")
    async def _load_contacts(self) -> None:
        try:
            found = decode_list(ContactSummary, await group_call(_app(self), "contacts"))
        except (CallFailed, msgspec.ValidationError):
            return
        self.contacts = sorted((c for c in found if not c.blocked), key=lambda c: c.name.casefold())
        try:
            picker = self.query_one("#group-contacts", SelectionList)
        except NoMatches:
            return
        picker.clear_options()
        picker.add_options(
            [(printable(c.name).replace("\n", " "), c.identity_id) for c in self.contacts]
        )
        if self.contacts:
            picker.highlighted = 0

    @on(Input.Submitted, "#group-name")
    @on(Input.Submitted, "#group-avatar")
    @on(Button.Pressed, "#new-group-create")
    def create(self) -> None:
        name = self.query_one("#group-name", Input).value.strip()
        if not name:
            self.query_one("#new-group-error", Static).update("Give the group a name.")
            self.query_one("#group-name", Input).focus()
            return
        avatar = self.query_one("#group-avatar", Input).value.strip()
        members = list(self.query_one("#group-contacts", SelectionList).selected)
        self._create(name, avatar, members)

    @work(exclusive=True, group="new-group-create")
    async def _create(self, name: str, avatar: str, members: list[str]) -> None:
        try:
            view = await group_call_as(
                _app(self), GroupView, "group.create", name=name, avatar=avatar, members=members
            )
        except CallFailed as failure:
            self.query_one("#new-group-error", Static).update(str(failure))
            return
        self.notify(f"{view.name} is created.", title="Groups")
        self.dismiss(view)

    @on(Button.Pressed, "#new-group-cancel")
    def action_cancel(self) -> None:
        self.dismiss(None)


# -- joining by code ---------------------------------------------------------------------------


class JoinGroupScreen(ModalScreen[GroupView | None]):
    """A group invite code (or the path of a photo of its QR code): `group.join`. Joined, it is
    dismissed with the group; waiting for an admin, it says so and stays until closed."""

    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "close", "Close")]

    def __init__(self) -> None:
        super().__init__()
        self.result: GroupJoinResult | None = None

    def compose(self) -> ComposeResult:
        with Vertical(id="join-group-dialog", classes="dialog"):
            yield Static("Join a group", classes="title")
            yield Static(
                "Paste the invite code an admin of the group gave you, or the path of a photo "
                "of its QR code.",
                classes="hint",
            )
            yield JoinInput(placeholder="P2PID:…  or  ~/Pictures/group.png", id="join-group-code")
            yield Static("", id="join-group-status", markup=False)
            yield Static("", id="join-group-error", classes="error", markup=False)
            with Horizontal(classes="buttons"):
                yield Button("Join", variant="primary", id="join-group-go")
                yield Button("Close", id="join-group-close")
        yield Footer()

    def on_mount(self) -> None:
        self.query_one("#join-group-code", JoinInput).focus()

    @on(Input.Submitted, "#join-group-code")
    @on(Button.Pressed, "#join-group-go")
    def join(self) -> None:
        text = self.query_one("#join-group-code", JoinInput).value
        error = self.query_one("#join-group-error", Static)
        if not text.strip():
            error.update("Paste the group's invite code first.")
            return
        error.update("")
        self._join(*read_join_input(text))

    @work(exclusive=True, group="join-group")
    async def _join(self, kind: str, value: str) -> None:
        status = self.query_one("#join-group-status", Static)
        error = self.query_one("#join-group-error", Static)
        code = await read_code(kind, value, status, error)
        if code is None:
            status.update("")
            return
        status.update("Joining…")
        try:
            result = await group_call_as(_app(self), GroupJoinResult, "group.join", code=code)
        except CallFailed as failure:
            status.update("")
            error.update(str(failure))
            return
        self.result = result
        if result.state == "joined" and result.group is not None:
            self.notify(f"You joined {result.group.name}.", title="Groups")
            self.dismiss(result.group)
            return
        where = f" of {result.group.name}" if result.group is not None else ""
        status.update(
            f"Waiting for an admin{where} to let you in. You will see the group here once "
            "they do; you can close this."
        )
        self.query_one("#join-group-go", Button).disabled = True
        self.query_one("#join-group-close", Button).focus()

    @on(Button.Pressed, "#join-group-close")
    def action_close(self) -> None:
        self.dismiss(None)


# -- join requests -----------------------------------------------------------------------------


class JoinRequestsScreen(ModalScreen[None]):
    """People who scanned an invite that needs an admin's approval: a approves, d refuses."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("a", "answer(True)", "Approve"),
        Binding("d,x", "answer(False)", "Refuse"),
        Binding("escape", "close", "Close"),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.requests: dict[str, GroupJoinRequestView] = {}
        self.loaded = False

    def compose(self) -> ComposeResult:
        with Vertical(id="group-requests-dialog", classes="dialog"):
            yield Static("Join requests", classes="title")
            yield Static(
                "People who used an invite that needs an admin: a lets the highlighted one in, "
                "d refuses.",
                classes="hint",
            )
            yield DataTable[str | Text](id="group-requests", cursor_type="row", zebra_stripes=True)
            yield Static("", id="group-requests-empty", classes="hint")
        yield Footer()

    def on_mount(self) -> None:
        table = self.query_one("#group-requests", DataTable)
        table.add_column("Person", key="name")
        table.add_column("Group", key="group")
        table.add_column("Identity", key="identity")
        table.add_column("Asked", key="asked")
        table.focus()
        _app(self).daemon_events.subscribe(self, self._daemon_event)
        self.reload()

    def _daemon_event(self, event: dict[str, Any]) -> None:
        if event.get("type") in ("group.join_requested", "group.changed") and self.is_attached:
            self.reload()

    @work(exclusive=True, group="group-requests-load")
    async def reload(self) -> None:
        try:
            found = await group_call_as(_app(self), list[GroupJoinRequestView], "group.requests")
        except CallFailed:
            return
        try:
            table = self.query_one("#group-requests", DataTable)
            empty = self.query_one("#group-requests-empty", Static)
        except NoMatches:
            return
        selected = self.selected()
        table.clear()
        self.requests = {request.request_id: request for request in found}
        for request in sorted(found, key=lambda r: r.requested_at_ms):
            table.add_row(
                Text(printable(request.name), style="bold"),
                printable(request.group_name),
                short_identity(request.identity_id),
                format_time(request.requested_at_ms),
                key=request.request_id,
            )
        if selected is not None and selected.request_id in self.requests:
            table.move_cursor(row=table.get_row_index(selected.request_id), animate=False)
        empty.update("" if found else "Nobody is waiting to join your groups.")
        table.display = bool(found)
        self.loaded = True

    def selected(self) -> GroupJoinRequestView | None:
        table = self.query_one("#group-requests", DataTable)
        if not table.row_count:
            return None
        key = table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value
        return self.requests.get(key or "")

    def action_answer(self, accept: bool) -> None:
        request = self.selected()
        if request is not None:
            self._answer(request, accept)

    @work(group="group-requests-answer")
    async def _answer(self, request: GroupJoinRequestView, accept: bool) -> None:
        try:
            await group_call(
                _app(self), "group.approve", request_id=request.request_id, accept=accept
            )
        except CallFailed:
            pass
        else:
            group = printable(request.group_name)
            if accept:
                self.notify(f"{request.name} is now a member of {group}.", title="Groups")
            else:
                self.notify(f"{request.name} is not let into {group}.", title="Groups")
        if self.is_attached:
            self.reload()

    def action_close(self) -> None:
        self.dismiss(None)

    def commands(self) -> Iterable[SystemCommand]:
        request = self.selected()
        if request is not None:
            label = f"{request.name} into {group_label(request.group_name, '')}"
            yield SystemCommand(
                f"Approve {label}", "they become a member", lambda: self.action_answer(True)
            )
            yield SystemCommand(
                f"Refuse {label}", "they are not let in", lambda: self.action_answer(False)
            )
        yield SystemCommand("Close join requests", "back to the groups", self.action_close)
