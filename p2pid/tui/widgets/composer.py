"""The message input: a multi-line text area. Enter sends; Shift+Enter or Ctrl+J (or Alt+Enter,
for terminals that cannot tell Shift+Enter from Enter) starts a new line. Empty text is not sent.
Page Up / Page Down scroll the conversation above, so reading back never needs the mouse."""

from __future__ import annotations

from typing import ClassVar

from textual import events
from textual.binding import Binding, BindingType
from textual.message import Message
from textual.widgets import TextArea

NEWLINE_KEYS = frozenset({"shift+enter", "ctrl+j", "alt+enter", "newline"})


class Composer(TextArea):
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("pageup", "scroll_log(-1)", "Older", show=False),
        Binding("pagedown", "scroll_log(1)", "Newer", show=False),
    ]

    DEFAULT_CSS = """
    Composer {
        height: auto;
        min-height: 3;
        max-height: 10;
    }
    """

    class Submitted(Message):
        """Send this text (never empty or blank)."""

        def __init__(self, composer: Composer, text: str) -> None:
            super().__init__()
            self.composer = composer
            self.text = text

        @property
        def control(self) -> Composer:
            return self.composer

    class ScrollLog(Message):
        """Page the conversation up (-1, older) or down (1)."""

        def __init__(self, direction: int) -> None:
            super().__init__()
            self.direction = direction

    def __init__(
        self,
        *,
        placeholder: str = "",
        id: str | None = None,
        classes: str | None = None,
    ) -> None:
        super().__init__(
            "",
            soft_wrap=True,
            tab_behavior="focus",
            show_line_numbers=False,
            placeholder=placeholder,
            compact=False,
            id=id,
            classes=classes,
        )

    async def _on_key(self, event: events.Key) -> None:
        if event.key == "enter":
            event.stop()
            event.prevent_default()
            self.submit()
            return
        if event.key in NEWLINE_KEYS:
            event.stop()
            event.prevent_default()
            if not self.read_only:
                start, end = self.selection
                self._replace_via_keyboard("\n", start, end)
            return
        await super()._on_key(event)

    def submit(self) -> None:
        if self.read_only or self.disabled:
            return
        text = self.text
        if not text.strip():
            return
        self.post_message(self.Submitted(self, text.strip()))
        self.clear()

    def action_scroll_log(self, direction: int) -> None:
        self.post_message(self.ScrollLog(direction))
