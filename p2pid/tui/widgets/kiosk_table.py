"""The kiosks this person paired with, as the `kiosks` RPC lists them, and their routines."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import ClassVar

import msgspec
from rich.text import Text
from textual.binding import Binding, BindingType
from textual.widgets import DataTable

from p2pid.tui.widgets.contact_records import BAD, DIM, GOOD, WARN, format_time


class RoutineArg(msgspec.Struct, frozen=True):
    name: str
    kind: str


class Routine(msgspec.Struct, frozen=True):
    name: str
    description: str = ""
    args: list[RoutineArg] = []
    roles: list[str] = []


class Kiosk(msgspec.Struct, frozen=True):
    """One of `kiosks`' records (fields the daemon adds later are ignored)."""

    peer_id: str
    name: str
    role: str
    online: bool
    last_seen_ms: int | None
    health: str | None
    expires_at_ms: int
    routines: list[Routine] = []

    @property
    def is_owner(self) -> bool:
        return self.role == "owner"

    def allowed_routines(self) -> list[Routine]:
        """The routines this person's role may run (an empty roles list: anyone paired)."""
        return [r for r in self.routines if not r.roles or self.role in r.roles]


def expiry_text(expires_at_ms: int, now_ms: float | None = None) -> Text:
    now = time.time() * 1000 if now_ms is None else now_ms
    if expires_at_ms <= now:
        return Text("expired", style=BAD)
    return Text(time.strftime("%Y-%m-%d", time.localtime(expires_at_ms / 1000)))


def health_text(kiosk: Kiosk) -> Text:
    if kiosk.health is None:
        return Text("—", style=DIM)
    good = kiosk.health.lower() in ("ok", "healthy", "good")
    return Text(kiosk.health, style=GOOD if good else WARN)


class KioskTable(DataTable[str | Text]):
    """Rows keyed by the kiosk's PeerId; the cursor stays on the same kiosk across reloads."""

    BINDINGS: ClassVar[list[BindingType]] = [Binding("enter", "select_cursor", "Routines")]

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id, cursor_type="row", zebra_stripes=True)
        self._kiosks: dict[str, Kiosk] = {}

    def on_mount(self) -> None:
        self.add_column("Name", key="name")
        self.add_column("Role", key="role")
        self.add_column("Status", key="status")
        self.add_column("Last seen", key="seen")
        self.add_column("Health", key="health")
        self.add_column("Expires", key="expires")

    def show(self, kiosks: Sequence[Kiosk], now_ms: float | None = None) -> None:
        selected = self.selected_id
        self.clear()
        self._kiosks = {kiosk.peer_id: kiosk for kiosk in kiosks}
        for kiosk in sorted(self._kiosks.values(), key=lambda k: (k.name.casefold(), k.peer_id)):
            self.add_row(
                Text(kiosk.name, style="bold"),
                Text(kiosk.role, style=GOOD if kiosk.is_owner else ""),
                Text("● online", style=GOOD) if kiosk.online else Text("○ offline", style=DIM),
                "now" if kiosk.online else format_time(kiosk.last_seen_ms),
                health_text(kiosk),
                expiry_text(kiosk.expires_at_ms, now_ms),
                key=kiosk.peer_id,
            )
        if selected in self._kiosks:
            self.move_cursor(row=self.get_row_index(selected), animate=False)

    @property
    def selected_id(self) -> str | None:
        if not self.row_count:
            return None
        return self.coordinate_to_cell_key(self.cursor_coordinate).row_key.value

    @property
    def selected(self) -> Kiosk | None:
        peer_id = self.selected_id
        return self._kiosks.get(peer_id) if peer_id else None

    @property
    def kiosks(self) -> list[Kiosk]:
        return list(self._kiosks.values())
