"""The TUI's chats: the conversation list, the open conversation, the composer.

The Pilot test drives the TUI against real daemons (subprocesses with temporary homes, loopback
only, mDNS off): the TUI creates the identity through its welcome screen and starts its own
daemon; Bob, a second daemon, joins through the CLI; messages go both ways and the delivery marks
follow. Snapshot tests render the screen from a ScriptedLink with fixed records (a real daemon's
ids and clocks differ on every run), in UTC.
"""

from __future__ import annotations

import asyncio
import base64
import inspect
import os
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from rich.cells import cell_len
from rich.console import Console
from rich.text import Text
from textual.pilot import Pilot
from textual.screen import Screen
from textual.widgets import Input

from p2pid.home import Home
from p2pid.tui.app import P2pidApp
from p2pid.tui.link import DaemonOptions
from p2pid.tui.screens.chats import ChatsScreen
from p2pid.tui.screens.help import HelpScreen
from p2pid.tui.screens.welcome import WelcomeScreen
from p2pid.tui.widgets.composer import Composer
from p2pid.tui.widgets.conversation_list import ConversationList
from p2pid.tui.widgets.message_log import MessageLog, printable, wrap
from tests.cli_helpers import p2pid, p2pid_json
from tests.daemons import LOOPBACK, running_daemon
from tests.tui_fixtures import ScriptedLink

SIZES = [(100, 40), (80, 24)]
WAIT_SECONDS = 30.0
DAY_MS = 86_400_000
MAY_13_MS = 1_715_558_400_000  # Monday 13 May 2024, 00:00 UTC


@pytest.fixture(autouse=True, scope="module")
def utc() -> Iterator[None]:
    """Times in the snapshots are UTC whatever the machine's zone; restored afterwards."""
    saved = os.environ.get("TZ")
    os.environ["TZ"] = "UTC"
    time.tzset()
    yield
    if saved is None:
        del os.environ["TZ"]
    else:
        os.environ["TZ"] = saved
    time.tzset()


# -- waiting -----------------------------------------------------------------------------------


async def until(pilot: Pilot[Any], condition: Callable[[], object], what: str) -> None:
    """Pause until `condition()` holds, or fail after WAIT_SECONDS."""
    deadline = time.monotonic() + WAIT_SECONDS
    while True:
        try:
            if condition():
                return
        except Exception:  # a screen or widget not there yet
            pass
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await pilot.pause(0.05)


async def until_cli(pilot: Pilot[Any], check: Callable[[], object], what: str) -> Any:
    """Poll a blocking CLI check off the event loop until it returns something truthy."""
    deadline = time.monotonic() + WAIT_SECONDS
    while True:
        value = await asyncio.to_thread(check)
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await pilot.pause(0.2)


# -- fixed records -----------------------------------------------------------------------------


def identity_id(seed: int) -> str:
    return base64.b32encode(bytes([seed]) * 32).decode().rstrip("=").lower()


def peer_id(tail: str) -> str:
    return "12D3KooW" + (tail * 44)[:44]


ME = identity_id(9)
BOB, CAROL, DAVE, ERIN = identity_id(1), identity_id(2), identity_id(3), identity_id(4)
BOB_LAPTOP, CAROL_PC, DAVE_PC, ERIN_PHONE = peer_id("B"), peer_id("C"), peer_id("D"), peer_id("E")


def contact(
    identity: str, name: str, devices: list[tuple[str, bool]], **overrides: Any
) -> dict[str, Any]:
    record: dict[str, Any] = {
        "identity_id": identity,
        "fingerprint": identity,
        "name": name,
        "display_name": name,
        "nickname": None,
        "verified": False,
        "verified_by": None,
        "blocked": False,
        "identity_changed": False,
        "devices": [{"peer_id": p, "name": "device", "connected": c} for p, c in devices],
        "fields": {},
        "added_at_ms": MAY_13_MS,
    }
    record.update(overrides)
    return record


CONTACTS = [
    contact(BOB, "Bob", [(BOB_LAPTOP, True)], verified=True, verified_by="invite"),
    contact(CAROL, "Carol", [(CAROL_PC, False)]),
    contact(DAVE, "Dave", [(DAVE_PC, False)], blocked=True),
    contact(ERIN, "Erin Oyelaran-Featherstonehaugh", [(ERIN_PHONE, False)]),
]


