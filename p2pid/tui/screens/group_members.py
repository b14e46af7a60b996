"""A group's members: role, devices, contact or not. An admin adds a contact (a), removes a
member (x, confirmed first), promotes (p) or demotes (d) one, renames the group (r) and makes an
invite (i: its code as a QR code and as text); anyone leaves (l, confirmed first). The daemon
checks every change (seniority among admins, say); its refusal is said in a toast and nothing
changes. The list follows the group's group.changed events.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, ClassVar

import msgspec
from textual import events, on, work
from textual.app import ComposeResult, SystemCommand
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.css.query import NoMatches
from textual.geometry import Size
from textual.screen import ModalScreen
from textual.widgets import Button, Checkbox, Footer, Input, Label, OptionList, Static
from textual.widgets.option_list import Option

from p2pid.tui.screens.base import SectionScreen
from p2pid.tui.screens.contact_detail import ConfirmScreen
from p2pid.tui.widgets.contact_records import decode_list, format_time
from p2pid.tui.widgets.group_records import (
    CallFailed,
    group_call,
    group_call_as,
    group_label,
    is_active,
)
from p2pid.tui.widgets.group_tables import MemberTable
from p2pid.tui.widgets.message_log import printable
from p2pid.tui.widgets.qr_view import QrView
from p2pid.wire.api import ContactSummary
from p2pid.wire.group_views import GroupInviteCreated, GroupMemberView, GroupView

if TYPE_CHECKING:
    from p2pid.tui.app import P2pidApp

INVITE_TTL_SECONDS = 86_400
QR_SIDE_MIN_WIDTH = 26  # the narrowest the text column beside the QR code may be
MAX_INVITE_USES = 100


def _app(screen: ModalScreen[Any]) -> P2pidApp:
    from p2pid.tui.app import P2pidApp

    assert isinstance(screen.app, P2pidApp)
    return screen.app


def read_uses(text: str) -> int | None:
    """How many people an invite lets in: 1 to MAX_INVITE_USES, or None."""
    try:
        uses = int(text.strip())
    except ValueError:
        return None
    return uses if 1 <= uses <= MAX_INVITE_USES else None


class GroupMembersScreen(SectionScreen):
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "back", "Back"),
        Binding("a", "add", "Add"),
        Binding("x,delete", "remove", "Remove"),
        Binding("p", "promote", "Promote"),
        Binding("d", "demote", "Demote"),
        Binding("r", "rename", "Rename group"),
        Binding("i", "invite", "Invite"),
        Binding("l", "leave", "Leave"),
    ]

    def __init__(self, group_id: str, name: str) -> None:
        super().__init__()
        self.group_id, self.group_name = group_id, name
        self.group: GroupView | None = None

    def compose_body(self) -> ComposeResult:
        yield Static("", id="members-header", markup=False)
        yield Static("", id="members-keys", classes="hint", markup=False)
        yield MemberTable(id="members")

    def on_mount(self) -> None:
        super().on_mount()
        self.query_one("#members-header", Static).update(self.group_name)
        self.sub_title = f"Members of {printable(self.group_name)}"
        self.query_one(MemberTable).focus()

    @property
    def loaded(self) -> bool:
        return self.group is not None

    # -- loading -------------------------------------------------------------------------------

    async def on_connected(self) -> None:
        self.reload()

    async def on_daemon_event(self, event: dict[str, Any]) -> None:
        if event.get("type") == "group.changed" and event.get("group_id") == self.group_id:
            self.reload()

    @work(exclusive=True, group="group-members-load")
    async def reload(self) -> None:
        try:
            view = await group_call_as(self.p2pid, GroupView, "group.show", group=self.group_id)
        except CallFailed:
            return
        if self.is_attached:
            self.show(view)

    def show(self, view: GroupView) -> None:
        self.group, self.group_name = view, view.name
        self.sub_title = f"Members of {group_label(view.name, view.avatar)}"
        try:
            header = self.query_one("#members-header", Static)
            keys = self.query_one("#members-keys", Static)
            table = self.query_one(MemberTable)
        except NoMatches:
            return
        people = "member" if len(view.members) == 1 else "members"
        role = f"you are {view.my_role}" if is_active(view.my_role) else f"you: {view.my_role}"
        header.update(
            f"{group_label(view.name, view.avatar)}: {len(view.members)} {people}, {role}"
        )
        if view.my_role == "admin":
            keys.update(
                "a adds a contact, x removes the highlighted member, p / d promote / demote "
                "them; r renames the group, i makes an invite, l leaves it."
            )
        elif is_active(view.my_role):
            keys.update("Only admins change the members. l leaves the group.")
        else:
            keys.update("You are no longer in this group.")
        table.show(view.members)

    def selected(self) -> GroupMemberView | None:
        return self.query_one(MemberTable).selected

    # -- checks --------------------------------------------------------------------------------

    def _as_admin(self, what: str) -> bool:
        """Whether I may do `what` here as an admin; if not, say why."""
        if not self.p2pid.connected or self.group is None:
            self.notify("Not loaded yet.", severity="warning")
            return False
        if self.group.my_role != "admin":
            self.notify(f"Only an admin can {what}.", severity="warning")
            return False
        return True

    def _target(self, what: str) -> GroupMemberView | None:
        member = self.selected()
        if member is None or not self._as_admin(what):
            return None
        if member.is_me:
            self.notify(
                "That is you: l leaves the group."
                if what == "remove members"
                else "Not on yourself.",
                severity="warning",
            )
            return None
        return member

    # -- actions -------------------------------------------------------------------------------

    def action_back(self) -> None:
        self.app.pop_screen()

    def action_add(self) -> None:
        if not self._as_admin("add members") or self.group is None:
            return
        present = {member.identity_id for member in self.group.members}

        def picked(contact: str | None) -> None:
            if contact is not None:
                self._change("group.add", "is added", contact=contact)

        self.app.push_screen(AddMemberScreen(self.group_name, present), callback=picked)

    def action_remove(self, member: GroupMemberView | None = None) -> None:
        member = member or self._target("remove members")
        if member is None:
            return
        name = printable(member.name)
        confirm = ConfirmScreen(
            f"Remove {name} from {printable(self.group_name)}?",
            f"{name} stops getting the group's messages: every member's next message goes "
            "under a new key they never get. They keep what they already received.",
            "Remove",
        )

        def answered(yes: bool | None) -> None:
            if yes:
                self._change("group.remove", f"{name} is removed", member=member.identity_id)

        self.app.push_screen(confirm, callback=answered)

    def action_promote(self) -> None:
        member = self._target("promote members")
        if member is None:
            return
        if member.role == "admin":
            self.notify(f"{member.name} is already an admin.")
            return
        self._change("group.promote", f"{member.name} is an admin", member=member.identity_id)

    def action_demote(self) -> None:
        member = self._target("demote admins")
        if member is None:
            return
        if member.role != "admin":
            self.notify(f"{member.name} is not an admin.")
            return
        self._change(
            "group.demote", f"{member.name} is no longer an admin", member=member.identity_id
        )

    def action_rename(self) -> None:
        if not self._as_admin("rename the group") or self.group is None:
            return

        def renamed(answer: tuple[str, str] | None) -> None:
            if answer is not None:
                name, avatar = answer
                self._change("group.rename", f"The group is now {name}", name=name, avatar=avatar)

        self.app.push_screen(RenameGroupScreen(self.group), callback=renamed)

    def action_invite(self) -> None:
        if self._as_admin("make invites"):
            self.app.push_screen(GroupInviteScreen(self.group_id, self.group_name))

    def action_leave(self) -> None:
        if self.group is None or not is_active(self.group.my_role):
            self.notify("You are not in this group.", severity="warning")
            return
        group = printable(self.group_name)
        confirm = ConfirmScreen(
            f"Leave {group}?",
            f"You stop getting {group}'s messages and cannot write there; its history stays "
            "on this device. Only an admin can add you again.",
            "Leave",
        )

        def answered(yes: bool | None) -> None:
            if yes:
                self._change("group.leave", f"You left {group}")

        self.app.push_screen(confirm, callback=answered)

    @work(group="group-members-change")
    async def _change(self, method: str, done: str, **params: Any) -> None:
        """One membership change; the group as the daemon then knows it is shown."""
        try:
            view = await group_call_as(self.p2pid, GroupView, method, group=self.group_id, **params)
        except CallFailed:
            return  # the toast said why; nothing changed
        if method == "group.add":
            added = {m.identity_id: m.name for m in view.members}.get(params["contact"], "")
            done = f"{added or 'The contact'} {done}"
        self.notify(f"{done}.", title=printable(view.name))
        if self.is_attached:
            self.show(view)

    def commands(self) -> Iterable[SystemCommand]:
        yield SystemCommand("Back to the group", "Escape", self.action_back)
        if self.group is not None and self.group.my_role == "admin":
            yield SystemCommand("Add a member", "one of your contacts (a)", self.action_add)
            yield SystemCommand("Rename the group", "its name and avatar (r)", self.action_rename)
            yield SystemCommand("Group invite", "a code or QR to join with (i)", self.action_invite)
            for member in self.group.members:
                if not member.is_me:
                    yield SystemCommand(
                        f"Remove {member.name}",
                        "from the group, after a confirmation",
                        lambda member=member: self.action_remove(member),
                    )
        yield SystemCommand("Leave the group", "after a confirmation (l)", self.action_leave)


# -- adding a contact --------------------------------------------------------------------------


class AddMemberScreen(ModalScreen[str | None]):
    """My contacts not in the group yet; dismissed with the chosen one's identity id, or None."""

    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "cancel", "Cancel")]

    def __init__(self, group_name: str, present: set[str]) -> None:
        super().__init__()
        self.group_name, self.present = group_name, present
        self.contacts: list[ContactSummary] = []

    def compose(self) -> ComposeResult:
        with Vertical(id="add-member-dialog", classes="dialog"):
            yield Static(f"Add to {printable(self.group_name)}", classes="title", markup=False)
            yield Static("Enter adds the highlighted contact.", classes="hint")
            yield OptionList(id="add-member-contacts")
            yield Static("", id="add-member-empty", classes="hint")
        yield Footer()

    def on_mount(self) -> None:
        self.query_one("#add-member-contacts", OptionList).focus()
        self._load()

    @work(exclusive=True, group="add-member-contacts")
    async def _load(self) -> None:
        try:
            found = decode_list(ContactSummary, await group_call(_app(self), "contacts"))
        except (CallFailed, msgspec.ValidationError):
            return
        self.contacts = sorted(
            (c for c in found if c.identity_id not in self.present and not c.blocked),
            key=lambda c: c.name.casefold(),
        )
        try:
            options = self.query_one("#add-member-contacts", OptionList)
            empty = self.query_one("#add-member-empty", Static)
        except NoMatches:
            return
        options.clear_options()
        options.add_options(
            Option(printable(c.name).replace("\n", " "), id=c.identity_id) for c in self.contacts
        )
        if self.contacts:
            options.highlighted = 0
        empty.update("" if self.contacts else "Every contact of yours is in the group already.")
        options.display = bool(self.contacts)

    @on(OptionList.OptionSelected, "#add-member-contacts")
    def _picked(self, selected: OptionList.OptionSelected) -> None:
        self.dismiss(selected.option.id)

    def action_cancel(self) -> None:
        self.dismiss(None)


