"""File transfers, as `files` lists them and the `file.*` events change them: one row per
transfer, newest first; a progress event moves its bar and speed in place. The columns fit the
table's width: the names get what the bar, state and speed leave."""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar, NamedTuple

import msgspec
from textual import events
from textual.binding import Binding, BindingType

from p2pid.sizes import human_size
from p2pid.tui.widgets.file_records import (
    ACTIVE_STATES,
    name_text,
    progress_bar,
    speed_text,
    state_text,
    with_whom,
)
from p2pid.tui.widgets.group_records import cut
from p2pid.tui.widgets.record_table import Cell, RecordTable
from p2pid.wire.file_views import FileProgress, FileTransferView

WIDE = 96  # from this many cells, the roomy layout
SIZE_CELLS, STATE_CELLS = 7, 11  # "12.5 MB", "downloading" / "sending 1/3"
MIN_NAME, MIN_WHO = 12, 8
RESERVED = 2  # the vertical scrollbar, when the rows overflow


class Layout(NamedTuple):
    name: int
    size: int
    who: int
    state: int
    progress: int
    speed: int
    bar: int
    separator: str  # between the rate and the time left


def layout_for(width: int) -> Layout:
    """Column widths for a table `width` cells wide (each column also has a cell each side)."""
    bar, speed, separator = (8, 14, " · ") if width >= WIDE else (6, 12, " ")
    progress = bar + 5  # " 100%"
    padding = 2 * len(Layout._fields[:6])
    spare = width - SIZE_CELLS - STATE_CELLS - progress - speed - padding - RESERVED
    name = max(MIN_NAME, spare * 3 // 5)
    who = max(MIN_WHO, spare - name)
    return Layout(name, SIZE_CELLS, who, STATE_CELLS, progress, speed, bar, separator)


class FileTable(RecordTable[FileTransferView]):
    """Rows keyed by transfer id. The rate and time left come only from progress events; a
    transfer that stops moving (any state but downloading or sending) loses them."""

    BINDINGS: ClassVar[list[BindingType]] = [Binding("enter", "select_cursor", "Select")]
    COLUMNS: ClassVar[tuple[tuple[str, str], ...]] = (
        ("File", "name"),
        ("Size", "size"),
        ("With", "with"),
        ("State", "state"),
        ("Progress", "progress"),
        ("Speed", "speed"),
    )

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.speeds: dict[str, tuple[float, float | None]] = {}  # id: (bytes/s, seconds left)
        self.widths = layout_for(WIDE)
        self._sized = False  # the columns have the widths of this table's size

    def on_resize(self, event: events.Resize) -> None:
        layout = layout_for(event.size.width)
        if layout == self.widths and self._sized:
            return
        self.widths, self._sized = layout, True
        selected = self.selected_id
        self.clear(columns=True)
        for (label, key), width in zip(self.COLUMNS, layout[:6], strict=True):
            self.add_column(label, key=key, width=width)
        self._fill(dict(self._records))
        if selected in self._records:
            self.move_cursor(row=self.get_row_index(selected), animate=False)

    def show(self, transfers: Sequence[FileTransferView]) -> None:
        self._fill({transfer.transfer_id: transfer for transfer in transfers})

    def put(self, transfer: FileTransferView) -> None:
        """Add a transfer, or replace what a row shows of it."""
        records = dict(self._records)
        records[transfer.transfer_id] = transfer
        self._fill(records)

    def moved(self, progress: FileProgress) -> bool:
        """Show a progress event in its row; False when no row lists its transfer."""
        record = self._records.get(progress.transfer_id)
        if record is None:
            return False
        record = msgspec.structs.replace(record, bytes_done=progress.bytes_done)
        self._records[record.transfer_id] = record
        if record.state in ACTIVE_STATES:
            self.speeds[record.transfer_id] = (progress.rate_bps, progress.eta_s)
        key = record.transfer_id
        self.update_cell(key, "progress", self._bar(record))
        self.update_cell(key, "speed", self._speed(record))
        return True

    def _fill(self, records: dict[str, FileTransferView]) -> None:
        for key, record in records.items():
            if record.state not in ACTIVE_STATES:
                self.speeds.pop(key, None)
        self.fill(records, order=lambda t: (-t.created_at_ms, t.transfer_id), cells=self._row)

    def _bar(self, transfer: FileTransferView) -> Cell:
        return progress_bar(transfer.bytes_done, transfer.size, transfer.state, self.widths.bar)

    def _speed(self, transfer: FileTransferView) -> str:
        rate, eta = self.speeds.get(transfer.transfer_id, (None, None))
        return speed_text(rate, eta, self.widths.separator)

    def _row(self, transfer: FileTransferView) -> tuple[Cell, ...]:
        return (
            name_text(transfer, self.widths.name - 2),
            human_size(transfer.size),
            cut(with_whom(transfer), self.widths.who),
            state_text(transfer),
            self._bar(transfer),
            self._speed(transfer),
        )
