"""What every section screen shares: the header and footer, daemon events, palette commands; and
what the sections listing one RPC method's records in a table share."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, ClassVar, Generic

import msgspec
from textual.app import ComposeResult, SystemCommand
from textual.css.query import NoMatches
from textual.screen import Screen
from textual.widgets import Footer, Header

from p2pid.rpc.protocol import RpcError
from p2pid.tui.widgets.contact_records import Coalesced, call_daemon, decode_list
from p2pid.tui.widgets.record_table import R, RecordTable

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


PEER_EVENTS = frozenset({"peer.connected", "peer.disconnected"})


class ListingScreen(SectionScreen, Generic[R]):
    """A section listing the records the RPC method METHOD returns, in a RecordTable keyed by
    PeerId: loaded when the daemon connects and whenever the screen comes back, reloaded on the
    daemon events in RELOAD_ON and when a listed peer connects or disconnects. Subclasses show a
    load in `show`; `loaded` is set once one is shown."""

    METHOD: ClassVar[str]
    RELOAD_ON: ClassVar[frozenset[str]] = frozenset()

    def __init__(self, record: type[R], table: type[RecordTable[R]]) -> None:
        super().__init__()
        self._record, self._table_type = record, table
        self.reload = Coalesced(self, self._load, f"{self.METHOD}-load")
        self.loaded = False

    async def on_connected(self) -> None:
        self.reload()

    def on_screen_resume(self) -> None:
        if self.p2pid.connected:
            self.reload()

    async def on_daemon_event(self, event: dict[str, Any]) -> None:
        kind = event.get("type")
        table = self._table()
        listed = table is not None and table.lists(event.get("peer_id"))
        if kind in self.RELOAD_ON or (kind in PEER_EVENTS and listed):
            self.reload()

    def _table(self) -> RecordTable[R] | None:
        try:
            return self.query_one(self._table_type)
        except NoMatches:
            return None

    @property
    def records(self) -> list[R]:
        table = self._table()
        return table.records if table is not None else []

    def selected(self) -> R | None:
        table = self._table()
        return table.selected if table is not None else None

    def ready(self) -> bool:
        """Whether the daemon is connected; if not, say so."""
        if not self.p2pid.connected:
            self.notify("Not connected to the daemon yet.", severity="warning")
        return self.p2pid.connected

    async def _load(self) -> None:
        if not self.p2pid.connected:
            return
        records = await self.fetch()
        if records is None or not self.is_attached:
            return
        try:
            self.show(records)
        except NoMatches:
            return
        self.loaded = True

    async def fetch(self) -> list[R] | None:
        """The records, or None when the daemon could not list them (the user was told why)."""
        try:
            return decode_list(self._record, await call_daemon(self.p2pid, self.METHOD))
        except RpcError:
            return None  # the app said why in a toast
        except msgspec.ValidationError as error:
            self.notify(f"cannot list {self.METHOD}: {error}", severity="error")
            return None

    def show(self, records: list[R]) -> None:
        """Show a load; NoMatches when the screen's widgets are gone."""
