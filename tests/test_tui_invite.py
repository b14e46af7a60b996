"""The TUI's invite and join screens: Pilot against real daemons, and snapshots.

The Pilot tests run the app on Alice's home next to real daemons (127.0.0.1, mDNS off) and drive
the other side through the real command line. Pilot needs asyncio and this suite runs async tests
under trio, so each scenario is a plain test that runs its own asyncio loop; blocking CLI calls go
through a thread so the app keeps running meanwhile. The snapshots use a scripted link (fixed
invite, fixed expiry, UTC) and stand-ins for the sections built elsewhere, so that they change only
when these screens (or the welcome and help screens) do.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path, PurePath
from typing import Any, ClassVar

import pytest
from rich.color import Color
from textual import events
from textual.app import ComposeResult
from textual.pilot import Pilot
from textual.screen import Screen
from textual.widgets import OptionList, Static

from p2pid.home import Home
from p2pid.qr import image_from_modules, qr_modules, read_qr_codes
from p2pid.tui import app as tui_app
from p2pid.tui.app import P2pidApp
from p2pid.tui.link import DaemonOptions
from p2pid.tui.screens.base import SectionScreen
from p2pid.tui.screens.invite import InviteScreen, JoinScreen
from p2pid.tui.widgets.invite_join_input import JoinInput, read_join_input
from p2pid.tui.widgets.qr_view import QrView
from tests.cli_helpers import p2pid_json
from tests.daemons import LOOPBACK, running_daemon
from tests.tui_fixtures import ScriptedLink

DEADLINE_SECONDS = 30.0
BLACK, WHITE = (0, 0, 0), (255, 255, 255)

# Made once with p2pid's invite codec (p2pid.crypto.invites.new_invite: identity key
# bytes(range(32)), device key bytes(range(32, 64)), 127.0.0.1:40123, "Alice") and pasted here:
# snapshots need the same code, hence the same QR, on every run.
FIXED_CODE = (
    "P2PID:AEAQAA5BA677HTQQXYOXBXIY45F4BGLH4TLDBG5FBVPR3XEGMQJFKMNYFGWLVYKBXTFPBMRODKKNGTILY43B4UT"
    "NBP7BFSEXSS6JGIUWNXLQCBD7AAAADHF3CAE4N4VUFR4TKJWASTGYTZSWH4SPJBSXAACUC3DJMNS3YPXTC72PEKL6XSIT"
    "2H5A3LQQSIZWW6FZMOZOLVNYHNGPEIAP4WBLDHTONODJE7CRBG2TPQFLM6TUUWVNJULK2IYDMLBO4HX6RODFAY"
)
FIXED_INVITE_ID = "f3d77a025839990f2a1ffafb287a0245"
FIXED_EXPIRES_AT = 4_102_444_800  # 2100-01-01 00:00 UTC, as in the code


# -- helpers -----------------------------------------------------------------------------


async def wait_for(
    pilot: Pilot[Any], condition: Callable[[], bool], what: str, seen: Callable[[], str] = str
) -> None:
    deadline = time.monotonic() + DEADLINE_SECONDS
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}: {seen()}")
        await pilot.pause(0.05)


def text_of(screen: Screen[Any], selector: str) -> str:
    return str(screen.query_one(selector, Static).content)


def run_tui(
    home: Path, size: tuple[int, int], scenario: Callable[[P2pidApp, Pilot[Any]], Awaitable[None]]
) -> None:
    """Run the TUI on `home` (its daemon already runs; were it to start one: loopback, no mDNS)."""

    async def main() -> None:
        options = DaemonOptions(listen=[LOOPBACK], no_mdns=True)
        app = P2pidApp(Home(home), daemon=options)
        async with app.run_test(size=size) as pilot:
            await wait_for(pilot, lambda: app.connected, "the daemon link")
            await scenario(app, pilot)

    asyncio.run(main())


async def cli(home: Path, *args: str) -> Any:
    """The real command line, in a thread: the app keeps running while it works."""
    return await asyncio.to_thread(p2pid_json, home, *args)


def qr_cells_on_screen(app: P2pidApp) -> list[list[tuple[str, Any, Any]]]:
    """The cells the terminal gets where the QR widget is: (character, fg, bg) as RGB triplets.
    Taken from the composited screen, so whatever covers or tints the widget would show."""
    region = app.screen.query_one(QrView).region
    strips = app.screen._compositor.render_strips()
    rows = []
    for strip in strips[region.y : region.bottom]:
        cells = []
        for segment in strip.crop(region.x, region.right):
            style = segment.style
            colours = (style.color, style.bgcolor) if style is not None else (None, None)
            foreground, background = (
                tuple(colour.get_truecolor()) if colour is not None else None for colour in colours
            )
            cells += [(character, foreground, background) for character in segment.text]
        rows.append(cells)
    return [row for row in rows if any(character != " " for character, _, _ in row)]


def decode_cells(rows: list[list[tuple[str, Any, Any]]]) -> list[str]:
    """Rebuild the module matrix from half blocks (top module = fg, bottom = bg) and decode it
    with zxing-cpp, as a phone would read the screen."""
    modules: list[list[bool]] = []
    for row in rows:
        assert {character for character, _, _ in row} == {"▀"}
        assert {colour for _, fg, bg in row for colour in (fg, bg)} <= {BLACK, WHITE}
        modules.append([fg == BLACK for _, fg, _ in row])
        modules.append([bg == BLACK for _, _, bg in row])
    image = image_from_modules(modules, scale=4)
    return read_qr_codes(image)


# -- the invite screen, against real daemons ------------------------------------------------


def test_invite_screen_shows_a_scannable_code_and_sees_bob_join(tmp_path: Path) -> None:
    alice_home, bob_home = tmp_path / "alice", tmp_path / "bob"

    async def scenario(app: P2pidApp, pilot: Pilot[Any]) -> None:
        await pilot.press("f4")
        await wait_for(pilot, lambda: isinstance(app.screen, InviteScreen), "the invite screen")
        screen = app.screen
        assert isinstance(screen, InviteScreen)
        await wait_for(pilot, lambda: screen.shown is not None, "an invite")
        assert screen.shown is not None
        code = screen.shown["code"]
        [live] = await cli(alice_home, "invites")
        assert live["code"] == code and live["invite_id"] == screen.shown["invite_id"]

        # 60x20: too small for the QR code, and it says so; the text code is still there.
        assert text_of(screen, "#invite-code") == code
        assert not screen.query_one(QrView).display
        fit = screen.query_one("#invite-fit", Static)
        assert fit.display and "too small for the QR code" in text_of(screen, "#invite-fit")
        assert "this one is 60x20" in text_of(screen, "#invite-fit")

        # Resized to 100x40: the QR code appears, and reads back as the code off the screen.
        await pilot.resize_terminal(100, 40)
        await wait_for(pilot, lambda: screen.query_one(QrView).display, "the QR code")
        assert not fit.display
        assert decode_cells(qr_cells_on_screen(app)) == [code]
        rows = qr_cells_on_screen(app)
        assert len(rows) == (len(qr_modules(code)) + 1) // 2
        assert len(rows[0]) == len(qr_modules(code))  # the quiet zone included
        app.theme = "textual-light"  # explicit black and white: no theme changes the code
        await pilot.pause()
        assert qr_cells_on_screen(app) == rows
        assert "Expires" in text_of(screen, "#invite-meta")
        assert "single use" in text_of(screen, "#invite-meta")

        await pilot.press("c")
        assert app.clipboard == code

        # Bob joins with the code; Alice's screen hears of it (contact.added).
        joined = await cli(bob_home, "join", code)
        assert joined["name"] == "Alice"
        await wait_for(
            pilot, lambda: "Bob is now a contact" in text_of(screen, "#invite-status"), "Bob"
        )
        await wait_for(
            pilot, lambda: "used up" in text_of(screen, "#invite-code"), "the invite used up"
        )
        assert not screen.query_one(QrView).display
        assert [c["name"] for c in await cli(alice_home, "contacts")] == ["Bob"]

        # n: a new invite; x: cancel the highlighted one (the new one, the only live one).
        await pilot.press("n")
        await wait_for(
            pilot,
            lambda: screen.shown is not None and screen.shown["code"] not in (None, code),
            "a new invite",
        )
        assert screen.shown is not None
        new_code = screen.shown["code"]
        await wait_for(pilot, lambda: screen.query_one(QrView).display, "the new QR code")
        assert decode_cells(qr_cells_on_screen(app)) == [new_code]
        assert [i["code"] for i in await cli(alice_home, "invites")] == [new_code]
        await pilot.press("x")
        await wait_for(
            pilot, lambda: "cancelled" in text_of(screen, "#invite-code"), "the cancellation"
        )
        assert await cli(alice_home, "invites") == []
        assert not screen.query_one("#invite-list", OptionList).display

    with running_daemon(alice_home, "Alice"), running_daemon(bob_home, "Bob"):
        run_tui(alice_home, (60, 20), scenario)


# -- the join screen, against real daemons --------------------------------------------------


def test_join_screen_joins_by_code_and_by_image_and_refuses_bad_input(tmp_path: Path) -> None:
    alice_home, carol_home, dave_home = tmp_path / "alice", tmp_path / "carol", tmp_path / "dave"
    png = tmp_path / "dave-invite.png"
    not_an_image = tmp_path / "notes.png"
    not_an_image.write_text("not an image\n")

    async def submit(pilot: Pilot[Any], text: str) -> None:
        entry = pilot.app.screen.query_one("#join-input", JoinInput)
        entry.value = text
        entry.focus()
        await pilot.press("enter")

    async def refused(pilot: Pilot[Any], text: str, why: str) -> None:
        screen = pilot.app.screen
        await submit(pilot, text)

        def error() -> str:
            return text_of(screen, "#join-error")

        await wait_for(pilot, lambda: why in error(), repr(why), error)
        await wait_for(pilot, lambda: not screen.query_one(JoinInput).disabled, "the input")
        assert screen.query_one(JoinInput).value == text  # kept, to correct it
        assert text_of(screen, "#join-result") == ""
        names = sorted(c["name"] for c in await cli(alice_home, "contacts"))
        assert names == ["Carol", "Dave"]

    async def scenario(app: P2pidApp, pilot: Pilot[Any]) -> None:
        await pilot.press("f5")
        await wait_for(pilot, lambda: isinstance(app.screen, JoinScreen), "the join screen")
        screen = app.screen

        carol_code = (await cli(carol_home, "invite"))["code"]
        await submit(pilot, carol_code)
        await wait_for(
            pilot,
            lambda: "Carol is now a verified contact" in text_of(screen, "#join-result"),
            "Carol",
        )
        assert screen.query_one(JoinInput).value == ""
        assert [c["name"] for c in await cli(alice_home, "contacts")] == ["Carol"]

        await cli(dave_home, "invite", "--png", str(png))
        await submit(pilot, str(png))
        await wait_for(
            pilot,
            lambda: "Dave is now a verified contact" in text_of(screen, "#join-result"),
            "Dave",
        )

        expiring = await cli(carol_home, "invite", "--ttl", "1")
        spent = (await cli(carol_home, "invite"))["code"]
        await cli(dave_home, "join", spent)  # someone else used it up
        genuine = (await cli(carol_home, "invite"))["code"]
        forged = genuine[:-12] + ("A" if genuine[-12] != "A" else "B") + genuine[-11:]
        await refused(pilot, "hello, this is not a code", "not a p2pid invite")
        await refused(pilot, spent, "used up")
        await refused(pilot, forged, "not genuine")
        while time.time() < expiring["expires_at"]:
            await pilot.pause(0.05)
        await refused(pilot, expiring["code"], "expired")
        await refused(pilot, str(tmp_path / "absent.png"), "no such file")
        await refused(pilot, str(not_an_image), "not an image")

    with (
        running_daemon(alice_home, "Alice"),
        running_daemon(carol_home, "Carol"),
        running_daemon(dave_home, "Dave"),
    ):
        run_tui(alice_home, (100, 40), scenario)


# -- the join input, without a daemon -----------------------------------------------------


def test_the_join_input_tells_codes_from_image_paths(tmp_path: Path) -> None:
    photo = tmp_path / "photo"
    photo.write_bytes(b"")
    assert read_join_input(f"  {FIXED_CODE}\n") == ("code", FIXED_CODE)
    assert read_join_input("p2pid:abc def") == ("code", "p2pid:abcdef")
    assert read_join_input("garbage") == ("code", "garbage")
    assert read_join_input("") == ("code", "")
    assert read_join_input("invite.PNG") == ("image", "invite.PNG")
    assert read_join_input(f"'{tmp_path}/a b.png'") == ("image", f"{tmp_path}/a b.png")
    assert read_join_input(f"file://{tmp_path}/a%20b.png") == ("image", f"{tmp_path}/a b.png")
    assert read_join_input("~/x.jpg") == ("image", os.path.expanduser("~/x.jpg"))
    assert read_join_input(str(photo)) == ("image", str(photo))
    assert read_join_input("A" * 300) == ("code", "A" * 300)  # too long for a file name


def test_a_code_pasted_over_several_lines_is_joined_back(tmp_path: Path) -> None:
    async def main() -> None:
        app = SnapshotApp(initialised_home(tmp_path), link_factory=scripted().factory())
        async with app.run_test(size=(100, 40)) as pilot:
            await pilot.press("f5")
            await wait_for(pilot, lambda: isinstance(app.screen, JoinScreen), "the join screen")
            entry = app.screen.query_one(JoinInput)
            wrapped = "\n".join(FIXED_CODE[i : i + 60] for i in range(0, len(FIXED_CODE), 60))
            entry.post_message(events.Paste(wrapped + "\n"))
            await wait_for(pilot, lambda: entry.value == FIXED_CODE, "the whole code")
            entry.value = ""
            entry.post_message(events.Paste("/tmp/one.png\n/tmp/two.png"))
            await wait_for(pilot, lambda: entry.value == "/tmp/one.png", "the first line")

    asyncio.run(main())


def test_enter_shows_another_live_invite_and_an_expired_one_is_taken_down(tmp_path: Path) -> None:
    """Scripted: two live invites; Enter on the second shows it; once it expires, it goes."""
    expires_at = int(time.time()) + 2
    second: dict[str, Any] = {
        "invite_id": "0123456789abcdef0123456789abcdef",
        "uses_left": 3,
        "max_uses": 5,
        "expires_at": expires_at,
        "created_at_ms": 0,
        "code": "P2PID:SECOND",
    }
    link = scripted()
    first = dict(scripted_invite())

    def invites(all: bool = False) -> list[dict[str, Any]]:
        expired = time.time() >= expires_at
        listed = [first, {**second, "state": "expired" if expired else "live"}]
        return [invite for invite in listed if all or invite["state"] == "live"]

    link.answers["invites"] = invites

    async def main() -> None:
        app = SnapshotApp(initialised_home(tmp_path), link_factory=link.factory())
        async with app.run_test(size=(120, 45)) as pilot:
            await pilot.press("f4")
            await wait_for(pilot, lambda: isinstance(app.screen, InviteScreen), "the screen")
            screen = app.screen
            assert isinstance(screen, InviteScreen)
            await wait_for(pilot, lambda: screen.shown is not None, "the invite")
            options = screen.query_one("#invite-list", OptionList)
            assert options.option_count == 2
            options.focus()
            await pilot.press("down", "enter")
            await wait_for(
                pilot, lambda: text_of(screen, "#invite-code") == "P2PID:SECOND", "the second"
            )
            assert screen.query_one(QrView).text == "P2PID:SECOND"
            assert "3 of 5 uses left" in text_of(screen, "#invite-meta")
            while time.time() < expires_at:
                await pilot.pause(0.05)
            screen._check_expiry()  # what its timer does every few seconds
            await wait_for(
                pilot, lambda: "expired" in text_of(screen, "#invite-code"), "it taken down"
            )
            assert not screen.query_one(QrView).display
            assert options.option_count == 1
            assert [method for method, _ in link.calls].count("invite.create") == 1

    asyncio.run(main())


# -- snapshots ------------------------------------------------------------------------------


class ElsewhereSection(SectionScreen):
    """A stand-in for a section another screen module builds (chats, contacts, ...)."""

    def compose_body(self) -> ComposeResult:
        yield Static("")


class SnapshotApp(P2pidApp):
    # Textual reads CSS_PATH relative to the module of the app's class: this one's is tests/.
    CSS_PATH: ClassVar[list[str | PurePath]] = [
        Path(tui_app.__file__).parent / path for path in P2pidApp.CSS_PATH
    ]
    MODES: ClassVar[dict[str, Any]] = {
        **P2pidApp.MODES,
        "chats": ElsewhereSection,
        "contacts": ElsewhereSection,
        "profile": ElsewhereSection,
        "nearby": ElsewhereSection,
    }


def scripted_invite() -> dict[str, Any]:
    """The fixed invite as `invites` lists it."""
    return {
        "invite_id": FIXED_INVITE_ID,
        "state": "live",
        "uses_left": 1,
        "max_uses": 1,
        "expires_at": FIXED_EXPIRES_AT,
        "created_at_ms": (FIXED_EXPIRES_AT - 600) * 1000,
        "code": FIXED_CODE,
    }


def scripted() -> ScriptedLink:
    carol: dict[str, Any] = {
        "identity_id": "k5xqyb3zjtdn2vhw7cpaermfsg4o6iulq5xqyb3zjtdn2vhw7cpa",
        "fingerprint": "k5xq yb3z jtdn 2vhw 7cpa ermf sg4o 6iul q5xq yb3z jtdn 2vhw 7cpa",
        "name": "Carol",
        "display_name": "Carol",
        "nickname": None,
        "verified": True,
        "verified_by": "invite",
        "blocked": False,
        "identity_changed": False,
        "devices": [],
        "fields": {},
        "added_at_ms": 0,
    }
    return ScriptedLink(
        {
            "invite.create": {
                "invite_id": FIXED_INVITE_ID,
                "code": FIXED_CODE,
                "expires_at": FIXED_EXPIRES_AT,
                "uses": 1,
            },
            "invites": [scripted_invite()],
            "join": carol,
        }
    )


def initialised_home(tmp_path: Path) -> Home:
    """A home that looks initialised (the app then connects instead of welcoming)."""
    home = Home(tmp_path / "home")
    home.ensure_private_dir()
    home.database.touch()
    home.key_file.touch()
    return home


@pytest.fixture
def utc() -> Iterator[None]:
    before = os.environ.get("TZ")
    os.environ["TZ"] = "UTC"
    time.tzset()
    yield
    if before is None:
        del os.environ["TZ"]
    else:
        os.environ["TZ"] = before
    time.tzset()


SIZES = [pytest.param((100, 40), id="100x40"), pytest.param((80, 24), id="80x24")]


@pytest.mark.parametrize("size", SIZES)
def test_snapshot_welcome(snap_compare: Any, tmp_path: Path, size: tuple[int, int]) -> None:
    app = SnapshotApp(Home(tmp_path / "new-home"), link_factory=scripted().factory())
    assert snap_compare(app, terminal_size=size)


@pytest.mark.parametrize("size", SIZES)
def test_snapshot_help(snap_compare: Any, tmp_path: Path, size: tuple[int, int]) -> None:
    app = SnapshotApp(initialised_home(tmp_path), link_factory=scripted().factory())
    assert snap_compare(app, press=["f1"], terminal_size=size)


@pytest.mark.parametrize("size", SIZES)
def test_snapshot_invite(
    snap_compare: Any, tmp_path: Path, utc: None, size: tuple[int, int]
) -> None:
    """100x40: the QR code beside the code; 80x24: too small for it, said so, the code shown."""

    async def show_invite(pilot: Pilot[Any]) -> None:
        await pilot.press("f4")
        await wait_for(
            pilot,
            lambda: (
                isinstance(pilot.app.screen, InviteScreen)
                and text_of(pilot.app.screen, "#invite-code") == FIXED_CODE
            ),
            "the invite",
        )

    app = SnapshotApp(initialised_home(tmp_path), link_factory=scripted().factory())
    assert snap_compare(app, terminal_size=size, run_before=show_invite)


@pytest.mark.parametrize("size", SIZES)
def test_snapshot_join(snap_compare: Any, tmp_path: Path, size: tuple[int, int]) -> None:
    """After joining Carol with a pasted code."""

    async def join(pilot: Pilot[Any]) -> None:
        await pilot.press("f5")
        await wait_for(pilot, lambda: isinstance(pilot.app.screen, JoinScreen), "join")
        pilot.app.screen.query_one(JoinInput).value = FIXED_CODE
        await pilot.press("enter")
        await wait_for(
            pilot, lambda: "Carol" in text_of(pilot.app.screen, "#join-result"), "the result"
        )
        # The input's blinking cursor would make the picture depend on the time it is taken.
        pilot.app.screen.query_one(JoinInput).cursor_blink = False

    app = SnapshotApp(initialised_home(tmp_path), link_factory=scripted().factory())
    assert snap_compare(app, terminal_size=size, run_before=join)


def test_the_qr_view_draws_explicit_black_and_white() -> None:
    view = QrView(FIXED_CODE)
    modules = qr_modules(FIXED_CODE)
    assert view.cells == (len(modules[0]), (len(modules) + 1) // 2)
    colours = {
        (segment.style.color, segment.style.bgcolor)
        for y in range(view.cells.height)
        for segment in view.render_line(y)
        if segment.style is not None
    }
    black, white = Color.from_rgb(0, 0, 0), Color.from_rgb(255, 255, 255)
    assert colours == {(black, white), (white, black), (black, black), (white, white)}
