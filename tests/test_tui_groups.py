"""The TUI's groups section (F10): the list, a new group, joining by code, join requests, a group's
chat and its receipts, its members and the admin actions, a group invite.

Snapshot tests render each screen from a ScriptedLink: the scripted answers stand in for the
daemon (same shapes as the `groups` / `group.*` RPCs, built from the wire records) so the pictures
are pixel-stable. The scripted behaviour tests check which RPC calls the screens make, with which
params, and that a refusal changes nothing.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import msgspec
from textual.pilot import Pilot
from textual.widgets import Input, OptionList, SelectionList

from p2pid.rpc.protocol import ErrorCode
from p2pid.tui.app import P2pidApp
from p2pid.tui.screens.contact_detail import ConfirmScreen
from p2pid.tui.screens.group_chat import GroupChatScreen, ReceiptsScreen
from p2pid.tui.screens.group_members import (
    AddMemberScreen,
    GroupInviteScreen,
    GroupMembersScreen,
    read_uses,
)
from p2pid.tui.screens.groups import (
    GroupsScreen,
    JoinGroupScreen,
    JoinRequestsScreen,
    NewGroupScreen,
)
from p2pid.tui.widgets.composer import Composer
from p2pid.tui.widgets.group_tables import GroupTable, MemberTable
from p2pid.tui.widgets.qr_view import QrView
from p2pid.wire.group_views import (
    GroupInviteCreated,
    GroupJoinRequestView,
    GroupJoinResult,
    GroupMemberView,
    GroupMessageReceipts,
    GroupReceiptView,
    GroupSummary,
    GroupView,
)
from p2pid.wire.messages import MessagePage, MessageView
from tests.tui_fixtures import (
    AT_MS,
    NotingApp,
    QuietApp,
    ScriptedLink,
    contact,
    identity_id,
    initialised_home,
    methods,
    no_blink,
    open_modal,
    refuse,
    run_scripted,
    scenario_then,
    size_ids,
    text_of,
    until,
)

os.environ["TZ"] = "UTC"
time.tzset()

MINUTE_MS = 60_000
# A group invite code's text (fixed, so its QR code is the same picture on every run).
FIXED_GROUP_CODE = "P2PID:" + "AEBAGBAFAYDQQCIKBMGA2DQPCAIREEYUCULBOGAZDINRYHI6D4QA" * 3


def peer_id(tail: str) -> str:
    return "12D3KooW" + (tail * 44)[:44]


ME, BOB, CAROL, DAVE, ERIN = (identity_id(n) for n in (9, 1, 2, 3, 4))
CLIMBING, BOOKS, OLD = "c1" * 32, "b0" * 32, "0d" * 32


def plain(record: Any) -> Any:
    """A wire record as the JSON the daemon sends."""
    return msgspec.to_builtins(record)


def member(
    identity: str, name: str, role: str = "member", *, devices: int = 1, contact: bool = True
) -> GroupMemberView:
    return GroupMemberView(
        identity_id=identity,
        name=name,
        role=role,
        is_me=identity == ME,
        is_contact=contact and identity != ME,
        devices=devices,
        added_by=ME,
        added_at_ms=AT_MS - 3 * 86_400_000,
    )


MEMBERS = [
    member(ME, "Alice", "admin", devices=2),
    member(BOB, "Bob", "admin"),
    member(CAROL, "Carol"),
    member(DAVE, "Dave Oyelaran-Featherstonehaugh", contact=False, devices=0),
]


def group_view(members: list[GroupMemberView] | None = None, **overrides: Any) -> GroupView:
    fields: dict[str, Any] = {
        "group_id": CLIMBING,
        "name": "Climbing club",
        "avatar": "🧗",
        "my_role": "admin",
        "members": MEMBERS if members is None else members,
        "version": 7,
        "created_at_ms": AT_MS - 3 * 86_400_000,
    }
    fields.update(overrides)
    return GroupView(**fields)


def message(
    number: int, sender: str, minutes: int, text: str, *, state: str, group: str = CLIMBING
) -> MessageView:
    at = AT_MS + minutes * MINUTE_MS
    return MessageView(
        message_id=f"{number:032x}",
        conversation_id=group,
        sender_id=sender,
        sender_device=peer_id("A") if sender == ME else peer_id("B"),
        outgoing=sender == ME,
        text=text,
        sent_at_ms=at,
        received_at_ms=at + 300,
        lamport=number,
        state=state,
    )


MESSAGES = [
    message(1, BOB, 9 * 60, "Saturday at the crag? Forecast says dry.", state="read"),
    message(2, ME, 9 * 60 + 4, "I'm in. I can bring the 70 m rope.", state="read"),
    message(3, CAROL, 9 * 60 + 10, "Me too, if someone can pick me up.", state="read"),
    message(
        4,
        DAVE,
        9 * 60 + 31,
        "I can drive: four seats, leaving 7:30 from the station. Bring your own lunch, the "
        "café at the top closes in winter.",
        state="read",
    ),
    message(5, ME, 10 * 60 + 2, "Perfect, see you there", state="delivered"),
    message(6, CAROL, 10 * 60 + 15, "🙌 thanks Dave", state="unread"),
]

GROUPS = [
    GroupSummary(
        group_id=CLIMBING,
        name="Climbing club",
        avatar="🧗",
        my_role="admin",
        members=4,
        unread=1,
        last_message=MESSAGES[-1],
        updated_at_ms=AT_MS + (10 * 60 + 15) * MINUTE_MS,
    ),
    GroupSummary(
        group_id=BOOKS,
        name="Book club",
        avatar="",
        my_role="member",
        members=9,
        unread=0,
        last_message=message(40, ME, -60, "Chapter 4 by Thursday?", state="read", group=BOOKS),
        updated_at_ms=AT_MS - 60 * MINUTE_MS,
    ),
    GroupSummary(
        group_id=OLD,
        name="Flat 3B",
        avatar="🏠",
        my_role="left",
        members=3,
        unread=0,
        last_message=None,
        updated_at_ms=AT_MS - 90 * 86_400_000,
    ),
]

REQUESTS = [
    GroupJoinRequestView(
        request_id="req-1",
        group_id=CLIMBING,
        group_name="Climbing club",
        identity_id=ERIN,
        name="Erin",
        requested_at_ms=AT_MS + 11 * 60 * MINUTE_MS,
    ),
    GroupJoinRequestView(
        request_id="req-2",
        group_id=CLIMBING,
        group_name="Climbing club",
        identity_id=identity_id(5),
        name="Frank",
        requested_at_ms=AT_MS + 11 * 60 * MINUTE_MS + 5 * MINUTE_MS,
    ),
]


CONTACTS = [
    contact(BOB, "Bob"),
    contact(CAROL, "Carol"),
    contact(ERIN, "Erin"),
    contact(identity_id(6), "Grace"),
    contact(identity_id(7), "Mallory", blocked=True),
]


def receipts(group: str, message_id: str) -> dict[str, Any]:
    states = {
        f"{5:032x}": [("delivered", 5), ("pending", None), ("read", 20)],
        f"{2:032x}": [("read", 30), ("read", 31), ("read", 40)],
    }[message_id]
    others = [m for m in MEMBERS if not m.is_me]
    return plain(
        GroupMessageReceipts(
            group_id=group,
            message_id=message_id,
            receipts=[
                GroupReceiptView(
                    identity_id=m.identity_id,
                    name=m.name,
                    state=state,
                    at_ms=None if minutes is None else AT_MS + (10 * 60 + minutes) * MINUTE_MS,
                )
                for m, (state, minutes) in zip(others, states, strict=True)
            ],
        )
    )


def scripted_link(**answers: Any) -> ScriptedLink:
    """The daemon of Alice, admin of the climbing club. Membership changes change the view the
    next `group.show` returns, as the daemon would."""
    members = list(MEMBERS)

    def show(group: str) -> Any:
        return plain(group_view(members))

    def remove(group: str, member: str) -> Any:
        members[:] = [m for m in members if m.identity_id != member]
        return show(group)

    def page(group: str, limit: int = 50, before: str | None = None) -> Any:
        return plain(
            MessagePage(
                conversation_id=group,
                name="Climbing club",
                messages=MESSAGES,
                unread=1,
                before=None,
            )
        )

    def send(group: str, text: str) -> Any:
        return plain(message(50, ME, 11 * 60, text, state="pending"))

    def create(name: str, avatar: str = "", members: list[str] | None = None) -> Any:
        chosen = [m for m in MEMBERS if m.identity_id in (members or [])]
        return plain(
            group_view([MEMBERS[0], *chosen], group_id="ae" * 32, name=name, avatar=avatar)
        )

    def invite(group: str, uses: int = 1, ttl: int = 86400, approval: bool = False) -> Any:
        return plain(
            GroupInviteCreated(
                group_id=group,
                invite_id="inv-1",
                code=FIXED_GROUP_CODE,
                expires_at=AT_MS // 1000 + ttl,
                uses=uses,
                approval=approval,
            )
        )

    return ScriptedLink(
        {
            "groups": plain(GROUPS),
            "group.requests": plain(REQUESTS),
            "contacts": CONTACTS,
            "group.show": show,
            "group.messages": page,
            "group.read": lambda group: 1,
            "group.send": send,
            "group.create": create,
            "group.remove": remove,
            "group.receipts": receipts,
            "group.invite": invite,
            "group.approve": lambda request_id, accept: plain(group_view()) if accept else None,
            "group.join": lambda code: plain(GroupJoinResult(state="waiting", group=None)),
            **answers,
        }
    )


# -- getting to each screen --------------------------------------------------------------------


def groups_ready(app: P2pidApp) -> bool:
    return isinstance(app.screen, GroupsScreen) and app.screen.loaded


async def open_groups(pilot: Pilot[Any]) -> None:
    app = pilot.app
    assert isinstance(app, P2pidApp)
    await until(pilot, lambda: app.connected, "the link")
    await pilot.press("f10")
    await until(pilot, lambda: groups_ready(app), "the groups")


def chat(app: P2pidApp) -> GroupChatScreen:
    assert isinstance(app.screen, GroupChatScreen)
    return app.screen


async def open_chat(pilot: Pilot[Any]) -> None:
    await open_groups(pilot)
    await pilot.press("enter")  # the climbing club is the most recent
    await until(pilot, lambda: chat(pilot.app).loaded, "the group's messages")
    pilot.app.screen.query_one(Composer).cursor_blink = False
    await pilot.pause()


def members_screen(app: P2pidApp) -> GroupMembersScreen:
    assert isinstance(app.screen, GroupMembersScreen)
    return app.screen


async def open_members(pilot: Pilot[Any]) -> None:
    await open_groups(pilot)
    await pilot.press("m")
    await until(pilot, lambda: members_screen(pilot.app).loaded, "the members")


def snapshot_app(tmp_path: Path, link: ScriptedLink | None = None) -> QuietApp:
    link = link or scripted_link()
    return QuietApp(initialised_home(tmp_path / "home"), link_factory=link.factory())


# -- snapshots ---------------------------------------------------------------------------------


@size_ids
def test_snapshot_groups(snap_compare: Any, tmp_path: Path, size: tuple[int, int]) -> None:
    """Avatar and name, my role, members, unread, the last message; a left group dimmed last;
    the join requests waiting said above."""
    assert snap_compare(snapshot_app(tmp_path), terminal_size=size, run_before=open_groups)


@size_ids
def test_snapshot_new_group(snap_compare: Any, tmp_path: Path, size: tuple[int, int]) -> None:
    async def fill(pilot: Pilot[Any]) -> None:
        screen = await open_modal(pilot, "n", NewGroupScreen)
        picker = screen.query_one(SelectionList)
        await until(pilot, lambda: picker.option_count == 4, "the contacts (not the blocked)")
        screen.query_one("#group-name", Input).value = "Climbing club"
        screen.query_one("#group-avatar", Input).value = "🧗"
        picker.select(BOB)
        picker.select(CAROL)
        no_blink(screen)

    run_before = scenario_then(open_groups, fill)
    assert snap_compare(snapshot_app(tmp_path), terminal_size=size, run_before=run_before)


@size_ids
def test_snapshot_join_waiting(snap_compare: Any, tmp_path: Path, size: tuple[int, int]) -> None:
    """A code whose invite needs an admin: "waiting for an admin"."""

    async def join(pilot: Pilot[Any]) -> None:
        screen = await open_modal(pilot, "j", JoinGroupScreen)
        no_blink(screen)
        screen.query_one(Input).value = FIXED_GROUP_CODE
        await pilot.press("enter")
        await until(pilot, lambda: screen.result is not None, "the answer")

    run_before = scenario_then(open_groups, join)
    assert snap_compare(snapshot_app(tmp_path), terminal_size=size, run_before=run_before)


@size_ids
def test_snapshot_join_requests(snap_compare: Any, tmp_path: Path, size: tuple[int, int]) -> None:
    async def requests(pilot: Pilot[Any]) -> None:
        screen = await open_modal(pilot, "r", JoinRequestsScreen)
        await until(pilot, lambda: screen.loaded, "the requests")

    run_before = scenario_then(open_groups, requests)
    assert snap_compare(snapshot_app(tmp_path), terminal_size=size, run_before=run_before)


@size_ids
def test_snapshot_group_chat(snap_compare: Any, tmp_path: Path, size: tuple[int, int]) -> None:
    """Each message under its sender's name, mine with their marks, the header."""
    assert snap_compare(snapshot_app(tmp_path), terminal_size=size, run_before=open_chat)


