"""The open conversation's history: a virtualised log of messages with day separators.

A Line API widget: it keeps the messages as records and draws only the lines on screen (one
widget per message was measured first: 0.7 s per page of 50 once 1,000 were mounted, 3.5 s at
10,000). Each message is wrapped once per width into plain lines; the layout is a list of row
heights and their running sums, so an older page is prepended in time proportional to the page
(plus a list copy), and the reader's view does not move. Drawn lines are kept in a small LRU
cache; nothing else per line is kept, so 10,000 messages stay light for the garbage collector.

Per message: the time (the author's clock), the author, a delivery mark for mine (`·` pending,
`✓` delivered, `✓✓` read, `✗` failed), then the text, wrapped under itself.
"""

from __future__ import annotations

import bisect
import unicodedata
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from itertools import accumulate
from typing import Any, ClassVar

from rich.cells import cell_len
from rich.segment import Segment
from rich.style import Style
from rich.text import Text
from textual import events
from textual.binding import Binding, BindingType
from textual.cache import LRUCache
from textual.geometry import Region, Size
from textual.message import Message
from textual.scroll_view import ScrollView
from textual.strip import Strip

MARKS: dict[str, str] = {"pending": "·", "delivered": "✓", "read": "✓✓", "failed": "✗"}
MARK_WIDTH = 2
MAX_AUTHOR_WIDTH = 14
MIN_TEXT_WIDTH = 8
TAB = "    "
DRAWN_LINES = 256  # drawn lines kept: a few screens (each Strip is a dozen objects)

# -- time: local, through one function so tests can fix "now" --------------------------------


def local_now() -> datetime:
    return datetime.now().astimezone()


def local_time(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000).astimezone()


def clock_time(ms: int) -> str:
    return f"{local_time(ms):%H:%M}"


def day_label(day: date, today: date) -> str:
    if day == today:
        return "Today"
    if day == today - timedelta(days=1):
        return "Yesterday"
    label = f"{day:%A} {day.day} {day:%B}"
    return label if day.year == today.year else f"{label} {day.year}"


def short_when(ms: int, now: datetime) -> str:
    """When, as a conversation list shows it: 14:02, Mon, 3 May, 3/5/23."""
    moment = local_time(ms)
    if moment.date() == now.date():
        return f"{moment:%H:%M}"
    if now.date() - moment.date() < timedelta(days=7) and moment <= now:
        return f"{moment:%a}"
    if moment.year == now.year:
        return f"{moment.day} {moment:%b}"
    return f"{moment.day}/{moment.month}/{moment:%y}"


# -- text from other people: never control codes on the terminal ------------------------------


def printable(text: str) -> str:
    """The text with tabs expanded, line ends made `\n`, and every other control character (and
    invisible formatting such as bidi overrides) replaced or dropped: a remote author chooses
    these characters, and none may move the cursor or restyle the terminal."""
    if text.isascii() and text.isprintable():
        return text
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    out = []
    for character in text:
        category = unicodedata.category(character)
        if character == "\n":
            out.append(character)
        elif character == "\t":
            out.append(TAB)
        elif category in ("Cc", "Cs") or character in "\u2028\u2029":
            out.append("\ufffd")
        elif category == "Cf" and character not in "\u200d\ufe0f":
            continue  # bidi overrides and other invisible formatting (emoji joiners kept)
        else:
            out.append(character)
    return "".join(out)


def one_line(text: str) -> str:
    """The first line of a message, for a preview."""
    return printable(text).split("\n", 1)[0]


def wrap(text: str, width: int, console_wrap: Callable[[str, int], list[str]]) -> list[str]:
    """Lines of at most `width` cells: words wrapped, over-long words folded."""
    lines: list[str] = []
    for paragraph in text.split("\n"):
        if paragraph.isascii():
            lines.extend(_wrap_ascii(paragraph, width))
        elif cell_len(paragraph) <= width:
            lines.append(paragraph)
        else:
            lines.extend(console_wrap(paragraph, width))
    return lines


