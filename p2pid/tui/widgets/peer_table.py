"""Peers this node knows of: found on the network (mDNS) or connected, and whose device it is."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import ClassVar

from rich.text import Text
from textual.binding import Binding, BindingType

from p2pid.tui.widgets.contact_records import DIM, GOOD, format_time, short_peer
from p2pid.tui.widgets.record_table import Cell, RecordTable
from p2pid.wire.api import ContactSummary, PeerSummary


def peer_name(peer: PeerSummary, contact: ContactSummary | None = None) -> str:
    if contact is not None:
        return contact.name
    return peer.fields.get("name") or short_peer(peer.peer_id)


def peer_row(peer: PeerSummary, contact: ContactSummary | None) -> tuple[Cell, ...]:
    return (
        Text(peer_name(peer, contact), style="bold"),
        short_peer(peer.peer_id),
        Text("nearby", style=GOOD) if peer.discovered else Text("known", style=DIM),
        Text("connected", style=GOOD) if peer.connected else Text("—", style=DIM),
        format_time(peer.last_seen_ms),
        Text(f"✓ {contact.name}", style=GOOD) if contact else Text("no", style=DIM),
    )


class PeerTable(RecordTable[PeerSummary]):
    """Rows keyed by PeerId."""

    BINDINGS: ClassVar[list[BindingType]] = [Binding("enter", "select_cursor", "Contact request")]
    COLUMNS: ClassVar[tuple[tuple[str, str], ...]] = (
        ("Name", "name"),
        ("Device", "peer"),
        ("Found", "found"),
        ("Connection", "connection"),
        ("Last seen", "seen"),
        ("Contact", "contact"),
    )

    def show(self, peers: Sequence[PeerSummary], contacts: Mapping[str, ContactSummary]) -> None:
        """`contacts` maps a device's PeerId to its contact."""
        self.fill(
            {peer.peer_id: peer for peer in peers},
            order=lambda p: (not p.discovered, peer_name(p).casefold()),
            cells=lambda p: peer_row(p, contacts.get(p.peer_id)),
        )
