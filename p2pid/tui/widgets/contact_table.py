"""The contacts list: one row per contact, keyed by identity id, honest about each one's state."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import ClassVar

from rich.text import Text
from textual.binding import Binding, BindingType
from textual.widgets import DataTable

from p2pid.tui.widgets.contact_records import online_text, state_text, verified_text
from p2pid.wire.api import ContactSummary


class ContactTable(DataTable[str | Text]):
    """Rows keyed by identity id; the cursor stays on the same contact across reloads."""

    BINDINGS: ClassVar[list[BindingType]] = [Binding("enter", "select_cursor", "Open")]

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id, cursor_type="row", zebra_stripes=True)
        self._contacts: dict[str, ContactSummary] = {}

    def on_mount(self) -> None:
        self.add_column("Name", key="name")
        self.add_column("Verified", key="verified")
        self.add_column("Status", key="status")
        self.add_column("Devices", key="devices")
        self.add_column("Attention", key="attention")

    def show(self, contacts: Sequence[ContactSummary], asking: Collection[str] = ()) -> None:
        """Replace the rows; `asking` holds the identity ids that asked to verify this user."""
        selected = self.selected_id
        self.clear()
        self._contacts = {contact.identity_id: contact for contact in contacts}
        for contact in sorted(contacts, key=lambda c: c.name.casefold()):
            devices = len(contact.devices)
            self.add_row(
                Text(contact.name, style="bold"),
                verified_text(contact),
                online_text(contact),
                f"{devices} device{'s' if devices != 1 else ''}",
                state_text(contact, contact.identity_id in asking),
                key=contact.identity_id,
            )
        if selected in self._contacts:
            self.move_cursor(row=self.get_row_index(selected), animate=False)

    @property
    def selected_id(self) -> str | None:
        if not self.row_count:
            return None
        row_key = self.coordinate_to_cell_key(self.cursor_coordinate).row_key
        return row_key.value

    @property
    def selected(self) -> ContactSummary | None:
        identity_id = self.selected_id
        return self._contacts.get(identity_id) if identity_id else None

    @property
    def contacts(self) -> list[ContactSummary]:
        return list(self._contacts.values())
