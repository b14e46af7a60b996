"""Contacts: the list (verified or not, online or not, blocked, identity changes), and from it a
contact's detail, rename, block, remove, SAS verification, and the contact requests waiting."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, ClassVar

import msgspec
from rich.text import Text
from textual import on
from textual.app import ComposeResult, SystemCommand
from textual.binding import Binding, BindingType
from textual.css.query import NoMatches
from textual.widgets import DataTable, Static

from p2pid.rpc.protocol import RpcError
from p2pid.tui.screens.base import SectionScreen
from p2pid.tui.screens.contact_detail import ContactActions, ContactDetailScreen
from p2pid.tui.screens.requests import RequestsScreen
from p2pid.tui.widgets.contact_records import (
    BAD,
    WARN,
    Coalesced,
    call_daemon,
    contacts_by_peer,
    decode_list,
)
from p2pid.tui.widgets.contact_table import ContactTable
from p2pid.wire.api import ContactSummary
from p2pid.wire.contact_request import ContactRequestSummary
from p2pid.wire.verification import VerificationState, VerificationView

# Events after which the list may read differently.
RELOAD_ON = frozenset(
    {
        "contact.added",
        "contact.identity_changed",
        "contact.profile_updated",
        "contact_request.received",
        "contact_request.answered",
        "contact_request.accepted",
        "verification.requested",
        "verification.done",
        "peer.connected",
        "peer.disconnected",
    }
)


class ContactsScreen(SectionScreen, ContactActions[None]):
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("a", "requests", "Requests"),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.reload = Coalesced(self, self._load, "contacts-load")
        self.requests: list[ContactRequestSummary] = []
        self.asking: dict[str, VerificationView] = {}  # incoming, not accepted yet

    def compose_body(self) -> ComposeResult:
        yield Static("", id="contacts-notice")
        yield Static("", id="contacts-warning")
        yield ContactTable(id="contacts")
        yield Static("Connecting to the daemon…", id="contacts-empty", classes="hint")

    # -- loading -------------------------------------------------------------------------------

    async def on_connected(self) -> None:
        self.reload()

    async def on_daemon_event(self, event: dict[str, Any]) -> None:
        kind = str(event.get("type", ""))
        if kind not in RELOAD_ON:
            return
        if kind.startswith("peer.") and not self._is_contact_device(event.get("peer_id")):
            return  # someone else's device came or went
        self.reload()

    def _is_contact_device(self, peer_id: object) -> bool:
        try:
            contacts = self.query_one(ContactTable).contacts
        except NoMatches:
            return False
        return peer_id in contacts_by_peer(contacts)

    def on_screen_resume(self) -> None:
        """Back from a dialog (detail, rename, verification, requests): show what changed."""
        if self.p2pid.connected:
            self.reload()

    async def _load(self) -> None:
        if not self.p2pid.connected:
            return
        try:
            contacts = decode_list(
                ContactSummary, await call_daemon(self.p2pid, "contacts", toast=False)
            )
            requests = decode_list(
                ContactRequestSummary,
                await call_daemon(self.p2pid, "requests", toast=False, state="pending"),
            )
            verifications = decode_list(
                VerificationView, await call_daemon(self.p2pid, "verifications", toast=False)
            )
        except (RpcError, msgspec.ValidationError) as error:
            self.notify(f"cannot list contacts: {error}", severity="error")
            return
        self.requests = requests
        self.asking = {
            v.identity_id: v
            for v in verifications
            if v.incoming and v.state is VerificationState.REQUESTED
        }
        if self.is_attached:
            self._show(contacts)

    def _show(self, contacts: list[ContactSummary]) -> None:
        try:
            table = self.query_one(ContactTable)
            notice = self.query_one("#contacts-notice", Static)
            warning = self.query_one("#contacts-warning", Static)
            empty = self.query_one("#contacts-empty", Static)
        except NoMatches:
            return
        table.show(contacts, self.asking.keys())
        lines = Text()
        if self.requests:
            count = len(self.requests)
            names = ", ".join(r.name for r in self.requests[:3])
            lines.append(
                f"● {count} contact request{'s' if count != 1 else ''} waiting ({names}): "
                "press a to answer",
                style=WARN,
            )
        for view in self.asking.values():
            lines.append(
                ("\n" if lines else "")
                + f"● {view.name} asks to verify you: select them and press v",
                style=WARN,
            )
        notice.update(lines)
        notice.display = bool(lines)
        changed = [c.name for c in contacts if c.identity_changed]
        warning.update(
            Text(
                f"⚠ Identity changed: {', '.join(changed)}. A device presented another "
                "identity key; it was not accepted. Open the contact for what to do.",
                style=BAD,
            )
            if changed
            else ""
        )
        warning.display = bool(changed)
        empty.update(
            ""
            if contacts
            else "No contacts yet. Show your invite QR (F4), join with someone's code (F5), "
            "or find people nearby (F7)."
        )
        empty.display = not contacts
        table.display = bool(contacts)

    # -- actions -------------------------------------------------------------------------------

    def current_contact(self) -> ContactSummary | None:
        try:
            return self.query_one(ContactTable).selected
        except NoMatches:
            return None

    def contact_changed(self, identity_id: str, removed: bool = False) -> None:
        if self.is_attached:
            self.reload()

    @on(DataTable.RowSelected, "#contacts")
    def action_open(self) -> None:
        contact = self.current_contact()
        if contact is not None:
            self.app.push_screen(ContactDetailScreen(contact))

    def action_requests(self) -> None:
        self.app.push_screen(RequestsScreen())

    def commands(self) -> Iterable[SystemCommand]:
        count = len(self.requests)
        yield SystemCommand(
            "Contact requests",
            f"{count} waiting: accept or decline" if count else "none waiting; answered ones",
            self.action_requests,
        )
        selected = self.current_contact()
        if selected is not None:
            yield from self.contact_actions(selected)
        try:
            contacts = self.query_one(ContactTable).contacts
        except NoMatches:
            return
        for contact in contacts:
            yield SystemCommand(
                f"Open {contact.name}",
                "fingerprint, devices, shared fields, verified state",
                lambda contact=contact: self.app.push_screen(ContactDetailScreen(contact)),
            )
