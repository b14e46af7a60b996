"""Approving a new device of mine, as a modal that follows the link to its end.

Stages: code (paste the code the new device shows, or the path of a photo of its QR code; a photo
is decoded here with zxing-cpp, the daemon takes codes), compare (`device.approve` ran the link
handshake up to the confirmation code: both screens show it, the person says whether they match
and how much history the new device gets), linking (`device.approve.confirm` hands the identity
over and syncs), done. Any refusal is a toast and a line here; nothing changes then.

Like verification, the calls run on the app, not on this modal: closed while `device.approve`
is still running, the link is aborted once it answers (accept=false), never left half open.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from textual import events, on
from textual.app import ComposeResult, SystemCommand
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.css.query import NoMatches
from textual.screen import ModalScreen
from textual.widgets import Button, Digits, Footer, Input, RadioButton, RadioSet, Static

from p2pid.rpc.protocol import RpcError
from p2pid.tui.widgets.contact_records import call_daemon, short_peer
from p2pid.tui.widgets.invite_join_input import JoinInput, read_join_input

if TYPE_CHECKING:
    from p2pid.tui.app import P2pidApp

Stage = Literal["code", "approving", "compare", "linking", "done"]
History = Literal["none", "days", "all"]
DEFAULT_DAYS = 30
MAX_DAYS = 36_500


def read_days(text: str) -> int | None:
    """A number of days from 1 to MAX_DAYS, or None."""
    try:
        days = int(text.strip())
    except ValueError:
        return None
    return days if 1 <= days <= MAX_DAYS else None


class ApproveDeviceScreen(ModalScreen[dict[str, Any] | None]):
    """Dismissed with `device.approve.confirm`'s result once a device is linked, else None."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "close", "Cancel / close"),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.stage: Stage = "code"
        self.offer: dict[str, Any] | None = None  # device.approve's answer
        self.result: dict[str, Any] | None = None
        self.abandoned = False

    @property
    def p2pid(self) -> P2pidApp:
        from p2pid.tui.app import P2pidApp

        assert isinstance(self.app, P2pidApp)
        return self.app

    def compose(self) -> ComposeResult:
        with Vertical(id="approve-dialog", classes="dialog"):
            yield Static("Approve a new device", classes="title")
            with Vertical(id="approve-code-stage"):
                yield Static(
                    'On the new device run `p2pid device link` (or, in its TUI, "Link to an '
                    'identity I already use"). Paste the code it shows, or type the path of a '
                    "photo of its QR code, then press Enter.",
                    classes="hint",
                    markup=False,
                )
                yield JoinInput(placeholder="P2PID:…  or  ~/Pictures/link.png", id="approve-input")
            with Vertical(id="approve-compare-stage"):
                yield Static("", id="approve-device", markup=False)
                yield Digits("", id="approve-code")
                yield Static("Copy message history to it:", id="approve-history-label")
                with Horizontal(id="approve-history-row"):
                    with RadioSet(id="approve-history"):
                        yield RadioButton("none", value=True, id="history-none")
                        yield RadioButton("the last", id="history-days")
                        yield RadioButton("all", id="history-all")
                    yield Input(str(DEFAULT_DAYS), type="integer", id="approve-days", max_length=5)
                    yield Static("days", id="approve-days-label")
                yield Static("Do the codes match?", classes="title", id="approve-question")
                with Horizontal(classes="buttons"):
                    yield Button("Yes, link it (y)", variant="success", id="approve-yes")
                    yield Button("No, they differ (n)", variant="error", id="approve-no")
            yield Static("", id="approve-status", classes="approve-line", markup=False)
            yield Static("", id="approve-error", classes="approve-line error", markup=False)
            yield Static("", id="approve-result", classes="approve-line", markup=False)
            with Horizontal(classes="buttons", id="approve-close-row"):
                yield Button("Cancel", id="approve-close")
        yield Footer()

    def on_mount(self) -> None:
        self.query_one("#approve-compare-stage").display = False
        for selector in ("#approve-days", "#approve-days-label", ".approve-line"):
            for widget in self.query(selector):
                widget.display = False
        self.query_one("#approve-input", Input).focus()

    # -- what the person does ----------------------------------------------------------------

    @on(Input.Submitted, "#approve-input")
    def submit_code(self, submitted: Input.Submitted) -> None:
        if self.stage != "code":
            return
        kind, value = read_join_input(submitted.value)
        if not value:
            self._error("Paste the new device's code, or type the path of a photo of it.")
            return
        self._error("")
        self._set_stage("approving")
        self.query_one("#approve-input", Input).disabled = True
        # On the app: it must outlive this modal (see the module's docstring).
        self.p2pid.run_worker(self._approve(kind, value), group="device-approve")

    @on(RadioSet.Changed, "#approve-history")
    def _history_changed(self) -> None:
        days = self.query_one("#approve-days", Input)
        days.display = self.history == "days"
        self.query_one("#approve-days-label").display = days.display
        if days.display:
            days.focus()

    @property
    def history(self) -> History:
        pressed = self.query_one("#approve-history", RadioSet).pressed_button
        chosen = (pressed.id or "history-none").removeprefix("history-") if pressed else "none"
        return "days" if chosen == "days" else "all" if chosen == "all" else "none"

    def on_key(self, event: events.Key) -> None:
        """y / n answer the question while the codes are shown (not while typing the days)."""
        if self.stage != "compare" or isinstance(self.focused, Input):
            return
        if event.key in ("y", "n"):
            event.stop()
            self.answer(event.key == "y")

    @on(Button.Pressed, "#approve-yes")
    def _yes(self) -> None:
        self.answer(True)

    @on(Button.Pressed, "#approve-no")
    def _no(self) -> None:
        self.answer(False)

    def answer(self, matches: bool) -> None:
        if self.stage != "compare" or self.offer is None:
            return
        days: int | None = None
        history = self.history if matches else "none"
        if history == "days":
            days = read_days(self.query_one("#approve-days", Input).value)
            if days is None:
                self._error(f"The number of days must be 1 to {MAX_DAYS}.")
                self.query_one("#approve-days", Input).focus()
                return
        self._error("")
        self._set_stage("linking")
        for button in ("#approve-yes", "#approve-no"):
            self.query_one(button, Button).disabled = True
        self._status(
            f"Linking {self.offer['device_name']}: handing over the identity and syncing…"
            if matches
            else "Telling the new device the codes differ…"
        )
        link_id = str(self.offer["link_id"])
        self.p2pid.run_worker(
            self._confirm(link_id, matches, history, days), group="device-approve"
        )

    @on(Button.Pressed, "#approve-close")
    def action_close(self) -> None:
        if self.stage in ("approving", "compare"):
            self.abandoned = True
            if self.stage == "compare" and self.offer is not None:
                self._abort(str(self.offer["link_id"]))
        self.dismiss(self.result)

    # -- the daemon ----------------------------------------------------------------------------

    async def _approve(self, kind: str, value: str) -> None:
        if kind == "image":
            from p2pid.qr import QrDecodeError, decode_image

            self._status("Reading the QR code…")
            try:
                value = await asyncio.to_thread(decode_image, value)
            except QrDecodeError as failure:
                self._back_to_code(f"Could not read the image: {failure}")
                return
        self._status("Reaching the new device…")
        try:
            offer = await call_daemon(self.p2pid, "device.approve", code=value)
        except RpcError as error:
            self._back_to_code(f"Could not approve: {error.message}")
            return
        if self.abandoned or not self.is_attached:
            self._abort(str(offer["link_id"]))
            return
        self._show_offer(dict(offer))

    def _show_offer(self, offer: dict[str, Any]) -> None:
        self.offer = offer
        self._set_stage("compare")
        self._status("")
        with contextlib.suppress(NoMatches):
            self.query_one("#approve-device", Static).update(
                f"{offer['device_name']} ({short_peer(str(offer['device_peer_id']))}) asks to "
                "join your identity. It shows this code; check that both are the same:"
            )
            self.query_one("#approve-code", Digits).update(str(offer["confirmation"]))
            self.query_one("#approve-code-stage").display = False
            self.query_one("#approve-compare-stage").display = True
            self.query_one("#approve-yes", Button).focus()

    async def _confirm(self, link_id: str, accept: bool, history: str, days: int | None) -> None:
        try:
            result = await call_daemon(
                self.p2pid,
                "device.approve.confirm",
                link_id=link_id,
                accept=accept,
                history=history,
                days=days,
            )
        except RpcError as error:
            self._done(f"✗ Not linked: {error.message}", good=False)
            return
        if not accept:
            self._done("✗ Not linked: you said the codes differ. Nothing changed.", good=False)
            return
        self.result = dict(result)
        summary = (
            f"{result['device_name']} is linked: it got {result['contacts']} contact"
            f"{'s' if result['contacts'] != 1 else ''} and {result['messages']} message"
            f"{'s' if result['messages'] != 1 else ''}."
        )
        self.p2pid.notify(summary, title="Devices")
        self._done(f"✓ {summary}", good=True)

    def _abort(self, link_id: str) -> None:
        async def abort() -> None:
            with contextlib.suppress(RpcError):
                await call_daemon(
                    self.p2pid,
                    "device.approve.confirm",
                    toast=False,
                    link_id=link_id,
                    accept=False,
                    history="none",
                    days=None,
                )

        self.p2pid.run_worker(abort(), group="device-abort", exit_on_error=False)

    # -- showing -------------------------------------------------------------------------------

    def _set_stage(self, stage: Stage) -> None:
        self.stage = stage

    def _line(self, selector: str, text: str) -> None:
        """One of the dialog's lines; an empty one takes no room."""
        with contextlib.suppress(NoMatches):
            line = self.query_one(selector, Static)
            line.update(text)
            line.display = bool(text)

    def _status(self, text: str) -> None:
        self._line("#approve-status", text)

    def _error(self, text: str) -> None:
        self._line("#approve-error", text)

    def _back_to_code(self, error: str) -> None:
        self._set_stage("code")
        if not self.is_attached:
            return
        self._status("")
        self._error(error)
        with contextlib.suppress(NoMatches):
            entry = self.query_one("#approve-input", Input)
            entry.disabled = False
            entry.focus()

    def _done(self, text: str, good: bool) -> None:
        self._set_stage("done")
        if not self.is_attached:
            return
        with contextlib.suppress(NoMatches):
            self._status("")
            self._line("#approve-result", text)
            result = self.query_one("#approve-result", Static)
            result.set_class(good, "good")
            result.set_class(not good, "bad")
            self.query_one("#approve-compare-stage").display = False
            close = self.query_one("#approve-close", Button)
            close.label = "Close"
            close.focus()

    def commands(self) -> Iterable[SystemCommand]:
        if self.stage == "compare":
            yield SystemCommand("They match: link it", "the codes are the same", self._yes)
            yield SystemCommand("They differ", "the codes are not the same", self._no)
        label = "Close" if self.stage == "done" else "Cancel approving"
        yield SystemCommand(label, "approving a new device", self.action_close)
