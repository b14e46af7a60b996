"""My invite (a QR code to scan, the same code as text, the live invites) and joining one.

The invite screen makes an invite when it is shown and none of its own is live (n makes another),
draws it as a QR code in explicit black and white with its quiet zone beside the text code, its
expiry and its uses, and lists the live invites (Enter shows one, x cancels it). When the terminal
is too small for the QR code it says so, and how large it must be; the text code stays. The fit is
checked again on every resize.

The join screen takes a pasted code or the path of an image of a QR code. The daemon takes codes,
not images: an image is decoded here, in the TUI's process, with zxing-cpp (p2pid.qr), and the
code it holds is joined. Errors (a forged, expired or used-up code, an unreadable image) are shown
on the screen; nothing changes then.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable
from typing import Any, ClassVar

from textual import events, on, work
from textual.app import ComposeResult, SystemCommand
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.geometry import Size
from textual.widgets import Input, OptionList, Static
from textual.widgets.option_list import Option

from p2pid.rpc.protocol import RpcError
from p2pid.tui.screens.base import SectionScreen
from p2pid.tui.widgets.invite_join_input import JoinInput, read_code, read_join_input
from p2pid.tui.widgets.qr_view import QrView

# The narrowest the column beside the QR code may be (the text code wraps in it).
SIDE_MIN_WIDTH = 26
EXPIRY_CHECK_SECONDS = 10.0
NEW_INVITE_USES = 1  # the daemon's default lifetime (a day) applies

_NOT_LIVE = {
    "spent": "This invite is used up",
    "cancelled": "This invite was cancelled",
    "expired": "This invite has expired",
}


def format_time(unix_seconds: int) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(unix_seconds))


def describe_uses(uses_left: int, max_uses: int) -> str:
    if max_uses == 1:
        return "single use"
    return f"{uses_left} of {max_uses} uses left"


class InviteBody(Horizontal):
    """The QR code beside the text column; the text column alone, with a note on the size the
    terminal needs, when the QR code does not fit."""

    def on_resize(self, event: events.Resize) -> None:
        self.refit()

    def refit(self) -> None:
        qr = self.query_one("#invite-qr", QrView)
        note = self.query_one("#invite-fit", Static)
        room = Size(self.content_size.width - SIDE_MIN_WIDTH, self.content_size.height)
        fits = qr.text is not None and qr.fits_in(room)
        qr.display = fits
        note.display = qr.text is not None and not fits
        if note.display:
            terminal = self.app.size
            columns = qr.cells.width + SIDE_MIN_WIDTH + terminal.width - self.content_size.width
            lines = qr.cells.height + terminal.height - self.content_size.height
            note.update(
                f"This terminal is too small for the QR code: it needs {columns}x{lines}, "
                f"this one is {terminal.width}x{terminal.height}. Enlarge it, or send the "
                "code below."
            )


class InviteScreen(SectionScreen):
    SUB_TITLE = "My invite"
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("n", "new_invite", "New"),
        Binding("c", "copy_code", "Copy"),
        Binding("x,delete", "cancel_invite", "Cancel"),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.shown: dict[str, Any] | None = None  # the invite drawn, with its "state"
        self.live: list[dict[str, Any]] = []
        self._lock = asyncio.Lock()  # one reload or creation at a time

    def compose_body(self) -> ComposeResult:
        with InviteBody(id="invite-body"):
            yield QrView(id="invite-qr")
            with VerticalScroll(id="invite-side"):
                yield Static("", id="invite-fit", classes="warning", markup=False)
                yield Static(
                    "Scan the QR code with p2pid on their device (F5 there), or send them "
                    "this code:",
                    classes="hint",
                )
                yield Static("Making an invite…", id="invite-code", markup=False)
                yield Static("", id="invite-meta", markup=False)
                yield Static("", id="invite-status", markup=False).set_styles("display: none;")
                yield Static("Live invites", classes="heading")
                yield OptionList(id="invite-list")
                yield Static("Enter shows the highlighted invite, x cancels it.", classes="hint")

    def on_mount(self) -> None:  # Textual runs SectionScreen.on_mount too
        self.set_interval(EXPIRY_CHECK_SECONDS, self._check_expiry)

    # -- loading -------------------------------------------------------------------------

    async def on_connected(self) -> None:
        await self.reload(create=True)

    def on_screen_resume(self) -> None:
        if self.p2pid.connected:
            self.run_worker(self.reload(create=True), group="invite")

    async def on_daemon_event(self, event: dict[str, Any]) -> None:
        if event.get("type") == "contact.added":
            self._say(f"{event.get('name', 'Someone')} is now a contact.")
            await self.reload()

    async def reload(self, create: bool = False, new: bool = False) -> None:
        """The live invites again; then a new invite if `new`, or if `create` and the one shown
        is not live."""
        async with self._lock:
            try:
                self.live = list(await self.p2pid.rpc("invites"))
                await self._update_shown_state()
                shown_live = self.shown is not None and self.shown["state"] == "live"
                if new or (create and not shown_live):
                    created = await self.p2pid.rpc("invite.create", uses=NEW_INVITE_USES)
                    self.shown = {**created, "state": "live"}
                    self.live = list(await self.p2pid.rpc("invites"))
            except RpcError:
                pass  # the app said why in a toast
            self._show_invite()

    async def _update_shown_state(self) -> None:
        if self.shown is None or self.shown["state"] != "live":
            return
        if any(invite["invite_id"] == self.shown["invite_id"] for invite in self.live):
            return
        every = await self.p2pid.rpc("invites", all=True)
        states = [i["state"] for i in every if i["invite_id"] == self.shown["invite_id"]]
        self.shown["state"] = states[0] if states else "cancelled"

    def _check_expiry(self) -> None:
        now = time.time()
        invites = [*self.live, *([self.shown] if self.shown else [])]
        if self.p2pid.connected and any(
            i["expires_at"] <= now for i in invites if i.get("state", "live") == "live"
        ):
            self.run_worker(self.reload(), group="invite")

    # -- showing -------------------------------------------------------------------------

    def _show_invite(self) -> None:
        shown = self.shown
        live_entry = self._live_entry(shown["invite_id"]) if shown else None
        code = self.query_one("#invite-code", Static)
        meta = self.query_one("#invite-meta", Static)
        if shown is None:
            self.query_one(QrView).show(None)
            code.update("No invite: n makes one.")
            meta.update("")
        elif live_entry is None:
            self.query_one(QrView).show(None)
            code.update(f"{_NOT_LIVE.get(shown['state'], 'This invite is gone')}: n makes one.")
            meta.update("")
        else:
            self.query_one(QrView).show(shown["code"])
            code.update(shown["code"])
            uses = describe_uses(live_entry["uses_left"], live_entry["max_uses"])
            meta.update(f"Expires {format_time(shown['expires_at'])}, {uses}.")
        self._render_list()
        self.query_one(InviteBody).refit()

    def _say(self, text: str) -> None:
        """The last thing that happened (someone joined, an invite cancelled), or nothing."""
        status = self.query_one("#invite-status", Static)
        status.update(text)
        status.display = bool(text)

    def _live_entry(self, invite_id: str) -> dict[str, Any] | None:
        return next((i for i in self.live if i["invite_id"] == invite_id), None)

    def _render_list(self) -> None:
        options = self.query_one("#invite-list", OptionList)
        highlighted = options.highlighted_option.id if options.highlighted_option else None
        shown_id = self.shown["invite_id"] if self.shown else None
        options.clear_options()
        options.add_options(
            Option(
                f"{'▸' if i['invite_id'] == shown_id else ' '} {i['invite_id'][:8]} "
                f"{i['uses_left']}/{i['max_uses']} until "
                f"{time.strftime('%m-%d %H:%M', time.localtime(i['expires_at']))}",
                id=i["invite_id"],
            )
            for i in self.live
        )
        options.display = bool(self.live)
        ids = [i["invite_id"] for i in self.live]
        for keep in (highlighted, shown_id):
            if keep in ids:
                options.highlighted = ids.index(keep)
                break

    # -- actions -------------------------------------------------------------------------

    def action_new_invite(self) -> None:
        if self.p2pid.connected:
            self._say("")
            self.run_worker(self.reload(new=True), group="invite")

    def action_copy_code(self) -> None:
        if self.shown is None or self.shown["state"] != "live":
            self.notify("No live invite to copy: n makes one.", severity="warning")
            return
        self.app.copy_to_clipboard(self.shown["code"])
        self.notify("The invite code is on the clipboard.")

    def action_cancel_invite(self) -> None:
        option = self.query_one("#invite-list", OptionList).highlighted_option
        if option is not None and option.id is not None and self.p2pid.connected:
            self.run_worker(self._cancel(option.id), group="invite")

    async def _cancel(self, invite_id: str) -> None:
        try:
            await self.p2pid.rpc("invite.cancel", invite_id=invite_id)
        except RpcError:
            return
        self._say(f"Invite {invite_id[:8]} cancelled.")
        await self.reload()

    @on(OptionList.OptionSelected, "#invite-list")
    def show_selected(self, selected: OptionList.OptionSelected) -> None:
        entry = self._live_entry(selected.option.id or "")
        if entry is not None and entry.get("code"):
            self.shown = {**entry, "state": "live"}
            self._show_invite()

    def commands(self) -> Iterable[SystemCommand]:
        yield SystemCommand("New invite", "make another invite and show it", self.action_new_invite)
        yield SystemCommand(
            "Copy invite code", "put the code on the clipboard", self.action_copy_code
        )
        yield SystemCommand(
            "Cancel invite", "cancel the highlighted live invite", self.action_cancel_invite
        )


class JoinScreen(SectionScreen):
    SUB_TITLE = "Join"

    def compose_body(self) -> ComposeResult:
        with Vertical(id="join"):
            yield Static("Join someone with their invite", classes="title")
            yield Static(
                "Paste their invite code (P2PID:…), or type the path of a photo or screenshot "
                "of their QR code, then press Enter.",
                classes="hint",
            )
            yield JoinInput(placeholder="P2PID:…  or  ~/Pictures/invite.png", id="join-input")
            yield Static("", id="join-kind", classes="hint", markup=False)
            yield Static("", id="join-status", markup=False)
            yield Static("", id="join-error", classes="error", markup=False)
            yield Static("", id="join-result", markup=False)

    @on(Input.Changed, "#join-input")
    def describe_input(self, changed: Input.Changed) -> None:
        kind, value = read_join_input(changed.value)
        text = "" if not value else "an invite code" if kind == "code" else f"an image: {value}"
        self.query_one("#join-kind", Static).update(text)

    @on(Input.Submitted, "#join-input")
    def submit(self, submitted: Input.Submitted) -> None:
        self.join(submitted.value)

    @work(exclusive=True, group="join")
    async def join(self, text: str) -> None:
        """Join with what was typed or pasted; on any error, say why and change nothing."""
        kind, value = read_join_input(text)
        entry = self.query_one("#join-input", Input)
        status = self.query_one("#join-status", Static)
        error = self.query_one("#join-error", Static)
        result = self.query_one("#join-result", Static)
        error.update("")
        if not value:
            error.update("Paste an invite code, or type the path of an image of one.")
            return
        if not self.p2pid.connected:
            error.update("Not connected to the daemon yet.")
            return
        result.update("")
        entry.disabled = True
        try:
            code = await read_code(kind, value, status, error)
            if code is None:
                return
            status.update("Joining…")
            try:
                # No toast: the error is shown on this screen.
                contact = await self.p2pid.rpc("join", toast=False, code=code)
            except RpcError as failure:
                error.update(f"Could not join: {failure.message}")
                return
            entry.value = ""
            verified = "verified contact" if contact["verified"] else "contact"
            result.update(
                f"{contact['name']} is now a {verified}.\nFingerprint: {contact['fingerprint']}"
            )
        finally:
            status.update("")
            entry.disabled = False
            entry.focus()