@size_ids
def test_snapshot_receipts(snap_compare: Any, tmp_path: Path, size: tuple[int, int]) -> None:
    async def receipts_of_newest(pilot: Pilot[Any]) -> None:
        screen = await open_modal(pilot, "ctrl+r", ReceiptsScreen)
        await until(pilot, lambda: screen.shown is not None, "the receipts")

    run_before = scenario_then(open_chat, receipts_of_newest)
    assert snap_compare(snapshot_app(tmp_path), terminal_size=size, run_before=run_before)


@size_ids
def test_snapshot_members(snap_compare: Any, tmp_path: Path, size: tuple[int, int]) -> None:
    assert snap_compare(snapshot_app(tmp_path), terminal_size=size, run_before=open_members)


@size_ids
def test_snapshot_add_member(snap_compare: Any, tmp_path: Path, size: tuple[int, int]) -> None:
    async def pick(pilot: Pilot[Any]) -> None:
        screen = await open_modal(pilot, "a", AddMemberScreen)
        options = screen.query_one(OptionList)
        await until(pilot, lambda: options.option_count == 2, "Erin and Grace")

    run_before = scenario_then(open_members, pick)
    assert snap_compare(snapshot_app(tmp_path), terminal_size=size, run_before=run_before)


@size_ids
def test_snapshot_group_invite(snap_compare: Any, tmp_path: Path, size: tuple[int, int]) -> None:
    """The code as a QR code (100x40) or, too small for it (80x24), said so, with the text."""

    async def invite(pilot: Pilot[Any]) -> None:
        screen = await open_modal(pilot, "i", GroupInviteScreen)
        await pilot.click("#group-invite-approval")
        await pilot.click("#group-invite-create")
        await until(pilot, lambda: screen.created is not None, "the invite")

    run_before = scenario_then(open_members, invite)
    assert snap_compare(snapshot_app(tmp_path), terminal_size=size, run_before=run_before)


