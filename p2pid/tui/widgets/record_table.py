"""What the TUI's record lists share: a DataTable with one row per record, keyed by the record's
id, whose cursor stays on the same record across reloads."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any, ClassVar, Generic, TypeVar

from rich.text import Text
from textual.widgets import DataTable

from p2pid.tui.widgets.contact_records import format_time

R = TypeVar("R")
Cell = str | Text


def last_seen(online: bool, last_seen_ms: int | None) -> str:
    """A "Last seen" cell: "now" while online."""
    return "now" if online else format_time(last_seen_ms)


class RecordTable(DataTable[Cell], Generic[R]):
    """Subclasses name their COLUMNS (label, key) and fill the rows in their `show`."""

    COLUMNS: ClassVar[tuple[tuple[str, str], ...]] = ()

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id, cursor_type="row", zebra_stripes=True)
        self._records: dict[str, R] = {}

    def on_mount(self) -> None:
        for label, key in self.COLUMNS:
            self.add_column(label, key=key)

    def fill(
        self,
        records: Mapping[str, R],
        order: Callable[[R], Any],
        cells: Callable[[R], Iterable[Cell]],
    ) -> None:
        """Replace the rows: one per record, keyed as in `records`, sorted by `order`."""
        selected = self.selected_id
        self.clear()
        self._records = dict(records)
        for key, record in sorted(self._records.items(), key=lambda item: order(item[1])):
            self.add_row(*cells(record), key=key)
        if selected in self._records:
            self.move_cursor(row=self.get_row_index(selected), animate=False)

    @property
    def selected_id(self) -> str | None:
        if not self.row_count:
            return None
        return self.coordinate_to_cell_key(self.cursor_coordinate).row_key.value

    @property
    def selected(self) -> R | None:
        key = self.selected_id
        return self._records.get(key) if key else None

    @property
    def records(self) -> list[R]:
        return list(self._records.values())

    def lists(self, key: object) -> bool:
        """Whether a row has this key."""
        return key in self._records