def _wrap_ascii(paragraph: str, width: int) -> list[str]:
    """Greedy word wrap of printable ASCII (one cell per character): the common case, fast."""
    if len(paragraph) <= width:
        return [paragraph]
    lines = []
    while len(paragraph) > width:
        cut = paragraph.rfind(" ", 0, width + 1)
        if cut <= 0:
            lines.append(paragraph[:width])
            paragraph = paragraph[width:]
        else:
            lines.append(paragraph[:cut].rstrip(" "))
            paragraph = paragraph[cut + 1 :].lstrip(" ")
    if paragraph or not lines:
        lines.append(paragraph)
    return lines


# -- records -----------------------------------------------------------------------------------


@dataclass(eq=False, slots=True)
class ChatMessage:
    """One message as the log shows it (built from the daemon's MessageView)."""

    message_id: str
    outgoing: bool
    text: str
    sent_at_ms: int
    state: str
    lamport: int = 0
    kind: str = "text"  # or "file": a file offered here (message_id is the transfer id)
    day: date = field(init=False)  # local
    _lines: tuple[str, ...] | None = field(default=None, repr=False)  # wrapped at _lines_width
    _lines_width: int = field(default=-1, repr=False)

    def __post_init__(self) -> None:
        self.day = local_time(self.sent_at_ms).date()

    @classmethod
    def from_view(cls, view: Mapping[str, Any]) -> ChatMessage:
        return cls(
            message_id=str(view["message_id"]),
            outgoing=bool(view["outgoing"]),
            text=printable(str(view["text"])),
            sent_at_ms=int(view["sent_at_ms"]),
            state=str(view["state"]),
            lamport=int(view.get("lamport", 0)),
            kind=str(view.get("kind", "text")),
        )

    @property
    def order(self) -> tuple[int, int, str]:
        """The daemon's display order: Lamport clock, then the author's clock, then the id."""
        return (self.lamport, self.sent_at_ms, self.message_id)


# A row of the log: a message, a day's separator (its date), or one of these lines. Plain
# values, not objects of their own: 10,000 rows add nothing for the garbage collector to walk.
STATUS = "status"  # what lies above the first loaded message (older ones, or the start)
NEW = "new"  # the first unread message is below
Row = ChatMessage | date | str


_STATE_RANK = {"pending": 0, "failed": 1, "delivered": 2, "read": 3}


def state_regresses(old: str, new: str) -> bool:
    """A late `delivered` must not undo `read` (receipts and events can cross)."""
    return _STATE_RANK.get(new, 0) < _STATE_RANK.get(old, 0) and new != "failed"


def _rows_for(messages: Sequence[ChatMessage], first_unread: str | None) -> list[Row]:
    """Day separators, the `new` marker and the messages (already in order)."""
    rows: list[Row] = []
    previous: date | None = None
    for message in messages:
        if message.day != previous:
            rows.append(message.day)
            previous = message.day
        if message.message_id == first_unread:
            rows.append(NEW)
        rows.append(message)
    return rows


# -- the widget --------------------------------------------------------------------------------


