"""Chats (a placeholder until its screen is built)."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.widgets import Static

from p2pid.tui.screens.base import SectionScreen


class ChatsScreen(SectionScreen):
    def compose_body(self) -> ComposeResult:
        yield Static("Chats")
