"""Profile: my fields and who sees each (public, every contact, chosen contacts, groups).

For 'chosen' fields the editor lists the contacts to share with: saving shares with the ones
ticked and revokes from the ones unticked. The daemon checks names and values; its refusal
shows in the editor, which then changed nothing."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, ClassVar

import msgspec
from rich.text import Text
from textual import on, work
from textual.app import ComposeResult, SystemCommand
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.css.query import NoMatches
from textual.screen import ModalScreen
from textual.widgets import (
    Button,
    DataTable,
    Footer,
    Input,
    Label,
    RadioButton,
    RadioSet,
    SelectionList,
    Static,
)

from p2pid.rpc.protocol import RpcError
from p2pid.tui.screens.base import SectionScreen
from p2pid.tui.screens.contact_detail import ConfirmScreen, p2pid_app
from p2pid.tui.widgets.contact_records import (
    Coalesced,
    call_daemon,
    decode,
    decode_list,
    names_by_identity,
)
from p2pid.tui.widgets.profile_fields import AUDIENCES, ProfileFieldTable
from p2pid.wire.api import ContactSummary, NodeStatus
from p2pid.wire.profile import ProfileFieldSummary


class ProfileFieldScreen(ModalScreen[bool]):
    """Add a field (`field` None) or edit one. Dismissed True once saved."""

    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "cancel", "Cancel")]

    def __init__(self, field: ProfileFieldSummary | None, contacts: list[ContactSummary]) -> None:
        super().__init__()
        self.field = field
        self.contacts = [c for c in contacts if not c.blocked]

    def compose(self) -> ComposeResult:
        field = self.field
        audience = field.audience if field else "contacts"
        granted = set(field.granted_to) if field else set()
        with Vertical(id="field-dialog", classes="dialog"):
            yield Static(f"Edit {field.name}" if field else "New profile field", classes="title")
            with VerticalScroll(id="field-form"):
                yield Label("Name (a-z, 0-9, _ and -)")
                yield Input(
                    value=field.name if field else "",
                    placeholder="e.g. phone, email, city",
                    id="field-name",
                    disabled=field is not None,
                )
                yield Label("Value")
                yield Input(value=field.value if field else "", id="field-value")
                yield Label("Who sees it")
                with RadioSet(id="audience"):
                    for name, (label, meaning) in AUDIENCES.items():
                        yield RadioButton(
                            f"{label}: {meaning}", value=name == audience, id=f"audience-{name}"
                        )
                yield Label("Shared with", id="granted-label")
                yield SelectionList[str](
                    *[(c.name, c.identity_id, c.identity_id in granted) for c in self.contacts],
                    id="granted",
                )
                yield Static(
                    "" if self.contacts else "No contacts to share with yet.",
                    id="granted-empty",
                    classes="hint",
                )
            yield Static("", id="field-error", classes="error")
            with Horizontal(classes="buttons"):
                yield Button("Save", variant="primary", id="field-save")
                yield Button("Cancel", id="field-cancel")
        yield Footer()

    def on_mount(self) -> None:
        self._show_grants()
        self.query_one("#field-value" if self.field else "#field-name", Input).focus()

    @property
    def audience(self) -> str:
        pressed = self.query_one("#audience", RadioSet).pressed_button
        return (pressed.id or "audience-contacts").removeprefix("audience-") if pressed else ""

    @on(RadioSet.Changed)
    def _show_grants(self) -> None:
        chosen = self.audience == "chosen"
        for selector in ("#granted-label", "#granted", "#granted-empty"):
            self.query_one(selector).display = chosen

    @on(Input.Submitted)
    @on(Button.Pressed, "#field-save")
    def save(self) -> None:
        button = self.query_one("#field-save", Button)
        if button.disabled:  # a save is on its way
            return
        name = self.query_one("#field-name", Input).value
        value = self.query_one("#field-value", Input).value
        granted = set(self.query_one("#granted", SelectionList).selected)
        button.disabled = True
        self._save(name, value, self.audience, granted)

    @work(exclusive=True, group="field-save")
    async def _save(self, name: str, value: str, audience: str, granted: set[str]) -> None:
        app = p2pid_app(self)
        before = set(self.field.granted_to) if self.field else set()
        try:
            await call_daemon(app, "profile.set", name=name, value=value, audience=audience)
            if audience == "chosen":
                for identity_id in sorted(granted - before):
                    await call_daemon(app, "profile.share", name=name, contact=identity_id)
                for identity_id in sorted(before - granted):
                    await call_daemon(app, "profile.revoke", name=name, contact=identity_id)
        except RpcError as error:
            if self.is_attached:
                self.query_one("#field-error", Static).update(error.message)
                self.query_one("#field-save", Button).disabled = False
            return
        self.dismiss(True)

    @on(Button.Pressed, "#field-cancel")
    def action_cancel(self) -> None:
        self.dismiss(False)

    def commands(self) -> Iterable[SystemCommand]:
        yield SystemCommand("Save field", "set the value and who sees it", self.save)
        yield SystemCommand("Cancel", "change nothing", self.action_cancel)


class ProfileScreen(SectionScreen):
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("n", "add", "Add field"),
        Binding("delete", "remove", "Remove"),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.reload = Coalesced(self, self._load, "profile-load")
        self.contacts: list[ContactSummary] = []

    def compose_body(self) -> ComposeResult:
        yield Static("", id="profile-intro")
        yield ProfileFieldTable(id="profile-fields")
        yield Static("Connecting to the daemon…", id="profile-empty", classes="hint")

    async def on_connected(self) -> None:
        self.reload()

    def on_screen_resume(self) -> None:
        """Back to this section (or from a dialog): show what changed meanwhile."""
        if self.p2pid.connected:
            self.reload()

    async def on_daemon_event(self, event: dict[str, Any]) -> None:
        if event.get("type") == "contact.added":
            self.reload()

    async def _load(self) -> None:
        if not self.p2pid.connected:
            return
        try:
            status = decode(NodeStatus, await call_daemon(self.p2pid, "status", toast=False))
            fields = decode_list(
                ProfileFieldSummary, await call_daemon(self.p2pid, "profile.show", toast=False)
            )
            contacts = decode_list(
                ContactSummary, await call_daemon(self.p2pid, "contacts", toast=False)
            )
        except (RpcError, msgspec.ValidationError) as error:
            self.notify(f"cannot read the profile: {error}", severity="error")
            return
        self.contacts = contacts
        if not self.is_attached:
            return
        try:
            intro = Text()
            intro.append("Your name: ")
            intro.append(status.name, style="bold")
            intro.append(
                " (every contact gets it with your card). Each field below goes only to "
                "those its audience names."
            )
            self.query_one("#profile-intro", Static).update(intro)
            self.query_one(ProfileFieldTable).show(fields, names_by_identity(contacts))
            self.query_one(ProfileFieldTable).display = bool(fields)
            self.query_one("#profile-empty", Static).update(
                ""
                if fields
                else "No profile fields yet. Press n to add one (a phone number, an email, "
                "a city…) and choose who sees it."
            )
            self.query_one("#profile-empty").display = not fields
        except NoMatches:
            pass

    def _selected(self) -> ProfileFieldSummary | None:
        try:
            return self.query_one(ProfileFieldTable).selected
        except NoMatches:
            return None

    def _edited(self, saved: bool | None) -> None:
        if saved and self.is_attached:
            self.reload()

    def action_add(self) -> None:
        self.app.push_screen(ProfileFieldScreen(None, self.contacts), callback=self._edited)

    @on(DataTable.RowSelected, "#profile-fields")
    def action_edit(self) -> None:
        field = self._selected()
        if field is not None:
            self.app.push_screen(ProfileFieldScreen(field, self.contacts), callback=self._edited)

    def action_remove(self) -> None:
        field = self._selected()
        if field is None:
            return

        def answered(yes: bool | None) -> None:
            if yes:
                self._remove(field.name)

        self.app.push_screen(
            ConfirmScreen(
                f"Remove {field.name}?",
                "Every contact that holds it deletes it too.",
                "Remove",
            ),
            callback=answered,
        )

    @work(group="profile-remove")
    async def _remove(self, name: str) -> None:
        try:
            await call_daemon(self.p2pid, "profile.remove", name=name)
        except RpcError:
            return
        self.notify(f"removed {name}")
        if self.is_attached:
            self.reload()

    def commands(self) -> Iterable[SystemCommand]:
        yield SystemCommand("Add profile field", "a value and who sees it", self.action_add)
        field = self._selected()
        if field is not None:
            yield SystemCommand(
                f"Edit field {field.name}", "its value and who sees it", self.action_edit
            )
            yield SystemCommand(
                f"Share or revoke {field.name}",
                "pick the contacts who see it (audience: chosen contacts)",
                self.action_edit,
            )
            yield SystemCommand(
                f"Remove field {field.name}", "contacts delete it too", self.action_remove
            )