def view(
    number: int,
    peer: str,
    at_ms: int,
    text: str,
    *,
    mine: bool,
    state: str,
) -> dict[str, Any]:
    return {
        "message_id": f"{number:032x}",
        "conversation_id": peer,
        "sender_id": ME if mine else peer,
        "sender_device": peer_id("A") if mine else BOB_LAPTOP,
        "outgoing": mine,
        "text": text,
        "sent_at_ms": at_ms,
        "received_at_ms": at_ms + 300,
        "lamport": number,
        "state": state,
    }


def minute(day: int, hour: int, minutes: int) -> int:
    return MAY_13_MS + day * DAY_MS + (hour * 60 + minutes) * 60_000


BOB_MESSAGES = [
    view(
        1,
        BOB,
        minute(0, 9, 14),
        "Are we still on for the climb tomorrow?",
        mine=False,
        state="read",
    ),
    view(2, BOB, minute(0, 9, 20), "Yes! 8 o'clock at the station.", mine=True, state="read"),
    view(
        3,
        BOB,
        minute(0, 9, 21),
        "I'll bring the rope and the guidebook.\nCan you bring coffee?",
        mine=True,
        state="read",
    ),
    view(4, BOB, minute(0, 21, 2), "Deal. Two thermoses.", mine=False, state="read"),
    view(
        5,
        BOB,
        minute(1, 7, 55),
        "Running ten minutes late, the train is stuck somewhere between the two tunnels "
        "north of the city, sorry! Start warming up without me.",
        mine=False,
        state="read",
    ),
    view(6, BOB, minute(1, 7, 58), "No problem, see you there", mine=True, state="delivered"),
    view(7, BOB, minute(1, 8, 15), "I'm at the café by the entrance", mine=True, state="failed"),
    view(8, BOB, minute(1, 8, 16), "Here now ☕", mine=False, state="unread"),
    view(9, BOB, minute(1, 8, 17), "👋 coming", mine=True, state="pending"),
]

CONVERSATIONS = [
    {
        "conversation_id": BOB,
        "name": "Bob",
        "unread": 1,
        "last_message": BOB_MESSAGES[-1],
        "updated_at_ms": minute(1, 8, 17),
    },
    {
        "conversation_id": CAROL,
        "name": "Carol",
        "unread": 2,
        "last_message": view(
            20,
            CAROL,
            minute(0, 18, 3),
            "Did you see the photos from Saturday?",
            mine=False,
            state="unread",
        ),
        "updated_at_ms": minute(0, 18, 3),
    },
    {
        "conversation_id": ERIN,
        "name": "Erin Oyelaran-Featherstonehaugh",
        "unread": 0,
        "last_message": view(30, ERIN, minute(-3, 12, 0), "thanks!", mine=True, state="read"),
        "updated_at_ms": minute(-3, 12, 0),
    },
]


def messages_page(
    contact: str, limit: int = 50, before: str | None = None, mark_read: bool = True
) -> dict[str, Any]:
    messages = BOB_MESSAGES if contact == BOB else []
    return {
        "conversation_id": contact,
        "name": "Bob" if contact == BOB else contact,
        "messages": messages,
        "unread": 1 if contact == BOB else 0,
        "before": None,
    }


def scripted_link(**answers: Any) -> ScriptedLink:
    return ScriptedLink(
        {
            "conversations": CONVERSATIONS,
            "contacts": CONTACTS,
            "messages": messages_page,
            "messages.read": lambda contact: {"read": 1},
            **answers,
        }
    )