# -- renaming ----------------------------------------------------------------------------------


class RenameGroupScreen(ModalScreen[tuple[str, str] | None]):
    """The group's new name and avatar; dismissed with both, or None."""

    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "cancel", "Cancel")]

    def __init__(self, group: GroupView) -> None:
        super().__init__()
        self.group = group

    def compose(self) -> ComposeResult:
        with Vertical(id="rename-group-dialog", classes="dialog"):
            yield Static(f"Rename {printable(self.group.name)}", classes="title", markup=False)
            yield Static("Every member sees the new name.", classes="hint")
            yield Label("Name")
            yield Input(value=self.group.name, max_length=64, id="rename-group-name")
            yield Label("Avatar")
            yield Input(value=self.group.avatar, max_length=16, id="rename-group-avatar")
            yield Static("", id="rename-group-error", classes="error")
            with Horizontal(classes="buttons"):
                yield Button("Rename", variant="primary", id="rename-group-save")
                yield Button("Cancel", id="rename-group-cancel")
        yield Footer()

    @on(Input.Submitted)
    @on(Button.Pressed, "#rename-group-save")
    def save(self) -> None:
        name = self.query_one("#rename-group-name", Input).value.strip()
        if not name:
            self.query_one("#rename-group-error", Static).update("A group needs a name.")
            return
        self.dismiss((name, self.query_one("#rename-group-avatar", Input).value.strip()))

    @on(Button.Pressed, "#rename-group-cancel")
    def action_cancel(self) -> None:
        self.dismiss(None)


