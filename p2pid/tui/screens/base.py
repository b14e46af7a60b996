"""What every section screen shares: the header and footer, daemon events, palette commands."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from textual.app import ComposeResult, SystemCommand
from textual.screen import Screen
from textual.widgets import Footer, Header

if TYPE_CHECKING:
    from p2pid.tui.app import P2pidApp


class SectionScreen(Screen[None]):
    """A top-level section. Subclasses compose their body in `compose_body`, react to daemon
    events in `on_daemon_event`, and offer their actions to the command palette in `commands`."""

    @property
    def p2pid(self) -> P2pidApp:
        from p2pid.tui.app import P2pidApp

        assert isinstance(self.app, P2pidApp)
        return self.app

    def compose(self) -> ComposeResult:
        yield Header(show_clock=False)
        yield from self.compose_body()
        yield Footer()

    def compose_body(self) -> ComposeResult:
        yield from ()

    def on_mount(self) -> None:
        self.p2pid.daemon_events.subscribe(self, self._daemon_event)
        if self.p2pid.connected:
            self.call_later(self.on_connected)

    async def _daemon_event(self, event: dict[str, Any]) -> None:
        if event.get("type") == "tui.connected":
            await self.on_connected()
        else:
            await self.on_daemon_event(event)

    async def on_connected(self) -> None:
        """The daemon is reachable (now, or it already was when this screen mounted): load."""

    async def on_daemon_event(self, event: dict[str, Any]) -> None:
        """An event pushed by the daemon while this screen is mounted."""

    def commands(self) -> Iterable[SystemCommand]:
        return ()
