"""Pairing with a kiosk: its QR code's text, the path of a photo of it, or its short code.

The short code (digits) runs the PAKE; a code or a photo of the QR runs the invite-secret
pairing. A photo is decoded here with zxing-cpp (the daemon takes codes). A refusal (a wrong or
expired code, too many attempts, the owner said no) is a toast and a line here; nothing changes.
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.css.query import NoMatches
from textual.screen import ModalScreen
from textual.widgets import Button, Footer, Input, Static

from p2pid.rpc.protocol import RpcError
from p2pid.tui.widgets.contact_records import call_daemon
from p2pid.tui.widgets.invite_join_input import JoinInput, read_code, read_join_input

if TYPE_CHECKING:
    from p2pid.tui.app import P2pidApp

PairKind = Literal["code", "image", "short_code"]
SHORT_CODE_SEPARATORS = " -"


def read_pair_input(text: str) -> tuple[PairKind, str]:
    """("short_code", digits) for digits (spaces and dashes allowed between them), else what the
    join input makes of it: a code or the path of an image."""
    stripped = text.strip()
    digits = "".join(c for c in stripped if c not in SHORT_CODE_SEPARATORS)
    if digits.isascii() and digits.isdigit():
        return "short_code", digits
    return read_join_input(stripped)


def describe_pairing(result: dict[str, Any]) -> str:
    routines = [str(r["name"]) for r in result.get("routines", [])]
    can = f" You can run: {', '.join(routines)}." if routines else ""
    return f"Paired with {result['kiosk_name']} as its {result['role']}.{can}"


class PairKioskScreen(ModalScreen[dict[str, Any] | None]):
    """Dismissed with `pair`'s result, or None."""

    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "close", "Close")]

    def __init__(self) -> None:
        super().__init__()
        self.result: dict[str, Any] | None = None

    @property
    def p2pid(self) -> P2pidApp:
        from p2pid.tui.app import P2pidApp

        assert isinstance(self.app, P2pidApp)
        return self.app

    def compose(self) -> ComposeResult:
        with Vertical(id="pair-dialog", classes="dialog"):
            yield Static("Pair with a kiosk", classes="title")
            yield Static(
                "Paste the code under the kiosk's QR code, type the path of a photo of the QR "
                "code, or type the short code (digits) it shows, then press Enter.",
                classes="hint",
            )
            yield JoinInput(placeholder="P2PID:…  or  ~/kiosk.png  or  123456", id="pair-input")
            yield Static("", id="pair-kind", classes="hint", markup=False)
            yield Static("", id="pair-status", markup=False)
            yield Static("", id="pair-error", classes="error", markup=False)
            yield Static("", id="pair-result", markup=False)
            with Horizontal(classes="buttons"):
                yield Button("Close", id="pair-close")
        yield Footer()

    def on_mount(self) -> None:
        self.query_one("#pair-input", Input).focus()

    @on(Input.Changed, "#pair-input")
    def describe_input(self, changed: Input.Changed) -> None:
        kind, value = read_pair_input(changed.value)
        text = {
            "short_code": "a short code",
            "code": "a kiosk code",
            "image": f"an image: {value}",
        }[kind]
        self.query_one("#pair-kind", Static).update(text if value else "")

    @on(Input.Submitted, "#pair-input")
    def submit(self, submitted: Input.Submitted) -> None:
        self.pair(submitted.value)

    @work(exclusive=True, group="pair")
    async def pair(self, text: str) -> None:
        kind, value = read_pair_input(text)
        entry = self.query_one("#pair-input", Input)
        status = self.query_one("#pair-status", Static)
        error = self.query_one("#pair-error", Static)
        error.update("")
        if not value:
            error.update("Type the kiosk's code, the path of a photo of it, or its short code.")
            return
        entry.disabled = True
        try:
            code = await read_code(kind, value, status, error)
            if code is None:
                return
            status.update(
                "Pairing… (if the kiosk already has an owner, they are asked to allow you)"
            )
            params: dict[str, Any] = (
                {"short_code": code} if kind == "short_code" else {"code": code}
            )
            try:
                result = dict(await call_daemon(self.p2pid, "pair", **params))
            except RpcError as failure:
                error.update(f"Could not pair: {failure.message}")
                return
            self.result = result
            entry.value = ""
            self.query_one("#pair-result", Static).update(f"✓ {describe_pairing(result)}")
            self.p2pid.notify(describe_pairing(result), title="Kiosks")
        finally:
            with contextlib.suppress(NoMatches):
                status.update("")
                entry.disabled = False
                entry.focus()

    @on(Button.Pressed, "#pair-close")
    def action_close(self) -> None:
        self.dismiss(self.result)
