"""How the TUI words file transfers: sizes, rates, times left, a text progress bar, a state, who
a transfer is with, and the toast for a file someone offers."""

from __future__ import annotations

import math
import os
from typing import Any

import msgspec
from rich.text import Text
from textual.notifications import SeverityLevel

from p2pid.sizes import human_size
from p2pid.tui.widgets.contact_records import BAD, DIM, GOOD, WARN
from p2pid.tui.widgets.group_records import cut
from p2pid.tui.widgets.message_log import one_line
from p2pid.wire.file_views import FileOffered, FileStateChanged, FileTransferView

BAR_CELLS = 8
STATE_STYLES = {
    "offered": WARN,
    "downloading": "bold",
    "waiting": WARN,
    "complete": GOOD,
    "failed": BAD,
    "cancelled": DIM,
    "sending": "bold",
}
ACTIVE_STATES = frozenset({"downloading", "sending"})
# Incoming transfers `file.accept` takes: an offer, or one paused (no source, a full disk).
ACCEPTABLE_STATES = frozenset({"offered", "waiting", "failed"})
FINISHED_STATES = frozenset({"complete", "cancelled"})


def human_rate(rate_bps: float) -> str:
    return f"{human_size(rate_bps)}/s"


def human_eta(seconds: float | None) -> str:
    """Time left: 45 s, 3 min, 1 h 5 min; "" when unknown."""
    if seconds is None or not math.isfinite(seconds) or seconds < 0:
        return ""
    whole = math.ceil(seconds)
    if whole < 60:
        return f"{whole} s"
    minutes = math.ceil(whole / 60)
    if minutes < 60:
        return f"{minutes} min"
    return f"{minutes // 60} h {minutes % 60} min"


def fraction(done: int, size: int) -> float:
    if size <= 0:
        return 1.0 if done >= size else 0.0
    return min(max(done / size, 0.0), 1.0)


def progress_bar(done: int, size: int, state: str, cells: int = BAR_CELLS) -> Text:
    """████░░░░  40%: `cells` wide, filled to the fraction done, coloured by the state."""
    part = fraction(done, size)
    filled = min(cells, int(part * cells + 1e-9))
    style = STATE_STYLES.get(state, "")
    bar = Text("█" * filled, style=style or "bold")
    bar.append("░" * (cells - filled), style=DIM)
    bar.append(f" {int(part * 100):>3}%")
    return bar


def speed_text(rate_bps: float | None, eta_s: float | None, separator: str = " · ") -> str:
    """The rate and the time left: 3.2 MB/s · 4 s."""
    if rate_bps is None:
        return ""
    eta = human_eta(eta_s)
    return f"{human_rate(rate_bps)}{separator}{eta}" if eta else human_rate(rate_bps)


def state_text(transfer: FileTransferView) -> Text:
    """The state, with a ⚠ when something is wrong and, for a file I send, how many have it."""
    label = transfer.state
    if transfer.direction == "out" and transfer.recipients:
        label = f"{label} {transfer.delivered}/{transfer.recipients}"
    if transfer.error and transfer.state not in FINISHED_STATES:
        label = f"{label} ⚠"
    return Text(label, style=STATE_STYLES.get(transfer.state, ""))


def clean(text: str) -> str:
    """A name someone else chose, on one line."""
    return one_line(text).strip()


def with_whom(transfer: FileTransferView) -> str:
    """Who a transfer is with: a person, a group, or a person in a group."""
    peer, group = clean(transfer.peer_name), clean(transfer.group_name)
    if group and peer:
        return f"{peer} in {group}"
    return group or peer or "—"


def name_text(transfer: FileTransferView, cells: int) -> Text:
    """The file's name after an arrow: ↓ incoming, ↑ outgoing."""
    arrow = "↓" if transfer.direction == "in" else "↑"
    return Text(f"{arrow} {cut(clean(transfer.name), cells)}")


def folder_of(transfer: FileTransferView) -> str:
    """The folder a transfer's file is (or goes) in; "" while an offer is not accepted."""
    if transfer.direction == "in" and transfer.folder:
        return transfer.folder
    return os.path.dirname(transfer.path) if transfer.path else ""


def offer_toast(transfer: FileTransferView) -> tuple[str, str]:
    """(text, title) for a file someone offers me."""
    name, size = clean(transfer.name), human_size(transfer.size)
    group = clean(transfer.group_name)
    where = f" in {group}" if group else ""
    if transfer.state == "offered":
        text = f"offers {name} ({size}){where}: F11 to accept"
    else:
        text = f"sends {name} ({size}){where}, accepted automatically (F11)"
    return text, clean(transfer.peer_name) or "someone"


def file_toast(event: dict[str, Any]) -> tuple[str, str, SeverityLevel] | None:
    """(text, title, severity) of the toast for a file.* event, or None: an offer, and an
    incoming file that is complete or failed."""
    try:
        if event.get("type") == "file.offered":
            return (*offer_toast(msgspec.convert(event, FileOffered).transfer), "information")
        if event.get("type") != "file.state":
            return None
        transfer = msgspec.convert(event, FileStateChanged).transfer
    except msgspec.ValidationError:
        return None
    if transfer.direction != "in":
        return None
    name = clean(transfer.name)
    if transfer.state == "complete":
        return (
            f"{name} is saved in {transfer.folder or folder_of(transfer)}",
            "Files",
            "information",
        )
    if transfer.state == "failed":
        return f"{name} failed: {clean(transfer.error)} (F11)", "Files", "error"
    return None