def initialised_home(root: Path) -> Home:
    """Enough of a home for the app to skip the welcome screen (the link is scripted)."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "p2pid.db").touch()
    (root / "vault.key").touch()
    return Home(root)


def scripted_app(tmp_path: Path, link: ScriptedLink | None = None) -> P2pidApp:
    link = link or scripted_link()
    return P2pidApp(initialised_home(tmp_path / "home"), link_factory=link.factory())


def chats(app: P2pidApp) -> ChatsScreen:
    screen = app.screen
    assert isinstance(screen, ChatsScreen)
    return screen


def open_bob() -> Callable[[Pilot[Any]], Awaitable[None]]:
    async def run_before(pilot: Pilot[Any]) -> None:
        app = pilot.app
        assert isinstance(app, P2pidApp)
        await until(pilot, lambda: len(chats(app).conversations.entries) == 4, "the list")
        await pilot.press("enter")  # Bob's is the most recent
        await until(pilot, lambda: len(chats(app).message_log.messages) == 9, "Bob's messages")
        await pilot.press("H", "i", " ", "B", "o", "b")
        await pilot.pause()
        app.clear_notifications()
        await pilot.pause()

    return run_before


# -- snapshots ---------------------------------------------------------------------------------


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_snapshot_conversation_open(
    snap_compare: Any, tmp_path: Path, size: tuple[int, int]
) -> None:
    assert snap_compare(scripted_app(tmp_path), terminal_size=size, run_before=open_bob())


# -- against real daemons ----------------------------------------------------------------------


def record_states(log: MessageLog) -> dict[str, list[str]]:
    """Every state each message of the log went through, in order (wrapping its methods)."""
    seen: dict[str, list[str]] = {}
    add, set_state = log.add, log.set_state

    def note(message_id: str, state: str) -> None:
        states = seen.setdefault(message_id, [])
        if not states or states[-1] != state:
            states.append(state)

    def current(message_id: str) -> str:
        message = log.message(message_id)
        assert message is not None
        return message.state

    def recording_add(message: Any) -> bool:
        changed = add(message)
        note(message.message_id, current(message.message_id))
        return changed

    def recording_set_state(message_ids: Any, state: str) -> int:
        message_ids = list(message_ids)
        changed = set_state(message_ids, state)
        for message_id in message_ids:
            if log.message(message_id) is not None:
                note(message_id, current(message_id))
        return changed

    log.add = recording_add  # type: ignore[method-assign]
    log.set_state = recording_set_state  # type: ignore[method-assign]
    return seen


def mine(app: P2pidApp, text: str) -> Any:
    for message in chats(app).message_log.messages:
        if message.outgoing and message.text == text:
            return message
    return None


def bob_reads(bob: Path, text: str) -> bool:
    """`p2pid messages Alice` on Bob's side (which marks them read): is the text there?"""
    page = p2pid_json(bob, "messages", "Alice")
    return any(m["text"] == text and not m["outgoing"] for m in page["messages"])


def entry_named(app: P2pidApp, name: str) -> Any:
    for entry in chats(app).conversations.entries:
        if entry.name == name:
            return entry
    return None


def bobs_state(bob: Path, text: str) -> str | None:
    """The state of Bob's message as Bob's daemon knows it (without marking anything read)."""
    for conversation in p2pid_json(bob, "chats"):
        last = conversation.get("last_message")
        if last and last["text"] == text:
            return str(last["state"])
    return None


def test_chat_with_a_real_daemon_both_ways(tmp_path: Path) -> None:
    alice, bob = tmp_path / "alice", tmp_path / "bob"

    async def scenario() -> None:
        app = P2pidApp(Home(alice), daemon=DaemonOptions(listen=[LOOPBACK], no_mdns=True))
        async with app.run_test(size=(100, 40)) as pilot:
            # First run: the welcome screen creates the identity, then the TUI starts its daemon.
            await until(pilot, lambda: isinstance(app.screen, WelcomeScreen), "the welcome")
            app.screen.query_one("#name", Input).value = "Alice"
            await pilot.click("#create")
            await until(pilot, lambda: app.connected, "the daemon the TUI started")
            await until(pilot, lambda: isinstance(app.screen, ChatsScreen), "the chats")
            screen = chats(app)
            assert screen.conversations.entries == []

            # Bob joins Alice's invite with the CLI; he shows up in the list, online.
            invite = await app.link.call("invite.create")
            await asyncio.to_thread(p2pid_json, bob, "join", invite["code"])
            await until(pilot, lambda: entry_named(app, "Bob"), "Bob listed")
            bob_entry = entry_named(app, "Bob")
            assert bob_entry is not None and bob_entry.verified  # verified by the invite
            await until(pilot, lambda: bob_entry.online, "Bob online")

            # Open his conversation: empty, and it is the one the app views now.
            screen.conversations.focus()
            await pilot.press("enter")
            await until(
                pilot, lambda: app.viewing_conversation == bob_entry.conversation_id, "open"
            )
            assert isinstance(app.focused, Composer)
            states = record_states(screen.message_log)

            # Typed in the composer: an empty Enter sends nothing; Ctrl+J makes a new line.
            await pilot.press("enter")
            await pilot.press(*"Hello Bob", "ctrl+j", *"second line", "enter")
            text = "Hello Bob\nsecond line"
            await until(pilot, lambda: mine(app, text), "my message in the log")
            sent = mine(app, text)
            await until(pilot, lambda: sent.state == "delivered", "delivered to Bob's daemon")
            assert await asyncio.to_thread(bob_reads, bob, text)
            await until(pilot, lambda: sent.state == "read", "read (Bob listed his messages)")
            assert states[sent.message_id] == ["pending", "delivered", "read"]
            assert len(screen.message_log.messages) == 1  # the empty Enter sent nothing
            assert bob_entry.preview_state == "read" and bob_entry.unread == 0

            # Bob answers from his CLI: it appears live, and reading it here tells Bob.
            reply = "Hi Alice! Sent from the command line."
            await asyncio.to_thread(p2pid_json, bob, "send", "Alice", reply)
            await until(
                pilot,
                lambda: any(
                    not m.outgoing and m.text == reply for m in screen.message_log.messages
                ),
                "Bob's reply in the log",
            )
            assert bob_entry.preview == reply and bob_entry.unread == 0
            await until_cli(pilot, lambda: bobs_state(bob, reply) == "read", "Bob sees it read")

            # Bob's daemon stops: he goes offline here.
            await asyncio.to_thread(p2pid, bob, "stop")
            await until(pilot, lambda: not bob_entry.online, "Bob offline")

    with running_daemon(bob, "Bob"):
        try:
            asyncio.run(scenario())
        finally:
            p2pid(alice, "stop", check=False)