# -- scripted behaviour ------------------------------------------------------------------------


def test_creating_a_group_sends_its_name_avatar_and_members(tmp_path: Path) -> None:
    link = scripted_link()

    async def scenario(app: NotingApp, pilot: Pilot[Any]) -> None:
        screen = await open_modal(pilot, "n", NewGroupScreen)
        picker = screen.query_one(SelectionList)
        await until(pilot, lambda: picker.option_count == 4, "the contacts")
        await pilot.press("enter")  # no name: said, nothing sent
        assert "Give the group a name" in text_of(screen.query_one("#new-group-error"))
        assert "group.create" not in methods(link)
        await pilot.press(*"Hikers")
        await pilot.press("tab", *"⛰", "tab")
        await pilot.press("space", "down", "down", "space")  # Bob and Erin
        await pilot.click("#new-group-create")
        await until(pilot, lambda: isinstance(app.screen, GroupChatScreen), "the new chat")
        assert (
            "group.create",
            {"name": "Hikers", "avatar": "⛰", "members": [BOB, ERIN]},
        ) in link.calls
        assert chat(app).group_id == "ae" * 32
        assert any("Hikers is created" in toast for toast in app.toasts)

    run_scripted(tmp_path, link, scenario, open_section=open_groups)


def test_a_refused_group_is_said_and_the_dialog_stays(tmp_path: Path) -> None:
    link = scripted_link()
    link.answers["group.create"] = refuse(ErrorCode.INVALID_PARAMS, "Mallory is blocked")

    async def scenario(app: NotingApp, pilot: Pilot[Any]) -> None:
        screen = await open_modal(pilot, "n", NewGroupScreen)
        await pilot.press(*"Hikers", "enter")
        await until(pilot, lambda: "Mallory is blocked" in app.toasts, "the refusal")
        assert isinstance(app.screen, NewGroupScreen)
        assert "Mallory is blocked" in text_of(screen.query_one("#new-group-error"))

    run_scripted(tmp_path, link, scenario, open_section=open_groups)


