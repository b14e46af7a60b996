"""Kiosks: the ones this person paired with (role, online, last seen, health, expiry), pairing
with another (screens/kiosk_pair.py), running a kiosk's routines (screens/kiosk_invoke.py),
logging out of one, and for an owner its guests, a reset, and the approval requests waiting
(screens/kiosk_people.py). The list follows the daemon's kiosk.* events."""

from __future__ import annotations

from collections.abc import Iterable
from typing import ClassVar

import msgspec
from rich.text import Text
from textual import on
from textual.app import ComposeResult, SystemCommand
from textual.binding import Binding, BindingType
from textual.widgets import DataTable, Static

from p2pid.rpc.protocol import RpcError
from p2pid.tui.screens.base import ListingScreen
from p2pid.tui.screens.contact_detail import ConfirmScreen
from p2pid.tui.screens.kiosk_invoke import InvokeRoutineScreen
from p2pid.tui.screens.kiosk_pair import PairKioskScreen
from p2pid.tui.screens.kiosk_people import ApprovalRequest, GuestsScreen, KioskApprovalScreen
from p2pid.tui.widgets.contact_records import WARN, call_daemon, decode_list
from p2pid.tui.widgets.kiosk_table import Kiosk, KioskTable


class KiosksScreen(ListingScreen[Kiosk]):
    SUB_TITLE = "Kiosks"
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("p", "pair", "Pair"),
        Binding("enter", "routines", "Routines", show=False),
        Binding("x,delete", "revoke", "Log out"),
        Binding("g", "guests", "Guests"),
        Binding("R", "reset", "Reset"),
        Binding("a", "approvals", "Approvals"),
    ]

    METHOD = "kiosks"
    RELOAD_ON = frozenset(
        {
            "kiosk.paired",
            "kiosk.revoked",
            "kiosk.approval_requested",
            "kiosk.approved",
            "kiosk.list_changed",
            "kiosk.status",
        }
    )

    def __init__(self) -> None:
        super().__init__(Kiosk, KioskTable)
        self.approvals: list[ApprovalRequest] = []

    def compose_body(self) -> ComposeResult:
        yield Static("", id="kiosks-notice")
        yield KioskTable(id="kiosks")
        yield Static("Connecting to the daemon…", id="kiosks-empty", classes="hint")
        yield Static(
            "p pairs with a kiosk · Enter runs a routine · x logs out of it · "
            "owners: g guests, R reset",
            id="kiosks-keys",
            classes="hint",
        )

    async def fetch(self) -> list[Kiosk] | None:
        kiosks = await super().fetch()
        if kiosks is not None:
            try:
                self.approvals = decode_list(
                    ApprovalRequest, await call_daemon(self.p2pid, "kiosk.approvals", toast=False)
                )
            except (RpcError, msgspec.ValidationError):
                self.approvals = []  # only an owner has any; a daemon without them lists none
        return kiosks

    def show(self, kiosks: list[Kiosk]) -> None:
        self.query_one(KioskTable).show(kiosks)
        empty = self.query_one("#kiosks-empty", Static)
        notice = self.query_one("#kiosks-notice", Static)
        empty.update(
            ""
            if kiosks
            else "No kiosks yet. Press p and type the code a kiosk or TV shows (or its short "
            "code, or the path of a photo of its QR code)."
        )
        empty.display = not kiosks
        approvals = self.approvals
        count = len(approvals)
        notice.update(
            Text(
                f"● {count} approval request{'s' if count != 1 else ''} waiting "
                f"({', '.join(f'{a.person_name} on {a.kiosk_name}' for a in approvals[:2])}): "
                "press a to answer",
                style=WARN,
            )
            if approvals
            else ""
        )
        notice.display = bool(approvals)

    # -- actions -------------------------------------------------------------------------------

    def action_pair(self) -> None:
        if self.ready():
            self.app.push_screen(PairKioskScreen(), callback=lambda _: self.reload())

    @on(DataTable.RowSelected, "#kiosks")
    def _row_selected(self) -> None:
        self.action_routines()

    def action_routines(self, kiosk: Kiosk | None = None) -> None:
        kiosk = kiosk or self.selected()
        if kiosk is not None and self.ready():
            self.app.push_screen(InvokeRoutineScreen(kiosk), callback=lambda _: self.reload())

    def _owner_only(self, kiosk: Kiosk | None, what: str) -> Kiosk | None:
        if kiosk is None:
            return None
        if not kiosk.is_owner:
            self.notify(
                f"Only {kiosk.name}'s owner can {what}; you are a {kiosk.role}.",
                severity="warning",
            )
            return None
        return kiosk if self.ready() else None

    def action_guests(self, kiosk: Kiosk | None = None) -> None:
        kiosk = self._owner_only(kiosk or self.selected(), "see and remove its guests")
        if kiosk is not None:
            self.app.push_screen(GuestsScreen(kiosk), callback=lambda _: self.reload())

    def action_revoke(self, kiosk: Kiosk | None = None) -> None:
        kiosk = kiosk or self.selected()
        if kiosk is None or not self.ready():
            return
        self._confirm(
            kiosk,
            f"Log out of {kiosk.name}?",
            f"{kiosk.name} drops your grant at once and refuses it from then on. To use it "
            "again, pair anew."
            + (
                " You are its owner: it keeps its guests until it is reset."
                if kiosk.is_owner
                else ""
            ),
            "Log out",
            "kiosk.revoke",
            f"You are logged out of {kiosk.name}.",
        )

    def action_reset(self, kiosk: Kiosk | None = None) -> None:
        kiosk = self._owner_only(kiosk or self.selected(), "reset it")
        if kiosk is not None:
            self._confirm(
                kiosk,
                f"Reset {kiosk.name}?",
                f"{kiosk.name} forgets everyone paired with it, you included, and shows a new "
                "pairing code: the next person to pair becomes its owner.",
                "Reset",
                "kiosk.reset",
                f"{kiosk.name} is reset.",
            )

    def _confirm(
        self, kiosk: Kiosk, title: str, body: str, action: str, method: str, done: str
    ) -> None:
        def answered(yes: bool | None) -> None:
            if yes:
                self.run_worker(self._call(method, kiosk, done), group="kiosks-action")

        self.app.push_screen(ConfirmScreen(title, body, action), callback=answered)

    async def _call(self, method: str, kiosk: Kiosk, done: str) -> None:
        try:
            await call_daemon(self.p2pid, method, kiosk=kiosk.peer_id)
        except RpcError:
            return  # the app said why in a toast; nothing changed
        self.notify(done, title="Kiosks")
        self.reload()

    def action_approvals(self) -> None:
        if not self.approvals:
            self.notify("No approval requests waiting.")
            return
        self._ask(list(self.approvals))

    def _ask(self, pending: list[ApprovalRequest]) -> None:
        """One request after another, until the list ends or one is left for later."""
        first, rest = pending[0], pending[1:]

        def answered(answer: bool | None) -> None:
            self.reload()
            if answer is not None and rest:
                self._ask(rest)

        self.app.push_screen(KioskApprovalScreen(first), callback=answered)

    def commands(self) -> Iterable[SystemCommand]:
        yield SystemCommand(
            "Pair with a kiosk",
            "its code, a photo of its QR code, or its short code",
            self.action_pair,
        )
        if self.approvals:
            yield SystemCommand(
                "Kiosk approval requests",
                f"{len(self.approvals)} waiting: allow or deny",
                self.action_approvals,
            )
        for kiosk in self.records:
            yield SystemCommand(
                f"Run a routine on {kiosk.name}",
                ", ".join(r.name for r in kiosk.allowed_routines()) or "none allowed",
                lambda kiosk=kiosk: self.action_routines(kiosk),
            )
            yield SystemCommand(
                f"Log out of {kiosk.name}",
                "the kiosk drops your grant",
                lambda kiosk=kiosk: self.action_revoke(kiosk),
            )
            if kiosk.is_owner:
                yield SystemCommand(
                    f"Guests of {kiosk.name}",
                    "who is paired with it; remove one",
                    lambda kiosk=kiosk: self.action_guests(kiosk),
                )
                yield SystemCommand(
                    f"Reset {kiosk.name}",
                    "it forgets everyone; the next to pair owns it",
                    lambda kiosk=kiosk: self.action_reset(kiosk),
                )
