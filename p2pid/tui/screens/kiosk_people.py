"""Who may use a kiosk: the guests of a kiosk I own (remove one), and the approval requests its
owner answers ("Allow <person> on <kiosk>?"), which the daemon pushes as
`kiosk.approval_requested` and lists with `kiosk.approvals`."""

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
from textual.widgets import Button, DataTable, Footer, Static

from p2pid.rpc.protocol import RpcError
from p2pid.tui.screens.contact_detail import ConfirmScreen
from p2pid.tui.widgets.contact_records import GOOD, call_daemon, decode_list, format_time
from p2pid.tui.widgets.kiosk_table import Kiosk

if TYPE_CHECKING:
    from p2pid.tui.app import P2pidApp


class Guest(msgspec.Struct, frozen=True):
    identity_id: str
    name: str
    role: str
    paired_at_ms: int


class ApprovalRequest(msgspec.Struct, frozen=True):
    request_id: str
    kiosk_peer_id: str
    kiosk_name: str
    person_name: str
    person_identity_id: str


def short_identity(identity_id: str) -> str:
    return identity_id[:12]


def _app(screen: ModalScreen[Any]) -> P2pidApp:
    from p2pid.tui.app import P2pidApp

    assert isinstance(screen.app, P2pidApp)
    return screen.app