# -- events while the screen goes away ---------------------------------------------------------


class SlowLink(ScriptedLink):
    """Answers after a little while (awaiting coroutine answers), so calls are still in flight
    when the screen that made them is torn down."""

    async def call(self, method: str, **params: Any) -> Any:
        answer = await super().call(method, **params)
        await asyncio.sleep(0.01)
        return await answer if inspect.isawaitable(answer) else answer


class Elsewhere(Screen[None]):
    """A mode to switch to while the chats screen is removed."""


def test_events_while_the_screen_is_torn_down_never_crash(tmp_path: Path) -> None:
    sent = view(100, BOB, minute(1, 9, 0), "sent while closing", mine=True, state="pending")
    link = SlowLink(scripted_link(send=lambda contact, text: sent).answers)

    def push_everything(number: int) -> None:
        new = view(
            200 + number, BOB, minute(1, 9, number), f"new {number}", mine=False, state="unread"
        )
        for event in (
            {"type": "message.received", "conversation_id": BOB, "name": "Bob", "message": new},
            {"type": "message.sent", "conversation_id": BOB, "name": "Bob", "message": sent},
            {
                "type": "message.state",
                "conversation_id": BOB,
                "message_ids": [sent["message_id"]],
                "state": "delivered",
            },
            {
                "type": "message.received",
                "conversation_id": identity_id(7),
                "name": "Stranger",
                "message": view(
                    300 + number,
                    identity_id(7),
                    minute(1, 9, 1),
                    "who?",
                    mine=False,
                    state="unread",
                ),
            },
            {"type": "peer.disconnected", "peer_id": BOB_LAPTOP},
            {"type": "peer.connected", "peer_id": BOB_LAPTOP},
            {"type": "contact.added", "identity_id": BOB, "name": "Bob", "verified": True},
            {"type": "daemon.stopping", "reason": "test"},
        ):
            link.push({"at_ms": minute(1, 9, 0), **event})

    async def scenario() -> None:
        app = scripted_app(tmp_path, link)
        app.add_mode("elsewhere", Elsewhere)
        async with app.run_test(size=(80, 24)) as pilot:
            for number in range(6):
                await until(pilot, lambda: len(chats(app).conversations.entries) >= 4, "list")
                chats(app).conversations.focus()
                await pilot.press("enter")  # open Bob's: calls in flight
                push_everything(number)
                composer = chats(app).composer
                composer.text = "hi"
                composer.submit()  # a send in flight
                push_everything(number)
                app.push_screen(HelpScreen())
                push_everything(number)
                await app.pop_screen()
                push_everything(number)
                await app.switch_mode("elsewhere")
                push_everything(number)
                await app.remove_mode("chats")  # the chats screen is torn down
                push_everything(number)
                await pilot.pause(0.005 * number)
                app.add_mode("chats", ChatsScreen)
                await app.switch_mode("chats")
                push_everything(number)
            await until(pilot, lambda: len(chats(app).conversations.entries) >= 4, "list")
            await pilot.pause(0.1)
            assert app.is_running
            assert app.viewing_conversation is None  # nothing open on the new screen

    asyncio.run(scenario())


