"""My groups (as `groups` lists them) and a group's members (as `group.show` lists them), one row
per record; the cursor stays on the same record across reloads."""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

from rich.text import Text
from textual.binding import Binding, BindingType

from p2pid.tui.widgets.contact_records import DIM, GOOD, WARN, format_time
from p2pid.tui.widgets.group_records import group_label, is_active, preview, role_text
from p2pid.tui.widgets.message_log import printable
from p2pid.tui.widgets.record_table import Cell, RecordTable
from p2pid.wire.group_views import GroupMemberView, GroupSummary


def group_row(group: GroupSummary) -> tuple[Cell, ...]:
    active = is_active(group.my_role)
    return (
        Text(group_label(group.name, group.avatar), style="bold" if active else DIM),
        role_text(group.my_role),
        str(group.members),
        Text(f" {group.unread} ", style="bold reverse") if group.unread else "",
        preview(group.last_message),
        format_time(group.updated_at_ms),
    )


class GroupTable(RecordTable[GroupSummary]):
    """Rows keyed by group id: the most recently active first, groups I left or was removed
    from last."""

    BINDINGS: ClassVar[list[BindingType]] = [Binding("enter", "select_cursor", "Open")]
    COLUMNS: ClassVar[tuple[tuple[str, str], ...]] = (
        ("Group", "name"),
        ("Me", "role"),
        ("Members", "members"),
        ("Unread", "unread"),
        ("Last message", "last"),
        ("Active", "when"),
    )

    def show(self, groups: Sequence[GroupSummary]) -> None:
        self.fill(
            {group.group_id: group for group in groups},
            order=lambda g: (not is_active(g.my_role), -g.updated_at_ms, g.name.casefold()),
            cells=group_row,
        )


def member_row(member: GroupMemberView) -> tuple[Cell, ...]:
    name = printable(member.name).replace("\n", " ")
    if member.is_me:
        contact = Text("you", style=DIM)
    elif member.is_contact:
        contact = Text("✓ contact", style=GOOD)
    else:
        contact = Text("not a contact", style=WARN)
    devices = Text(str(member.devices), style=WARN if not member.devices else "")
    return (
        Text(f"{name} (you)" if member.is_me else name, style="bold"),
        role_text(member.role),
        devices,
        contact,
        format_time(member.added_at_ms),
    )


class MemberTable(RecordTable[GroupMemberView]):
    """Rows keyed by identity id, in the daemon's order (admins first, most senior first, then
    by name)."""

    BINDINGS: ClassVar[list[BindingType]] = [Binding("enter", "select_cursor", "Select")]
    COLUMNS: ClassVar[tuple[tuple[str, str], ...]] = (
        ("Name", "name"),
        ("Role", "role"),
        ("Devices", "devices"),
        ("Contact", "contact"),
        ("Added", "added"),
    )

    def show(self, members: Sequence[GroupMemberView]) -> None:
        place = {member.identity_id: index for index, member in enumerate(members)}
        self.fill(
            {member.identity_id: member for member in members},
            order=lambda m: place[m.identity_id],
            cells=member_row,
        )
