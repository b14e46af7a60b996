"""Contact requests people sent this node (no invite): accept or decline each."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, ClassVar

from rich.text import Text
from textual import work
from textual.app import ComposeResult, SystemCommand
from textual.binding import Binding, BindingType
from textual.containers import Vertical
from textual.css.query import NoMatches
from textual.screen import ModalScreen
from textual.widgets import DataTable, Footer, Static

from p2pid.rpc.protocol import RpcError
from p2pid.tui.widgets.contact_records import (
    DIM,
    GOOD,
    WARN,
    call_daemon,
    decode_list,
    format_time,
    short_peer,
)
from p2pid.wire.contact_request import ContactRequestSummary

if TYPE_CHECKING:
    from p2pid.tui.app import P2pidApp

_STATE_STYLES = {"pending": WARN, "accepted": GOOD, "declined": DIM, "replaced": DIM}


class RequestsScreen(ModalScreen[None]):
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("a", "accept", "Accept"),
        Binding("d", "decline", "Decline"),
        Binding("h", "toggle_history", "Answered too"),
        Binding("escape", "close", "Close"),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.requests: dict[str, ContactRequestSummary] = {}
        self.show_answered = False

    @property
    def p2pid(self) -> P2pidApp:
        from p2pid.tui.app import P2pidApp

        assert isinstance(self.app, P2pidApp)
        return self.app

    def compose(self) -> ComposeResult:
        with Vertical(id="requests-dialog", classes="dialog"):
            yield Static("Contact requests", classes="title")
            yield Static(
                "People who asked to become contacts without an invite. Accepting makes them an "
                "unverified contact: compare codes with them (v) before trusting it.",
                classes="hint",
            )
            yield DataTable(id="requests", cursor_type="row", zebra_stripes=True)
            yield Static("", id="requests-empty", classes="hint")
        yield Footer()

    def on_mount(self) -> None:
        table = self.query_one("#requests", DataTable)
        table.add_column("From", key="name")
        table.add_column("Note", key="note")
        table.add_column("Device", key="peer")
        table.add_column("Received", key="received")
        table.add_column("State", key="state")
        self.p2pid.daemon_events.subscribe(self, self._daemon_event)
        self.reload()

    def _daemon_event(self, event: dict[str, Any]) -> None:
        if str(event.get("type", "")).startswith("contact_request.") and self.is_attached:
            self.reload()

    @work(exclusive=True, group="requests-load")
    async def reload(self) -> None:
        state = None if self.show_answered else "pending"
        try:
            found = decode_list(
                ContactRequestSummary, await call_daemon(self.p2pid, "requests", state=state)
            )
        except RpcError:
            return
        if self.is_attached:
            self._show(found)

    def _show(self, found: list[ContactRequestSummary]) -> None:
        try:
            table = self.query_one("#requests", DataTable)
            empty = self.query_one("#requests-empty", Static)
        except NoMatches:
            return
        selected = self.selected
        table.clear()
        self.requests = {str(r.request_id): r for r in found}
        for request in sorted(found, key=lambda r: r.received_at_ms, reverse=True):
            table.add_row(
                Text(request.name, style="bold"),
                Text(request.note or "—", style="" if request.note else DIM),
                short_peer(request.peer_id),
                format_time(request.received_at_ms),
                Text(request.state, style=_STATE_STYLES.get(request.state, "")),
                key=str(request.request_id),
            )
        if selected is not None and str(selected.request_id) in self.requests:
            table.move_cursor(row=table.get_row_index(str(selected.request_id)), animate=False)
        empty.update(
            ""
            if found
            else "No contact requests waiting. Someone nearby can send you one from their "
            "Nearby section (F7)."
        )
        table.display = bool(found)

    @property
    def selected(self) -> ContactRequestSummary | None:
        try:
            table = self.query_one("#requests", DataTable)
        except NoMatches:
            return None
        if not table.row_count:
            return None
        key = table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value
        return self.requests.get(key or "")

    def _pending_selected(self) -> ContactRequestSummary | None:
        request = self.selected
        if request is None:
            return None
        if request.state != "pending":
            self.notify(f"{request.name}'s request is already {request.state}")
            return None
        return request

    def action_accept(self) -> None:
        request = self._pending_selected()
        if request is not None:
            self._answer(request, accept=True)

    def action_decline(self) -> None:
        request = self._pending_selected()
        if request is not None:
            self._answer(request, accept=False)

    @work(group="requests-answer")
    async def _answer(self, request: ContactRequestSummary, accept: bool) -> None:
        method = "request.accept" if accept else "request.decline"
        try:
            await call_daemon(self.p2pid, method, request_id=request.request_id)
        except RpcError:
            self.reload()  # an accept can be stored yet not delivered: show what is
            return
        if accept:
            self.notify(
                f"{request.name} is now a contact (unverified: select them and press v)",
                title="Accepted",
            )
        else:
            self.notify(f"declined {request.name}'s request")
        if self.is_attached:
            self.reload()

    def action_toggle_history(self) -> None:
        self.show_answered = not self.show_answered
        self.reload()

    def action_close(self) -> None:
        self.dismiss(None)

    def commands(self) -> Iterable[SystemCommand]:
        request = self.selected
        if request is not None and request.state == "pending":
            yield SystemCommand(
                f"Accept {request.name}", "make them an unverified contact", self.action_accept
            )
            yield SystemCommand(f"Decline {request.name}", "they are not told", self.action_decline)
        yield SystemCommand(
            "Show answered requests too" if not self.show_answered else "Only pending requests",
            "toggle the history",
            self.action_toggle_history,
        )
        yield SystemCommand("Close requests", "back to the contacts", self.action_close)