def test_opening_a_group_reads_it_and_the_composer_sends(tmp_path: Path) -> None:
    link = scripted_link()

    async def scenario(app: NotingApp, pilot: Pilot[Any]) -> None:
        await pilot.press("enter")
        await until(pilot, lambda: isinstance(app.screen, GroupChatScreen), "the chat")
        screen = chat(app)
        await until(pilot, lambda: ("group.read", {"group": CLIMBING}) in link.calls, "read")
        assert ("group.show", {"group": CLIMBING}) in link.calls
        assert ("group.messages", {"group": CLIMBING, "limit": 50}) in link.calls
        assert app.viewing_conversation == CLIMBING
        log = screen.message_log
        assert [log.name_of(m.sender_id) for m in log.messages if not m.outgoing] == [
            "Bob",
            "Carol",
            "Dave Oyelaran-Featherstonehaugh",
            "Carol",
        ]
        await pilot.press(*"On my way", "enter")
        await until(pilot, lambda: "group.send" in methods(link), "the send")
        assert ("group.send", {"group": CLIMBING, "text": "On my way"}) in link.calls
        await until(pilot, lambda: log.message(f"{50:032x}") is not None, "mine in the log")

        # Live: a message from Erin (not yet a member here) under the event's name, read at once.
        reads = link.calls.count(("group.read", {"group": CLIMBING}))
        arrived = message(60, ERIN, 11 * 60 + 1, "hello all", state="unread")
        link.push(
            {
                "type": "group.message_received",
                "group_id": CLIMBING,
                "group_name": "Climbing club",
                "sender_name": "Erin",
                "message": plain(arrived),
            }
        )
        await until(pilot, lambda: log.message(arrived.message_id) is not None, "Erin's")
        assert log.name_of(ERIN) == "Erin"
        await until(
            pilot,
            lambda: link.calls.count(("group.read", {"group": CLIMBING})) > reads,
            "read again",
        )
        assert not any("hello all" in toast for toast in app.toasts)  # viewing it: no toast
        link.push(
            {
                "type": "group.message_state_changed",
                "group_id": CLIMBING,
                "message_ids": [f"{50:032x}"],
                "state": "read",
            }
        )
        await until(pilot, lambda: log.message(f"{50:032x}").state == "read", "its new mark")

        await pilot.press("escape")
        await until(pilot, lambda: isinstance(app.screen, GroupsScreen), "the list")
        assert app.viewing_conversation is None

    run_scripted(tmp_path, link, scenario, open_section=open_groups)


