"""The kiosks this person paired with, as the `kiosks` RPC lists them, and their routines."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import ClassVar

import msgspec
from rich.text import Text
from textual.binding import Binding, BindingType

from p2pid.tui.widgets.contact_records import BAD, DIM, GOOD, WARN
from p2pid.tui.widgets.record_table import Cell, RecordTable, last_seen


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


def kiosk_row(kiosk: Kiosk, now_ms: float | None = None) -> tuple[Cell, ...]:
    return (
        Text(kiosk.name, style="bold"),
        Text(kiosk.role, style=GOOD if kiosk.is_owner else ""),
        Text("● online", style=GOOD) if kiosk.online else Text("○ offline", style=DIM),
        last_seen(kiosk.online, kiosk.last_seen_ms),
        health_text(kiosk),
        expiry_text(kiosk.expires_at_ms, now_ms),
    )


class KioskTable(RecordTable[Kiosk]):
    """Rows keyed by the kiosk's PeerId; the cursor stays on the same kiosk across reloads."""

    BINDINGS: ClassVar[list[BindingType]] = [Binding("enter", "select_cursor", "Routines")]
    COLUMNS: ClassVar[tuple[tuple[str, str], ...]] = (
        ("Name", "name"),
        ("Role", "role"),
        ("Status", "status"),
        ("Last seen", "seen"),
        ("Health", "health"),
        ("Expires", "expires"),
    )

    def show(self, kiosks: Sequence[Kiosk], now_ms: float | None = None) -> None:
        self.fill(
            {kiosk.peer_id: kiosk for kiosk in kiosks},
            order=lambda k: (k.name.casefold(), k.peer_id),
            cells=lambda k: kiosk_row(k, now_ms),
        )

    @property
    def kiosks(self) -> list[Kiosk]:
        return self.records
