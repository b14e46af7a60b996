"""The daemon's records as the contact, profile and nearby screens read them: typed, with the
wording the screens share (verified or not, online or not, who sees a field); and the one way
these screens call the daemon."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import TYPE_CHECKING, Any, TypeVar

import msgspec
from rich.text import Text
from textual.dom import DOMNode

from p2pid.wire.api import ContactSummary

if TYPE_CHECKING:
    from p2pid.tui.app import P2pidApp

T = TypeVar("T")

# Rich styles for states (DataTable cells and Static text; theme-independent on purpose).
GOOD = "bold green"
WARN = "bold yellow"
BAD = "bold red"
DIM = "dim"


async def call_daemon(app: P2pidApp, method: str, /, *, toast: bool = True, **params: Any) -> Any:
    """One RPC call from a worker: `app.rpc` (the daemon's refusal toasted) or, with
    toast=False, the link's bare call (the caller says what went wrong).

    Shielded: when the worker is cancelled (a newer reload, a dialog closed) the call still runs
    to its answer and the answer is dropped. Cancelling the call itself would leave the RPC
    client a cancelled future that its reader later fails to resolve."""
    call = app.rpc(method, **params) if toast else app.link.call(method, **params)
    return await asyncio.shield(call)


class Coalesced:
    """A reload that never piles up: called while a load runs, it runs once more afterwards.

    Events can come in bursts (peers connecting); each asks for a reload, and one load after
    the burst shows the same thing. The load runs in a worker of `node`, so it ends with it."""

    def __init__(self, node: DOMNode, load: Callable[[], Awaitable[None]], group: str) -> None:
        self._node, self._load, self._group = node, load, group
        self._stale = False
        self._running = False

    def __call__(self) -> None:
        self._stale = True
        if not self._running:
            self._running = True
            self._node.run_worker(self._run(), group=self._group)

    async def _run(self) -> None:
        try:
            while self._stale:
                self._stale = False
                await self._load()
        finally:
            self._running = False


def decode(kind: type[T], data: Any) -> T:
    """One RPC result as its record; a malformed one raises msgspec.ValidationError."""
    return msgspec.convert(data, kind)


def decode_list(kind: type[T], data: Any) -> list[T]:
    return [msgspec.convert(item, kind) for item in data or ()]


def format_time(ms: int | None) -> str:
    if ms is None:
        return "never"
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(ms / 1000))


def short_peer(peer_id: str) -> str:
    """Enough of a PeerId to tell two apart (they all start 12D3KooW)."""
    return peer_id if len(peer_id) <= 16 else f"{peer_id[:8]}…{peer_id[-6:]}"


def verified_text(contact: ContactSummary) -> Text:
    if contact.verified:
        how = {"sas": "compared codes", "invite": "by invite"}.get(
            contact.verified_by or "", contact.verified_by or ""
        )
        return Text(f"✓ verified ({how})" if how else "✓ verified", style=GOOD)
    return Text("unverified", style=WARN)


def is_online(contact: ContactSummary) -> bool:
    return any(device.connected for device in contact.devices)


def online_text(contact: ContactSummary) -> Text:
    if is_online(contact):
        return Text("● online", style=GOOD)
    return Text("○ offline", style=DIM)


def state_text(contact: ContactSummary, asks_to_verify: bool = False) -> Text:
    """What needs attention about a contact: an identity change first, then blocked."""
    text = Text()
    if contact.identity_changed:
        text.append("⚠ IDENTITY CHANGED", style=BAD)
    if contact.blocked:
        text.append(("  " if text else "") + "blocked", style=BAD)
    if asks_to_verify:
        text.append(("  " if text else "") + "asks to verify you", style=WARN)
    return text


def names_by_identity(contacts: Iterable[ContactSummary]) -> dict[str, str]:
    return {contact.identity_id: contact.name for contact in contacts}


def contacts_by_peer(contacts: Iterable[ContactSummary]) -> dict[str, ContactSummary]:
    return {device.peer_id: contact for contact in contacts for device in contact.devices}