def test_a_refused_send_gives_the_text_back(tmp_path: Path) -> None:
    link = scripted_link()
    link.answers["group.send"] = refuse(ErrorCode.INVALID_PARAMS, "you left this group")

    async def scenario(app: NotingApp, pilot: Pilot[Any]) -> None:
        await pilot.press("enter")
        await until(pilot, lambda: chat(app).loaded, "the chat")
        await pilot.press(*"hello", "enter")
        await until(pilot, lambda: "you left this group" in app.toasts, "the refusal")
        await until(pilot, lambda: chat(app).composer.text == "hello", "the text back")
        assert len(chat(app).message_log.messages) == len(MESSAGES)

    run_scripted(tmp_path, link, scenario, open_section=open_groups)


def test_receipts_follow_the_highlighted_message(tmp_path: Path) -> None:
    link = scripted_link()

    async def scenario(app: NotingApp, pilot: Pilot[Any]) -> None:
        screen = await open_modal(pilot, "ctrl+r", ReceiptsScreen)
        newest, older = f"{5:032x}", f"{2:032x}"
        await until(pilot, lambda: screen.shown is not None, "the receipts")
        assert screen.shown is not None and screen.shown.message_id == newest
        assert ("group.receipts", {"group": CLIMBING, "message_id": newest}) in link.calls
        summary = screen.query_one("#receipts-summary")
        assert "Read by 1 of 3; delivered to 1 more; 1 waiting" in text_of(summary)
        await pilot.press("down")
        await until(pilot, lambda: screen.shown.message_id == older, "the older one")
        assert "Read by 3 of 3" in text_of(summary)

    run_scripted(tmp_path, link, scenario, open_section=open_chat)


