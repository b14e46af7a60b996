"""Nearby: p2pid peers found on this network over mDNS, with one action each: send a contact
request (with an optional note), or switch to my invite QR for them to scan."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, ClassVar

import msgspec
from rich.text import Text
from textual import on, work
from textual.app import ComposeResult, SystemCommand
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.css.query import NoMatches
from textual.screen import ModalScreen
from textual.widgets import Button, DataTable, Footer, Input, Label, Static

from p2pid.rpc.protocol import RpcError
from p2pid.tui.screens.base import SectionScreen
from p2pid.tui.widgets.contact_records import (
    WARN,
    Coalesced,
    call_daemon,
    contacts_by_peer,
    decode,
    decode_list,
    short_peer,
)
from p2pid.tui.widgets.peer_table import PeerTable, peer_name
from p2pid.wire.api import ContactSummary, NodeStatus, PeerSummary
from p2pid.wire.contact_request import MAX_NOTE_CHARS

RELOAD_ON = frozenset(
    {
        "peer.discovered",
        "peer.lost",
        "peer.connected",
        "peer.disconnected",
        "contact.added",
        "contact_request.accepted",
    }
)


class RequestNoteScreen(ModalScreen[str | None]):
    """The note sent with a contact request; dismissed with it (maybe empty), or None."""

    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "cancel", "Cancel")]

    def __init__(self, name: str, peer_id: str) -> None:
        super().__init__()
        self.peer_label = name
        self.peer_id = peer_id

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog", id="request-dialog"):
            yield Static(f"Ask {self.peer_label} to become contacts", classes="title")
            yield Static(
                f"Device {short_peer(self.peer_id)}. They see your name and this note, and "
                "accept or decline. You become contacts, unverified until you compare codes.",
                classes="hint",
            )
            yield Label("Note (optional)")
            yield Input(
                placeholder="e.g. we met at the meetup", max_length=MAX_NOTE_CHARS, id="note"
            )
            with Horizontal(classes="buttons"):
                yield Button("Send request", variant="primary", id="request-send")
                yield Button("Cancel", id="request-cancel")
        yield Footer()

    @on(Input.Submitted)
    @on(Button.Pressed, "#request-send")
    def send(self) -> None:
        self.dismiss(self.query_one("#note", Input).value)

    @on(Button.Pressed, "#request-cancel")
    def action_cancel(self) -> None:
        self.dismiss(None)

    def commands(self) -> Iterable[SystemCommand]:
        yield SystemCommand("Send request", f"to {self.peer_label}", self.send)
        yield SystemCommand("Cancel", "send nothing", self.action_cancel)


class NearbyScreen(SectionScreen):
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("i", "invite", "Show my invite"),
        Binding("k", "toggle_known", "Known peers too"),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.reload = Coalesced(self, self._load, "nearby-load")
        self.show_known = False
        self.contacts: dict[str, ContactSummary] = {}  # by device PeerId
        self.peers: list[PeerSummary] = []

    def compose_body(self) -> ComposeResult:
        yield Static("", id="nearby-notice")
        yield PeerTable(id="peers")
        yield Static("Connecting to the daemon…", id="nearby-empty", classes="hint")

    async def on_connected(self) -> None:
        self.reload()

    def on_screen_resume(self) -> None:
        """Back to this section (or from a dialog): show what changed meanwhile."""
        if self.p2pid.connected:
            self.reload()

    async def on_daemon_event(self, event: dict[str, Any]) -> None:
        if event.get("type") in RELOAD_ON:
            self.reload()

    async def _load(self) -> None:
        if not self.p2pid.connected:
            return
        try:
            status = decode(NodeStatus, await call_daemon(self.p2pid, "status", toast=False))
            peers = decode_list(PeerSummary, await call_daemon(self.p2pid, "peers", toast=False))
            contacts = decode_list(
                ContactSummary, await call_daemon(self.p2pid, "contacts", toast=False)
            )
        except (RpcError, msgspec.ValidationError) as error:
            self.notify(f"cannot list peers: {error}", severity="error")
            return
        self.contacts = contacts_by_peer(contacts)
        self.peers = peers
        if self.is_attached:
            self._show(status)

    def _show(self, status: NodeStatus) -> None:
        shown = [p for p in self.peers if p.discovered or self.show_known]
        try:
            notice = self.query_one("#nearby-notice", Static)
            table = self.query_one(PeerTable)
            empty = self.query_one("#nearby-empty", Static)
        except NoMatches:
            return
        if status.mdns:
            notice.update(
                "Looking for p2pid on this network (mDNS). Enter asks a peer to become "
                "contacts; i shows your invite QR for them to scan."
            )
        else:
            notice.update(
                Text(
                    "mDNS discovery is off in this daemon (started with --no-mdns): nobody "
                    "nearby will be found. k lists the peers it knows of.",
                    style=WARN,
                )
            )
        table.show(shown, self.contacts)
        table.display = bool(shown)
        if shown:
            empty.update("")
        elif self.show_known:
            empty.update("No peers known yet.")
        else:
            empty.update(
                "Nobody found nearby yet. Others appear here when their p2pid runs on this "
                "network. k lists the peers this node knows of."
            )
        empty.display = not shown

    def _selected(self) -> PeerSummary | None:
        try:
            return self.query_one(PeerTable).selected
        except NoMatches:
            return None

    @on(DataTable.RowSelected, "#peers")
    def action_request(self) -> None:
        peer = self._selected()
        if peer is None:
            return
        contact = self.contacts.get(peer.peer_id)
        if contact is not None:
            self.notify(f"{short_peer(peer.peer_id)} is a device of your contact {contact.name}")
            return
        name = peer_name(peer)

        def noted(note: str | None) -> None:
            if note is not None:
                self._send_request(peer.peer_id, name, note)

        self.app.push_screen(RequestNoteScreen(name, peer.peer_id), callback=noted)

    @work(group="nearby-request")
    async def _send_request(self, peer_id: str, name: str, note: str) -> None:
        try:
            await call_daemon(self.p2pid, "contact.request", peer=peer_id, note=note)
        except RpcError:
            return
        self.notify(
            "They see it in their contact requests; you hear back when they accept.",
            title=f"Request sent to {name}",
        )

    def action_invite(self) -> None:
        self.app.switch_mode("invite")

    def action_toggle_known(self) -> None:
        self.show_known = not self.show_known
        self.reload()

    def commands(self) -> Iterable[SystemCommand]:
        peer = self._selected()
        if peer is not None and peer.peer_id not in self.contacts:
            yield SystemCommand(
                f"Contact request to {peer_name(peer)}",
                "ask them to become contacts, with a note",
                self.action_request,
            )
        yield SystemCommand("Show my invite", "a QR code for them to scan", self.action_invite)
        yield SystemCommand(
            "Only peers nearby" if self.show_known else "Known peers too",
            "which peers the Nearby list shows",
            self.action_toggle_known,
        )
