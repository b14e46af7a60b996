"""The conversations, most recent first, then contacts not written to yet.

Each entry takes two lines: presence (● online, ○ offline), the name, a verified mark (✓) and
when the last message was; then its first line (mine prefixed with its delivery mark) and the
unread count. A Line API widget that renders only the rows on screen: an `OptionList` of 1,000
conversations took 250 to 500 ms per refill, and the list is re-sorted on every message.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from rich.cells import cell_len
from rich.segment import Segment
from rich.style import Style
from textual import events
from textual.binding import Binding, BindingType
from textual.geometry import Region, Size
from textual.message import Message
from textual.reactive import reactive
from textual.scroll_view import ScrollView
from textual.strip import Strip

from p2pid.tui.widgets.message_log import MARKS, local_now, one_line, printable, short_when

ENTRY_HEIGHT = 2
CONTACTS_HEADING = "contacts: start a chat"
MORE_HEADING = "more contacts"  # when the daemon listed only its most recent conversations


@dataclass(eq=False)
class ConversationEntry:
    conversation_id: str  # the contact's identity id
    name: str
    verified: bool = False
    online: bool = False
    blocked: bool = False
    is_contact: bool = True
    known: bool = True  # False until the daemon's contacts arrive: presence, verified unknown
    has_conversation: bool = False
    unread: int = 0
    preview: str = ""
    preview_outgoing: bool = False
    preview_state: str = ""
    last_at_ms: int = 0
    last_message_id: str = ""
    updated_at_ms: int = 0

    def set_last_message(self, view: dict[str, Any]) -> None:
        self.has_conversation = True
        self.preview = one_line(str(view.get("text", "")))
        self.preview_outgoing = bool(view.get("outgoing"))
        self.preview_state = str(view.get("state", ""))
        self.last_at_ms = int(view.get("sent_at_ms", 0))
        self.last_message_id = str(view.get("message_id", ""))


class ConversationList(ScrollView, can_focus=True):
    """Up/Down (or the mouse) move the cursor; Enter or a click opens the conversation."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("up,k", "cursor(-1)", "Up", show=False),
        Binding("down,j", "cursor(1)", "Down", show=False),
        Binding("pageup", "page(-1)", "Page up", show=False),
        Binding("pagedown", "page(1)", "Page down", show=False),
        Binding("home", "first", "First", show=False),
        Binding("end", "last", "Last", show=False),
        Binding("enter", "open", "Open", show=False),
    ]

    COMPONENT_CLASSES: ClassVar[set[str]] = {
        "conversation-list--cursor",
        "conversation-list--hover",
        "conversation-list--open",
        "conversation-list--online",
        "conversation-list--offline",
        "conversation-list--name",
        "conversation-list--unread-name",
        "conversation-list--verified",
        "conversation-list--when",
        "conversation-list--preview",
        "conversation-list--badge",
        "conversation-list--heading",
        "conversation-list--blocked",
    }

    DEFAULT_CSS = """
    ConversationList {
        overflow-x: hidden;
        overflow-y: auto;
        & > .conversation-list--cursor { background: $block-cursor-blurred-background; }
        &:focus > .conversation-list--cursor {
            background: $block-cursor-background;
            color: $block-cursor-foreground;
        }
        & > .conversation-list--hover { background: $block-hover-background; }
        & > .conversation-list--open { color: $text-accent; text-style: bold; }
        & > .conversation-list--online { color: $text-success; }
        & > .conversation-list--offline { color: $text-muted; }
        & > .conversation-list--name { }
        & > .conversation-list--unread-name { text-style: bold; }
        & > .conversation-list--verified { color: $text-success; }
        & > .conversation-list--when { color: $text-muted; }
        & > .conversation-list--preview { color: $text-muted; }
        & > .conversation-list--badge { background: $accent; color: $text; text-style: bold; }
        & > .conversation-list--heading { color: $text-muted; }
        & > .conversation-list--blocked { color: $text-error; }
    }
    """

    cursor: reactive[int] = reactive(0, always_update=True)
    _hover: reactive[int] = reactive(-1)

    class Selected(Message):
        """Open this conversation."""

        def __init__(self, conversation_id: str, name: str) -> None:
            super().__init__()
            self.conversation_id = conversation_id
            self.name = name

    def __init__(
        self, *, name: str | None = None, id: str | None = None, classes: str | None = None
    ) -> None:
        super().__init__(name=name, id=id, classes=classes)
        self._entries: list[ConversationEntry] = []
        self._by_id: dict[str, ConversationEntry] = {}
        self._rows: list[ConversationEntry | None] = []  # None: the contacts heading
        self._offsets: list[int] = []
        self._total = 0
        self._styles: dict[str, Style] = {}
        self.open_id: str | None = None
        self.placeholder = ""
        self.complete = True  # every conversation is listed (else older ones are not)
        self._base_style = Style()
        self._width = 0
        self._now = local_now()

    # -- data --------------------------------------------------------------------------------

    @property
    def entries(self) -> Sequence[ConversationEntry]:
        return self._entries

    def get(self, conversation_id: str) -> ConversationEntry | None:
        return self._by_id.get(conversation_id)

    def set_entries(self, entries: Iterable[ConversationEntry]) -> None:
        keep = self.highlighted_id
        self._entries = list(entries)
        self._by_id = {entry.conversation_id: entry for entry in self._entries}
        self.resort(keep=keep)

    def upsert(self, entry: ConversationEntry) -> ConversationEntry:
        known = self._by_id.get(entry.conversation_id)
        if known is not None:
            return known
        self._entries.append(entry)
        self._by_id[entry.conversation_id] = entry
        return entry

    def resort(self, keep: str | None = None) -> None:
        """Order by recency (contacts never written to last, by name); the cursor stays on the
        same conversation."""
        if keep is None:
            keep = self.highlighted_id
        talked = [entry for entry in self._entries if entry.has_conversation]
        talked.sort(key=lambda entry: (entry.updated_at_ms, entry.last_at_ms), reverse=True)
        others = [entry for entry in self._entries if not entry.has_conversation]
        others.sort(key=lambda entry: entry.name.casefold())
        rows: list[ConversationEntry | None] = list(talked)
        if others:
            rows.append(None)
            rows.extend(others)
        self._rows = rows
        offsets, total = [], 0
        for row in rows:
            offsets.append(total)
            total += ENTRY_HEIGHT if row is not None else 1
        self._offsets, self._total = offsets, total
        self.virtual_size = Size(self.scrollable_content_region.width, total)
        index = self._index_of(keep) if keep else None
        if index is None:
            index = self._first_entry_index()
        self.set_reactive(ConversationList.cursor, index if index is not None else 0)
        self.refresh()

    @property
    def highlighted_id(self) -> str | None:
        entry = self._row(self.cursor)
        return entry.conversation_id if entry is not None else None

    def highlight(self, conversation_id: str) -> None:
        index = self._index_of(conversation_id)
        if index is not None:
            self.cursor = index

    def refresh_entry(self, conversation_id: str) -> None:
        index = self._index_of(conversation_id)
        if index is not None:
            self.refresh_lines(self._offsets[index], ENTRY_HEIGHT)

    def _index_of(self, conversation_id: str) -> int | None:
        for index, row in enumerate(self._rows):
            if row is not None and row.conversation_id == conversation_id:
                return index
        return None

    def _row(self, index: int) -> ConversationEntry | None:
        return self._rows[index] if 0 <= index < len(self._rows) else None

    def _first_entry_index(self) -> int | None:
        for index, row in enumerate(self._rows):
            if row is not None:
                return index
        return None

    # -- cursor ------------------------------------------------------------------------------

    def watch_cursor(self, cursor: int) -> None:
        if 0 <= cursor < len(self._rows):
            height = ENTRY_HEIGHT if self._rows[cursor] is not None else 1
            self.scroll_to_region(
                Region(0, self._offsets[cursor], max(1, self.size.width), height),
                animate=False,
                immediate=True,
            )
        self.refresh()

    def action_cursor(self, step: int) -> None:
        index = self.cursor + step
        while 0 <= index < len(self._rows) and self._rows[index] is None:
            index += step
        if 0 <= index < len(self._rows):
            self.cursor = index

    def action_page(self, direction: int) -> None:
        entries = max(1, self.scrollable_content_region.height // ENTRY_HEIGHT - 1)
        target = max(0, min(len(self._rows) - 1, self.cursor + direction * entries))
        if self._row(target) is None:
            target += direction if 0 <= target + direction < len(self._rows) else -direction
        if self._row(target) is not None:
            self.cursor = target

    def action_first(self) -> None:
        index = self._first_entry_index()
        if index is not None:
            self.cursor = index

    def action_last(self) -> None:
        for index in range(len(self._rows) - 1, -1, -1):
            if self._rows[index] is not None:
                self.cursor = index
                return

    def action_open(self) -> None:
        entry = self._row(self.cursor)
        if entry is not None:
            self.post_message(self.Selected(entry.conversation_id, entry.name))

    # -- mouse -------------------------------------------------------------------------------

    def _index_at(self, y: int) -> int | None:
        line = round(self.scroll_y) + y
        if not self._offsets or line < 0 or line >= self._total:
            return None
        index = bisect.bisect_right(self._offsets, line) - 1
        return index if self._rows[index] is not None else None

    def on_mouse_move(self, event: events.MouseMove) -> None:
        index = self._index_at(event.y)
        self._hover = -1 if index is None else index

    def on_leave(self, event: events.Leave) -> None:
        self._hover = -1

    def watch__hover(self) -> None:
        self.refresh()

    def on_click(self, event: events.Click) -> None:
        index = self._index_at(event.y)
        if index is not None:
            self.cursor = index
            self.action_open()

    # -- rendering ---------------------------------------------------------------------------

    def notify_style_update(self) -> None:
        super().notify_style_update()
        self._styles.clear()

    def on_resize(self, event: events.Resize) -> None:
        self.virtual_size = Size(self.scrollable_content_region.width, self._total)

    def _style(self, name: str) -> Style:
        style = self._styles.get(name)
        if style is None:
            style = self.get_component_rich_style(f"conversation-list--{name}", partial=True)
            self._styles[name] = style
        return style

    def render_lines(self, crop: Region) -> list[Strip]:
        # Once per frame rather than per line: both walk the DOM.
        self._base_style = self.rich_style
        self._width = self.scrollable_content_region.width
        self._now = local_now()
        return super().render_lines(crop)

    def render_line(self, y: int) -> Strip:
        width = self._width
        base = self._base_style
        line = round(self.scroll_y) + y
        if not self._rows:
            if y == 1 and self.placeholder:
                text = f" {self.placeholder}"[:width]
                return _finish([Segment(text, self._style("heading"))], width, base)
            return Strip.blank(width, base)
        if line < 0 or line >= self._total:
            return Strip.blank(width, base)
        index = bisect.bisect_right(self._offsets, line) - 1
        entry = self._rows[index]
        if entry is None:
            label = CONTACTS_HEADING if self.complete else MORE_HEADING
            return _finish(_heading(label, width, self._style("heading")), width, base)
        segments = self._entry_line(entry, line - self._offsets[index], width)
        if index == self.cursor:
            base += self._style("cursor")
        elif index == self._hover:
            base += self._style("hover")
        return _finish(segments, width, base)

    def _entry_line(self, entry: ConversationEntry, line: int, width: int) -> list[Segment]:
        is_open = entry.conversation_id == self.open_id
        edge = Segment("▌" if is_open else " ", self._style("open"))
        if line == 0:
            if not entry.known:
                dot = Segment(" ")
            elif entry.online:
                dot = Segment("●", self._style("online"))
            else:
                dot = Segment("○", self._style("offline"))
            when = short_when(entry.last_at_ms, self._now) if entry.last_at_ms else ""
            tail = [Segment(" ✓", self._style("verified"))] if entry.verified else []
            if entry.blocked:
                tail.append(Segment(" blocked", self._style("blocked")))
            room = (
                width
                - 3
                - sum(cell_len(s.text) for s in tail)
                - (cell_len(when) + 1 if when else 0)
            )
            name_style = self._style("unread-name" if entry.unread else "name")
            if is_open:
                name_style += self._style("open")
            name = _cut(printable(entry.name), max(1, room))
            fill = width - 3 - cell_len(name) - sum(cell_len(s.text) for s in tail) - cell_len(when)
            return [
                edge,
                dot,
                Segment(" "),
                Segment(name, name_style),
                *tail,
                Segment(" " * max(1, fill)),
                Segment(when, self._style("when")),
            ]
        badge = f" {entry.unread} " if entry.unread else ""
        if not entry.has_conversation:
            preview = "no messages yet" if self.complete else ""
        elif entry.preview_outgoing:
            preview = f"{MARKS.get(entry.preview_state, '')} {entry.preview}".lstrip()
        else:
            preview = entry.preview
        room = width - 3 - (cell_len(badge) + 1 if badge else 0)
        preview = _cut(preview, max(1, room))
        fill = width - 3 - cell_len(preview) - cell_len(badge)
        return [
            edge,
            Segment("  "),
            Segment(preview, self._style("preview")),
            Segment(" " * max(1, fill)),
            Segment(badge, self._style("badge")),
        ]


def _cut(text: str, width: int) -> str:
    if cell_len(text) <= width:
        return text
    while text and cell_len(text) > width - 1:
        text = text[:-1]
    return text + "…"


def _heading(label: str, width: int, style: Style) -> list[Segment]:
    text = f" {label} "
    return [Segment("─" + text + "─" * max(0, width - 1 - cell_len(text)), style)]


def _finish(segments: list[Segment], width: int, base: Style) -> Strip:
    """Exactly `width` cells with the base style under every segment: one Strip."""
    cells = sum(segment.cell_length for segment in segments)
    if cells > width:
        segments = list(Segment.adjust_line_length(segments, width))
    elif cells < width:
        segments.append(Segment(" " * (width - cells)))
    return Strip(Segment.apply_style(segments, base), width)
