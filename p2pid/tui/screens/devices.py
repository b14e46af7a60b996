"""My devices: every device holding this identity (this one, online or not, revoked), approving
a new one (screens/device_approve.py) and revoking one. The list follows the daemon's device.*
events, and its peer events for my own devices."""

from __future__ import annotations

from collections.abc import Iterable
from typing import ClassVar

from textual import on
from textual.app import ComposeResult, SystemCommand
from textual.binding import Binding, BindingType
from textual.widgets import DataTable, Static

from p2pid.rpc.protocol import RpcError
from p2pid.tui.screens.base import ListingScreen
from p2pid.tui.screens.contact_detail import ConfirmScreen
from p2pid.tui.screens.device_approve import ApproveDeviceScreen
from p2pid.tui.widgets.contact_records import call_daemon, short_peer
from p2pid.tui.widgets.device_table import DeviceTable, OwnDevice


def refuse_revoking(device: OwnDevice) -> str | None:
    """Why this device cannot be revoked from here, or None."""
    if device.this_device:
        return (
            f"{device.name} is the device you are using: revoke it from another of your "
            "devices (F8 there)."
        )
    if device.revoked:
        return f"{device.name} is already revoked."
    return None


class DevicesScreen(ListingScreen[OwnDevice]):
    SUB_TITLE = "My devices"
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("a", "approve", "Approve a new device"),
        Binding("x,delete", "revoke", "Revoke"),
    ]

    METHOD = "devices"
    RELOAD_ON = frozenset({"device.linked", "device.revoked", "device.list_changed"})

    def __init__(self) -> None:
        super().__init__(OwnDevice, DeviceTable)

    def compose_body(self) -> ComposeResult:
        yield Static(
            "Every device that holds your identity. a approves a new one (run `p2pid device "
            "link` on it first); x revokes the highlighted one.",
            id="devices-intro",
            classes="hint",
            markup=False,
        )
        yield DeviceTable(id="devices")
        yield Static("Connecting to the daemon…", id="devices-empty", classes="hint")

    def show(self, devices: list[OwnDevice]) -> None:
        self.query_one(DeviceTable).show(devices)
        empty = self.query_one("#devices-empty", Static)
        empty.update("" if devices else "No devices listed.")
        empty.display = not devices

    # -- actions -------------------------------------------------------------------------------

    def action_approve(self) -> None:
        if self.ready():
            self.app.push_screen(ApproveDeviceScreen(), callback=lambda _: self.reload())

    @on(DataTable.RowSelected, "#devices")
    def _row_selected(self) -> None:
        """Enter on a device: nothing to open; say what can be done with it."""
        device = self.selected()
        if device is not None:
            why = refuse_revoking(device)
            self.notify(why or f"{device.name}: x revokes it.", title=short_peer(device.peer_id))

    def action_revoke(self, device: OwnDevice | None = None) -> None:
        device = device or self.selected()
        if device is None or not self.p2pid.connected:
            return
        why = refuse_revoking(device)
        if why is not None:
            self.notify(why, severity="warning")
            return
        confirm = ConfirmScreen(
            f"Revoke {device.name}?",
            f"{device.name} ({short_peer(device.peer_id)}) will no longer hold your identity: "
            "your contacts get a new device list and stop encrypting to it, and it is told to "
            "wipe the identity (at once if it is online). To use it again, link it anew.",
            "Revoke",
        )

        def answered(yes: bool | None) -> None:
            if yes:
                self.run_worker(self._revoke(device), group="devices-revoke")

        self.app.push_screen(confirm, callback=answered)

    async def _revoke(self, device: OwnDevice) -> None:
        try:
            await call_daemon(self.p2pid, "device.revoke", device=device.peer_id)
        except RpcError:
            return  # the app said why in a toast; nothing changed
        self.notify(f"{device.name} is revoked.", title="Devices")
        self.reload()

    def commands(self) -> Iterable[SystemCommand]:
        yield SystemCommand(
            "Approve a new device",
            "link another device to this identity with the code it shows",
            self.action_approve,
        )
        for device in self.records:
            if refuse_revoking(device) is None:
                yield SystemCommand(
                    f"Revoke device {device.name}",
                    f"{short_peer(device.peer_id)}: it stops holding this identity",
                    lambda device=device: self.action_revoke(device),
                )