class GuestsScreen(ModalScreen[None]):
    """The people paired with a kiosk I own; x removes the highlighted guest."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("x,delete", "remove", "Remove guest"),
        Binding("escape", "close", "Close"),
    ]

    def __init__(self, kiosk: Kiosk) -> None:
        super().__init__()
        self.kiosk = kiosk
        self.guests: list[Guest] = []
        self.loaded = False

    def compose(self) -> ComposeResult:
        with Vertical(id="guests-dialog", classes="dialog"):
            yield Static(f"People paired with {self.kiosk.name}", classes="title", markup=False)
            yield Static("x removes the highlighted guest.", classes="hint")
            yield DataTable[str | Text](id="guests", cursor_type="row", zebra_stripes=True)
            yield Static("", id="guests-empty", classes="hint")
            with Horizontal(classes="buttons"):
                yield Button("Close", id="guests-close")
        yield Footer()

    def on_mount(self) -> None:
        table = self.query_one("#guests", DataTable)
        table.add_column("Name", key="name")
        table.add_column("Role", key="role")
        table.add_column("Identity", key="identity")
        table.add_column("Paired", key="paired")
        table.focus()
        self.reload()

    @work(exclusive=True, group="guests")
    async def reload(self) -> None:
        try:
            guests = decode_list(
                Guest, await call_daemon(_app(self), "kiosk.guests", kiosk=self.kiosk.peer_id)
            )
        except (RpcError, msgspec.ValidationError):
            return
        self.guests = sorted(guests, key=lambda g: (g.role != "owner", g.name.casefold()))
        try:
            table = self.query_one("#guests", DataTable)
            empty = self.query_one("#guests-empty", Static)
        except NoMatches:
            return
        table.clear()
        for guest in self.guests:
            table.add_row(
                Text(guest.name, style="bold"),
                Text(guest.role, style=GOOD if guest.role == "owner" else ""),
                short_identity(guest.identity_id),
                format_time(guest.paired_at_ms),
                key=guest.identity_id,
            )
        empty.update("" if self.guests else "Nobody else is paired with it.")
        self.loaded = True

    def selected(self) -> Guest | None:
        table = self.query_one("#guests", DataTable)
        if not table.row_count:
            return None
        key = table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value
        return next((g for g in self.guests if g.identity_id == key), None)

    def action_remove(self, guest: Guest | None = None) -> None:
        guest = guest or self.selected()
        if guest is None:
            return
        if guest.role == "owner":
            self.notify("That is the owner: reset the kiosk to let it go.", severity="warning")
            return
        confirm = ConfirmScreen(
            f"Remove {guest.name} from {self.kiosk.name}?",
            f"{guest.name} can no longer use {self.kiosk.name}; they can ask to pair again.",
            "Remove",
        )

        def answered(yes: bool | None) -> None:
            if yes:
                self.run_worker(self._remove(guest), group="guests-remove")

        self.app.push_screen(confirm, callback=answered)

    async def _remove(self, guest: Guest) -> None:
        try:
            await call_daemon(
                _app(self), "kiosk.remove_guest", kiosk=self.kiosk.peer_id, guest=guest.identity_id
            )
        except RpcError:
            return
        self.notify(f"{guest.name} is removed from {self.kiosk.name}.", title="Kiosks")
        self.reload()

    @on(Button.Pressed, "#guests-close")
    def action_close(self) -> None:
        self.dismiss(None)

    def commands(self) -> Iterable[SystemCommand]:
        for guest in self.guests:
            if guest.role != "owner":
                yield SystemCommand(
                    f"Remove guest {guest.name}",
                    f"from {self.kiosk.name}",
                    lambda guest=guest: self.action_remove(guest),
                )
        yield SystemCommand("Close", f"the people of {self.kiosk.name}", self.action_close)


class KioskApprovalScreen(ModalScreen[bool | None]):
    """ "Allow <person> on <kiosk>?": dismissed True / False once answered, None when closed
    unanswered (the request stays pending: the kiosks section lists it)."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("y", "answer(True)", "Allow"),
        Binding("n", "answer(False)", "Deny"),
        Binding("escape", "later", "Later"),
    ]

    def __init__(self, request: ApprovalRequest) -> None:
        super().__init__()
        self.request = request
        self.answering = False

    def compose(self) -> ComposeResult:
        request = self.request
        with Vertical(classes="dialog confirm-dialog", id="approval-dialog"):
            yield Static(
                f"Allow {request.person_name} on {request.kiosk_name}?",
                classes="title",
                markup=False,
            )
            yield Static(
                f"{request.person_name} ({short_identity(request.person_identity_id)}) is pairing "
                f"with {request.kiosk_name}, which you own. Allowed, they become a guest and may "
                "run the routines the kiosk allows guests.",
                classes="hint",
                markup=False,
            )
            with Horizontal(classes="buttons"):
                yield Button("Allow (y)", variant="success", id="approval-allow")
                yield Button("Deny (n)", variant="error", id="approval-deny")
                yield Button("Later", id="approval-later")
        yield Footer()

    def on_mount(self) -> None:
        self.query_one("#approval-later", Button).focus()

    @on(Button.Pressed, "#approval-allow")
    def _allow(self) -> None:
        self.action_answer(True)

    @on(Button.Pressed, "#approval-deny")
    def _deny(self) -> None:
        self.action_answer(False)

    @on(Button.Pressed, "#approval-later")
    def action_later(self) -> None:
        self.dismiss(None)

    def action_answer(self, accept: bool) -> None:
        if not self.answering:
            self.answering = True
            self._answer(accept)

    @work(exclusive=True, group="approval")
    async def _answer(self, accept: bool) -> None:
        request = self.request
        try:
            await call_daemon(
                _app(self), "kiosk.approve", request_id=request.request_id, accept=accept
            )
        except RpcError:
            self.answering = False
            return  # toasted; the request stays pending
        verdict = "allowed" if accept else "denied"
        self.notify(f"{request.person_name} {verdict} on {request.kiosk_name}.", title="Kiosks")
        self.dismiss(accept)

    def commands(self) -> Iterable[SystemCommand]:
        request = self.request
        yield SystemCommand(f"Allow {request.person_name}", f"on {request.kiosk_name}", self._allow)
        yield SystemCommand(f"Deny {request.person_name}", f"on {request.kiosk_name}", self._deny)
        yield SystemCommand("Later", "answer this request later", self.action_later)


def ask_approval(app: P2pidApp, event: dict[str, Any]) -> None:
    """A `kiosk.approval_requested` event: ask now, wherever the person is (once per request)."""
    try:
        request = msgspec.convert(event, ApprovalRequest)
    except msgspec.ValidationError:
        return
    for screen in app.screen_stack:
        if isinstance(screen, KioskApprovalScreen) and screen.request == request:
            return
    app.push_screen(KioskApprovalScreen(request))