# -- scroll-back and live updates, scripted ----------------------------------------------------

HISTORY = [
    view(n, BOB, minute(-2, 0, 0) + n * 240_000, f"message {n}", mine=n % 3 == 0, state="read")
    for n in range(1, 501)
]


def history_page(
    contact: str, limit: int = 50, before: str | None = None, mark_read: bool = True
) -> dict[str, Any]:
    """Bob's 500 messages, a page at a time; the cursor is where the page starts."""
    end = int(before) if before is not None else len(HISTORY)
    start = max(0, end - limit)
    return {
        "conversation_id": contact,
        "name": "Bob",
        "messages": HISTORY[start:end] if contact == BOB else [],
        "unread": 0,
        "before": str(start) if start else None,
    }


async def open_conversation(pilot: Pilot[Any], app: P2pidApp, name: str) -> ChatsScreen:
    screen = chats(app)
    await until(pilot, lambda: len(screen.conversations.entries) == 4, "the list")
    entry = entry_named(app, name)
    screen.conversations.highlight(entry.conversation_id)
    screen.conversations.focus()
    await pilot.press("enter")
    await until(
        pilot,
        lambda: app.viewing_conversation == entry.conversation_id and not screen._loading_open,
        f"{name}'s conversation",
    )
    return screen


def test_scroll_back_loads_older_pages_and_keeps_the_view(tmp_path: Path) -> None:
    link = scripted_link(messages=history_page)

    async def scenario() -> None:
        app = scripted_app(tmp_path, link)
        async with app.run_test(size=(100, 40)) as pilot:
            screen = await open_conversation(pilot, app, "Bob")
            log = screen.message_log
            assert [m.text for m in log.messages] == [f"message {n}" for n in range(451, 501)]
            assert log.scroll_y == log.max_scroll_y  # the newest at the bottom
            assert ("messages", {"contact": BOB, "limit": 50, "mark_read": True}) in link.calls

            # At the top, the page before loads; what was on screen stays where it was.
            log.focus()
            await pilot.press("home")
            await until(pilot, lambda: len(log.messages) == 100, "the page before")
            first = f"{451:032x}"
            row_before = 2  # under the status line and the day's separator
            assert log.line_of(first) - log.top_line() == row_before
            assert not log.loading_older
            older = [call for call in link.calls if call[1].get("before")]
            assert older == [
                ("messages", {"contact": BOB, "limit": 50, "before": "450", "mark_read": False})
            ]

            # Page Up all the way: every message once, in order, then the start.
            for _ in range(200):
                if not log.has_more and log.scroll_y == 0:
                    break
                await pilot.press("pageup")
                await until(pilot, lambda: not log.loading_older, "a page")
            assert [m.text for m in log.messages] == [f"message {n}" for n in range(1, 501)]
            assert log.line_of(f"{1:032x}") == 2  # status line, day, then the first message

            # Something arrives while the reader is up there: counted, not scrolled to.
            new = view(501, BOB, minute(1, 0, 0), "arrived below", mine=False, state="unread")
            link.push(
                {
                    "type": "message.received",
                    "conversation_id": BOB,
                    "name": "Bob",
                    "at_ms": minute(1, 0, 0),
                    "message": new,
                }
            )
            await until(pilot, lambda: log.unseen == 1, "the arrival counted")
            assert log.scroll_y == 0
            await pilot.press("end")
            await until(pilot, lambda: log.unseen == 0, "read at the bottom")
            assert log.scroll_y == log.max_scroll_y

    asyncio.run(scenario())


