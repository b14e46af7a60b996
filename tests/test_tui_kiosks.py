"""The TUI's kiosks section (F9): pairing, running routines, logging out, guests, reset, and the
approval requests an owner answers.

Snapshot tests render each screen from a ScriptedLink: the scripted answers stand in for the
daemon (same shapes as the `kiosks` / `pair` / `kiosk.*` RPCs) so the pictures are pixel-stable;
a real daemon's PeerIds and clocks differ on every run. The scripted behaviour tests check what
the screens send and that a refusal changes nothing. The Pilot test at the end pairs the TUI on
Alice's real daemon with a real kiosk daemon, runs `status` on it and logs out.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from textual.command import CommandList
from textual.pilot import Pilot
from textual.widgets import Input, OptionList, RichLog, Static

from p2pid.home import Home
from p2pid.rpc.protocol import ErrorCode
from p2pid.tui.app import P2pidApp
from p2pid.tui.screens.contact_detail import ConfirmScreen
from p2pid.tui.screens.kiosk_invoke import InvokeRoutineScreen
from p2pid.tui.screens.kiosk_pair import PairKioskScreen, read_pair_input
from p2pid.tui.screens.kiosk_people import GuestsScreen, KioskApprovalScreen
from p2pid.tui.screens.kiosks import KiosksScreen
from p2pid.tui.widgets.kiosk_table import KioskTable
from p2pid.tui.widgets.routine_form import RoutineForm
from tests import tui_fixtures
from tests.tui_fixtures import (
    WAIT_SECONDS,
    NotingApp,
    QuietApp,
    ScriptedLink,
    initialised_home,
    refuse,
    text_of,
    until,
)

os.environ["TZ"] = "UTC"
time.tzset()

SIZES = [(100, 40), (80, 24)]
AT_MS = 1_767_225_600_000  # 2026-01-01 00:00 UTC
FAR_FUTURE_MS = 4_102_444_800_000  # 2100-01-01: never expires while these tests run
PAST_MS = 1_577_836_800_000  # 2020-01-01: long expired


def peer_id(tail: str) -> str:
    return "12D3KooW" + (tail * 44)[:44]


def identity_id(letter: str) -> str:
    return (letter * 52).lower()


TV, LOBBY, FRAME = peer_id("T"), peer_id("L"), peer_id("F")
BOB_ID, CAROL_ID, ALICE_ID = identity_id("b"), identity_id("c"), identity_id("a")
EVERYONE = ["owner", "guest"]
ROUTINES = [
    {"name": "status", "description": "uptime and load", "args": [], "roles": EVERYONE},
    {
        "name": "show-message",
        "description": "show a line of text on the screen",
        "args": [{"name": "text", "kind": "str"}],
        "roles": EVERYONE,
    },
    {
        "name": "volume",
        "description": "set the volume",
        "args": [{"name": "level", "kind": "int"}],
        "roles": ["owner"],
    },
    {"name": "reboot", "description": "restart the TV", "args": [], "roles": ["owner"]},
]


def kiosk(name: str, peer: str, role: str, **overrides: Any) -> dict[str, Any]:
    record: dict[str, Any] = {
        "peer_id": peer,
        "name": name,
        "role": role,
        "online": False,
        "last_seen_ms": AT_MS - 3_600_000,
        "health": None,
        "expires_at_ms": FAR_FUTURE_MS,
        "routines": ROUTINES,
    }
    record.update(overrides)
    return record


KIOSKS = [
    kiosk("Living room TV", TV, "owner", online=True, last_seen_ms=AT_MS, health="ok"),
    kiosk("Lobby kiosk", LOBBY, "guest", health="disk 91% full"),
    kiosk("Photo frame", FRAME, "guest", expires_at_ms=PAST_MS, last_seen_ms=PAST_MS),
]
GUESTS = [
    {"identity_id": ALICE_ID, "name": "Alice", "role": "owner", "paired_at_ms": AT_MS - 86_400_000},
    {"identity_id": BOB_ID, "name": "Bob", "role": "guest", "paired_at_ms": AT_MS - 3_600_000},
    {"identity_id": CAROL_ID, "name": "Carol", "role": "guest", "paired_at_ms": AT_MS},
]
APPROVAL = {
    "request_id": "req-1",
    "kiosk_peer_id": TV,
    "kiosk_name": "Living room TV",
    "person_name": "Dave",
    "person_identity_id": identity_id("d"),
}
PAIRED = {
    "kiosk_peer_id": peer_id("N"),
    "kiosk_name": "Kitchen screen",
    "role": "guest",
    "expires_at_ms": FAR_FUTURE_MS,
    "routines": ROUTINES[:2],
}


def scripted_link() -> ScriptedLink:
    kiosks = [dict(k) for k in KIOSKS]
    guests = [dict(g) for g in GUESTS]
    approvals = [dict(APPROVAL)]

    def invoke(kiosk: str, routine: str, args: list[str]) -> dict[str, Any]:
        output = {"status": "up 3 days, load 0.12\n", "show-message": f"shown: {' '.join(args)}"}
        return {"ok": True, "exit_code": 0, "output": output.get(routine, ""), "duration_ms": 12.5}

    def revoke(kiosk: str) -> dict[str, Any]:
        kiosks[:] = [k for k in kiosks if k["peer_id"] != kiosk]
        return {"revoked": True}

    def remove_guest(kiosk: str, guest: str) -> dict[str, Any]:
        guests[:] = [g for g in guests if g["identity_id"] != guest]
        return {"removed": True}

    def approve(request_id: str, accept: bool) -> dict[str, Any]:
        approvals.clear()
        return {"accepted": accept}

    def pair(**params: Any) -> dict[str, Any]:
        kiosks[:] = [k for k in kiosks if k["peer_id"] != PAIRED["kiosk_peer_id"]]
        kiosks.append(kiosk("Kitchen screen", peer_id("N"), "guest", routines=ROUTINES[:2]))
        return dict(PAIRED)

    return ScriptedLink(
        {
            "kiosks": lambda: kiosks,
            "kiosk.approvals": lambda: approvals,
            "kiosk.invoke": invoke,
            "kiosk.revoke": revoke,
            "kiosk.guests": lambda kiosk: guests,
            "kiosk.remove_guest": remove_guest,
            "kiosk.reset": lambda kiosk: {"reset": True},
            "kiosk.approve": approve,
            "pair": pair,
        }
    )


def log_text(screen: Any) -> str:
    return "\n".join(line.text for line in screen.query_one("#invoke-log", RichLog).lines)


def kiosks_ready(app: P2pidApp) -> bool:
    return isinstance(app.screen, KiosksScreen) and app.screen.loaded


async def open_kiosks(pilot: Pilot[Any]) -> None:
    app = pilot.app
    assert isinstance(app, P2pidApp)
    await until(pilot, lambda: app.connected, "the link")
    await pilot.press("f9")
    await until(pilot, lambda: kiosks_ready(app), "the kiosks")


def select(app: P2pidApp, peer: str) -> None:
    table = app.screen.query_one(KioskTable)
    table.move_cursor(row=table.get_row_index(peer))


async def open_routines(pilot: Pilot[Any], peer: str) -> InvokeRoutineScreen:
    select(pilot.app, peer)  # type: ignore[arg-type]
    pilot.app.screen.query_one(KioskTable).focus()
    await pilot.press("enter")
    await until(pilot, lambda: isinstance(pilot.app.screen, InvokeRoutineScreen), "routines")
    screen = pilot.app.screen
    assert isinstance(screen, InvokeRoutineScreen)
    await until(pilot, lambda: screen.routine is not None, "the first routine")
    return screen


async def run_show_message(pilot: Pilot[Any]) -> InvokeRoutineScreen:
    screen = await open_routines(pilot, TV)
    routines = screen.query_one("#invoke-routines", OptionList)
    routines.focus()
    await pilot.press("down")
    await until(pilot, lambda: screen.query_one(RoutineForm).inputs, "its form")
    await pilot.press("enter")  # to the first field
    await pilot.press(*"hello; rm -rf /")
    await pilot.press("enter")  # the last field: run it
    await until(pilot, lambda: "shown:" in log_text(screen), "the output")
    return screen


# -- snapshots ---------------------------------------------------------------------------------


def snapshot_app(tmp_path: Path) -> P2pidApp:
    return QuietApp(initialised_home(tmp_path / "home"), link_factory=scripted_link().factory())


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_snapshot_kiosks(snap_compare: Any, tmp_path: Path, size: tuple[int, int]) -> None:
    assert snap_compare(snapshot_app(tmp_path), terminal_size=size, run_before=open_kiosks)


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_snapshot_invoke(snap_compare: Any, tmp_path: Path, size: tuple[int, int]) -> None:
    """The owner's routines, show-message's one field, and its result in the log."""

    async def run_before(pilot: Pilot[Any]) -> None:
        await open_kiosks(pilot)
        await run_show_message(pilot)
        await pilot.pause()

    assert snap_compare(snapshot_app(tmp_path), terminal_size=size, run_before=run_before)


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_snapshot_approval(snap_compare: Any, tmp_path: Path, size: tuple[int, int]) -> None:
    """ "Allow Dave on Living room TV?", from the waiting requests (a)."""

    async def run_before(pilot: Pilot[Any]) -> None:
        await open_kiosks(pilot)
        await pilot.press("a")
        await until(pilot, lambda: isinstance(pilot.app.screen, KioskApprovalScreen), "ask")
        await pilot.pause()

    assert snap_compare(snapshot_app(tmp_path), terminal_size=size, run_before=run_before)


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_snapshot_guests(snap_compare: Any, tmp_path: Path, size: tuple[int, int]) -> None:
    async def run_before(pilot: Pilot[Any]) -> None:
        await open_kiosks(pilot)
        select(pilot.app, TV)  # type: ignore[arg-type]
        await pilot.press("g")
        await until(
            pilot,
            lambda: isinstance(pilot.app.screen, GuestsScreen) and pilot.app.screen.loaded,
            "the guests",
        )
        await pilot.pause()

    assert snap_compare(snapshot_app(tmp_path), terminal_size=size, run_before=run_before)


# -- scripted behaviour ------------------------------------------------------------------------


def run_scripted(
    tmp_path: Path,
    link: ScriptedLink,
    scenario: Callable[[NotingApp, Pilot[Any]], Awaitable[None]],
) -> None:
    tui_fixtures.run_scripted(tmp_path, link, scenario, open_section=open_kiosks)


def calls_to(link: ScriptedLink, method: str) -> list[dict[str, Any]]:
    return [params for name, params in link.calls if name == method]


def test_the_pair_input_tells_short_codes_from_codes_and_images() -> None:
    assert read_pair_input(" 123 456 ") == ("short_code", "123456")
    assert read_pair_input("12-34-56") == ("short_code", "123456")
    assert read_pair_input("P2PID:ABC") == ("code", "P2PID:ABC")
    assert read_pair_input("~/tv.png") == ("image", os.path.expanduser("~/tv.png"))
    assert read_pair_input("١٢٣") == ("code", "١٢٣")  # not ASCII digits: not a short code
    assert read_pair_input("") == ("code", "")


def test_pairing_by_short_code_and_by_code(tmp_path: Path) -> None:
    link = scripted_link()

    async def scenario(app: NotingApp, pilot: Pilot[Any]) -> None:
        await pilot.press("p")
        await until(pilot, lambda: isinstance(app.screen, PairKioskScreen), "the dialog")
        screen = app.screen
        entry = screen.query_one("#pair-input", Input)
        entry.value = "482 915"
        await pilot.press("enter")
        await until(
            pilot, lambda: "Kitchen screen" in text_of(screen.query_one("#pair-result")), "ok"
        )
        assert calls_to(link, "pair") == [{"short_code": "482915"}]
        assert "as its guest. You can run: status, show-message" in text_of(
            screen.query_one("#pair-result")
        )
        entry.value = "P2PID:KIOSK"
        await pilot.press("enter")
        await until(pilot, lambda: len(calls_to(link, "pair")) == 2, "the second")
        assert calls_to(link, "pair")[1] == {"code": "P2PID:KIOSK"}
        await pilot.press("escape")
        await until(pilot, lambda: isinstance(app.screen, KiosksScreen), "the list")
        table = app.screen.query_one(KioskTable)
        await until(pilot, lambda: peer_id("N") in [k.peer_id for k in table.kiosks], "it listed")

    run_scripted(tmp_path, link, scenario)


def test_a_refused_pairing_is_said_and_changes_nothing(tmp_path: Path) -> None:
    link = scripted_link()
    link.answers["pair"] = refuse(ErrorCode.INVALID_PARAMS, "wrong short code (2 attempts left)")

    async def scenario(app: NotingApp, pilot: Pilot[Any]) -> None:
        await pilot.press("p")
        await until(pilot, lambda: isinstance(app.screen, PairKioskScreen), "the dialog")
        screen = app.screen
        entry = screen.query_one("#pair-input", Input)
        entry.value = "000000"
        await pilot.press("enter")
        error = screen.query_one("#pair-error", Static)
        await until(pilot, lambda: "2 attempts left" in text_of(error), "the refusal")
        assert "wrong short code (2 attempts left)" in app.toasts
        assert entry.value == "000000" and not entry.disabled
        assert text_of(screen.query_one("#pair-result")) == ""
        entry.value = str(tmp_path / "absent.png")
        await pilot.press("enter")
        await until(pilot, lambda: "no such file" in text_of(error), "the image refused")
        assert len(calls_to(link, "pair")) == 1
        await pilot.press("escape")
        await until(pilot, lambda: isinstance(app.screen, KiosksScreen), "the list")
        assert len(app.screen.query_one(KioskTable).kiosks) == len(KIOSKS)

    run_scripted(tmp_path, link, scenario)


def test_running_routines_and_a_refusal(tmp_path: Path) -> None:
    link = scripted_link()

    async def scenario(app: NotingApp, pilot: Pilot[Any]) -> None:
        screen = await run_show_message(pilot)
        assert calls_to(link, "kiosk.invoke") == [
            {"kiosk": TV, "routine": "show-message", "args": ["hello; rm -rf /"]}
        ]
        assert "✓ ok, exit 0, 12 ms" in log_text(screen)
        options = screen.query_one("#invoke-routines", OptionList)
        assert [options.get_option_at_index(i).id for i in range(options.option_count)] == [
            "status",
            "show-message",
            "volume",
            "reboot",
        ]
        # status takes no arguments: Enter on it runs it.
        options.focus()
        await pilot.press("up", "enter")
        await until(pilot, lambda: "up 3 days" in log_text(screen), "status")
        assert calls_to(link, "kiosk.invoke")[-1]["args"] == []

        link.answers["kiosk.invoke"] = refuse(ErrorCode.INVALID_PARAMS, "volume: not a number")
        await pilot.press("down", "down")
        await until(pilot, lambda: screen.routine and screen.routine.name == "volume", "volume")
        screen.query_one(RoutineForm).inputs[0].value = "11"
        await pilot.press("ctrl+r")
        await until(pilot, lambda: "✗ volume: not a number" in log_text(screen), "the refusal")
        assert "volume: not a number" in app.toasts
        await pilot.press("escape")

        # A guest sees only what guests may run.
        screen = await open_routines(pilot, LOBBY)
        options = screen.query_one("#invoke-routines", OptionList)
        assert options.option_count == 2

    run_scripted(tmp_path, link, scenario)


def test_owner_actions_and_logging_out(tmp_path: Path) -> None:
    link = scripted_link()

    async def scenario(app: NotingApp, pilot: Pilot[Any]) -> None:
        # A guest cannot see guests or reset: said, nothing sent.
        select(app, LOBBY)
        await pilot.press("g")
        await pilot.press("R")
        assert sum("Only Lobby kiosk's owner" in toast for toast in app.toasts) == 2
        assert isinstance(app.screen, KiosksScreen)

        select(app, TV)
        await pilot.press("g")
        await until(
            pilot, lambda: isinstance(app.screen, GuestsScreen) and app.screen.loaded, "guests"
        )
        guests = app.screen
        assert isinstance(guests, GuestsScreen)
        await pilot.press("x")  # on Alice, the owner: refused
        assert any("That is the owner" in toast for toast in app.toasts)
        await pilot.press("down", "x")
        await until(pilot, lambda: isinstance(app.screen, ConfirmScreen), "the question")
        await pilot.press("y")
        await until(pilot, lambda: calls_to(link, "kiosk.remove_guest"), "the removal")
        assert calls_to(link, "kiosk.remove_guest") == [{"kiosk": TV, "guest": BOB_ID}]
        await until(pilot, lambda: [g.name for g in guests.guests] == ["Alice", "Carol"], "gone")
        await pilot.press("escape")
        await until(pilot, lambda: isinstance(app.screen, KiosksScreen), "the list")

        await pilot.press("R")
        await until(pilot, lambda: isinstance(app.screen, ConfirmScreen), "the question")
        await pilot.press("n")
        assert calls_to(link, "kiosk.reset") == []
        await until(pilot, lambda: isinstance(app.screen, KiosksScreen), "the list")
        await pilot.press("R")
        await until(pilot, lambda: isinstance(app.screen, ConfirmScreen), "the question")
        await pilot.press("y")
        await until(pilot, lambda: calls_to(link, "kiosk.reset") == [{"kiosk": TV}], "reset")

        link.answers["kiosk.revoke"] = refuse(ErrorCode.INTERNAL_ERROR, "the store is locked")
        select(app, LOBBY)
        await pilot.press("x")
        await until(pilot, lambda: isinstance(app.screen, ConfirmScreen), "the question")
        await pilot.press("y")
        await until(pilot, lambda: "the store is locked" in app.toasts, "the refusal")
        table = app.screen.query_one(KioskTable)
        assert LOBBY in [k.peer_id for k in table.kiosks]

        link.answers["kiosk.revoke"] = scripted_link().answers["kiosk.revoke"]
        link.answers["kiosks"] = [k for k in KIOSKS if k["peer_id"] != LOBBY]
        await pilot.press("x")
        await until(pilot, lambda: isinstance(app.screen, ConfirmScreen), "the question")
        await pilot.press("y")
        await until(pilot, lambda: LOBBY not in [k.peer_id for k in table.kiosks], "logged out")
        assert calls_to(link, "kiosk.revoke")[-1] == {"kiosk": LOBBY}

    run_scripted(tmp_path, link, scenario)


def test_an_approval_request_asks_wherever_the_person_is(tmp_path: Path) -> None:
    link = scripted_link()

    async def scenario(app: NotingApp, pilot: Pilot[Any]) -> None:
        assert "1 approval request waiting (Dave on Living room TV)" in text_of(
            app.screen.query_one("#kiosks-notice")
        )
        await pilot.press("f8")  # elsewhere: the devices section (unscripted here)
        link.push({"type": "kiosk.approval_requested", **APPROVAL})
        await until(pilot, lambda: isinstance(app.screen, KioskApprovalScreen), "the question")
        link.push({"type": "kiosk.approval_requested", **APPROVAL})  # the same one: once
        await pilot.pause(0.2)
        assert sum(isinstance(s, KioskApprovalScreen) for s in app.screen_stack) == 1
        assert "Allow Dave on Living room TV?" in text_of(app.screen.query_one(".title"))

        link.answers["kiosk.approve"] = refuse(ErrorCode.INVALID_PARAMS, "no such request")
        await pilot.press("y")
        await until(pilot, lambda: "no such request" in app.toasts, "the refusal")
        assert isinstance(app.screen, KioskApprovalScreen)  # still asking
        link.answers["kiosk.approve"] = scripted_link().answers["kiosk.approve"]
        await pilot.press("n")
        await until(pilot, lambda: not isinstance(app.screen, KioskApprovalScreen), "answered")
        assert calls_to(link, "kiosk.approve")[-1] == {"request_id": "req-1", "accept": False}
        assert any("Dave denied on Living room TV" in toast for toast in app.toasts)

    run_scripted(tmp_path, link, scenario)


def test_the_palette_offers_the_kiosk_actions(tmp_path: Path) -> None:
    link = scripted_link()

    async def scenario(app: NotingApp, pilot: Pilot[Any]) -> None:
        titles = {command.title for command in app.get_system_commands(app.screen)}
        assert {
            "Pair with a kiosk",
            "Kiosk approval requests",
            "Run a routine on Living room TV",
            "Log out of Living room TV",
            "Guests of Living room TV",
            "Reset Living room TV",
            "Run a routine on Lobby kiosk",
            "Log out of Lobby kiosk",
        } <= titles
        assert "Reset Lobby kiosk" not in titles and "Guests of Lobby kiosk" not in titles
        await pilot.press("ctrl+p", *"pair with")

        def first_hit() -> bool:
            hits = app.screen.query_one(CommandList)
            return "Pair with a kiosk" in str(hits.get_option_at_index(0).prompt)

        await until(pilot, first_hit, "the palette's hit")
        await pilot.press("enter")
        await until(pilot, lambda: isinstance(app.screen, PairKioskScreen), "the dialog")

    run_scripted(tmp_path, link, scenario)


# -- against real daemons ----------------------------------------------------------------------


def test_pairing_with_a_real_kiosk_running_status_and_logging_out(tmp_path: Path) -> None:
    """A real `p2pid kiosk` (loopback, mDNS off) and Alice's real daemon: the TUI pairs with the
    kiosk's code (Alice becomes its owner), runs the built-in `status`, and logs out."""
    import json
    import subprocess
    import sys

    from p2pid.tui.link import DaemonOptions
    from tests.cli_helpers import p2pid_json
    from tests.daemons import LOOPBACK, running_daemon
    from tests.messaging_helpers import LineReader

    alice, tv = tmp_path / "alice", tmp_path / "tv"
    env = {k: v for k, v in os.environ.items() if k != "P2PID_HOME"}
    command = [sys.executable, "-m", "p2pid", "--home", str(tv), "--json", "kiosk"]
    command += ["--name", "Living room TV", "--listen", LOOPBACK, "--no-mdns"]

    def next_event(reader: LineReader, kind: str) -> dict[str, Any]:
        match = reader.wait_for(rf'\{{"event": "{kind}".*', WAIT_SECONDS)
        assert match is not None, reader.lines
        return dict(json.loads(match.group(0)))

    async def scenario(app: NotingApp, pilot: Pilot[Any], code: str) -> None:
        await open_kiosks(pilot)
        table = app.screen.query_one(KioskTable)
        assert table.kiosks == []
        await pilot.press("p")
        await until(pilot, lambda: isinstance(app.screen, PairKioskScreen), "the dialog")
        screen = app.screen
        screen.query_one("#pair-input", Input).value = code
        await pilot.press("enter")
        result = screen.query_one("#pair-result", Static)
        error = screen.query_one("#pair-error", Static)
        await until(pilot, lambda: text_of(result) or text_of(error), "the pairing")
        assert "Paired with Living room TV as its owner" in text_of(result), text_of(error)
        await pilot.press("escape")
        await until(pilot, lambda: isinstance(app.screen, KiosksScreen), "the list")
        await until(pilot, lambda: table.row_count == 1, "the kiosk listed")
        [paired] = table.kiosks
        assert paired.role == "owner" and paired.name == "Living room TV"

        routines = await open_routines(pilot, paired.peer_id)
        options = routines.query_one("#invoke-routines", OptionList)
        names = [options.get_option_at_index(i).id for i in range(options.option_count)]
        assert "status" in names
        options.highlighted = names.index("status")
        await until(pilot, lambda: routines.routine and routines.routine.name == "status", "it")
        await pilot.press("ctrl+r")
        await until(pilot, lambda: "▶ status:" in log_text(routines), "the result")
        assert "✓ ok" in log_text(routines), log_text(routines)
        await pilot.press("escape")
        await until(pilot, lambda: isinstance(app.screen, KiosksScreen), "the list")

        await pilot.press("x")
        await until(pilot, lambda: isinstance(app.screen, ConfirmScreen), "the question")
        await pilot.press("y")
        await until(pilot, lambda: table.row_count == 0, "logged out")
        assert await asyncio.to_thread(p2pid_json, alice, "kiosks") == []

    process = subprocess.Popen(
        command, stdout=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True, env=env
    )
    reader = LineReader(process)
    try:
        code = next_event(reader, "code")["code"]
        with running_daemon(alice, "Alice"):

            async def main() -> None:
                options = DaemonOptions(listen=[LOOPBACK], no_mdns=True)
                app = NotingApp(Home(alice), daemon=options)
                async with app.run_test(size=(100, 40)) as pilot:
                    await scenario(app, pilot, code)

            asyncio.run(main())
    finally:
        reader.close()