def test_removing_a_member_asks_first(tmp_path: Path) -> None:
    link = scripted_link()

    async def scenario(app: NotingApp, pilot: Pilot[Any]) -> None:
        screen = members_screen(app)
        table = screen.query_one(MemberTable)
        table.move_cursor(row=table.get_row_index(ME))
        await pilot.press("x")
        assert any("That is you" in toast for toast in app.toasts)
        assert isinstance(app.screen, GroupMembersScreen)

        table.move_cursor(row=table.get_row_index(CAROL))
        await open_modal(pilot, "x", ConfirmScreen)
        await pilot.press("n")
        await until(pilot, lambda: isinstance(app.screen, GroupMembersScreen), "back")
        assert "group.remove" not in methods(link)

        await open_modal(pilot, "delete", ConfirmScreen)
        await pilot.press("y")
        await until(pilot, lambda: "group.remove" in methods(link), "the removal")
        assert ("group.remove", {"group": CLIMBING, "member": CAROL}) in link.calls
        await until(pilot, lambda: not table.lists(CAROL), "Carol gone from the list")
        assert any("Carol is removed" in toast for toast in app.toasts)

    run_scripted(tmp_path, link, scenario, open_section=open_members)


def test_admin_actions_send_the_member(tmp_path: Path) -> None:
    link = scripted_link()
    link.answers["group.promote"] = lambda group, member: plain(group_view())
    link.answers["group.demote"] = refuse(ErrorCode.INVALID_PARAMS, "Bob is senior to you")
    link.answers["group.add"] = lambda group, contact: plain(
        group_view([*MEMBERS, member(ERIN, "Erin")])
    )

    async def scenario(app: NotingApp, pilot: Pilot[Any]) -> None:
        screen = members_screen(app)
        table = screen.query_one(MemberTable)
        table.move_cursor(row=table.get_row_index(CAROL))
        await pilot.press("p")
        await until(pilot, lambda: "group.promote" in methods(link), "the promotion")
        assert ("group.promote", {"group": CLIMBING, "member": CAROL}) in link.calls
        table.move_cursor(row=table.get_row_index(BOB))
        await pilot.press("d")
        await until(pilot, lambda: "Bob is senior to you" in app.toasts, "the refusal")
        assert ("group.demote", {"group": CLIMBING, "member": BOB}) in link.calls

        picker = await open_modal(pilot, "a", AddMemberScreen)
        options = picker.query_one(OptionList)
        await until(pilot, lambda: options.option_count == 2, "Erin and Grace")
        await pilot.press("enter")
        await until(pilot, lambda: "group.add" in methods(link), "the addition")
        assert ("group.add", {"group": CLIMBING, "contact": ERIN}) in link.calls
        await until(pilot, lambda: table.lists(ERIN), "Erin listed")
        assert any("Erin is added" in toast for toast in app.toasts)

    run_scripted(tmp_path, link, scenario, open_section=open_members)


