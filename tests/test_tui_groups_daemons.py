"""The TUI's groups section (F10) against real daemons (subprocesses with temporary homes,
loopback only, mDNS off): Alice's TUI over her daemon makes a group with Bob and Carol (two CLI
daemons, her contacts), writes to it, sees Carol's answer live and removes Carol; what Bob's and
Carol's daemons know is checked through their command line.
"""

from __future__ import annotations

import asyncio
from functools import partial
from pathlib import Path
from typing import Any

from textual.pilot import Pilot
from textual.widgets import Input, SelectionList

from p2pid.home import Home
from p2pid.tui.link import DaemonOptions
from p2pid.tui.screens.contact_detail import ConfirmScreen
from p2pid.tui.screens.group_chat import GroupChatScreen
from p2pid.tui.screens.group_members import GroupMembersScreen
from p2pid.tui.screens.groups import GroupsScreen, NewGroupScreen
from p2pid.tui.widgets.composer import Composer
from p2pid.tui.widgets.group_message_log import GroupChatMessage
from p2pid.tui.widgets.group_tables import GroupTable, MemberTable
from tests.cli_helpers import p2pid_json
from tests.daemons import LOOPBACK, running_daemon
from tests.messaging_helpers import become_contacts
from tests.tui_fixtures import NotingApp, log_lines, until, until_cli


def received(home: Path, text: str) -> bool:
    """Whether `p2pid group messages Hikers` on this home lists `text` as received."""
    page = p2pid_json(home, "group", "messages", "Hikers")
    return any(m["text"] == text and not m["outgoing"] for m in page["messages"])


def my_role(home: Path, group_id: str) -> str | None:
    return next(
        (g["my_role"] for g in p2pid_json(home, "groups") if g["group_id"] == group_id), None
    )


async def create_hikers(app: NotingApp, pilot: Pilot[Any]) -> GroupChatScreen:
    """F10, n: "Hikers" with Bob and Carol picked; the new group's chat opens."""
    await until(pilot, lambda: app.connected, "the daemon")
    await pilot.press("f10")
    await until(
        pilot, lambda: isinstance(app.screen, GroupsScreen) and app.screen.loaded, "the groups"
    )
    assert app.screen.query_one(GroupTable).row_count == 0
    await pilot.press("n")
    await until(pilot, lambda: isinstance(app.screen, NewGroupScreen), "the new-group form")
    form = app.screen
    picker: SelectionList[str] = form.query_one("#group-contacts", SelectionList)
    await until(pilot, lambda: picker.option_count == 2, "Bob and Carol offered")
    name = form.query_one("#group-name", Input)
    await until(pilot, lambda: name.has_focus, "the name field focused")
    await pilot.press(*"Hikers")
    assert name.value == "Hikers"
    picker.focus()
    await until(pilot, lambda: picker.has_focus, "the member picker focused")
    await pilot.press("space", "down", "space")
    picked = {str(picker.get_option_at_index(i).prompt) for i in range(2)}
    assert picked == {"Bob", "Carol"} and len(picker.selected) == 2
    await pilot.click("#new-group-create")
    await until(
        pilot,
        lambda: isinstance(app.screen, GroupChatScreen) and app.screen.loaded,
        "the new group's chat",
    )
    chat = app.screen
    assert isinstance(chat, GroupChatScreen)
    assert chat.group_name == "Hikers" and chat.my_role == "admin" and chat.members == 3
    assert "Hikers is created." in app.toasts
    return chat


def test_a_group_made_written_to_and_pruned_from_the_tui(tmp_path: Path) -> None:
    alice, bob, carol = tmp_path / "alice", tmp_path / "bob", tmp_path / "carol"

    async def scenario(app: NotingApp, pilot: Pilot[Any]) -> None:
        chat = await create_hikers(app, pilot)
        group_id, log = chat.group_id, chat.message_log

        # Written in the composer: in the log here, then on Bob's and Carol's daemons.
        await until(
            pilot,
            lambda: isinstance(app.focused, Composer) and not chat.composer.read_only,
            "the composer focused and writable",
        )
        await pilot.press(*"hello hikers", "enter")
        await until(
            pilot,
            lambda: [(m.text, m.outgoing) for m in log.messages] == [("hello hikers", True)],
            "mine in the log",
        )
        for home in (bob, carol):
            await until_cli(pilot, partial(received, home, "hello hikers"), f"{home.name} has it")

        # Carol answers from her command line: it shows here, under her name.
        await asyncio.to_thread(p2pid_json, carol, "group", "send", "Hikers", "hi alice")
        await until(
            pilot,
            lambda: any("Carol" in line and "hi alice" in line for line in log_lines(log)),
            "Carol's message shown",
        )
        shown = [(m.text, m.outgoing) for m in log.messages]
        assert shown == [("hello hikers", True), ("hi alice", False)]

        # The members: Carol removed, after the question.
        await pilot.press("ctrl+g")
        await until(
            pilot,
            lambda: isinstance(app.screen, GroupMembersScreen) and app.screen.loaded,
            "the members",
        )
        members = app.screen
        assert isinstance(members, GroupMembersScreen)
        table = members.query_one(MemberTable)
        assert sorted(m.name for m in table.records) == ["Alice", "Bob", "Carol"]
        carol_id = next(m.identity_id for m in table.records if m.name == "Carol")
        carols = log.messages[-1]
        assert isinstance(carols, GroupChatMessage) and carols.sender_id == carol_id
        table.move_cursor(row=table.get_row_index(carol_id))
        await pilot.press("x")
        await until(pilot, lambda: isinstance(app.screen, ConfirmScreen), "the question")
        await pilot.press("y")
        await until(
            pilot,
            lambda: sorted(m.name for m in table.records) == ["Alice", "Bob"],
            "Carol gone from the members",
        )
        assert app.screen is members and "Carol is removed." in app.toasts
        await until_cli(pilot, lambda: my_role(carol, group_id) == "removed", "Carol removed")
        assert await asyncio.to_thread(my_role, bob, group_id) == "member"

    with (
        running_daemon(alice, "Alice"),
        running_daemon(bob, "Bob"),
        running_daemon(carol, "Carol"),
    ):
        become_contacts(alice, bob)
        become_contacts(alice, carol)

        async def main() -> None:
            options = DaemonOptions(listen=[LOOPBACK], no_mdns=True)
            app = NotingApp(Home(alice), daemon=options)
            async with app.run_test(size=(100, 40)) as pilot:
                await scenario(app, pilot)

        asyncio.run(main())
