"""This identity's own devices, as the `devices` RPC lists them: one row per device."""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

import msgspec
from rich.text import Text
from textual.binding import Binding, BindingType
from textual.widgets import DataTable

from p2pid.tui.widgets.contact_records import BAD, DIM, GOOD, format_time, short_peer


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


class DeviceTable(DataTable[str | Text]):
    """Rows keyed by PeerId: this device first, then by name, revoked ones last; the cursor stays
    on the same device across reloads."""

    BINDINGS: ClassVar[list[BindingType]] = [Binding("enter", "select_cursor", "Select")]

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id, cursor_type="row", zebra_stripes=True)
        self._devices: dict[str, OwnDevice] = {}

    def on_mount(self) -> None:
        self.add_column("Name", key="name")
        self.add_column("Device", key="peer")
        self.add_column("State", key="state")
        self.add_column("Last seen", key="seen")
        self.add_column("Linked", key="linked")

    def show(self, devices: Sequence[OwnDevice]) -> None:
        selected = self.selected_id
        self.clear()
        self._devices = {device.peer_id: device for device in devices}
        order = sorted(
            self._devices.values(),
            key=lambda d: (d.revoked, not d.this_device, d.name.casefold(), d.peer_id),
        )
        for device in order:
            seen = "now" if device.this_device or device.connected else device.last_seen_ms
            self.add_row(
                Text(device.name, style=DIM if device.revoked else "bold"),
                short_peer(device.peer_id),
                device_state(device),
                seen if isinstance(seen, str) else format_time(seen),
                format_time(device.linked_at_ms),
                key=device.peer_id,
            )
        if selected in self._devices:
            self.move_cursor(row=self.get_row_index(selected), animate=False)

    @property
    def selected_id(self) -> str | None:
        if not self.row_count:
            return None
        return self.coordinate_to_cell_key(self.cursor_coordinate).row_key.value

    @property
    def selected(self) -> OwnDevice | None:
        peer_id = self.selected_id
        return self._devices.get(peer_id) if peer_id else None

    @property
    def devices(self) -> list[OwnDevice]:
        return list(self._devices.values())
