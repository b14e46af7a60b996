"""First run, on a new device: link it to an identity the person already uses.

`p2pid device link` runs in a subprocess (p2pid/tui/link_device.py): its code is shown as a QR
code (and as text) for another of the person's devices to approve (F8 there, a); then both
screens show a confirmation code to compare; then this device holds the identity and the TUI
goes on as after creating one (the daemon starts through the link). An error is shown here and
the person can try again or go back; Escape ends the linking process.
"""

from __future__ import annotations

import contextlib
import time
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from textual import events, on, work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.css.query import NoMatches
from textual.geometry import Size
from textual.screen import ModalScreen
from textual.widgets import Button, Digits, Footer, Input, Label, Static

from p2pid.tui.link_device import device_link_events
from p2pid.tui.widgets.qr_view import QrView

if TYPE_CHECKING:
    from p2pid.tui.app import P2pidApp

Stage = Literal["name", "code", "confirm", "linked", "error"]
SIDE_MIN_WIDTH = 30
MAX_DEVICE_NAME_CHARACTERS = 64


class LinkBody(Horizontal):
    """The QR code beside the text; the text alone, saying how large the terminal must be, when
    the QR code does not fit."""

    def on_resize(self, event: events.Resize) -> None:
        self.refit()

    def refit(self) -> None:
        qr = self.query_one(QrView)
        note = self.query_one("#link-fit", Static)
        room = Size(self.content_size.width - SIDE_MIN_WIDTH, self.content_size.height)
        fits = qr.text is not None and qr.fits_in(room)
        qr.display = fits
        note.display = qr.text is not None and not fits
        if note.display:
            terminal = self.app.size
            columns = qr.cells.width + SIDE_MIN_WIDTH + terminal.width - self.content_size.width
            lines = qr.cells.height + terminal.height - self.content_size.height
            note.update(
                f"Too small for the QR code: it needs {columns}x{lines}. Enlarge the terminal, "
                "or paste the code below on the other device."
            )


