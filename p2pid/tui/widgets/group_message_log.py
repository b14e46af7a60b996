"""A group's history: the chat's MessageLog, each message under its own sender's name.

Senders are named from the group's members (and from what a message event calls its sender); a
sender no longer in the group keeps the name last known, else the start of their identity id.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from rich.cells import cell_len
from rich.segment import Segment

from p2pid.tui.widgets.message_log import (
    MARK_WIDTH,
    ChatMessage,
    MessageLog,
    clock_time,
    printable,
)


@dataclass(eq=False, slots=True)
class GroupChatMessage(ChatMessage):
    sender_id: str = ""

    @classmethod
    def from_view(cls, view: Mapping[str, Any]) -> GroupChatMessage:
        return cls(
            message_id=str(view["message_id"]),
            outgoing=bool(view["outgoing"]),
            text=printable(str(view["text"])),
            sent_at_ms=int(view["sent_at_ms"]),
            state=str(view["state"]),
            lamport=int(view.get("lamport", 0)),
            kind=str(view.get("kind", "text")),
            sender_id=str(view.get("sender_id", "")),
        )


def _fit(text: str, width: int) -> str:
    if cell_len(text) <= width:
        return text + " " * (width - cell_len(text))
    while text and cell_len(text) > width - 1:
        text = text[:-1]
    return text + "…" + " " * (width - 1 - cell_len(text))


class GroupMessageLog(MessageLog):
    def __init__(self, *, id: str | None = None, classes: str | None = None) -> None:
        super().__init__(id=id, classes=classes)
        self.authors: dict[str, str] = {}  # identity id -> name

    def name_of(self, identity_id: str) -> str:
        return self.authors.get(identity_id) or identity_id[:8] or "?"

    def _longest(self) -> str:
        """The longest name: the author column fits it (up to its cap)."""
        return max((*self.authors.values(), "You"), key=cell_len)

    def show_group(
        self,
        messages: Iterable[ChatMessage],
        *,
        has_more: bool,
        first_unread: str | None = None,
        placeholder: str = "",
    ) -> None:
        """Replace the log with a group's newest page; scroll to its end."""
        self.show(
            messages,
            peer_name=self._longest(),
            has_more=has_more,
            first_unread=first_unread,
            placeholder=placeholder,
        )

    def set_authors(self, names: Mapping[str, str]) -> None:
        """Names for senders (added to those known); the author column fits the longest."""
        cleaned = {key: printable(name).replace("\n", " ") for key, name in names.items()}
        if all(self.authors.get(key) == name for key, name in cleaned.items()):
            return
        self.authors.update(cleaned)
        self._drawn.clear()
        self.rename(self._longest())
        self.refresh()

    def _draw_message(self, message: ChatMessage, line: int) -> tuple[list[Segment], int]:
        if line > 0 or message.outgoing or not isinstance(message, GroupChatMessage):
            return super()._draw_message(message, line)
        lines = self._lines_of(message)
        text = lines[0] if lines else ""
        segments = [
            Segment(clock_time(message.sent_at_ms), self._style("time")),
            Segment(" "),
            Segment(_fit(self.name_of(message.sender_id), self._author_width), self._style("them")),
            Segment(" "),
            Segment(" " * MARK_WIDTH),
            Segment(" "),
            Segment(text),
        ]
        return segments, self._prefix_width() + cell_len(text)