class MessageLog(ScrollView, can_focus=True):
    """The messages of one conversation, oldest at the top; follows the newest while the
    reader is at the bottom. Posts `OlderWanted` when the reader reaches the top and the
    daemon has older pages."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("up", "line(-1)", "Up", show=False),
        Binding("down", "line(1)", "Down", show=False),
        Binding("pageup", "page_up_or_older", "Older", show=False),
        Binding("pagedown", "page_down", "Page down", show=False),
        Binding("home", "scroll_home", "Oldest loaded", show=False),
        Binding("end", "scroll_end", "Newest", show=False),
    ]

    COMPONENT_CLASSES: ClassVar[set[str]] = {
        "message-log--time",
        "message-log--me",
        "message-log--them",
        "message-log--pending",
        "message-log--delivered",
        "message-log--read",
        "message-log--failed",
        "message-log--day",
        "message-log--new",
        "message-log--hint",
    }

    DEFAULT_CSS = """
    MessageLog {
        overflow-x: hidden;
        overflow-y: scroll;
        scrollbar-size-vertical: 1;
        & > .message-log--time { color: $text-muted; }
        & > .message-log--me { color: $text-primary; text-style: bold; }
        & > .message-log--them { color: $text-secondary; text-style: bold; }
        & > .message-log--pending { color: $text-muted; }
        & > .message-log--delivered { color: $text; }
        & > .message-log--read { color: $text-success; text-style: bold; }
        & > .message-log--failed { color: $text-error; text-style: bold; }
        & > .message-log--day { color: $text-muted; }
        & > .message-log--new { color: $text-accent; }
        & > .message-log--hint { color: $text-muted; text-style: italic; }
    }
    """

    class OlderWanted(Message):
        """The reader is at the top and older messages exist: load the page before."""

    def __init__(
        self, *, name: str | None = None, id: str | None = None, classes: str | None = None
    ) -> None:
        super().__init__(name=name, id=id, classes=classes)
        self._messages: list[ChatMessage] = []
        self._by_id: dict[str, ChatMessage] = {}
        self._rows: list[Row] = []
        self._heights: list[int] = []  # lines of each row
        self._offsets: list[int] = []  # first line of each row
        self._total_lines = 0
        self._width = 0
        self._styles: dict[str, Style] = {}
        self._base_style = Style()
        self._drawn: LRUCache[tuple[Any, ...], Strip] = LRUCache(DRAWN_LINES)
        self.peer_name = ""
        self.has_more = False
        self.loading_older = False
        self.placeholder = ""
        self._first_unread: str | None = None
        self._author_width = 3
        self._viewport = Size(0, 0)
        self.unseen = 0  # messages added below while the reader was scrolled up

    # -- public API --------------------------------------------------------------------------

    @property
    def messages(self) -> Sequence[ChatMessage]:
        return self._messages

    def message(self, message_id: str) -> ChatMessage | None:
        return self._by_id.get(message_id)

    def line_of(self, message_id: str) -> int | None:
        """The first line of a loaded message in the log (0 is the top of the history)."""
        message = self._by_id.get(message_id)
        if message is None or self._width <= 0:
            return None
        return self._offsets[self._rows.index(message)]

    def top_line(self) -> int:
        """The log's line at the top of the screen."""
        return round(self.scroll_y) - max(0, self._viewport.height - self._total_lines)

    def show(
        self,
        messages: Iterable[ChatMessage],
        *,
        peer_name: str,
        has_more: bool,
        first_unread: str | None = None,
        placeholder: str = "",
    ) -> None:
        """Replace the log with a conversation's newest page; scroll to its end."""
        self._messages = sorted(messages, key=lambda message: message.order)
        self._by_id = {message.message_id: message for message in self._messages}
        self.peer_name = peer_name
        self.has_more = has_more
        self.loading_older = False
        self.placeholder = placeholder
        self._first_unread = first_unread
        self.unseen = 0
        self._author_width = _author_width(peer_name)
        self._drawn.clear()
        self._rebuild()
        self._scroll_to_end()

    def clear(self, placeholder: str = "") -> None:
        self.show([], peer_name="", has_more=False, placeholder=placeholder)

    def prepend(self, messages: Iterable[ChatMessage], *, has_more: bool) -> None:
        """Older messages above the loaded ones; what is on screen stays where it is."""
        older = sorted(
            (m for m in messages if m.message_id not in self._by_id), key=lambda m: m.order
        )
        self.has_more = has_more
        self.loading_older = False
        if older and self._messages and older[-1].order > self._messages[0].order:
            # Not older after all (the history changed meanwhile): place each where it goes.
            for message in older:
                self._by_id[message.message_id] = message
                bisect.insort(self._messages, message, key=lambda m: m.order)
            self._rebuild()
            return
        before = self._total_lines
        for message in older:
            self._by_id[message.message_id] = message
        new_rows = _rows_for(older, self._first_unread)
        kept = 1  # the status row is replaced
        if older and len(self._rows) > 1 and self._rows[1] == older[-1].day:
            kept = 2  # the day's separator is now above the older messages of that day
        self._messages[:0] = older
        self._rows[:kept] = [STATUS, *new_rows]
        self._heights[:kept] = [self._height_of(row) for row in (STATUS, *new_rows)]
        self._relayout()
        if self._width > 0:
            self.scroll_to(y=self.scroll_y + self._total_lines - before, animate=False, force=True)
        self.refresh()

    def add(self, message: ChatMessage) -> bool:
        """A new message (or a newer copy of a known one). True if the log changed."""
        known = self._by_id.get(message.message_id)
        if known is not None:
            if known.state != message.state and not state_regresses(known.state, message.state):
                known.state = message.state
                self.refresh()
                return True
            return False
        self._by_id[message.message_id] = message
        following = self._at_end()
        last = self._messages[-1] if self._messages else None
        if last is None or last.order > message.order:
            # The first message (the status line changes too), or one written before the last
            # but arrived late (rare): lay everything out again.
            bisect.insort(self._messages, message, key=lambda m: m.order)
            self._rebuild()
        else:
            self._messages.append(message)
            rows: list[Row] = [message]
            if last.day != message.day:
                rows.insert(0, message.day)
            for row in rows:
                self._rows.append(row)
                self._heights.append(height := self._height_of(row))
                self._offsets.append(self._total_lines)
                self._total_lines += height
            self._update_virtual_size()
        if following:
            self._scroll_to_end()
        else:
            self.unseen += 1
        self.refresh()
        return True

    def set_state(self, message_ids: Iterable[str], state: str) -> int:
        """New delivery states for messages of mine; how many of them are loaded here."""
        changed = 0
        for message_id in message_ids:
            message = self._by_id.get(message_id)
            if message is not None and message.state != state:
                if state_regresses(message.state, state):
                    continue
                message.state = state
                changed += 1
        if changed:
            self.refresh()
        return changed

    def set_loading_older(self, loading: bool) -> None:
        self.loading_older = loading
        self.refresh()

    def scroll_to_newest(self) -> None:
        self._scroll_to_end()

    # -- actions -----------------------------------------------------------------------------

    def action_page_up_or_older(self) -> None:
        if self.scroll_y <= 0:
            self._want_older()
        else:
            self.scroll_page_up(animate=False)

    def action_page_down(self) -> None:
        self.scroll_page_down(animate=False)

    def action_line(self, step: int) -> None:
        if step < 0 and self.scroll_y <= 0:
            self._want_older()
        else:
            self.scroll_relative(y=step, animate=False)

    def action_scroll_home(self) -> None:
        self.scroll_to(y=0, animate=False)

    def action_scroll_end(self) -> None:
        self._scroll_to_end()

    # -- scrolling: load older at the top ----------------------------------------------------

    def watch_scroll_y(self, old_value: float, new_value: float) -> None:
        super().watch_scroll_y(old_value, new_value)
        if new_value <= 0 < old_value:
            self._want_older()
        if self.unseen and self._at_end():
            self.unseen = 0
            self.refresh()

    def on_mouse_scroll_up(self, event: events.MouseScrollUp) -> None:
        if self.scroll_y <= 0:
            self._want_older()

    def on_click(self, event: events.Click) -> None:
        if event.style.meta.get("older"):
            self._want_older()
        elif event.style.meta.get("newest"):
            self._scroll_to_end()

    def _want_older(self) -> None:
        if self.has_more and not self.loading_older:
            self.post_message(self.OlderWanted())

    def _at_end(self) -> bool:
        return self._width <= 0 or self.scroll_y >= self.max_scroll_y - 1

    def _scroll_to_end(self) -> None:
        self.scroll_to(
            y=max(0, self._total_lines - self.scrollable_content_region.height),
            animate=False,
            force=True,
        )

    # -- layout ------------------------------------------------------------------------------

    def on_resize(self, event: events.Resize) -> None:
        width = self.scrollable_content_region.width
        if width != self._width:
            self._reflow(width=width)

    def rename(self, peer_name: str) -> None:
        """The contact's name changed (a nickname, a new display name)."""
        if peer_name != self.peer_name:
            self.peer_name = peer_name
            self._reflow(author_width=_author_width(peer_name))

    def _reflow(self, *, width: int | None = None, author_width: int | None = None) -> None:
        """Wrap every message again (a new width); the reader keeps their place."""
        following = self._at_end()
        top_row, line_in_row = self._row_at(round(self.scroll_y))
        self._width = self._width if width is None else width
        self._author_width = self._author_width if author_width is None else author_width
        self._drawn.clear()
        self._heights = [self._height_of(row) for row in self._rows]
        self._relayout()
        if following or top_row is None:
            self._scroll_to_end()
        else:
            line = self._offsets[top_row] + min(line_in_row, max(0, self._heights[top_row] - 1))
            self.scroll_to(y=line, animate=False, force=True)
        self.refresh()

    def notify_style_update(self) -> None:
        super().notify_style_update()
        self._styles.clear()
        self._drawn.clear()

    def _rebuild(self) -> None:
        """Every row from the messages (a new conversation, or one placed out of order)."""
        self._rows = [STATUS, *_rows_for(self._messages, self._first_unread)]
        self._heights = [self._height_of(row) for row in self._rows]
        self._drawn.clear()
        self._relayout()
        self.refresh()

    def _relayout(self) -> None:
        self._offsets = list(accumulate(self._heights, initial=0))
        self._total_lines = self._offsets.pop()
        self._update_virtual_size()

    def _update_virtual_size(self) -> None:
        self.virtual_size = Size(self._width, self._total_lines)
        if (
            self.has_more
            and not self.loading_older
            and self._width > 0
            and self._messages
            and self._total_lines <= self.scrollable_content_region.height
        ):
            self.call_later(self._want_older)  # the page does not fill the screen

    def _row_at(self, line: int) -> tuple[int | None, int]:
        if not self._rows or line < 0 or line >= self._total_lines:
            return None, 0
        index = bisect.bisect_right(self._offsets, line) - 1
        return index, line - self._offsets[index]

    def _height_of(self, row: Row) -> int:
        if self._width <= 0:
            return 0
        if isinstance(row, ChatMessage):
            return len(self._lines_of(row))
        if row == STATUS:
            return 1 if self._status() else 0
        return 1

    def _text_width(self) -> int:
        return max(MIN_TEXT_WIDTH, self._width - self._prefix_width())

    def _prefix_width(self) -> int:
        return 5 + 1 + self._author_width + 1 + MARK_WIDTH + 1

    def _lines_of(self, message: ChatMessage) -> tuple[str, ...]:
        width = self._text_width()
        if message._lines is None or message._lines_width != width:
            # A tuple of strings: the garbage collector stops tracking it.
            message._lines = tuple(wrap(message.text, width, self._console_wrap)) or ("",)
            message._lines_width = width
        return message._lines

    def _console_wrap(self, paragraph: str, width: int) -> list[str]:
        wrapped = Text(paragraph).wrap(self.app.console, width, overflow="fold")
        return [line.plain.rstrip() for line in wrapped] or [""]

    def _status(self) -> tuple[str, bool]:
        """What the line above the first loaded message says, and whether a click loads."""
        if self.loading_older:
            return "loading older messages…", False
        if self.has_more:
            return "↑ older messages: scroll up or press Page Up", True
        if self._messages:
            return "the start of this conversation", False
        return self.placeholder, False

    # -- drawing -----------------------------------------------------------------------------

    def render_lines(self, crop: Region) -> list[Strip]:
        # Once per frame rather than per line: both walk the DOM.
        self._base_style = self.rich_style
        self._viewport = self.scrollable_content_region.size
        return super().render_lines(crop)

    def render_line(self, y: int) -> Strip:
        width, height = self._viewport
        if self.unseen and y == height - 1:
            return self._draw_unseen(width)
        # Fewer lines than the screen: the newest sit at the bottom, by the input box.
        bottom = max(0, height - self._total_lines)
        index, line = self._row_at(round(self.scroll_y) + y - bottom)
        if index is None or width != self._width:
            return Strip.blank(width, self._base_style)
        row = self._rows[index]
        if isinstance(row, ChatMessage):
            key: tuple[Any, ...] = (row.message_id, row.state, line)
        elif row == STATUS:
            key = (STATUS, *self._status())
        else:
            key = (row,)
        key += (self._base_style,)
        strip = self._drawn.get(key)
        if strip is None:
            segments, cells = self._draw(row, line)
            strip = _finish(segments, cells, width, self._base_style)
            self._drawn[key] = strip
        return strip

    def _draw_unseen(self, width: int) -> Strip:
        """Over the last line while the reader is scrolled up: what arrived below."""
        plural = "s" if self.unseen > 1 else ""
        text = f" ↓ {self.unseen} new message{plural} below: End "
        style = self._style("new") + Style(reverse=True) + Style.from_meta({"newest": True})
        left = max(0, (width - cell_len(text)) // 2)
        segments = [Segment(" " * left), Segment(text, style)]
        return _finish(segments, left + cell_len(text), width, self._base_style)

    def _style(self, name: str) -> Style:
        style = self._styles.get(name)
        if style is None:
            style = self.get_component_rich_style(f"message-log--{name}", partial=True)
            self._styles[name] = style
        return style

    def _draw(self, row: Row, line: int) -> tuple[list[Segment], int]:
        """One line's segments (unstyled by the widget's base style) and their cells."""
        width = self._width
        if isinstance(row, ChatMessage):
            return self._draw_message(row, line)
        if isinstance(row, date):
            return _rule(day_label(row, local_now().date()), width, self._style("day"))
        if row == NEW:
            return _rule("new", width, self._style("new"))
        text, loads = self._status()
        style = self._style("hint")
        if loads:
            style += Style.from_meta({"older": True})
        left = max(0, (width - cell_len(text)) // 2)
        return [Segment(" " * left), Segment(text, style)], left + cell_len(text)

    def _draw_message(self, message: ChatMessage, line: int) -> tuple[list[Segment], int]:
        lines = self._lines_of(message)
        text = lines[line] if line < len(lines) else ""
        prefix = self._prefix_width()
        if line > 0:
            return [Segment(" " * prefix), Segment(text)], prefix + cell_len(text)
        author = "You" if message.outgoing else printable(self.peer_name)
        author_style = self._style("me" if message.outgoing else "them")
        mark = MARKS.get(message.state, "?") if message.outgoing else ""
        mark_style = self._style(message.state) if mark and message.state in MARKS else None
        segments = [
            Segment(clock_time(message.sent_at_ms), self._style("time")),
            Segment(" "),
            Segment(_fit(author, self._author_width), author_style),
            Segment(" "),
            Segment(mark.ljust(MARK_WIDTH), mark_style),
            Segment(" "),
            Segment(text),
        ]
        return segments, prefix + cell_len(text)


def _finish(segments: list[Segment], cells: int, width: int, base: Style) -> Strip:
    """A drawn line: exactly `width` cells, the widget's base style under every segment (one
    Strip, no intermediate ones kept alive by Strip's own caches)."""
    if cells > width:
        segments = list(Segment.adjust_line_length(segments, width))
    elif cells < width:
        segments.append(Segment(" " * (width - cells)))
    return Strip(Segment.apply_style(segments, base), width)


def _author_width(peer_name: str) -> int:
    """The author column: "You" or the contact's name, up to MAX_AUTHOR_WIDTH cells."""
    return min(MAX_AUTHOR_WIDTH, max(3, cell_len(printable(peer_name))))


def _fit(text: str, width: int) -> str:
    """Exactly `width` cells: padded, or cut with an ellipsis."""
    if cell_len(text) <= width:
        return text + " " * (width - cell_len(text))
    cut = text
    while cut and cell_len(cut) > width - 1:
        cut = cut[:-1]
    return cut + "…" + " " * (width - 1 - cell_len(cut))


def _rule(label: str, width: int, style: Style) -> tuple[list[Segment], int]:
    text = f" {label} "
    side = max(0, width - cell_len(text))
    left = side // 2
    line = "─" * left + text + "─" * (side - left)
    return [Segment(line, style)], cell_len(line)
