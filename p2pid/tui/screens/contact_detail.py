"""One contact in full, and what can be done to a contact from the list or from here: rename,
block or unblock, remove (confirmed first), verify. Also the small dialogs these use."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

from textual import on, work
from textual.app import ComposeResult, SystemCommand
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.css.query import NoMatches
from textual.screen import ModalScreen, Screen
from textual.widgets import Button, Footer, Input, Label, Static

from p2pid.rpc.protocol import ErrorCode, RpcError
from p2pid.tui.screens.verify import VerifyScreen
from p2pid.tui.widgets.contact_card import ContactCard
from p2pid.tui.widgets.contact_records import call_daemon, decode
from p2pid.wire.api import ContactSummary

if TYPE_CHECKING:
    from p2pid.tui.app import P2pidApp

ResultT = TypeVar("ResultT")


def p2pid_app(screen: Screen[Any]) -> P2pidApp:
    from p2pid.tui.app import P2pidApp

    assert isinstance(screen.app, P2pidApp)
    return screen.app


class ConfirmScreen(ModalScreen[bool]):
    """Yes or no to one consequential action; dismissed True only on an explicit yes."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape,n", "answer(False)", "No"),
        Binding("y", "answer(True)", "Yes"),
    ]

    def __init__(self, title: str, body: str, action: str) -> None:
        super().__init__()
        self._title, self._body, self._action = title, body, action

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog confirm-dialog"):
            yield Static(self._title, classes="title")
            yield Static(self._body, classes="hint")
            with Horizontal(classes="buttons"):
                yield Button(self._action, variant="error", id="confirm-yes")
                yield Button("Cancel", id="confirm-no")
        yield Footer()

    def on_mount(self) -> None:
        self.query_one("#confirm-no", Button).focus()

    def action_answer(self, yes: bool) -> None:
        self.dismiss(yes)

    @on(Button.Pressed, "#confirm-yes")
    def _yes(self) -> None:
        self.dismiss(True)

    @on(Button.Pressed, "#confirm-no")
    def _no(self) -> None:
        self.dismiss(False)

    def commands(self) -> Iterable[SystemCommand]:
        yield SystemCommand(self._action, self._title, lambda: self.dismiss(True))
        yield SystemCommand("Cancel", "do nothing", lambda: self.dismiss(False))


class RenameScreen(ModalScreen[ContactSummary | None]):
    """My nickname for a contact. The daemon checks it; its refusal shows here, nothing changes.
    Dismissed with the renamed contact, or None."""

    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "cancel", "Cancel")]

    def __init__(self, contact: ContactSummary) -> None:
        super().__init__()
        self.contact = contact

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog", id="rename-dialog"):
            yield Static(f"Rename {self.contact.name}", classes="title")
            yield Static(
                f"A nickname only you see. They call themselves {self.contact.display_name!r}.",
                classes="hint",
            )
            yield Label("Nickname")
            yield Input(
                value=self.contact.nickname or "",
                placeholder=self.contact.display_name,
                id="nickname",
            )
            yield Static("", id="rename-error", classes="error")
            with Horizontal(classes="buttons"):
                yield Button("Rename", variant="primary", id="rename-save")
                yield Button("Use their name", id="rename-clear")
                yield Button("Cancel", id="rename-cancel")
        yield Footer()

    @on(Input.Submitted)
    @on(Button.Pressed, "#rename-save")
    def save(self) -> None:
        nickname = self.query_one("#nickname", Input).value
        if nickname == "":
            self._error("Type a nickname, or choose “Use their name” to drop yours.")
            return
        self._rename(nickname)

    @on(Button.Pressed, "#rename-clear")
    def clear(self) -> None:
        self._rename(None)

    @on(Button.Pressed, "#rename-cancel")
    def action_cancel(self) -> None:
        self.dismiss(None)

    def _error(self, message: str) -> None:
        self.query_one("#rename-error", Static).update(message)
        self.query_one("#nickname", Input).focus()

    @work(exclusive=True, group="rename")
    async def _rename(self, nickname: str | None) -> None:
        try:
            result = await call_daemon(
                p2pid_app(self),
                "contact.rename",
                contact=self.contact.identity_id,
                nickname=nickname,
            )
        except RpcError as error:
            if self.is_attached:
                self._error(error.message)
            return
        self.dismiss(decode(ContactSummary, result))

    def commands(self) -> Iterable[SystemCommand]:
        yield SystemCommand("Rename", "save the nickname typed", self.save)
        yield SystemCommand("Use their name", "drop my nickname for them", self.clear)