def test_a_plain_member_is_told_admin_actions_are_for_admins(tmp_path: Path) -> None:
    link = scripted_link()
    link.answers["group.show"] = lambda group: plain(group_view(my_role="member"))

    async def scenario(app: NotingApp, pilot: Pilot[Any]) -> None:
        table = members_screen(app).query_one(MemberTable)
        table.move_cursor(row=table.get_row_index(CAROL))
        for key in ("x", "p", "a", "i", "r"):
            await pilot.press(key)
        assert isinstance(app.screen, GroupMembersScreen)
        assert sum("Only an admin can" in toast for toast in app.toasts) == 5
        assert methods(link).count("group.show") == 1 and "contacts" not in methods(link)

    run_scripted(tmp_path, link, scenario, open_section=open_members)


def test_leaving_and_the_invite(tmp_path: Path) -> None:
    link = scripted_link()
    link.answers["group.leave"] = lambda group: plain(group_view(my_role="left"))

    async def scenario(app: NotingApp, pilot: Pilot[Any]) -> None:
        invite = await open_modal(pilot, "i", GroupInviteScreen)
        uses = invite.query_one("#group-invite-uses", Input)
        uses.value = "0"
        await pilot.click("#group-invite-create")
        assert "a number from 1 to 100" in text_of(invite.query_one("#group-invite-error"))
        uses.value = "5"
        await pilot.click("#group-invite-approval")
        await pilot.click("#group-invite-create")
        await until(pilot, lambda: invite.created is not None, "the invite")
        assert (
            "group.invite",
            {"group": CLIMBING, "uses": 5, "ttl": 86400, "approval": True},
        ) in link.calls
        assert invite.query_one(QrView).text == FIXED_GROUP_CODE
        assert text_of(invite.query_one("#group-invite-code")) == FIXED_GROUP_CODE
        assert "Lets 5 people in" in text_of(invite.query_one("#group-invite-meta"))
        await pilot.press("escape")
        await until(pilot, lambda: isinstance(app.screen, GroupMembersScreen), "back")

        await open_modal(pilot, "l", ConfirmScreen)
        await pilot.press("y")
        await until(pilot, lambda: "group.leave" in methods(link), "the leave")
        assert ("group.leave", {"group": CLIMBING}) in link.calls
        header = members_screen(app).query_one("#members-header")
        await until(pilot, lambda: "you: left" in text_of(header), "my new role")

    run_scripted(tmp_path, link, scenario, open_section=open_members)