# -- an invite ---------------------------------------------------------------------------------


class InviteBody(Horizontal):
    """The QR code beside the text column; the text alone (and why) when the code does not
    fit."""

    def on_resize(self, event: events.Resize) -> None:
        self.refit()

    def refit(self) -> None:
        qr = self.query_one(QrView)
        note = self.query_one("#group-invite-fit", Static)
        room = Size(self.content_size.width - QR_SIDE_MIN_WIDTH, self.content_size.height)
        fits = qr.text is not None and qr.fits_in(room)
        qr.display = fits
        note.display = qr.text is not None and not fits
        if note.display:
            note.update(
                f"Too small for the QR code here (it needs {qr.cells.width + QR_SIDE_MIN_WIDTH}"
                f"x{qr.cells.height} cells): send the code below, or enlarge the terminal."
            )


class GroupInviteScreen(ModalScreen[None]):
    """How many may join with it and whether an admin approves each; then `group.invite`, and
    its code as a QR code and as text."""

    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "close", "Close")]

    def __init__(self, group_id: str, group_name: str) -> None:
        super().__init__()
        self.group_id, self.group_name = group_id, group_name
        self.created: GroupInviteCreated | None = None

    def compose(self) -> ComposeResult:
        with Vertical(id="group-invite-dialog", classes="dialog"):
            yield Static(f"Invite to {printable(self.group_name)}", classes="title", markup=False)
            with Horizontal(id="group-invite-form"):
                yield Label("Uses", id="group-invite-uses-label")
                yield Input(value="1", max_length=3, id="group-invite-uses", type="integer")
                yield Checkbox("An admin approves each joiner", id="group-invite-approval")
                yield Button("Create", variant="primary", id="group-invite-create")
            yield Static("", id="group-invite-error", classes="error", markup=False)
            with InviteBody(id="group-invite-body"):
                yield QrView(id="group-invite-qr")
                with VerticalScroll(id="group-invite-side"):
                    yield Static("", id="group-invite-fit", markup=False)
                    yield Static("", id="group-invite-hint", classes="hint", markup=False)
                    yield Static("", id="group-invite-code", markup=False)
                    yield Static("", id="group-invite-meta", markup=False)
        yield Footer()

    def on_mount(self) -> None:
        self.query_one("#group-invite-body").display = False
        self.query_one("#group-invite-uses", Input).focus()

    @on(Input.Submitted, "#group-invite-uses")
    @on(Button.Pressed, "#group-invite-create")
    def create(self) -> None:
        uses = read_uses(self.query_one("#group-invite-uses", Input).value)
        error = self.query_one("#group-invite-error", Static)
        if uses is None:
            error.update(f"Uses: a number from 1 to {MAX_INVITE_USES}.")
            return
        error.update("")
        approval = self.query_one("#group-invite-approval", Checkbox).value
        self._create(uses, approval)

    @work(exclusive=True, group="group-invite")
    async def _create(self, uses: int, approval: bool) -> None:
        try:
            created = await group_call_as(
                _app(self),
                GroupInviteCreated,
                "group.invite",
                group=self.group_id,
                uses=uses,
                ttl=INVITE_TTL_SECONDS,
                approval=approval,
            )
        except CallFailed as failure:
            self.query_one("#group-invite-error", Static).update(str(failure))
            return
        self.show(created)

    def show(self, created: GroupInviteCreated) -> None:
        self.created = created
        self.query_one("#group-invite-form").display = False
        self.query_one("#group-invite-body").display = True
        self.query_one(QrView).show(created.code)
        self.query_one("#group-invite-hint", Static).update(
            "They scan the QR code with p2pid (Groups, j), or paste this code:"
        )
        self.query_one("#group-invite-code", Static).update(created.code)
        uses = "one person" if created.uses == 1 else f"{created.uses} people"
        approval = " An admin approves each of them." if created.approval else ""
        expires = format_expiry(created.expires_at)
        self.query_one("#group-invite-meta", Static).update(
            f"Lets {uses} in until {expires}.{approval}"
        )
        self.query_one(InviteBody).refit()

    def action_close(self) -> None:
        self.dismiss(None)


def format_expiry(unix_seconds: int) -> str:
    return format_time(unix_seconds * 1000)
