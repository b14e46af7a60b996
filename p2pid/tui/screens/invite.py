"""My invite and joining (placeholders until their screens are built)."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.widgets import Static

from p2pid.tui.screens.base import SectionScreen


class InviteScreen(SectionScreen):
    def compose_body(self) -> ComposeResult:
        yield Static("My invite")


class JoinScreen(SectionScreen):
    def compose_body(self) -> ComposeResult:
        yield Static("Join")