def test_approving_and_refusing_join_requests(tmp_path: Path) -> None:
    link = scripted_link()
    waiting = list(REQUESTS)

    def approve(request_id: str, accept: bool) -> Any:
        waiting[:] = [r for r in waiting if r.request_id != request_id]
        return plain(group_view()) if accept else None

    link.answers["group.approve"] = approve
    link.answers["group.requests"] = lambda: plain(waiting)

    async def scenario(app: NotingApp, pilot: Pilot[Any]) -> None:
        assert isinstance(app.screen, GroupsScreen)
        assert "2 people ask to join" in text_of(app.screen.query_one("#groups-requests"))
        requests = await open_modal(pilot, "r", JoinRequestsScreen)
        await until(pilot, lambda: requests.loaded, "the requests")
        await pilot.press("a")  # Erin asked first
        await until(pilot, lambda: "group.approve" in methods(link), "the approval")
        assert ("group.approve", {"request_id": "req-1", "accept": True}) in link.calls
        await until(pilot, lambda: list(requests.requests) == ["req-2"], "Frank left")
        assert any("Erin is now a member of Climbing club" in t for t in app.toasts)
        await pilot.press("d")
        await until(pilot, lambda: not requests.requests, "none left")
        assert ("group.approve", {"request_id": "req-2", "accept": False}) in link.calls
        await pilot.press("escape")
        await until(pilot, lambda: isinstance(app.screen, GroupsScreen), "the list")
        notice = app.screen.query_one("#groups-requests")
        await until(pilot, lambda: not notice.display, "no requests said")

    run_scripted(tmp_path, link, scenario, open_section=open_groups)


def test_joining_by_code(tmp_path: Path) -> None:
    link = scripted_link()
    link.answers["group.join"] = lambda code: plain(
        GroupJoinResult(state="joined", group=group_view(my_role="member"))
    )

    async def scenario(app: NotingApp, pilot: Pilot[Any]) -> None:
        screen = await open_modal(pilot, "j", JoinGroupScreen)
        await pilot.press("enter")
        assert "Paste the group's invite code" in text_of(screen.query_one("#join-group-error"))
        screen.query_one(Input).value = f"  {FIXED_GROUP_CODE}  "
        await pilot.press("enter")
        await until(pilot, lambda: isinstance(app.screen, GroupChatScreen), "the group")
        assert ("group.join", {"code": FIXED_GROUP_CODE}) in link.calls
        assert any("You joined Climbing club" in toast for toast in app.toasts)

    run_scripted(tmp_path, link, scenario, open_section=open_groups)


def test_group_events_reload_the_list_and_toast(tmp_path: Path) -> None:
    link = scripted_link()

    async def scenario(app: NotingApp, pilot: Pilot[Any]) -> None:
        table = app.screen.query_one(GroupTable)
        loads = methods(link).count("groups")
        renamed = [plain(g) for g in GROUPS]
        renamed[1]["name"] = "Reading circle"
        link.answers["groups"] = renamed
        link.push(
            {
                "type": "group.changed",
                "group_id": BOOKS,
                "name": "Reading circle",
                "my_role": "member",
                "added": [],
                "removed": [],
            }
        )
        await until(pilot, lambda: methods(link).count("groups") > loads, "a reload")
        await until(
            pilot, lambda: "Reading circle" in str(table.get_cell(BOOKS, "name")), "the name"
        )
        link.push(
            {
                "type": "group.message_received",
                "group_id": BOOKS,
                "group_name": "Reading circle",
                "sender_name": "Bob",
                "message": plain(message(70, BOB, 0, "Chapter 5 too", state="unread", group=BOOKS)),
            }
        )
        await until(pilot, lambda: "Chapter 5 too" in app.toasts, "the toast")
        link.push({"type": "group.join_requested", "request": plain(REQUESTS[0])})
        await until(
            pilot, lambda: any("asks to join Climbing club" in t for t in app.toasts), "asked"
        )

    run_scripted(tmp_path, link, scenario, open_section=open_groups)


def test_read_uses() -> None:
    assert read_uses("1") == 1 and read_uses(" 100 ") == 100
    assert read_uses("0") is None and read_uses("101") is None and read_uses("x") is None
