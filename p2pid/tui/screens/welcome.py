"""First run: create the identity, or link this device to one the person already uses; or unlock
a passphrase-protected home."""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Input, Label, Static

from p2pid.rpc.protocol import RpcError
from p2pid.tui.link import create_identity
from p2pid.tui.screens.device_link import LinkThisDeviceScreen

if TYPE_CHECKING:
    from p2pid.tui.app import P2pidApp

MAX_NAME_CHARACTERS = 64


class WelcomeScreen(ModalScreen[str | None]):
    """Dismissed with the passphrase chosen (None for a key file) once the identity exists."""

    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "app.quit", "Quit")]

    def compose(self) -> ComposeResult:
        with Vertical(id="welcome", classes="dialog"):
            yield Static("Welcome to p2pid", classes="title")
            yield Static(
                "Your identity lives on this device only. Choose the name your contacts see.",
                classes="hint",
            )
            yield Label("Name")
            yield Input(placeholder="e.g. Alice", id="name", max_length=MAX_NAME_CHARACTERS)
            yield Static(
                "Passphrase (optional: without one, a key file protects the data)",
                classes="label",
            )
            yield Input(placeholder="leave empty for none", password=True, id="passphrase")
            yield Static("", id="welcome-error", classes="error")
            with Horizontal(classes="buttons"):
                yield Button("Create my identity", variant="primary", id="create")
                yield Button("Link to an identity I already use", id="link-existing")

    @on(Button.Pressed, "#create")
    @on(Input.Submitted)
    def create(self) -> None:
        name = self.query_one("#name", Input).value.strip()
        if not name:
            self.query_one("#welcome-error", Static).update("A name is needed.")
            self.query_one("#name", Input).focus()
            return
        passphrase = self.query_one("#passphrase", Input).value or None
        self.query_one("#create", Button).disabled = True
        self._create(name, passphrase)

    @on(Button.Pressed, "#link-existing")
    def link_existing(self) -> None:
        """This device joins an identity another device holds (screens/device_link.py)."""

        def linked(done: bool | None) -> None:
            if done:
                self.dismiss(None)  # a key file protects the linked home: no passphrase

        self.app.push_screen(LinkThisDeviceScreen(), callback=linked)

    @work(exclusive=True)
    async def _create(self, name: str, passphrase: str | None) -> None:
        app: P2pidApp = self.app  # type: ignore[assignment]
        try:
            await create_identity(app.home, name, passphrase)
        except RpcError as error:
            self.query_one("#welcome-error", Static).update(error.message)
            self.query_one("#create", Button).disabled = False
            return
        self.dismiss(passphrase)


class UnlockScreen(ModalScreen[str | None]):
    """Dismissed with the passphrase typed, for the daemon to unlock the home with."""

    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "app.quit", "Quit")]

    def compose(self) -> ComposeResult:
        with Vertical(id="unlock", classes="dialog"):
            yield Static("This home is protected by a passphrase", classes="title")
            yield Input(placeholder="passphrase", password=True, id="passphrase")

    @on(Input.Submitted)
    def unlock(self, submitted: Input.Submitted) -> None:
        self.dismiss(submitted.value or None)
