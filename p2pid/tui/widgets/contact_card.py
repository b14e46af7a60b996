"""One contact in full: who they are, how sure we are of it, their devices, what they share."""

from __future__ import annotations

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text
from textual.widgets import Static

from p2pid.tui.widgets.contact_records import (
    BAD,
    DIM,
    GOOD,
    WARN,
    format_time,
    online_text,
    verified_text,
)
from p2pid.wire.api import ContactSummary


def identity_warning(contact: ContactSummary) -> Text:
    return Text(
        f"⚠ A device of {contact.name} presented another identity key. p2pid did not accept "
        "it: whoever uses that device now may not be the person you know. Check with them in "
        "person, then remove and re-add them, or block them.",
        style=BAD,
    )


def render_contact(contact: ContactSummary) -> RenderableType:
    parts: list[RenderableType] = []
    if contact.identity_changed:
        parts += [identity_warning(contact), Text()]
    if contact.blocked:
        parts += [
            Text("Blocked: nothing is sent to them, nothing from them is accepted.", style=BAD),
            Text(),
        ]

    facts = Table.grid(padding=(0, 2))
    facts.add_column(style="bold", no_wrap=True)
    facts.add_column()
    facts.add_row("Name", Text(contact.name))
    facts.add_row("Their name", Text(contact.display_name))
    facts.add_row(
        "Nickname", Text(contact.nickname) if contact.nickname else Text("none", style=DIM)
    )
    verified = verified_text(contact)
    if not contact.verified:
        verified.append("  press v to compare codes with them", style=DIM)
    facts.add_row("Verified", verified)
    facts.add_row("Status", online_text(contact))
    facts.add_row("Fingerprint", Text(contact.fingerprint))
    facts.add_row("Added", Text(format_time(contact.added_at_ms)))
    parts.append(facts)

    parts.append(Text("\nDevices", style="bold"))
    if not contact.devices:
        parts.append(Text("  no known device", style=DIM))
    for device in contact.devices:
        line = Text("  ")
        line.append("● " if device.connected else "○ ", style=GOOD if device.connected else DIM)
        line.append(device.name or "(unnamed)")
        line.append(f"  {device.peer_id}", style=DIM)
        parts.append(line)

    parts.append(Text("\nShared with you", style="bold"))
    if not contact.fields:
        parts.append(Text("  nothing shared", style=DIM))
    else:
        shared = Table.grid(padding=(0, 2))
        shared.add_column(style=WARN, no_wrap=True)
        shared.add_column()
        for name, value in sorted(contact.fields.items()):
            shared.add_row(f"  {name}", Text(value))
        parts.append(shared)
    return Group(*parts)


class ContactCard(Static):
    def show(self, contact: ContactSummary) -> None:
        self.update(render_contact(contact))
