"""SAS verification with one contact, as a modal that follows the verification to its end.

Stages: asking (the other person must accept on their device; or, for their request, accepting
it), compare (the code is shown: "They match" / "They differ"), confirmed (waiting for their
answer), done. The daemon's events move it on as well as the RPC answers, so it follows when the
other side answers first (a "they differ" over there ends it here too).

`verify.start` returns only once the other person accepted, and the id it returns is the only
handle to cancel by: it runs on the app, not on this modal, so that when the modal is closed
before the answer, the verification is still cancelled once it starts.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import msgspec
from textual import on, work
from textual.app import ComposeResult, SystemCommand
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.css.query import NoMatches
from textual.screen import ModalScreen
from textual.widgets import Button, Footer, Static

from p2pid.rpc.protocol import RpcError
from p2pid.tui.widgets.contact_records import call_daemon, decode, decode_list
from p2pid.tui.widgets.sas_code import SasCode, outcome_text
from p2pid.wire.verification import VerificationOutcome, VerificationView

if TYPE_CHECKING:
    from p2pid.tui.app import P2pidApp

Stage = Literal["asking", "compare", "confirmed", "done"]


class VerifyScreen(ModalScreen[bool]):
    """Dismissed True if the contact ended verified."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("y", "answer(True)", "They match"),
        Binding("n", "answer(False)", "They differ"),
        Binding("escape", "close", "Cancel / close"),
    ]

    def __init__(self, identity_id: str, name: str) -> None:
        super().__init__()
        self.identity_id = identity_id
        self.contact_name = name
        self.verification_id: str | None = None
        self.stage: Stage = "asking"
        self.outcome: VerificationOutcome | None = None
        self.abandoned = False

    @property
    def p2pid(self) -> P2pidApp:
        from p2pid.tui.app import P2pidApp

        assert isinstance(self.app, P2pidApp)
        return self.app

    def compose(self) -> ComposeResult:
        with Vertical(id="sas-dialog", classes="dialog"):
            yield Static(f"Verify {self.contact_name}", classes="title")
            yield Static(
                f"Asking {self.contact_name} to compare codes. They accept on their device "
                "(in p2pid: F3, select you, v).",
                id="sas-status",
            )
            yield SasCode(id="sas-code")
            yield Static("", id="sas-result")
            with Horizontal(classes="buttons", id="sas-buttons"):
                yield Button("They match", variant="success", id="sas-match", disabled=True)
                yield Button("They differ", variant="error", id="sas-differ", disabled=True)
                yield Button("Cancel", id="sas-close")
        yield Footer()

    def on_mount(self) -> None:
        self.query_one(SasCode).display = False
        self.query_one("#sas-result").display = False
        self.p2pid.daemon_events.subscribe(self, self._daemon_event)
        # On the app: it must outlive this modal (see the module's docstring).
        self.p2pid.run_worker(self._start(), group="sas-start", exit_on_error=False)

    # -- the verification's progress ---------------------------------------------------------

    async def _start(self) -> None:
        if await self._they_asked():
            self._say(
                f"{self.contact_name} asked to compare codes with you: accepting their request…"
            )
        try:
            result = await call_daemon(self.p2pid, "verify.start", contact=self.identity_id)
        except RpcError as error:
            self._finish_with_error(error.message)
            return
        view = decode(VerificationView, result)
        if self.abandoned:
            await self._cancel(view.verification_id)
            return
        self._show_code(view.verification_id, view.emoji, view.decimals)

    async def _they_asked(self) -> bool:
        """Whether this contact's own request waits here (then `verify.start` accepts it)."""
        try:
            pending = decode_list(
                VerificationView,
                await call_daemon(self.p2pid, "verifications", toast=False),
            )
        except (RpcError, msgspec.ValidationError):
            return False
        return any(v.incoming and v.identity_id == self.identity_id for v in pending)

    def _say(self, text: str) -> None:
        if self.stage == "asking" and self.is_attached:
            with contextlib.suppress(NoMatches):
                self.query_one("#sas-status", Static).update(text)

    def _daemon_event(self, event: dict[str, Any]) -> None:
        if event.get("identity_id") != self.identity_id or not self.is_attached:
            return
        verification_id = event.get("verification_id")
        if self.verification_id is not None and verification_id != self.verification_id:
            return
        kind = event.get("type")
        if kind == "verification.keys_ready" and self.stage == "asking":
            emoji = [(str(symbol), str(name)) for symbol, name in event.get("emoji", [])]
            self._show_code(str(verification_id), emoji, list(event.get("decimals", [])))
        elif kind == "verification.done" and self.stage != "done":
            self._finish(decode(VerificationOutcome, event))

    def _show_code(
        self, verification_id: str, emoji: list[tuple[str, str]], decimals: list[int]
    ) -> None:
        if self.stage != "asking" or not self.is_attached:
            return
        self.verification_id = verification_id
        self.stage = "compare"
        try:
            code = self.query_one(SasCode)
            code.show(emoji, decimals)
            code.display = True
            self.query_one("#sas-status", Static).update(
                f"Compare with what {self.contact_name} sees on their screen, together (in "
                "person or on a call you trust). The emoji or the numbers: either is enough."
            )
            for button in ("#sas-match", "#sas-differ"):
                self.query_one(button, Button).disabled = False
            self.query_one("#sas-match", Button).focus()
        except NoMatches:
            pass

    def _finish(self, outcome: VerificationOutcome) -> None:
        self.outcome = outcome
        self._done(outcome_text(outcome), good=outcome.verified)

    def _finish_with_error(self, message: str) -> None:
        if self.stage != "done":
            self._done(f"✗ {message}", good=False)

    def _done(self, text: str, good: bool) -> None:
        self.stage = "done"
        if not self.is_attached:
            return
        try:
            result = self.query_one("#sas-result", Static)
            result.update(text)
            result.display = True
            result.set_class(good, "good")
            result.set_class(not good, "bad")
            self.query_one("#sas-status", Static).update("")
            for button in ("#sas-match", "#sas-differ"):
                self.query_one(button, Button).display = False
            close = self.query_one("#sas-close", Button)
            close.label = "Close"
            close.focus()
        except NoMatches:
            pass

    # -- the person's answers ------------------------------------------------------------------

    def action_answer(self, matches: bool) -> None:
        if self.stage != "compare" or self.verification_id is None:
            return
        self.stage = "confirmed"
        try:
            for button in ("#sas-match", "#sas-differ"):
                self.query_one(button, Button).disabled = True
            self.query_one("#sas-status", Static).update(
                f"Waiting for {self.contact_name} to answer on their side…"
                if matches
                else "Telling them the codes differ…"
            )
        except NoMatches:
            pass
        self._confirm(self.verification_id, matches)

    @on(Button.Pressed, "#sas-match")
    def _match(self) -> None:
        self.action_answer(True)

    @on(Button.Pressed, "#sas-differ")
    def _differ(self) -> None:
        self.action_answer(False)

    @work(exclusive=True, group="sas-confirm")
    async def _confirm(self, verification_id: str, matches: bool) -> None:
        try:
            result = await call_daemon(
                self.p2pid, "verify.confirm", verification_id=verification_id, matches=matches
            )
        except RpcError as error:
            self._finish_with_error(error.message)
            return
        if self.stage != "done":
            self._finish(decode(VerificationOutcome, result))

    @on(Button.Pressed, "#sas-close")
    def action_close(self) -> None:
        if self.stage != "done":
            self.abandoned = True
            if self.verification_id is not None:
                verification_id = self.verification_id
                self.p2pid.run_worker(
                    self._cancel(verification_id), group="sas-cancel", exit_on_error=False
                )
        self.dismiss(self.outcome is not None and self.outcome.verified)

    async def _cancel(self, verification_id: str) -> None:
        with contextlib.suppress(RpcError):
            await call_daemon(self.p2pid, "verify.cancel", verification_id=verification_id)

    def commands(self) -> Iterable[SystemCommand]:
        if self.stage == "compare":
            yield SystemCommand("They match", "the codes are the same here and there", self._match)
            yield SystemCommand("They differ", "the codes are not the same", self._differ)
        label = "Close" if self.stage == "done" else "Cancel the verification"
        yield SystemCommand(label, f"verifying {self.contact_name}", self.action_close)
