"""Peers this node knows of: found on the network (mDNS) or connected, and whose device it is."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import ClassVar

from rich.text import Text
from textual.binding import Binding, BindingType
from textual.widgets import DataTable

from p2pid.tui.widgets.contact_records import DIM, GOOD, format_time, short_peer
from p2pid.wire.api import ContactSummary, PeerSummary


def peer_name(peer: PeerSummary, contact: ContactSummary | None = None) -> str:
    if contact is not None:
        return contact.name
    return peer.fields.get("name") or short_peer(peer.peer_id)


class PeerTable(DataTable[str | Text]):
    """Rows keyed by PeerId."""

    BINDINGS: ClassVar[list[BindingType]] = [Binding("enter", "select_cursor", "Contact request")]

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id, cursor_type="row", zebra_stripes=True)
        self._peers: dict[str, PeerSummary] = {}

    def on_mount(self) -> None:
        self.add_column("Name", key="name")
        self.add_column("Device", key="peer")
        self.add_column("Found", key="found")
        self.add_column("Connection", key="connection")
        self.add_column("Last seen", key="seen")
        self.add_column("Contact", key="contact")

    def show(self, peers: Sequence[PeerSummary], contacts: Mapping[str, ContactSummary]) -> None:
        """`contacts` maps a device's PeerId to its contact."""
        selected = self.selected_id
        self.clear()
        self._peers = {peer.peer_id: peer for peer in peers}
        order = sorted(peers, key=lambda p: (not p.discovered, peer_name(p).casefold()))
        for peer in order:
            contact = contacts.get(peer.peer_id)
            self.add_row(
                Text(peer_name(peer, contact), style="bold"),
                short_peer(peer.peer_id),
                Text("nearby", style=GOOD) if peer.discovered else Text("known", style=DIM),
                Text("connected", style=GOOD) if peer.connected else Text("—", style=DIM),
                format_time(peer.last_seen_ms),
                Text(f"✓ {contact.name}", style=GOOD) if contact else Text("no", style=DIM),
                key=peer.peer_id,
            )
        if selected in self._peers:
            self.move_cursor(row=self.get_row_index(selected), animate=False)

    @property
    def selected_id(self) -> str | None:
        if not self.row_count:
            return None
        return self.coordinate_to_cell_key(self.cursor_coordinate).row_key.value

    @property
    def selected(self) -> PeerSummary | None:
        peer_id = self.selected_id
        return self._peers.get(peer_id) if peer_id else None
