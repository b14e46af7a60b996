"""My profile fields, each with who sees it."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import ClassVar

from rich.text import Text
from textual.binding import Binding, BindingType
from textual.widgets import DataTable

from p2pid.tui.widgets.contact_records import DIM, GOOD, WARN, format_time
from p2pid.wire.profile import ProfileFieldSummary

# audience: (label in the editor, what it means)
AUDIENCES: dict[str, tuple[str, str]] = {
    "public": ("Public", "anyone (today: every contact)"),
    "contacts": ("Contacts", "every contact you have not blocked"),
    "chosen": ("Chosen contacts", "only the contacts you pick"),
    "groups": ("Groups", "members of your groups (kept here; not sent to plain contacts yet)"),
}


def audience_text(field: ProfileFieldSummary, names: Mapping[str, str]) -> Text:
    if field.audience == "public":
        return Text("anyone (public)", style=WARN)
    if field.audience == "contacts":
        return Text("all contacts", style=GOOD)
    if field.audience == "chosen":
        if not field.granted_to:
            return Text("chosen: nobody yet", style=DIM)
        chosen = sorted(names.get(i, i[:12]) for i in field.granted_to)
        return Text("only " + ", ".join(chosen))
    return Text(f"{field.audience} (not sent yet)", style=DIM)


class ProfileFieldTable(DataTable[str | Text]):
    """Rows keyed by field name."""

    BINDINGS: ClassVar[list[BindingType]] = [Binding("enter", "select_cursor", "Edit")]

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id, cursor_type="row", zebra_stripes=True)
        self._fields: dict[str, ProfileFieldSummary] = {}

    def on_mount(self) -> None:
        self.add_column("Field", key="name")
        self.add_column("Value", key="value")
        self.add_column("Who sees it", key="audience")
        self.add_column("Changed", key="updated")

    def show(self, fields: Sequence[ProfileFieldSummary], names: Mapping[str, str]) -> None:
        selected = self.selected_name
        self.clear()
        self._fields = {field.name: field for field in fields}
        for field in sorted(fields, key=lambda f: f.name):
            value = field.value.replace("\n", " ⏎ ")
            self.add_row(
                Text(field.name, style="bold"),
                value if len(value) <= 40 else value[:39] + "…",
                audience_text(field, names),
                format_time(field.updated_at_ms),
                key=field.name,
            )
        if selected in self._fields:
            self.move_cursor(row=self.get_row_index(selected), animate=False)

    @property
    def selected_name(self) -> str | None:
        if not self.row_count:
            return None
        return self.coordinate_to_cell_key(self.cursor_coordinate).row_key.value

    @property
    def selected(self) -> ProfileFieldSummary | None:
        name = self.selected_name
        return self._fields.get(name) if name else None

    @property
    def fields(self) -> list[ProfileFieldSummary]:
        return list(self._fields.values())