def test_live_events_composer_and_presence(tmp_path: Path) -> None:
    sent: list[str] = []

    def send(contact: str, text: str) -> dict[str, Any]:
        sent.append(text)
        return view(
            600 + len(sent), contact, minute(1, 9, len(sent)), text, mine=True, state="pending"
        )

    link = scripted_link(send=send)

    async def scenario() -> None:
        app = scripted_app(tmp_path, link)
        async with app.run_test(size=(100, 40)) as pilot:
            screen = await open_conversation(pilot, app, "Bob")
            log, listing = screen.message_log, screen.conversations
            bob, carol = entry_named(app, "Bob"), entry_named(app, "Carol")
            assert bob.unread == 0  # opened: marked read by `messages`
            assert isinstance(app.focused, Composer)

            # Enter sends; Shift+Enter and Ctrl+J are new lines; blank text is not sent.
            await pilot.press("space", "enter")
            await pilot.press("a", "shift+enter", "b", "ctrl+j", "c", "enter")
            await until(pilot, lambda: sent == ["a\nb\nc"], "the send")
            await until(pilot, lambda: log.messages[-1].text == "a\nb\nc", "mine in the log")
            mine_id = log.messages[-1].message_id
            assert log.messages[-1].state == "pending" and chats(app).composer.text == ""

            # Its state follows the daemon's events (and a late `delivered` does not undo read).
            for state in ("delivered", "read", "delivered"):
                link.push(
                    {
                        "type": "message.state",
                        "conversation_id": BOB,
                        "at_ms": 0,
                        "message_ids": [mine_id],
                        "state": state,
                    }
                )
            await until(pilot, lambda: bob.preview_state == "read", "read in the list")
            await pilot.pause(0.05)
            assert log.message(mine_id).state == "read"

            # From Carol (not open): her conversation moves to the top with a badge.
            from_carol = view(
                700, CAROL, minute(1, 10, 0), "Lunch?\nat noon", mine=False, state="unread"
            )
            link.push(
                {
                    "type": "message.received",
                    "conversation_id": CAROL,
                    "name": "Carol",
                    "at_ms": 0,
                    "message": from_carol,
                }
            )
            await until(pilot, lambda: carol.unread == 3, "Carol's badge")
            assert listing.entries and listing._rows[0] is carol  # most recent first
            assert carol.preview == "Lunch?" and listing.highlighted_id == BOB

            # From Bob (open): in the log at once, and marked read since it is being viewed.
            reads = sum(1 for call in link.calls if call[0] == "messages.read")
            from_bob = view(701, BOB, minute(1, 10, 1), "on my way", mine=False, state="unread")
            link.push(
                {
                    "type": "message.received",
                    "conversation_id": BOB,
                    "name": "Bob",
                    "at_ms": 0,
                    "message": from_bob,
                }
            )
            await until(pilot, lambda: log.messages[-1].text == "on my way", "Bob's message")
            await until(
                pilot,
                lambda: sum(1 for call in link.calls if call[0] == "messages.read") > reads,
                "marked read",
            )
            assert bob.unread == 0

            # Presence: Bob's only device disconnects, then comes back.
            header = screen.query_one("#chat-header")
            link.push({"type": "peer.disconnected", "peer_id": BOB_LAPTOP, "at_ms": 0})
            await until(pilot, lambda: not bob.online, "Bob offline")
            assert "offline" in str(header.render())
            link.push({"type": "peer.connected", "peer_id": BOB_LAPTOP, "at_ms": 0})
            await until(pilot, lambda: bob.online, "Bob online")
            assert "online" in str(header.render()) and "verified" in str(header.render())

            # Escape goes back to the list; Ctrl+N opens the next unread conversation.
            await pilot.press("escape")
            assert isinstance(app.focused, ConversationList)
            await pilot.press("ctrl+n")
            await until(pilot, lambda: app.viewing_conversation == CAROL, "Carol's opened")

    asyncio.run(scenario())


# -- text from other people --------------------------------------------------------------------


def test_remote_text_cannot_drive_the_terminal_and_wraps_by_cells() -> None:
    hostile = "a\x1b[31mred\r\nb\u202eevil\tx\x07 \x9b2J 👨\u200d👩\u200d👧"
    shown = printable(hostile)
    assert not any(ord(c) < 32 and c != "\n" for c in shown)
    assert "\x9b" not in shown and "\u202e" not in shown
    assert shown.split("\n") == ["a\ufffd[31mred", "bevil    x\ufffd \ufffd2J 👨\u200d👩\u200d👧"]

    def console_wrap(paragraph: str, width: int) -> list[str]:
        return [line.plain for line in Text(paragraph).wrap(Console(), width, overflow="fold")]

    assert wrap("one two three four", 9, console_wrap) == ["one two", "three", "four"]
    assert wrap("x" * 12 + " end", 5, console_wrap) == ["xxxxx", "xxxxx", "xx", "end"]
    wide = wrap("日本語のテキスト", 6, console_wrap)  # two cells a character
    assert all(cell_len(line) <= 6 for line in wide) and "".join(wide) == "日本語のテキスト"
