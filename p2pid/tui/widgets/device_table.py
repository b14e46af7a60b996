"""This identity's own devices, as the `devices` RPC lists them: one row per device."""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

import msgspec
from rich.text import Text
from textual.binding import Binding, BindingType

from p2pid.tui.widgets.contact_records import BAD, DIM, GOOD, format_time, short_peer
from p2pid.tui.widgets.record_table import Cell, RecordTable, last_seen


class OwnDevice(msgspec.Struct, frozen=True):
    """One of `devices`' records (fields the daemon adds later are ignored)."""

    peer_id: str
    name: str
    this_device: bool
    connected: bool
    last_seen_ms: int | None
    linked_at_ms: int
    revoked: bool


def device_state(device: OwnDevice) -> Text:
    if device.revoked:
        return Text("revoked", style=BAD)
    if device.this_device:
        return Text("● this device", style=GOOD)
    if device.connected:
        return Text("● online", style=GOOD)
    return Text("○ offline", style=DIM)


def device_row(device: OwnDevice) -> tuple[Cell, ...]:
    return (
        Text(device.name, style=DIM if device.revoked else "bold"),
        short_peer(device.peer_id),
        device_state(device),
        last_seen(device.this_device or device.connected, device.last_seen_ms),
        format_time(device.linked_at_ms),
    )


class DeviceTable(RecordTable[OwnDevice]):
    """Rows keyed by PeerId: this device first, then by name, revoked ones last; the cursor stays
    on the same device across reloads."""

    BINDINGS: ClassVar[list[BindingType]] = [Binding("enter", "select_cursor", "Select")]
    COLUMNS: ClassVar[tuple[tuple[str, str], ...]] = (
        ("Name", "name"),
        ("Device", "peer"),
        ("State", "state"),
        ("Last seen", "seen"),
        ("Linked", "linked"),
    )

    def show(self, devices: Sequence[OwnDevice]) -> None:
        self.fill(
            {device.peer_id: device for device in devices},
            order=lambda d: (d.revoked, not d.this_device, d.name.casefold(), d.peer_id),
            cells=device_row,
        )

    @property
    def devices(self) -> list[OwnDevice]:
        return self.records