class LinkThisDeviceScreen(ModalScreen[bool]):
    """Dismissed True once this device holds the identity; False when the person went back."""

    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "back", "Back")]

    def __init__(self) -> None:
        super().__init__()
        self.stage: Stage = "name"
        self.code: str | None = None
        self.outcome: dict[str, Any] | None = None

    @property
    def p2pid(self) -> P2pidApp:
        from p2pid.tui.app import P2pidApp

        assert isinstance(self.app, P2pidApp)
        return self.app

    def compose(self) -> ComposeResult:
        with Vertical(id="link-screen"):
            yield Static("Link this device to an identity you already use", classes="title")
            with Vertical(id="link-name-stage"):
                yield Static(
                    "A code appears next: approve it on a device that already has your identity "
                    "(in p2pid there: F8 Devices, then a; or `p2pid device approve CODE`). Your "
                    "other devices list this one by the name below.",
                    classes="hint",
                    markup=False,
                )
                yield Label("This device's name (optional)")
                yield Input(
                    placeholder="e.g. laptop", id="link-name", max_length=MAX_DEVICE_NAME_CHARACTERS
                )
            with LinkBody(id="link-body"):
                yield QrView(id="link-qr")
                with VerticalScroll(id="link-side"):
                    yield Static("", id="link-fit", classes="warning", markup=False)
                    yield Static("", id="link-hint", classes="hint", markup=False)
                    yield Static("", id="link-code", markup=False)
                    yield Static("", id="link-expiry", classes="hint", markup=False)
                    yield Digits("", id="link-confirmation")
            yield Static("", id="link-status", markup=False)
            yield Static("", id="link-error", classes="error", markup=False)
            yield Static("", id="link-result", markup=False)
            with Horizontal(classes="buttons"):
                yield Button("Show the link code", variant="primary", id="link-start")
                yield Button("Continue", variant="success", id="link-continue")
                yield Button("Back", id="link-back")
        yield Footer()

    def on_mount(self) -> None:
        self._show_stage("name")
        self.query_one("#link-name", Input).focus()

    # -- the person ----------------------------------------------------------------------------

    @on(Input.Submitted, "#link-name")
    @on(Button.Pressed, "#link-start")
    def start(self) -> None:
        if self.stage not in ("name", "error"):
            return
        name = self.query_one("#link-name", Input).value.strip() or None
        self.query_one("#link-error", Static).update("")
        self.query_one("#link-status", Static).update("Making the link code…")
        self.query_one("#link-start", Button).disabled = True
        self._link(name)

    @on(Button.Pressed, "#link-continue")
    def _continue(self) -> None:
        if self.stage == "linked":
            self.dismiss(True)

    @on(Button.Pressed, "#link-back")
    def action_back(self) -> None:
        if self.stage == "linked":
            self.dismiss(True)
            return
        self.workers.cancel_group(self, "device-link")  # ends the linking process
        self.dismiss(False)

    # -- the linking process -------------------------------------------------------------------

    @work(exclusive=True, group="device-link")
    async def _link(self, name: str | None) -> None:
        async with contextlib.aclosing(device_link_events(self.p2pid.home, name)) as steps:
            async for event in steps:
                if not self.is_attached:
                    return
                self._step(event)

    def _step(self, event: dict[str, Any]) -> None:
        kind = event.get("event")
        status = self.query_one("#link-status", Static)
        if kind == "code":
            self.code = str(event.get("code", ""))
            self.query_one(QrView).show(self.code)
            self.query_one("#link-hint", Static).update(
                "On a device that already has your identity: F8 (Devices), a (approve a new "
                "device), then scan this QR code with a photo, or paste this code:"
            )
            self.query_one("#link-code", Static).update(self.code)
            expires = event.get("expires_at")
            self.query_one("#link-expiry", Static).update(
                f"Valid until {time.strftime('%H:%M', time.localtime(float(expires)))}."
                if isinstance(expires, int | float)
                else ""
            )
            status.update("Waiting for your other device…")
            self._show_stage("code")
        elif kind == "confirm":
            approver = str(event.get("approver") or "your other device")
            self.query_one(QrView).show(None)
            self.query_one("#link-hint", Static).update(
                f"{approver}'s device shows a code. Check that it is this one, and accept there "
                "only if both are the same:"
            )
            self.query_one("#link-code", Static).update("")
            self.query_one("#link-expiry", Static).update("")
            self.query_one("#link-confirmation", Digits).update(str(event.get("confirmation")))
            status.update("Waiting for the answer on the other device…")
            self._show_stage("confirm")
        elif kind == "linked":
            self.outcome = event
            contacts, messages = event.get("contacts", 0), event.get("messages", 0)
            self.query_one("#link-result", Static).update(
                f"✓ This device is linked to {event.get('name', 'your identity')}: it got "
                f"{contacts} contact{'s' if contacts != 1 else ''} and {messages} "
                f"message{'s' if messages != 1 else ''}. Continue to start p2pid here."
            )
            status.update("")
            self._show_stage("linked")
        elif kind == "refused":  # someone tried a wrong secret; the code still stands
            status.update(f"Refused an attempt: {event.get('message', '')}")
        elif kind == "error":
            self.query_one("#link-error", Static).update(
                f"Not linked: {event.get('message') or 'the link failed'}"
            )
            status.update("")
            self._show_stage("error")

    def _show_stage(self, stage: Stage) -> None:
        self.stage = stage
        with contextlib.suppress(NoMatches):
            self.query_one("#link-name-stage").display = stage in ("name", "error")
            self.query_one("#link-body").display = stage in ("code", "confirm")
            self.query_one("#link-confirmation").display = stage == "confirm"
            self.query_one("#link-result").display = stage == "linked"
            self.query_one("#link-error").display = stage == "error"
            start = self.query_one("#link-start", Button)
            start.display = stage in ("name", "error")
            start.disabled = False
            start.label = "Try again" if stage == "error" else "Show the link code"
            self.query_one("#link-continue", Button).display = stage == "linked"
            self.query_one("#link-back", Button).label = "Back" if stage != "linked" else "Close"
            if stage == "linked":
                self.query_one("#link-continue", Button).focus()
            self.query_one(LinkBody).refit()