class ContactActions(Screen[ResultT]):
    """Rename, block or unblock, remove and verify the contact a screen has in view.

    A screen mixes this in, says which contact is in view (`current_contact`) and reacts to a
    change (`contact_changed`). The RPC runs in workers; the daemon's refusals are toasted."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("v", "verify", "Verify"),
        Binding("r", "rename", "Rename"),
        Binding("b", "toggle_block", "Block/unblock"),
        Binding("delete", "remove", "Remove"),
    ]

    def current_contact(self) -> ContactSummary | None:
        raise NotImplementedError

    def contact_changed(self, identity_id: str, removed: bool = False) -> None:
        """A contact changed (or was removed) through one of these actions."""

    def contact_actions(self, contact: ContactSummary) -> Iterable[SystemCommand]:
        name = contact.name
        yield SystemCommand(
            f"Verify {name}", "compare emoji or numbers with them", self.action_verify
        )
        yield SystemCommand(f"Rename {name}", "a nickname only you see", self.action_rename)
        if contact.blocked:
            yield SystemCommand(f"Unblock {name}", "accept them again", self.action_toggle_block)
        else:
            yield SystemCommand(
                f"Block {name}", "nothing to or from them", self.action_toggle_block
            )
        yield SystemCommand(f"Remove {name}", "forget this contact", self.action_remove)

    def action_rename(self) -> None:
        contact = self.current_contact()
        if contact is None:
            return
        self.app.push_screen(
            RenameScreen(contact),
            callback=lambda renamed: self.contact_changed(contact.identity_id),
        )

    def action_verify(self) -> None:
        contact = self.current_contact()
        if contact is None:
            return
        self.app.push_screen(
            VerifyScreen(contact.identity_id, contact.name),
            callback=lambda verified: self.contact_changed(contact.identity_id),
        )

    def action_toggle_block(self) -> None:
        contact = self.current_contact()
        if contact is None:
            return
        if contact.blocked:
            self._set_blocked(contact, False)
            return

        def answered(yes: bool | None) -> None:
            if yes:
                self._set_blocked(contact, True)

        self.app.push_screen(
            ConfirmScreen(
                f"Block {contact.name}?",
                "Nothing more goes to them (queued messages are dropped) and nothing from them "
                "is accepted. You can unblock them later.",
                "Block",
            ),
            callback=answered,
        )

    def action_remove(self) -> None:
        contact = self.current_contact()
        if contact is None:
            return

        def answered(yes: bool | None) -> None:
            if yes:
                self._remove(contact)

        self.app.push_screen(
            ConfirmScreen(
                f"Remove {contact.name}?",
                "Their devices, verification and shared fields are forgotten here. To talk "
                "again you need a new invite or contact request.",
                "Remove",
            ),
            callback=answered,
        )

    @work(group="contact-action")
    async def _set_blocked(self, contact: ContactSummary, blocked: bool) -> None:
        method = "contact.block" if blocked else "contact.unblock"
        try:
            await call_daemon(p2pid_app(self), method, contact=contact.identity_id)
        except RpcError:
            return
        self.notify(f"{contact.name} is {'blocked' if blocked else 'unblocked'}")
        self.contact_changed(contact.identity_id)

    @work(group="contact-action")
    async def _remove(self, contact: ContactSummary) -> None:
        try:
            await call_daemon(p2pid_app(self), "contact.remove", contact=contact.identity_id)
        except RpcError:
            return
        self.notify(f"{contact.name} is removed")
        self.contact_changed(contact.identity_id, removed=True)


class ContactDetailScreen(ModalScreen[None], ContactActions[None]):
    """Everything about one contact; kept current by the daemon's events."""

    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "close", "Close")]

    def __init__(self, contact: ContactSummary) -> None:
        super().__init__()
        self.contact = contact
        self.loaded = False  # the daemon's answer is shown (not just the list's record)

    def compose(self) -> ComposeResult:
        with Vertical(id="contact-detail", classes="dialog"):
            yield Static(self.contact.name, classes="title", id="detail-title")
            with VerticalScroll(id="detail-body"):
                yield ContactCard(id="contact-card")
            with Horizontal(classes="buttons"):
                yield Button("Verify", variant="primary", id="detail-verify")
                yield Button("Rename", id="detail-rename")
                yield Button("Block", id="detail-block")
                yield Button("Remove", variant="error", id="detail-remove")
                yield Button("Close", id="detail-close")
        yield Footer()

    def on_mount(self) -> None:
        self._show(self.contact)
        p2pid_app(self).daemon_events.subscribe(self, self._daemon_event)
        self.reload()

    def current_contact(self) -> ContactSummary | None:
        return self.contact

    def contact_changed(self, identity_id: str, removed: bool = False) -> None:
        if removed:
            self.dismiss(None)
        elif self.is_attached:
            self.reload()

    def _show(self, contact: ContactSummary) -> None:
        self.contact = contact
        try:
            self.query_one("#detail-title", Static).update(contact.name)
            self.query_one(ContactCard).show(contact)
            self.query_one("#detail-block", Button).label = (
                "Unblock" if contact.blocked else "Block"
            )
            self.query_one("#detail-verify", Button).label = (
                "Verify again" if contact.verified_by == "sas" else "Verify"
            )
        except NoMatches:  # closed meanwhile
            pass

    @work(exclusive=True, group="detail-load")
    async def reload(self) -> None:
        try:
            result = await call_daemon(
                p2pid_app(self), "contact.show", toast=False, contact=self.contact.identity_id
            )
        except RpcError as error:
            if error.code == ErrorCode.NOT_FOUND and self.is_attached:
                self.notify(f"{self.contact.name} is no longer a contact")
                self.dismiss(None)
            return
        if self.is_attached:
            self._show(decode(ContactSummary, result))
            self.loaded = True

    def _daemon_event(self, event: dict[str, Any]) -> None:
        kind = event.get("type", "")
        mine = event.get("identity_id") == self.contact.identity_id
        device = event.get("peer_id") in {d.peer_id for d in self.contact.devices}
        if (
            (mine and kind.startswith(("contact.", "verification.done")))
            or (device and kind.startswith("peer."))
        ) and self.is_attached:
            self.reload()

    @on(Button.Pressed, "#detail-verify")
    def _verify(self) -> None:
        self.action_verify()

    @on(Button.Pressed, "#detail-rename")
    def _rename(self) -> None:
        self.action_rename()

    @on(Button.Pressed, "#detail-block")
    def _block(self) -> None:
        self.action_toggle_block()

    @on(Button.Pressed, "#detail-remove")
    def _remove_pressed(self) -> None:
        self.action_remove()

    @on(Button.Pressed, "#detail-close")
    def action_close(self) -> None:
        self.dismiss(None)

    def commands(self) -> Iterable[SystemCommand]:
        yield from self.contact_actions(self.contact)
        yield SystemCommand(
            "Close", f"back to the contacts list from {self.contact.name}", self.action_close
        )
